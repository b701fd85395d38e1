from sipnodes.engine.message import parse
from sipnodes.engine.sipmsg import Peer, make_response, response_peer, stamp_via

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
