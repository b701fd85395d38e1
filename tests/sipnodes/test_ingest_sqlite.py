"""Ingest on the embedded SQLite default: WAL mode with a busy timeout, so a reader never
makes ingest fail with "database is locked" (issue 17, point 8).

`make run` keeps its database in `var/sipcloud.sqlite3`, shared by the web server,
Celery, the node agent and ingest. Here a database of the test's own, with the settings
any SQLite database gets (`config/settings/base.py`), and a private Redis.
"""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from sipnodes.engine.events import STREAM_KEY, StatusData, make_event
from sipnodes.engine.registrar import RegistrationChange
from tests.factories import SAMPLE_T0 as T0
from tests.factories import sample_cdr_event
from tests.sipnodes.private_servers import create_server, manage, manage_env
from tests.support import PYTHON, ROOT

pytestmark = pytest.mark.e2e


@pytest.fixture
def sqlite_env(tmp_path: Path, private_redis) -> dict[str, str]:
    env = manage_env(f"sqlite:///{tmp_path / 'sipcloud.sqlite3'}", private_redis.url)
    manage(env, "migrate", "--no-input")
    return env


def test_the_embedded_database_runs_in_wal_mode_with_a_busy_timeout(sqlite_env):
    out = manage(
        sqlite_env,
        "shell",
        "-c",
        "from django.db import connection; c = connection.cursor(); "
        "print(c.execute('PRAGMA journal_mode').fetchone()[0], "
        "c.execute('PRAGMA busy_timeout').fetchone()[0])",
    )
    assert out.splitlines()[-1].split() == ["wal", "20000"]


def test_ingest_writes_while_another_process_holds_a_read_transaction(
    sqlite_env, private_redis, tmp_path
):
    server_id = create_server(sqlite_env)
    cdrs = [sample_cdr_event(server_id, T0 + i) for i in range(20)]
    change = RegistrationChange("register", "100", "sip:100@127.0.0.1:5070", 3600, 1)
    others = [
        make_event(change.data(), server_id, T0 + 100),
        make_event(StatusData("started", "s", 1, 0), server_id, T0 + 50),
    ]
    with private_redis.client() as client:
        for event in [*cdrs, *others, *cdrs]:  # every CDR twice: written once
            client.xadd(STREAM_KEY, event.fields())

    reader = sqlite3.connect(tmp_path / "sipcloud.sqlite3", isolation_level=None)
    reader.execute("BEGIN")
    assert reader.execute("SELECT count(*) FROM sipnodes_cdr").fetchone() == (0,)
    started = time.monotonic()
    result = subprocess.run(
        [PYTHON, "manage.py", "ingest_events", "--once"],
        cwd=ROOT,
        env=sqlite_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - started
    # The reader's snapshot is unchanged; the writer did not wait for it.
    assert reader.execute("SELECT count(*) FROM sipnodes_cdr").fetchone() == (0,)
    reader.execute("COMMIT")
    assert result.returncode == 0, result.stderr
    assert "locked" not in result.stdout + result.stderr
    assert elapsed < 15  # not the 20 s busy timeout

    row = reader.execute(
        "SELECT registered_clients, last_registration_at, last_call_at "
        "FROM sipnodes_virtualserver WHERE id = ?",
        (server_id,),
    ).fetchone()
    assert reader.execute("SELECT count(DISTINCT uuid), count(*) FROM sipnodes_cdr").fetchone() == (
        20,
        20,
    )
    assert row[0] == 1
    assert row[1].startswith("2026-09-21 ") and row[2].startswith("2026-09-21 ")
    reader.close()
