"""The live calls page under load, and the CSV export's speed.

One virtual server (its worker started from its rendered runtime config, as the node
agent starts it), the portal under gunicorn's ASGI worker as the platform runs it
(platform/gunicorn.conf.py, two workers), PostgreSQL and Redis on loopback. Measures:

1. worker: SIPp calls at a fixed offered rate (100 -> 101, the callee a SIPp UAS),
   achieved calls/s, failures and the worker's CPU per call, without and with
   `--viewers` Server-Sent Events viewers of the server's live page;
2. portal: the time to load the server page and the Basic calls page (sequential GETs
   while the calls run), without and with the viewers, and the portal's Redis
   subscriptions to the server's live channel with the viewers;
3. latency from a call-state change in the worker (the event's `ts`, the worker's wall
   clock) to the live page in Chromium (a MutationObserver on the row's state), p50 and
   p95 over `--changes` changes (four per call), with the viewers connected;
4. CSV export rows/s of `--csv-rows` CDRs over HTTP.

A scratch database (`sipcloud_bench_live`) and Redis database 12 are used and dropped.

    .venv/bin/python bench/live_view_bench.py [--viewers 100] [--rate 30] [--calls 900]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://sipcloud_test:sipcloud_test@127.0.0.1:5432"
)
SCRATCH_DB = "sipcloud_bench_live"
REDIS_URL = "redis://127.0.0.1:6379/12"
TEST_SIPP = ROOT / "tests" / "sipnodes" / "engine" / "sipp"
CLK = os.sysconf("SC_CLK_TCK")


def scratch_database(create: bool) -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
        if create:
            conn.execute(f"CREATE DATABASE {SCRATCH_DB}")


def setup_django() -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings.test",
        DATABASE_URL=f"{SERVER_URL}/{SCRATCH_DB}",
        REDIS_URL=REDIS_URL,
        CELERY_BROKER_URL=REDIS_URL,
        DJANGO_ALLOW_ASYNC_UNSAFE="true",  # Playwright's sync API runs a loop in this thread
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Bench:
    def __init__(self, tmp: Path) -> None:
        from django.test import Client

        from sipnodes import services
        from sipnodes.models import SipHost
        from sipnodes.runtime_config import render_runtime_config
        from tenants.models import Membership, Tenant, User
        from tests.support import free_port

        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        base = 24000
        SipHost.objects.create(
            name="bench",
            public_address="127.0.0.1",
            listen_address="127.0.0.1",
            sip_port_min=base,
            sip_port_max=base + 9,
            callback_port_min=base + 10,
            callback_port_max=base + 19,
            media_port_min=base + 100,
            media_port_max=base + 999,
        )
        tenant = Tenant.objects.create(name="Bench")
        self.server = services.server_create(tenant=tenant, name="Bench PBX")
        self.passwords = {
            n: services.local_user_create(server=self.server, number=n)[1].password
            for n in ("100", "101")
        }
        user = User.objects.create_user(username="b@example.com", email="b@example.com")
        Membership.objects.create(user=user, tenant=tenant, role="viewer")
        client = Client()
        client.force_login(user)
        self.session = client.cookies["sessionid"].value

        config = render_runtime_config(self.server, redis_url=REDIS_URL, spool_dir=tmp / "spool")
        config_path = tmp / "worker.json"
        config_path.write_text(json.dumps(config))
        self.worker = self.start(
            [sys.executable, "-m", "sipnodes.engine", "--config", str(config_path)], "worker"
        )
        self.port = free_port()
        env = {
            **os.environ,
            "SIPCLOUD_BIND": f"127.0.0.1:{self.port}",
            "WEB_CONCURRENCY": "2",
            "SIPCLOUD_VAR_DIR": str(tmp),
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE")
        self.portal = self.start(
            [str(ROOT / ".venv/bin/gunicorn"), "-c", "platform/gunicorn.conf.py"], "portal", env
        )
        self.wait_portal()
        self.uas_port = free_port()
        self.sipp(["-sf", str(TEST_SIPP / "register.xml"), "-inf", self.csv("101"),
                   "-p", str(self.uas_port), "-m", "1"], 20)  # fmt: skip
        self.uas = self.start(
            ["sipp", "-sf", str(TEST_SIPP / "uas_answer.xml"), "-i", "127.0.0.1",
             "-p", str(self.uas_port), "-nostdin", "-buff_size", "8388608"], "uas",
        )  # fmt: skip

    def start(self, args: list[str], name: str, env: dict | None = None) -> subprocess.Popen:
        with (self.tmp / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=log)
        self.procs.append(proc)
        return proc

    def csv(self, number: str) -> str:
        path = self.tmp / f"user{number}.csv"
        password = self.passwords[number]
        path.write_text(
            f"SEQUENTIAL\n{number};[authentication username={number} password={password}]\n"
        )
        return str(path)

    def sipp(self, args: list[str], timeout: float) -> int:
        from tests.support import free_port

        cmd = ["sipp", f"127.0.0.1:{self.server.sip_port}", *args, "-i", "127.0.0.1",
               "-nostdin", "-buff_size", "8388608"]  # fmt: skip
        if "-p" not in args:
            cmd += ["-p", str(free_port())]
        result = subprocess.run(cmd, cwd=self.tmp, capture_output=True, timeout=timeout)
        return result.returncode

    def wait_portal(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.get(f"/servers/{self.server.pk}/")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError((self.tmp / "portal.log").read_text())

    def get(self, path: str) -> tuple[int, float]:
        started = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path, headers={"Cookie": f"sessionid={self.session}"})
        response = conn.getresponse()
        response.read()
        conn.close()
        return response.status, time.perf_counter() - started

    def calls(self, rate: int, count: int) -> dict[str, float]:
        """`count` calls at `rate`/s while the portal's pages are timed."""
        pages = [f"/servers/{self.server.pk}/", f"/servers/{self.server.pk}/calls/basic/"]
        times: list[float] = []
        done = threading.Event()

        def time_pages() -> None:
            while not done.is_set():
                for page in pages:
                    status, seconds = self.get(page)
                    assert status == 200, status
                    times.append(seconds)

        timer = threading.Thread(target=time_pages)
        cpu0, t0 = cpu_seconds(self.worker.pid), time.monotonic()
        timer.start()
        stat = self.tmp / f"calls{time.monotonic_ns()}.csv"
        rc = self.sipp(
            ["-sf", str(TEST_SIPP / "uac_call.xml"), "-inf", self.csv("100"), "-s", "101",
             "-r", str(rate), "-m", str(count), "-trace_stat", "-stf", str(stat), "-fd", "1"],
            count / rate * 3 + 60,
        )  # fmt: skip
        wall = time.monotonic() - t0
        done.set()
        timer.join()
        cpu = cpu_seconds(self.worker.pid) - cpu0
        rows = [line.split(";") for line in stat.read_text().splitlines()]
        last = dict(zip(rows[0], rows[-1], strict=False))
        ok = int(last["SuccessfulCall(C)"])
        return {
            "sipp_rc": rc,
            "ok": ok,
            "failed": int(last["FailedCall(C)"]),
            "calls/s": ok / wall,
            "worker_cpu_ms/call": 1000 * cpu / max(ok, 1),
            "page_p50_ms": 1000 * statistics.median(times),
            "page_p95_ms": 1000 * percentile(times, 95),
            "page_loads": len(times),
        }

    def subscriptions(self) -> int:
        """The portal's subscriptions to the server's live channel: one per portal worker
        process that has viewers of it, whatever their number (sipnodes/live_hub.py)."""
        from sipnodes.engine.events import live_channel

        channel = live_channel(str(self.server.uid))
        return dict(redis.Redis.from_url(REDIS_URL).pubsub_numsub(channel))[channel.encode()]

    def latency(self, changes: int) -> dict[str, float]:
        """Worker state change -> the live page's row in Chromium, over `changes` changes."""
        from playwright.sync_api import sync_playwright

        from tests.browser.conftest import CHROMIUM_ARGS

        observer = """() => {
          window.latencies = [];
          new MutationObserver((records) => {
            const now = Date.now() / 1000;
            for (const r of records) {
              if (r.attributeName === "data-state" && r.oldValue !== r.target.dataset.state)
                window.latencies.push(now - parseFloat(r.target.dataset.ts));
            }
          }).observe(document.getElementById("live-rows"),
                     {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["data-state"]});
        }"""
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
            )
            context = browser.new_context()
            context.add_cookies(
                [{"name": "sessionid", "value": self.session,
                  "url": f"http://127.0.0.1:{self.port}"}]
            )  # fmt: skip
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{self.port}/servers/{self.server.pk}/live/")
            page.wait_for_function("document.getElementById('live-status').textContent"
                                   ".startsWith('Live')")  # fmt: skip
            page.evaluate(observer)
            # A new row's first state is an insertion, not an attribute change: three of
            # each call's four states are counted.
            calls = -(-changes // 3)
            self.sipp(
                ["-sf", str(TEST_SIPP / "uac_call.xml"), "-inf", self.csv("100"), "-s", "101",
                 "-r", "2", "-m", str(calls)],
                calls + 60,
            )  # fmt: skip
            page.wait_for_function(f"window.latencies.length >= {changes}", timeout=30_000)
            latencies = page.evaluate("window.latencies")[:changes]
            browser.close()
        return {
            "changes": len(latencies),
            "p50_ms": 1000 * statistics.median(latencies),
            "p95_ms": 1000 * percentile(latencies, 95),
            "max_ms": 1000 * max(latencies),
        }

    def export(self, rows: int) -> dict[str, float]:
        from tests.cdr_data import insert_cdrs

        insert_cdrs(server_id=self.server.pk, count=rows, newest=datetime.now(UTC))
        total, started = 0, time.perf_counter()
        for kind in ("basic", "failed"):
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            path = f"/servers/{self.server.pk}/calls/{kind}/export.csv"
            conn.request("GET", path, headers={"Cookie": f"sessionid={self.session}"})
            response = conn.getresponse()
            while piece := response.read(256 * 1024):
                total += piece.count(b"\n")
            conn.close()
        seconds = time.perf_counter() - started
        exported = total - 2  # a header row each
        return {"rows": exported, "seconds": seconds, "rows/s": exported / seconds}

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()


class Viewers:
    """`count` Server-Sent Events connections to the live page's stream, in a thread.

    They connect ten at a time, as viewers arrive: a hundred opened in the same instant
    each take a PostgreSQL connection for their session and membership check at once
    (docs/cdr-and-live-calls.md, "Limits").
    """

    WAVE = 10

    def __init__(self, bench: Bench, count: int) -> None:
        self.events = 0
        self.connected = 0
        self.path = f"/servers/{bench.server.pk}/live/events/"
        self.bench = bench
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.tasks = []
        for wave in range(0, count, self.WAVE):
            for _ in range(min(self.WAVE, count - wave)):
                self.tasks.append(asyncio.run_coroutine_threadsafe(self.view(), self.loop))
            deadline = time.monotonic() + 30
            while self.connected < len(self.tasks) and time.monotonic() < deadline:
                time.sleep(0.05)
        if self.connected < count:
            raise RuntimeError(f"only {self.connected} of {count} viewers connected")

    async def view(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.bench.port)
        writer.write(
            f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Cookie: sessionid={self.bench.session}\r\n\r\n".encode()
        )
        await writer.drain()
        name = b""
        try:
            while line := await reader.readline():
                if line.startswith(b"event: "):
                    name = line[7:].strip()
                    self.connected += name == b"snapshot"
                elif line.startswith(b"data: ") and name == b"changes":
                    self.events += line.count(b'"call_id"')
        finally:
            writer.close()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        time.sleep(0.5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=100)
    parser.add_argument("--rate", type=int, default=30, help="offered calls per second")
    parser.add_argument("--calls", type=int, default=900)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--csv-rows", type=int, default=100_000)
    args = parser.parse_args()

    scratch_database(create=True)
    setup_django()
    tmp = Path(tempfile.mkdtemp(prefix="live-bench-"))
    bench = Bench(tmp)
    try:
        time.sleep(1)  # the worker binds its ports
        alone = bench.calls(args.rate, args.calls)
        viewers = Viewers(bench, args.viewers)
        subscriptions = bench.subscriptions()
        watched = bench.calls(args.rate, args.calls)
        latency = bench.latency(args.changes)
        received = viewers.events
        viewers.close()
        export = bench.export(args.csv_rows)
    finally:
        bench.close()
        redis.Redis.from_url(REDIS_URL).flushdb()
        from django.db import connections

        connections.close_all()
        scratch_database(create=False)

    print(f"\nworker and portal, {args.calls} calls offered at {args.rate}/s:")
    print(f"{'':>22} {'without viewers':>16} {f'with {args.viewers} viewers':>18}")
    for key in alone:
        print(f"{key:>22} {alone[key]:>16.1f} {watched[key]:>18.1f}")
    print(f"call events the {args.viewers} viewers received: {received}")
    print(f"Redis subscriptions to the server's live channel with the viewers: {subscriptions}")
    print(
        f"\nlatency worker state change -> Chromium row, {latency['changes']} changes "
        f"(with the viewers): p50 {latency['p50_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms, "
        f"max {latency['max_ms']:.1f} ms"
    )
    print(
        f"\nCSV export: {export['rows']} rows in {export['seconds']:.1f} s, "
        f"{export['rows/s']:,.0f} rows/s"
    )


if __name__ == "__main__":
    main()
