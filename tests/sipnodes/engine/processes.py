"""Real processes for engine tests: a worker (`python -m sipnodes.engine`) and SIPp.

Every process started is stopped by its owner; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import redis

from sipnodes.engine.events import STREAM_KEY, live_calls_key
from sipnodes.engine.location import location_key
from tests.support import (
    ROOT,
    free_port,
    listening,
    options_ping,
    stop_process,
    wait_for,
    wait_until,
)

from .helpers import config_dict

SIPP_DIR = Path(__file__).parent / "sipp"
REDIS_URL = os.environ.get("ENGINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


class WorkerProcess:
    def __init__(self, tmp: Path, redis_url: str, **overrides: Any) -> None:
        self.port = free_port()
        self.server_id = random.randint(1_000_000, 9_999_999)
        self.data = config_dict(**overrides)
        self.server_uid = str(uuid.uuid4())
        self.data["server_id"] = self.server_id
        self.data["server_uid"] = self.server_uid
        self.data["listen"]["sip_port"] = self.port
        self.data["redis_url"] = redis_url
        self.data["spool_dir"] = str(tmp / f"spool-{self.server_id}")
        self.config_path = tmp / f"vs{self.server_id}.json"
        self.log_path = tmp / f"vs{self.server_id}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.write_config()

    def write_config(self, **changes: Any) -> None:
        self.data.update(changes)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.config_path)

    def start(self) -> WorkerProcess:
        """Start and wait for OPTIONS; a port taken since `free_port` picked it gets another."""
        for _ in range(3):
            self._spawn()
            answered = wait_until(lambda: options_ping(self.port) or self._lost_the_port(), 10.0)
            if answered and not self._lost_the_port():
                return self
            if not self._lost_the_port():
                break
            self.port = free_port()
            self.write_config(listen={**self.data["listen"], "sip_port": self.port})
        self.stop()
        raise RuntimeError(f"worker did not answer OPTIONS:\n{self.log()}")

    def _lost_the_port(self) -> bool:
        assert self.proc is not None
        return self.proc.poll() is not None and "cannot listen" in self.log()[self._log_from :]

    def _spawn(self) -> None:
        self._log_from = len(self.log())
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sipnodes.engine",
                "--config",
                str(self.config_path),
                "--log-level",
                "DEBUG",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        rc = self.proc.returncode
        self.proc = None
        return rc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def stream_events(client: redis.Redis, server_id: int, type_: str | None = None) -> list[dict]:
    out = []
    for _id, fields in client.xrange(STREAM_KEY, "-", "+"):
        f = {k.decode(): v.decode() for k, v in fields.items()}
        if f["server_id"] != str(server_id) or (type_ and f["type"] != type_):
            continue
        f["data"] = json.loads(f["data"])
        out.append(f)
    return out


def event_states(client: redis.Redis, server_id: int, type_: str) -> list[str]:
    """The `state` of each `call` or `status` event of a worker, oldest first."""
    return [e["data"]["state"] for e in stream_events(client, server_id, type_)]


def wait_events(
    client: redis.Redis, server_id: int, type_: str, count: int = 1, timeout: float = 5.0
) -> list[dict]:
    """At least `count` events of `type_` (the worker writes them asynchronously)."""
    wait_until(lambda: len(stream_events(client, server_id, type_)) >= count, timeout)
    return stream_events(client, server_id, type_)


def cleanup_server(client: redis.Redis, server_id: int, server_uid: str) -> None:
    ids = [
        entry_id
        for entry_id, fields in client.xrange(STREAM_KEY, "-", "+")
        if fields.get(b"server_id") == str(server_id).encode()
    ]
    if ids:
        client.xdel(STREAM_KEY, *ids)
    client.delete(location_key(server_uid), live_calls_key(server_uid))


class Sipp:
    """Runs SIPp scenarios from tests/sipnodes/engine/sipp; stops what it started."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.background: list[subprocess.Popen[bytes]] = []
        self.count = 0
        self.runs: dict[int, int] = {}  # a background SIPp's pid -> the number of its files
        self.local_ip = "127.0.0.1"  # the address SIPp's phones send from

    def _args(self, scenario: str, port: int, target: str | None, extra: list[str]) -> list[str]:
        self.count += 1
        n = self.count
        args = ["sipp"]
        if target:
            args.append(target)
        args += [
            "-sf",
            str(SIPP_DIR / scenario),
            "-i",
            self.local_ip,
            "-p",
            str(port),
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(self.tmp / f"sipp{n}.err"),
            "-trace_logs",
            "-log_file",
            str(self.tmp / f"sipp{n}.log"),
            "-trace_msg",
            "-message_file",
            str(self.tmp / f"sipp{n}.msg"),
            "-timeout",
            "15s",
            "-timeout_error",
        ]
        return args + extra

    def users_csv(self, users: list[tuple[str, str]]) -> Path:
        self.count += 1
        path = self.tmp / f"users{self.count}.csv"
        lines = ["SEQUENTIAL"] + [
            f"{u};[authentication username={u} password={p}]" for u, p in users
        ]
        path.write_text("\n".join(lines) + "\n")
        return path

    def run(
        self,
        scenario: str,
        server_port: int,
        users: list[tuple[str, str]],
        port: int | None = None,
        extra: list[str] | None = None,
        timeout: float = 20.0,
    ) -> tuple[int, str]:
        csv = self.users_csv(users)
        args = self._args(
            scenario,
            port or free_port(),
            f"127.0.0.1:{server_port}",
            ["-inf", str(csv), "-m", str(len(users))] + (extra or []),
        )
        proc = subprocess.run(args, cwd=self.tmp, capture_output=True, timeout=timeout)
        return proc.returncode, self._output(self.count)

    def _output(self, n: int) -> str:
        """What run `n` logged (`<log>` actions) and its errors."""
        text = ""
        for suffix in ("log", "err"):
            p = self.tmp / f"sipp{n}.{suffix}"
            if p.exists():
                text += p.read_text(errors="replace")
        return text

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        """What a SIPp started in the background has logged so far, and its errors."""
        return self._output(self.runs[proc.pid])

    def register(
        self,
        server_port: int,
        users: list[tuple[str, str]],
        port: int | None = None,
        extra: list[str] | None = None,
        scenario: str = "register.xml",
    ) -> int:
        """Register `users` from `port` (a free one if not given), which is returned: a UAS
        started there takes the calls to them. The test fails if a registration does."""
        port = port or free_port()
        rc, out = self.run(scenario, server_port, users, port=port, extra=extra)
        assert rc == 0, out
        return port

    def start_uac(
        self, scenario: str, server_port: int, users: list[tuple[str, str]], extra: list[str]
    ) -> subprocess.Popen[bytes]:
        csv = self.users_csv(users)
        args = self._args(
            scenario,
            free_port(),
            f"127.0.0.1:{server_port}",
            ["-inf", str(csv), "-m", str(len(users))] + extra,
        )
        proc = subprocess.Popen(
            args, cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.background.append(proc)
        self.runs[proc.pid] = self.count
        return proc

    def start_uas(
        self, scenario: str, port: int, extra: list[str] | None = None, calls: int = 1
    ) -> subprocess.Popen[bytes]:
        args = self._args(scenario, port, None, ["-m", str(calls)] + (extra or []))
        proc = subprocess.Popen(
            args, cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.background.append(proc)
        self.runs[proc.pid] = self.count
        wait_for(lambda: listening(port), 10, f"SIPp ({scenario}) to listen on port {port}")
        return proc

    def wait(self, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            return -9

    def stop_all(self) -> None:
        for proc in self.background:
            stop_process(proc)
