"""Bad input never crashes the worker: random and mutated SIP, in memory and on the socket."""

from __future__ import annotations

import contextlib
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipnodes.engine.message import parse
from sipnodes.engine.sipmsg import Peer
from tests.support import options_ping

from .helpers import REALM, T0, Pbx
from .test_calls import SDP_A, Scene

SDP = (
    "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0\r\n"
)


def _msg(first: str, method: str, extra: str = "", body: str = "", to_tag: str = "") -> bytes:
    return (
        f"{first}\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:6000;branch=z9hG4bKfuzz1;rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "A" <sip:100@{REALM}>;tag=f1\r\n'
        f"To: <sip:101@{REALM}>{to_tag}\r\n"
        "Call-ID: fuzz-call\r\n"
        f"CSeq: 1 {method}\r\n"
        "Contact: <sip:100@127.0.0.1:6000>\r\n"
        f"{extra}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


SEEDS = [
    _msg(f"OPTIONS sip:{REALM} SIP/2.0", "OPTIONS"),
    _msg(f"REGISTER sip:{REALM} SIP/2.0", "REGISTER", "Expires: 3600\r\n"),
    _msg(
        f"REGISTER sip:{REALM} SIP/2.0",
        "REGISTER",
        f'Authorization: Digest username="100", realm="{REALM}", nonce="1.2", '
        f'uri="sip:{REALM}", response="00", algorithm=MD5, qop=auth, nc=1, cnonce="x"\r\n',
    ),
    _msg(f"INVITE sip:101@{REALM} SIP/2.0", "INVITE", "Content-Type: application/sdp\r\n", SDP),
    _msg(f"BYE sip:101@{REALM} SIP/2.0", "BYE", to_tag=";tag=t1"),
    _msg(f"CANCEL sip:101@{REALM} SIP/2.0", "CANCEL"),
    _msg(f"ACK sip:101@{REALM} SIP/2.0", "ACK", to_tag=";tag=t1"),
    _msg("SIP/2.0 200 OK", "INVITE", to_tag=";tag=t1"),
    _msg("SIP/2.0 486 Busy Here", "INVITE", "Reason: Q.850;cause=17\r\n", to_tag=";tag=t1"),
    _msg(f"INFO sip:101@{REALM} SIP/2.0", "INFO", to_tag=";tag=t1"),
]

JUNK = st.binary(max_size=40) | st.sampled_from(
    [
        b"\r\n",
        b":",
        b";",
        b"<",
        b">",
        b'"',
        b"sip:",
        b"tag=",
        b"\x00",
        b"\xff",
        b" ",
        b",",
        b"Content-Length: 99999\r\n",
        b"Via: SIP/2.0/UDP\r\n",
        b"CSeq: x\r\n",
        b"\r\n\r\n",
    ]
)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes] | None = None) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds or SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete_line", "dup_line"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(JUNK)
        else:
            lines = bytes(data).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            if op == "delete_line":
                del lines[i]
            else:
                lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def mutated_from(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.just(seed), mutated([seed]))


INPUTS = st.one_of(st.binary(max_size=600), mutated(), st.sampled_from(SEEDS))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(INPUTS, min_size=1, max_size=8))
def test_engine_survives_any_datagrams(datagrams):
    pbx = Pbx()
    phone = pbx.phone("100", 6000)
    now = T0
    for data in datagrams:
        pbx.engine.receive(data, Peer("UDP", "127.0.0.1", 6000), now)
        now += 0.7
        pbx.engine.handle_timer(now)
    pbx.engine.outbox.clear()  # replies to garbage may echo its broken lines: unparsable
    phone.send(phone.request("OPTIONS", f"sip:{REALM}"), now)
    assert phone.take()[-1].code == 200


def _in_call_seeds() -> list[bytes]:
    """Messages that match a live call (right tags and branches), to fuzz past auth."""
    s = Scene()
    s.answer()
    seeds = [bytes(s.a_in_dialog(m, 0, body=SDP_A)) for m in ("INVITE", "BYE", "INFO")]
    seeds += [bytes(s.b_in_dialog(m, 0)) for m in ("BYE", "INFO", "INVITE")]
    seeds += [bytes(s.b.respond(s.binv, c, "btag", body=SDP_A)) for c in (180, 200, 486)]
    return seeds


IN_CALL = _in_call_seeds()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(IN_CALL), st.data()), max_size=6))
def test_engine_survives_mutations_of_messages_inside_a_call(items):
    s = Scene()
    s.answer()
    now = T0 + 10
    for from_a, seed, data in items:
        raw = data.draw(mutated_from(seed))
        phone = s.a if from_a else s.b
        s.engine.receive(raw, phone.peer, now)
        now += 1.1
        s.engine.handle_timer(now)
    s.engine.outbox.clear()  # replies to garbage may echo its broken lines: unparsable
    s.a.take()
    s.a.send(s.a.request("OPTIONS", f"sip:{REALM}"), now)
    assert s.a.take()[-1].code == 200


@settings(max_examples=200, deadline=None)
@given(mutated())
def test_parse_either_parses_or_refuses(data):
    with contextlib.suppress(ValueError):  # RemoteProtocolError; nothing else may escape
        parse(data)


@pytest.mark.e2e
def test_live_udp_socket_survives_fuzzing(start_worker):
    worker = start_worker()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(INPUTS)
    def blast(data):
        if data:
            sock.sendto(data, ("127.0.0.1", worker.port))
            sent.append(data)

    try:
        blast()
    finally:
        sock.close()
    assert len(sent) > 100
    assert options_ping(worker.port, timeout=2.0)
    assert worker.proc.poll() is None
    log = worker.log()
    assert "Traceback" not in log and "error handling a message" not in log, log[-3000:]
