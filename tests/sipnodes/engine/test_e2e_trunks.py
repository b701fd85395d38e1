"""End to end: a worker's trunk against Kamailio, a real registrar and proxy nobody here wrote.

Kamailio runs `kamailio/kamailio.cfg` (accounts in an htable, location in memory, every
REGISTER and INVITE challenged) in the foreground on 127.0.0.1 and a free port. The
worker's trunk 1 points at it with account 8001; SIPp plays the phones on both sides.
What Kamailio did is read from its log (lines starting "itsp:") and its location from
`kamcmd ul.lookup`; what the worker did, from its events in Redis.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import free_port, listening, require_tool, stop_process, wait_until

from .processes import stream_events, wait_events

pytestmark = pytest.mark.e2e

KAMAILIO_CFG = Path(__file__).parent / "kamailio" / "kamailio.cfg"
TRUNK_USER, TRUNK_PASSWORD = "8001", "trunk-secret"  # as in kamailio.cfg
OUTSIDE_CALLEE = ("5551234", "pw5551234")  # a phone registered at Kamailio
OUTSIDE_CALLER = ("5559876", "pw5559876")  # a phone calling the worker's DID through Kamailio


class Kamailio:
    """One Kamailio process on 127.0.0.1:`port`; its run directory holds the ctl socket."""

    def __init__(self, run_dir: Path, record_route: bool = False) -> None:
        self.record_route = record_route
        self.run_dir = run_dir  # short: a Unix socket's path must fit in 108 bytes
        self.ctl = f"unix:{run_dir}/ctl"
        self.log_path = run_dir / "kamailio.log"
        self.kamcmd = require_tool("kamcmd", "kamailio")
        self.binary = require_tool("kamailio", "kamailio")
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Kamailio:
        for _ in range(3):  # a port taken since free_port() picked it: another one
            self.port = free_port()
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    *("-f", str(KAMAILIO_CFG), "-DD", "-E"),
                    *("-l", f"udp:127.0.0.1:{self.port}"),
                    *("-Y", str(self.run_dir), "-w", str(self.run_dir)),
                    *("-A", f'CTL_SOCKET="{self.ctl}"', "-A", "WITH_TRACE"),
                    *("-m", "32", "-M", "4"),
                    *(("-A", "WITH_RR") if self.record_route else ()),
                ],
                stdout=self.log_path.open("ab"),
                stderr=subprocess.STDOUT,
            )
            ready = wait_until(
                lambda: (
                    self.proc.poll() is not None
                    or (listening(self.port) and Path(self.ctl[5:]).exists())
                ),
                10.0,
            )
            if ready and self.proc.poll() is None:
                return self
            stop_process(self.proc)
        raise RuntimeError(f"kamailio did not start:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        stop_process(self.proc, 5.0)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def lines(self, pattern: str) -> list[str]:
        """The "itsp:" lines of its log that match `pattern` (a regex)."""
        return [
            line
            for line in self.log().splitlines()
            if "itsp: " in line and re.search(pattern, line.split("itsp: ", 1)[1])
        ]

    def registers_from(self, port: int) -> int:
        """How many REGISTERs arrived from 127.0.0.1:`port`."""
        return len(self.lines(rf"^REGISTER from 127\.0\.0\.1:{port} "))

    def contacts(self, aor: str) -> list[str]:
        """The contacts its location holds for `aor` (none: the AoR is not found)."""
        out = subprocess.run(
            [self.kamcmd, "-s", self.ctl, "ul.lookup", "location", f"s:{aor}"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        return re.findall(r"Address: (\S+)", out.stdout)


def running_kamailio(record_route: bool) -> Iterator[Kamailio]:
    run_dir = Path(tempfile.mkdtemp(prefix="kam-", dir="/tmp"))
    kam = Kamailio(run_dir, record_route)
    try:
        yield kam.start()
    finally:
        kam.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


# A test asks for Kamailio before `start_worker`, so that Kamailio outlives the worker:
# the worker's un-REGISTER at SIGTERM then gets an answer instead of its 3 s stop grace.


@pytest.fixture
def kamailio() -> Iterator[Kamailio]:
    """Kamailio as a proxy that does not record-route."""
    yield from running_kamailio(record_route=False)


@pytest.fixture
def rr_kamailio() -> Iterator[Kamailio]:
    """Kamailio record-routing calls, as its default config does."""
    yield from running_kamailio(record_route=True)


def trunk_to(kam: Kamailio, password: str = TRUNK_PASSWORD) -> dict[str, Any]:
    """Trunk 1 to Kamailio: registers as 8001; calls to 8001 ring local user 101."""
    return {
        "id": 1,
        "name": "kamailio",
        "address": "127.0.0.1",
        "port": kam.port,  # Kamailio sends from its listening socket: calls in are trusted
        "transport": "UDP",
        "registration": {"user": TRUNK_USER, "password": password, "expires": 120},
        "caller_id": "",
        "dids": {TRUNK_USER: "101"},
        "default_user": "",
    }


OUT_BY_TRUNK = [{"prefix": "0", "route": "sip_trunk", "trunk": 1, "strip": 1}]


def start_trunked_worker(start_worker, kam: Kamailio, **trunk: Any):
    return start_worker(trunks=[trunk_to(kam, **trunk)], dial_plan=OUT_BY_TRUNK)


def trunk_events(redis_client, worker, count: int = 1, timeout: float = 5.0) -> list[dict]:
    events = wait_events(redis_client, worker.server_id, "trunk", count, timeout)
    return [e["data"] for e in events]


def registered(redis_client, worker, kam: Kamailio) -> None:
    """Wait until the worker says trunk 1 is registered and Kamailio holds its contact."""
    contact = f"sip:{TRUNK_USER}@127.0.0.1:{worker.port}"
    events = trunk_events(redis_client, worker)
    assert events and events[-1]["state"] == "registered", (
        f"trunk events {events}\n{kam.log()[-4000:]}\n{worker.log()[-3000:]}"
    )
    assert wait_until(lambda: contact in kam.contacts(TRUNK_USER), 3.0), kam.log()[-4000:]


def the_cdr(redis_client, worker) -> dict:
    events = wait_events(redis_client, worker.server_id, "cdr")
    assert len(events) == 1, f"expected one CDR, got {events}\n{worker.log()[-3000:]}"
    return events[0]["data"]


# ---- registration ------------------------------------------------------------------


def test_the_worker_registers_at_kamailio_answering_its_challenge(
    kamailio, start_worker, redis_client
):
    worker = start_trunked_worker(start_worker, kamailio)
    registered(redis_client, worker, kamailio)
    [event] = trunk_events(redis_client, worker)
    assert event["trunk"] == 1 and event["reason"] == "" and event["next_attempt"] is None
    assert abs(event["attempt"] - time.time()) < 30
    # The first REGISTER had no credentials, was challenged (401), the second passed.
    registers = kamailio.lines(rf"^REGISTER from 127\.0\.0\.1:{worker.port} ")
    assert [line.rsplit("auth=", 1)[1] for line in registers] == ["<null>", TRUNK_USER]
    assert kamailio.lines(rf"^registered {TRUNK_USER} at <sip:{TRUNK_USER}@127\.0\.0\.1:")


def test_stopping_the_worker_unregisters_at_kamailio(kamailio, start_worker, redis_client):
    worker = start_trunked_worker(start_worker, kamailio)
    registered(redis_client, worker, kamailio)
    port = worker.port
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(10) == 0
    unregistered = wait_until(lambda: kamailio.contacts(TRUNK_USER) == [], 3.0)
    assert unregistered, (
        "the worker's unregistering REGISTER (Expires: 0) at SIGTERM must answer Kamailio's "
        "401 like any other, or the contact stays at the upstream until it expires. "
        f"REGISTERs from the worker: {kamailio.registers_from(port)}; "
        f"contacts left: {kamailio.contacts(TRUNK_USER)}\n"
        + "\n".join(kamailio.lines(rf"from 127\.0\.0\.1:{port}\b"))
    )


def test_a_wrong_password_is_failing_and_not_retried_before_the_backoff(
    kamailio, start_worker, redis_client
):
    started = time.monotonic()
    worker = start_trunked_worker(start_worker, kamailio, password="not-the-password")
    [event] = trunk_events(redis_client, worker)
    assert event["state"] == "failing", event
    assert re.match(r"40[13] ", event["reason"]), event
    assert event["next_attempt"] == pytest.approx(event["attempt"] + 30, abs=2)
    assert kamailio.contacts(TRUNK_USER) == []
    assert kamailio.lines(r"^refused REGISTER from .* user 8001 \(check -2\)")  # bad password
    # Ten seconds: the REGISTER and its one answer to the challenge, nothing more.
    time.sleep(max(0.0, 10.0 - (time.monotonic() - started)))
    assert kamailio.registers_from(worker.port) == 2, kamailio.lines("REGISTER")
    assert [e["state"] for e in trunk_events(redis_client, worker)] == ["failing"]


# ---- calls -------------------------------------------------------------------------


def test_a_call_out_through_kamailio_answers_its_407(kamailio, start_worker, sipp, redis_client):
    worker = start_trunked_worker(start_worker, kamailio)
    registered(redis_client, worker, kamailio)
    # The outside phone registers at Kamailio and answers there.
    callee_port = sipp.register(kamailio.port, [OUTSIDE_CALLEE])
    callee = sipp.start_uas("uas_answer.xml", callee_port)
    rc, out = sipp.run(
        "uac_call.xml", worker.port, [("100", "pw100")], extra=["-s", "0" + OUTSIDE_CALLEE[0]]
    )
    assert rc == 0 and sipp.wait(callee) == 0, (
        f"{out}\n{sipp.output(callee)}\n{kamailio.log()[-6000:]}\n{worker.log()[-4000:]}"
    )
    # Kamailio challenged the worker's INVITE, then took the one with the trunk's account.
    invites = kamailio.lines(rf"^INVITE from 127\.0\.0\.1:{worker.port} ")
    assert [line.rsplit("auth=", 1)[1] for line in invites] == ["<null>", TRUNK_USER]
    assert f"ruri=sip:{OUTSIDE_CALLEE[0]}@127.0.0.1:{kamailio.port}" in invites[0]
    assert kamailio.lines(rf"^INVITE for {OUTSIDE_CALLEE[0]} relayed to sip:.*:{callee_port}$")
    cdr = the_cdr(redis_client, worker)
    assert cdr["route"] == "sip_trunk" and "trunk=1" in cdr["fci"].split(";"), cdr
    assert cdr["caller"] == "100" and cdr["dialed"] == "0" + OUTSIDE_CALLEE[0]
    assert cdr["callee"] == OUTSIDE_CALLEE[0]
    assert cdr["answered"] is True and cdr["status"] == 200 and cdr["released_by"] == "caller"


def test_a_call_in_through_kamailio_rings_the_did_s_user(
    kamailio, start_worker, sipp, redis_client
):
    worker = start_trunked_worker(start_worker, kamailio)
    registered(redis_client, worker, kamailio)
    user_port = sipp.register(worker.port, [("101", "pw101")])
    user = sipp.start_uas("uas_answer.xml", user_port)
    # The outside caller dials 8001 at Kamailio, which finds the worker's registration.
    rc, out = sipp.run("uac_call.xml", kamailio.port, [OUTSIDE_CALLER], extra=["-s", TRUNK_USER])
    assert rc == 0 and sipp.wait(user) == 0, (
        f"{out}\n{sipp.output(user)}\n{kamailio.log()[-6000:]}\n{worker.log()[-4000:]}"
    )
    assert kamailio.lines(
        rf"^INVITE for {TRUNK_USER} relayed to sip:{TRUNK_USER}@127\.0\.0\.1:{worker.port}$"
    )
    cdr = the_cdr(redis_client, worker)
    assert cdr["route"] == "sip_trunk" and "trunk=1" in cdr["fci"].split(";"), cdr
    assert cdr["caller"] == OUTSIDE_CALLER[0] and cdr["dialed"] == TRUNK_USER
    assert cdr["callee"] == "101" and cdr["answered"] is True and cdr["status"] == 200
    assert stream_events(redis_client, worker.server_id, "registration")  # 101, at the worker


# ---- behind a record-routing proxy ------------------------------------------------


def received_200(sipp) -> str:
    """The first 200 to an INVITE in the message trace of SIPp's last run."""
    text = (sipp.tmp / f"sipp{sipp.count}.msg").read_text(errors="replace")
    for block in text.split("\n\n"):
        if "SIP/2.0 200" in block and re.search(r"CSeq: *\d+ INVITE", block):
            return block
    return ""


def test_a_call_out_follows_kamailio_s_record_route(rr_kamailio, start_worker, sipp, redis_client):
    kam = rr_kamailio
    worker = start_trunked_worker(start_worker, kam)
    registered(redis_client, worker, kam)
    callee_port = sipp.register(kam.port, [OUTSIDE_CALLEE])
    callee = sipp.start_uas("uas_answer_rr.xml", callee_port)
    rc, out = sipp.run(
        "uac_call.xml", worker.port, [("100", "pw100")], extra=["-s", "0" + OUTSIDE_CALLEE[0]]
    )
    assert rc == 0, f"{out}\n{kam.log()[-6000:]}\n{worker.log()[-4000:]}"
    assert the_cdr(redis_client, worker)["answered"] is True
    # The callee's 200 came back to the worker with Kamailio's Record-Route in it ...
    assert re.search(rf"\nRecord-Route: <sip:127\.0\.0\.1:{kam.port};lr", kam.log()), kam.log()
    # ... so the worker's ACK and BYE reach the callee only with a Route to Kamailio.
    callee_rc = sipp.wait(callee, timeout=3.0)
    refused = kam.lines(rf"^in-dialog \w+ from 127\.0\.0\.1:{worker.port} without our Route")
    assert callee_rc == 0 and not refused, (
        "the 200 OK from the trunk carried Record-Route: the worker's ACK and BYE must carry "
        "it as Route (RFC 3261 section 12.1.2), or Kamailio drops the ACK and answers the "
        "BYE 404.\n" + "\n".join(kam.lines(rf"from 127\.0\.0\.1:({worker.port}|{callee_port})\b"))
    )


def test_a_call_in_answers_with_kamailio_s_record_route(
    rr_kamailio, start_worker, sipp, redis_client
):
    kam = rr_kamailio
    worker = start_trunked_worker(start_worker, kam)
    registered(redis_client, worker, kam)
    user_port = sipp.register(worker.port, [("101", "pw101")])
    sipp.start_uas("uas_answer.xml", user_port)
    rc, out = sipp.run("uac_call.xml", kam.port, [OUTSIDE_CALLER], extra=["-s", TRUNK_USER])
    ok = received_200(sipp)
    assert ok, f"the caller got no 200:\n{out}\n{kam.log()[-6000:]}\n{worker.log()[-4000:]}"
    assert "Record-Route:" in ok and rc == 0, (
        "the worker's 200 OK to the INVITE from the trunk must copy its Record-Route "
        "(RFC 3261 section 12.1.1), or the caller's ACK and BYE carry no Route and Kamailio "
        "drops the ACK and answers the BYE 404.\n"
        f"200 OK the caller got:\n{ok}\n" + "\n".join(kam.lines(r"^in-dialog|^reply"))
    )
