"""Zombie purge at scale: 1,000,000 virtual servers in PostgreSQL, 100,000 of them zombies.

    .venv/bin/python bench/zombie_purge_bench.py [--servers N] [--zombies N] [--hosts N]

Makes its own database (`sipcloud_zombie_bench`, dropped first), fills it with SQL
(generate_series), starts one real node agent (supervisord + Celery worker) per SIP host,
and prints:

- the time to list the next run's candidates and to count all zombies;
- the time to purge every zombie in capped runs (`manage.py purge_zombies`, the policy's
  cap per run), each run waiting for the hosts' agents to report the workers stopped;
- portal page loads (a member's server list) timed while the purge runs, and the
  operator's server search and purge page at this size.

The bench servers have no running workers (a million workers do not fit one machine): the
agents still confirm each stop, as they do for a stopped worker. The port ledger holds
each server's SIP port only (media blocks would need far more hosts than 20).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
ADMIN_URL = "postgres://sipcloud_test:sipcloud_test@127.0.0.1:5432/postgres"
DB = "sipcloud_zombie_bench"
DB_URL = f"postgres://sipcloud_test:sipcloud_test@127.0.0.1:5432/{DB}"
BROKER = "redis://127.0.0.1:6379/12"
VAR = Path("/tmp/sipcloud-zombie-bench")
WINDOW = 730


def env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DEBUG": "0",
        "DATABASE_URL": DB_URL,
        "CELERY_BROKER_URL": BROKER,
        "SIPCLOUD_VAR_DIR": str(VAR),
        "LANG": "C.UTF-8",
        "ALLOWED_HOSTS": "testserver,localhost",
        **extra,
    }


def timed(label: str, fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    print(f"{label}: {time.perf_counter() - started:.2f} s", flush=True)
    return result


def create_database() -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env(), check=True, timeout=300
    )


def fill(servers: int, zombies: int, hosts: int) -> None:
    """Two servers per tenant and one owner each; the first zombies/2 tenants are idle."""
    tenants = servers // 2
    idle_tenants = zombies // 2
    per_host = -(-servers // hosts)
    sql = f"""
    INSERT INTO sipnodes_siphost (name, public_address, listen_address, sip_port_min,
        sip_port_max, callback_port_min, callback_port_max, media_port_min, media_port_max,
        created_at, last_seen_at, status_detail)
    SELECT 'bench-' || lpad(h::text, 2, '0'), '127.0.0.1', '127.0.0.1', 10000,
        {10000 + per_host - 1}, 61000, 61999, 62000, 65000, now(), now(), ''
    FROM generate_series(0, {hosts - 1}) h;

    INSERT INTO tenants_tenant (id, name, time_zone, created_at)
    SELECT t, 'Company ' || t, 'Asia/Shanghai', now() - interval '1000 days'
    FROM generate_series(1, {tenants}) t;

    INSERT INTO tenants_user (id, password, is_superuser, username, first_name, last_name,
        email, is_staff, is_active, date_joined, language, last_login)
    SELECT t, '!', false, 'owner' || t || '@example.com', '', '', 'owner' || t || '@example.com',
        false, true, now() - interval '1000 days', '',
        CASE WHEN t <= {idle_tenants} THEN now() - interval '800 days'
             ELSE now() - (t % 300) * interval '1 day' END
    FROM generate_series(1, {tenants}) t;

    INSERT INTO tenants_membership (user_id, tenant_id, role, created_at)
    SELECT t, t, 'owner', now() - interval '1000 days' FROM generate_series(1, {tenants}) t;

    INSERT INTO sipnodes_virtualserver (tenant_id, uid, name, edition, host_id, realm, sip_port,
        callback_port, media_port_first, media_port_last, out_group_prefix, prompt_language,
        media_relay, upnp, digest_algorithms, cdr_failed_calls, cdr_realtime_display,
        callback_app_server_address, callback_default_caller, desired_state,
        awaiting_verification, actual_state, state_detail, restart_count, registered_clients,
        last_registration_at, last_call_at, created_at, updated_at)
    SELECT (i % {tenants}) + 1, gen_random_uuid(), 'Server ' || i, 5,
        (SELECT min(id) FROM sipnodes_siphost) + i % {hosts},
        'bench-' || i || '.sipcloud', 10000 + i / {hosts}, 0, 62000, 62019, '9', 'en',
        true, false, 'md5', true, true, '127.0.0.1', '', 'running', false, 'stopped', '', 0,
        0,
        CASE WHEN (i % {tenants}) + 1 <= {idle_tenants}
             THEN now() - interval '740 days' - (i % 50000) * interval '1 minute'
             ELSE now() - (i % 500) * interval '1 day' END,
        CASE WHEN (i % {tenants}) + 1 <= {idle_tenants} THEN NULL
             ELSE now() - (i % 700) * interval '1 day' END,
        now() - interval '900 days', now()
    FROM generate_series(0, {servers - 1}) i;

    INSERT INTO sipnodes_portallocation (host_id, port, server_id, purpose)
    SELECT host_id, sip_port, id, 'sip' FROM sipnodes_virtualserver;

    INSERT INTO sipnodes_localuser (server_id, number, display_name, ha1_md5, ha1_sha256,
        call_level, created_at, updated_at)
    SELECT s.id, n::text, '', md5(s.id || '-' || n), md5(s.id::text) || md5(n::text), 1,
        now(), now()
    FROM sipnodes_virtualserver s CROSS JOIN generate_series(100, 102) n;

    SELECT setval(pg_get_serial_sequence('tenants_tenant', 'id'), {tenants});
    SELECT setval(pg_get_serial_sequence('tenants_user', 'id'), {tenants});
    """
    with psycopg.connect(DB_URL, autocommit=True) as conn:
        for statement in sql.split(";\n"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("VACUUM ANALYZE")


class Agents:
    """One real node agent per bench host (platform/bin/start-node)."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def _env(self, name: str) -> dict[str, str]:
        return env(SIPCLOUD_HOST_NAME=name, SIPCLOUD_NODE_DIR=str(VAR / "hosts" / name))

    def start(self) -> None:
        for name in self.names:
            subprocess.run(
                [str(ROOT / "platform/bin/start-node"), name],
                cwd=ROOT, env=self._env(name), check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        for name in self.names:  # ready: the agent's log says so
            log = VAR / "hosts" / name / "log" / "node-agent.log"
            deadline = time.monotonic() + 120
            while not (log.exists() and "ready." in log.read_text(errors="replace")):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"agent {name} did not start")
                time.sleep(0.2)

    def stop(self) -> None:
        for name in self.names:
            subprocess.run(
                [str(ROOT / "platform/bin/stop-node"), name],
                cwd=ROOT, env=self._env(name), capture_output=True, timeout=120,
            )  # fmt: skip


def page_loads(stop: threading.Event, timings: list[float], user_id: int) -> None:
    """A member of an active tenant loads their server list, twice a second."""
    from django.test import Client

    from tenants.models import User

    client = Client()
    client.force_login(User.objects.get(pk=user_id))
    while not stop.is_set():
        started = time.perf_counter()
        response = client.get("/servers/")
        assert response.status_code == 200
        timings.append(time.perf_counter() - started)
        stop.wait(0.5)


def summary(timings: list[float]) -> str:
    ms = sorted(t * 1000 for t in timings)
    p95 = ms[int(len(ms) * 0.95) - 1] if len(ms) >= 20 else ms[-1]
    return (
        f"{len(ms)} loads, median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, "
        f"max {ms[-1]:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=1_000_000)
    parser.add_argument("--zombies", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--cap", type=int, default=5000, help="the policy's cap per run")
    parser.add_argument("--max-minutes", type=float, default=60)
    args = parser.parse_args()

    (VAR / "static").mkdir(parents=True, exist_ok=True)
    redis.Redis.from_url(BROKER).flushdb()  # the bench's own broker database
    timed("create and migrate the database", create_database)
    timed(f"fill {args.servers:,} servers, {args.zombies:,} zombies (SQL)", fill,
          args.servers, args.zombies, args.hosts)  # fmt: skip

    os.environ.update(env())
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.test import Client
    from django.utils import timezone, translation

    from ops import selectors, services
    from ops.models import Tombstone
    from sipnodes.models import VirtualServer
    from tenants.models import User

    translation.activate("en")
    policy = services.policy_update(operator=None, cap_per_run=args.cap)
    now = timezone.now()
    count = timed("count all zombies", selectors.zombie_count, policy=policy, now=now)
    print(f"  zombies: {count:,}")
    found = timed(
        f"list the next run's candidates (cap {args.cap})",
        selectors.purge_candidates, policy=policy, now=now, limit=args.cap,
    )  # fmt: skip
    print(f"  candidates: {len(found):,}; first: {found[0].reason}")
    timed("list 500 candidates", selectors.purge_candidates, policy=policy, now=now, limit=500)

    operator = User.objects.create_superuser(
        username="bench-op@example.com", email="bench-op@example.com", password="x" * 12
    )
    ops = Client()
    ops.force_login(operator)
    for label, url in [
        ("operator purge page", "/ops/purge/"),
        ("operator servers page 1", "/ops/servers/"),
        ("operator server search 'Server 123456'", "/ops/servers/?q=Server+123456"),
        ("operator servers deep page", "/ops/servers/?after=12345"),
        ("operator tenants search 'Company 4242'", "/ops/tenants/?q=Company+4242"),
    ]:
        response = timed(label, ops.get, url)
        assert response.status_code == 200, (url, response.status_code)

    agents = Agents([f"bench-{h:02}" for h in range(args.hosts)])
    timed(f"start {args.hosts} node agents", agents.start)
    stop, timings = threading.Event(), []
    member = args.servers // 2  # the owner of the last tenant, an active one
    loader = threading.Thread(target=page_loads, args=(stop, timings, member))
    quiet: list[float] = []
    quiet_stop = threading.Event()
    quiet_thread = threading.Thread(target=page_loads, args=(quiet_stop, quiet, member))
    quiet_thread.start()
    time.sleep(5)
    quiet_stop.set()
    quiet_thread.join()
    print(f"portal server list, no purge running: {summary(quiet)}")

    runs = 0
    loader.start()
    started = time.perf_counter()
    deadline = time.monotonic() + args.max_minutes * 60
    try:
        while time.monotonic() < deadline:
            run_started = time.perf_counter()
            out = subprocess.run(
                [PYTHON, "manage.py", "purge_zombies"],
                cwd=ROOT, env=env(), capture_output=True, text=True, timeout=3600,
            )  # fmt: skip
            if out.returncode != 0:
                raise RuntimeError(out.stderr[-3000:])
            runs += 1
            last = out.stdout.strip().splitlines()[-1]
            print(f"  run {runs}: {time.perf_counter() - run_started:.1f} s: {last}", flush=True)
            if " 0 candidates" in last:
                break
    finally:
        elapsed = time.perf_counter() - started
        stop.set()
        loader.join()
        agents.stop()
    purged = Tombstone.objects.count()
    print(
        f"purge {purged:,} zombies in {runs} capped runs (cap {args.cap}): {elapsed:.1f} s "
        f"({purged / elapsed:.0f} servers/s)"
    )
    print(f"portal server list while the purge ran: {summary(timings)}")
    print(f"servers left: {VirtualServer.objects.count():,}")


if __name__ == "__main__":
    main()
