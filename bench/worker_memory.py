"""What one idle worker costs: memory, start-up CPU, and which module keeps which memory.

    .venv/bin/python bench/worker_memory.py [--runs 5]   # PSS, RSS, private memory, start CPU
    .venv/bin/python bench/worker_memory.py --modules    # the memory each imported module keeps

It measures workers started as new interpreters (`python -m sipnodes.engine`);
on a node they are forked from supervisord's preloaded engine instead
(sipnodes/worker_fork.py), which `fleet_start.py` measures.

The first starts idle workers one at a time (as the fleet bench does: the node's
command line, working directory and environment, a 3-user config, Redis on
127.0.0.1) and prints medians. Alone on a host a worker's PSS includes whole
shared libraries; with hundreds of workers it tends to its private memory
(`Private_Dirty`), which is the figure to watch here, `fleet_start.py` the one
that counts.

`--modules` runs a worker twice with a hook on the import system, and gives each
module what its own loading left allocated (code, functions, classes, tables),
without the modules it imported; "runtime" is what the running worker allocated
after its imports. Once as private memory (pages: allocator overhead and the
data pages of C libraries such as OpenSSL included; the column adds up to the
worker's private total), once as bytes traced by tracemalloc (exact, Python's
allocators only).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleet_start import ROOT, cpu_seconds, runtime_config, wait_all_answer

REDIS_URL = "redis://127.0.0.1:6379/9"
PORT = 27999
# The environment of platform/node-supervisord.conf: bytecode written and shared.
NODE_ENV = {**os.environ, "PYTHONDONTWRITEBYTECODE": ""}

# Run in the child with -S, so that `site` itself (and the .pth files it runs) is measured.
# METER "private": the process's private memory (pages, allocator overhead included);
# "traced": bytes held through Python's allocators (tracemalloc), exact but partial.
MEASURE = r"""
import sys, _frozen_importlib as bootstrap

def private_bytes():
    for line in open("/proc/self/smaps_rollup"):
        if line.startswith("Private_Dirty:"):
            return int(line.split()[1]) * 1024

if METER == "traced":
    import _tracemalloc  # the C part: imports nothing
    def meter():
        return _tracemalloc.get_traced_memory()[0]
else:
    meter = private_bytes
base = private_bytes()
own, children = {}, []
original = bootstrap._load_unlocked

def load(spec):
    start = meter()
    children.append(0)
    try:
        return original(spec)
    finally:
        nested = children.pop()
        total = meter() - start
        own[spec.name] = own.get(spec.name, 0) + total - nested
        if children:
            children[-1] += total

bootstrap._load_unlocked = load
if METER == "traced":
    _tracemalloc.start()
import site
site.main()
sys.argv = ["sipnodes.engine", "--config", CONFIG]
from sipnodes.engine.__main__ import main
imported, imported_own = meter(), sum(own.values())
import os, signal, threading, json

def report():
    # what the running worker allocated, less the modules it imported meanwhile
    runtime = meter() - imported - (sum(own.values()) - imported_own)
    total = private_bytes()
    print(json.dumps([base, own, runtime, total]), file=sys.__stdout__, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Timer(IDLE, report).start()
main()
"""


def smaps_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        values[name.rstrip(":")] = int(value)
    return values


def write_config(work: Path) -> Path:
    path = work / "worker.json"
    path.write_text(json.dumps(runtime_config(1, PORT, work, REDIS_URL)))
    return path


def one_run(config: Path, idle: float) -> dict[str, float]:
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sipnodes.engine", "--config", str(config)],
        cwd=ROOT,
        env=NODE_ENV,
        stderr=subprocess.DEVNULL,
    )
    try:
        answered = wait_all_answer([PORT], time.monotonic() + 30)
        if answered is None:
            raise SystemExit("the worker did not answer OPTIONS within 30 s")
        answer_s = time.monotonic() - started
        cpu = cpu_seconds(proc.pid)
        time.sleep(idle)
        mem = smaps_kib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    return {
        "answer_s": answer_s,
        "start_cpu_s": cpu,
        "pss_mib": mem["Pss"] / 1024,
        "rss_mib": mem["Rss"] / 1024,
        "private_mib": mem["Private_Dirty"] / 1024,
    }


def runs(config: Path, count: int, idle: float) -> None:
    results = [one_run(config, idle) for _ in range(count)]
    for name in results[0]:
        values = sorted(r[name] for r in results)
        print(
            f"{name:12s} median {statistics.median(values):7.3f}  "
            f"min {values[0]:7.3f}  max {values[-1]:7.3f}"
        )


def group(name: str) -> str:
    """Engine modules one by one; other packages whole (asyncio, email...)."""
    return name if name.startswith("sipnodes.") else name.split(".")[0]


def measure(config: Path, idle: float, meter: str) -> tuple[int, dict[str, int], int, int]:
    code = f"CONFIG = {str(config)!r}\nIDLE = {idle!r}\nMETER = {meter!r}\n" + MEASURE
    proc = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=ROOT,
        env=NODE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    if not lines:
        raise SystemExit(proc.stderr[-2000:])
    base, own, runtime, total = json.loads(lines[-1])
    return base, own, runtime, total


def modules(config: Path, idle: float, top: int) -> None:
    base, own_private, runtime_private, total = measure(config, idle, "private")
    _, own_traced, runtime_traced, _ = measure(config, idle, "traced")
    rows: dict[str, list[int]] = {}  # group: [modules, private, traced]
    for name in own_private.keys() | own_traced.keys():
        row = rows.setdefault(group(name), [0, 0, 0])
        row[0] += 1
        row[1] += own_private.get(name, 0)
        row[2] += own_traced.get(name, 0)
    rows["(runtime: the running worker)"] = [0, runtime_private, runtime_traced]
    rows["(interpreter before site)"] = [0, base, 0]
    print(
        f"{'module or package':36s} {'modules':>7s} {'private KiB':>11s} "
        f"{'cumul. MiB':>10s} {'traced KiB':>10s}"
    )
    cumulative = 0
    ranked = sorted(rows.items(), key=lambda kv: -kv[1][1])
    for name, (count, private, traced) in ranked[:top]:
        cumulative += private
        print(
            f"{name:36s} {count:7d} {private / 1024:11.0f} {cumulative / 2**20:10.2f} "
            f"{traced / 1024:10.0f}"
        )
    rest = ranked[top:]
    if rest:
        private = sum(r[1] for _, r in rest)
        print(
            f"{f'{len(rest)} more':36s} {sum(r[0] for _, r in rest):7d} {private / 1024:11.0f} "
            f"{(cumulative + private) / 2**20:10.2f} {sum(r[2] for _, r in rest) / 1024:10.0f}"
        )
    print(f"idle worker's private memory (Private_Dirty): {total / 2**20:.2f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--idle", type=float, default=3.0, help="seconds idle before measuring")
    parser.add_argument("--modules", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sipcloud-worker-") as work:
        config = write_config(Path(work))
        if args.modules:
            modules(config, args.idle, args.top)
        else:
            runs(config, args.runs, args.idle)


if __name__ == "__main__":
    main()
