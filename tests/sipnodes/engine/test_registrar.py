"""Registrar through the sans-IO Engine: in-memory phones, fake clock."""

from sipnodes.engine.location import Binding

from .helpers import REALM, Pbx, make_engine


def test_register_challenge_then_ok_with_md5_and_sha256():
    pbx = Pbx()
    a = pbx.phone("100", 6000)
    assert a.register(1000.0).code == 200
    b = pbx.phone("101", 6002)
    ok = b.register(1000.0, algorithm="SHA-256")
    assert ok.code == 200
    assert ok.headers["Contact"] == "<sip:101@127.0.0.1:6002>;expires=3600"
    regs = pbx.events("registration")
    assert [(r["user"], r["action"], r["registered_clients"]) for r in regs] == [
        ("100", "register", 1),
        ("101", "register", 2),
    ]


def test_first_answer_is_401_with_both_algorithms():
    pbx = Pbx()
    a = pbx.phone("100", 6000)
    a.send(a.request("REGISTER", f"sip:{REALM}"), 1000.0)
    [r] = a.take()
    assert r.code == 401
    assert [("MD5" in v, "SHA-256" in v) for v in r.headers.getlist("WWW-Authenticate")] == [
        (True, False),
        (False, True),
    ]


def test_unknown_user_and_wrong_password_same_answer():
    pbx = Pbx()
    wrong = pbx.phone("100", 6000).register(1000.0, password="bad")
    unknown = pbx.phone("999", 6002).register(1000.0)
    assert (wrong.code, wrong.phrase) == (unknown.code, unknown.phrase) == (403, "Forbidden")
    assert wrong.headers.keys() == unknown.headers.keys()
    assert pbx.events("registration") == []


def test_expiry_multiple_contacts_and_unregister():
    pbx = Pbx(registrar={"min_expires": 10})
    desk = pbx.phone("100", 6000)
    assert desk.register(1000.0, expires=60).code == 200
    mobile = pbx.phone("100", 6010)
    ok = mobile.register(1001.0, expires=120)
    assert sorted(ok.headers.getlist("Contact")) == [
        "<sip:100@127.0.0.1:6000>;expires=59",
        "<sip:100@127.0.0.1:6010>;expires=120",
    ]
    assert pbx.engine.location.registered_clients() == 1  # several devices count once
    pbx.engine.handle_timer(1061.0)  # the sweep
    assert [b.contact for b in pbx.engine.location.bindings("100")] == ["sip:100@127.0.0.1:6010"]
    assert pbx.events("registration")[-1]["action"] == "expire"
    assert mobile.register(1070.0, expires=0).code == 200
    assert pbx.engine.location.registered_clients() == 0
    assert pbx.events("registration")[-1] == {
        "action": "unregister",
        "user": "100",
        "contact": "sip:100@127.0.0.1:6010",
        "expires": 0,
        "registered_clients": 0,
    }


def test_wildcard_unregister_and_too_brief():
    pbx = Pbx()
    a = pbx.phone("100", 6000)
    a.register(1000.0)
    assert a.register(1000.0, expires=5).code == 423
    assert a.register(1000.0, expires=0, contact="*").code == 200
    assert pbx.engine.location.registered_clients() == 0


def test_edition_limit_names_the_limit_and_reregistration_counts_once():
    pbx = Pbx(max_clients=2)
    assert pbx.phone("100", 6000).register(1000.0).code == 200
    assert pbx.phone("101", 6002).register(1000.0).code == 200
    assert pbx.phone("101", 6004).register(1000.0).code == 200  # second device
    assert pbx.phone("100", 6000).register(1001.0).code == 200  # refresh
    refused = pbx.phone("102", 6006).register(1001.0)
    assert (refused.code, refused.phrase) == (403, "Forbidden - client limit of 2 reached")
    # Unregistering is never refused, and frees a place.
    assert pbx.phone("100", 6000).register(1002.0, expires=0).code == 200
    assert pbx.phone("102", 6006).register(1002.0).code == 200


def test_may_only_register_oneself():
    pbx = Pbx()
    a = pbx.phone("100", 6000)
    other = f"<sip:101@{REALM}>"
    a.send(a.request("REGISTER", f"sip:{REALM}", to=other), 1000.0)
    challenge = a.take()[-1].headers.getlist("WWW-Authenticate")[0]
    a.send(
        a.authorize(a.request("REGISTER", f"sip:{REALM}", to=other), challenge, "Authorization"),
        1000.0,
    )
    assert a.take()[-1].code == 403
    assert pbx.engine.location.registered_clients() == 0


def test_nat_binding_remembers_source_address():
    pbx = Pbx()
    phone = pbx.phone("100", 40001, host="203.0.113.9")
    ok = phone.register(1000.0, contact="<sip:100@192.168.1.20:5060>")
    assert ok.code == 200
    [b] = pbx.engine.location.bindings("100")
    assert b.contact == "sip:100@192.168.1.20:5060"
    assert (b.peer.host, b.peer.port) == ("203.0.113.9", 40001)


def test_location_ops_and_restore_skip_expired():
    pbx = Pbx()
    pbx.phone("100", 6000).register(1000.0, expires=3600)
    ops = pbx.engine.location.ops
    assert [op.op for op in ops] == ["set"]
    record = ops[0].binding.to_record()
    assert Binding.from_record(record, 0.0) == ops[0].binding  # the test's clocks agree
    fresh = make_engine(2000.0)
    expired = Binding.from_record(
        record.replace('"expires_at": 4600.0', '"expires_at": 1500.0'), 0.0
    )
    count = fresh.restore(
        {"100 a": record, "101 b": expired.to_record().replace("100", "101"), "x": "junk"},
        2000.0,
    )
    assert count == 1
    assert sorted(op.op for op in fresh.location.ops) == ["del", "del"]


def test_a_refresh_that_changes_nothing_is_an_event_at_most_once_an_hour():
    pbx = Pbx()
    desk = pbx.phone("100", 6000)
    assert desk.register(1000.0, expires=60).code == 200
    for minute in range(1, 60):  # an hour of refreshes: the binding's contact, its address
        assert desk.register(1000.0 + 60 * minute, expires=60).code == 200
    assert [r["action"] for r in pbx.events("registration")] == ["register"]
    assert desk.register(4600.0, expires=60).code == 200  # an hour after the last event
    regs = pbx.events("registration")
    assert [(r["action"], r["user"], r["registered_clients"]) for r in regs] == [
        ("register", "100", 1),
        ("register", "100", 1),
    ]
    assert [op.op for op in pbx.engine.location.ops].count("set") == 61  # Redis keeps each


def test_an_hour_counts_from_any_register_event_of_the_server():
    pbx = Pbx()
    desk = pbx.phone("100", 6000)
    desk.register(1000.0)
    pbx.phone("101", 6002).register(3000.0)  # a new binding: an event, the server's activity
    desk.register(4601.0)  # refresh 3601 s after 100's event, but 1601 s after 101's
    assert [r["user"] for r in pbx.events("registration")] == ["100", "101"]
    desk.register(6601.0)
    assert [r["user"] for r in pbx.events("registration")] == ["100", "101", "100"]


def test_refreshes_that_change_something_are_events():
    pbx = Pbx(registrar={"min_expires": 10})
    desk = pbx.phone("100", 6000, host="203.0.113.9")
    desk.register(1000.0, contact="<sip:100@192.168.1.20:5060>")
    moved = pbx.phone("100", 40001, host="203.0.113.9")  # the NAT gave it another port
    moved.register(1010.0, contact="<sip:100@192.168.1.20:5060>")
    desk.register(1020.0, contact="<sip:100@192.168.1.21:5060>")  # a new contact
    desk.register(1030.0, contact="<sip:100@192.168.1.21:5060>", expires=0)
    desk.register(1040.0, contact="<sip:100@192.168.1.20:5060>", expires=10)  # (40001's)
    pbx.engine.handle_timer(1051.0)  # expires
    assert [r["action"] for r in pbx.events("registration")] == [
        "register",
        "register",
        "register",
        "unregister",
        "register",
        "expire",
    ]
