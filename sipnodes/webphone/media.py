"""Audio between a browser (aiortc, DTLS-SRTP) and the server's worker (plain RTP).

Towards the browser, G.711 from the SIP side is handed to aiortc as encoded packets
(`av.Packet`): aiortc only packs them, nothing is decoded, when the browser took the same
law (the gateway asks for PCMU, then PCMA, so it does). From the browser, aiortc's
receiver decodes what the browser sends (G.711 again) into PCM, and `PcmEncoder` turns it
back into the SIP side's law: a table lookup per sample, lossless for the same law. This
is the one place the gateway transcodes audio; docs/web-phone.md gives its cost.

Video (VP8) is never decoded: the browser's RTP payloads are forwarded as they come
(`tap_video`), and the SIP side's are put back into frames for aiortc to packetize
(`FromSipVideo`).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import random
import struct
from typing import cast

import av
from aiortc import RTCRtpReceiver
from aiortc.codecs.g711 import PcmaEncoder, PcmuEncoder
from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

log = logging.getLogger(__name__)

TIME_BASE = fractions.Fraction(1, 8000)
VIDEO_TIME_BASE = fractions.Fraction(1, 90000)
CODEC_OF = {0: "pcm_mulaw", 8: "pcm_alaw"}
MIME_OF = {0: "audio/PCMU", 8: "audio/PCMA"}
QUEUE_SIZE = 50  # a second of 20 ms audio packets; older ones are dropped, never piled up


class RtpPort(asyncio.DatagramProtocol):
    """A session's RTP socket of one kind towards the worker: symmetric, counts packets.

    What arrives in one of `accepted` payload types is queued as (payload type, marker,
    timestamp, payload); RTCP and anything else is dropped.
    """

    def __init__(
        self, accepted: frozenset[int] = frozenset(CODEC_OF), queue_size: int = QUEUE_SIZE
    ) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.accepted = accepted
        self.remote: tuple[str, int] | None = None
        self.payload_type = 0
        self.sending = False
        self.inbound: asyncio.Queue[tuple[int, bool, int, bytes]] = asyncio.Queue(queue_size)
        self.packets_in = 0
        self.packets_out = 0
        self.remote_ssrc = 0  # the SIP side's, from its RTP
        self.browser_ssrc = 0  # the browser's (video), from what `tap_video` forwards
        self._seq = random.getrandbits(16)
        self._ts = random.getrandbits(32)
        self._ssrc = random.getrandbits(32)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        pt = data[1] & 0x7F
        if pt not in self.accepted:
            return
        count = data[0] & 0x0F
        start = 12 + 4 * count
        if data[0] & 0x10 and len(data) >= start + 4:
            start += 4 + 4 * struct.unpack_from("!H", data, start + 2)[0]
        timestamp, self.remote_ssrc = struct.unpack_from("!II", data, 4)
        self.packets_in += 1
        if self.inbound.full():
            self.inbound.get_nowait()
        self.inbound.put_nowait((pt, bool(data[1] & 0x80), timestamp, data[start:]))

    def send(self, payload: bytes, samples: int) -> None:
        """One audio packet: our own sequence and a timestamp `samples` on."""
        self.send_packet(payload, self._ts, False)
        self._ts += samples

    def send_packet(self, payload: bytes, timestamp: int, marker: bool) -> None:
        if not (self.sending and self.remote and self.transport):
            return
        first = self.payload_type | (0x80 if marker else 0)
        header = struct.pack("!BBHII", 0x80, first, self._seq, timestamp & 0xFFFFFFFF, self._ssrc)
        self._seq = (self._seq + 1) & 0xFFFF
        self.transport.sendto(header + payload, self.remote)
        self.packets_out += 1

    def request_keyframe(self) -> None:
        """RTCP PLI (RFC 4585 §6.3.1) to the peer's RTCP port (RTP + 1): a video phone
        sends a key frame, which the browser needs to start showing its video."""
        if self.remote and self.transport and self.remote_ssrc:
            pli = struct.pack("!BBHII", 0x81, 206, 2, self._ssrc, self.remote_ssrc)
            self.transport.sendto(pli, (self.remote[0], self.remote[1] + 1))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class FromSip(MediaStreamTrack):
    """The SIP side's audio as a track aiortc sends to the browser.

    A packet in the browser's law goes as it is (an `av.Packet`); one in the other law is
    decoded to a frame, which aiortc encodes. Timestamps are our own running count of
    samples, so the SIP side's jumps (a new call, a hold) never reach the browser.
    """

    kind = "audio"

    def __init__(self, port: RtpPort) -> None:
        super().__init__()
        self.port = port
        self.browser_pt = 0
        self._pts = 0
        self._decoders: dict[int, av.CodecContext] = {}

    async def recv(self) -> av.Packet | av.AudioFrame:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        pt, _, _, payload = await self.port.inbound.get()
        pts, self._pts = self._pts, self._pts + len(payload)
        if pt == self.browser_pt:
            packet = av.Packet(payload)
            packet.pts, packet.time_base = pts, TIME_BASE
            return packet
        frames = self._decoder(pt).decode(av.Packet(payload))
        frame = frames[0] if frames else av.AudioFrame(format="s16", layout="mono", samples=0)
        frame.pts, frame.time_base, frame.sample_rate = pts, TIME_BASE, 8000
        return frame

    def _decoder(self, pt: int) -> av.CodecContext:
        decoder = self._decoders.get(pt)
        if decoder is None:
            decoder = self._decoders[pt] = av.CodecContext.create(CODEC_OF[pt], "r")
            decoder.format, decoder.layout, decoder.sample_rate = "s16", "mono", 8000
        return decoder


async def to_sip(track: MediaStreamTrack, port: RtpPort) -> None:
    """The browser's audio (decoded by aiortc) into the SIP side's law, while a call is on."""
    encoders = {0: PcmuEncoder(), 8: PcmaEncoder()}
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not (port.sending and port.remote):
            continue
        payloads, _ = encoders[port.payload_type].encode(frame)
        for payload in payloads:
            port.send(payload, len(payload))


class FromSipVideo(MediaStreamTrack):
    """The SIP side's VP8 as a track aiortc sends to the browser, without decoding: RTP
    payloads are put back together into frames (`av.Packet`), which aiortc only splits
    into RTP payloads again (its `Vp8Encoder.pack`)."""

    kind = "video"

    def __init__(self, port: RtpPort) -> None:
        super().__init__()
        self.port = port
        self._first_ts: int | None = None

    async def recv(self) -> av.Packet:  # type: ignore[override]
        frame: list[bytes] = []
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            _, marker, timestamp, payload = await self.port.inbound.get()
            try:
                descriptor, data = VpxPayloadDescriptor.parse(payload)
            except ValueError:
                frame = []
                continue
            if descriptor.partition_start and descriptor.partition_id == 0:
                frame = []
            frame.append(data)
            if marker:
                break
        if self._first_ts is None:
            self._first_ts = timestamp
        packet = av.Packet(b"".join(frame))
        packet.pts = (timestamp - self._first_ts) & 0xFFFFFFFF
        packet.time_base = VIDEO_TIME_BASE
        return packet


def tap_video(receiver: RTCRtpReceiver, port: RtpPort) -> None:
    """Forward the browser's VP8 RTP payloads to the SIP side as they come, undecoded.

    aiortc would depacketize, decode (libvpx) and hand out frames, which the SIP side would
    need encoded again; instead the receiver's packet handler is replaced, for this
    receiver only, by one that re-stamps each payload (our SSRC, sequence and payload type;
    the browser's timestamp and marker) and sends it on. The browser then gets no NACK or
    REMB from this receiver; its PLIs are sent by `request_keyframe` below.
    """

    async def forward(packet: RtpPacket, arrival_time_ms: int = 0) -> None:
        port.browser_ssrc = packet.ssrc
        if packet.payload:
            port.send_packet(packet.payload, packet.timestamp, bool(packet.marker))

    receiver._handle_rtp_packet = forward  # type: ignore[method-assign]


async def browser_keyframe(receiver: RTCRtpReceiver, port: RtpPort) -> None:
    """Ask the browser for a key frame (RTCP PLI through aiortc): the SIP side cannot show
    the browser's video before one."""
    if port.browser_ssrc:
        await receiver._send_rtcp_pli(port.browser_ssrc)
