import pytest

from sipnodes.engine.sipmsg import (
    Peer,
    RemoteProtocolError,
    make_response,
    parse,
    response_peer,
    serialize,
    stamp_via,
)

OPTIONS = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKabc;rport\r\n"
    b"From: <sip:100@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: c\r\nCSeq: 7 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def test_parse_and_rport_fixup_for_nat():
    req = parse(OPTIONS)
    peer = Peer("UDP", "203.0.113.9", 40001)
    stamp_via(req, peer)
    via = req.via[0]
    assert via.parameters["received"] == "203.0.113.9"
    assert via.parameters["rport"] == "40001"
    assert response_peer(req, peer) == peer  # answer the NAT's address, not 10.0.0.5
    response = make_response(req, 200, to_tag="z")
    assert "rport=40001" in response.headers["Via"]
    assert response.headers["To"] == "<sip:x>;tag=z"


def test_without_rport_responses_go_to_via_port_at_received_address():
    req = parse(OPTIONS.replace(b";rport", b""))
    peer = Peer("UDP", "203.0.113.9", 40001)
    stamp_via(req, peer)
    assert response_peer(req, peer) == Peer("UDP", "203.0.113.9", 5062)


def test_folded_headers_and_compact_forms():
    raw = OPTIONS.replace(b"To: <sip:x>\r\n", b"t: <sip:x>\r\n").replace(
        b"Call-ID: c\r\n", b"i: c\r\nSubject: hello\r\n   world\r\n"
    )
    req = parse(raw)
    assert req.call_id == "c" and req.subject == "hello world"


def test_content_length_cuts_the_body():
    raw = OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 3") + b"abcdef"
    assert parse(raw).body == b"abc"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"garbage",
        b"\xff\xfe\r\n\r\n",
        OPTIONS.replace(b"Call-ID: c\r\n", b""),
        OPTIONS.replace(b"CSeq: 7 OPTIONS", b"CSeq: 7 INVITE"),
        OPTIONS.replace(b"CSeq: 7 OPTIONS", b"CSeq: seven OPTIONS"),
        OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 99"),
        OPTIONS.replace(b"Via: SIP/2.0/UDP", b"Via: nonsense"),
        OPTIONS.replace(b"From: <sip:100@x>;tag=1\r\n", b"From: <<<\r\n"),
        OPTIONS.replace(b"OPTIONS sip:127.0.0.1 SIP/2.0", b"OPTIONS nope SIP/2.0"),
        b"SIP/2.0 abc OK\r\n\r\n",
        OPTIONS.replace(b"Call-ID: c\r\n", b"no colon here\r\n"),
    ],
)
def test_bad_messages_are_refused_with_a_remote_error(raw):
    with pytest.raises(RemoteProtocolError):
        parse(raw)


def test_serialize_sets_content_length():
    req = parse(OPTIONS)
    req.body = b"hello"
    assert b"Content-Length: 5\r\n" in serialize(req)
