"""A million random and mutated datagrams against one worker: it must still answer.

Starts a worker (its own Redis on a free port, nothing persisted) and sends
`--count` datagrams to its SIP port, paced in bursts so the kernel buffer is not the
only thing tested: a third random bytes, a third real SIP messages (REGISTER, INVITE,
OPTIONS, BYE, ACK, responses) with a few bytes flipped, inserted or cut, a third
real messages with a header mangled (huge, empty, duplicated, bad Content-Length).
Every 50,000 datagrams it checks that OPTIONS is answered. At the end it prints the
rate, the answers seen, the worker's CPU and memory, and whether its log holds a
traceback. Exit status 1 if the worker stopped answering or logged a traceback.

    .venv/bin/python bench/fuzz_flood.py [--count 1000000] [--seconds 600]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.sipnodes.engine.helpers import config_dict  # noqa: E402
from tests.support import free_port, options_ping, wait_until  # noqa: E402

SEEDS = [
    b"REGISTER sip:vs12.sipcloud SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKa"
    b"\r\nFrom: <sip:100@vs12.sipcloud>;tag=1\r\nTo: <sip:100@vs12.sipcloud>\r\nCall-ID: r1"
    b"\r\nCSeq: 1 REGISTER\r\nContact: <sip:100@127.0.0.1:5999>\r\nExpires: 60\r\n"
    b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
    b"INVITE sip:101@vs12.sipcloud SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKb"
    b'\r\nFrom: "A" <sip:100@vs12.sipcloud>;tag=2\r\nTo: <sip:101@vs12.sipcloud>\r\n'
    b"Call-ID: i1\r\nCSeq: 1 INVITE\r\nContact: <sip:100@127.0.0.1:5999>\r\n"
    b'Proxy-Authorization: Digest username="100", realm="vs12.sipcloud", nonce="x", '
    b'uri="sip:101@vs12.sipcloud", response="0"\r\nContent-Type: application/sdp\r\n'
    b"Content-Length: 60\r\n\r\nv=0\r\no=a 1 1 IN IP4 1.2.3.4\r\ns=-\r\nc=IN IP4 1.2.3.4\r\n"
    b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n",
    b"OPTIONS sip:vs12.sipcloud SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKc\r\n"
    b"From: <sip:x@y>;tag=3\r\nTo: <sip:vs12.sipcloud>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"BYE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKd\r\n"
    b"From: <sip:101@y>;tag=4\r\nTo: <sip:100@y>;tag=5\r\nCall-ID: b1\r\nCSeq: 2 BYE\r\n"
    b"Content-Length: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKe\r\nFrom: <sip:a@b>;"
    b"tag=6\r\nTo: <sip:c@d>;tag=7\r\nCall-ID: s1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
]
HEADER_JUNK = [
    b"Content-Length: 99999\r\n",
    b"Content-Length: -1\r\n",
    b"Via: \r\n",
    b"CSeq: 99999999999999999999 INVITE\r\n",
    b"To: <sip:" + b"9" * 3000 + b"@x>\r\n",
    b'From: "\x00\x01" <sip:x@y>\r\n',
    b"Max-Forwards: abc\r\n",
    b"Contact: *\r\n",
]


def mutate(rng: random.Random) -> bytes:
    kind = rng.randrange(3)
    if kind == 0:
        return rng.randbytes(rng.randrange(1, 1400))
    seed = bytearray(rng.choice(SEEDS))
    if kind == 1:
        for _ in range(rng.randrange(1, 8)):
            at = rng.randrange(len(seed))
            action = rng.randrange(3)
            if action == 0:
                seed[at] = rng.randrange(256)
            elif action == 1:
                seed[at:at] = rng.randbytes(rng.randrange(1, 16))
            else:
                del seed[at : at + rng.randrange(1, 16)]
        return bytes(seed)
    lines = bytes(seed).split(b"\r\n")
    lines.insert(rng.randrange(1, max(2, len(lines) - 2)), rng.choice(HEADER_JUNK).rstrip())
    return b"\r\n".join(lines)[:65000]


def start_worker(tmp: Path) -> tuple[subprocess.Popen[bytes], int, Path, subprocess.Popen[bytes]]:
    redis_port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    port = free_port()
    data = config_dict(max_clients=10)
    data["listen"]["sip_port"] = port
    data["redis_url"] = f"redis://127.0.0.1:{redis_port}/0"
    data["spool_dir"] = str(tmp / "spool")
    config = tmp / "vs.json"
    config.write_text(json.dumps(data))
    log = tmp / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sipnodes.engine", "--config", str(config)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    if not wait_until(lambda: options_ping(port) is not None, 15.0):
        raise SystemExit(f"the worker did not start:\n{log.read_text()}")
    return proc, port, log, redis_proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=600.0, help="stop early after this")
    parser.add_argument("--seed", type=int, default=4475)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp_name:
        tmp = Path(tmp_name)
        proc, port, log, redis_proc = start_worker(tmp)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        rss_start, started, answers, sent, failed_pings = (
            rss_mib(proc.pid),
            time.monotonic(),
            0,
            0,
            0,
        )
        try:
            while sent < args.count and time.monotonic() - started < args.seconds:
                for _ in range(500):
                    sock.sendto(mutate(rng), ("127.0.0.1", port))
                sent += 500
                time.sleep(0.002)  # bursts of 500: the worker keeps up rather than the kernel
                try:
                    while sock.recv(65535):
                        answers += 1
                except BlockingIOError:
                    pass
                if sent % 50_000 == 0:
                    time.sleep(0.2)  # the backlog drains: a ping is not lost in the flood
                    failed_pings += not any(options_ping(port, 1.0) for _ in range(3))
                    print(f"{sent:>9} sent, {answers} answers", flush=True)
            took = time.monotonic() - started
            alive = options_ping(port, timeout=2.0) is not None
            cpu, rss_end = cpu_seconds(proc.pid), rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(10)
            redis_proc.terminate()
            redis_proc.wait(10)
        text = log.read_text(errors="replace")
    traceback = "Traceback" in text
    print(f"datagrams sent      {sent:,} in {took:.0f} s ({sent / took:,.0f}/s)")
    print(f"answers received    {answers:,}")
    print(f"worker CPU          {cpu:.1f} s ({cpu / sent * 1e6:.1f} µs per datagram)")
    print(f"worker RSS          {rss_start:.1f} MiB at start, {rss_end:.1f} MiB at the end")
    print(f"OPTIONS checks      {failed_pings} unanswered during the run; at the end: {alive}")
    print(f"traceback in log    {traceback}")
    return 0 if alive and not failed_pings and not traceback else 1


if __name__ == "__main__":
    sys.exit(main())
