"""Trunks on a fake clock: registering upstream, calls out through them, calls in from them."""

from sipnodes.engine.digest import digest_parameters, ha1, response_digest
from sipnodes.engine.message import Request, Response
from sipnodes.engine.transaction import TIMER_B

from .helpers import T0, Pbx

UPSTREAM = "127.0.0.9"
SDP = b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
SDP += b"m=audio 4000 RTP/AVP 0\r\n"
CHALLENGE = 'Digest realm="itsp.example", nonce="n-1", qop="auth", algorithm=MD5'


def trunk(**options):
    entry = {
        "id": 1,
        "name": "ITSP",
        "address": UPSTREAM,
        "port": 5080,
        "transport": "UDP",
        "registration": {"user": "8001", "password": "s3cret", "expires": 120},
        "caller_id": "",
        "dids": {"85550100": "101"},
        "default_user": "",
    }
    entry.update(options)
    return entry


class Office(Pbx):
    """Phones 100 and 101, and the upstream (an ITSP) at 127.0.0.9:5080."""

    def __init__(self, **overrides):
        overrides.setdefault("trunks", [trunk()])
        overrides.setdefault(
            "dial_plan", [{"prefix": "0", "route": "sip_trunk", "trunk": 1, "strip": 1}]
        )
        super().__init__(T0, **overrides)
        self.upstream = self.phone("5551234", 5080, host=UPSTREAM)
        self.net.pump()  # the REGISTER sent at start
        self.a = self.registered("100", 6000)
        self.b = self.registered("101", 6002)

    def upstream_requests(self, method):
        return [m for m in self.upstream.take() if isinstance(m, Request) and m.method == method]

    def trunk_events(self):
        return [(e["state"], e["reason"]) for e in self.events("trunk")]


def valid_answer(req, header, password="s3cret"):
    """Whether `req` answers CHALLENGE with the trunk's account, as the upstream checks it."""
    p = digest_parameters(req.headers[header])
    key = ha1("MD5", "8001", "itsp.example", password)
    params = {k: p[k] for k in ("qop", "nc", "cnonce")}
    return p["username"] == "8001" and p["response"] == response_digest(
        "MD5", key, "n-1", req.method, p["uri"], params
    )


# ---- registration ---------------------------------------------------------------


def test_the_worker_registers_answers_the_challenge_and_refreshes():
    s = Office()
    [first] = s.upstream_requests("REGISTER")
    assert first.headers["Expires"] == "120" and "<sip:8001@" in first.headers["To"]
    s.upstream.send(s.upstream.respond(first, 401, headers={"WWW-Authenticate": CHALLENGE}), T0)
    [second] = s.upstream_requests("REGISTER")
    assert valid_answer(second, "Authorization")
    ok = s.upstream.respond(
        second, 200, headers={"Contact": f"{second.headers['Contact']};expires=100"}
    )
    s.upstream.send(ok, T0 + 0.1)
    assert s.trunk_events()[-1] == ("registered", "")
    s.net.timer(T0 + 79)
    assert s.upstream_requests("REGISTER") == []
    s.net.timer(T0 + 81)  # 80 % of the 100 s granted
    assert len(s.upstream_requests("REGISTER")) == 1


def test_a_refused_registration_is_retried_later_each_time_not_hammered():
    s = Office()
    [first] = s.upstream_requests("REGISTER")
    s.upstream.send(s.upstream.respond(first, 401, headers={"WWW-Authenticate": CHALLENGE}), T0)
    [second] = s.upstream_requests("REGISTER")
    s.upstream.send(s.upstream.respond(second, 401, headers={"WWW-Authenticate": CHALLENGE}), T0)
    state, reason = s.trunk_events()[-1]
    assert state == "failing" and reason.startswith("401") and "credentials" in reason
    assert s.events("trunk")[-1]["next_attempt"] == T0 + 30
    s.net.timer(T0 + 29)
    assert s.upstream_requests("REGISTER") == []
    s.net.timer(T0 + 30.5)
    [again] = s.upstream_requests("REGISTER")
    s.upstream.send(s.upstream.respond(again, 403), T0 + 31)
    assert s.events("trunk")[-1]["next_attempt"] == T0 + 31 + 60  # twice as long


def test_an_upstream_that_never_answers_is_failing_with_that_reason():
    s = Office()
    s.upstream.take()
    s.net.timer(T0 + 33)  # Timer F
    assert s.trunk_events()[-1] == ("failing", "no answer from the upstream")


# ---- calls out -------------------------------------------------------------------


def dial(s, number, now=T0 + 1):
    inv = s.a.dial(number, now, call_id=f"out-{number}", body=SDP)
    return inv, [m.code for m in s.a.take()]


def test_a_call_out_through_the_trunk_answers_the_upstreams_challenge():
    s = Office()
    s.upstream.take()
    inv, codes = dial(s, "0123456")
    assert codes == [100]
    [out] = s.upstream_requests("INVITE")
    assert str(out.uri) == f"sip:123456@{UPSTREAM}:5080"
    assert f"<sip:100@{UPSTREAM}>" in out.headers["From"]
    challenge = s.upstream.respond(out, 407, "u1", headers={"Proxy-Authenticate": CHALLENGE})
    s.upstream.send(challenge, T0 + 1.1)
    sent = [m for m in s.upstream.take() if isinstance(m, Request)]
    assert [m.method for m in sent] == ["ACK", "INVITE"]  # the 407 ACKed, then again
    again = sent[1]
    assert valid_answer(again, "Proxy-Authorization") and again.body == out.body
    s.upstream.send(s.upstream.respond(again, 200, "u2", body=SDP), T0 + 2)
    ok = [m for m in s.a.take() if isinstance(m, Response)][-1]
    assert ok.code == 200
    s.a.ack(ok, inv, T0 + 2)
    s.engine.b2bua.stop_all(T0 + 5)
    [cdr] = s.events("cdr")
    assert (cdr["route"], cdr["callee"]) == ("sip_trunk", "123456")
    assert cdr["fci"] == "callTag=7;cause=16;trunk=1"


def test_the_out_group_prefix_reaches_the_external_line_with_the_trunks_caller_id():
    s = Office(trunks=[trunk(caller_id="8001")], dial_plan=[], external_line=1)
    s.upstream.take()
    dial(s, "90123")
    [out] = s.upstream_requests("INVITE")
    assert str(out.uri).startswith("sip:0123@") and "<sip:8001@" in out.headers["From"]


def test_an_upstream_that_answers_garbage_or_nothing_ends_the_call_with_408():
    s = Office()
    s.upstream.take()
    dial(s, "0123456")
    for junk in (b"SIP/2.0 200\r\n\r\n", b"\x00\xff" * 40, b"SIP/2.0 abc OK\r\nVia: x\r\n\r\n"):
        s.engine.receive(junk, s.upstream.peer, T0 + 2)
    s.net.timer(T0 + 1 + TIMER_B + 1)
    assert [m.code for m in s.a.take()][-1] == 408
    assert s.events("cdr")[-1]["fci"] == "callTag=10;cause=18;trunk=1"


# ---- calls in --------------------------------------------------------------------


def test_a_call_from_the_trunk_to_a_did_rings_the_user_without_a_challenge():
    s = Office()
    s.upstream.take()
    inv = s.upstream.request(
        "INVITE", "sip:85550100@127.0.0.1:5060", to="<sip:85550100@127.0.0.1>", body=SDP
    )
    s.upstream.send(inv, T0 + 1)
    assert [m.code for m in s.upstream.take()] == [100]
    [ring] = [m for m in s.b.take() if isinstance(m, Request) and m.method == "INVITE"]
    assert "<sip:5551234@" in ring.headers["From"]  # the outside caller's number


def test_a_call_from_the_trunk_to_an_unknown_number_is_refused():
    s = Office()
    s.upstream.take()
    inv = s.upstream.request("INVITE", "sip:85559999@127.0.0.1:5060", body=SDP)
    s.upstream.send(inv, T0 + 1)
    assert [m.code for m in s.upstream.take()][-1] == 404


def test_no_call_from_elsewhere_reaches_the_trunk_not_even_with_a_forged_local_from():
    s = Office()
    s.upstream.take()
    intruder = s.phone("100", 7000, host=UPSTREAM)  # the upstream's host, not its port
    inv = intruder.request(
        "INVITE", "sip:0123456@127.0.0.1:5060", to="<sip:0123456@127.0.0.1>", body=SDP
    )
    intruder.send(inv, T0 + 1)
    assert [m.code for m in intruder.take()] == [407]
    s.net.timer(T0 + 40)
    assert s.upstream_requests("INVITE") == []


# ---- proxies that record-route (RFC 3261 §12.1) --------------------------------------

RR = f"<sip:{UPSTREAM}:5080;lr;ftag=x>"


def test_a_call_out_keeps_the_upstreams_route_set_for_ack_and_bye():
    s = Office(trunks=[trunk(registration=None)])
    s.upstream.take()
    inv, _ = dial(s, "0123456")
    [out] = s.upstream_requests("INVITE")
    ok = s.upstream.respond(out, 200, "u1", body=SDP, headers={"Record-Route": RR})
    s.upstream.send(ok, T0 + 2)
    answer = [m for m in s.a.take() if isinstance(m, Response)][-1]
    s.a.ack(answer, inv, T0 + 2)
    [ack] = s.upstream_requests("ACK")
    assert ack.headers.getlist("Route") == [RR]
    s.engine.b2bua.stop_all(T0 + 3)
    s.net.pump()
    [bye] = s.upstream_requests("BYE")
    assert bye.headers.getlist("Route") == [RR]


def test_a_call_in_answers_with_the_upstreams_record_route():
    s = Office()
    s.upstream.take()
    inv = s.upstream.request(
        "INVITE", "sip:85550100@127.0.0.1:5060", body=SDP, headers={"Record-Route": RR}
    )
    s.upstream.send(inv, T0 + 1)
    [ring] = [m for m in s.b.take() if isinstance(m, Request) and m.method == "INVITE"]
    s.b.send(s.b.respond(ring, 200, "b1", body=SDP), T0 + 2)
    [ok] = [m for m in s.upstream.take() if isinstance(m, Response) and m.code == 200]
    assert ok.headers.getlist("Record-Route") == [RR]
    s.engine.b2bua.stop_all(T0 + 3)
    s.net.pump()
    [bye] = s.upstream_requests("BYE")
    assert bye.headers.getlist("Route") == [RR]


def test_stopping_unregisters_answering_the_challenge_again():
    s = Office()
    [first] = s.upstream_requests("REGISTER")
    s.upstream.send(s.upstream.respond(first, 200), T0)
    s.engine.stop(T0 + 1)
    s.net.pump()
    [bye] = s.upstream_requests("REGISTER")
    assert bye.headers["Expires"] == "0"
    s.upstream.send(s.upstream.respond(bye, 401, headers={"WWW-Authenticate": CHALLENGE}), T0 + 1)
    [again] = s.upstream_requests("REGISTER")
    assert again.headers["Expires"] == "0" and valid_answer(again, "Authorization")
