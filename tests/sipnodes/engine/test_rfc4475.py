"""RFC 4475 torture messages: the parser, the engine and a live worker answer each sensibly.

The 49 messages of RFC 4475 §3 are in `rfc4475/`, one file each, byte for byte
as the RFC's Appendix A archive has them (the copies in resiprocate's and
sipsorcery's test data agree to the byte, and with the RFC's text): CRLF line
ends, a binary body in `mpart01`, and no empty line after the headers of
`baddn`. For each message the table says what the RFC calls it and what the
server answers:

- valid requests get a sensible answer: OPTIONS is answered, an unknown method
  501, an INVITE or REGISTER from nobody we know its 407/401 challenge, a
  dialog we do not have 481, an unsupported URI scheme 416, a REGISTER whose
  address of record is not SIP 400;
- invalid requests get a 4xx (400 unless the RFC names another status, as 505
  for SIP/7.0), never a 2xx;
- responses, valid or not, match no transaction of ours and are dropped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import socket
from pathlib import Path

import pytest

from sipnodes.engine.message import RemoteProtocolError, Request, Response, parse
from sipnodes.engine.sipmsg import Peer
from tests.support import options_ping

from .helpers import T0, make_engine

DATA = Path(__file__).parent / "rfc4475"
# sha256 over every file's name and bytes: a changed byte (an editor trimming
# trailing spaces, git converting line ends) changes what a case tests.
DIGEST = "c9ee8e9a3d70df837f7ffe4067c698d97d8f4e846b37d4bee3ba85ff4b88b355"

NO_ANSWER = "no answer"
ANY_4XX = "4xx"
Expected = int | tuple[int, ...] | str


@dataclasses.dataclass(frozen=True)
class Case:
    name: str  # the file's name in RFC 4475, without ".dat"
    section: str
    valid: bool  # the RFC's verdict
    response: bool  # a response rather than a request
    expect: Expected  # a status, any of several, ANY_4XX or NO_ANSWER
    why: str
    carries: tuple[str, ...] = ()  # header fields the answer must have
    # An invalid message the parser takes whole: its broken field is one the
    # server does not use (the RFC lets it ignore that), or one parsed when it
    # is first read (`read_fails`, a property of Message), which then refuses.
    liberal: bool = False
    read_fails: str = ""

    def data(self) -> bytes:
        return (DATA / f"{self.name}.dat").read_bytes()


def valid(name: str, section: str, expect: Expected, why: str, *carries: str) -> Case:
    return Case(name, section, True, False, expect, why, carries)


def invalid(
    name: str, section: str, expect: Expected, why: str, liberal: bool = False, read_fails: str = ""
) -> Case:
    return Case(name, section, False, False, expect, why, liberal=liberal, read_fails=read_fails)


def response(name: str, section: str, is_valid: bool, why: str) -> Case:
    return Case(name, section, is_valid, True, NO_ANSWER, why)


CHALLENGE = "Proxy-Authenticate"
REG_CHALLENGE = "WWW-Authenticate"

CASES = [
    # 3.1.1 valid messages
    valid("wsinv", "3.1.1.1", 481, "INVITE with a To tag: no such dialog"),
    valid("intmeth", "3.1.1.2", 501, "unknown method: 501 listing Allow", "Allow"),
    valid("esc01", "3.1.1.3", 407, "INVITE from an unknown caller is challenged", CHALLENGE),
    valid("escnull", "3.1.1.4", 401, "REGISTER is challenged", REG_CHALLENGE),
    valid("esc02", "3.1.1.5", 501, "RE%47IST%45R is an unknown method", "Allow"),
    valid("lwsdisp", "3.1.1.6", 200, "OPTIONS is answered"),
    valid("longreq", "3.1.1.7", 407, "long INVITE is challenged", CHALLENGE),
    valid("dblreq", "3.1.1.8", 401, "the REGISTER only; the INVITE after it is noise"),
    valid("semiuri", "3.1.1.9", 200, "OPTIONS is answered"),
    valid("transports", "3.1.1.10", 200, "OPTIONS is answered"),
    valid("mpart01", "3.1.1.11", 405, "MESSAGE outside a dialog is not served", "Allow"),
    response("unreason", "3.1.1.12", True, "a stray 200: dropped"),
    response("noreason", "3.1.1.13", True, "a stray 100: dropped"),
    # 3.1.2 invalid messages
    invalid("badinv01", "3.1.2.1", 400, "empty Via and Contact parameters"),
    invalid("clerr", "3.1.2.2", 400, "Content-Length larger than the datagram"),
    invalid("ncl", "3.1.2.3", 400, "negative Content-Length"),
    invalid("scalar02", "3.1.2.4", 400, "CSeq out of range"),
    response("scalarlg", "3.1.2.5", False, "a response with scalars out of range: dropped"),
    invalid("quotbal", "3.1.2.6", 400, "unterminated quoted string"),
    invalid("ltgtruri", "3.1.2.7", 400, "<> around the Request-URI"),
    invalid("lwsruri", "3.1.2.8", 400, "whitespace inside the Request-URI"),
    invalid("lwsstart", "3.1.2.9", 400, "two spaces in the request line"),
    invalid("trws", "3.1.2.10", 400, "spaces after SIP/2.0"),
    invalid("escruri", "3.1.2.11", 400, "headers in the Request-URI"),
    # RFC: reject only if the Date matters; ours does not, so the INVITE is challenged.
    invalid("baddate", "3.1.2.12", ANY_4XX, "non-GMT Date, ignored", liberal=True),
    # The Contact is read when the REGISTER is served, and refused before the challenge.
    invalid(
        "regbadct", "3.1.2.13", 400, "Contact addr-spec with ?headers", True, read_fails="contact"
    ),
    invalid("badaspec", "3.1.2.14", 400, "spaces inside <URI>"),
    invalid("baddn", "3.1.2.15", 400, "unquoted display name with a comma"),
    invalid("badvers", "3.1.2.16", 505, "SIP/7.0: 505 Version Not Supported"),
    invalid("mismatch01", "3.1.2.17", 400, "CSeq method is not the request's"),
    # RFC: 501 preferred, 400 acceptable.
    invalid("mismatch02", "3.1.2.18", (400, 501), "unknown method, CSeq mismatched"),
    response("bigcode", "3.1.2.19", False, "status code 4294967301: dropped"),
    # 3.2 transaction layer
    valid("badbranch", "3.2.1", (200, 400), "branch is the bare magic cookie"),
    # 3.3 application layer
    invalid("insuf", "3.3.1", 400, "no From, To or Call-ID"),
    valid("unkscm", "3.3.2", 416, "unknown Request-URI scheme"),
    valid("novelsc", "3.3.3", 416, "soap.beep Request-URI"),
    valid("unksm2", "3.3.4", 400, "REGISTER whose address of record is not SIP"),
    valid("bext01", "3.3.5", 420, "Require: unsupported extensions", "Unsupported"),
    # RFC: 415 with Accept; challenged first, so 407.
    valid("invut", "3.3.6", (407, 415), "unknown Content-Type"),
    valid("regaut01", "3.3.7", 401, "unknown auth scheme: a Digest challenge", REG_CHALLENGE),
    invalid("multi01", "3.3.8", 400, "two Call-IDs, CSeqs, Tos and Froms"),
    invalid("mcl01", "3.3.9", 400, "two Content-Lengths"),
    response("bcast", "3.3.10", True, "a stray 200 with a broadcast Via: dropped"),
    # An endpoint serves OPTIONS with Max-Forwards 0 (RFC 3261 §16.3 step 2).
    valid("zeromf", "3.3.11", (200, 483), "Max-Forwards: 0"),
    valid("cparam01", "3.3.12", 401, "REGISTER, Contact with a header parameter", REG_CHALLENGE),
    valid("cparam02", "3.3.13", 401, "REGISTER, Contact with a URI parameter", REG_CHALLENGE),
    valid("regescrt", "3.3.14", 401, "REGISTER, Contact with an escaped header", REG_CHALLENGE),
    # RFC: 406 for an unacceptable Accept; challenged first, so 407.
    valid("sdp01", "3.3.15", (407, 406, 488), "Accept: text/nobodyKnowsThis"),
    # 3.4 backward compatibility
    valid("inv2543", "3.4.1", 407, "RFC 2543 INVITE: no branch, tag or Max-Forwards", CHALLENGE),
]
IDS = [case.name for case in CASES]
_STATUS = re.compile(rb"SIP/2\.0 (\d{3}) ")


def status_of(answer: bytes) -> int:
    m = _STATUS.match(answer)
    assert m is not None, f"not a SIP response: {answer[:80]!r}"
    return int(m.group(1))


def problems(case: Case, answers: list[bytes]) -> list[str]:
    """What is wrong with the answers a case got (empty when all is well)."""
    codes = [status_of(a) for a in answers]
    finals = [c for c in codes if c >= 200]
    out = []
    if any(200 <= c < 300 for c in codes) and not case.valid:
        out.append(f"2xx to an invalid message: {codes}")
    if case.expect == NO_ANSWER:
        if answers:
            out.append(f"expected no answer, got {codes}")
        return out
    if len(finals) != 1:
        return out + [f"expected one final answer, got {codes}"]
    code = finals[0]
    expect = case.expect
    if expect == ANY_4XX:
        ok = 400 <= code < 500
    elif isinstance(expect, tuple):
        ok = code in expect
    else:
        ok = code == expect
    if not ok:
        out.append(f"expected {expect}, got {code}")
    final = next(a for a in answers if status_of(a) == code)
    head = final.split(b"\r\n\r\n", 1)[0].lower()
    for name in case.carries:
        if f"\r\n{name.lower()}:".encode() not in head:
            out.append(f"{code} without {name}")
    return out


def test_the_files_are_the_rfcs_bytes():
    files = sorted(p.name for p in DATA.glob("*.dat"))
    assert files == sorted(f"{name}.dat" for name in IDS)
    digest = hashlib.sha256()
    for name in files:
        digest.update(name.encode() + b"\0" + (DATA / name).read_bytes() + b"\0")
    assert digest.hexdigest() == DIGEST
    for case in CASES:  # every header line ends in CRLF, as in the RFC
        head = case.data().split(b"\r\n\r\n", 1)[0]
        assert b"\n" not in head.replace(b"\r\n", b""), case.name


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_parser_takes_the_valid_and_refuses_the_invalid(case):
    data = case.data()
    if not (case.valid or case.liberal):
        with pytest.raises(RemoteProtocolError):
            parse(data)
        return
    msg = parse(data)
    assert isinstance(msg, Response if case.response else Request)
    views = ["via", "from_address", "to_address", "cseq", "max_forwards", "contact"]
    if not case.response:
        views.append("uri")
    for view in views:
        if view == case.read_fails:
            with pytest.raises(ValueError):
                getattr(msg, view)
        else:
            getattr(msg, view)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_engine_answers_each_message(case):
    engine = make_engine()
    engine.receive(case.data(), Peer("UDP", "127.0.0.1", 5999), T0)
    assert problems(case, [send.data for send in engine.outbox]) == []


# ---- a live worker ---------------------------------------------------------------------

_VIA_FIELD = re.compile(rb"\r\n(?:via|v)[ \t]*:", re.IGNORECASE)
_SENT_BY = re.compile(rb"\s*SIP\s*/\s*2\.0\s*/\s*[\w.!%*+`'~-]+\s+([^\s;,]+)")


def to_loopback(data: bytes, port: int) -> bytes | None:
    """`data` with the top Via's sent-by made 127.0.0.1:`port`; None if it has no readable one.

    The messages name hosts like 192.0.2.x and example.com, and a server sends
    its responses to the top Via's sent-by (RFC 3261 §18.2.2). Rewriting only
    that keeps every answer on loopback, to our socket: nothing is ever sent to
    the messages' own addresses. Everything else, broken parts included, stays.
    """
    end = data.find(b"\r\n\r\n")
    field = _VIA_FIELD.search(data, 0, end if end >= 0 else len(data))
    sent_by = field and _SENT_BY.match(data, field.end())
    if not sent_by:
        return None
    start, stop = sent_by.span(1)
    return data[:start] + b"127.0.0.1:%d" % port + data[stop:]


def barrier(port: int, lport: int) -> tuple[bytes, bytes]:
    """An OPTIONS and its Call-ID: its answer comes after every answer to what we sent before.

    A worker handles datagrams one at a time and sends what each produces before
    reading the next, so once the barrier's 200 is in, nothing more comes for the
    message sent before it: "no answer" is known without waiting for a timeout.
    """
    call_id = f"barrier-{os.urandom(6).hex()}".encode()
    data = (
        b"OPTIONS sip:127.0.0.1:%d SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:%d;branch=z9hG4bK%s\r\n"
        b"From: <sip:probe@127.0.0.1>;tag=b\r\nTo: <sip:127.0.0.1:%d>\r\n"
        b"Call-ID: %s\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ) % (port, lport, os.urandom(6).hex().encode(), port, call_id)
    return data, call_id


def ack_for(request: bytes, answer: bytes) -> bytes | None:
    """The ACK of a final non-2xx answer to an INVITE (RFC 3261 §17.1.1.3), else None.

    Without it the worker would retransmit the answer to a socket we have closed.
    """
    with contextlib.suppress(RemoteProtocolError, ValueError, KeyError):
        resp = parse(answer)
        if not isinstance(resp, Response) or resp.code < 300 or resp.cseq.method != "INVITE":
            return None
        uri = request.split(b"\r\n", 1)[0].split()[1].decode()
        h = resp.headers
        return (
            f"ACK {uri} SIP/2.0\r\nVia: {resp.top_via}\r\nMax-Forwards: 70\r\n"
            f"From: {h['From']}\r\nTo: {h['To']}\r\nCall-ID: {h['Call-ID']}\r\n"
            f"CSeq: {resp.cseq.sequence} ACK\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    return None


def exchange(port: int, case: Case) -> list[bytes]:
    """Send one message from a socket of its own; every datagram the worker sends back."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5.0)
        lport = sock.getsockname()[1]
        data = case.data()
        if not case.response:
            rewritten = to_loopback(data, lport)
            if rewritten is None:
                # Only a message the parser refuses may keep its Via (badvers:
                # SIP/7.0): the refusal goes statelessly to the packet's source.
                with pytest.raises(RemoteProtocolError):
                    parse(data)
            else:
                data = rewritten
                with contextlib.suppress(RemoteProtocolError):
                    via = parse(data).top_via
                    assert (via.host, via.port) == ("127.0.0.1", lport), case.name
                    assert not {"received", "maddr"} & via.parameters.keys(), case.name
        sock.sendto(data, ("127.0.0.1", port))
        probe, call_id = barrier(port, lport)
        sock.sendto(probe, ("127.0.0.1", port))
        answers = []
        while True:
            datagram = sock.recv(65535)
            if call_id in datagram:
                break
            answers.append(datagram)
        for answer in answers:
            ack = ack_for(data, answer)
            if ack is not None:
                sock.sendto(ack, ("127.0.0.1", port))
        return answers


@pytest.mark.e2e
def test_a_live_worker_answers_every_torture_message_over_udp(start_worker):
    worker = start_worker()
    rows, failures = [], []
    for case in CASES:
        answers = exchange(worker.port, case)
        got = ", ".join(a.split(b"\r\n", 1)[0][8:].decode(errors="replace") for a in answers)
        verdict = "valid" if case.valid else "invalid"
        rows.append(f"{case.section:9} {case.name:11} {verdict:8} {got or NO_ANSWER}")
        failures += [f"{case.name}: {p}" for p in problems(case, answers)]
    print("\n".join(["", *rows]))
    assert failures == [], "\n".join(failures)
    assert options_ping(worker.port, timeout=2.0)
    assert worker.proc.poll() is None
    log = worker.log()
    assert "Traceback" not in log and "error handling a message" not in log, log[-3000:]
