"""The media relay's sockets (shell): UDP ports of the media block, read on the loop.

Sockets are bound synchronously (the B2BUA decides a call's ports while it
handles a message) and watched with `add_reader`, so each readiness event
lets the endpoint (`rtp.Endpoint.readable`) drain a batch of datagrams with
plain `recvfrom`/`sendto`: no transport or protocol objects per packet.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from .rtp import DatagramSocket

# 1 MiB each way: ~6,000 G.711 packets, enough to ride out a loop stall of
# a few hundred ms at this port's rate without loss.
SOCKET_BUFFER = 1024 * 1024


class UdpPorts:
    """`media.Binder` on one event loop and one local address."""

    def __init__(self, loop: asyncio.AbstractEventLoop, address: str) -> None:
        self.loop = loop
        self.address = address
        self.family = socket.AF_INET6 if ":" in address else socket.AF_INET

    def bind(self, port: int) -> DatagramSocket | None:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            sock.bind((self.address, port))
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return sock

    def watch(self, sock: DatagramSocket, on_readable: Callable[[], None]) -> None:
        assert isinstance(sock, socket.socket)
        self.loop.add_reader(sock.fileno(), on_readable)

    def close(self, sock: DatagramSocket) -> None:
        assert isinstance(sock, socket.socket)
        if sock.fileno() >= 0:
            self.loop.remove_reader(sock.fileno())
        sock.close()
