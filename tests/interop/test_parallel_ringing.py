"""Parallel ringing with real clients: user 101 on two devices, both ring, one answers.

100 (SIPp, uac_call.xml) calls 101, registered from two real clients at once
(baresip and pjsua2, in each role, and two of the same kind). Each client
reports its own incoming call; the one told to answer gets the call. The other
stops ringing: the worker cancels its INVITE with
`Reason: SIP;cause=200;text="Call completed elsewhere"` (RFC 3326), seen in
that client's own log, and the client reports its call ended unanswered.
The CDR: 100 to 101, answered. docs/interop.md lists what is shown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.sipnodes.engine.processes import Sipp, WorkerProcess, stream_events
from tests.support import wait_until

from .agents import AGENTS, Agent, Baresip, Pjsua, bindings
from .test_calls import expect

pytestmark = pytest.mark.e2e

CALLER, CALLEE = "100", "101"
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'
# (the device that answers, the one that stops ringing): the kind and transport of each
DEVICES = [
    (("pjsua", "tcp"), ("baresip", "udp")),
    (("baresip", "udp"), ("pjsua", "udp")),
    (("baresip", "udp"), ("baresip", "udp")),
    (("pjsua", "udp"), ("pjsua", "tcp")),
]


@pytest.fixture
def device(
    tmp_path: Path, worker: WorkerProcess, redis_client: redis.Redis
) -> Iterator[Callable[[str, str, str], Agent]]:
    """Starts a client (an `agents.AGENTS` kind) as one more device of a number, with every
    SIP message in its log, and waits until the worker holds one more registration of
    that number; stops them all."""
    started: list[Agent] = []

    def make(kind: str, number: str, transport: str) -> Agent:
        before = len(bindings(redis_client, worker, number))
        client = AGENTS[kind](tmp_path, number, transport, worker.port)
        if isinstance(client, Baresip):
            client.sip_trace = True  # pjsua logs every message already
        started.append(client)
        client.start()
        more = wait_until(lambda: len(bindings(redis_client, worker, number)) > before, 15)
        assert more, f"{client} did not register:\n{client.log()[-3000:]}"
        return client

    yield make
    for client in started:
        client.stop()


def connected(side: Agent) -> bool:
    """The client says its call was answered (pjsua: CONFIRMED; baresip: established)."""
    if isinstance(side, Pjsua):
        return bool(side.seen("state", state="CONFIRMED"))
    assert isinstance(side, Baresip)
    return bool(side.seen("CALL_ESTABLISHED"))


def cancelled_elsewhere(side: Agent) -> bool:
    """The client's incoming call ended unanswered: the CANCEL it got said the call was
    answered elsewhere (a phone shows no missed call for that), it ended the INVITE with
    487, and it reported the call over. The messages are read from the client's own log."""
    log = side.log()
    cancel = re.search(r"^CANCEL sip:.*?\r?\n\r?\n", log, re.M | re.S)
    told = cancel is not None and f"Reason: {COMPLETED_ELSEWHERE}" in cancel[0]
    return told and "SIP/2.0 487 Request Terminated" in log and side.ended()


@pytest.mark.parametrize(
    ("answering", "other"), DEVICES, ids=[f"{a[0]}.{a[1]}-and-{b[0]}.{b[1]}" for a, b in DEVICES]
)
def test_both_devices_ring_the_first_to_answer_takes_the_call(
    device, worker, sipp: Sipp, redis_client, answering, other
):
    winner = device(answering[0], CALLEE, answering[1])
    loser = device(other[0], CALLEE, other[1])
    both = (winner, loser)
    assert len(bindings(redis_client, worker, CALLEE)) == 2

    caller = sipp.start_uac("uac_call.xml", worker.port, [(CALLER, f"pw{CALLER}")], ["-s", CALLEE])
    expect(lambda: winner.ringing() and loser.ringing(), 10, "both devices to ring", *both)
    winner.answer()
    expect(lambda: cancelled_elsewhere(loser), 10, f"{loser} to stop ringing", *both)
    expect(lambda: connected(winner), 10, f"{winner} to be in the call", *both)
    assert sipp.wait(caller, 20) == 0, sipp.output(caller)  # answered, ACKed, hung up
    expect(winner.ended, 10, f"{winner} to see the caller hang up", *both)
    assert not connected(loser)

    wait_until(lambda: stream_events(redis_client, worker.server_id, "cdr"), 10)
    [cdr] = [e["data"] for e in stream_events(redis_client, worker.server_id, "cdr")]
    assert (cdr["caller"], cdr["callee"], cdr["answered"]) == (CALLER, CALLEE, True), cdr
    assert cdr["released_by"] == "caller", cdr
