"""CPU cost of the sans-IO engine alone: no sockets, no Redis, no event loop.

Drives `Engine.receive` with the bytes a phone would send, on a fake clock, and
prints microseconds of engine CPU per authenticated registration (REGISTER ->
401 -> REGISTER with digest -> 200) and per full call (INVITE -> 407 -> ACK ->
INVITE with digest -> 100/180/200 -> ACK, BYE -> 200, through the B2BUA, with
its CDR and call-state events). The phones' own work is not timed. Use it to
measure each step of a speed change; `engine_sip_bench.py` gives the real
rates over UDP.

    .venv/bin/python bench/engine_core_bench.py --registrations 20000 --calls 5000
    .venv/bin/python bench/engine_core_bench.py --profile   # cProfile of the call loop
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import re
import time

from sipnodes.engine.config import parse_config
from sipnodes.engine.core import Engine
from sipnodes.engine.sipmsg import Peer

REALM = "bench.sipcloud"
SERVER = "127.0.0.1:5060"
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
_NONCE = re.compile(rb'nonce="([^"]+)"')


def ha1(number: str) -> str:
    return hashlib.md5(f"{number}:{REALM}:pw{number}".encode()).hexdigest()


def config(users: int):
    return parse_config(
        {
            "server_id": 1,
            "name": "bench",
            "realm": REALM,
            "max_clients": users + 10,
            "listen": {"address": "127.0.0.1", "sip_port": 5060},
            "cdr": {"failed_call_cdr": True, "realtime_display": True},
            "users": [
                {
                    "number": str(100000 + i),
                    "display_name": "",
                    "ha1_md5": ha1(str(100000 + i)),
                    "ha1_sha256": "0" * 64,
                    "call_level": 1,
                }
                for i in range(users)
            ],
        }
    )


def authorization(header: str, user: str, method: str, uri: str, nonce: str) -> str:
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    response = hashlib.md5(f"{ha1(user)}:{nonce}:00000001:abc:auth:{ha2}".encode()).hexdigest()
    return (
        f'{header}: Digest username="{user}", realm="{REALM}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc=00000001, cnonce="abc"\r\n'
    )


def message(first: str, headers: list[str], body: bytes = b"") -> bytes:
    text = first + "\r\n" + "".join(h + "\r\n" for h in headers)
    if body:
        text += "Content-Type: application/sdp\r\n"
    text += f"Content-Length: {len(body)}\r\n\r\n"
    return text.encode() + body


def register(user: str, n: int, cseq: int, auth: str = "") -> bytes:
    headers = [
        f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-r{n}-{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{REALM}>;tag=f{n}",
        f"To: <sip:{user}@{REALM}>",
        f"Call-ID: reg-{n}",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:6000>",
        "Expires: 3600",
    ]
    if auth:
        headers.append(auth.rstrip("\r\n"))
    return message(f"REGISTER sip:{REALM} SIP/2.0", headers)


def reply(request: bytes, code: int, phrase: str, tag: str, body: bytes = b"") -> bytes:
    """A UAS's response: Via, From, To (tagged), Call-ID and CSeq copied."""
    head = request.split(b"\r\n\r\n", 1)[0].decode()
    copied = []
    for line in head.split("\r\n")[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name in ("via", "from", "call-id", "cseq"):
            copied.append(line)
        elif name == "to":
            copied.append(line if ";tag=" in line else f"{line};tag={tag}")
    copied.append("Contact: <sip:callee@127.0.0.1:6002>")
    return message(f"SIP/2.0 {code} {phrase}", copied, body)


class Bench:
    def __init__(self, users: int) -> None:
        self.now = 1000.0
        self.engine = Engine(config(users), self.now, to_wall=lambda t: t + 1.7e9)
        self.phone = Peer("UDP", "127.0.0.1", 6000)
        self.callee = Peer("UDP", "127.0.0.1", 6002)
        self.spent = 0.0

    def feed(self, data: bytes, peer: Peer) -> list[bytes]:
        engine = self.engine
        self.now += 0.0001
        t0 = time.perf_counter()
        engine.receive(data, peer, self.now)
        engine.handle_timer(self.now)
        self.spent += time.perf_counter() - t0
        out = [s.data for s in engine.outbox]
        engine.outbox.clear()
        engine.events.clear()
        engine.location.ops.clear()
        return out

    def registration(self, n: int, user: str, peer: Peer | None = None) -> None:
        peer = peer or self.phone
        [challenge] = self.feed(register(user, n, 1), peer)
        nonce = _NONCE.search(challenge).group(1).decode()  # type: ignore[union-attr]
        auth = authorization("Authorization", user, "REGISTER", f"sip:{REALM}", nonce)
        [ok] = self.feed(register(user, n, 2, auth), peer)
        assert ok.startswith(b"SIP/2.0 200"), ok[:40]

    def call(self, n: int) -> None:
        caller, callee = "100000", "100001"

        def invite(cseq: int, auth: str = "") -> bytes:
            headers = [
                f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-c{n}-{cseq};rport",
                "Max-Forwards: 70",
                f"From: <sip:{caller}@{REALM}>;tag=a{n}",
                f"To: <sip:{callee}@{REALM}>",
                f"Call-ID: call-{n}",
                f"CSeq: {cseq} INVITE",
                f"Contact: <sip:{caller}@127.0.0.1:6000>",
            ]
            if auth:
                headers.append(auth.rstrip("\r\n"))
            return message(f"INVITE sip:{callee}@{REALM} SIP/2.0", headers, SDP)

        def in_dialog(method: str, cseq: int, to: str, branch: str) -> bytes:
            headers = [
                f"Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bK-{branch};rport",
                "Max-Forwards: 70",
                f"From: <sip:{caller}@{REALM}>;tag=a{n}",
                to,
                f"Call-ID: call-{n}",
                f"CSeq: {cseq} {method}",
            ]
            return message(f"{method} sip:sipcloud@{SERVER} SIP/2.0", headers)

        [challenge] = self.feed(invite(1), self.phone)
        to = next(x for x in challenge.decode().split("\r\n") if x.startswith("To:"))
        self.feed(in_dialog("ACK", 1, to, f"c{n}-1"), self.phone)
        nonce = _NONCE.search(challenge).group(1).decode()  # type: ignore[union-attr]
        auth = authorization(
            "Proxy-Authorization", caller, "INVITE", f"sip:{callee}@{REALM}", nonce
        )
        trying, t_invite = self.feed(invite(2, auth), self.phone)
        self.feed(reply(t_invite, 180, "Ringing", "b"), self.callee)
        [ok] = self.feed(reply(t_invite, 200, "OK", "b", SDP), self.callee)
        to = next(x for x in ok.decode().split("\r\n") if x.startswith("To:"))
        [ack] = self.feed(in_dialog("ACK", 2, to, f"c{n}-ack"), self.phone)
        ok_bye, bye = self.feed(in_dialog("BYE", 3, to, f"c{n}-bye"), self.phone)
        assert ok_bye.startswith(b"SIP/2.0 200") and bye.startswith(b"BYE ")
        self.feed(reply(bye, 200, "OK", "b"), self.callee)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--registrations", type=int, default=20000)
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--profile", action="store_true", help="cProfile the call loop")
    args = p.parse_args()

    bench = Bench(users=max(args.registrations, 2))
    for i in range(args.registrations):
        bench.registration(i, str(100000 + i))
    per_reg = bench.spent / args.registrations * 1e6
    bench.registration(0, "100001", bench.callee)
    bench.spent = 0.0
    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    for i in range(args.calls):
        bench.call(i)
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    per_call = bench.spent / args.calls * 1e6
    print(f"engine CPU per authenticated registration: {per_reg:7.1f} us")
    print(f"engine CPU per full call (B2BUA, CDR):     {per_call:7.1f} us")


if __name__ == "__main__":
    main()
