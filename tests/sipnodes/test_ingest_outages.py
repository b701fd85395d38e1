"""The ingest consumer rides out a database crash and a Redis restart without losing a CDR.

`manage.py ingest_events` runs as a real process against a private PostgreSQL
cluster and a private Redis (see conftest.py). A producer thread keeps appending
CDRs, as workers do, while one of the two goes away and comes back; at the end
every CDR is in the database exactly once and nothing is left pending.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from sipnodes.engine.events import (
    STREAM_KEY,
    STREAM_MAXLEN,
    CdrData,
    Event,
    RegistrationData,
    make_event,
)
from sipnodes.engine.registrar import RegistrationChange
from sipnodes.ingest.consumer import GROUP
from tests.factories import sample_cdr_event
from tests.support import PYTHON, ROOT, wait_for

from .private_servers import manage, manage_env

pytestmark = pytest.mark.e2e

EVENTS_PER_SECOND = 200


class Producer(threading.Thread):
    """Appends CDRs (and now and then a registration) like a worker, until stopped.

    A worker spools what Redis does not take and sends it later; here an event
    that fails is simply retried until Redis takes it. `sent` holds the UUIDs of
    the CDRs Redis acknowledged.
    """

    def __init__(self, redis_url: str, server_id: int) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=1)
        self.server_id = server_id
        self.sent: list[str] = []
        self.last_start = 0.0
        self.last_clients: int | None = None
        self.failures = 0
        self._halt = threading.Event()

    def _event(self, n: int) -> Event:
        now = time.time()
        if n % 10 == 9:
            change = RegistrationChange("register", "100", "sip:100@127.0.0.1:5070", 3600, n % 4)
            return make_event(change.data(), self.server_id, now)
        return sample_cdr_event(self.server_id, now - 32.6)

    def run(self) -> None:
        n = 0
        while not self._halt.is_set():
            event = self._event(n)
            while not self._halt.is_set():
                try:
                    self.client.xadd(
                        STREAM_KEY, event.fields(), maxlen=STREAM_MAXLEN, approximate=True
                    )
                    break
                except redis.RedisError:
                    self.failures += 1
                    self._halt.wait(0.1)
            else:
                return
            if isinstance(event.data, CdrData):
                self.sent.append(event.event_id)
                self.last_start = max(self.last_start, event.data.start)
            elif isinstance(event.data, RegistrationData):
                self.last_clients = event.data.registered_clients
            n += 1
            self._halt.wait(1 / EVENTS_PER_SECOND)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        self.client.close()


@pytest.fixture
def server_id(migrated_private_postgres, private_redis) -> int:
    """A virtual server in the private database, made with the tests' factories."""
    code = (
        "from sipnodes.models import SipHost; from tests.factories import make_tenant_with_server; "
        "SipHost.objects.create(name='e2e', public_address='127.0.0.1'); "
        "print(make_tenant_with_server('Acme').server.pk)"
    )
    env = manage_env(migrated_private_postgres.url, private_redis.url)
    return int(manage(env, "shell", "-c", code).strip().splitlines()[-1])


@pytest.fixture
def ingest(migrated_private_postgres, private_redis, server_id, tmp_path) -> Iterator[Path]:
    """`manage.py ingest_events` running; yields its log file. Stopped with SIGTERM."""
    log_path = tmp_path / "ingest.log"
    env = manage_env(migrated_private_postgres.url, private_redis.url)
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [PYTHON, "manage.py", "ingest_events"],
            cwd=ROOT,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: _group_exists(private_redis.url), 30, "the ingest consumer group")
        yield log_path
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def producer(private_redis, server_id) -> Iterator[Producer]:
    thread = Producer(private_redis.url, server_id)
    thread.start()
    yield thread
    thread.stop()


def _group_exists(redis_url: str) -> bool:
    with redis.Redis.from_url(redis_url) as client:
        try:
            return any(g["name"] == GROUP.encode() for g in client.xinfo_groups(STREAM_KEY))
        except redis.ResponseError:
            return False


def _cdr_uuids(pg) -> list[str]:
    try:
        with pg.connect() as conn:
            return [str(row[0]) for row in conn.execute("SELECT uuid FROM sipnodes_cdr")]
    except psycopg.OperationalError:
        return []


def _pending(redis_url: str) -> int:
    with redis.Redis.from_url(redis_url) as client:
        return client.xpending(STREAM_KEY, GROUP)["pending"]


def _all_consumed(redis_url: str) -> bool:
    """The consumer has read the stream's last entry and acknowledged everything.

    An empty pending list alone is also what an entry not yet read looks like: the
    last one, a registration after the last CDR, raced the database check once in CI.
    """
    with redis.Redis.from_url(redis_url) as client:
        [group] = [g for g in client.xinfo_groups(STREAM_KEY) if g["name"] == GROUP.encode()]
        last = client.xinfo_stream(STREAM_KEY)["last-generated-id"]
        return group["pending"] == 0 and group["last-delivered-id"] == last


def _log_says(log_path: Path, text: str, times: int = 1) -> bool:
    return log_path.read_text(errors="replace").count(text) >= times


def _written_after(pg, producer: Producer, sent_before: int, count: int = 100) -> bool:
    """`count` CDRs sent after the first `sent_before` are in the database.

    The consumer reads the stream in order, so this also means that everything
    sent before them is there: the backlog is written and new CDRs keep flowing.
    """
    later = producer.sent[sent_before : sent_before + count]
    return len(later) == count and set(later) <= set(_cdr_uuids(pg))


def _assert_every_cdr_once(pg, redis_url: str, producer: Producer, server_id: int) -> None:
    producer.stop()
    sent = set(producer.sent)
    wait_for(lambda: len(_cdr_uuids(pg)) >= len(sent), 60, f"{len(sent)} CDRs in the database")
    wait_for(lambda: _all_consumed(redis_url), 30, "every entry read and acknowledged")
    uuids = _cdr_uuids(pg)
    assert len(uuids) == len(set(uuids)) == len(sent)
    assert set(uuids) == sent
    with pg.connect() as conn:
        last_call_at, clients = conn.execute(
            "SELECT extract(epoch FROM last_call_at), registered_clients"
            " FROM sipnodes_virtualserver WHERE id = %s",
            [server_id],
        ).fetchone()
    assert abs(float(last_call_at) - producer.last_start) < 0.01
    assert clients == producer.last_clients


def test_every_cdr_is_written_once_across_a_database_crash(
    migrated_private_postgres, private_redis, server_id, ingest, producer
):
    pg = migrated_private_postgres
    wait_for(lambda: len(_cdr_uuids(pg)) >= 100, 30, "CDRs flowing into the database")

    pg.stop("immediate")
    wait_for(lambda: _log_says(ingest, "database unavailable"), 20, "the consumer to notice")
    sent_at_crash = len(producer.sent)
    # Events keep arriving while the database is down, and the consumer retries its batch.
    wait_for(
        lambda: len(producer.sent) - sent_at_crash > 100, 30, "100 CDRs sent during the outage"
    )
    wait_for(lambda: _log_says(ingest, "; attempt 2,"), 20, "the consumer to retry its batch")
    assert len(producer.sent) - sent_at_crash > 100
    assert _pending(private_redis.url) > 0  # read, but not acknowledged without a commit
    sent_at_restart = len(producer.sent)
    pg.start()

    wait_for(
        lambda: _written_after(pg, producer, sent_at_restart),
        60,
        "the backlog and 100 CDRs sent after the restart in the database",
    )
    _assert_every_cdr_once(pg, private_redis.url, producer, server_id)


def test_every_cdr_is_written_once_across_a_redis_restart(
    migrated_private_postgres, private_redis, server_id, ingest, producer
):
    pg = migrated_private_postgres
    wait_for(lambda: len(_cdr_uuids(pg)) >= 100, 30, "CDRs flowing into the database")

    private_redis.stop()
    wait_for(lambda: _log_says(ingest, "redis unavailable"), 20, "the consumer to notice")
    wait_for(lambda: producer.failures > 0, 20, "the producer to meet the outage")
    wait_for(lambda: _log_says(ingest, "redis unavailable", 2), 20, "the consumer to retry")
    sent_at_restart = len(producer.sent)
    private_redis.start()

    wait_for(
        lambda: _written_after(pg, producer, sent_at_restart),
        60,
        "the backlog and 100 CDRs sent after the restart in the database",
    )
    assert producer.failures > 0  # the producer really met the outage too
    _assert_every_cdr_once(pg, private_redis.url, producer, server_id)
