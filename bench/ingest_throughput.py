"""How many CDRs per second the ingest consumer writes to PostgreSQL.

Creates a scratch database on the PostgreSQL server of BENCH_DATABASE_URL (default: the
test server on 127.0.0.1:5432, as the tests' role) and migrates it; fills a Redis stream
of its own (database 12 on 127.0.0.1:6379) with events made by the engine's own code (the
tests' sample CDR), nine CDRs to one registration, spread over many servers; then times
`IngestConsumer.run(drain=True)` for each batch size. The database and the stream are
dropped at the end.

    .venv/bin/python bench/ingest_throughput.py [--cdrs 20000] [--servers 50]
"""

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The tests' role (`platform/bin/ensure-services test` creates it, with CREATEDB).
SERVER_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://sipcloud_test:sipcloud_test@127.0.0.1:5432"
)
SCRATCH_DB = "sipcloud_bench_ingest"
REDIS_URL = "redis://127.0.0.1:6379/12"


def scratch_database(create: bool) -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
        if create:
            conn.execute(f"CREATE DATABASE {SCRATCH_DB}")


def setup_django() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.test"
    os.environ["DATABASE_URL"] = f"{SERVER_URL}/{SCRATCH_DB}"
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def make_servers(count: int) -> list[int]:
    from sipnodes.models import SipHost, VirtualServer
    from tenants.models import Tenant

    host = SipHost.objects.create(name="bench", public_address="127.0.0.1")
    tenant = Tenant.objects.create(name="Bench")
    return [
        VirtualServer.objects.create(
            tenant=tenant,
            host=host,
            name=f"bench {i}",
            realm=f"vs-bench{i}.sipcloud",
            sip_port=15060 + i,
            callback_port=0,
            media_port_first=20000 + 4 * i,
            media_port_last=20003 + 4 * i,
        ).pk
        for i in range(count)
    ]


def fill(client: redis.Redis, stream: str, servers: list[int], cdrs: int) -> None:
    from sipnodes.engine.events import make_event
    from sipnodes.engine.registrar import RegistrationChange
    from tests.factories import sample_cdr_event

    now = time.time()
    pipe = client.pipeline(transaction=False)
    for n in range(cdrs + cdrs // 9):
        server_id = servers[n % len(servers)]
        if n % 10 == 9:
            change = RegistrationChange("register", "100", "sip:100@127.0.0.1", 3600, n % 5)
            event = make_event(change.data(), server_id, now + n)
        else:
            event = sample_cdr_event(server_id, now + n)
        pipe.xadd(stream, event.fields())
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()


def run(cdrs: int, servers: int, batch_sizes: list[int]) -> None:
    from sipnodes.ingest.consumer import IngestConsumer
    from sipnodes.models import Cdr

    server_ids = make_servers(servers)
    client = redis.Redis.from_url(REDIS_URL)
    print(f"{cdrs} CDRs (+ {cdrs // 9} registrations) over {servers} servers")
    for batch_size in batch_sizes:
        stream = f"bench:ingest:{uuid.uuid4().hex}"
        try:
            fill(client, stream, server_ids, cdrs)
            consumer = IngestConsumer(
                redis_url=REDIS_URL,
                stream=stream,
                dead_letter_stream=f"{stream}:dead",
                batch_size=batch_size,
            )
            before = Cdr.objects.count()
            started = time.perf_counter()
            consumer.run(drain=True)
            elapsed = time.perf_counter() - started
            written = Cdr.objects.count() - before
            assert written == cdrs, (written, cdrs)
            print(
                f"batch {batch_size:4d}: {elapsed:6.2f} s, {written / elapsed:8.0f} CDRs/s, "
                f"{(written + cdrs // 9) / elapsed:8.0f} events/s"
            )
        finally:
            client.delete(stream, f"{stream}:dead")
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cdrs", type=int, default=20_000)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--batch-sizes", default="50,500,2000")
    args = parser.parse_args()
    scratch_database(create=True)
    try:
        setup_django()
        run(args.cdrs, args.servers, [int(b) for b in args.batch_sizes.split(",")])
    finally:
        from django.db import connections

        connections.close_all()
        scratch_database(create=False)


if __name__ == "__main__":
    main()
