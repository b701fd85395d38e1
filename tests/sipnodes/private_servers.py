"""A PostgreSQL cluster and a Redis server of a test's own, to stop and start at will.

The shared servers (PostgreSQL on 5432, Redis on 6379) serve every test run on the
machine and are never stopped. A test that takes the database or Redis away uses
these instead: each lives in a temporary directory, listens on 127.0.0.1 on a port
picked at run time, and is stopped and removed at the end of the test, also when
the test fails. Every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
import redis

from tests.support import PYTHON, ROOT, missing, stop_process, wait_for


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory (initdb, pg_ctl)."""
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not versions:
        missing("PostgreSQL server binaries are not installed (Debian package postgresql)")
    return versions[-1].parent


class PrivatePostgres:
    """A throwaway PostgreSQL cluster: user `postgres`, trust authentication, one database.

    `stop()` defaults to an immediate shutdown, i.e. a crash: clients lose their
    connections mid-transaction and the next `start()` runs crash recovery.
    """

    def __init__(self, root: Path, port: int, bin_dir: Path, database: str = "sipcloud") -> None:
        self.root = root
        self.port = port
        self.database = database
        self.bin = bin_dir
        self.data = root / "data"
        self.log = root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.database}"

    def _run(self, *args: str, timeout: float = 60) -> None:
        # initdb and postgres refuse to run as root: run them as the postgres user then.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run(
            [*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=self.root
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}")

    def init(self) -> None:
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            "--auth=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bin / "pg_ctl"), "start", "-D", str(self.data), "-l", str(self.log),
            "-w", "-t", "60", "-o", options,
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        self._run(str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", mode, "-w")

    def is_running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self) -> None:
        dsn = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.database}"')

    def connect(self) -> psycopg.Connection:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=3)


def manage_env(database_url: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment for `manage.py` run against private servers (test settings).

    With a `redis_url`, the Celery broker goes to that Redis too, so nothing a
    command queues reaches the shared one.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_ALLOW_ASYNC")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.test", DATABASE_URL=database_url, **extra)
    if redis_url is not None:
        env.update(REDIS_URL=redis_url, CELERY_BROKER_URL=redis_url)
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    """Run `manage.py`; its stdout, or the test fails with its stderr."""
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)}: {result.stderr}"
    return result.stdout


def create_server(env: dict[str, str]) -> int:
    """A virtual server (with a host and a tenant of its own) made by `manage.py shell` in the
    database of `env`; its id."""
    out = manage(
        env,
        "shell",
        "-c",
        "from sipnodes.models import SipHost; from tenants.models import Tenant; "
        "from sipnodes.services import server_create; "
        "SipHost.objects.create(name='h', public_address='127.0.0.1'); "
        "print(server_create(tenant=Tenant.objects.create(name='t'), name='s').pk)",
    )
    return int(out.splitlines()[-1])


class PrivateRedis:
    """A redis-server of its own with an append-only file, so a restart keeps the streams.

    `stop()` is a clean SHUTDOWN (SIGTERM): Redis writes the append-only file out
    first, as a service manager's stop does.
    """

    def __init__(self, root: Path, port: int, binary: str) -> None:
        self.root = root
        self.port = port
        self.binary = binary
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def _ping(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.root), "--appendonly", "yes", "--save", "",
                "--logfile", str(self.root / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._ping, 15, f"redis-server on port {self.port}")

    def stop(self) -> None:
        stop_process(self.process, timeout=15)
        self.process = None
