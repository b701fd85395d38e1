"""UDP and TCP for SIP (RFC 3261 §18), and the call-back port: sockets only, no SIP logic.

TCP is a byte stream: `StreamFramer` cuts it into messages by Content-Length
(§18.3) with a bounded buffer, so split and joined messages both work and a
peer cannot make us buffer without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
from collections.abc import Callable

from .message import MAX_MESSAGE_SIZE
from .sipmsg import Peer, Send

log = logging.getLogger(__name__)

# Anywhere in the header block: lines end in CRLF, so `$` (before the LF) follows an optional CR.
_CONTENT_LENGTH = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*\r?$", re.I | re.M)

Receiver = Callable[[bytes, Peer], None]
DatagramReceiver = Callable[[list[tuple[bytes, tuple[str, int]]]], None]
UDP_BUFFER = 8 * 1024 * 1024
SO_MEMINFO = 55  # Linux: socket memory counters, [0] = bytes queued for reading
# The call-back port: datagrams read per wakeup before the loop serves SIP again, and a
# small kernel buffer, so a flood is dropped by the kernel instead of queued for us.
CALLBACK_BATCH = 16
CALLBACK_BUFFER = 64 * 1024
CALLBACK_READ = 2048  # more than the protocol's 1,500 bytes: a longer datagram is seen as such


class FramingError(ValueError):
    """The peer's byte stream cannot be cut into SIP messages (their fault)."""


class StreamFramer:
    """Sans-IO: feed bytes, get whole messages (headers + Content-Length body)."""

    def __init__(self, limit: int = MAX_MESSAGE_SIZE) -> None:
        self.limit = limit
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        while True:
            # RFC 5626 keepalives (CRLF) between messages are skipped.
            start = 0
            while buf[start : start + 2] == b"\r\n":
                start += 2
            if start:
                del buf[:start]
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > self.limit:
                    raise FramingError("headers too long")
                return out
            head = bytes(buf[:end])
            m = _CONTENT_LENGTH.search(head)
            if m is None:
                raise FramingError("no Content-Length on a stream transport")
            length = int(m.group(1))
            total = end + 4 + length
            if total > self.limit:
                raise FramingError("message too large")
            if len(buf) < total:
                return out
            out.append(bytes(buf[:total]))
            del buf[:total]


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, receive: Receiver) -> None:
        self.receive = receive
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.receive(data, Peer("UDP", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)  # ICMP unreachable from a gone phone


class TcpProtocol(asyncio.Protocol):
    def __init__(self, receive: Receiver, connections: dict[tuple[str, int], TcpProtocol]):
        self.receive = receive
        self.connections = connections
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer("TCP", host, port)
        self.connections[(host, port)] = self

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.framer.feed(data)
        except FramingError as exc:
            log.debug("closing tcp connection from %s: %s", self.peer, exc)
            if self.transport is not None:
                self.transport.close()
            return
        assert self.peer is not None
        for message in messages:
            self.receive(message, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            key = (self.peer.host, self.peer.port)
            if self.connections.get(key) is self:
                del self.connections[key]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class Transports:
    """The sockets of one virtual server, and `send` for the core's outbox."""

    def __init__(self, receive: Receiver) -> None:
        self.receive = receive
        self.udp: UdpProtocol | None = None
        self.tcp_server: asyncio.Server | None = None
        self.connections: dict[tuple[str, int], TcpProtocol] = {}
        self._pending: dict[tuple[str, int], list[bytes]] = {}
        self._udp_socket: socket.socket | None = None  # kept: get_extra_info builds a wrapper

    async def open(self, host: str, port: int) -> int:
        """Bind UDP and TCP on the same port (0 = any free port); returns the port."""
        loop = asyncio.get_running_loop()
        udp_transport, self.udp = await loop.create_datagram_endpoint(
            lambda: UdpProtocol(self.receive), local_addr=(host, port)
        )
        sock = udp_transport.get_extra_info("socket")
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            # Bursts (thousands of phones re-registering) must not overflow the
            # kernel's default ~200 kB buffer; capped by net.core.rmem_max/wmem_max.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER)
        self._udp_socket = sock
        port = udp_transport.get_extra_info("sockname")[1]
        self.tcp_server = await loop.create_server(
            lambda: TcpProtocol(self.receive, self.connections), host, port, reuse_address=True
        )
        return int(port)

    def udp_backlog(self) -> int:
        """Bytes waiting in the UDP socket's receive queue (0 where unknown)."""
        if self._udp_socket is None:
            return 0
        try:
            meminfo = self._udp_socket.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36)
            return int(struct.unpack("9I", meminfo)[0])
        except (OSError, struct.error):
            return 0

    def send(self, item: Send) -> None:
        peer = item.peer
        if peer.transport == "UDP":
            if self.udp is not None and self.udp.transport is not None:
                self.udp.transport.sendto(item.data, (peer.host, peer.port))
            return
        key = (peer.host, peer.port)
        conn = self.connections.get(key)
        if conn is None and item.fallback is not None:
            key = (item.fallback.host, item.fallback.port)
            conn = self.connections.get(key)
        if conn is not None:
            conn.write(item.data)
        elif key in self._pending:
            self._pending[key].append(item.data)
        else:
            self._pending[key] = [item.data]
            asyncio.get_running_loop().create_task(self._connect(key))

    async def _connect(self, key: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(
                loop.create_connection(
                    lambda: TcpProtocol(self.receive, self.connections), key[0], key[1]
                ),
                5.0,
            )
        except (TimeoutError, OSError) as exc:
            log.debug("tcp connect to %s:%s failed: %s", key[0], key[1], exc)
            self._pending.pop(key, None)
            return
        for data in self._pending.pop(key, []):
            proto.write(data)

    def close(self) -> None:
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()


class CallbackPort:
    """The call-back service's UDP socket, watched with `add_reader`.

    Each wakeup reads at most CALLBACK_BATCH datagrams and hands them over in one
    call, then yields to the loop: however fast a flood comes, the SIP sockets get
    their turn between batches.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, receive: DatagramReceiver) -> None:
        self.loop = loop
        self.receive = receive
        self.sock: socket.socket | None = None
        self.port = 0  # bound port; 0: closed

    def open(self, host: str, port: int) -> None:
        """Bind `port` (not 0) on `host`; OSError if it cannot be bound."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CALLBACK_BUFFER)
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock, self.port = sock, port
        self.loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        sock = self.sock
        if sock is None:
            return
        batch: list[tuple[bytes, tuple[str, int]]] = []
        for _ in range(CALLBACK_BATCH):
            try:
                data, addr = sock.recvfrom(CALLBACK_READ)
            except OSError:  # BlockingIOError: drained; others (ICMP errors): nothing to read
                break
            batch.append((data, (addr[0], addr[1])))
        if batch:
            self.receive(batch)

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        if self.sock is None:
            log.debug("call-back port closed: %d bytes for %s:%s dropped", len(data), *address)
            return
        try:
            self.sock.sendto(data, address)
        except OSError as exc:  # full buffer or unreachable: lost, as on the wire
            log.debug("call-back send to %s:%s failed: %s", address[0], address[1], exc)

    def close(self) -> None:
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
        self.sock, self.port = None, 0
