"""Parallel ringing, forwarding, DND, hunt groups, pickup, feature codes, transfer and
the call-back's calls, on a fake clock."""

import copy

import pytest

from sipnodes.engine.callback import CallbackRefused, CallbackRequest
from sipnodes.engine.config import parse_config
from sipnodes.engine.message import Request, Response

from .helpers import REALM, T0, Pbx, config_dict, user_entry

SDP_A = b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
SDP_A += b"m=audio 4000 RTP/AVP 0\r\n"
SDP_B = SDP_A.replace(b"o=a", b"o=b").replace(b"4000", b"4002")
SDP_C = SDP_A.replace(b"o=a", b"o=c").replace(b"4000", b"4004")
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


def users(**settings):
    """Users 100-105; `settings["101"] = {...}` adds call settings to user 101."""
    entries = []
    for number in ("100", "101", "102", "103", "104", "105"):
        entry = user_entry(number)
        entry.update(settings.get(f"u{number}", {}))
        entries.append(entry)
    return entries


class Office(Pbx):
    """Caller 100; 101 on a desk phone and a softphone; 102, 103 on one phone each."""

    def __init__(self, **overrides):
        overrides.setdefault("max_clients", 10)
        super().__init__(T0, **overrides)
        self.a = self.registered("100", 6000)
        self.desk = self.registered("101", 6010)
        self.soft = self.registered("101", 6011)
        self.c = self.registered("102", 6020)
        self.d = self.registered("103", 6030)
        self.engine.events.clear()
        self.calls = 0

    def dial(self, number, now=T0 + 1, phone=None, body=SDP_A):
        self.calls += 1
        phone = phone or self.a
        self.inv = phone.dial(number, now, call_id=f"call-{self.calls}", body=body)
        return self.codes(phone)

    @staticmethod
    def codes(phone):
        return [m.code for m in phone.take() if isinstance(m, Response)]

    @staticmethod
    def invites(phone):
        return [m for m in phone.take() if isinstance(m, Request) and m.method == "INVITE"]

    @staticmethod
    def methods(phone):
        return [m.method for m in phone.take() if isinstance(m, Request)]

    def answer(self, phone, inv, now, tag="ans"):
        phone.send(phone.respond(inv, 200, tag, body=SDP_B), now)
        ok = self.a.take()[-1]
        assert ok.code == 200
        self.a.ack(ok, self.inv, now)
        return ok

    def fci(self):
        [cdr] = self.events("cdr")
        return cdr["fci"]

    def cdr(self):
        [cdr] = self.events("cdr")
        return cdr


# ---- parallel ringing ----------------------------------------------------------


def test_every_device_of_the_user_rings_and_the_first_to_answer_gets_the_call():
    s = Office()
    assert s.dial("101") == [100]
    [desk_inv], [soft_inv] = s.invites(s.desk), s.invites(s.soft)
    s.desk.send(s.desk.respond(desk_inv, 180, "d"), T0 + 2)
    s.soft.send(s.soft.respond(soft_inv, 180, "s"), T0 + 2)
    assert 180 in s.codes(s.a)
    s.answer(s.soft, soft_inv, T0 + 3)
    [cancel] = [m for m in s.desk.take() if m.method == "CANCEL"]
    assert cancel.headers["Reason"] == COMPLETED_ELSEWHERE
    assert [m.method for m in s.soft.take()] == ["ACK"]
    s.desk.send(s.desk.respond(desk_inv, 487, "d"), T0 + 3)
    assert s.codes(s.a) == []  # the caller hears nothing of the losing device
    assert s.engine.b2bua.calls  # the call goes on with the softphone


def test_a_device_that_has_not_sent_a_provisional_is_cancelled_once_it_does():
    s = Office()
    s.dial("101")
    [desk_inv], [soft_inv] = s.invites(s.desk), s.invites(s.soft)
    s.answer(s.soft, soft_inv, T0 + 2)
    assert s.methods(s.desk) == []  # no CANCEL before a provisional (RFC 3261 §9.1)
    s.desk.send(s.desk.respond(desk_inv, 100), T0 + 2.1)
    assert s.methods(s.desk) == ["CANCEL"]


def test_one_device_busy_does_not_end_the_call_while_another_rings():
    s = Office()
    s.dial("101")
    [desk_inv], [soft_inv] = s.invites(s.desk), s.invites(s.soft)
    s.desk.send(s.desk.respond(desk_inv, 486, "d"), T0 + 2)
    assert s.codes(s.a) == []
    s.answer(s.soft, soft_inv, T0 + 3)
    s.a.send(s.a.request("BYE", "sip:x", call_id="call-1"), T0 + 4)  # no dialog: just a 481
    assert s.engine.b2bua.calls


def test_a_6xx_from_one_device_ends_the_call_and_cancels_the_others():
    s = Office()
    s.dial("101")
    [desk_inv], [soft_inv] = s.invites(s.desk), s.invites(s.soft)
    s.soft.send(s.soft.respond(soft_inv, 180, "s"), T0 + 2)
    s.desk.send(s.desk.respond(desk_inv, 603, "d"), T0 + 3)
    assert s.codes(s.a)[-1] == 603
    assert "CANCEL" in s.methods(s.soft)
    assert s.fci() == "callTag=4;cause=21"


def test_all_devices_busy_passes_busy_to_the_caller():
    s = Office()
    s.dial("101")
    for phone in (s.desk, s.soft):
        [inv] = s.invites(phone)
        phone.send(phone.respond(inv, 486, "x"), T0 + 2)
    assert s.codes(s.a)[-1] == 486
    assert s.fci() == "callTag=4;cause=17"


# ---- forwarding ----------------------------------------------------------------


def forwarding(**targets):
    seconds = targets.pop("seconds", 20)
    return {"forwarding": {**targets, "no_answer_seconds": seconds}}


def test_forward_on_busy_tells_the_caller_with_181_and_rings_the_target():
    s = Office(users=users(u101=forwarding(busy="102")))
    s.dial("101")
    for phone in (s.desk, s.soft):
        [inv] = s.invites(phone)
        phone.send(phone.respond(inv, 486, "x"), T0 + 2)
    [forwarded] = [m for m in s.a.take() if m.code == 181]
    assert forwarded.phrase == "Call Is Being Forwarded"
    info = forwarded.headers["Call-Info"]
    assert "<sip:101@" in info and "reason=busy" in info and "forwarded-to=102" in info
    [inv] = s.invites(s.c)
    s.answer(s.c, inv, T0 + 3)
    s.a.send(s.a.request("BYE", "sip:x"), T0 + 5)
    s.engine.b2bua.stop_all(T0 + 6)
    cdr = s.cdr()
    assert cdr["callee"] == "102" and "forward=busy:101>102" in cdr["fci"].split(";")


def test_forward_on_no_answer_after_the_users_seconds():
    s = Office(users=users(u101=forwarding(no_answer="103", seconds=12)))
    s.dial("101")
    for phone in (s.desk, s.soft):
        [inv] = s.invites(phone)
        phone.send(phone.respond(inv, 180, "x"), T0 + 2)
    s.a.take()
    s.net.timer(T0 + 13.5)
    assert s.methods(s.desk) == ["CANCEL"] and s.methods(s.soft) == ["CANCEL"]
    assert 181 in s.codes(s.a)
    [inv] = s.invites(s.d)
    s.answer(s.d, inv, T0 + 14)


def test_unconditional_forward_never_rings_the_user():
    s = Office(users=users(u101=forwarding(unconditional="102")))
    assert s.dial("101") == [100, 181]
    assert s.invites(s.desk) == [] and s.invites(s.soft) == []
    assert len(s.invites(s.c)) == 1


def test_forward_when_unreachable_covers_a_user_not_registered():
    s = Office(users=users(u104=forwarding(unreachable="102")))
    assert s.dial("104") == [100, 181]
    assert len(s.invites(s.c)) == 1


def test_a_forwarding_loop_ends_with_482_and_its_own_call_tag():
    s = Office(
        users=users(u101=forwarding(unconditional="102"), u102=forwarding(unconditional="101"))
    )
    assert s.dial("101")[-1] == 482
    assert s.fci().startswith("callTag=15;cause=25")


def test_forward_to_an_outside_number_obeys_the_dial_plan_and_call_levels():
    s = Office(users=users(u101=forwarding(unconditional="90123")))
    assert s.dial("101")[-1] == 503  # the external line is not available yet
    assert s.fci() == "callTag=9;cause=34"


# ---- do not disturb ----------------------------------------------------------


def test_dnd_answers_busy_without_ringing():
    s = Office(users=users(u101={"dnd": True}))
    assert s.dial("101")[-1] == 486
    assert s.invites(s.desk) == [] and s.invites(s.soft) == []
    assert s.fci() == "callTag=14;cause=17"


def test_dnd_with_forward_on_busy_forwards():
    s = Office(users=users(u101={"dnd": True, **forwarding(busy="102")}))
    assert s.dial("101") == [100, 181]
    assert len(s.invites(s.c)) == 1


# ---- feature codes -----------------------------------------------------------


def feature(s, code, phone=None, now=T0 + 1):
    """Dial a feature code; ACK a 200 and return (final code, what the server sent after)."""
    phone = phone or s.a
    inv = phone.dial(code, now, call_id=f"fc-{code}", body=SDP_A)
    final = [m for m in phone.take() if isinstance(m, Response) and m.code >= 200][-1]
    if final.code == 200:
        assert b"m=audio 0 " in final.body  # media refused: nothing to say
        phone.ack(final, inv, now)
    return final.code, s.methods(phone)


def test_a_forwarding_code_sets_then_clears_forwarding_and_reports_it():
    s = Office()
    assert feature(s, "*90*102", phone=s.desk) == (200, ["BYE"])
    [change] = s.events("call_settings")
    assert (change["user"], change["forward_unconditional"]) == ("101", "102")
    assert s.dial("101") == [100, 181]
    assert feature(s, "*90%23", phone=s.desk, now=T0 + 2) == (200, ["BYE"])
    assert s.events("call_settings")[-1]["forward_unconditional"] == ""
    assert 181 not in s.dial("101", now=T0 + 3)


def test_a_forwarding_code_to_an_unknown_number_gets_404():
    s = Office()
    assert feature(s, "*91*555")[0] == 404
    assert s.events("call_settings") == []


def test_dnd_codes_and_renamed_codes():
    s = Office(feature_codes={"dnd_on": "*55", "dnd_off": "*56"})
    assert feature(s, "*78", phone=s.c)[0] == 404  # the default code is gone: an unknown number
    assert feature(s, "*55", phone=s.c)[0] == 200
    assert s.dial("102")[-1] == 486
    assert feature(s, "*56", phone=s.c, now=T0 + 2)[0] == 200
    assert s.dial("102", now=T0 + 3) == [100]


def test_a_reload_keeps_a_newer_feature_code_change_and_takes_a_newer_portal_one():
    s = Office()
    feature(s, "*78", phone=s.c, now=T0 + 1)
    data = config_dict(users=None, max_clients=10)
    s.engine.reload(parse_config(data), T0 + 2)  # rendered before the code: DND stays on
    assert s.dial("102", now=T0 + 3)[-1] == 486
    newer = copy.deepcopy(data)
    for entry in newer["users"]:
        entry["settings_changed"] = T0 + 10
    s.engine.reload(parse_config(newer), T0 + 11)  # the portal changed it since: DND off
    assert s.dial("102", now=T0 + 12) == [100]


# ---- hunt groups ---------------------------------------------------------------


def group(mode, members=("101", "102", "103"), **options):
    return {
        "hunt_groups": [
            {"number": "600", "name": "Sales", "mode": mode, "members": list(members), **options}
        ]
    }


def test_a_simultaneous_group_rings_every_member_and_records_the_group():
    s = Office(**group("simultaneous"))
    s.dial("600")
    invites = {p: s.invites(p) for p in (s.desk, s.soft, s.c, s.d)}
    assert all(len(v) == 1 for v in invites.values())
    s.answer(s.c, invites[s.c][0], T0 + 2)
    s.engine.b2bua.stop_all(T0 + 3)
    cdr = s.cdr()
    assert cdr["callee"] == "102" and "hunt=600" in cdr["fci"].split(";")


def test_a_sequential_group_rings_members_in_turn_then_overflows():
    s = Office(**group("sequential", ("102", "103"), ring_seconds=10, overflow="101"))
    s.dial("600")
    [inv] = s.invites(s.c)
    s.c.send(s.c.respond(inv, 180, "c"), T0 + 2)
    s.net.timer(T0 + 11.5)
    assert s.methods(s.c) == ["CANCEL"]
    [inv] = s.invites(s.d)
    s.d.send(s.d.respond(inv, 486, "d"), T0 + 12)  # busy: on to the next at once
    assert len(s.invites(s.desk)) == 1  # the overflow target, a user with two devices
    assert "forward=overflow:600>101" in s.engine.b2bua.calls.popitem()[1].record.features


def test_a_round_robin_group_starts_one_member_further_each_call():
    s = Office(**group("round_robin", ("102", "103")))
    s.dial("600")
    assert len(s.invites(s.c)) == 1 and s.invites(s.d) == []
    s.dial("600", now=T0 + 2)
    assert len(s.invites(s.d)) == 1 and s.invites(s.c) == []


def test_a_group_skips_members_with_dnd_and_gives_up_after_its_timeout():
    s = Office(
        users=users(u102={"dnd": True}),
        call_limits={"no_answer_timeout": 300, "max_call_duration": 0},
        **group("simultaneous", timeout=30),
    )
    s.dial("600")
    assert s.invites(s.c) == []
    [inv] = s.invites(s.d)
    s.d.send(s.d.respond(inv, 180, "d"), T0 + 2)
    s.net.timer(T0 + 31.5)
    assert s.codes(s.a)[-1] == 480
    assert s.fci().startswith("callTag=5;cause=19;hunt=600")


# ---- pickup --------------------------------------------------------------------


def test_group_pickup_answers_a_ringing_call_of_the_group_on_the_pickers_phone():
    s = Office(users=users(u101={"pickup_group": 1}, u102={"pickup_group": 1}))
    s.dial("101")
    for phone in (s.desk, s.soft):
        [inv] = s.invites(phone)
        phone.send(phone.respond(inv, 180, "x"), T0 + 2)
    s.a.take()
    pick = s.c.dial("*8", T0 + 3, call_id="pick", body=SDP_C)
    [ok] = [m for m in s.c.take() if isinstance(m, Response) and m.code == 200]
    assert b"o=a " in ok.body  # the caller's session description
    [caller_ok] = [m for m in s.a.take() if m.code == 200]
    assert b"o=c " in caller_ok.body
    assert s.methods(s.desk) == ["CANCEL"] and s.methods(s.soft) == ["CANCEL"]
    s.c.ack(ok, pick, T0 + 3)
    s.a.ack(caller_ok, s.inv, T0 + 3)
    s.engine.b2bua.stop_all(T0 + 4)
    cdr = s.cdr()
    assert cdr["callee"] == "102" and "pickup=102" in cdr["fci"].split(";")


def test_group_pickup_outside_the_group_and_with_nothing_ringing_gets_404():
    s = Office(users=users(u101={"pickup_group": 1}, u103={"pickup_group": 2}))
    assert feature(s, "*8", phone=s.c)[0] == 404  # nothing ringing
    s.dial("101")
    assert feature(s, "*8", phone=s.d)[0] == 404  # 103 is in another group


def test_directed_pickup_takes_the_named_users_call():
    s = Office()
    s.dial("101")
    s.d.dial("**101", T0 + 2, call_id="pick", body=SDP_C)
    assert 200 in s.codes(s.d)
    assert 200 in s.codes(s.a)


# ---- transfer ------------------------------------------------------------------


class Transfer(Office):
    """Calls between single-device users, and the REFERs and NOTIFYs of a transfer."""

    def connect(self, caller, callee, now, call_id):
        """`caller` calls `callee`'s user and it answers; returns each side's view of it."""
        inv = caller.dial(callee.number, now, call_id=call_id, body=SDP_A)
        caller.take()
        [cinv] = self.invites(callee)
        callee.send(callee.respond(cinv, 200, f"t{call_id}", body=SDP_B), now)
        ok = [m for m in caller.take() if isinstance(m, Response) and m.code == 200][-1]
        caller.ack(ok, inv, now)
        callee.take()
        return Side(caller, inv.call_id, inv.from_address.tag, ok.to_address.tag, ok), Side(
            callee, cinv.call_id, f"t{call_id}", cinv.from_address.tag, cinv
        )

    def refer(self, side, refer_to, now):
        req = side.request("REFER", headers={"Refer-To": refer_to})
        side.phone.send(req, now)
        answer = [m for m in side.phone.inbox if isinstance(m, Response)][-1]
        return f"{answer.code} {answer.phrase}"


class Side:
    """One phone's end of a dialog: enough to send in-dialog requests on it."""

    def __init__(self, phone, call_id, local_tag, remote_tag, peer_msg):
        self.phone, self.call_id = phone, call_id
        self.local_tag, self.remote_tag = local_tag, remote_tag
        self.target = str(peer_msg.contact[0].uri)

    def request(self, method, headers=None, body=b""):
        p = self.phone
        req = p.request(
            method,
            self.target,
            call_id=self.call_id,
            from_tag=self.local_tag,
            to=f"<sip:x@{REALM}>;tag={self.remote_tag}",
            cseq=100 + p.cseq,
            headers=headers,
            body=body,
        )
        return req


def answer_reinvite(phone, now, body=SDP_C):
    [reinv] = [m for m in phone.take() if isinstance(m, Request) and m.method == "INVITE"]
    phone.send(phone.respond(reinv, 200, body=body), now)
    return reinv


def notifies(phone):
    return [m for m in phone.inbox if isinstance(m, Request) and m.method == "NOTIFY"]


def test_blind_transfer_by_the_callee_connects_the_caller_to_the_target():
    s = Transfer()
    a, c = s.connect(s.a, s.c, T0 + 1, "x")  # 100 talks to 102
    assert s.refer(c, f"<sip:103@{REALM}>", T0 + 2) == "202 Accepted"
    [trying] = notifies(s.c)
    assert trying.body == b"SIP/2.0 100 Trying\r\n" and trying.headers["Event"] == "refer"
    [dinv] = s.invites(s.d)
    assert "<sip:100@" in dinv.headers["From"]  # 103 sees the transferred party calling
    s.d.send(s.d.respond(dinv, 200, "d", body=SDP_C), T0 + 3)
    assert [m.method for m in s.d.take()] == ["ACK"]
    sent = [m for m in s.c.take() if isinstance(m, Request)]
    assert [m.method for m in sent] == ["NOTIFY", "NOTIFY", "BYE"]
    assert sent[1].body == b"SIP/2.0 200 OK\r\n"
    assert sent[1].headers["Subscription-State"].startswith("terminated")
    reinv = answer_reinvite(s.a, T0 + 3)
    assert b"o=c " in reinv.body  # 100 now sends its media where 103 listens
    first = s.cdr()
    assert first["fci"] == "callTag=16;cause=16;transfer=blind:102"
    s.engine.events.clear()
    s.d.send(
        s.d.request(
            "BYE",
            str(dinv.contact[0].uri),
            call_id=dinv.call_id,
            from_tag="d",
            to=dinv.headers["From"],
        ),
        T0 + 9,
    )
    second = s.cdr()
    assert (second["caller"], second["callee"]) == ("100", "103")
    assert second["fci"] == "callTag=2;cause=16;transfer=blind:102"


def test_a_blind_transfer_to_a_busy_target_leaves_the_call_as_it_was():
    s = Transfer()
    a, c = s.connect(s.a, s.c, T0 + 1, "x")
    assert s.refer(a, f"<sip:103@{REALM}>", T0 + 2) == "202 Accepted"  # the caller transfers 102
    [dinv] = s.invites(s.d)
    assert "<sip:102@" in dinv.headers["From"]
    s.d.send(s.d.respond(dinv, 486, "d"), T0 + 3)
    final = notifies(s.a)[-1]
    assert final.body == b"SIP/2.0 486 Whatever\r\n"
    assert s.events("cdr") == [] and len(s.engine.b2bua.calls) == 1


def test_attended_transfer_joins_the_transferred_party_with_the_target():
    s = Transfer()
    a, c = s.connect(s.a, s.c, T0 + 1, "x")  # 100 talks to 102 (call X)
    c2, d = s.connect(s.c, s.d, T0 + 2, "y")  # 102 consults 103 (call Y)
    replaces = f"{c2.call_id}%3Bto-tag%3D{c2.remote_tag}%3Bfrom-tag%3D{c2.local_tag}"
    assert s.refer(c, f"<sip:103@{REALM}?Replaces={replaces}>", T0 + 3) == "202 Accepted"
    reinv = answer_reinvite(s.d, T0 + 4, body=SDP_C)  # 103 is moved to call X
    assert reinv.call_id == d.call_id
    assert [m.method for m in s.d.take()] == ["ACK"]
    byes = [m for m in s.c.take() if isinstance(m, Request) and m.method == "BYE"]
    assert {m.call_id for m in byes} == {c.call_id, c2.call_id}  # 102 leaves both calls
    answer_reinvite(s.a, T0 + 4)
    fcis = sorted(e["fci"] for e in s.events("cdr"))
    assert fcis == ["callTag=16;cause=16;transfer=attended:102"] * 2
    s.engine.events.clear()
    s.d.send(d.request("BYE"), T0 + 9)  # 103 hangs up on its old dialog: 100 gets the BYE
    assert "BYE" in s.methods(s.a)
    cdr = s.cdr()
    assert (cdr["caller"], cdr["callee"], cdr["fci"]) == (
        "100",
        "103",
        "callTag=2;cause=16;transfer=attended:102",
    )


def test_a_refer_without_refer_to_or_before_the_answer_is_refused():
    s = Transfer()
    a, c = s.connect(s.a, s.c, T0 + 1, "x")
    c.phone.send(c.request("REFER"), T0 + 2)
    assert s.codes(s.c)[-1] == 400
    assert len(s.engine.b2bua.calls) == 1


# ---- call-back (IIF): the B2BUA's side -----------------------------------------


class CallBack(Office):
    """An application server's call-backs, fed straight to the B2BUA; outcomes kept."""

    def __init__(self, **overrides):
        super().__init__(**overrides)
        self.outcomes = []
        self.engine.b2bua.on_callback_ended = self.outcomes.append

    def request(self, now=T0 + 1, callid="cb1", callee1="101", callee2="102", maxduration=0):
        req = CallbackRequest(callid, callee1, callee2, "900", callee1, maxduration)
        self.engine.b2bua.start_callback(req, now)
        self.net.timer(now)

    def cancel(self, callid, now):
        cancelled = self.engine.b2bua.cancel_callback(callid, now)
        self.net.pump()
        return cancelled

    def first_party_answers(self, now=T0 + 2):
        [inv] = self.invites(self.desk)
        assert inv.body == b"" and "<sip:900@" in inv.headers["From"]
        self.desk.send(self.desk.respond(inv, 200, "d1", body=SDP_B), now)
        [ack] = [m for m in self.desk.take() if m.method == "ACK"]
        assert b"a=inactive" in ack.body  # held until callee2 answers
        return inv

    def second_party_answers(self, now=T0 + 3):
        [inv] = self.invites(self.c)
        assert b"o=b " in inv.body and "<sip:101@" in inv.headers["From"]
        self.c.send(self.c.respond(inv, 200, "c1", body=SDP_C), now)
        assert [m.method for m in self.c.take()] == ["ACK"]
        reinv = answer_reinvite(self.desk, now, body=SDP_B)
        assert b"o=c " in reinv.body  # callee1 now talks to callee2
        return inv


def test_a_call_back_rings_callee1_then_callee2_and_connects_them():
    s = CallBack()
    s.request()
    assert len(s.invites(s.soft)) == 1  # every device of callee1 rings
    s.first_party_answers()
    inv = s.second_party_answers()
    assert s.outcomes == []
    bye = s.c.request(
        "BYE", str(inv.contact[0].uri), call_id=inv.call_id, from_tag="c1", to=inv.headers["From"]
    )
    s.c.send(bye, T0 + 8)
    assert "BYE" in s.methods(s.desk)
    [outcome] = s.outcomes
    assert (outcome.callid, outcome.result, outcome.cause) == ("cb1", 0, 16)
    assert outcome.duration == 5 and outcome.answer1 == T0 + 2 and outcome.answer2 == T0 + 3
    cdr = s.cdr()
    assert (cdr["caller"], cdr["callee"]) == ("101", "102")
    assert cdr["fci"] == "callTag=2;cause=16;callback=cb1"
    live = [(e["call_id"], e["state"]) for e in s.events("call")]
    assert live[0] == ("callback-cb1", "initiated") and live[-1] == ("callback-cb1", "released")
    assert ("callback-cb1", "answered") in live  # the live view shows it like any call


def test_a_busy_callee1_ends_the_call_back_and_callee2_is_never_called():
    s = CallBack()
    s.request()
    for phone in (s.desk, s.soft):
        [inv] = s.invites(phone)
        phone.send(phone.respond(inv, 486, "x"), T0 + 2)
    assert s.invites(s.c) == []
    [outcome] = s.outcomes
    assert (outcome.result, outcome.cause, outcome.answer1) == (20, 17, None)
    assert s.fci() == "callTag=17;cause=17;callback=cb1"


def test_callee2_not_answering_hangs_up_on_callee1():
    s = CallBack(call_limits={"no_answer_timeout": 20, "max_call_duration": 0})
    s.request()
    s.first_party_answers()
    [inv] = s.invites(s.c)
    s.c.send(s.c.respond(inv, 180, "c1"), T0 + 3)
    s.net.timer(T0 + 23)
    assert "BYE" in s.methods(s.desk) and "CANCEL" in s.methods(s.c)
    [outcome] = s.outcomes
    assert (outcome.result, outcome.cause) == (21, 19)
    assert s.fci().startswith("callTag=18;cause=19")


def test_the_as_cancels_a_call_back_while_callee1_rings_or_after_the_connection():
    s = CallBack()
    s.request()
    for phone in (s.desk, s.soft):
        [inv] = s.invites(phone)
        phone.send(phone.respond(inv, 180, "x"), T0 + 2)
    assert s.cancel("cb1", T0 + 3)
    assert s.methods(s.desk) == ["CANCEL"] and s.methods(s.soft) == ["CANCEL"]
    assert s.outcomes[-1].result == 22
    assert s.fci() == "callTag=8;cause=16;callback=cb1"
    assert not s.cancel("cb1", T0 + 4)  # nothing left to cancel

    s.engine.events.clear()
    s.request(now=T0 + 5, callid="cb2")
    s.first_party_answers(T0 + 6)
    s.second_party_answers(T0 + 7)
    assert s.cancel("cb2", T0 + 9)
    assert "BYE" in s.methods(s.desk) and "BYE" in s.methods(s.c)
    assert (s.outcomes[-1].result, s.outcomes[-1].duration) == (0, 2)
    assert s.fci() == "callTag=8;cause=16;callback=cb2"


def test_maxduration_ends_a_connected_call_back():
    s = CallBack()
    s.request(maxduration=30)
    s.first_party_answers()
    s.second_party_answers()
    s.net.timer(T0 + 33.5)
    assert "BYE" in s.methods(s.desk) and "BYE" in s.methods(s.c)
    assert s.fci() == "callTag=6;cause=16;callback=cb1"


def test_a_call_back_to_an_unknown_number_or_with_a_callid_in_use_is_refused_at_once():
    s = CallBack()
    with pytest.raises(CallbackRefused) as refused:
        s.request(callee2="555")
    assert refused.value.result == 10 and "callee2 555" in refused.value.reason
    s.request()
    with pytest.raises(CallbackRefused) as refused:
        s.request(callee1="103")
    assert refused.value.result == 4
