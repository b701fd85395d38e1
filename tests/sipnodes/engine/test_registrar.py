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
