"""Interop: call transfer with real clients, carried out by the worker (server-side REFER).

Blind: 100 calls 101 and they talk; 101 transfers 100 to 102 (REFER, `Refer-To:
<sip:102@...>`). 102 rings, showing 100 as the caller, and answers; 101's call
ends, 100 and 102 talk. pjsua2 (`xfer`) and baresip (`transfer <uri>`) each
transfer.

Attended: 100 (baresip) calls 101 (pjsua2); 101 holds 100 and calls 102 (baresip)
from the same pjsua process; 102 answers; 101 transfers with `Replaces` naming its
call with 102. Both of 101's calls end, 100 and 102 talk. baresip 1.0 cannot start
an attended transfer, so pjsua2 is the transferor and baresip the other two.

A target that refuses leaves the call as it was: the transferor hears the
refusal (the NOTIFY's status) and goes on talking.

Each test runs twice: with the server's media relay off (media flows from phone to
phone, the re-INVITEs re-point it) and on (media stays anchored at the server's
ports, the relay re-latches to the target).

Every leg writes its CDR: the part that ended at the transfer with
`callTag=16;cause=16;transfer=<kind>:101`, and the call that goes on (100 with
102) when it ends, its FCI naming the transfer too. docs/interop.md has the list.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from tests.sipnodes.engine.media_peers import free_block
from tests.sipnodes.engine.processes import WorkerProcess, stream_events, wait_events

from .agents import Agent, Baresip, Pjsua
from .test_calls import expect, talk

pytestmark = pytest.mark.e2e

A, B, C = "100", "101", "102"  # the transferred party, the transferor, the target
TRANSFERRED = 16  # CallTag.TRANSFERRED
NORMAL_CLEARING = 16
# (transferred party, transferor, target): the kind and transport of each
BLIND = [
    (("pjsua", "udp"), ("pjsua", "tcp"), ("baresip", "udp")),
    (("pjsua", "tcp"), ("baresip", "udp"), ("pjsua", "udp")),
]


@pytest.fixture(params=[False, True], ids=["direct-media", "relayed-media"])
def worker(request: pytest.FixtureRequest, start_worker: Any) -> WorkerProcess:
    """The interop worker (MD5 challenges, as conftest.py's), with the media relay off or on."""
    options: dict[str, Any] = {"auth": {"algorithms": ["MD5"]}}
    if request.param:
        block = list(free_block())
        options |= {
            "system": {"media_relay": True},
            "listen": {"address": "127.0.0.1", "media_ports": block},
        }
    return start_worker(**options)


def cdrs(client: redis.Redis, worker: WorkerProcess, count: int) -> list[dict[str, Any]]:
    """The worker's CDRs once there are `count` of them (it writes them asynchronously)."""
    found = [e["data"] for e in wait_events(client, worker.server_id, "cdr", count, 10)]
    assert len(found) == count, found
    return found


def assert_cdr(cdr: dict[str, Any], caller: str, callee: str, fci: str) -> None:
    assert (cdr["caller"], cdr["callee"], cdr["answered"], cdr["fci"]) == (
        caller,
        callee,
        True,
        fci,
    ), cdr


def shows_caller(side: Agent, number: str) -> bool:
    """The incoming call shows `number` as the caller (the From the worker sent)."""
    if isinstance(side, Pjsua):
        return any(f"sip:{number}@" in e["remote"] for e in side.seen("incoming"))
    assert isinstance(side, Baresip)
    return any(f"sip:{number}@" in e["peeruri"] for e in side.seen("CALL_INCOMING"))


def connect(caller: Agent, callee: Agent, *sides: Agent) -> None:
    """`caller` dials `callee`, which answers; they talk."""
    caller.dial(callee.number)
    expect(callee.ringing, 10, f"{callee} to ring", *sides)
    answered = time.time()
    callee.answer()
    talk(answered, caller, callee)


@pytest.mark.parametrize(
    ("transferred", "transferor", "target"),
    BLIND,
    ids=[f"{b[0]}.{b[1]}-transfers-{a[0]}.{a[1]}-to-{c[0]}.{c[1]}" for a, b, c in BLIND],
)
def test_blind_transfer(agent, worker, redis_client, transferred, transferor, target):
    a = agent(transferred[0], A, transferred[1])
    b = agent(transferor[0], B, transferor[1])
    c = agent(target[0], C, target[1])
    every = (a, b, c)
    connect(a, b, *every)

    if isinstance(b, Pjsua):
        b.xfer(C)
    else:
        b.transfer(C)
    expect(c.ringing, 10, f"{c} to ring", *every)
    assert shows_caller(c, A), f"{c} does not show {A} calling"
    assert not b.ended() and not a.ended()
    c.answer()
    expect(b.ended, 10, f"the transferor {b}'s call to end", *every)
    if isinstance(b, Pjsua):  # NOTIFYs: 100 Trying, then the target's 200 OK, which ends it
        expect(lambda: (200, True) in b.transfer_reports(), 5, f"{b} to hear 200", *every)
        assert b.transfer_reports()[0] == (100, False), b.transfer_reports()
    after = time.time()  # 101 is gone: what 100 and 102 hear now comes from each other
    talk(after, a, c)
    assert not a.ended() and not c.ended()

    [ended] = cdrs(redis_client, worker, 1)
    transfer = f"transfer=blind:{B}"
    assert_cdr(ended, A, B, f"callTag={TRANSFERRED};cause={NORMAL_CLEARING};{transfer}")

    c.hangup()
    expect(lambda: a.ended() and c.ended(), 10, "100 and 102 to hang up", *every)
    _, goes_on = cdrs(redis_client, worker, 2)
    assert_cdr(goes_on, A, C, f"callTag=2;cause={NORMAL_CLEARING};{transfer}")  # callee's BYE
    assert goes_on["released_by"] == "callee", goes_on


def test_a_refused_blind_transfer_leaves_the_call_as_it_was(agent, worker, redis_client):
    """102 declines the transferred call: 101 hears why, and 100 and 101 go on talking."""
    a = agent("baresip", A, "udp")
    b = agent("pjsua", B, "udp")
    c = agent("baresip", C, "udp")
    every = (a, b, c)
    assert isinstance(b, Pjsua)
    connect(a, b, *every)

    b.xfer(C)
    expect(c.ringing, 10, f"{c} to ring", *every)
    c.hangup()  # baresip refuses a call it has not answered: 486
    expect(lambda: b.transfer_reports()[-1:] == [(486, True)], 10, f"{b} to hear 486", *every)
    after = time.time()
    talk(after, a, b)
    assert not a.ended() and not b.ended()
    assert stream_events(redis_client, worker.server_id, "cdr") == []

    a.hangup()
    expect(lambda: a.ended() and b.ended(), 10, "100 and 101 to hang up", *every)
    [cdr] = cdrs(redis_client, worker, 1)
    assert_cdr(cdr, A, B, f"callTag=1;cause={NORMAL_CLEARING}")  # no transfer in it


def test_pjsua_attended_transfer(agent, worker, redis_client):
    a = agent("baresip", A, "udp")
    b = agent("pjsua", B, "udp")
    c = agent("baresip", C, "udp")
    every = (a, b, c)
    assert isinstance(b, Pjsua)
    connect(a, b, *every)  # call 0 of 101's pjsua

    held = time.time()
    b.hold_call(0)
    expect(lambda: a.held_since(held), 10, f"{a} to be held", *every)
    connect(b, c, *every)  # call 1 of 101's pjsua: it consults 102
    assert b.call_confirmed(1) and not b.call_ended(0)

    b.xfer_replaces(0, 1)
    expect(lambda: b.call_ended(0) and b.call_ended(1), 10, f"{b}'s two calls to end", *every)
    assert (200, True) in b.transfer_reports(0), b.transfer_reports(0)
    after = time.time()  # 101 is gone: what 100 and 102 hear now comes from each other
    talk(after, a, c)
    assert not a.ended() and not c.ended()

    ended = cdrs(redis_client, worker, 2)
    transfer = f"transfer=attended:{B}"
    fci = f"callTag={TRANSFERRED};cause={NORMAL_CLEARING};{transfer}"
    assert sorted((e["caller"], e["callee"], e["fci"]) for e in ended) == [
        (A, B, fci),
        (B, C, fci),
    ], ended

    c.hangup()
    expect(lambda: a.ended() and c.ended(), 10, "100 and 102 to hang up", *every)
    goes_on = cdrs(redis_client, worker, 3)[-1]
    assert_cdr(goes_on, A, C, f"callTag=2;cause={NORMAL_CLEARING};{transfer}")
