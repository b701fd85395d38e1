from sipnodes.engine.message import parse
from sipnodes.engine.sipmsg import Peer, make_response, response_peer, shed_response, stamp_via

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


def raw(method: str, *headers: str) -> bytes:
    """A request as a phone might write it: compact and odd-case names, no parsing needed."""
    first = f"{method} sip:x SIP/2.0\r\n"
    base = ("v: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1", "f: <sip:100@x>;tag=a", "CALL-ID: c1")
    lines = [*base, f"cseq: 1 {method}", *headers, "l: 0"]
    return (first + "".join(h + "\r\n" for h in lines) + "\r\n").encode()


def test_overload_refuses_new_work_from_the_raw_bytes():
    refusal = shed_response(raw("REGISTER", "t: <sip:100@x>"), 5)
    assert refusal is not None and refusal.new_work
    response = parse(refusal.response)
    assert (response.code, response.headers["Retry-After"]) == (503, "5")
    assert response.to_address.tag and response.call_id == "c1"
    assert response.top_via.branch == "z9hG4bK1"
    bye = shed_response(raw("BYE", "To: <sip:100@x>"), 5)
    assert bye is not None and parse(bye.response).code == 481 and not bye.new_work
    # Stateless, so a retransmission gets the same To tag, another request another (§8.2.7).
    tags = [
        parse(shed_response(raw(m, "t: <sip:100@x>"), 5).response).to_address.tag
        for m in ("REGISTER", "REGISTER", "INVITE")
    ]
    assert tags[0] == tags[1] != tags[2]


def test_overload_answers_what_comes_back_on_its_refusal_without_parsing():
    refused = parse(shed_response(raw("REGISTER", "To: <sip:100@x>"), 5).response)
    to = f"To: {refused.headers['To']}"
    bye = shed_response(raw("BYE", to), 5)  # SIPp's after the call it aborted
    assert bye is not None and not bye.new_work
    assert parse(bye.response).code == 481 and parse(bye.response).headers["To"] == to[4:]
    assert shed_response(raw("ACK", to), 5) == (b"", False)  # an ACK is never answered
    assert shed_response(raw("ACK", "To: <sip:100@x>"), 5) is None  # not ours: served
    assert shed_response(raw("BYE", "To: <sip:100@x;tag=shed1>;tag=1a2b"), 5) is None


def test_overload_serves_work_under_way_and_what_it_cannot_read_cheaply():
    to = "To: <sip:100@x>"
    served = [
        raw("REGISTER", to, 'authorization: Digest username="100"'),
        raw("INVITE", to, 'Proxy-Authorization: Digest username="100"'),
        raw("BYE", "To: <sip:100@x> ;TAG=b"),
        raw("REGISTER", to, " ;tag=b"),  # folded
        raw("OPTIONS", to),
        raw("REGISTER"),  # no To: the parser refuses it
    ]
    assert [shed_response(data, 5) for data in served] == [None] * len(served)
