"""The relay's per-packet path: one `Endpoint` per media port, symmetric RTP latching.

An endpoint receives on its own socket and forwards out of its partner's
socket (`other`), to the address the partner has latched. Nothing else is
done per packet: one header byte is read only when a packet comes from an
address that is not the latched one (RTP and RTCP are version 2, RFC 3550;
SRTP keeps that header in clear, so encrypted media is forwarded byte for byte).

Latching (symmetric RTP, RFC 4961): until an endpoint has heard from its
phone, it sends to the address in that phone's SDP; its first packet's
source becomes the address (a phone behind NAT shows a private one in its
SDP). After that, packets from any other source are dropped (no hijacking)
unless the latched source has been quiet for `relatch_ticks` ticks of the
relay's clock, so a phone whose address changes keeps talking.

No IO module is imported: the shell hands in sockets (anything with
`recvfrom` and `sendto`) and calls `readable` when one has data.
"""

from __future__ import annotations

from typing import Any, Protocol

BATCH = 64  # datagrams read per readiness callback before yielding to the loop
MAX_DATAGRAM = 4096
# First byte of a packet that may latch: RTP/RTCP version 2 (0x80-0xBF), or a
# DTLS record (20-63, RFC 7983) so DTLS-SRTP handshakes latch too.
_DTLS = range(20, 64)

Address = tuple[str, int]


class DatagramSocket(Protocol):
    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]: ...

    def sendto(self, data: bytes, address: Address, /) -> int: ...


def may_latch(data: bytes) -> bool:
    """An RTP/RTCP (or DTLS) packet: something a phone sends, not noise."""
    if len(data) < 8:
        return False
    first = data[0]
    return first >> 6 == 2 or first in _DTLS


class Endpoint:
    """One relay port facing one phone: latches that phone, forwards to its partner."""

    def __init__(self, port: int, sock: DatagramSocket, relatch_ticks: int) -> None:
        self.port = port
        self.sock = sock
        self.relatch_ticks = relatch_ticks
        self.other: Endpoint = self
        self.source: Address | None = None  # latched: where the phone's packets come from
        self.dest: Address | None = None  # where the phone gets ours: latched, else its SDP
        self.sdp: Address | None = None  # the address the phone's last SDP named
        self.received = 0  # packets accepted (and forwarded if the partner has a dest)
        self.dropped = 0  # packets from a source that may not latch
        self._seen = 0  # `received` at the last tick
        self.quiet = 0  # ticks without a packet from the phone

    def expect(self, address: Address) -> None:
        """The phone's SDP names `address`: a new one is used until the phone latches again."""
        if address != self.sdp:
            self.sdp = self.dest = address
            self.source = None

    def readable(self) -> None:
        """The shell's reader callback: forward what the socket holds (bounded batch)."""
        sock = self.sock
        out = self.other
        for _ in range(BATCH):
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except OSError:  # BlockingIOError: drained; others: nothing to read either
                return
            if addr != self.source and not self._latch(addr, data):
                continue
            self.received += 1
            dest = out.dest
            if dest is not None:
                try:  # noqa: SIM105 (contextlib.suppress costs a call per packet)
                    out.sock.sendto(data, dest)
                except OSError:  # full buffer or unreachable: a lost packet, as on the wire
                    pass

    def _latch(self, addr: Address, data: bytes) -> bool:
        if (self.source is None or self.quiet >= self.relatch_ticks) and may_latch(data):
            self.source = self.dest = (addr[0], addr[1])
            self.quiet = 0
            return True
        self.dropped += 1
        return False

    def tick(self) -> bool:
        """One tick of the relay's clock; True if the phone sent anything since the last."""
        active = self.received != self._seen
        self._seen = self.received
        self.quiet = 0 if active else self.quiet + 1
        return active
