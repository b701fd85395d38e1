"""The media relay's decisions: which ports each call's streams use, and its SDP.

The B2BUA hands every SDP body crossing from one leg to the other to
`Media.rewrite`. With relay off the body passes untouched (SPEC: "With relay
off, SDP passes untouched"). With relay on, every audio and video m-line gets
two port pairs (RTP even, RTCP odd) from the server's media port block: one
faces the caller (side "O"), one the callee (side "T"). The body is rewritten
to point at the pair facing its receiver, and the sender's SDP address is
what the pair facing the sender sends to until that phone latches (`rtp.py`).
Other m-lines, and streams the block has no ports left for, get port 0.

Offers and answers are treated alike, since each only says "this side wants
stream i at this address" or (port 0) "stream i is gone". The first body of
a call from the caller (the INVITE's offer) is refused with
`MediaPortsExhausted` when not one stream gets ports: the B2BUA answers 503.

Sockets are the shell's (`Binder`); this module only decides. `idle_calls`
runs on the core's one-second sweep: it ticks every endpoint (re-latching
needs quiet ticks) and names calls whose media stopped on both sides.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Callable
from typing import Protocol

from . import sdp
from .config import Config
from .rtp import DatagramSocket, Endpoint

log = logging.getLogger(__name__)


class MediaPortsExhausted(Exception):
    """No port pair left in the server's media block for a new call."""


@dataclasses.dataclass(frozen=True)
class MediaSettings:
    """The part of the server's config the relay reads."""

    enabled: bool
    public_address: str  # what SDP names
    ports: tuple[int, int]  # the server's media block, first and last
    timeout: int  # seconds without media on either side that end a call (0: never)
    relatch_ticks: int  # quiet sweeps (seconds) before another source may take over

    @classmethod
    def from_config(cls, config: Config) -> MediaSettings:
        m = config.media
        return cls(
            config.system.media_relay,
            config.public_address,
            config.listen.media_ports,
            m.timeout,
            m.relatch_after,
        )


class Media(Protocol):
    def rewrite(self, call_uuid: str, towards: str, body: bytes) -> bytes:
        """SDP body to send towards the "O" (caller) or "T" (callee) leg."""
        ...

    def reserve(self, call_uuid: str) -> None:
        """A late offer (an INVITE without SDP): hold one stream's ports for the offer the
        callee's answer will carry, or raise `MediaPortsExhausted` so that a full block
        refuses the call before anyone rings, not after the callee answered."""
        ...

    def release(self, call_uuid: str) -> None:
        """The call ended: free its ports."""
        ...

    def configure(self, settings: MediaSettings) -> None:
        """A new config (SIGHUP): relay on/off and the port block; calls keep their ports."""
        ...

    def idle_calls(self, now: float) -> list[str]:
        """Called every second: the calls whose media has stopped for the timeout."""
        ...


class PassThrough:
    """No relay: media flows end to end."""

    def rewrite(self, call_uuid: str, towards: str, body: bytes) -> bytes:
        return body

    def reserve(self, call_uuid: str) -> None:
        return None

    def release(self, call_uuid: str) -> None:
        return None

    def configure(self, settings: MediaSettings) -> None:
        return None

    def idle_calls(self, now: float) -> list[str]:
        return []


class Binder(Protocol):
    """The shell's side: UDP sockets on the relay's address."""

    def bind(self, port: int) -> DatagramSocket | None:
        """A non-blocking socket bound to `port`, or None if the port is taken."""
        ...

    def watch(self, sock: DatagramSocket, on_readable: Callable[[], None]) -> None: ...

    def close(self, sock: DatagramSocket) -> None: ...


class PortBlock:
    """The free RTP/RTCP port pairs of the media block (even RTP port, RTCP the next)."""

    def __init__(self, first: int, last: int) -> None:
        self.in_use: set[int] = set()
        self.resize(first, last)

    def resize(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        start = first + (first % 2)
        pairs = range(start, last, 2) if first else range(0)  # [0, 0]: no block
        self.free = collections.deque(p for p in pairs if p not in self.in_use)

    def take(self, binder: Binder) -> tuple[int, DatagramSocket, DatagramSocket] | None:
        """The next pair whose two ports bind; one taken by another process is skipped."""
        for _ in range(len(self.free)):
            port = self.free.popleft()
            rtp = binder.bind(port)
            rtcp = binder.bind(port + 1) if rtp is not None else None
            if rtp is not None and rtcp is not None:
                self.in_use.add(port)
                return port, rtp, rtcp
            if rtp is not None:
                binder.close(rtp)
            log.warning("media port %d or %d is taken by another process: skipped", port, port + 1)
            self.free.append(port)  # it may be free by the time the block wraps around
        return None

    def give_back(self, port: int) -> None:
        self.in_use.discard(port)
        if self.first <= port < self.last:
            self.free.append(port)


@dataclasses.dataclass(eq=False)
class Stream:
    """One relayed m-line: RTP and RTCP endpoints facing the caller (O) and the callee (T)."""

    o_rtp: Endpoint
    o_rtcp: Endpoint
    t_rtp: Endpoint
    t_rtcp: Endpoint

    def __post_init__(self) -> None:
        for a, b in ((self.o_rtp, self.t_rtp), (self.o_rtcp, self.t_rtcp)):
            a.other, b.other = b, a

    def facing(self, side: str) -> tuple[Endpoint, Endpoint]:
        return (self.o_rtp, self.o_rtcp) if side == "O" else (self.t_rtp, self.t_rtcp)

    @property
    def endpoints(self) -> tuple[Endpoint, Endpoint, Endpoint, Endpoint]:
        return self.o_rtp, self.o_rtcp, self.t_rtp, self.t_rtcp


@dataclasses.dataclass(eq=False)
class CallMedia:
    last_active: float
    streams: dict[int, Stream] = dataclasses.field(default_factory=dict)
    held: bool = False


class MediaRelay:
    """`Media` with relay on: anchors every audio/video stream at the server's ports."""

    def __init__(self, settings: MediaSettings, binder: Binder) -> None:
        self.binder = binder
        self.settings = settings
        self.block = PortBlock(*settings.ports)
        self.calls: dict[str, CallMedia] = {}
        self.now = 0.0  # the last sweep's instant: when a call's SDP was last seen, roughly

    def configure(self, settings: MediaSettings) -> None:
        self.settings = settings
        self.block.resize(*settings.ports)

    def rewrite(self, call_uuid: str, towards: str, body: bytes) -> bytes:
        call = self.calls.get(call_uuid)
        if call is None and not self.settings.enabled:
            return body
        try:
            session = sdp.parse(body)
        except sdp.SdpError as exc:
            log.info("call %s: SDP not relayed: %s", call_uuid, exc)
            return body
        new = call is None
        call = call or CallMedia(self.now)
        sender = "T" if towards == "O" else "O"
        anchors = [
            self._anchor(call, i, session, sender, towards) for i in range(len(session.media))
        ]
        wanted = any(m.relayable and m.port for m in session.media)
        if new and wanted and not call.streams and towards == "T":
            raise MediaPortsExhausted(f"media block {self.block.first}-{self.block.last} is full")
        self.calls[call_uuid] = call
        call.held = session.on_hold
        call.last_active = self.now
        return sdp.write(sdp.anchor(session, anchors, self.settings.public_address))

    def reserve(self, call_uuid: str) -> None:
        if not self.settings.enabled or call_uuid in self.calls:
            return
        stream = self._open()
        if stream is None:
            raise MediaPortsExhausted(f"media block {self.block.first}-{self.block.last} is full")
        call = CallMedia(self.now)
        call.streams[0] = stream  # the first m-line of the offer to come
        self.calls[call_uuid] = call

    def _anchor(
        self, call: CallMedia, index: int, session: sdp.Session, sender: str, towards: str
    ) -> sdp.Anchor | None:
        """Where m-line `index` goes through the relay, or None (port 0)."""
        m = session.media[index]
        if not m.relayable or not m.port:
            stream = call.streams.pop(index, None)
            if stream is not None:
                self._close(stream)
            return None
        stream = call.streams.get(index) or self._open()
        if stream is None:
            return None
        call.streams[index] = stream
        address = session.address(index)
        if address is not None and address not in sdp.HOLD_ADDRESSES:
            rtp, rtcp = stream.facing(sender)
            rtp.expect((address, m.port))
            rtcp.expect((address, session.rtcp_port(index)))
        near_rtp, near_rtcp = stream.facing(towards)
        return sdp.Anchor(near_rtp.port, near_rtp.port if m.rtcp_mux else near_rtcp.port)

    def _open(self) -> Stream | None:
        o = self.block.take(self.binder)
        t = self.block.take(self.binder) if o is not None else None
        if o is None or t is None:
            if o is not None:
                self._give_back(o[0], o[1], o[2])
            return None
        ticks = self.settings.relatch_ticks
        endpoints = [
            Endpoint(port + offset, sock, ticks)
            for port, rtp, rtcp in (o, t)
            for offset, sock in ((0, rtp), (1, rtcp))
        ]
        stream = Stream(*endpoints)
        for e in endpoints:
            self.binder.watch(e.sock, e.readable)
        return stream

    def _close(self, stream: Stream) -> None:
        o_rtp, o_rtcp, t_rtp, t_rtcp = stream.endpoints
        self._give_back(o_rtp.port, o_rtp.sock, o_rtcp.sock)
        self._give_back(t_rtp.port, t_rtp.sock, t_rtcp.sock)

    def _give_back(self, port: int, rtp: DatagramSocket, rtcp: DatagramSocket) -> None:
        self.binder.close(rtp)
        self.binder.close(rtcp)
        self.block.give_back(port)

    def release(self, call_uuid: str) -> None:
        call = self.calls.pop(call_uuid, None)
        if call is not None:
            for stream in call.streams.values():
                self._close(stream)

    def idle_calls(self, now: float) -> list[str]:
        self.now = now
        timeout = self.settings.timeout
        idle = []
        for call_uuid, call in self.calls.items():
            active = [e.tick() for s in call.streams.values() for e in s.endpoints]
            if any(active) or call.held or not call.streams:
                call.last_active = now
            elif timeout and now - call.last_active >= timeout:
                idle.append(call_uuid)
        return idle
