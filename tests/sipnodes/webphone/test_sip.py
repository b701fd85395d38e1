"""The web phone's SIP side (sipnodes/webphone/sip.py) against the real engine core, in
memory: the gateway's `Phones` and the worker's `Engine` exchange bytes, a test phone of
the engine's helpers plays the other party. No sockets, a fake clock."""

from __future__ import annotations

from sipnodes.engine.digest import authorization_from_ha1
from sipnodes.engine.message import Request, Response
from sipnodes.engine.sipmsg import Peer, Send
from sipnodes.engine.timers import Scheduler
from sipnodes.webphone.sip import (
    CLOSED_REASON,
    CallChanged,
    CallState,
    MediaChanged,
    Phone,
    Phones,
    Registered,
    Stream,
    first,
    offer_sdp,
    streams,
)
from tests.sipnodes.engine.helpers import REALM, Pbx, ha1

GATEWAY = ("127.0.0.1", 7000)
WORKER = Peer("UDP", "127.0.0.1", 5060)
SDP_101 = offer_sdp("127.0.0.1", 9101, pts=(8,))
SDP_101_AV = offer_sdp("127.0.0.1", 9101, 9103, pts=(8,), video_pt=100)


class _Inbox(list):
    """What the engine's test network hands the gateway goes to its `Phones`."""

    def __init__(self, scene: Scene) -> None:
        super().__init__()
        self.scene = scene

    def append(self, message: Request | Response) -> None:
        self.scene.phones.receive(bytes(message), WORKER, self.scene.now)


class _Gateway:
    def __init__(self, scene: Scene) -> None:
        self.inbox = _Inbox(scene)


class Scene(Pbx):
    """A worker, the gateway's SIP side, and SIP phones of the engine's tests."""

    def __init__(self, **overrides: object) -> None:
        super().__init__(**overrides)
        self.scheduler = Scheduler()
        self.outbox: list[Send] = []
        self.phones = Phones(self.scheduler, self.outbox)
        self.seen: list[object] = []  # what the gateway's phones emitted
        self.net.phones[GATEWAY] = _Gateway(self)  # the engine's network delivers to it

    def web(self, number: str = "100", contact: str = "wp-100-a") -> Phone:
        phone = Phone(
            number=number,
            contact_user=contact,
            realm=REALM,
            ha1={
                "MD5": ha1(number, f"pw{number}"),
                "SHA-256": ha1(number, f"pw{number}", "SHA-256"),
            },
            server=WORKER,
            local=GATEWAY,
            rtp=("127.0.0.1", 7002),
            layer=self.phones.layer,
            scheduler=self.scheduler,
            emit=self.seen.append,
        )
        self.phones.add(phone)
        return phone

    def pump(self) -> None:
        """Deliver until nothing is left to deliver (bounded: a loop would fail the test)."""
        for _ in range(100):
            if not (self.outbox or self.engine.outbox):
                return
            sent, self.outbox[:] = list(self.outbox), []
            for item in sent:
                self.engine.receive(item.data, Peer("UDP", *GATEWAY), self.now)
            self.net.pump()
        raise AssertionError("messages never stopped flowing")

    def registered_web(self, number: str = "100", contact: str = "wp-100-a") -> Phone:
        phone = self.web(number, contact)
        phone.register(self.now)
        self.pump()
        assert self.last(Registered) == Registered(True)
        return phone

    def web_calls_101(self) -> tuple[Phone, Phone]:
        """The web phone (100) calls 101, which answers; the ACK has reached 101."""
        callee = self.registered("101", 5101)
        web = self.registered_web()
        web.dial("101", self.now)
        self.pump()
        [invite] = take(callee, Request)
        callee.send(callee.respond(invite, 200, to_tag="b1", body=SDP_101), self.now)
        self.pump()
        take(callee, Request)
        return callee, web

    def last(self, kind: type) -> object:
        return [e for e in self.seen if isinstance(e, kind)][-1]

    def media(self, kind: str = "audio") -> MediaChanged:
        return [e for e in self.seen if isinstance(e, MediaChanged) and e.kind == kind][-1]

    def states(self) -> list[CallState]:
        return [e.state for e in self.seen if isinstance(e, CallChanged)]


def take(phone, kind):  # noqa: ANN001, ANN201
    return [m for m in phone.take() if isinstance(m, kind)]


def test_registers_with_the_users_ha1_never_a_password():
    s = Scene()
    s.registered_web()
    changes = s.events("registration")
    assert changes[-1]["user"] == "100" and changes[-1]["action"] == "register"
    assert "wp-100-a@127.0.0.1:7000" in changes[-1]["contact"]


def test_the_edition_limit_is_refused_with_the_workers_words():
    s = Scene(max_clients=1)
    s.registered("101", 5101)
    phone = s.web()
    phone.register(s.now)
    s.pump()
    refused = s.last(Registered)
    assert not refused.ok and refused.reason.startswith("403 ") and "1" in refused.reason


def test_an_sha256_only_server_is_answered_with_sha256():
    s = Scene(auth={"algorithms": ["SHA-256"]})
    s.registered_web()


def test_places_a_call_rings_is_answered_and_hangs_up():
    s = Scene()
    callee = s.registered("101", 5101)
    web = s.registered_web()
    assert web.dial("101", s.now)
    s.pump()  # 407, the INVITE again with credentials, relayed to 101
    [invite] = take(callee, Request)
    callee.send(callee.respond(invite, 180, to_tag="b1"), s.now)
    s.pump()
    assert s.states()[-2:] == [CallState.CALLING, CallState.RINGING]
    callee.send(callee.respond(invite, 200, to_tag="b1", body=SDP_101), s.now)
    s.pump()
    assert s.states()[-1] is CallState.ANSWERED
    media = s.media()
    assert media.payload_type == 8 and media.sending
    assert [m.method for m in take(callee, Request)] == ["ACK"]  # the gateway's ACK, relayed
    web.hang_up(s.now)
    s.pump()
    [bye] = take(callee, Request)
    assert bye.method == "BYE"
    callee.send(callee.respond(bye, 200), s.now)
    s.pump()
    assert s.events("cdr")[-1]["fci"].startswith("callTag=1;cause=16")
    assert s.states()[-1] is CallState.ENDED and s.media().remote is None


def test_the_page_closed_mid_call_gives_its_own_call_tag():
    s = Scene()
    callee, web = s.web_calls_101()
    web.close(s.now)
    s.pump()
    [bye] = take(callee, Request)
    assert bye.method == "BYE"
    callee.send(callee.respond(bye, 200), s.now)
    s.pump()
    assert s.events("cdr")[-1]["fci"].startswith("callTag=19;cause=16")
    assert s.events("registration")[-1]["action"] == "unregister"


def test_the_page_closed_while_the_callee_rings_cancels_with_its_own_call_tag():
    s = Scene()
    callee = s.registered("101", 5101)
    web = s.registered_web()
    web.dial("101", s.now)
    s.pump()
    [invite] = take(callee, Request)
    callee.send(callee.respond(invite, 180, to_tag="b1"), s.now)
    s.pump()
    web.close(s.now)
    s.pump()
    assert "CANCEL" in [m.method for m in take(callee, Request)]
    callee.send(callee.respond(invite, 487, to_tag="b1"), s.now)
    s.pump()
    assert s.events("cdr")[-1]["fci"].startswith("callTag=19;")


def test_hanging_up_before_any_provisional_cancels_once_one_comes():
    s = Scene()
    callee = s.registered("101", 5101)
    web = s.registered_web()
    web.dial("101", s.now)
    web.hang_up(s.now)
    s.pump()  # the worker's 100 Trying is a provisional: our CANCEL goes then
    assert s.states()[-1] is CallState.ENDED
    [invite] = take(callee, Request)
    callee.send(callee.respond(invite, 180, to_tag="b1"), s.now)  # the worker's CANCEL waits
    s.pump()
    assert [m.method for m in take(callee, Request)] == ["CANCEL"]
    callee.send(callee.respond(invite, 487, to_tag="b1"), s.now)
    s.pump()
    assert s.events("cdr")[-1]["fci"].startswith("callTag=3;")


def test_takes_a_call_answers_and_the_caller_hangs_up():
    s = Scene()
    caller = s.registered("101", 5101)
    web = s.registered_web()
    invite = caller.dial("100", s.now, call_id="c1", body=SDP_101)
    s.pump()
    assert s.states()[-1] is CallState.INCOMING
    assert [m.code for m in take(caller, Response)][-1] == 180
    assert web.answer(s.now)
    s.pump()
    ok = take(caller, Response)[-1]
    assert ok.code == 200 and first(streams(ok.body), "audio").payload_type == 8  # caller's law
    caller.ack(ok, invite, s.now)
    s.pump()
    assert s.media().remote is not None
    bye = caller.request(
        "BYE",
        str(ok.contact[0].uri),
        call_id="c1",
        from_tag="atag",
        to=ok.headers["To"],
    )
    caller.send(bye, s.now)
    s.pump()
    assert s.last(CallChanged) == CallChanged(CallState.ENDED, "101", "remote hung up")
    assert s.events("cdr")[-1]["fci"].startswith("callTag=1;cause=16")


def test_a_second_device_of_the_same_user_rings_too_and_a_busy_one_says_486():
    s = Scene()
    caller = s.registered("101", 5101)
    s.registered_web(contact="wp-100-a")
    second = s.registered_web(contact="wp-100-b")
    caller.dial("100", s.now, call_id="c1", body=SDP_101)
    s.pump()
    assert s.states().count(CallState.INCOMING) == 2  # both tabs ring (parallel ringing)
    assert second.busy
    other = s.registered("102", 5102)
    other.dial("100", s.now, call_id="c2", body=SDP_101)
    s.pump()
    assert [m.code for m in take(other, Response) if m.code >= 400] == [486]


def test_hold_and_resume_by_reinvite():
    s = Scene()
    callee, web = s.web_calls_101()
    assert web.hold(True, s.now)
    s.pump()
    [reinvite] = take(callee, Request)
    assert b"a=sendonly" in reinvite.body
    assert not s.media().sending
    callee.send(
        callee.respond(reinvite, 200, body=offer_sdp("127.0.0.1", 9101, direction="recvonly")),
        s.now,
    )
    s.pump()
    assert [m.method for m in take(callee, Request)] == ["ACK"]
    assert s.last(CallChanged).held
    assert web.hold(False, s.now)
    s.pump()
    [resume] = take(callee, Request)
    assert b"a=sendrecv" in resume.body


def test_answer_challenge_refuses_what_it_cannot_answer():
    ha1s = {"MD5": "0" * 32}
    assert (
        authorization_from_ha1(
            'Digest realm="r", nonce="n", algorithm=SHA-256', "X", "u", "1", ha1s
        )
        is None
    )
    assert authorization_from_ha1('Basic realm="r"', "X", "u", "1", ha1s) is None
    answer = authorization_from_ha1(
        'Digest realm="r", nonce="n", qop="auth"', "REGISTER", "sip:r", "1", ha1s
    )
    assert answer and 'username="1"' in answer and "qop=auth" in answer


def test_streams_read_each_m_line_and_the_codec_we_share():
    body = (
        b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
        b"m=audio 4000 RTP/AVP 18 8 0\r\na=sendonly\r\n"
        b"m=video 4002 RTP/AVP 97 98\r\nc=IN IP4 10.0.0.2\r\na=rtpmap:97 H264/90000\r\n"
        b"a=rtpmap:98 VP8/90000\r\n"
    )
    audio, video = streams(body)
    assert audio == Stream("audio", "10.0.0.1", 4000, "RTP/AVP", ("18", "8", "0"), 8, "sendonly")
    assert (video.address, video.payload_type, video.direction) == ("10.0.0.2", 98, "sendrecv")
    assert not audio.wants_ours and video.wants_ours
    assert first(streams(body.replace(b" 18 8 0", b" 18")), "audio") is None
    assert CLOSED_REASON.startswith("sipcloud;cause=1")


def test_video_both_ways_when_both_ends_offer_it():
    s = Scene()
    callee = s.registered("101", 5101)
    web = s.registered_web()
    web.video_rtp = ("127.0.0.1", 7004)
    web.dial("101", s.now)
    s.pump()
    [invite] = take(callee, Request)
    assert b"m=video 7004 RTP/AVP 96\r\na=rtpmap:96 VP8/90000" in invite.body
    callee.send(callee.respond(invite, 200, to_tag="b1", body=SDP_101_AV), s.now)
    s.pump()
    assert s.media("video") == MediaChanged("video", ("127.0.0.1", 9103), 100, True)
    assert s.media("audio") == MediaChanged("audio", ("127.0.0.1", 9101), 8, True)


def test_an_offer_with_video_is_answered_per_m_line():
    s = Scene()
    caller = s.registered("101", 5101)
    web = s.registered_web()
    caller.dial("100", s.now, call_id="c1", body=SDP_101_AV)
    s.pump()
    web.answer(s.now)  # this page sends no video: the video m-line is refused
    s.pump()
    ok = take(caller, Response)[-1]
    audio, video = streams(ok.body)
    assert (audio.port, video.port, video.kind) == (7002, 0, "video")
    assert s.media("video").remote is None


def test_a_page_with_video_answers_video():
    s = Scene()
    caller = s.registered("101", 5101)
    web = s.registered_web()
    web.video_rtp = ("127.0.0.1", 7004)
    caller.dial("100", s.now, call_id="c1", body=SDP_101_AV)
    s.pump()
    web.answer(s.now)
    s.pump()
    ok = take(caller, Response)[-1]
    audio, video = streams(ok.body)
    assert (video.port, video.payload_type) == (7004, 100)  # the caller's payload type
    assert s.media("video").remote == ("127.0.0.1", 9103)


def test_an_update_with_an_offer_is_answered_with_sdp():
    """pjsua2 sends one right after the 200 (RFC 3311): the answer must carry SDP."""
    s = Scene()
    caller = s.registered("101", 5101)
    web = s.registered_web()
    invite = caller.dial("100", s.now, call_id="c1", body=SDP_101)
    s.pump()
    web.answer(s.now)
    s.pump()
    ok = take(caller, Response)[-1]
    caller.ack(ok, invite, s.now)
    update = caller.request(
        "UPDATE",
        str(ok.contact[0].uri),
        call_id="c1",
        from_tag="atag",
        to=ok.headers["To"],
        body=offer_sdp("127.0.0.1", 9105, pts=(8,)),
    )
    caller.send(update, s.now)
    s.pump()
    answer = take(caller, Response)[-1]
    assert answer.code == 200 and first(streams(answer.body), "audio").port == 7002
    assert s.media().remote == ("127.0.0.1", 9105)
