"""End to end: forwarding, hunt groups and feature codes on a real worker, phones played by SIPp.

Each callee is a SIPp UAS registered as a user; the caller is a SIPp UAC that
must pass its scenario (uac_forwarded.xml fails unless a 181 says
`forwarded-to=102`). The CDRs and call-settings events are read from Redis.
The fake-clock tests of the same behaviour are in test_pbx_features.py.
"""

from __future__ import annotations

import pytest

from .helpers import REALM, user_entry
from .processes import stream_events, wait_events

pytestmark = pytest.mark.e2e

CALLER = ("100", "pw100")
COMPLETED_ELSEWHERE = 'cancel reason: SIP;cause=200;text="Call completed elsewhere"'


def users(**settings):
    """Users 100-103; `u101={...}` adds call settings to user 101's entry."""
    entries = []
    for number in ("100", "101", "102", "103"):
        entry = user_entry(number)
        entry.update(settings.get(f"u{number}", {}))
        entries.append(entry)
    return entries


def forwarding(seconds=20, **targets):
    return {"forwarding": {**targets, "no_answer_seconds": seconds}}


def hunt_group(mode, members=("101", "102"), **options):
    group = {"number": "600", "name": "Sales", "mode": mode, "members": list(members)}
    return [{**group, **options}]


def phone(sipp, worker, number, scenario, calls=1):
    """A SIPp UAS registered as `number`: the worker's calls to `number` reach it."""
    port = sipp.register(worker.port, [(number, f"pw{number}")])
    return sipp.start_uas(scenario, port, calls=calls)


def dial(sipp, worker, number, scenario="uac_call.xml", caller=CALLER):
    """`caller` dials `number` with a scenario that must pass; what it logged."""
    rc, out = sipp.run(scenario, worker.port, [caller], extra=["-s", number])
    assert rc == 0, f"{scenario} failed:\n{out}\n{worker.log()[-4000:]}"
    return out


def finished(sipp, worker, *uas):
    """Every SIPp UAS played its whole scenario."""
    for proc in uas:
        assert sipp.wait(proc) == 0, f"{sipp.output(proc)}\n{worker.log()[-4000:]}"


def cdrs(redis_client, worker, count=1):
    events = wait_events(redis_client, worker.server_id, "cdr", count=count)
    assert len(events) == count, f"expected {count} CDRs, got {events}"
    return [e["data"] for e in events]


def fci(cdr):
    return cdr["fci"].split(";")


def test_busy_user_forwards_and_the_caller_is_told(start_worker, sipp, redis_client):
    worker = start_worker(users=users(u101=forwarding(busy="102")))
    busy = phone(sipp, worker, "101", "uas_busy.xml")
    target = phone(sipp, worker, "102", "uas_answer.xml")
    out = dial(sipp, worker, "101", "uac_forwarded.xml")
    assert f"181 Call-Info: <sip:101@{REALM}>;purpose=info;reason=busy;forwarded-to=102" in out
    finished(sipp, worker, busy, target)
    [cdr] = cdrs(redis_client, worker)
    assert (cdr["dialed"], cdr["callee"], cdr["answered"]) == ("101", "102", True)
    assert "forward=busy:101>102" in fci(cdr)


def test_no_answer_forwards_after_the_users_seconds(start_worker, sipp, redis_client):
    worker = start_worker(users=users(u101=forwarding(seconds=2, no_answer="102")))
    ringing = phone(sipp, worker, "101", "uas_ring_cancelled.xml")
    target = phone(sipp, worker, "102", "uas_answer.xml")
    out = dial(sipp, worker, "101", "uac_forwarded.xml")
    assert "reason=no_answer;forwarded-to=102" in out
    finished(sipp, worker, ringing, target)
    assert "cancel reason:" in sipp.output(ringing)  # 101 stopped ringing...
    assert COMPLETED_ELSEWHERE not in sipp.output(ringing)  # ...unanswered: a missed call
    [cdr] = cdrs(redis_client, worker)
    assert (cdr["callee"], cdr["answered"]) == ("102", True)
    assert "forward=no_answer:101>102" in fci(cdr)
    # 101 rang its 2 seconds first (1.9: the CDR's wall-clock times may differ by a few ms)
    assert 1.9 <= cdr["answer"] - cdr["start"] < 6.0


def test_simultaneous_group_rings_all_and_the_answer_stops_the_rest(
    start_worker, sipp, redis_client
):
    worker = start_worker(users=users(), hunt_groups=hunt_group("simultaneous"))
    ringing = phone(sipp, worker, "101", "uas_ring_cancelled.xml")
    answering = phone(sipp, worker, "102", "uas_answer.xml")
    dial(sipp, worker, "600")
    finished(sipp, worker, ringing, answering)
    assert COMPLETED_ELSEWHERE in sipp.output(ringing)
    [cdr] = cdrs(redis_client, worker)
    assert (cdr["dialed"], cdr["callee"], cdr["answered"]) == ("600", "102", True)
    assert "hunt=600" in fci(cdr)


def test_sequential_group_rings_the_next_member_after_ring_seconds(
    start_worker, sipp, redis_client
):
    group = hunt_group("sequential", ring_seconds=2, timeout=10)
    worker = start_worker(users=users(), hunt_groups=group)
    first = phone(sipp, worker, "101", "uas_ring_cancelled.xml")
    second = phone(sipp, worker, "102", "uas_answer.xml")  # answers as soon as it rings
    dial(sipp, worker, "600")
    finished(sipp, worker, first, second)
    assert COMPLETED_ELSEWHERE not in sipp.output(first)
    [cdr] = cdrs(redis_client, worker)
    assert (cdr["callee"], cdr["answered"]) == ("102", True)
    assert "hunt=600" in fci(cdr)
    assert 1.9 <= cdr["answer"] - cdr["start"] < 6.0  # 102 rang only after 101's 2 seconds


def test_round_robin_group_gives_consecutive_calls_to_different_members(
    start_worker, sipp, redis_client
):
    worker = start_worker(users=users(), hunt_groups=hunt_group("round_robin"))
    # Each member would take both calls: where the second one goes is the group's choice.
    for number in ("101", "102"):
        phone(sipp, worker, number, "uas_answer.xml", calls=2)
    dial(sipp, worker, "600")
    dial(sipp, worker, "600")
    calls = cdrs(redis_client, worker, count=2)
    assert [c["callee"] for c in calls] == ["101", "102"]
    assert all(c["answered"] and "hunt=600" in fci(c) for c in calls)


def test_forwarding_feature_code_sets_then_clears_unconditional_forwarding(
    start_worker, sipp, redis_client
):
    worker = start_worker(users=users())
    own = phone(sipp, worker, "101", "uas_answer.xml")
    target = phone(sipp, worker, "102", "uas_answer.xml")
    phone_101 = ("101", "pw101")

    out = dial(sipp, worker, "*90*102", "uac_feature_code.xml", caller=phone_101)
    assert "final: SIP/2.0 200" in out  # confirmed, media refused, then the server's BYE
    [change] = [e["data"] for e in wait_events(redis_client, worker.server_id, "call_settings")]
    assert (change["user"], change["forward_unconditional"], change["dnd"]) == ("101", "102", False)

    out = dial(sipp, worker, "101", "uac_forwarded.xml")
    assert "reason=unconditional;forwarded-to=102" in out
    finished(sipp, worker, target)

    dial(sipp, worker, "*90%23", "uac_feature_code.xml", caller=phone_101)  # *90#: clear
    changes = wait_events(redis_client, worker.server_id, "call_settings", count=2)
    assert [e["data"]["forward_unconditional"] for e in changes] == ["102", ""]

    dial(sipp, worker, "101")  # rings 101's own phone again, which answers
    finished(sipp, worker, own)
    forwarded, direct = cdrs(redis_client, worker, count=2)  # feature codes write no CDR
    assert (forwarded["callee"], direct["callee"]) == ("102", "101")
    assert "forward=unconditional:101>102" in fci(forwarded)
    assert not any(f.startswith("forward=") for f in fci(direct))
    assert len(stream_events(redis_client, worker.server_id, "call_settings")) == 2
