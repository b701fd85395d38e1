"""Fixtures for engine tests that run real processes: workers and the shared Redis.

`sipp` is in tests/sipnodes/conftest.py, shared with the provisioning tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support import free_port, missing, wait_until

from .processes import REDIS_URL, WorkerProcess, cleanup_server


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        missing(f"redis not reachable at {REDIS_URL}")
    yield client
    client.close()


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
        cleanup_server(redis_client, w.server_id, w.server_uid)


@pytest.fixture
def callback_worker(start_worker: Any) -> Any:
    """Starts a worker whose call-back port is open to an AS at 127.0.0.1."""

    def start(**callback):
        port = free_port()
        worker = start_worker(
            listen={"callback_port": port},
            callback={"app_server_address": "127.0.0.1", "port": port, **callback},
        )
        assert wait_until(lambda: "call-back service listening" in worker.log(), 5.0), worker.log()
        worker.callback_port = port
        return worker

    return start
