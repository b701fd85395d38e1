"""Fixtures of the interop suite: a live worker and real SIP clients registered to it.

The worker and SIPp fixtures are the engine tests' own, imported here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.sipnodes.conftest import sipp  # noqa: F401 (a fixture)
from tests.sipnodes.engine.conftest import redis_client, start_worker  # noqa: F401 (fixtures)
from tests.sipnodes.engine.processes import WorkerProcess
from tests.support import wait_until

from .agents import AGENTS, Agent, binding


@pytest.fixture
def worker(start_worker) -> WorkerProcess:  # noqa: F811
    """A worker challenging with MD5 only, the portal's default: baresip 1.0 gives up on
    a SHA-256 challenge."""
    return start_worker(auth={"algorithms": ["MD5"]})


@pytest.fixture
def agent(
    tmp_path: Path,
    worker: WorkerProcess,
    redis_client: redis.Redis,  # noqa: F811
) -> Iterator[Callable[[str, str, str], Agent]]:
    """Starts a client of a kind (`agents.AGENTS`) as a number over a transport, and waits
    until the worker holds its registration over that transport; stops them all."""
    started: list[Agent] = []

    def make(kind: str, number: str, transport: str) -> Agent:
        client = AGENTS[kind](tmp_path, number, transport, worker.port)
        started.append(client)
        client.start()
        registered = wait_until(lambda: binding(redis_client, worker, number), 15)
        assert registered, f"{client} did not register:\n{client.log()[-3000:]}"
        assert registered["transport"] == transport.upper(), registered
        return client

    yield make
    for client in started:
        client.stop()
