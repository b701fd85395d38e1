"""The B2BUA (half-call model) through the sans-IO Engine, on a fake clock."""

import pytest

from sipnodes.engine.config import parse_config
from sipnodes.engine.transaction import T1, TIMER_B

from .helpers import REALM, T0, Pbx, config_dict, make_config, same_clock

SDP_A = b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
SDP_B = SDP_A.replace(b"o=a", b"o=b")


class Scene(Pbx):
    """Caller 100 and callee 101, registered; the steps of a call between them."""

    def __init__(self, to_wall=same_clock, **overrides):
        super().__init__(T0, to_wall=to_wall, **overrides)
        self.a = self.registered("100", 6000)
        self.b = self.registered("101", 6002)
        self.engine.events.clear()

    def invite(self, number="101", now=T0 + 1, body=SDP_A, headers=None):
        self.call_id = f"call-{number}"
        self.tag = "atag"
        self.inv = self.a.dial(
            number, now, call_id=self.call_id, from_tag=self.tag, body=body, headers=headers
        )
        return [m.code for m in self.a.take()]

    def callee_invite(self):
        [inv] = [m for m in self.b.take() if getattr(m, "method", "") == "INVITE"]
        self.binv = inv
        return inv

    def answer(self, now=T0 + 3):
        self.invite()
        binv = self.callee_invite()
        self.b.send(self.b.respond(binv, 180, "btag"), T0 + 2)
        self.b.send(self.b.respond(binv, 200, "btag", body=SDP_B), now)
        ok = self.a.take()[-1]
        assert ok.code == 200
        self.ok = ok
        ack = self.a.request(
            "ACK",
            str(ok.contact[0].uri),
            call_id=self.call_id,
            from_tag=self.tag,
            to=ok.headers["To"],
            cseq=self.inv.cseq.sequence,
        )
        self.a.send(ack, now)
        [back] = self.b.take()
        assert back.method == "ACK"
        return ok

    def cancel(self):
        """The caller's CANCEL of its INVITE (same branch and CSeq number, RFC 3261 §9.1)."""
        return self.a.request(
            "CANCEL",
            str(self.inv.uri),
            call_id=self.call_id,
            from_tag=self.tag,
            to=self.inv.headers["To"],
            cseq=self.inv.cseq.sequence,
            branch=self.inv.via[0].parameters["branch"],
        )

    def a_in_dialog(self, method, now, body=b""):
        return self.a.request(
            method,
            str(self.ok.contact[0].uri),
            call_id=self.call_id,
            from_tag=self.tag,
            to=self.ok.headers["To"],
            body=body,
        )

    def b_in_dialog(self, method, now):
        binv = self.binv
        req = self.b.request(
            method, str(binv.contact[0].uri), call_id=binv.call_id, to=binv.headers["From"], cseq=10
        )
        req.headers.set("From", binv.headers["To"] + ";tag=btag")
        return req

    def cdr(self):
        [cdr] = self.events("cdr")
        return cdr


def test_invite_needs_proxy_auth_and_wrong_password_is_refused():
    s = Scene()
    a = s.a
    a.send(a.request("INVITE", f"sip:101@{REALM}", body=SDP_A), T0)
    r = a.take()[-1]
    assert r.code == 407 and len(r.headers.getlist("Proxy-Authenticate")) == 2
    bad = a.request("INVITE", f"sip:101@{REALM}", body=SDP_A)
    a.authorize(
        bad, r.headers.getlist("Proxy-Authenticate")[0], "Proxy-Authorization", password="nope"
    )
    a.send(bad, T0)
    assert a.take()[-1].code == 403
    assert s.engine.events == []  # no call, no CDR for unauthenticated attempts


def test_the_callee_sees_the_caller_at_the_server_domain_with_the_portal_name():
    s = Scene()
    s.invite()
    binv = s.callee_invite()
    caller, callee = binv.from_address, binv.to_address
    assert (caller.name, caller.uri.text) == ("User 100", f"sip:100@{REALM}")
    assert callee.uri.text == f"sip:101@{REALM}"


def test_a_chinese_display_name_with_quotes_reaches_the_callee_as_written_in_the_portal():
    s = Scene()
    data = config_dict()
    data["users"][0]["display_name"] = '张三 "老板" \\ 总机\r\nX-Injected: 1'
    s.engine.reload(parse_config(data), T0)
    s.invite()
    binv = s.callee_invite()
    assert binv.from_address.name == '张三 "老板" \\ 总机 X-Injected: 1'
    assert "X-Injected" not in binv.headers


def test_a_linphone_contact_with_a_display_name_and_sip_instance_calls():
    """linphonec 5.1's Contact: display name, and a quoted `+sip.instance` holding <...>."""
    contact = (
        '"Linphone 100" <sip:100@127.0.0.1:6000;transport=udp>;'
        '+sip.instance="<urn:uuid:a4f5c1d0-0000-1000-8000-000000000001>"'
    )
    s = Scene()
    assert s.a.register(T0, contact=contact).code == 200
    assert [b.contact for b in s.engine.location.bindings("100")][0].startswith("sip:100@")
    assert s.invite(headers={"Contact": contact})[-1] == 100
    assert s.callee_invite().method == "INVITE"


def test_answered_call_bye_from_caller():
    s = Scene()
    s.answer()
    binv = s.binv
    assert binv.body == SDP_A  # SDP passes untouched (media relay off)
    assert binv.call_id != s.call_id  # the T-side is its own dialog
    assert s.ok.body == SDP_B
    bye = s.a_in_dialog("BYE", T0 + 10)
    bye.headers.set("Reason", "Q.850;cause=16")
    s.a.send(bye, T0 + 10)
    assert s.a.take()[-1].code == 200
    [bbye] = s.b.take()
    assert bbye.method == "BYE" and bbye.headers["Reason"] == "Q.850;cause=16"
    s.b.send(s.b.respond(bbye, 200), T0 + 10)
    cdr = s.cdr()
    assert cdr["fci"] == "callTag=1;cause=16" and cdr["released_by"] == "caller"
    assert cdr["talk_seconds"] == 7.0 and cdr["status"] == 200 and cdr["answered"]
    assert [e["state"] for e in s.events("call")] == [
        "initiated",
        "ringing",
        "answered",
        "released",
    ]
    assert not s.engine.b2bua.calls


def test_bye_from_callee():
    s = Scene()
    s.answer()
    s.b.send(s.b_in_dialog("BYE", T0 + 5), T0 + 5)
    assert s.b.take()[-1].code == 200
    [abye] = s.a.take()
    assert abye.method == "BYE" and abye.call_id == s.call_id
    assert abye.headers["To"].endswith(f"tag={s.tag}")
    assert s.cdr()["fci"] == "callTag=2;cause=16"


def test_busy_callee_reason_header_gives_cause_and_is_passed_on():
    s = Scene()
    s.invite()
    binv = s.callee_invite()
    s.b.send(s.b.respond(binv, 486, "btag", headers={"Reason": "Q.850;cause=17"}), T0 + 2)
    ack = s.b.take()[-1]
    assert ack.method == "ACK"  # the transaction ACKs the error
    final = s.a.take()[-1]
    assert final.code == 486 and final.headers["Reason"] == "Q.850;cause=17"
    cdr = s.cdr()
    assert cdr["fci"] == "callTag=4;cause=17" and cdr["status"] == 486
    assert not cdr["answered"] and cdr["released_by"] == "callee"


def test_decline_without_reason_uses_the_table():
    s = Scene()
    s.invite()
    s.b.send(s.b.respond(s.callee_invite(), 603, "btag"), T0 + 2)
    assert s.cdr()["fci"] == "callTag=4;cause=21"


def test_cancel_while_ringing():
    s = Scene()
    s.invite()
    binv = s.callee_invite()
    s.b.send(s.b.respond(binv, 180, "btag"), T0 + 2)
    assert s.a.take()[-1].code == 180
    cancel = s.cancel()
    s.a.send(cancel, T0 + 5)
    assert [m.code for m in s.a.take()] == [200, 487]
    [bcancel] = s.b.take()
    assert bcancel.method == "CANCEL" and bcancel.via[0] == binv.via[0]
    s.b.send(s.b.respond(bcancel, 200), T0 + 5)
    s.b.send(s.b.respond(binv, 487, "btag"), T0 + 5)
    assert s.b.take()[-1].method == "ACK"
    cdr = s.cdr()
    assert cdr["fci"] == "callTag=3;cause=16" and cdr["status"] == 487
    assert cdr["ring"] is not None and cdr["answer"] is None


def test_cancel_before_any_provisional_waits_for_one():
    s = Scene()
    s.invite()
    binv = s.callee_invite()
    cancel = s.cancel()
    s.a.send(cancel, T0 + 1.1)
    assert s.b.take() == []  # RFC 3261 §9.1: not before a provisional
    s.b.send(s.b.respond(binv, 100), T0 + 1.2)  # 100 Trying counts
    s.b.send(s.b.respond(binv, 180, "btag"), T0 + 1.3)
    assert [m.method for m in s.b.take()] == ["CANCEL"]


def test_answer_after_cancel_is_acked_and_hung_up():
    s = Scene()
    s.invite()
    binv = s.callee_invite()
    s.b.send(s.b.respond(binv, 180, "btag"), T0 + 2)
    cancel = s.cancel()
    s.a.send(cancel, T0 + 3)
    s.b.take()
    s.b.send(s.b.respond(binv, 200, "btag", body=SDP_B), T0 + 3)
    assert [m.method for m in s.b.take()] == ["ACK", "BYE"]
    assert len(s.events("cdr")) == 1


def test_unknown_number_and_unregistered_user():
    s = Scene()
    assert s.invite("555")[-1] == 404
    assert s.cdr()["fci"] == "callTag=9;cause=1"
    s.engine.events.clear()
    assert s.invite("102")[-1] == 480  # a user, but not registered
    assert s.cdr()["fci"] == "callTag=9;cause=20"


def test_no_answer_timeout():
    s = Scene(call_limits={"no_answer_timeout": 30, "max_call_duration": 0})
    s.invite()
    binv = s.callee_invite()
    s.b.send(s.b.respond(binv, 180, "btag"), T0 + 2)
    s.a.take()
    s.net.timer(T0 + 31)
    final = s.a.take()[-1]
    assert final.code == 480
    assert [m.method for m in s.b.take()] == ["CANCEL"]
    cdr = s.cdr()
    assert cdr["fci"] == "callTag=5;cause=19" and cdr["released_by"] == "server"


class SteppedWallClock:
    """UTC = the monotonic instant + an offset; moving the offset is an NTP step."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def to_wall(self, instant: float) -> float:
        return instant + self.offset


def test_a_wall_clock_step_moves_timestamps_but_no_timer():
    clock = SteppedWallClock(1_800_000_000.0 - T0)
    s = Scene(to_wall=clock.to_wall, call_limits={"no_answer_timeout": 30})
    s.invite(now=T0 + 1)  # the no-answer timer is due at T0 + 31 on the monotonic clock
    binv = s.callee_invite()
    s.b.send(s.b.respond(binv, 180, "btag"), T0 + 2)
    s.a.take()
    clock.offset += 3600  # an hour forward: a wall-clock timer would fire at once
    s.net.timer(T0 + 30.9)
    assert s.a.take() == [] and s.events("cdr") == []
    clock.offset -= 7200  # an hour back from where it started: nor would it fire late
    s.net.timer(T0 + 31)
    assert s.a.take()[-1].code == 480
    cdr = s.cdr()
    assert cdr["start"] == 1_800_000_001.0 and cdr["ring"] == 1_800_000_002.0
    assert cdr["release"] == 1_800_000_031.0 - 3600
    assert [e.ts for e in s.engine.events if e.type == "cdr"] == [cdr["release"]]


def test_max_call_duration():
    s = Scene(call_limits={"no_answer_timeout": 60, "max_call_duration": 120})
    s.answer()
    s.net.timer(T0 + 3 + 119)
    assert s.a.take() == []
    s.net.timer(T0 + 3 + 120)
    assert [m.method for m in s.a.take()] == ["BYE"]
    assert [m.method for m in s.b.take()] == ["BYE"]
    cdr = s.cdr()
    assert cdr["fci"] == "callTag=6;cause=16" and cdr["talk_seconds"] == 120.0


def test_callee_never_answers_timer_b():
    s = Scene(call_limits={"no_answer_timeout": 0, "max_call_duration": 0})
    s.invite()
    s.callee_invite()
    s.net.timer(T0 + 1 + T1)
    assert [m.method for m in s.b.take()] == ["INVITE"]  # Timer A retransmission
    t = T0 + 1
    while t < T0 + 1 + TIMER_B:
        t += 0.5
        s.net.timer(t)
    assert s.a.take()[-1].code == 408
    assert s.cdr()["fci"] == "callTag=10;cause=18"


def test_reinvite_hold_is_relayed_both_ways():
    s = Scene()
    s.answer()
    hold = SDP_A + b"a=sendonly\r\n"
    reinv = s.a_in_dialog("INVITE", T0 + 5, body=hold)
    s.a.send(reinv, T0 + 5)
    assert [m.code for m in s.a.take()] == [100]
    [breinv] = s.b.take()
    assert breinv.method == "INVITE" and breinv.body == hold
    assert breinv.call_id == s.binv.call_id and breinv.cseq.sequence == 2
    s.b.send(s.b.respond(breinv, 200, body=SDP_B + b"a=recvonly\r\n"), T0 + 5)
    ok = s.a.take()[-1]
    assert ok.code == 200 and ok.body.endswith(b"a=recvonly\r\n")
    ack = s.a.request(
        "ACK",
        str(ok.contact[0].uri),
        call_id=s.call_id,
        from_tag=s.tag,
        to=ok.headers["To"],
        cseq=reinv.cseq.sequence,
    )
    s.a.send(ack, T0 + 5)
    [back] = s.b.take()
    assert back.method == "ACK" and back.cseq.sequence == 2
    assert s.events("cdr") == []  # still up


def test_info_is_relayed_and_answered_end_to_end():
    s = Scene()
    s.answer()
    s.b.send(s.b_in_dialog("INFO", T0 + 4), T0 + 4)
    [info] = s.a.take()
    assert info.method == "INFO"
    s.a.send(s.a.respond(info, 200), T0 + 4)
    assert s.b.take()[-1].code == 200


def test_failed_call_cdr_off_and_realtime_off():
    s = Scene(cdr={"failed_call_cdr": False, "realtime_display": False})
    s.invite("555")
    s.invite()
    s.b.send(s.b.respond(s.callee_invite(), 486, "btag"), T0 + 2)
    assert s.engine.events == []


def test_stop_ends_answered_calls_with_bye():
    s = Scene()
    s.answer()
    s.engine.stop(T0 + 20)
    s.net.pump()
    assert [m.method for m in s.a.take()] == ["BYE"]
    assert [m.method for m in s.b.take()] == ["BYE"]
    assert s.cdr()["fci"] == "callTag=7;cause=16"
    # New calls are refused while stopping.
    s.a.send(s.a.request("INVITE", f"sip:101@{REALM}", body=SDP_A), T0 + 21)
    assert s.a.take()[-1].code == 503


def test_in_dialog_request_for_unknown_dialog_gets_481():
    s = Scene()
    s.a.send(s.a.request("BYE", f"sip:101@{REALM}", to=f"<sip:101@{REALM}>;tag=zzz"), T0)
    assert s.a.take()[-1].code == 481


@pytest.mark.parametrize("method", ["FOO", "SUBSCRIBE"])
def test_unknown_and_unsupported_methods(method):
    s = Scene()
    s.a.send(s.a.request(method, f"sip:{REALM}"), T0)
    assert s.a.take()[-1].code == (501 if method == "FOO" else 405)


def test_reload_keeps_calls_and_registrations():
    s = Scene()
    s.answer()
    s.engine.reload(make_config(max_clients=10, cdr={"realtime_display": False}), T0 + 4)
    assert s.engine.location.registered_clients() == 2
    s.a.send(s.a_in_dialog("BYE", T0 + 5), T0 + 5)
    assert [m.method for m in s.b.take()] == ["BYE"]
    assert s.cdr()["fci"] == "callTag=1;cause=16"


def test_reload_removing_a_user_drops_their_bindings():
    s = Scene()
    s.engine.reload(make_config(users=["100"]), T0 + 1)
    assert s.engine.location.bindings("101") == []
    assert s.events("registration")[-1]["action"] == "unregister"


def test_stop_refuses_ringing_calls_with_503():
    s = Scene()
    s.invite()
    binv = s.callee_invite()
    s.b.send(s.b.respond(binv, 180, "btag"), T0 + 2)
    s.a.take()
    s.engine.stop(T0 + 3)
    s.net.pump()
    assert s.a.take()[-1].code == 503
    assert [m.method for m in s.b.take()] == ["CANCEL"]
    assert s.cdr()["fci"] == "callTag=7;cause=41"


def test_overload_sheds_new_requests_but_finishes_work_under_way():
    s = Scene()
    s.answer()
    a = s.a
    a.send(a.request("REGISTER", f"sip:{REALM}"), T0 + 4)
    challenge = a.take()[-1].headers.getlist("WWW-Authenticate")[0]
    s.engine.admit = 0.0  # the shell found the worker overloaded
    a.send(a.request("REGISTER", f"sip:{REALM}"), T0 + 4)
    shed = a.take()[-1]
    assert (shed.code, shed.headers["Retry-After"]) == (503, "5")
    assert shed.headers["Call-ID"] and shed.headers["CSeq"].endswith("REGISTER")
    assert shed.to_address.tag  # a final response of a UAS, stateless or not (§8.2.6.2)
    # SIPp sends a BYE on the refused REGISTER's tag: 481, whatever share is admitted.
    s.engine.admit = 0.99
    a.send(a.request("BYE", f"sip:{REALM}", call_id=shed.call_id, to=shed.headers["To"]), T0 + 4)
    assert a.take()[-1].code == 481
    s.engine.admit = 0.0
    a.send(a.request("INVITE", f"sip:101@{REALM}", body=SDP_A), T0 + 4)
    assert a.take()[-1].code == 503
    # A BYE outside any dialog (SIPp sends one for every call it aborts) costs no parsing.
    a.send(a.request("BYE", f"sip:101@{REALM}"), T0 + 4)
    assert a.take()[-1].code == 481
    # The second half of a challenge is served: it completes work under way.
    a.send(a.authorize(a.request("REGISTER", f"sip:{REALM}"), challenge, "Authorization"), T0 + 4)
    assert a.take()[-1].code == 200
    a.send(s.a_in_dialog("BYE", T0 + 5), T0 + 5)  # and calls end normally
    assert a.take()[-1].code == 200
    assert s.cdr()["fci"] == "callTag=1;cause=16"
    assert s.engine.shed == 4


def test_under_overload_new_requests_are_admitted_evenly_at_the_admitted_share():
    s = Scene()
    s.engine.admit = 0.25
    codes = []
    for n in range(8):
        s.a.send(s.a.request("REGISTER", f"sip:{REALM}", call_id=f"reg-{n}"), T0 + 4)
        codes.append(s.a.take()[-1].code)
    assert codes == [503, 503, 503, 401] * 2


def test_early_media_183_with_sdp_is_relayed():
    s = Scene()
    s.invite()
    binv = s.callee_invite()
    s.b.send(s.b.respond(binv, 183, "btag", body=SDP_B), T0 + 2)
    early = s.a.take()[-1]
    assert early.code == 183 and early.body == SDP_B
    [call] = s.engine.b2bua.calls.values()
    assert early.headers["To"].endswith(f"tag={call.o.local_tag}")
    assert [e["state"] for e in s.events("call")] == ["initiated", "ringing"]


def test_late_offer_answer_travels_in_the_ack():
    s = Scene()
    s.invite(body=b"")
    binv = s.callee_invite()
    assert binv.body == b""
    s.b.send(s.b.respond(binv, 200, "btag", body=SDP_B), T0 + 2)
    ok = s.a.take()[-1]
    assert ok.body == SDP_B
    ack = s.a.request(
        "ACK",
        str(ok.contact[0].uri),
        call_id=s.call_id,
        from_tag=s.tag,
        to=ok.headers["To"],
        cseq=s.inv.cseq.sequence,
        body=SDP_A,
    )
    s.a.send(ack, T0 + 2)
    [back] = s.b.take()
    assert back.method == "ACK" and back.body == SDP_A
    # A retransmitted 2xx (our ACK lost) gets the same ACK again.
    s.b.send(s.b.respond(binv, 200, "btag", body=SDP_B), T0 + 3)
    assert [m.method for m in s.b.take()] == ["ACK"]
    assert s.a.take() == []


def test_required_extension_we_lack_gets_420():
    s = Scene()
    s.a.send(s.a.request("INVITE", f"sip:101@{REALM}", headers={"Require": "100rel"}), T0)
    r = s.a.take()[-1]
    assert (r.code, r.headers["Unsupported"]) == (420, "100rel")
