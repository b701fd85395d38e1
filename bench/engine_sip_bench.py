"""SIP engine benchmark: one worker pinned to one core, driven by SIPp on another.

Measures, per offered rate (a "ladder" of short steps):
  reg   authenticated REGISTERs/s (REGISTER -> 401 -> REGISTER with digest -> 200)
  call  full calls/s (INVITE -> 407 -> ACK -> INVITE with digest -> 100/180/200 -> ACK,
        BYE -> 200) between two local users, the callee a SIPp UAS
with the failure ratio, retransmissions, worker CPU (% of one core) and RSS.
A throwaway redis-server on a free loopback port takes the worker's events
(so the cost of the write-through is included); everything stays on 127.0.0.1.

Same approach as the team's Kamailio anchor (`run_kamailio_bench.sh`):
server on core 0, SIPp on core 1, `-r RATE -m RATE*STEP_S`, SIPp's final stat row.

    .venv/bin/python bench/engine_sip_bench.py                # both ladders
    .venv/bin/python bench/engine_sip_bench.py --scenario reg --rates 1000,2000 --step 10
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_SIPP = ROOT / "bench" / "sipp"
TEST_SIPP = ROOT / "tests" / "sipnodes" / "engine" / "sipp"
REALM = "bench.sipcloud"
CLK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    for _ in range(100):
        port = random.randint(20000, 59000)
        u, t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket()
        try:
            u.bind(("127.0.0.1", port))
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            u.close()
            t.close()
    raise RuntimeError("no free port")


def ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Bench:
    def __init__(self, out: Path, users: int, server_core: int, sipp_core: int) -> None:
        self.out = out
        self.users = users
        self.server_core = server_core
        self.sipp_core = sipp_core
        self.procs: list[subprocess.Popen] = []

    def taskset(self, core: int) -> list[str]:
        return ["taskset", "-c", str(core)] if shutil.which("taskset") else []

    def start_redis(self) -> str:
        port = free_port()
        # On the load generator's core: the worker's core stays its own.
        proc = subprocess.Popen(
            self.taskset(self.sipp_core)
            + [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        time.sleep(0.5)
        return f"redis://127.0.0.1:{port}/0"

    def write_users(self) -> Path:
        path = self.out / "users.csv"
        lines = ["SEQUENTIAL"] + [
            f"{100000 + i};[authentication username={100000 + i} password=pw{100000 + i}]"
            for i in range(self.users)
        ]
        path.write_text("\n".join(lines) + "\n")
        (self.out / "uas.csv").write_text(
            "SEQUENTIAL\n2000;[authentication username=2000 password=pw2000]\n"
        )
        return path

    def config(self, redis_url: str) -> Path:
        def entry(number: str) -> dict:
            secret = f"{number}:{REALM}:pw{number}".encode()
            return {
                "number": number,
                "display_name": number,
                "ha1_md5": hashlib.md5(secret).hexdigest(),
                "ha1_sha256": hashlib.sha256(secret).hexdigest(),
                "call_level": 1,
            }

        self.port = free_port()
        data = {
            "server_id": 990000 + random.randint(0, 9999),
            "name": "bench",
            "realm": REALM,
            "max_clients": self.users + 10,
            "listen": {"address": "127.0.0.1", "sip_port": self.port},
            "public_address": "127.0.0.1",
            "redis_url": redis_url,
            "spool_dir": str(self.out / "spool"),
            "cdr": {"failed_call_cdr": True, "realtime_display": True},
            "users": [entry(str(100000 + i)) for i in range(self.users)] + [entry("2000")],
            "dial_plan": [],
        }
        path = self.out / "vs.json"
        path.write_text(json.dumps(data))
        return path

    def start_worker(self, config: Path) -> subprocess.Popen:
        log = (self.out / "worker.log").open("ab")
        proc = subprocess.Popen(
            self.taskset(self.server_core)
            + [
                sys.executable,
                "-m",
                "sipnodes.engine",
                "--config",
                str(config),
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            stdout=log,
            stderr=log,
        )
        self.procs.append(proc)
        time.sleep(1.5)
        self.worker = proc
        return proc

    def sipp(self, args: list[str], tag: str, timeout: float) -> int:
        cmd = (
            self.taskset(self.sipp_core)
            + ["sipp"]
            + args
            + [
                "-i",
                "127.0.0.1",
                "-nostdin",
                "-buff_size",
                "8388608",
                "-trace_screen",
                "-screen_file",
                str(self.out / f"{tag}_screen.log"),
            ]
        )
        try:
            return subprocess.run(
                cmd, cwd=self.out, capture_output=True, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            return -9

    def start_uas(self) -> subprocess.Popen:
        uas_port = free_port()
        rc = self.sipp(
            [
                f"127.0.0.1:{self.port}",
                "-sf",
                str(TEST_SIPP / "register.xml"),
                "-inf",
                str(self.out / "uas.csv"),
                "-p",
                str(uas_port),
                "-m",
                "1",
            ],
            "uas_register",
            20,
        )
        if rc != 0:
            raise RuntimeError("UAS registration failed")
        proc = subprocess.Popen(
            self.taskset(self.sipp_core)
            + [
                "sipp",
                "-sf",
                str(TEST_SIPP / "uas_answer.xml"),
                "-i",
                "127.0.0.1",
                "-p",
                str(uas_port),
                "-nostdin",
                "-buff_size",
                "8388608",
            ],
            cwd=self.out,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        time.sleep(0.5)
        return proc

    def step(self, name: str, rate: int, step_s: int, args: list[str]) -> dict:
        tag = f"{name}_r{rate}"
        stat = self.out / f"{tag}_stat.csv"
        pid = self.worker.pid
        t0, k0 = time.monotonic(), ticks(pid)
        rc = self.sipp(
            [f"127.0.0.1:{self.port}"]
            + args
            + [
                "-p",
                str(free_port()),
                "-r",
                str(rate),
                "-m",
                str(rate * step_s),
                "-recv_timeout",
                "10000",
                "-timeout",
                f"{step_s * 3 + 20}s",
                "-trace_stat",
                "-stf",
                str(stat),
                "-fd",
                "1",
            ],
            tag,
            step_s * 3 + 40,
        )
        wall, cpu = time.monotonic() - t0, (ticks(pid) - k0) / CLK
        with stat.open(newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
        last = dict(zip(rows[0], rows[-1], strict=False))
        ok, failed = int(last["SuccessfulCall(C)"]), int(last["FailedCall(C)"])
        attempted = rate * step_s
        row = {
            "scenario": name,
            "offered/s": rate,
            "ok": ok,
            "failed": failed,
            "missing": attempted - ok - failed,
            "fail%": round(100 * (attempted - ok) / attempted, 3),
            "achieved/s": round(ok / wall, 1),
            "retrans": int(last["Retransmissions(C)"]),
            "worker_cpu%": round(100 * cpu / wall, 1),
            "rss_mb": round(rss_mb(pid), 1),
            "sipp_rc": rc,
        }
        print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        time.sleep(3)  # let transactions drain before the next step
        return row

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)


def table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scenario", choices=["reg", "call", "both"], default="both")
    p.add_argument("--reg-rates", default="500,1000,1500,2000,2500,3000")
    p.add_argument("--call-rates", default="100,200,300,400,500,600")
    p.add_argument("--step", type=int, default=10, help="seconds per rate")
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--server-core", type=int, default=0)
    p.add_argument("--sipp-core", type=int, default=1)
    p.add_argument("--out", default="")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="engine_bench_"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"output dir: {out}")
    bench = Bench(out, args.users, args.server_core, args.sipp_core)
    rows: list[dict] = []
    try:
        redis_url = bench.start_redis()
        users_csv = bench.write_users()
        worker = bench.start_worker(bench.config(redis_url))
        print(f"worker pid {worker.pid}, idle RSS {rss_mb(worker.pid):.1f} MB, port {bench.port}")
        if args.scenario in ("reg", "both"):
            for rate in [int(r) for r in args.reg_rates.split(",")]:
                rows.append(
                    bench.step(
                        "reg",
                        rate,
                        args.step,
                        ["-sf", str(TEST_SIPP / "register.xml"), "-inf", str(users_csv)],
                    )
                )
        if args.scenario in ("call", "both"):
            bench.start_uas()
            for rate in [int(r) for r in args.call_rates.split(",")]:
                rows.append(
                    bench.step(
                        "call",
                        rate,
                        args.step,
                        [
                            "-sf",
                            str(BENCH_SIPP / "call_uac_auth.xml"),
                            "-inf",
                            str(users_csv),
                            "-s",
                            "2000",
                        ],
                    )
                )
    finally:
        bench.close()
    print()
    print(table(rows))
    (out / "results.md").write_text(table(rows) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
