"""The event stream survives Redis being killed: every CDR of every completed call reaches
PostgreSQL exactly once (issue 17, point 7).

The Redis here runs with the platform's own settings (`platform/redis.conf`: append-only
file, `appendfsync always`), in a temp dir, on a free port, and is killed with SIGKILL,
as a crash or the OOM killer would: no shutdown, no final write. The machine's shared
Redis (6379) is never touched. A real worker carries SIPp calls while ingest is stopped;
after the kill, Redis is started again on the same files, and so is ingest.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from sipnodes.engine.events import STREAM_KEY
from sipnodes.ingest.consumer import GROUP
from tests.sipnodes.private_servers import PrivateRedis, manage, manage_env
from tests.sipnodes.test_pipeline_outages import make_calls, register_callee, server_worker
from tests.support import ROOT, free_port, require_tool, wait_for

pytestmark = pytest.mark.e2e

CALLS_PER_PHASE = 3
REDIS_CONF = ROOT / "platform" / "redis.conf"


class PlatformRedis(PrivateRedis):
    """A redis-server started with `platform/redis.conf`, that can be killed."""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary, str(REDIS_CONF),
                "--port", str(self.port), "--bind", "127.0.0.1", "--daemonize", "no",
                "--dir", str(self.root), "--logfile", str(self.root / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._ping, 15, f"redis-server on port {self.port}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.process = None


@pytest.fixture
def platform_redis() -> Iterator[PlatformRedis]:
    binary = require_tool("redis-server", "redis-server")
    root = Path(tempfile.mkdtemp(prefix="sipcloud-redis-aof-"))
    server = PlatformRedis(root, free_port(), binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pipeline(sipp, tmp_path, migrated_private_postgres, platform_redis) -> Iterator[dict]:
    env = manage_env(migrated_private_postgres.url, platform_redis.url)
    worker = server_worker(env, platform_redis.url, tmp_path)
    try:
        worker.start()
        yield {"worker": worker, "sipp": sipp, "pg": migrated_private_postgres,
               "redis": platform_redis, "env": env}  # fmt: skip
    finally:
        worker.stop()


def stream_cdr_ids(server: PlatformRedis) -> list[str]:
    try:
        with server.client() as client:
            entries = client.xrange(STREAM_KEY)
    except redis.RedisError:
        return []
    return [f[b"event_id"].decode() for _, f in entries if f[b"type"] == b"cdr"]


def database_cdr_ids(pipeline: dict) -> list[str]:
    with pipeline["pg"].connect() as conn:
        return [str(row[0]) for row in conn.execute("SELECT uuid FROM sipnodes_cdr").fetchall()]


def ingest_once(pipeline: dict) -> None:
    manage(pipeline["env"], "ingest_events", "--once")


def test_every_cdr_survives_redis_killed_with_sigkill(pipeline):
    assert "appendfsync always" in REDIS_CONF.read_text()
    server = pipeline["redis"]
    callee_port = register_callee(pipeline)
    make_calls(pipeline, callee_port)
    ingest_once(pipeline)  # the group exists and has acknowledged the first calls
    first = database_cdr_ids(pipeline)
    assert len(first) == CALLS_PER_PHASE

    make_calls(pipeline, callee_port)  # ingest is stopped
    wait_for(
        lambda: len(set(stream_cdr_ids(server)) - set(first)) >= CALLS_PER_PHASE,
        20,
        "the worker's XADDs",
    )
    written = set(stream_cdr_ids(server)) - set(first)  # (ingest trimmed what it acknowledged)
    server.kill()
    server.start()
    # Whatever Redis acknowledged to the worker came back from the append-only file.
    assert written <= set(stream_cdr_ids(server))
    with server.client() as client:
        [group] = client.xinfo_groups(STREAM_KEY)
    assert group["name"].decode() == GROUP and group["pending"] == 0

    ingest_once(pipeline)
    rows = database_cdr_ids(pipeline)
    assert len(rows) == len(set(rows)) == 2 * CALLS_PER_PHASE  # every call, once
    assert set(first) <= set(rows) and written <= set(rows)
