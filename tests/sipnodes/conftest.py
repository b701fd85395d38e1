"""Fixtures for private PostgreSQL and Redis servers (see private_servers.py)."""

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

from tests.support import free_port

from .private_servers import PrivatePostgres, PrivateRedis, manage, manage_env


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A running private PostgreSQL cluster with an empty database `sipcloud`."""
    root = Path(tempfile.mkdtemp(prefix="sipcloud-pg-"))
    owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    pg = PrivatePostgres(root, free_port())
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
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (Debian package redis-server)")
    root = Path(tempfile.mkdtemp(prefix="sipcloud-redis-"))
    server = PrivateRedis(root, free_port())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
