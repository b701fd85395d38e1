"""Start N idle virtual servers on one host and measure the fleet.

Uses the node agent's own pieces (program files, `Supervisor.update()`), a private
supervisord and real workers, all on 127.0.0.1. Prints: time from `update()` until
every worker answers OPTIONS, memory per worker (PSS) and in total, supervisord's RSS.

    .venv/bin/python bench/fleet_start.py [--servers 200] [--base-port 26000] [--exec]

Workers are forked from supervisord's preloaded engine, as on a node
(sipnodes/worker_fork.py); `--exec` starts each as a new interpreter instead.
"""

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sipnodes.supervisor import Supervisor, program_section, write_atomically  # noqa: E402
from tests.sipnodes.private_supervisord import supervisord_conf  # noqa: E402


def runtime_config(server_id: int, port: int, work: Path, redis_url: str) -> dict:
    realm = f"vs-bench{server_id}.sipcloud"
    users = []
    for number in ("100", "101", "102"):
        secret = f"{number}:{realm}:pw{number}".encode()
        users.append(
            {
                "number": number,
                "display_name": "",
                "ha1_md5": hashlib.md5(secret).hexdigest(),
                "ha1_sha256": hashlib.sha256(secret).hexdigest(),
                "call_level": 1,
            }
        )
    return {
        "server_id": server_id,
        "name": f"bench-{server_id}",
        "realm": realm,
        "max_clients": 5,
        "listen": {
            "address": "127.0.0.1",
            "sip_port": port,
            "callback_port": 0,
            "media_ports": [0, 0],
        },
        "public_address": "127.0.0.1",
        "redis_url": redis_url,
        "spool_dir": str(work / "spool" / str(server_id)),
        "users": users,
    }


def options(port: int, sock: socket.socket) -> None:
    branch = "z9hG4bK" + os.urandom(6).hex()
    lport = sock.getsockname()[1]
    sock.sendto(
        (
            f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{lport};branch={branch};rport\r\n"
            f"From: <sip:bench@127.0.0.1>;tag=b{port}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
            f"Call-ID: bench-{port}-{branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode(),
        ("127.0.0.1", port),
    )


def wait_all_answer(ports: list[int], deadline: float) -> float | None:
    """Seconds until every port answered OPTIONS (probing the silent ones every 100 ms)."""
    start = time.monotonic()
    waiting = set(ports)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    try:
        while waiting and time.monotonic() < deadline:
            for port in waiting:
                options(port, sock)
            end = time.monotonic() + 0.1
            while time.monotonic() < end:
                try:
                    _, (_, port) = sock.recvfrom(65535)
                except TimeoutError:
                    break
                waiting.discard(port)
    finally:
        sock.close()
    return None if waiting else time.monotonic() - start


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=200)
    parser.add_argument("--base-port", type=int, default=26000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument(
        "--exec",
        action="store_true",
        help="start each worker as a new interpreter (supervisord without the worker_fork plugin)",
    )
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds idle before memory is read"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sipcloud-fleet-"))
    (work / "programs").mkdir()
    conf = work / "supervisord.conf"
    conf.write_text(supervisord_conf(work, worker_fork=not args.exec))
    subprocess.run([str(ROOT / ".venv/bin/supervisord"), "-c", str(conf)], check=True)
    supervisor = Supervisor(work / "supervisor.sock")
    for _ in range(100):
        if (work / "supervisor.sock").exists():
            break
        time.sleep(0.05)
    ports = [args.base_port + i for i in range(args.servers)]
    try:
        for i, port in enumerate(ports, start=1):
            path = work / "nodes" / f"{i}.json"
            write_atomically(path, json.dumps(runtime_config(i, port, work, args.redis_url)))
            write_atomically(
                work / "programs" / f"vs-{i}.conf",
                program_section(
                    name=f"vs-{i}",
                    command=f"{sys.executable} -m sipnodes.engine --config {path}",
                    directory=ROOT,
                    log_file=work / f"vs-{i}.log",
                    autostart=True,
                ),
            )
        started = time.monotonic()
        supervisor.update()
        update_s = time.monotonic() - started
        answered = wait_all_answer(ports, time.monotonic() + 300)
        total_s = time.monotonic() - started
        time.sleep(args.idle)  # idle: start-up garbage settles, timers touch what they touch
        infos = [i for i in supervisor.all_info() if i.state == "RUNNING"]
        pss = [pss_kib(i.pid) for i in infos]
        rss = [rss_kib(i.pid) for i in infos]
        cpu = [cpu_seconds(i.pid) for i in infos]  # start-up, and a few idle seconds
        sup_pid = int((work / "supervisord.pid").read_text())
        print(f"servers: {args.servers}, running: {len(infos)}")
        print(f"supervisor update() (add {args.servers} groups): {update_s:.2f} s")
        if answered is None:
            print("NOT all servers answered OPTIONS within 300 s")
        else:
            print(f"time until all answer OPTIONS: {total_s:.1f} s")
        print(
            f"PSS per worker: median {statistics.median(pss) / 1024:.1f} MiB, "
            f"max {max(pss) / 1024:.1f} MiB; RSS per worker median "
            f"{statistics.median(rss) / 1024:.1f} MiB"
        )
        print(f"PSS total: {sum(pss) / 1024:.0f} MiB")
        print(
            f"CPU per worker: median {statistics.median(cpu):.2f} s, max {max(cpu):.2f} s; "
            f"all workers {sum(cpu):.1f} s, supervisord {cpu_seconds(sup_pid):.1f} s"
        )
        sup_pss = pss_kib(sup_pid)
        print(
            f"supervisord RSS: {rss_kib(sup_pid) / 1024:.1f} MiB, PSS {sup_pss / 1024:.1f} MiB; "
            f"PSS of the host (workers + supervisord): {(sum(pss) + sup_pss) / 1024:.0f} MiB"
        )
    finally:
        supervisor.stop_workers(timeout=120)
        subprocess.run(
            [str(ROOT / ".venv/bin/supervisorctl"), "-c", str(conf), "shutdown"],
            capture_output=True,
        )
        for _ in range(300):
            if not (work / "supervisord.pid").exists():
                break
            time.sleep(0.1)


if __name__ == "__main__":
    main()
