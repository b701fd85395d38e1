"""Helpers every end-to-end test uses: free ports, bounded waits, processes, SIP probes.

Everything listens on 127.0.0.1 on ports picked at run time; every wait is bounded.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")


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


def wait_until(predicate: Any, timeout: float, interval: float = 0.05) -> Any:
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
