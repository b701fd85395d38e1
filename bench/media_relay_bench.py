"""Media relay bench: packets per second and added latency through the worker's relay code.

The relay side runs the worker's own media path (`media.MediaRelay` with the
shell's `mediaports.UdpPorts` on uvloop, the compiled build when it is
current) in a child process pinned to one core; its calls are set up by
feeding `rewrite` an offer and an answer per call, as the B2BUA does, so
every packet goes through latching and the RTP/RTCP endpoints exactly as in
a call. The generator (this process, pinned to another core) plays both
phones of every call: G.711-sized packets (172 bytes) paced to an aggregate
rate, each stamped with its send time, counted and timed on arrival.

    .venv/bin/python bench/media_relay_bench.py --calls 200 --rates 20000,60000,100000,max

Prints one JSON line per rate: sent, received, loss %, latency p50/p99 in us.
Loopback only; the relay's ports are 41000 upwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STAMP = struct.Struct("!BBHIIQ")  # RTP header + the send time in ns (first 8 payload bytes)
PACKET = 172


def relay_main(calls: int, first_port: int, phones_port: int) -> None:
    """The child: a relay with `calls` calls between generator ports, until stdin closes."""
    import uvloop

    from sipnodes.engine.compiled import running_compiled
    from sipnodes.engine.media import MediaRelay, MediaSettings
    from sipnodes.engine.mediaports import UdpPorts

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        settings = MediaSettings(True, "127.0.0.1", (first_port, first_port + 8 * calls), 0, 2)
        relay = MediaRelay(settings, UdpPorts(loop, "127.0.0.1"))
        ports = []
        for i in range(calls):
            a, b = phones_port + 2 * i, phones_port + 2 * i + 1
            offer = relay.rewrite(f"c{i}", "T", sdp(a)).decode()
            answer = relay.rewrite(f"c{i}", "O", sdp(b)).decode()
            ports.append((_port(answer), _port(offer)))  # caller's relay port, callee's
        print(json.dumps({"compiled": running_compiled(), "ports": ports}), flush=True)
        done = asyncio.Event()
        loop.add_reader(sys.stdin.fileno(), done.set)
        await done.wait()

    uvloop.run(serve())


def sdp(port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\n"
    ).encode()


def _port(body: str) -> int:
    return int(body.split("m=audio ")[1].split()[0])


def measure(
    socks: list[tuple[socket.socket, tuple[str, int]]], rate: float, seconds: float
) -> dict:
    """Send round-robin from every phone socket at `rate` packets/s (0: as fast as possible)."""
    by_fd = {s.fileno(): s for s, _ in socks}
    poll = select.epoll()
    for fd in by_fd:
        poll.register(fd, select.EPOLLIN)
    latencies: list[int] = []
    sent = received = 0
    start = time.perf_counter_ns()
    end = start + int(seconds * 1e9)
    gap = int(1e9 / rate) if rate else 0
    payload = bytes(PACKET - STAMP.size)
    while (now := time.perf_counter_ns()) < end:
        if not gap or sent * gap <= now - start:
            for _ in range(len(socks) if not gap else max(1, min(64, (now - start) // gap - sent))):
                sock, dest = socks[sent % len(socks)]
                sock.sendto(
                    STAMP.pack(0x80, 0, sent & 0xFFFF, 0, 1, time.perf_counter_ns()) + payload, dest
                )
                sent += 1
        for fd, _ in poll.poll(0):
            sock = by_fd[fd]
            for _ in range(64):
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                received += 1
                latencies.append(time.perf_counter_ns() - STAMP.unpack_from(data)[5])
    drain_until = time.perf_counter_ns() + 500_000_000
    while time.perf_counter_ns() < drain_until:
        for fd, _ in poll.poll(0.05):
            try:
                data = by_fd[fd].recv(2048)
            except BlockingIOError:
                continue
            received += 1
            latencies.append(time.perf_counter_ns() - STAMP.unpack_from(data)[5])
    latencies.sort()
    pick = lambda q: latencies[int(q * (len(latencies) - 1))] // 1000 if latencies else None  # noqa: E731
    return {
        "offered_pps": rate or "max",
        "sent": sent,
        "received": received,
        "forwarded_pps": round(received / seconds),
        "loss_pct": round(100 * (1 - received / sent), 3) if sent else None,
        "latency_us_p50": pick(0.5),
        "latency_us_p99": pick(0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rates", default="20000,60000,100000,max")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--relay-port", type=int, default=41000)
    ap.add_argument("--phones-port", type=int, default=51000)
    ap.add_argument("--relay-core", default="0")
    ap.add_argument("--generator-core", default="1")
    ap.add_argument("--relay", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.relay:
        relay_main(args.calls, args.relay_port, args.phones_port)
        return
    os.sched_setaffinity(0, {int(args.generator_core)})
    child = subprocess.Popen(
        ["taskset", "-c", args.relay_core, sys.executable, __file__, "--relay",
         "--calls", str(args.calls), "--relay-port", str(args.relay_port),
         "--phones-port", str(args.phones_port)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        setup = json.loads(child.stdout.readline())
        socks = []
        for i, (caller_relay, callee_relay) in enumerate(setup["ports"]):
            for port, dest in (
                (args.phones_port + 2 * i, caller_relay),
                (args.phones_port + 2 * i + 1, callee_relay),
            ):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
                s.bind(("127.0.0.1", port))
                s.setblocking(False)
                socks.append((s, ("127.0.0.1", dest)))
        load = os.getloadavg()[0]
        for rate in args.rates.split(","):
            result = measure(socks, 0 if rate == "max" else float(rate), args.seconds)
            result.update(calls=args.calls, relay_compiled=setup["compiled"], loadavg_1m=load)
            print(json.dumps(result), flush=True)
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait(10)


if __name__ == "__main__":
    main()
