"""Interop: real SIP clients register to a live worker and call each other through it.

Each call: the caller dials, the callee answers, RTP flows both ways, the caller
holds (the callee sees it) and resumes, RTP flows both ways again, the caller
hangs up, and the worker writes an answered CDR. Every pair of clients here is
tested in both directions. The B2BUA passes SDP through, so RTP goes from
client to client and each client's own figures count it. SIPp sends back the
RTP it gets (`-rtp_echo`), so its partner hearing RTP proves both directions.
docs/interop.md has the matrix.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from tests.sipnodes.engine.baresip import spaced_port
from tests.sipnodes.engine.processes import Sipp, WorkerProcess, stream_events
from tests.support import wait_until

from .agents import FLOW, Agent, binding

pytestmark = pytest.mark.e2e

SIPP_DIR = Path(__file__).with_name("sipp")
CALLER, CALLEE = "100", "101"
PAIRS = [
    ("linphone", "udp", "pjsua", "udp"),
    ("pjsua", "udp", "linphone", "udp"),
    ("linphone", "tcp", "pjsua", "tcp"),
    ("pjsua", "tcp", "linphone", "tcp"),
    ("baresip", "udp", "linphone", "udp"),
    ("linphone", "tcp", "baresip", "udp"),
    ("baresip", "udp", "pjsua", "tcp"),
    ("pjsua", "udp", "baresip", "udp"),
]
SIPP_PARTNERS = [("pjsua", "udp"), ("linphone", "tcp")]


def expect(predicate: Callable[[], object], timeout: float, what: str, *sides: Agent) -> None:
    """Wait for `predicate`; on timeout fail with the tail of each client's log."""
    if not wait_until(predicate, timeout, 0.1):
        logs = "".join(f"\n--- {side} ---\n{side.log()[-2500:]}" for side in sides)
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{logs}")


def assert_answered_cdr(client: redis.Redis, worker: WorkerProcess) -> None:
    """The worker's one CDR: an answered call from 100 to 101 that the caller ended."""
    wait_until(lambda: stream_events(client, worker.server_id, "cdr"), 10)
    [cdr] = [e["data"] for e in stream_events(client, worker.server_id, "cdr")]
    assert (cdr["caller"], cdr["callee"], cdr["answered"]) == (CALLER, CALLEE, True), cdr
    assert cdr["released_by"] == "caller", cdr


def assert_rtp_counted(side: Agent) -> None:
    """The client's count over the whole call, both ways: at least two talks' worth."""
    expect(side.totals, 10, f"{side} to report its RTP totals", side)
    totals = side.totals()
    assert totals is not None and min(totals) >= 2 * FLOW, f"{side}: {totals}"


def talk(since: float, *sides: Agent) -> None:
    """Every client hears RTP after `since`: with two clients, media flows both ways."""
    expect(lambda: all(side.receiving_since(since) for side in sides), 15, "RTP", *sides)


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_linphone_registers_with_display_name_and_instance(agent, worker, redis_client, transport):
    """linphone's Contact has a display name and a quoted `+sip.instance` (RFC 5626)."""
    phone = agent("linphone", CALLER, transport)
    sent = re.findall(
        rf'^Contact: "Linphone {CALLER}" <(sip:[^>]+)>;\+sip\.instance="<urn:uuid:[0-9a-f-]+>"$',
        phone.log(),
        re.M,
    )
    assert sent, phone.log()[-3000:]
    assert binding(redis_client, worker, CALLER)["contact"] == sent[-1]


@pytest.mark.parametrize(
    ("caller_kind", "caller_transport", "callee_kind", "callee_transport"),
    PAIRS,
    ids=[f"{a}.{t}-calls-{b}.{u}" for a, t, b, u in PAIRS],
)
def test_call_hold_resume_hangup(
    agent, worker, redis_client, caller_kind, caller_transport, callee_kind, callee_transport
):
    caller = agent(caller_kind, CALLER, caller_transport)
    callee = agent(callee_kind, CALLEE, callee_transport)
    both = (caller, callee)

    caller.dial(CALLEE)
    expect(callee.ringing, 10, f"{callee} to ring", *both)
    answered = time.time()
    callee.answer()
    talk(answered, *both)

    held = time.time()
    caller.hold()
    expect(lambda: callee.held_since(held), 10, f"{callee} to be held", *both)
    expect(lambda: caller.holding_since(held), 10, f"{caller} to hold", *both)
    resumed = time.time()
    caller.resume()
    expect(lambda: callee.resumed_since(resumed), 10, f"{callee} to be resumed", *both)
    talk(resumed, *both)

    caller.hangup()
    expect(lambda: caller.ended() and callee.ended(), 10, "both to hang up", *both)
    assert_answered_cdr(redis_client, worker)
    for side in both:
        assert_rtp_counted(side)


@pytest.mark.parametrize(("kind", "transport"), SIPP_PARTNERS, ids=lambda v: v)
def test_sipp_calls_client(agent, worker, sipp: Sipp, redis_client, kind, transport):
    """SIPp holds and resumes (uac_hold_resume.xml checks the answers to both)."""
    callee = agent(kind, CALLEE, transport)
    caller = sipp.start_uac(
        str(SIPP_DIR / "uac_hold_resume.xml"),
        worker.port,
        [(CALLER, f"pw{CALLER}")],
        ["-s", CALLEE, "-rtp_echo", "-mp", str(spaced_port()), "-timeout", "30s"],
    )
    expect(callee.ringing, 10, f"{callee} to ring", callee)
    answered = time.time()
    callee.answer()
    talk(answered, callee)
    expect(lambda: callee.held_since(answered), 10, f"{callee} to be held", callee)
    held = time.time()
    expect(lambda: callee.resumed_since(held), 10, f"{callee} to be resumed", callee)
    talk(time.time(), callee)
    assert sipp.wait(caller, 20) == 0, sipp.tmp
    expect(callee.ended, 10, f"{callee} to see the hang-up", callee)
    assert_answered_cdr(redis_client, worker)
    assert_rtp_counted(callee)


@pytest.mark.parametrize(("kind", "transport"), SIPP_PARTNERS, ids=lambda v: v)
def test_client_calls_sipp(agent, worker, sipp: Sipp, redis_client, kind, transport):
    """SIPp is held and resumed (uas_hold_resume.xml checks both offers)."""
    uas_port = sipp.register(worker.port, [(CALLEE, f"pw{CALLEE}")])
    callee = sipp.start_uas(
        str(SIPP_DIR / "uas_hold_resume.xml"),
        uas_port,
        ["-rtp_echo", "-mp", str(spaced_port()), "-timeout", "30s"],
    )
    caller = agent(kind, CALLER, transport)
    answered = time.time()
    caller.dial(CALLEE)
    talk(answered, caller)
    held = time.time()
    caller.hold()
    expect(lambda: caller.holding_since(held), 10, f"{caller} to hold", caller)
    resumed = time.time()
    caller.resume()
    talk(resumed, caller)
    caller.hangup()
    assert sipp.wait(callee, 20) == 0, sipp.tmp
    expect(caller.ended, 10, f"{caller} to hang up", caller)
    assert_answered_cdr(redis_client, worker)
    assert_rtp_counted(caller)
