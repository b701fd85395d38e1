"""SDP parse, write and the relay's rewrite (`sdp.anchor`), without sockets."""

import pytest

from sipnodes.engine import sdp

AUDIO_VIDEO = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.168.1.20\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.168.1.20\r\n"
    b"t=0 0\r\n"
    b"a=ice-ufrag:F7gI\r\n"
    b"a=ice-pwd:x9cml/YzichV2+XlhiMu8g\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtcp:49171 IN IP4 192.168.1.20\r\n"
    b"a=candidate:1 1 UDP 2130706431 192.168.1.20 49170 typ host\r\n"
    b"a=candidate:2 1 UDP 1694498815 203.0.113.7 61000 typ srflx raddr 192.168.1.20 rport 49170\r\n"
    b"a=end-of-candidates\r\n"
    b"a=sendrecv\r\n"
    b"m=video 51372 RTP/AVPF 96\r\n"
    b"c=IN IP4 192.168.1.21\r\n"
    b"a=rtpmap:96 H264/90000\r\n"
    b"a=rtcp-mux\r\n"
    b"m=application 5000 UDP/BFCP *\r\n"
)


def test_parse_reads_what_the_relay_needs_and_writes_the_body_back():
    s = sdp.parse(AUDIO_VIDEO)
    assert [(m.media, m.port, m.proto) for m in s.media] == [
        ("audio", 49170, "RTP/AVP"),
        ("video", 51372, "RTP/AVPF"),
        ("application", 5000, "UDP/BFCP"),
    ]
    assert [m.relayable for m in s.media] == [True, True, False]
    assert s.address(0) == "192.168.1.20" and s.address(1) == "192.168.1.21"
    assert s.rtcp_port(0) == 49171  # a=rtcp:
    assert s.rtcp_port(1) == 51372  # a=rtcp-mux: RTCP on the RTP port
    assert sdp.write(s) == AUDIO_VIDEO


def test_rtcp_defaults_to_the_next_port_and_lf_only_bodies_are_read():
    s = sdp.parse(b"v=0\nc=IN IP4 10.0.0.1\nm=audio 4000 RTP/SAVP 0\n")
    assert s.rtcp_port(0) == 4001 and s.media[0].relayable  # SRTP is relayed too
    assert s.media[0].direction == "sendrecv"


@pytest.mark.parametrize(
    "body",
    [b"", b"m=audio 1 RTP/AVP 0\r\n", b"v=0\r\nm=audio x RTP/AVP 0\r\n", b"v=0\r\nm=audio\r\n"],
)
def test_broken_sdp_is_an_sdp_error(body):
    with pytest.raises(sdp.SdpError):
        sdp.parse(body)


def test_anchor_points_every_relayed_line_at_the_server_and_drops_ice():
    s = sdp.parse(AUDIO_VIDEO)
    out = sdp.anchor(s, [sdp.Anchor(20000, 20001), sdp.Anchor(20004, 20004), None], "198.51.100.5")
    text = sdp.write(out).decode()
    assert "m=audio 20000 RTP/AVP 0 8 101\r\n" in text
    assert "a=rtcp:20001\r\n" in text
    assert "m=video 20004 RTP/AVPF 96\r\n" in text and "a=rtcp-mux\r\n" in text
    assert "m=application 0 UDP/BFCP *\r\n" in text  # not relayed: refused, never a wrong address
    assert "192.168.1.2" not in text.split("o=")[1].split("\r\n", 1)[1]  # only o= keeps it
    assert text.count("c=IN IP4 198.51.100.5\r\n") == 2
    assert "candidate" not in text and "ice-" not in text
    assert "a=sendrecv" in text and "a=rtpmap:96 H264/90000" in text
    assert sdp.write(s) == AUDIO_VIDEO  # the input is not changed


def test_hold_with_a_null_address_keeps_it_and_hold_is_recognised():
    held = sdp.parse(b"v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
    assert held.on_hold
    out = sdp.write(sdp.anchor(held, [sdp.Anchor(20000, 20001)], "198.51.100.5"))
    assert b"c=IN IP4 0.0.0.0\r\n" in out and b"m=audio 20000 " in out
    sendonly = sdp.parse(AUDIO_VIDEO.replace(b"a=sendrecv", b"a=sendonly"))
    assert sendonly.media[0].direction == "sendonly"
    assert not sendonly.on_hold  # one side still sends: media keeps the call alive
    inactive = sdp.parse(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n")
    assert inactive.on_hold


def test_an_ipv6_relay_address_gets_ip6():
    s = sdp.parse(b"v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0\r\n")
    assert b"c=IN IP6 2001:db8::1\r\n" in sdp.write(
        sdp.anchor(s, [sdp.Anchor(20000, 20001)], "2001:db8::1")
    )
