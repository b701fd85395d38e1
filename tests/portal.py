"""The portal as the platform runs it (gunicorn with the uvicorn ASGI worker,
platform/gunicorn.conf.py), on the test database and the events Redis of node_host.py:
Server-Sent Events and streamed CSV need a real ASGI server, which `live_server` is not.
Also a member's session for HTTP clients, and a small Server-Sent Events reader.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from pathlib import Path

from django.test import Client

from tenants.models import User
from tests.sipnodes.node_host import platform_env
from tests.support import ROOT, free_port, stop_process, wait_until


class Portal:
    def __init__(self, var_dir: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = var_dir / "portal.log"
        env = platform_env(
            var_dir, SIPCLOUD_BIND=f"127.0.0.1:{self.port}", WEB_CONCURRENCY=str(workers)
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(ROOT / ".venv/bin/gunicorn"), "-c", "platform/gunicorn.conf.py"],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_until(self._answers, 30, 0.1):
            self.stop()
            raise RuntimeError(f"the portal did not start:\n{self.log()}")

    def _answers(self) -> bool:
        try:
            return self.get("/accounts/login/")[0] == 200
        except OSError:
            return False

    def get(self, path: str, session: str | None = None) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Cookie": f"sessionid={session}"} if session else {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def worker_pids(self) -> list[int]:
        """gunicorn's workers: the master's children."""
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        return [int(pid) for pid in children.read_text().split()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, timeout=25)


def session_of(user: User) -> str:
    """A logged-in session of `user` in the test database (committed: transactional tests)."""
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class EventStream:
    """One Server-Sent Events connection, read event by event (HTTP/1.1, chunked)."""

    def __init__(self, portal: Portal, path: str, session: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", portal.port, timeout=10)
        self.conn.request("GET", path, headers={"Cookie": f"sessionid={session}"})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.content_type = self.response.getheader("Content-Type", "")

    def next_event(self, timeout: float = 5.0) -> tuple[str, dict]:
        """The next named event and its JSON data; comments and `retry` are skipped."""
        deadline = time.monotonic() + timeout
        name, data = "message", ""
        while time.monotonic() < deadline:
            self.conn.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                line = self.response.readline().decode().rstrip("\n")
            except TimeoutError:
                break
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data += line[6:]
            elif line == "" and data:
                return name, json.loads(data)
        raise TimeoutError(f"no event within {timeout} s")

    def close(self) -> None:
        self.conn.close()
