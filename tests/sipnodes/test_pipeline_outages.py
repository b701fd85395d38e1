"""Calls through a real worker reach PostgreSQL exactly once, across a database or Redis outage.

The whole upward path runs for real: a worker (`python -m sipnodes.engine`) carries SIPp
calls and writes CDRs to a private Redis (spooling while Redis is away); `manage.py
ingest_events` moves them into a private PostgreSQL cluster (retrying while it is away).
"""

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.sipnodes.engine.processes import WorkerProcess
from tests.sipnodes.private_servers import create_server, manage_env
from tests.support import PYTHON, ROOT, free_port, stop_process, wait_for

pytestmark = pytest.mark.e2e

CALLS_PER_PHASE = 3


def server_worker(env: dict[str, str], redis_url: str, tmp_path: Path) -> WorkerProcess:
    """A virtual server in the database of `env`, and its worker (configured, not started)."""
    server_id = create_server(env)
    worker = WorkerProcess(tmp_path, redis_url)
    worker.server_id = server_id
    worker.data["server_id"] = server_id
    worker.write_config()
    return worker


@pytest.fixture
def pipeline(sipp, tmp_path, migrated_private_postgres, private_redis) -> Iterator[dict]:
    """A worker and `ingest_events` against the private servers; `sipp` is the shared fixture
    (asked for first, so a missing SIPp skips, or fails on CI, before any server starts)."""
    env = manage_env(migrated_private_postgres.url, private_redis.url)
    worker = server_worker(env, private_redis.url, tmp_path)
    log = (tmp_path / "ingest.log").open("ab")
    ingest = subprocess.Popen(
        [PYTHON, "manage.py", "ingest_events"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    try:
        worker.start()
        yield {"worker": worker, "sipp": sipp, "pg": migrated_private_postgres,
               "redis": private_redis, "log": tmp_path / "ingest.log"}  # fmt: skip
    finally:
        worker.stop()
        stop_process(ingest, timeout=15)
        log.close()


def make_calls(pipeline: dict, callee_port: int) -> None:
    sipp, worker = pipeline["sipp"], pipeline["worker"]
    for _ in range(CALLS_PER_PHASE):
        uas = sipp.start_uas("uas_answer.xml", callee_port)
        rc, out = sipp.run("uac_call.xml", worker.port, [("100", "pw100")], extra=["-s", "101"])
        assert rc == 0 and sipp.wait(uas) == 0, out


def cdr_rows(pipeline: dict) -> list[tuple]:
    try:
        with pipeline["pg"].connect() as conn:
            return conn.execute(
                "SELECT uuid, caller, dialed, answered, fci, call_tag, cause FROM sipnodes_cdr"
            ).fetchall()
    except psycopg.Error:  # the cluster is down or starting; the caller retries
        return []


def register_callee(pipeline: dict) -> int:
    port = free_port()
    rc, out = pipeline["sipp"].run(
        "register.xml", pipeline["worker"].port, [("101", "pw101")], port=port
    )
    assert rc == 0, out
    return port


def assert_every_cdr_once(pipeline: dict, calls: int) -> None:
    wait_for(lambda: len(cdr_rows(pipeline)) >= calls, 60, f"{calls} CDRs in PostgreSQL")
    rows = cdr_rows(pipeline)
    assert len(rows) == calls == len({row[0] for row in rows})
    assert all(row[1:] == ("100", "101", True, "callTag=1;cause=16", 1, 16) for row in rows)
    pending = pipeline["redis"].client().xpending("sipcloud:events", "ingest")
    assert pending["pending"] == 0


def test_calls_made_while_postgresql_is_down_are_written_once(pipeline):
    callee_port = register_callee(pipeline)
    make_calls(pipeline, callee_port)
    pipeline["pg"].stop()
    make_calls(pipeline, callee_port)
    wait_for(lambda: "database unavailable" in Path(pipeline["log"]).read_text(), 20, "retry log")
    pipeline["pg"].start()
    make_calls(pipeline, callee_port)
    assert_every_cdr_once(pipeline, 3 * CALLS_PER_PHASE)


def test_calls_made_while_redis_restarts_are_written_once(pipeline):
    callee_port = register_callee(pipeline)
    make_calls(pipeline, callee_port)
    pipeline["redis"].stop()
    make_calls(pipeline, callee_port)
    pipeline["redis"].start()
    make_calls(pipeline, callee_port)
    assert_every_cdr_once(pipeline, 3 * CALLS_PER_PHASE)
