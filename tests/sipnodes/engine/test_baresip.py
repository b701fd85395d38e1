"""Interop: baresip (a real phone) registers and calls a SIPp callee through the worker."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from tests.support import free_port, require_tool, stop_process, wait_until

from .baresip import BARESIP_CONFIG, ctrl, spaced_port
from .processes import event_states, stream_events

pytestmark = pytest.mark.e2e


@pytest.fixture
def baresip(tmp_path: Path):
    binary = require_tool("baresip", "baresip-core")
    procs: list[subprocess.Popen[bytes]] = []

    def start(account: str) -> tuple[subprocess.Popen[bytes], int]:
        home = tmp_path / "baresip"
        home.mkdir()
        ctrl_port = free_port()
        rtp = free_port()
        (home / "config").write_text(
            BARESIP_CONFIG.format(
                sip_port=spaced_port(), ctrl_port=ctrl_port, rtp=rtp, rtp_end=rtp + 20
            )
        )
        (home / "accounts").write_text(account + "\n")
        log = (tmp_path / "baresip.log").open("wb")
        proc = subprocess.Popen(
            [binary, "-f", str(home)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        procs.append(proc)
        return proc, ctrl_port

    yield start
    for proc in procs:
        stop_process(proc)


def test_baresip_registers_and_calls_a_sipp_callee(start_worker, sipp, baresip, redis_client):
    # baresip 1.0 (Debian 12) gives up on a SHA-256 challenge ("Function not implemented"),
    # so this server offers MD5 only; see config.AuthOptions.
    worker = start_worker(auth={"algorithms": ["MD5"]})
    uas_port = sipp.register(worker.port, [("101", "pw101")])
    uas = sipp.start_uas("uas_answer.xml", uas_port)
    account = f"<sip:100@127.0.0.1:{worker.port};transport=udp>;auth_pass=pw100;regint=600"
    proc, ctrl_port = baresip(account + ";answermode=manual")

    def registered():
        return [
            e
            for e in stream_events(redis_client, worker.server_id, "registration")
            if e["data"]["user"] == "100"
        ]

    assert wait_until(registered, 10.0), worker.log()[-3000:]
    assert wait_until(lambda: _can_connect(ctrl_port), 5.0)
    with socket.create_connection(("127.0.0.1", ctrl_port), timeout=5) as sock:
        ctrl(sock, "dial", f"sip:101@127.0.0.1:{worker.port}")

        assert wait_until(
            lambda: "answered" in event_states(redis_client, worker.server_id, "call"), 10.0
        ), worker.log()[-3000:]
        ctrl(sock, "hangup")
        assert wait_until(lambda: stream_events(redis_client, worker.server_id, "cdr"), 10.0)
    assert sipp.wait(uas) == 0
    [cdr] = [e["data"] for e in stream_events(redis_client, worker.server_id, "cdr")]
    assert cdr["caller"] == "100" and cdr["callee"] == "101" and cdr["answered"] is True
    assert cdr["fci"] == "callTag=1;cause=16" and cdr["released_by"] == "caller"


def _can_connect(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False
