"""Fixtures for engine tests that run real processes: workers, SIPp, Redis."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from .processes import REDIS_URL, Sipp, WorkerProcess, cleanup_server


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        pytest.skip(f"redis not reachable at {REDIS_URL}")
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
        cleanup_server(redis_client, w.server_id)


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    if shutil.which("sipp") is None:
        pytest.skip("sipp not installed")
    runner = Sipp(tmp_path)
    yield runner
    runner.stop_all()
