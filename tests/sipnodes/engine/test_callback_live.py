"""The call-back port of a real worker: ACKs, the address filter, floods, port 0, reload.

The full call-back (two SIPp callees, the bridge, RESPONSE and CDR) is tested with
the B2BUA's part; these need only the port and the checks in front of the dialer.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipnodes.engine.callback import encode_signed, parse
from tests.support import ROOT, free_port, options_ping, wait_until

pytestmark = pytest.mark.e2e

SECRET = "a-shared-secret-of-the-test"


def udp(bind: str = "127.0.0.1", timeout: float = 2.0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    sock.bind((bind, 0))
    return sock


def exchange(port: int, data: bytes, bind: str = "127.0.0.1", timeout: float = 2.0):
    """The fields of the worker's answer to `data`, or None if none came."""
    with udp(bind, timeout) as sock:
        sock.sendto(data, ("127.0.0.1", port))
        try:
            reply = sock.recv(4096)
        except (TimeoutError, ConnectionRefusedError):
            return None
    message = parse(reply)
    return {"method": message.method, **message.fields}


def worker_udp_ports(pid: int) -> set[int]:
    """The local ports of the UDP sockets process `pid` holds (IPv4)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[9] in inodes:
            ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def test_a_malformed_datagram_gets_an_ack_saying_why(callback_worker):
    worker = callback_worker()
    answer = exchange(worker.callback_port, b"REQUEST: callid=c1;callee1=1x;callee2=101")
    assert answer == {
        "method": "ACK",
        "callid": "c1",
        "result": "2",
        "reason": "callee1 is not a number",
    }
    assert exchange(worker.callback_port, b"\x00\x01binary")["result"] == "1"
    assert exchange(worker.callback_port, b"CANCEL: callid=c1")["result"] == "5"


def test_a_datagram_from_another_address_gets_nothing(callback_worker):
    worker = callback_worker()
    assert exchange(worker.callback_port, b"CANCEL: callid=c1", bind="127.0.0.2") is None
    assert exchange(worker.callback_port, b"garbage", bind="127.0.0.2", timeout=0.5) is None
    assert exchange(worker.callback_port, b"CANCEL: callid=c1")["result"] == "5"


FUZZ = (
    st.binary(max_size=1600)
    | st.text(max_size=300).map(lambda t: b"REQUEST: " + t.encode())
    | st.text(max_size=300).map(lambda t: b"CANCEL: callid=" + t.encode())
)


def test_fuzz_the_live_port(callback_worker):
    worker = callback_worker()

    # Paced under the AS's rate limit, so that every datagram is parsed and answered.
    @settings(max_examples=60, deadline=None, database=None)
    @given(FUZZ)
    def answered(data: bytes) -> None:
        answer = exchange(worker.callback_port, data)
        assert answer is not None and answer["method"] == "ACK"
        assert answer["result"] != "0" and answer["reason"]
        time.sleep(0.1)

    answered()
    assert options_ping(worker.port)
    assert "error handling a call-back" not in worker.log() and worker.proc.poll() is None


def test_after_fuzz_and_flood_sip_is_still_served(callback_worker):
    worker = callback_worker()
    with udp() as sock:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 2.0:  # as fast as one socket can send
            for _ in range(100):
                sock.sendto(
                    os.urandom(64) + b"REQUEST: callid=x", ("127.0.0.1", worker.callback_port)
                )
                sent += 1
            if sent % 2000 == 0:
                # SIP answers in the middle of the flood.
                assert options_ping(worker.port, timeout=1.0), f"no OPTIONS answer after {sent}"
    assert options_ping(worker.port)
    assert "error handling a call-back" not in worker.log()
    assert worker.proc.poll() is None
    # The flood was the AS's own address: it is rate limited, then served again.
    assert wait_until(
        lambda: (exchange(worker.callback_port, b"CANCEL: callid=z") or {}).get("result") == "5",
        5.0,
    )


def test_port_zero_opens_nothing(start_worker):
    worker = start_worker()  # the test config's callback_port is 0
    assert worker_udp_ports(worker.proc.pid) == {worker.port}
    assert "call-back service listening" not in worker.log()


def test_a_new_port_and_address_apply_at_reload_without_a_restart(callback_worker, sipp):
    worker = callback_worker()
    old = worker.callback_port
    sipp.register(worker.port, [("100", "pw100")])
    new = free_port()
    worker.write_config(
        listen={**worker.data["listen"], "callback_port": new},
        callback={**worker.data["callback"], "app_server_address": "127.0.0.2"},
    )
    pid = worker.proc.pid
    worker.signal(signal.SIGHUP)
    assert wait_until(lambda: f"call-back port {old} closed" in worker.log(), 5.0), worker.log()
    assert wait_until(lambda: new in worker_udp_ports(pid), 5.0)
    assert old not in worker_udp_ports(pid)
    assert exchange(new, b"CANCEL: callid=c1", bind="127.0.0.2")["result"] == "5"
    assert exchange(new, b"CANCEL: callid=c1", timeout=0.5) is None  # 127.0.0.1 no longer
    assert exchange(old, b"CANCEL: callid=c1", bind="127.0.0.2", timeout=0.5) is None
    # Closing it again (port 0) leaves SIP as it was.
    worker.write_config(listen={**worker.data["listen"], "callback_port": 0})
    worker.signal(signal.SIGHUP)
    assert wait_until(lambda: worker_udp_ports(pid) == {worker.port}, 5.0)
    assert worker.proc.pid == pid and options_ping(worker.port)
    assert "restored registrations" not in worker.log()


def client(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sipnodes.callback_client", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, **(env or {})},
    )


def test_the_client_prints_the_ack(callback_worker):
    worker = callback_worker()
    port = str(worker.callback_port)
    done = client("--port", port, "--callid", "k1", "--callee1", "10a", "--callee2", "101")
    assert done.returncode == 1, done.stderr
    assert done.stdout == "ACK: callid=k1;result=2;reason=callee1%20is%20not%20a%20number\n"
    done = client("--port", port, "--cancel", "k1")
    assert (done.returncode, done.stdout) == (
        1,
        "ACK: callid=k1;result=5;reason=no%20call-back%20with%20this%20callid\n",
    )
    done = client("--port", str(free_port()), "--cancel", "k1", "--timeout", "0.5")
    assert done.returncode == 3


def test_the_client_waits_for_the_response(callback_worker):
    worker = callback_worker()
    # Nobody is registered as 100: the call-back fails at once, and says so.
    done = client(
        "--port",
        str(worker.callback_port),
        "--callid",
        "k2",
        "--callee1",
        "100",
        "--callee2",
        "101",
        "--wait",
        "10",
    )
    ack_line, response_line = done.stdout.splitlines()
    assert ack_line == "ACK: callid=k2;result=0"
    ended = parse(response_line.encode()).fields
    assert (ended["callid"], ended["result"], ended["answer1"]) == ("k2", "20", "")
    assert done.returncode == 0


def test_the_client_signs_with_the_secret(callback_worker):
    worker = callback_worker(secret=SECRET)
    port = str(worker.callback_port)
    done = client("--port", port, "--cancel", "k1", env={"SIPCLOUD_CALLBACK_SECRET": SECRET})
    assert "result=5" in done.stdout  # signed and fresh: the worker looked the callid up
    done = client("--port", port, "--cancel", "k1", "--secret", "not-the-secret-at-all")
    assert "result=6;reason=sig%20does%20not%20match" in done.stdout
    assert "result=6;reason=sig%20missing" in client("--port", port, "--cancel", "k1").stdout
    stale = encode_signed("CANCEL", [("callid", "k1"), ("ts", "1000")], SECRET.encode())
    assert exchange(worker.callback_port, stale)["result"] == "7"
    assert SECRET not in worker.log()
