"""The media relay's core (`media.MediaRelay`, `rtp.Endpoint`) on in-memory sockets.

The B2BUA part (503 when the block is full, the media timeout) runs on the
in-memory phones of `test_calls.Scene`.
"""

import collections

import pytest

from sipnodes.engine import sdp
from sipnodes.engine.media import MediaPortsExhausted, MediaRelay, MediaSettings
from sipnodes.engine.rtp import may_latch

from .helpers import T0
from .test_calls import Scene

PUBLIC = "198.51.100.5"
RTP = bytes([0x80, 0]) + bytes(10) + b"voice"
RTCP = bytes([0x81, 200]) + bytes(26)
SRTP = bytes([0x80, 0]) + bytes(10) + bytes(range(200))  # payload and auth tag opaque

OFFER = (
    b"v=0\r\no=a 1 1 IN IP4 192.168.1.20\r\ns=-\r\nc=IN IP4 192.168.1.20\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 0\r\na=candidate:1 1 UDP 1 192.168.1.20 4000 typ host\r\n"
    b"m=video 4002 RTP/AVP 96\r\na=rtcp-mux\r\n"
)
ANSWER = (
    b"v=0\r\no=b 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
    b"m=audio 6000 RTP/AVP 0\r\nm=video 6002 RTP/AVP 96\r\na=rtcp-mux\r\n"
)
CALLER_NAT = ("203.0.113.7", 61000)  # where the caller's packets really come from
CALLEE = ("10.0.0.9", 6000)


class FakeSocket:
    def __init__(self, port):
        self.port = port
        self.inbox = collections.deque()
        self.sent = []
        self.closed = False

    def recvfrom(self, size):
        if not self.inbox:
            raise BlockingIOError
        return self.inbox.popleft()

    def sendto(self, data, address):
        self.sent.append((data, address))
        return len(data)


class FakeBinder:
    """The shell's binder on fake sockets; `taken` ports belong to another process."""

    def __init__(self, taken=()):
        self.taken = set(taken)
        self.sockets = {}
        self.readers = {}

    def bind(self, port):
        if port in self.taken or port in self.sockets:
            return None
        self.sockets[port] = FakeSocket(port)
        return self.sockets[port]

    def watch(self, sock, on_readable):
        self.readers[sock.port] = on_readable

    def close(self, sock):
        sock.closed = True
        del self.sockets[sock.port]
        self.readers.pop(sock.port, None)  # a pair whose second port failed was never watched

    def deliver(self, port, data, source):
        """A datagram from `source` arrives at our `port`; what the relay sent out, by port."""
        self.sockets[port].inbox.append((data, source))
        self.readers[port]()
        out = {p: s.sent[:] for p, s in self.sockets.items() if s.sent}
        for s in self.sockets.values():
            s.sent.clear()
        return out


def relay(ports=(40000, 40019), enabled=True, timeout=60, relatch=2, taken=()):
    binder = FakeBinder(taken)
    settings = MediaSettings(enabled, PUBLIC, ports, timeout, relatch)
    return MediaRelay(settings, binder), binder


def ports_of(body):
    s = sdp.parse(body)
    return [m.port for m in s.media]


def offer_answer(r):
    to_callee = r.rewrite("c1", "T", OFFER)
    to_caller = r.rewrite("c1", "O", ANSWER)
    return to_callee, to_caller


def test_relay_off_passes_sdp_untouched_and_opens_nothing():
    r, binder = relay(enabled=False)
    assert r.rewrite("c1", "T", OFFER) == OFFER
    assert binder.sockets == {}


def test_every_audio_and_video_line_points_at_the_server_ports():
    r, binder = relay()
    to_callee, to_caller = offer_answer(r)
    assert ports_of(to_callee) == [40002, 40006]  # the pairs facing the callee
    assert ports_of(to_caller) == [40000, 40004]  # the pairs facing the caller
    for body in (to_callee, to_caller):
        s = sdp.parse(body)
        assert s.address(0) == s.address(1) == PUBLIC
        assert b"candidate" not in body
    assert len(binder.sockets) == 8  # 2 streams x 2 sides x (RTP + RTCP)


def test_rtp_latches_the_real_source_and_flows_both_ways():
    r, binder = relay()
    offer_answer(r)
    # Before the caller speaks, the callee's packets go to the caller's SDP address.
    assert binder.deliver(40002, RTP, CALLEE) == {40000: [(RTP, ("192.168.1.20", 4000))]}
    # The caller's first packet (from its NAT) latches: its address replaces the SDP one.
    assert binder.deliver(40000, RTP, CALLER_NAT) == {40002: [(RTP, CALLEE)]}
    assert binder.deliver(40002, RTP, CALLEE) == {40000: [(RTP, CALLER_NAT)]}


def test_rtcp_on_its_own_ports_and_muxed_video_are_relayed():
    r, binder = relay()
    offer_answer(r)
    assert binder.deliver(40001, RTCP, ("203.0.113.7", 61001)) == {
        40003: [(RTCP, ("10.0.0.9", 6001))]
    }
    assert binder.deliver(40006, RTCP, ("10.0.0.9", 6002)) == {
        40004: [(RTCP, ("192.168.1.20", 4002))]
    }


def test_srtp_is_forwarded_byte_for_byte():
    r, binder = relay()
    offer_answer(r)
    [(data, _)] = binder.deliver(40000, SRTP, CALLER_NAT)[40002]
    assert data == SRTP


def test_after_latching_another_source_is_dropped_until_the_phone_is_quiet():
    r, binder = relay(relatch=2)
    offer_answer(r)
    binder.deliver(40000, RTP, CALLER_NAT)
    attacker = ("192.0.2.66", 5000)
    assert binder.deliver(40000, RTP, attacker) == {}
    r.idle_calls(T0 + 1)  # the caller keeps talking: no quiet tick
    binder.deliver(40000, RTP, CALLER_NAT)
    r.idle_calls(T0 + 2)
    assert binder.deliver(40000, RTP, attacker) == {}
    r.idle_calls(T0 + 3)
    r.idle_calls(T0 + 4)  # two quiet ticks: the caller moved (new NAT mapping)
    moved = ("203.0.113.7", 62000)
    assert binder.deliver(40000, RTP, moved) == {40002: [(RTP, CALLEE)]}
    assert binder.deliver(40002, RTP, CALLEE) == {40000: [(RTP, moved)]}
    assert binder.deliver(40000, RTP, CALLER_NAT) == {}  # the old address is the stranger now


def test_noise_never_latches():
    assert may_latch(RTP) and may_latch(RTCP) and may_latch(bytes([22]) + bytes(20))  # DTLS
    assert not may_latch(b"GET / HTTP/1.0\r\n") and not may_latch(b"\x80")
    r, binder = relay()
    offer_answer(r)
    assert binder.deliver(40000, b"hello world!", CALLER_NAT) == {}


def test_a_full_block_refuses_a_new_call_and_gives_extra_streams_port_0():
    r, binder = relay(ports=(40000, 40007))  # 4 pairs: one stream for one call
    three = OFFER + b"m=audio 4004 RTP/AVP 8\r\n"
    assert ports_of(r.rewrite("c1", "T", three)) == [40002, 40006, 0]
    with pytest.raises(MediaPortsExhausted):
        r.rewrite("c2", "T", OFFER)
    r.release("c1")
    assert binder.sockets == {}
    assert ports_of(r.rewrite("c2", "T", OFFER))[0] != 0


def test_a_port_taken_by_another_process_is_skipped():
    r, binder = relay(taken={40001})
    to_callee = r.rewrite("c1", "T", OFFER)
    assert 40000 not in binder.sockets and ports_of(to_callee)[0] == 40004


def test_reinvite_port_0_frees_the_stream_and_a_new_port_resets_the_latch():
    r, binder = relay()
    offer_answer(r)
    binder.deliver(40000, RTP, CALLER_NAT)
    no_video = OFFER.replace(b"m=video 4002", b"m=video 0").replace(
        b"m=audio 4000", b"m=audio 4010"
    )
    assert ports_of(r.rewrite("c1", "T", no_video)) == [40002, 0]
    assert 40004 not in binder.sockets and 40006 not in binder.sockets
    # The caller's new SDP port is used until it latches again.
    assert binder.deliver(40002, RTP, CALLEE) == {40000: [(RTP, ("192.168.1.20", 4010))]}
    assert binder.deliver(40000, RTP, ("192.0.2.66", 5000)) == {40002: [(RTP, CALLEE)]}


def test_media_that_stops_on_both_sides_times_out_unless_held():
    r, binder = relay(timeout=10)
    r.idle_calls(T0)
    offer_answer(r)
    binder.deliver(40000, RTP, CALLER_NAT)
    assert r.idle_calls(T0 + 1) == []
    assert r.idle_calls(T0 + 10) == []
    assert r.idle_calls(T0 + 11) == ["c1"]
    r.rewrite("c1", "T", OFFER.replace(b"c=IN IP4 192.168.1.20", b"c=IN IP4 0.0.0.0"))
    assert r.idle_calls(T0 + 30) == []  # on hold: silence is expected


def test_relay_turned_on_by_reload_relays_new_calls_and_keeps_old_ones():
    r, _ = relay(enabled=False)
    assert r.rewrite("c1", "T", OFFER) == OFFER
    r.configure(MediaSettings(True, PUBLIC, (40000, 40019), 60, 2))
    assert ports_of(r.rewrite("c2", "T", OFFER)) == [40002, 40006]
    r.configure(MediaSettings(False, PUBLIC, (40000, 40019), 60, 2))
    assert ports_of(r.rewrite("c2", "O", ANSWER)) == [40000, 40004]  # c2 stays anchored


# ---- with the B2BUA --------------------------------------------------------


def relayed_scene(**relay_options):
    r, binder = relay(**relay_options)
    s = Scene(media=r, system={"media_relay": True})
    return s, r, binder


def test_the_callee_gets_an_offer_pointing_at_the_server():
    s, _, _ = relayed_scene()
    s.invite(body=OFFER)
    binv = s.callee_invite()
    assert sdp.parse(binv.body).address(0) == PUBLIC and ports_of(binv.body) == [40002, 40006]


def test_no_media_ports_left_refuses_the_call_with_503_and_cause_47():
    s, _, _ = relayed_scene(ports=(40000, 40001))  # one pair: not one stream
    assert s.invite(body=OFFER)[-1] == 503
    assert s.b.take() == []
    cdr = s.cdr()
    assert cdr["fci"] == "callTag=13;cause=47" and cdr["status"] == 503


def test_a_late_offer_with_no_ports_left_is_refused_before_anyone_rings():
    s, r, _ = relayed_scene(ports=(40000, 40003))  # 2 pairs: one stream, one each way
    r.rewrite("other", "T", OFFER)  # another call holds it
    assert s.invite(body=b"")[-1] == 503
    assert s.b.take() == []
    assert s.cdr()["fci"] == "callTag=13;cause=47"


def test_a_late_offer_gets_the_ports_held_for_it():
    s, r, binder = relayed_scene(ports=(40000, 40003))
    s.invite(body=b"")
    binv = s.callee_invite()
    assert binv.body == b"" and len(binder.sockets) == 4  # one stream held since the INVITE
    with pytest.raises(MediaPortsExhausted):
        r.rewrite("other", "T", OFFER)  # another call cannot take it meanwhile
    s.b.send(s.b.respond(binv, 200, "btag", body=ANSWER), T0 + 3)
    offer = s.a.take()[-1].body  # the callee's offer, towards the caller
    assert sdp.parse(offer).address(0) == PUBLIC and ports_of(offer) == [40000, 0]


def test_media_timeout_ends_the_answered_call_with_its_own_call_tag():
    s, r, binder = relayed_scene(timeout=20)
    s.invite(body=OFFER)
    binv = s.callee_invite()
    s.b.send(s.b.respond(binv, 200, "btag", body=ANSWER), T0 + 3)
    ok = s.a.take()[-1]
    assert ok.code == 200 and ports_of(ok.body) == [40000, 40004]
    t = T0
    while t < T0 + 30 and not s.events("cdr"):
        t += 1
        s.net.timer(t)
    assert [m.method for m in s.b.take() if hasattr(m, "method")][-1] == "BYE"
    assert s.cdr()["fci"] == "callTag=12;cause=102"
    assert binder.sockets == {}  # ports given back
