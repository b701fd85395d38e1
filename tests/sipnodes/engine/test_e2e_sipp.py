"""End to end: a real worker driven by SIPp over loopback; CDRs read from Redis."""

from __future__ import annotations

import json
import signal
import time

import pytest

from sipnodes.engine.events import live_calls_key, live_channel
from sipnodes.engine.location import location_key
from tests.support import wait_until

from .processes import event_states, stream_events, wait_events

pytestmark = pytest.mark.e2e

PW = {n: f"pw{n}" for n in ("100", "101", "102", "103", "104", "105", "106")}


def one_cdr(redis_client, worker):
    """The worker's one CDR; it is written asynchronously, so wait for it."""
    events = wait_events(redis_client, worker.server_id, "cdr")
    assert len(events) == 1, f"expected one CDR, got {events}\n{worker.log()[-3000:]}"
    return events[0]["data"]


def call(sipp, worker, uac, uas):
    """100 calls 101, both played by SIPp scenarios that must pass; the caller's log."""
    uas_port = sipp.register(worker.port, [("101", PW["101"])])
    callee = sipp.start_uas(uas, uas_port)
    rc, out = sipp.run(uac, worker.port, [("100", PW["100"])], extra=["-s", "101"])
    assert rc == 0 and sipp.wait(callee) == 0, out
    return out


def assert_times(cdr, answered):
    """Times are UTC epoch seconds, in order; talk time is answer to release."""
    start, release = cdr["start"], cdr["release"]
    assert start <= release
    if answered:
        assert start <= cdr["answer"] <= release
        assert cdr["talk_seconds"] == pytest.approx(release - cdr["answer"], abs=0.01)
    else:
        assert cdr["answer"] is None and cdr["talk_seconds"] == 0


def test_register_with_auth_and_options(start_worker, sipp, redis_client):
    worker = start_worker()
    sipp.register(worker.port, [("100", PW["100"])])
    regs = wait_events(redis_client, worker.server_id, "registration")
    assert [r["data"]["action"] for r in regs] == ["register"]
    assert regs[0]["data"]["user"] == "100" and regs[0]["data"]["registered_clients"] == 1
    loc_key = location_key(worker.server_uid)
    assert wait_until(lambda: redis_client.hlen(loc_key) == 1, 5.0)  # written just after


def test_wrong_password_refused(start_worker, sipp, redis_client):
    worker = start_worker()
    rc, out = sipp.run("register_refused.xml", worker.port, [("101", "not-the-password")])
    assert rc == 0, out
    assert "final: SIP/2.0 403 Forbidden" in out
    # Unknown user: the very same answer.
    rc, out2 = sipp.run("register_refused.xml", worker.port, [("999", "whatever")])
    assert rc == 0, out2
    assert "final: SIP/2.0 403 Forbidden" in out2
    assert stream_events(redis_client, worker.server_id, "registration") == []


def test_sixth_client_refused_on_five_client_edition(start_worker, sipp, redis_client):
    worker = start_worker(max_clients=5)
    sipp.register(worker.port, [(n, PW[n]) for n in ("100", "101", "102", "103", "104")])
    # A second device of a registered user still counts once.
    sipp.register(worker.port, [("100", PW["100"])])
    rc, out = sipp.run("register_refused.xml", worker.port, [("105", PW["105"])])
    assert rc == 0, out
    assert "final: SIP/2.0 403 Forbidden - client limit of 5 reached" in out
    regs = wait_events(redis_client, worker.server_id, "registration", count=6)
    assert max(r["data"]["registered_clients"] for r in regs) == 5


def test_call_answered_then_bye_from_caller(start_worker, sipp, redis_client):
    worker = start_worker()
    live = redis_client.pubsub()
    live.subscribe(live_channel(worker.server_uid))
    call(sipp, worker, "uac_call.xml", "uas_answer.xml")
    cdr = one_cdr(redis_client, worker)
    assert cdr["caller"] == "100" and cdr["dialed"] == "101" and cdr["callee"] == "101"
    assert cdr["route"] == "local_user" and cdr["answered"] is True
    assert cdr["status"] == 200 and cdr["released_by"] == "caller"
    assert cdr["fci"] == "callTag=1;cause=16"
    assert cdr["ring"] is not None
    assert_times(cdr, answered=True)
    states = event_states(redis_client, worker.server_id, "call")
    assert states == ["initiated", "ringing", "answered", "released"]
    [cdr_event] = stream_events(redis_client, worker.server_id, "cdr")
    assert cdr_event["event_id"] == cdr["uuid"]
    published = []
    deadline = time.monotonic() + 5
    while len(published) < 4 and time.monotonic() < deadline:
        msg = live.get_message(ignore_subscribe_messages=True, timeout=0.5)
        if msg:
            published.append(json.loads(json.loads(msg["data"])["data"])["state"])
    live.close()
    assert published == ["initiated", "ringing", "answered", "released"]
    assert redis_client.hlen(live_calls_key(worker.server_uid)) == 0  # none in progress


def test_call_bye_from_callee(start_worker, sipp, redis_client):
    worker = start_worker()
    call(sipp, worker, "uac_wait_bye.xml", "uas_bye.xml")
    cdr = one_cdr(redis_client, worker)
    assert cdr["released_by"] == "callee" and cdr["fci"] == "callTag=2;cause=16"
    assert cdr["answered"] is True and cdr["status"] == 200
    assert_times(cdr, answered=True)


def test_busy_callee_reason_cause_in_cdr(start_worker, sipp, redis_client):
    worker = start_worker()
    out = call(sipp, worker, "uac_refused.xml", "uas_busy.xml")
    assert "final: SIP/2.0 486" in out
    cdr = one_cdr(redis_client, worker)
    assert cdr["status"] == 486 and cdr["answered"] is False
    assert cdr["fci"] == "callTag=4;cause=17" and cdr["released_by"] == "callee"
    assert_times(cdr, answered=False)


def test_no_answer_then_cancel(start_worker, sipp, redis_client):
    worker = start_worker()
    out = call(sipp, worker, "uac_cancel.xml", "uas_ring.xml")
    assert "final: SIP/2.0 487" in out
    cdr = one_cdr(redis_client, worker)
    assert cdr["status"] == 487 and cdr["answered"] is False
    assert cdr["fci"] == "callTag=3;cause=16" and cdr["released_by"] == "caller"
    assert cdr["ring"] is not None
    assert_times(cdr, answered=False)


def test_failed_call_cdr_off_writes_none(start_worker, sipp, redis_client):
    worker = start_worker(cdr={"failed_call_cdr": False, "realtime_display": False})
    rc, out = sipp.run("uac_refused.xml", worker.port, [("100", PW["100"])], extra=["-s", "555"])
    assert rc == 0, out
    call(sipp, worker, "uac_call.xml", "uas_answer.xml")
    cdr = one_cdr(redis_client, worker)
    assert cdr["answered"] is True  # only the answered call
    assert stream_events(redis_client, worker.server_id, "call") == []


def test_unknown_number_404_cause_1(start_worker, sipp, redis_client):
    worker = start_worker()
    rc, out = sipp.run("uac_refused.xml", worker.port, [("100", PW["100"])], extra=["-s", "555"])
    assert rc == 0, out
    assert "final: SIP/2.0 404" in out
    cdr = one_cdr(redis_client, worker)
    assert cdr["status"] == 404 and cdr["fci"] == "callTag=9;cause=1"
    assert cdr["dialed"] == "555" and cdr["released_by"] == "server"


def test_reinvite_hold_relayed(start_worker, sipp, redis_client):
    worker = start_worker()
    call(sipp, worker, "uac_reinvite.xml", "uas_reinvite.xml")
    cdr = one_cdr(redis_client, worker)
    assert cdr["fci"] == "callTag=1;cause=16" and cdr["answered"] is True


def test_sigterm_ends_calls_with_bye(start_worker, sipp, redis_client):
    worker = start_worker()
    uas_port = sipp.register(worker.port, [("101", PW["101"])])
    uas = sipp.start_uas("uas_answer.xml", uas_port)
    uac = sipp.start_uac("uac_wait_bye.xml", worker.port, [("100", PW["100"])], ["-s", "101"])
    assert wait_until(
        lambda: "answered" in event_states(redis_client, worker.server_id, "call"), 10.0
    ), worker.log()[-3000:]
    calls_key = live_calls_key(worker.server_uid)
    assert wait_until(lambda: redis_client.hlen(calls_key) == 1, 5.0)
    [in_progress] = redis_client.hvals(calls_key)
    assert json.loads(json.loads(in_progress)["data"])["state"] == "answered"
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(10) == 0
    assert redis_client.hlen(calls_key) == 0
    assert sipp.wait(uac) == 0 and sipp.wait(uas) == 0
    cdr = one_cdr(redis_client, worker)
    assert cdr["fci"] == "callTag=7;cause=16" and cdr["released_by"] == "server"
    assert event_states(redis_client, worker.server_id, "status") == ["started", "stopped"]
