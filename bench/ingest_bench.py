"""Ingest CPU per event on a realistic mix of events, against PostgreSQL; the stream's length.

Starts a throwaway redis-server with the platform's own settings (`platform/redis.conf`:
AOF, `appendfsync always`) on a free port, and a scratch database on the PostgreSQL server
of BENCH_DATABASE_URL (default: the tests' server on 127.0.0.1:5432, as the tests' role),
migrated, with `--servers` virtual servers. A producer process then XADDs a mix of events
made by the engine's own code at `--rate` events per second for `--seconds`, spread over
the servers, as the workers of a soak would, while `IngestConsumer.run()` (the code of
`manage.py ingest_events`) consumes them in a thread of this process. Printed: the
consumer thread's CPU time per event (`time.thread_time`, which is what "ingest's share
of a core" is made of), its batches, the CDRs found in the database, and the stream's
length while and after ingest ran (the consumer trims what the group has acknowledged).

Mixes (per second of a soak of 20 servers, 10,000 clients refreshing every minute and
2 calls/s, each call a CDR and 4 call states):
- `soak`: every refresh REGISTER an event, as before issue 17: 207 registrations, 8 call
  states, 2 CDRs (217 events/s, the figure the soak measured);
- `quiet`: refreshes that change nothing cost no event: 8 call states, 2 CDRs and what is
  left of registrations (the hourly activity report of each server and real changes).

    .venv/bin/python bench/ingest_bench.py --mix soak --rate 217 --seconds 60
    .venv/bin/python bench/ingest_bench.py --mix quiet --rate 10 --seconds 60
    .venv/bin/python bench/ingest_bench.py --mix soak --backlog 20000   # pre-filled, drained
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ingest_throughput import make_servers  # noqa: E402  (bench/, this script's directory)

SERVER_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://sipcloud_test:sipcloud_test@127.0.0.1:5432"
)
SCRATCH_DB = "sipcloud_bench_ingest_mix"
MIXES = {  # events per second of the soak, by kind
    "soak": {"registration": 207, "call": 8, "cdr": 2},
    "quiet": {"registration": 0.2, "call": 8, "cdr": 2},
}
Fields = dict[str, str]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Redis:
    """redis-server with platform/redis.conf, in a temp dir, on a free port."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sipcloud-bench-redis-"))
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                str(ROOT / "platform" / "redis.conf"),
                "--port", str(self.port), "--dir", str(self.dir),
                "--logfile", str(self.dir / "redis.log"), "--daemonize", "no",
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def scratch_database(create: bool) -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
        if create:
            conn.execute(f"CREATE DATABASE {SCRATCH_DB}")


def setup_django(redis_url: str) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    os.environ["DATABASE_URL"] = f"{SERVER_URL}/{SCRATCH_DB}"
    os.environ["REDIS_URL"] = os.environ["CELERY_BROKER_URL"] = redis_url
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def make_entries(
    mix: dict[str, float], count: int, rate: float, servers: list[int]
) -> list[Fields]:
    """`count` stream entries in the mix's proportions, timed `rate` per second from now."""
    from sipnodes.engine.events import CallData, make_event
    from sipnodes.engine.registrar import RegistrationChange
    from tests.factories import sample_cdr_event

    total = sum(mix.values())
    owed = dict.fromkeys(mix, 0.0)
    states = ("initiated", "ringing", "answered", "released")
    entries: list[Fields] = []
    t0 = time.time()
    for n in range(count):
        for kind in mix:  # the kind most owed comes next: an even spread
            owed[kind] += mix[kind] / total
        kind = max(owed, key=lambda k: owed[k])
        owed[kind] -= 1
        server, ts = servers[n % len(servers)], t0 + n / rate
        user = str(100 + n // len(servers) % 500)
        if kind == "registration":
            data = RegistrationChange("register", user, f"sip:{user}@192.0.2.1:5060", 60, 500)
            event = make_event(data.data(), server, ts)
        elif kind == "call":
            event = make_event(CallData(f"{n // 4}@bench", "100", "101", states[n % 4]), server, ts)
        else:
            event = sample_cdr_event(server, ts - 32.6)
        entries.append(event.fields())
    return entries


def produce(url: str, entries: list[Fields], rate: float) -> None:
    """XADD the entries at `rate` per second, as the workers do (MAXLEN ~ 1000000)."""
    from sipnodes.engine.events import STREAM_KEY, STREAM_MAXLEN

    client = redis.Redis.from_url(url)
    started, sent = time.monotonic(), 0
    while sent < len(entries):
        due = min(len(entries), int((time.monotonic() - started) * rate) + 1)
        pipe = client.pipeline(transaction=False)
        for fields in entries[sent:due]:
            pipe.xadd(STREAM_KEY, fields, maxlen=STREAM_MAXLEN, approximate=True)
        pipe.execute()
        sent = due
        time.sleep(0.01)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mix", choices=sorted(MIXES), default="soak")
    parser.add_argument("--rate", type=float, default=217.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--backlog", type=int, default=0, help="pre-fill N events, then drain")
    parser.add_argument("--gather", type=float, help="the consumer's gather window, in seconds")
    args = parser.parse_args()
    server = Redis()
    scratch_database(create=True)
    try:
        setup_django(server.url)
        run(args, server.url)
    finally:
        from django.db import connections

        connections.close_all()
        scratch_database(create=False)
        server.stop()


def run(args: argparse.Namespace, url: str) -> None:
    from sipnodes.engine.events import STREAM_KEY
    from sipnodes.ingest.consumer import GROUP, IngestConsumer
    from sipnodes.models import Cdr

    class Counting(IngestConsumer):
        """Counts batches; `warm`: its CPU time and events once the first batch is written
        (connections made), from which the steady state is measured."""

        batches = entries = 0
        warm: tuple[float, int] | None = None

        def _handle(self, entries):  # type: ignore[no-untyped-def]
            self.batches += 1
            self.entries += len(entries)
            super()._handle(entries)
            if self.warm is None:
                self.warm = (time.thread_time(), self.entries)

    servers = make_servers(args.servers)
    count = args.backlog or int(args.rate * args.seconds)
    entries = make_entries(MIXES[args.mix], count, args.rate, servers)
    cdrs = sum(1 for e in entries if e["type"] == "cdr")
    client = redis.Redis.from_url(url)
    consumer = Counting(redis_url=url, **({} if args.gather is None else {"gather": args.gather}))
    cpu: list[float] = []

    def consume() -> None:
        consumer.run()
        cpu.append(time.thread_time())

    if args.backlog:
        produce(url, entries, rate=1e9)
    producer = multiprocessing.get_context("fork").Process(
        target=produce, args=(url, [] if args.backlog else entries, args.rate)
    )
    thread = threading.Thread(target=consume)
    wall = time.monotonic()
    thread.start()
    producer.start()
    longest = 0
    while producer.is_alive() or not _caught_up(client, STREAM_KEY, GROUP, count):
        longest = max(longest, client.xlen(STREAM_KEY))
        time.sleep(0.25)
    wall = time.monotonic() - wall
    consumer.stop()
    thread.join()
    producer.join()
    written = Cdr.objects.count()
    mix = ", ".join(f"{k} {v:g}/s" for k, v in MIXES[args.mix].items())
    print(f"mix {args.mix} ({mix}), {args.servers} servers")
    print(
        f"{count} events" + (" pre-filled" if args.backlog else f" at {args.rate:g}/s")
        + f" in {wall:.1f} s: {consumer.batches} batches, "
        f"{consumer.entries / max(consumer.batches, 1):.1f} events per batch"
    )  # fmt: skip
    assert consumer.warm is not None
    used, measured = cpu[0] - consumer.warm[0], count - consumer.warm[1]
    print(
        f"ingest CPU after the first batch: {used:.2f} s for {measured} events = "
        f"{used / max(measured, 1) * 1e6:.0f} us/event ({used / wall * 100:.1f} % of a core)"
    )
    print(f"CDRs in PostgreSQL {written} of {cdrs}")
    before_trim = client.xlen(STREAM_KEY)
    consumer.trim()  # what the running consumer does every 10 s
    print(
        f"stream length: at most {longest} while running, {before_trim} when caught up, "
        f"{client.xlen(STREAM_KEY)} after its next trim"
    )
    client.close()


def _caught_up(client: redis.Redis, stream: str, group: str, count: int) -> bool:
    """Every entry delivered to the group and acknowledged."""
    groups = {g["name"].decode(): g for g in client.xinfo_groups(stream)}
    info = groups.get(group)
    return info is not None and info["entries-read"] == count and info["pending"] == 0


if __name__ == "__main__":
    main()
