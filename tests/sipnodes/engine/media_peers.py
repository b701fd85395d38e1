"""Test-side media: RTP sockets that send numbered packets and count what arrives.

Used by the end-to-end media tests (SIPp, baresip, NAT namespaces); every wait is bounded.
"""

from __future__ import annotations

import random
import re
import select
import socket
import struct
import time
from pathlib import Path

from tests.support import wait_for

RTP_HEADER = struct.Struct("!BBHII")


def rtp_packet(seq: int, ssrc: int, payload_type: int = 0) -> bytes:
    return RTP_HEADER.pack(0x80, payload_type, seq, seq * 160, ssrc) + bytes(160)


def free_block(size: int = 40) -> tuple[int, int]:
    """A block of `size` UDP ports on 127.0.0.1, all free now (even first port)."""
    for _ in range(50):
        first = random.randrange(30000, 50000, 2)
        socks = []
        try:
            for port in range(first, first + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return first, first + size - 1
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of UDP ports")


class RtpPeer:
    """One phone's media port: sends RTP, records (seq, source) of what it receives."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.ssrc = random.getrandbits(32)
        self.seq = 0
        self.received: list[tuple[int, tuple[str, int]]] = []

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def send(self, count: int, dest: tuple[str, int], gap: float = 0.002) -> None:
        for _ in range(count):
            self.seq += 1
            self.sock.sendto(rtp_packet(self.seq, self.ssrc), dest)
            time.sleep(gap)  # paced like a phone, not a burst into the relay's socket

    def collect(self, expected: int, timeout: float = 3.0) -> int:
        """Receive until `expected` packets in all have arrived or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while len(self.received) < expected:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.sock], [], [], left)[0]:
                break
            data, source = self.sock.recvfrom(4096)
            self.received.append((RTP_HEADER.unpack_from(data)[2], source))
        return len(self.received)

    def close(self) -> None:
        self.sock.close()


def sdp_seen(log: Path, label: str, timeout: float = 10.0) -> tuple[str, int, int]:
    """(address, audio port, video port) a SIPp scenario logged as `label A P Q`."""
    pattern = re.compile(rf"^{label} (\S+) (\d+) (\d+)$", re.M)

    def found() -> re.Match[str] | None:
        return pattern.search(log.read_text(errors="replace")) if log.exists() else None

    wait_for(lambda: found() is not None, timeout, f"SIPp to log '{label}' in {log}")
    m = found()
    assert m is not None
    return m.group(1), int(m.group(2)), int(m.group(3))
