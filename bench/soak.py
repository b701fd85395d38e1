"""Endurance soak: many servers, their phones re-registering every minute, and calls.

What it starts, all on 127.0.0.1 and all its own:
- a redis-server on a free port with the platform's settings (`platform/redis.conf`: AOF,
  `appendfsync always`), its files in a temp dir;
- a scratch PostgreSQL database (`sipcloud_bench_soak` on the server of BENCH_DATABASE_URL,
  default the tests' server), migrated, with `--servers` virtual servers;
- one worker per server (`python -m sipnodes.engine --config FILE`, plain subprocesses),
  each with `--clients` users plus the callee `2000`, on its own SIP port. A worker that
  dies is started again on the same config and counted as a restart;
- the ingest consumer (`manage.py ingest_events`) on that database and that Redis;
- SIPp, three processes, each sending to every server (SIPp's `setdest`, one line of its
  `-inf` CSV per server and user, the servers interleaved):
  * REGISTER load (`bench/sipp/soak_register.xml`): every client of every server registers
    with `Expires: 60`, then again every `--refresh-seconds` (55 s: a phone renews before
    its binding runs out, and a refresh at exactly 60 s would race the expiry), the first
    round spread over the first `--refresh-seconds`, from one socket: each later REGISTER
    renews the same contact from the same address (a refresh). Each registration is
    REGISTER -> 401 -> REGISTER with digest -> 200;
  * a UAS (`tests/.../uas_answer.xml`), registered as `2000` on every server, answering;
  * calls (`bench/sipp/soak_call_uac.xml`) at `--calls-per-second` in all, spread evenly
    over the servers, callers taking turns among the clients: INVITE -> 407 -> ACK ->
    INVITE with digest -> 180 -> 200 -> ACK, `--call-seconds` of talk, BYE -> 200.
Every load is bounded in count (`-m`) and in time (`-timeout`); the whole run stops by
itself within `--minutes` + 2 minutes (an alarm ends it and prints what it has).

Printed at the end: REGISTERs and calls as SIPp counted them; CDRs in PostgreSQL against
the calls completed (lost = completed - answered CDRs) and duplicates; the events written
to the stream by type (read as they come by a reader of the bench's own, not a consumer
group: it holds up no trimming), in the first round and once every client is registered;
workers' RSS when idle, once every client is registered (the baseline) and at the end of
the load, per worker min/median/max, and their growth; restarts; the stream's length,
the group's pending entries and lag at the end, and the time from each call's release to
its row in PostgreSQL; ingest's CPU; and a timeline.

    .venv/bin/python bench/soak.py                       # 20 x 500 clients, 2 calls/s, 10 min
    .venv/bin/python bench/soak.py --servers 2 --clients 20 --minutes 1 --refresh-seconds 20
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BENCH_SIPP = ROOT / "bench" / "sipp"
TEST_SIPP = ROOT / "tests" / "sipnodes" / "engine" / "sipp"
SERVER_URL = os.environ.get(
    "BENCH_DATABASE_URL", "postgres://sipcloud_test:sipcloud_test@127.0.0.1:5432"
)
SCRATCH_DB = "sipcloud_bench_soak"
EXPIRES = 60  # the clients' Expires (the registrar's minimum)
FIRST_USER = 1000  # clients are 1000, 1001, ...
CALLEE = "2000"  # the SIPp UAS, registered on every server
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SIPP_COMMON = ["-i", "127.0.0.1", "-nostdin", "-buff_size", "8388608"]


class Overtime(Exception):
    """The run's time is up (the alarm), or it was asked to stop (SIGTERM, SIGINT)."""


def on_signal(signum: int, frame: object) -> None:
    raise Overtime(signal.Signals(signum).name)


_taken: set[int] = set()


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1, never handed out twice."""
    for _ in range(200):
        port = random.randint(20000, 59000)
        if port in _taken:
            continue
        u, t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket()
        try:
            u.bind(("127.0.0.1", port))
            t.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        _taken.add(port)
        return port
    raise RuntimeError("no free port")


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK


def rss_mib(pid: int) -> float:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20
    except OSError:
        return 0.0


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    if not values:
        return "-"
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def sipp_stats(path: Path) -> dict[str, str]:
    """The last row of a SIPp `-trace_stat` file (cumulative columns end in `(C)`)."""
    try:
        with path.open(newline="") as f:
            rows = [row for row in csv.reader(f, delimiter=";") if row]
    except OSError:
        return {}
    if len(rows) < 2:
        return {}
    return dict(zip(rows[0], rows[-1], strict=False))


def stat_int(stats: dict[str, str], key: str) -> int:
    try:
        return int(stats.get(key, "0") or 0)
    except ValueError:
        return 0


def failures(stats: dict[str, str]) -> str:
    """SIPp's failure counters that are not zero, e.g. `FailedMaxUDPRetrans 3`."""
    parts = [
        f"{k.removesuffix('(C)')} {v}"
        for k, v in stats.items()
        if k.startswith("Failed")
        and k.endswith("(C)")
        and k != "FailedCall(C)"
        and v not in ("0", "")
    ]
    return ", ".join(parts) or "none"


class RedisServer:
    """redis-server with platform/redis.conf (when there is one), in a temp dir, on a free port."""

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        conf = ROOT / "platform" / "redis.conf"
        args = [shutil.which("redis-server") or "redis-server"]
        args += [str(conf)] if conf.exists() else ["--appendonly", "yes", "--save", ""]
        args += ["--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
                 "--logfile", str(self.dir / "redis.log"), "--daemonize", "no"]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        client.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def scratch_database(create: bool) -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {SCRATCH_DB} WITH (FORCE)")
        if create:
            conn.execute(f"CREATE DATABASE {SCRATCH_DB}")


def django_env(redis_url: str) -> dict[str, str]:
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": f"{SERVER_URL}/{SCRATCH_DB}",
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": redis_url,
    }


def setup_django(redis_url: str) -> None:
    os.environ.update(django_env(redis_url))
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


@dataclass
class Server:
    pk: int
    uid: str
    realm: str
    port: int
    config: Path
    proc: subprocess.Popen | None = None
    rss: dict[str, float] = field(default_factory=dict)  # idle, baseline, end
    cpu_before: float = 0.0  # CPU of earlier processes of this server (restarts)
    cpu_last: float = 0.0  # the live process's CPU at the supervisor's last look


@dataclass
class Sample:
    t: float  # seconds since the load started
    reg_ok: int
    reg_failed: int
    calls_ok: int
    calls_failed: int
    cdr_rows: int
    events: int
    stream_len: int
    pending: int
    lag: int
    rss_median: float
    rss_max: float
    workers_cpu: float  # % of a core, all workers, since the previous sample
    ingest_cpu: float  # % of a core since the previous sample


class Soak:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.servers: list[Server] = []
        self.procs: list[subprocess.Popen] = []  # SIPp, stopped first
        self.ingest: subprocess.Popen | None = None
        self.ingest_cpu_before = 0.0
        self.restarts: list[tuple[float, str, int | None]] = []  # when, what, exit code
        self.stopping = threading.Event()  # the threads end
        self.supervising = True  # dead workers and ingest are started again
        self.lock = threading.Lock()
        self.redis: RedisServer | None = None
        # the bench's own stream reader
        self.events_by_type: dict[str, int] = {}
        self.events_steady: dict[str, int] = {}
        self.cdr_events: dict[str, tuple[float, bool]] = {}  # uuid -> (release, answered)
        self.cdr_event_dups = 0
        self.events_seen = 0
        # the PostgreSQL poller
        self.cdr_rows_seen: dict[str, float] = {}  # uuid -> when the row was first seen
        self.t0 = 0.0  # wall clock when the load started
        self.steady_at = float("inf")  # wall clock from which every client is registered
        self.load_end = float("inf")  # wall clock when the load ended
        self.samples: list[Sample] = []
        self.notes: list[str] = []
        self.engine = "?"

    # ---- processes -------------------------------------------------------------------

    def popen(self, args: list[str], log: str, env: dict[str, str] | None = None):
        with (self.tmp / log).open("ab") as out:
            return subprocess.Popen(args, cwd=self.tmp, env=env, stdout=out, stderr=out)

    def start_worker(self, server: Server) -> None:
        args = [sys.executable, "-m", "sipnodes.engine", "--config", str(server.config)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with (self.tmp / f"worker-{server.pk}.log").open("ab") as out:
            server.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=out)

    def start_ingest(self) -> None:
        assert self.redis is not None
        env = {**os.environ, **django_env(self.redis.url)}
        with (self.tmp / "ingest.log").open("ab") as out:
            self.ingest = subprocess.Popen(
                [sys.executable, "manage.py", "ingest_events"],
                cwd=ROOT, env=env, stdout=out, stderr=out,
            )  # fmt: skip

    def sipp(self, args: list[str], log: str) -> subprocess.Popen:
        proc = self.popen(["sipp", *args, *SIPP_COMMON], log)
        self.procs.append(proc)
        return proc

    def supervise(self) -> None:
        """Every second: a worker or ingest that died is counted and started again."""
        while not self.stopping.wait(1.0):
            with self.lock:
                if not self.supervising:
                    continue
                for server in self.servers:
                    if server.proc is not None and server.proc.poll() is not None:
                        self.restarts.append(
                            (time.time(), f"worker {server.pk}", server.proc.returncode)
                        )
                        server.cpu_before += server.cpu_last
                        self.start_worker(server)
                if self.ingest is not None and self.ingest.poll() is not None:
                    self.restarts.append((time.time(), "ingest", self.ingest.returncode))
                    self.ingest_cpu_before += self.ingest_cpu_last
                    self.start_ingest()
                # CPU of the live processes, kept for when they die
                for server in self.servers:
                    if server.proc is not None:
                        server.cpu_last = cpu_seconds(server.proc.pid)
                if self.ingest is not None:
                    self.ingest_cpu_last = cpu_seconds(self.ingest.pid)

    ingest_cpu_last = 0.0

    def workers_cpu(self) -> float:
        return sum(
            s.cpu_before + (cpu_seconds(s.proc.pid) if s.proc else 0.0) for s in self.servers
        )

    def ingest_cpu(self) -> float:
        return self.ingest_cpu_before + (cpu_seconds(self.ingest.pid) if self.ingest else 0.0)

    # ---- watchers --------------------------------------------------------------------

    def read_stream(self) -> None:
        """Every event as it is written (XREAD, no group: holds up no trimming)."""
        from sipnodes.engine.events import STREAM_KEY

        assert self.redis is not None
        client = redis.Redis.from_url(self.redis.url)
        last = "0-0"
        while not self.stopping.is_set():
            try:
                answer = client.xread({STREAM_KEY: last}, count=1000, block=500)
            except redis.ConnectionError:
                time.sleep(0.5)
                continue
            for _, entries in answer or []:
                for entry_id, fields in entries:
                    last = entry_id
                    kind = fields.get(b"type", b"?").decode()
                    added = int(entry_id.split(b"-")[0]) / 1000
                    self.events_seen += 1
                    self.events_by_type[kind] = self.events_by_type.get(kind, 0) + 1
                    if self.steady_at <= added < self.load_end:
                        self.events_steady[kind] = self.events_steady.get(kind, 0) + 1
                    if kind == "cdr":
                        data = json.loads(fields[b"data"])
                        if data["uuid"] in self.cdr_events:
                            self.cdr_event_dups += 1
                        self.cdr_events[data["uuid"]] = (data["release"], data["answered"])
        client.close()

    def poll_cdrs(self) -> None:
        """New CDR rows in PostgreSQL, every 0.2 s: when each one appeared."""
        from sipnodes.models import Cdr

        table = Cdr._meta.db_table
        with psycopg.connect(f"{SERVER_URL}/{SCRATCH_DB}", autocommit=True) as conn:
            last = 0
            while not self.stopping.wait(0.2):
                rows = conn.execute(
                    f"SELECT id, uuid FROM {table} WHERE id > %s ORDER BY id", (last,)
                ).fetchall()
                now = time.time()
                for pk, uuid in rows:
                    last = pk
                    self.cdr_rows_seen.setdefault(str(uuid), now)

    def group(self) -> tuple[int, int, int]:
        """The stream's length, the group's pending entries and its lag."""
        from sipnodes.engine.events import STREAM_KEY
        from sipnodes.ingest.consumer import GROUP

        assert self.redis is not None
        client = redis.Redis.from_url(self.redis.url)
        try:
            length = client.xlen(STREAM_KEY)
            groups = {g["name"].decode(): g for g in client.xinfo_groups(STREAM_KEY)}
        except redis.ResponseError:
            return 0, 0, 0
        finally:
            client.close()
        info = groups.get(GROUP)
        if info is None:
            return length, 0, length
        lag = info.get("lag")
        return length, int(info["pending"]), int(lag if lag is not None else -1)

    def sample(self, last: tuple[float, float, float]) -> tuple[float, float, float]:
        now, wcpu, icpu = time.time(), self.workers_cpu(), self.ingest_cpu()
        reg = sipp_stats(self.tmp / "register_stat.csv")
        calls = sipp_stats(self.tmp / "calls_stat.csv")
        length, pending, lag = self.group()
        rss = [rss_mib(s.proc.pid) for s in self.servers if s.proc]
        dt = max(now - last[0], 1e-6)
        row = Sample(
            t=now - self.t0,
            reg_ok=stat_int(reg, "SuccessfulCall(C)"),
            reg_failed=stat_int(reg, "FailedCall(C)"),
            calls_ok=stat_int(calls, "SuccessfulCall(C)"),
            calls_failed=stat_int(calls, "FailedCall(C)"),
            cdr_rows=len(self.cdr_rows_seen),
            events=self.events_seen,
            stream_len=length,
            pending=pending,
            lag=lag,
            rss_median=statistics.median(rss) if rss else 0.0,
            rss_max=max(rss, default=0.0),
            workers_cpu=100 * (wcpu - last[1]) / dt,
            ingest_cpu=100 * (icpu - last[2]) / dt,
        )
        self.samples.append(row)
        print(
            f"  t={row.t:5.0f}s  REG ok {row.reg_ok} failed {row.reg_failed}  calls ok "
            f"{row.calls_ok} failed {row.calls_failed}  CDR rows {row.cdr_rows}  events "
            f"{row.events}  stream {row.stream_len} (pending {row.pending}, lag {row.lag})  "
            f"RSS median {row.rss_median:.1f} max {row.rss_max:.1f} MiB  workers "
            f"{row.workers_cpu:.0f} %  ingest {row.ingest_cpu:.1f} %",
            flush=True,
        )
        return now, wcpu, icpu

    # ---- set-up ----------------------------------------------------------------------

    def make_servers(self) -> None:
        from sipnodes.models import SipHost, VirtualServer
        from tenants.models import Tenant
        from tests.sipnodes.engine.helpers import config_dict, user_entry

        assert self.redis is not None
        args = self.args
        host = SipHost.objects.create(name="soak", public_address="127.0.0.1")
        tenant = Tenant.objects.create(name="Soak")
        numbers = [str(FIRST_USER + i) for i in range(args.clients)] + [CALLEE]
        for i in range(args.servers):
            port = free_port()
            vs = VirtualServer.objects.create(
                tenant=tenant,
                host=host,
                name=f"soak {i}",
                realm=f"vs-soak{i}.sipcloud",
                sip_port=port,
                callback_port=0,
                media_port_first=20000 + 4 * i,
                media_port_last=20003 + 4 * i,
            )
            data = config_dict(
                [user_entry(n, realm=vs.realm) for n in numbers],
                server_id=vs.pk,
                server_uid=str(vs.uid),
                name=vs.name,
                realm=vs.realm,
                max_clients=args.clients + 1,
                listen={"address": "127.0.0.1", "sip_port": port, "media_ports": [0, 0]},
                redis_url=self.redis.url,
                spool_dir=str(self.tmp / f"spool-{vs.pk}"),
            )
            path = self.tmp / f"worker-{vs.pk}.json"
            path.write_text(json.dumps(data))
            self.servers.append(Server(vs.pk, str(vs.uid), vs.realm, port, path))

    def write_csvs(self) -> None:
        """One line per server and user, the servers interleaved: SIPp's SEQUENTIAL order
        spreads every rate evenly over the servers."""
        args = self.args
        lines = ["SEQUENTIAL"]
        calls = ["SEQUENTIAL"]
        for i in range(args.clients):
            user = str(FIRST_USER + i)
            auth = f"[authentication username={user} password=pw{user}]"
            for server in self.servers:
                lines.append(f"{user};{auth};{server.port};{EXPIRES}")
                calls.append(f"{user};{auth};{server.port}")
        (self.tmp / "register.csv").write_text("\n".join(lines) + "\n")
        (self.tmp / "calls.csv").write_text("\n".join(calls) + "\n")
        uas_expires = min(7200, max(3600, int(args.minutes * 60) + 600))
        auth = f"[authentication username={CALLEE} password=pw{CALLEE}]"
        (self.tmp / "uas.csv").write_text(
            "SEQUENTIAL\n"
            + "".join(f"{CALLEE};{auth};{s.port};{uas_expires}\n" for s in self.servers)
        )

    def wait_listening(self, deadline: float) -> None:
        """Every worker has written its start line (`listening on ...`)."""
        pending = list(self.servers)
        while pending and time.monotonic() < deadline:
            for server in list(pending):
                log = (self.tmp / f"worker-{server.pk}.log").read_text(errors="replace")
                if "listening on" in log:
                    pending.remove(server)
                    self.engine = log.split("listening on", 1)[1].split(", ", 1)[-1].split()[0:2]
                    self.engine = " ".join(self.engine)
            time.sleep(0.2)
        if pending:
            raise RuntimeError(f"{len(pending)} workers did not start (see worker-*.log)")

    # ---- the run ---------------------------------------------------------------------

    def run(self) -> None:
        args = self.args
        started = time.monotonic()
        self.redis = RedisServer(self.tmp)
        scratch_database(create=True)
        setup_django(self.redis.url)
        self.make_servers()
        self.write_csvs()
        threading.Thread(target=self.read_stream, daemon=True).start()
        for server in self.servers:
            self.start_worker(server)
        self.start_ingest()
        self.wait_listening(time.monotonic() + 60)
        threading.Thread(target=self.supervise, daemon=True).start()
        threading.Thread(target=self.poll_cdrs, daemon=True).start()
        time.sleep(2)
        for server in self.servers:
            server.rss["idle"] = rss_mib(server.proc.pid) if server.proc else 0.0
        print(f"set-up {time.monotonic() - started:.1f} s; workers run the {self.engine}",
              flush=True)  # fmt: skip

        load = args.minutes * 60
        uas_port, reg_port, call_port = free_port(), free_port(), free_port()
        uas_reg = subprocess.run(
            ["sipp", "127.0.0.1:5060", "-sf", str(BENCH_SIPP / "soak_register.xml"),
             "-inf", str(self.tmp / "uas.csv"), "-p", str(uas_port), "-r", "50",
             "-m", str(len(self.servers)), "-timeout", "30s", "-recv_timeout", "5000",
             "-trace_stat", "-stf", str(self.tmp / "uas_register_stat.csv"), *SIPP_COMMON],
            cwd=self.tmp, capture_output=True, timeout=40,
        )  # fmt: skip
        uas_ok = stat_int(sipp_stats(self.tmp / "uas_register_stat.csv"), "SuccessfulCall(C)")
        self.uas_registered = uas_ok
        if uas_reg.returncode != 0:
            self.notes.append(f"the UAS registered on {uas_ok} of {len(self.servers)} servers")
        limit = f"{int(load) + 60}s"
        self.uas = self.sipp(
            ["-sf", str(TEST_SIPP / "uas_answer.xml"), "-p", str(uas_port), "-timeout", limit,
             "-trace_stat", "-stf", str(self.tmp / "uas_stat.csv"), "-fd", "10"],
            "sipp-uas.log",
        )  # fmt: skip
        time.sleep(0.5)

        total = len(self.servers) * args.clients
        registrations = int(load * total / args.refresh_seconds)
        call_count = int(load * args.calls_per_second)
        self.t0 = time.time()
        self.steady_at = self.t0 + args.refresh_seconds + 5
        reg = self.sipp(
            ["127.0.0.1:5060", "-sf", str(BENCH_SIPP / "soak_register.xml"),
             "-inf", str(self.tmp / "register.csv"), "-p", str(reg_port),
             "-r", str(total), "-rp", str(int(args.refresh_seconds * 1000)),
             "-m", str(registrations), "-l", str(max(1000, total // 5)),
             "-timeout", f"{int(load) + 20}s", "-recv_timeout", "10000",
             "-trace_stat", "-stf", str(self.tmp / "register_stat.csv"), "-fd", "10",
             "-trace_err", "-max_log_size", "20000000"],
            "sipp-register.log",
        )  # fmt: skip
        calls = self.sipp(
            ["127.0.0.1:5060", "-sf", str(BENCH_SIPP / "soak_call_uac.xml"),
             "-inf", str(self.tmp / "calls.csv"), "-s", CALLEE, "-p", str(call_port),
             "-r", f"{args.calls_per_second:g}", "-m", str(call_count),
             "-d", str(int(args.call_seconds * 1000)), "-l", "1000",
             "-timeout", f"{int(load) + 25}s", "-recv_timeout", "10000",
             "-trace_stat", "-stf", str(self.tmp / "calls_stat.csv"), "-fd", "10",
             "-trace_err", "-max_log_size", "20000000"],
            "sipp-calls.log",
        )  # fmt: skip
        print(
            f"load: {total} clients registering every {args.refresh_seconds:g} s "
            f"({total / args.refresh_seconds:.0f} registrations/s, {registrations} in all), "
            f"{args.calls_per_second:g} calls/s of {args.call_seconds:g} s "
            f"({call_count} in all), {args.minutes:g} min",
            flush=True,
        )
        every = 60.0 if load >= 300 else 15.0
        last = (self.t0, self.workers_cpu(), self.ingest_cpu())
        self.cpu_t0 = last
        baseline_taken = False
        next_sample = self.t0 + every
        load_end = self.t0 + load
        while time.time() < load_end + 30 and (reg.poll() is None or calls.poll() is None):
            now = time.time()
            if not baseline_taken and now >= self.steady_at:
                for server in self.servers:
                    server.rss["baseline"] = rss_mib(server.proc.pid) if server.proc else 0.0
                self.cpu_steady = (now, self.workers_cpu(), self.ingest_cpu())
                baseline_taken = True
            if now >= next_sample:
                last = self.sample(last)
                next_sample += every
            time.sleep(0.25)
        self.load_seconds = time.time() - self.t0
        for proc in (reg, calls):
            if proc.poll() is None:
                self.notes.append(f"SIPp {proc.args[3]} still running 30 s after the load: stopped")
                proc.terminate()
        for server in self.servers:
            server.rss["end"] = rss_mib(server.proc.pid) if server.proc else 0.0
        self.cpu_end = (time.time(), self.workers_cpu(), self.ingest_cpu())
        self.load_end = self.cpu_end[0]
        if not baseline_taken:
            self.notes.append("the load ended before every client had registered once")
        self.last_sample = self.sample(last)

        # Drain: every CDR written is in PostgreSQL and the group has nothing left.
        deadline = min(time.time() + 45, self.t_hard - 5)
        while time.time() < deadline:
            length, pending, lag = self.group()
            if pending == 0 and lag == 0 and set(self.cdr_events) <= set(self.cdr_rows_seen):
                break
            time.sleep(0.25)
        time.sleep(0.5)  # the poller's last look
        self.drained = time.time() - self.t0 - self.load_seconds
        self.end = self.group()
        self.cpu_drained = (time.time(), self.workers_cpu(), self.ingest_cpu())
        self.uas.terminate()  # SIPp writes its last statistics row as it exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.uas.wait(5)

    # ---- the report ------------------------------------------------------------------

    def report(self) -> None:
        args = self.args
        reg = sipp_stats(self.tmp / "register_stat.csv")
        calls = sipp_stats(self.tmp / "calls_stat.csv")
        uas = sipp_stats(self.tmp / "uas_stat.csv")
        rows: list[tuple[str, str]] = []

        def section(title: str) -> None:
            rows.append((title, ""))

        def add(name: str, value: object) -> None:
            rows.append(("  " + name, str(value)))

        total = len(self.servers) * args.clients
        section(
            f"{len(self.servers)} servers x {args.clients} clients = {total}, Expires "
            f"{EXPIRES}, again every {args.refresh_seconds:g} s; {args.calls_per_second:g} "
            f"calls/s of {args.call_seconds:g} s; load {getattr(self, 'load_seconds', 0):.0f} s"
        )
        add("workers' engine", self.engine)
        section("REGISTER (SIPp: REGISTER -> 401 -> REGISTER with digest -> 200)")
        sent = stat_int(reg, "OutgoingCall(C)")
        ok, failed = stat_int(reg, "SuccessfulCall(C)"), stat_int(reg, "FailedCall(C)")
        retrans = stat_int(reg, "Retransmissions(C)")
        add("registrations attempted", sent)
        add("registrations ok / failed", f"{ok} / {failed}")
        add(
            "REGISTER requests sent",
            f"{2 * sent + retrans} (2 per registration + {retrans} retransmissions)",
        )
        add("failures by kind", failures(reg))
        add(
            "UAS (2000) registered on",
            f"{getattr(self, 'uas_registered', 0)} of {len(self.servers)} servers",
        )
        bindings = self.bindings()
        add(
            "bindings in Redis per server at the end",
            spread(bindings, "{:.0f}") + f" (min / median / max; {args.clients + 1} expected)",
        )
        section("calls (SIPp UAC, each INVITE challenged with 407)")
        attempted = stat_int(calls, "OutgoingCall(C)")
        completed, c_failed = stat_int(calls, "SuccessfulCall(C)"), stat_int(calls, "FailedCall(C)")
        add("attempted / completed / failed", f"{attempted} / {completed} / {c_failed}")
        add("failures by kind", failures(calls))
        add(
            "retransmissions (UAC / UAS)",
            f"{stat_int(calls, 'Retransmissions(C)')} / {stat_int(uas, 'Retransmissions(C)')}",
        )
        add(
            "UAS answered / failed",
            f"{stat_int(uas, 'SuccessfulCall(C)')} / {stat_int(uas, 'FailedCall(C)')}",
        )
        section("CDRs")
        db = self.cdr_counts()
        add("rows in PostgreSQL (soak's servers)", db["rows"])
        add("answered / not answered", f"{db['answered']} / {db['rows'] - db['answered']}")
        add("LOST = completed - answered rows", completed - db["answered"])
        add("duplicates (rows sharing a Call-ID)", db["dup_call_ids"])
        add(
            "CDR events in the stream / their rows",
            f"{len(self.cdr_events)} / "
            f"{len(set(self.cdr_events) & set(self.cdr_rows_seen))} (events written twice: "
            f"{self.cdr_event_dups})",
        )
        lags = [
            self.cdr_rows_seen[u] - release
            for u, (release, _) in self.cdr_events.items()
            if u in self.cdr_rows_seen
        ]
        if lags:
            add(
                "release -> row in PostgreSQL, p50 / p95 / max",
                f"{percentile(lags, 50):.2f} / {percentile(lags, 95):.2f} / {max(lags):.2f} s",
            )
            lastcall = max(self.cdr_events, key=lambda u: self.cdr_events[u][0])
            if lastcall in self.cdr_rows_seen:
                add(
                    "the last call: release -> row",
                    f"{self.cdr_rows_seen[lastcall] - self.cdr_events[lastcall][0]:.2f} s",
                )
        section("events in the stream (the bench's own reader)")
        add(
            "written, by type",
            ", ".join(f"{k} {v}" for k, v in sorted(self.events_by_type.items())),
        )
        stream = self.stream_info()
        add("seen by the reader / entries-added", f"{self.events_seen} / {stream['added']}")
        steady = getattr(self, "cpu_steady", None)
        if steady is not None:
            span = max(self.cpu_end[0] - steady[0], 1e-6)
            per_s = ", ".join(
                f"{k} {v / span:.2f}/s" for k, v in sorted(self.events_steady.items())
            )
            add(f"once every client was registered ({span:.0f} s)", per_s or "none")
        section("ingest")
        end = getattr(self, "end", (0, 0, 0))
        add("at the end: stream length / pending / lag", " / ".join(str(v) for v in end))
        add("drain after the load", f"{getattr(self, 'drained', 0):.1f} s")
        add("dead-letter stream length", stream["dead"])
        if hasattr(self, "cpu_drained"):
            t0, _, i0 = self.cpu_t0
            t1, _, i1 = self.cpu_drained
            used = i1 - i0
            add(
                "CPU during load and drain",
                f"{used:.1f} s = {100 * used / (t1 - t0):.2f} % of a core, "
                f"{1e6 * used / max(self.events_seen, 1):.0f} us/event",
            )
            if steady is not None:
                s_used = self.cpu_end[2] - steady[2]
                add(
                    "CPU once every client was registered",
                    f"{100 * s_used / max(self.cpu_end[0] - steady[0], 1e-6):.2f} % of a core",
                )
        section("workers")
        if hasattr(self, "cpu_end"):
            w_used = self.cpu_end[1] - self.cpu_t0[1]
            add(
                "CPU during the load, all workers",
                f"{100 * w_used / (self.cpu_end[0] - self.cpu_t0[0]):.1f} % of a core",
            )
            if steady is not None:
                w_steady = self.cpu_end[1] - steady[1]
                add(
                    "... once every client was registered",
                    f"{100 * w_steady / max(self.cpu_end[0] - steady[0], 1e-6):.1f} % of a core",
                )
        for key, name in (
            ("idle", "RSS idle, before the load"),
            ("baseline", "RSS once every client registered"),
            ("end", "RSS at the end of the load"),
        ):
            add(name + " (MiB)", spread([s.rss[key] for s in self.servers if key in s.rss]))
        growth = [
            s.rss["end"] - s.rss["baseline"]
            for s in self.servers
            if "end" in s.rss and "baseline" in s.rss
        ]
        add("growth baseline -> end (MiB)", spread(growth, "{:+.2f}"))
        if self.restarts:
            self.notes.append("a restarted worker's RSS is its new process's")
        add(
            "restarts",
            len(self.restarts)
            if not self.restarts
            else f"{len(self.restarts)}: "
            + ", ".join(f"{w} (exit {rc})" for _, w, rc in self.restarts),
        )
        add("worker and ingest log lines: WARNING / ERROR / Traceback", self.log_errors())
        section("Redis")
        add(
            "stream length / memory used / AOF size",
            f"{stream['length']} / {stream['memory']} / {stream['aof']}",
        )
        lost = completed - db["answered"]
        self.problems = [
            name
            for name, bad in (
                ("REGISTER failures", failed),
                ("call failures", c_failed),
                ("lost CDRs", lost),
                ("duplicate CDRs", db["dup_call_ids"] + self.cdr_event_dups),
                ("restarts", len(self.restarts)),
            )
            if bad
        ]
        for note in self.notes:
            rows.append(("note", note))
        rows.append(
            (
                "result",
                "problems: " + ", ".join(self.problems)
                if self.problems
                else "no REGISTER or call failure, no lost or duplicate CDR, no restart",
            )
        )
        width = max(len(k) for k, v in rows if v)
        print()
        load1, load5, _ = os.getloadavg()
        print(
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, "
            f"load average {load1:.2f} (1 min), {load5:.2f} (5 min)"
        )
        for key, value in rows:
            print(f"{key:<{width}}  {value}" if value else key)
        if self.samples:
            print("\ntimeline (t: seconds since the load started; CPU in % of one core)")
            head = (
                "t",
                "REG ok",
                "REG fail",
                "calls ok",
                "fail",
                "CDR rows",
                "events",
                "stream",
                "pending",
                "lag",
                "RSS med",
                "RSS max",
                "workers",
                "ingest",
            )
            print(" ".join(f"{h:>9}" for h in head))
            for s in self.samples:
                values = (
                    f"{s.t:.0f}",
                    s.reg_ok,
                    s.reg_failed,
                    s.calls_ok,
                    s.calls_failed,
                    s.cdr_rows,
                    s.events,
                    s.stream_len,
                    s.pending,
                    s.lag,
                    f"{s.rss_median:.1f}",
                    f"{s.rss_max:.1f}",
                    f"{s.workers_cpu:.0f}",
                    f"{s.ingest_cpu:.1f}",
                )
                print(" ".join(f"{v!s:>9}" for v in values))

    def bindings(self) -> list[float]:
        from sipnodes.engine.location import location_key

        if self.redis is None:
            return []
        client = redis.Redis.from_url(self.redis.url)
        try:
            return [float(client.hlen(location_key(s.uid))) for s in self.servers]
        except redis.ConnectionError:
            return []
        finally:
            client.close()

    def stream_info(self) -> dict[str, object]:
        from sipnodes.engine.events import STREAM_KEY
        from sipnodes.ingest.consumer import DEAD_LETTER_KEY

        out: dict[str, object] = {
            "added": "?",
            "length": "?",
            "dead": "?",
            "memory": "?",
            "aof": "?",
        }
        if self.redis is None:
            return out
        client = redis.Redis.from_url(self.redis.url)
        try:
            info = client.xinfo_stream(STREAM_KEY)
            out["added"] = info.get("entries-added", "?")
            out["length"] = info["length"]
            out["dead"] = client.xlen(DEAD_LETTER_KEY)
            out["memory"] = client.info("memory")["used_memory_human"]
            aof = client.info("persistence").get("aof_current_size")
            out["aof"] = f"{aof / 2**20:.1f}M" if aof is not None else "?"
        except (redis.ConnectionError, redis.ResponseError):
            pass
        finally:
            client.close()
        return out

    def cdr_counts(self) -> dict[str, int]:
        from sipnodes.models import Cdr

        table = Cdr._meta.db_table
        with psycopg.connect(f"{SERVER_URL}/{SCRATCH_DB}") as conn:
            rows, answered, distinct = conn.execute(
                f"SELECT count(*), count(*) FILTER (WHERE answered), count(DISTINCT call_id) "
                f"FROM {table} WHERE server_id = ANY(%s)",
                ([s.pk for s in self.servers],),
            ).fetchone()
        return {"rows": rows, "answered": answered, "dup_call_ids": rows - distinct}

    def log_errors(self) -> str:
        counts = [0, 0, 0]
        for log in [*self.tmp.glob("worker-*.log"), self.tmp / "ingest.log"]:
            with contextlib.suppress(OSError):
                for line in log.read_text(errors="replace").splitlines():
                    counts[0] += " WARNING " in line
                    counts[1] += " ERROR " in line
                    counts[2] += line.startswith("Traceback")
        return " / ".join(map(str, counts))

    # ---- tear-down -------------------------------------------------------------------

    def close(self) -> None:
        with self.lock:
            self.supervising = False
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        procs = [*self.procs, *(s.proc for s in self.servers if s.proc)]
        for server in self.servers:
            if server.proc is not None and server.proc.poll() is None:
                server.proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self.ingest is not None and self.ingest.poll() is None:
            self.ingest.terminate()
            try:
                self.ingest.wait(15)
            except subprocess.TimeoutExpired:
                self.ingest.kill()
        self.stopping.set()
        time.sleep(0.6)
        if self.redis is not None:
            self.redis.stop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--clients", type=int, default=500, help="registered clients per server")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    parser.add_argument("--calls-per-second", type=float, default=2.0, help="over all servers")
    parser.add_argument("--call-seconds", type=float, default=2.0, help="talk time of a call")
    parser.add_argument(
        "--refresh-seconds",
        type=float,
        default=55.0,
        help=f"each client registers again this often (Expires {EXPIRES})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs' temp dir")
    args = parser.parse_args()
    if not 0 < args.refresh_seconds < EXPIRES:
        parser.error(f"--refresh-seconds must be under the Expires of {EXPIRES}")
    if shutil.which("sipp") is None:
        parser.error("sipp is not installed")

    tmp = Path(tempfile.mkdtemp(prefix="sipcloud-soak-"))
    soak = Soak(args, tmp)
    budget = int(args.minutes * 60 + 85)  # + 30 s for the report and tear-down
    soak.t_hard = time.time() + budget
    for sig in (signal.SIGALRM, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    signal.alarm(budget)
    print(f"logs in {tmp}", flush=True)
    failed = False
    try:
        soak.run()
    except Overtime as exc:
        soak.notes.append(f"stopped early ({exc}): the figures are partial")
        failed = True
    except Exception as exc:  # report what there is
        soak.notes.append(f"failed: {type(exc).__name__}: {exc}")
        failed = True
        import traceback

        traceback.print_exc()
    signal.alarm(0)

    def emergency(signum: int, frame: object) -> None:
        """The report and the tear-down took too long: kill what is left, and exit."""
        procs = [*soak.procs, *(s.proc for s in soak.servers if s.proc), soak.ingest]
        procs.append(soak.redis.process if soak.redis else None)
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.kill()
        print(f"\nout of time in the report or tear-down; logs in {tmp}", flush=True)
        os._exit(3)

    signal.signal(signal.SIGALRM, emergency)
    signal.alarm(30)  # the report and the tear-down get 30 s more
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    try:
        try:
            soak.report()
        except Exception:
            import traceback

            traceback.print_exc()
            failed = True
    finally:
        soak.close()
        from django.db import connections

        connections.close_all()
        with contextlib.suppress(Exception):
            scratch_database(create=False)
        signal.alarm(0)
    failed = failed or bool(getattr(soak, "problems", True))
    if not args.keep and not failed:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"\nlogs kept in {tmp}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
