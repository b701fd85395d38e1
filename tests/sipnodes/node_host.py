"""A real SIP host for end-to-end tests: its own supervisord, node agent and workers.

The agent is a real Celery worker on queue `host.<name>` that reads the test database,
so tests using it need `transactional_db`. Everything lives in a temporary directory;
every process started here is stopped here.
"""

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from sipnodes.models import SipHost, VirtualServer
from sipnodes.node_agent import Node
from sipnodes.supervisor import Supervisor
from tests.sipnodes.private_servers import manage_env
from tests.support import PYTHON, ROOT, run_script, stop_process, wait_until

EVENTS_REDIS_URL = "redis://127.0.0.1:6379/10"


def database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def platform_env(var_dir: Path, **extra: str) -> dict[str, str]:
    """Processes that share the test database, the tests' broker and the events stream."""
    return manage_env(
        database_url(),
        REDIS_URL=EVENTS_REDIS_URL,
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        SIPCLOUD_VAR_DIR=str(var_dir),
        **extra,
    )


@dataclass
class NodeHost:
    host: SipHost
    node: Node
    env: dict[str, str]

    @property
    def supervisor(self) -> Supervisor:
        return self.node.supervisor

    def start(self) -> "NodeHost":
        run_script("start-node", self.env, self.host.name)
        if not wait_until(self._agent_ready, 20, 0.2):
            raise RuntimeError(f"node agent did not start:\n{self.agent_log()}")
        return self

    def _agent_ready(self) -> bool:
        info = self.supervisor.info("node-agent")
        return info is not None and info.state == "RUNNING" and "ready." in self.agent_log()

    def agent_log(self) -> str:
        path = self.node.directory / "log" / "node-agent.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        run_script("stop-node", self.env, self.host.name)

    def worker_pid(self, server_id: int) -> int:
        info = self.supervisor.info(f"vs-{server_id}")
        return info.pid if info else 0


def make_node_host(tmp: Path, *, sip_ports: int = 20, base: int | None = None) -> NodeHost:
    """A host with its own port ranges (below the ephemeral range) and a fresh queue name."""
    base = base or 21000 + secrets.randbelow(8) * 1000
    name = f"e2e-{secrets.token_hex(3)}"
    host = SipHost.objects.create(
        name=name,
        public_address="127.0.0.1",
        listen_address="127.0.0.1",
        sip_port_min=base,
        sip_port_max=base + sip_ports - 1,
        callback_port_min=base + 40,
        callback_port_max=base + 59,
        media_port_min=base + 100,
        media_port_max=base + 599,
    )
    directory = tmp / "hosts" / name
    env = platform_env(tmp, SIPCLOUD_HOST_NAME=name, SIPCLOUD_NODE_DIR=str(directory))
    return NodeHost(host=host, node=Node(host_name=name, directory=directory), env=env)


def state_of(server: VirtualServer) -> str:
    """The server's state as the agent last reported it (read again from the database)."""
    server.refresh_from_db()
    return server.actual_state


class IngestProcess:
    """`manage.py ingest_events` reading the test stream into the test database."""

    def __init__(self, var_dir: Path) -> None:
        self.log_path = var_dir / "ingest.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [PYTHON, "manage.py", "ingest_events"],
                cwd=ROOT,
                env=platform_env(var_dir),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc, timeout=10)
