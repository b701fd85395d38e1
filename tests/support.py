"""Helpers every end-to-end test uses: tools, free ports, bounded waits, processes, SIP probes.

Everything listens on 127.0.0.1 on ports picked at run time; every wait is bounded.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
TCP_LISTEN = "0A"  # the state column of /proc/net/tcp


def on_ci() -> bool:
    """True where the CI runs the suite (`CI=true`, as `.ci/run` and most CI services set)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def missing(reason: str) -> NoReturn:
    """Skip a test whose tool or service is absent here; fail it on CI.

    A developer's machine may lack SIPp or Chromium; CI installs everything, so
    a skip there would only hide end-to-end tests that never ran.
    """
    if on_ci():
        pytest.fail(f"{reason} (CI=true: a missing tool or service fails the run)", pytrace=False)
    pytest.skip(reason)


def require_tool(name: str, package: str) -> str:
    """The path of the executable `name`, or `missing()` naming the package that brings it."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (Debian package {package})")
    return path


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        port = random.randint(20000, 59000)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            udp.bind(("127.0.0.1", port))
            tcp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            udp.close()
            tcp.close()
    raise RuntimeError("no free port")


def options_ping(port: int, timeout: float = 0.3) -> bytes | None:
    """Send OPTIONS over UDP; the response bytes, or None."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.bind(("127.0.0.1", 0))
        lport = s.getsockname()[1]
        branch = "z9hG4bK" + os.urandom(6).hex()
        msg = (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch};rport\r\n"
            f"From: <sip:probe@127.0.0.1>;tag={os.urandom(4).hex()}\r\n"
            f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: {os.urandom(8).hex()}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        s.sendto(msg, ("127.0.0.1", port))
        return s.recvfrom(65535)[0]
    except OSError:
        return None
    finally:
        s.close()


class _Socket(NamedTuple):
    """One IPv4 socket as /proc/net/tcp or /proc/net/udp shows it."""

    port: int
    peer_port: int
    state: str
    unacknowledged: int  # bytes sent and not yet acknowledged by the peer's kernel
    unread: int  # bytes received and not yet read by the owning process


def _sockets(kind: str) -> list[_Socket]:
    sockets = []
    for line in Path(f"/proc/net/{kind}").read_text().splitlines()[1:]:
        _slot, local, remote, state, queues = line.split()[:5]
        tx, rx = queues.split(":")
        port, peer_port = (int(a.rsplit(":", 1)[1], 16) for a in (local, remote))
        sockets.append(_Socket(port, peer_port, state, int(tx, 16), int(rx, 16)))
    return sockets


def listening(port: int) -> bool:
    """A UDP socket is bound to `port` or a TCP socket listens on it (IPv4, any address).

    Read from /proc rather than probed with bind(): a probe could take the port
    from the very process about to bind it.
    """
    return any(s.port == port for s in _sockets("udp")) or any(
        s.port == port and s.state == TCP_LISTEN for s in _sockets("tcp")
    )


def wait_read_by_peer(sock: socket.socket, timeout: float = 5.0) -> None:
    """Wait until the process at the other end of loopback TCP `sock` has read all it was sent.

    From the kernel's counts: first none of our bytes is unacknowledged (all
    arrived), then none is unread in the peer's receive queue.
    """
    port, peer = sock.getsockname()[1], sock.getpeername()[1]

    def side(local: int, remote: int) -> _Socket | None:
        return next((s for s in _sockets("tcp") if (s.port, s.peer_port) == (local, remote)), None)

    def arrived() -> bool:
        ours = side(port, peer)
        return ours is not None and ours.unacknowledged == 0

    def read() -> bool:
        theirs = side(peer, port)
        return theirs is not None and theirs.unread == 0

    wait_for(arrived, timeout, "the peer to receive our bytes")
    wait_for(read, timeout, "the peer to read our bytes")


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> Any:
    """The predicate's first true value, polled every `interval`; its last value on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Like `wait_until`, but fail the test after `timeout` seconds, saying what was awaited."""
    if not wait_until(predicate, timeout, 0.1):
        pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def run_script(name: str, env: dict[str, str], *args: str, timeout: float = 60) -> str:
    """Run a `platform/bin` script; its stdout, or RuntimeError with everything it printed."""
    result = subprocess.run(
        [str(ROOT / "platform" / "bin" / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed: {result.stdout}{result.stderr}")
    return result.stdout
