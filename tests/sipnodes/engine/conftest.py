"""Fixtures for engine tests that run real processes: workers, SIPp, Redis.

Everything listens on 127.0.0.1 on ports picked at run time; every process
started is stopped here; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from sipnodes.engine.events import STREAM_KEY
from sipnodes.engine.location import location_key

from .helpers import config_dict

ROOT = Path(__file__).resolve().parents[3]
SIPP_DIR = Path(__file__).parent / "sipp"
REDIS_URL = os.environ.get("ENGINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


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


class WorkerProcess:
    def __init__(self, tmp: Path, redis_url: str, **overrides: Any) -> None:
        self.port = free_port()
        self.server_id = random.randint(1_000_000, 9_999_999)
        self.data = config_dict(**overrides)
        self.data["server_id"] = self.server_id
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
        if not wait_until(lambda: options_ping(self.port), 10.0):
            self.stop()
            raise RuntimeError(f"worker did not answer OPTIONS:\n{self.log()}")
        return self

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


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"redis not reachable at {REDIS_URL}")
    yield client
    client.close()


def stream_events(client: redis.Redis, server_id: int, type_: str | None = None) -> list[dict]:
    out = []
    for _id, fields in client.xrange(STREAM_KEY, "-", "+"):
        f = {k.decode(): v.decode() for k, v in fields.items()}
        if f["server_id"] != str(server_id) or (type_ and f["type"] != type_):
            continue
        f["data"] = json.loads(f["data"])
        out.append(f)
    return out


def wait_events(
    client: redis.Redis, server_id: int, type_: str, count: int = 1, timeout: float = 5.0
) -> list[dict]:
    """At least `count` events of `type_` (the worker writes them asynchronously)."""
    wait_until(lambda: len(stream_events(client, server_id, type_)) >= count, timeout)
    return stream_events(client, server_id, type_)


def cleanup_server(client: redis.Redis, server_id: int) -> None:
    ids = [
        entry_id
        for entry_id, fields in client.xrange(STREAM_KEY, "-", "+")
        if fields.get(b"server_id") == str(server_id).encode()
    ]
    if ids:
        client.xdel(STREAM_KEY, *ids)
    client.delete(location_key(server_id), f"sipcloud:vs:{server_id}:calls")


@pytest.fixture
def start_worker(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Any]:
    workers: list[WorkerProcess] = []

    def start(redis_url: str = REDIS_URL, **overrides: Any) -> WorkerProcess:
        w = WorkerProcess(tmp_path, redis_url, **overrides)
        workers.append(w)
        return w.start()

    yield start
    for w in workers:
        w.stop()
        cleanup_server(redis_client, w.server_id)


class Sipp:
    """Runs SIPp scenarios from tests/sipnodes/engine/sipp; stops what it started."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.background: list[subprocess.Popen[bytes]] = []
        self.count = 0

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
            "127.0.0.1",
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
        n = self.count
        text = ""
        for suffix in ("log", "err"):
            p = self.tmp / f"sipp{n}.{suffix}"
            if p.exists():
                text += p.read_text(errors="replace")
        return proc.returncode, text

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
        return proc

    def start_uas(
        self, scenario: str, port: int, extra: list[str] | None = None, calls: int = 1
    ) -> subprocess.Popen[bytes]:
        args = self._args(scenario, port, None, ["-m", str(calls)] + (extra or []))
        proc = subprocess.Popen(
            args, cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.background.append(proc)
        time.sleep(0.2)
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
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    if shutil.which("sipp") is None:
        pytest.skip("sipp not installed")
    runner = Sipp(tmp_path)
    yield runner
    runner.stop_all()


class ThrowawayRedis:
    """A private redis-server on a free loopback port (AOF on, so it can be stopped
    and started again with its data); never the shared one."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp / f"redis-{self.port}"
        self.dir.mkdir()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> ThrowawayRedis:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_timeout=1)

        def ready() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        ok = wait_until(ready, 10.0)
        client.close()
        if not ok:
            raise RuntimeError("throwaway redis-server did not start")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[ThrowawayRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed")
    server = ThrowawayRedis(tmp_path).start()
    yield server
    server.stop()
