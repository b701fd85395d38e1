"""Fixtures for SIPp, a real SIP host (node_host.py), and private PostgreSQL and Redis
servers (private_servers.py)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from tests.support import free_port, require_tool

from .engine.processes import Sipp
from .node_host import NodeHost, make_node_host
from .private_servers import PrivatePostgres, PrivateRedis, manage, manage_env, postgres_bin


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """The test host's Celery queue (`host.test-host`), empty before and after."""
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    client.delete("host.test-host")
    yield client
    client.delete("host.test-host")


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    """Runs SIPp scenarios; stops the ones left running at the end of the test."""
    require_tool("sipp", "sip-tester")
    runner = Sipp(tmp_path)
    yield runner
    runner.stop_all()


@pytest.fixture
def node_host(short_tmp: Path) -> Iterator[NodeHost]:
    """A started SIP host of the test's own (needs `django_db(transaction=True)`)."""
    node_host = make_node_host(short_tmp).start()
    yield node_host
    node_host.stop()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL cluster with an empty database `sipcloud`."""
    bin_dir = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="sipcloud-pg-"))
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    pg = PrivatePostgres(root, free_port(), bin_dir)
    try:
        pg.init()
        pg.start()
        pg.create_database()
        yield pg
    finally:
        if pg.is_running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                pg.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def migrated_private_postgres(private_postgres) -> PrivatePostgres:
    """The private cluster with the project's migrations applied."""
    manage(manage_env(private_postgres.url), "migrate", "--no-input")
    return private_postgres


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A running private Redis (127.0.0.1, free port, AOF in a temp dir)."""
    binary = require_tool("redis-server", "redis-server")
    root = Path(tempfile.mkdtemp(prefix="sipcloud-redis-"))
    server = PrivateRedis(root, free_port(), binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
