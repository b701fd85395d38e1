"""The node agent: brings one SIP host's workers to the state the models ask for.

Runs inside the host's Celery worker (queue `host.<name>`), next to the host's own
supervisord. Every step is idempotent, so a task may be retried or repeated.
"""

import json
import logging
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from sipnodes import selectors, services
from sipnodes.models import VirtualServer
from sipnodes.runtime_config import needs_restart, render_runtime_config
from sipnodes.supervisor import (
    ProcessInfo,
    Supervisor,
    SupervisorUnavailable,
    program_name,
    program_section,
    server_id_of,
    webphone_program_name,
    write_atomically,
)

log = logging.getLogger(__name__)

LOG_TAIL_BYTES = 1500
SETTLE_TIMEOUT = 8.0  # a worker is RUNNING after startsecs (1 s); FATAL after 3 quick crashes
STATE_FROM_SUPERVISOR = {
    "RUNNING": VirtualServer.State.RUNNING,
    "STARTING": VirtualServer.State.STARTING,
    "BACKOFF": VirtualServer.State.STARTING,
    "STOPPING": VirtualServer.State.STOPPED,
    "STOPPED": VirtualServer.State.STOPPED,
    "EXITED": VirtualServer.State.STOPPED,
    "FATAL": VirtualServer.State.FAILED,
    "UNKNOWN": VirtualServer.State.UNKNOWN,
}


@dataclass(frozen=True)
class Node:
    """Where this host keeps its workers' files, and how to reach its supervisord."""

    host_name: str
    directory: Path

    @classmethod
    def from_settings(cls) -> "Node":
        return cls(host_name=settings.SIPCLOUD_HOST_NAME, directory=settings.SIPCLOUD_NODE_DIR)

    @property
    def supervisor(self) -> Supervisor:
        return Supervisor(self.directory / "run" / "supervisor.sock")

    def config_path(self, server_id: int) -> Path:
        return self.directory / "nodes" / f"{server_id}.json"

    def program_path(self, server_id: int) -> Path:
        return self.directory / "programs" / f"{program_name(server_id)}.conf"

    def log_path(self, server_id: int) -> Path:
        return self.directory / "log" / f"{program_name(server_id)}.log"

    def webphone_program_path(self, server_id: int) -> Path:
        return self.directory / "programs" / f"{webphone_program_name(server_id)}.conf"

    def webphone_log_path(self, server_id: int) -> Path:
        return self.directory / "log" / f"{webphone_program_name(server_id)}.log"

    def spool_dir(self, server_id: int) -> Path:
        return self.directory / "spool" / f"vs{server_id}"


def ports_in_use(address: str, ports: list[tuple[int, int]]) -> list[str]:
    """Ports another process holds; (port, socket type) pairs, checked by binding."""
    busy = []
    for port, kind in ports:
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((address, port))
            except OSError:
                busy.append(f"{port}/{'udp' if kind == socket.SOCK_DGRAM else 'tcp'}")
    return busy


def apply_server(node: Node, server_id: int) -> None:
    """Render, write and (re)start or stop one server's worker; remove it if it left this host."""
    server = selectors.server_get(server_id=server_id)
    if server is None or server.host.name != node.host_name:
        remove_server(node, server_id)
        return
    supervisor = node.supervisor
    name = program_name(server.pk)
    config_path = node.config_path(server.pk)
    old = json.loads(config_path.read_text()) if config_path.exists() else None
    new = render_runtime_config(
        server, redis_url=settings.REDIS_URL, spool_dir=node.spool_dir(server.pk)
    )
    wanted = server.desired_state == VirtualServer.State.RUNNING
    try:
        current = supervisor.info(name)
        running = current is not None and current.state in {"RUNNING", "STARTING", "BACKOFF"}
        if wanted and not running:
            busy = ports_in_use(
                server.host.listen_address,
                [
                    (server.sip_port, socket.SOCK_DGRAM),
                    (server.sip_port, socket.SOCK_STREAM),
                    *([(server.callback_port, socket.SOCK_DGRAM)] if server.callback_port else []),
                ],
            )
            if busy:
                _undo(node, server.pk)
                services.server_record_worker_state(
                    server_id=server.pk,
                    state=VirtualServer.State.FAILED,
                    detail=f"Port {', '.join(busy)} is already in use on host {node.host_name}; "
                    "the worker was not started.",
                )
                return
        changed = write_atomically(config_path, json.dumps(new, indent=2, sort_keys=True))
        write_atomically(
            node.program_path(server.pk),
            program_section(
                name=name,
                command=f"{sys.executable} -m sipnodes.engine --config {config_path}",
                directory=settings.BASE_DIR,
                log_file=node.log_path(server.pk),
                autostart=wanted,
            ),
        )
        supervisor.update()
        if not wanted:
            supervisor.stop(name)
        elif running and needs_restart(old, new):
            supervisor.stop(name)
            supervisor.start(name)
        elif running and changed:
            supervisor.signal(name, "HUP")
        else:
            supervisor.start(name)
        report_server(node, server.pk, settled_info(supervisor, name))
        services.host_record_seen(host=server.host, detail=f"applied {name}")
    except SupervisorUnavailable as exc:
        if old is None:
            _undo(node, server.pk)
        services.server_record_worker_state(
            server_id=server.pk,
            state=VirtualServer.State.FAILED,
            detail=f"Host {node.host_name}: {exc}. Nothing was started.",
        )


def start_webphone(node: Node, server_id: int) -> None:
    """Start the server's web phone gateway: a web phone page of it opened. Idempotent.

    The gateway reads its worker's config file, so it starts only beside a configured
    worker. It stops itself (exit code 0, which supervisord leaves stopped) once its last
    page has gone; see docs/web-phone.md.
    """
    server = selectors.server_get(server_id=server_id)
    config_path = node.config_path(server_id)
    if server is None or server.host.name != node.host_name or not config_path.exists():
        return
    name = webphone_program_name(server_id)
    write_atomically(
        node.webphone_program_path(server_id),
        program_section(
            name=name,
            command=f"{sys.executable} -m sipnodes.webphone --config {config_path}",
            directory=settings.BASE_DIR,
            log_file=node.webphone_log_path(server_id),
            autostart=False,
            autorestart="unexpected",
        ),
    )
    supervisor = node.supervisor
    supervisor.update()
    info = supervisor.info(name)
    if info is None or info.state not in {"RUNNING", "STARTING", "BACKOFF", "STOPPING"}:
        supervisor.start(name)


def settled_info(supervisor: Supervisor, name: str) -> ProcessInfo | None:
    """The worker's state once it is past starting up, so the report is not a transient."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    info = supervisor.info(name)
    while info and info.state in {"STARTING", "BACKOFF"} and time.monotonic() < deadline:
        time.sleep(0.1)
        info = supervisor.info(name)
    return info


def restart_server(node: Node, server_id: int) -> None:
    supervisor = node.supervisor
    name = program_name(server_id)
    supervisor.stop(name)
    supervisor.start(name)
    report_server(node, server_id, settled_info(supervisor, name))


def remove_server(node: Node, server_id: int) -> None:
    """Stop and forget a worker whose server was deleted or moved to another host; cheap
    when it is gone already (the zombie purge removed it before deleting the server)."""
    if _undo(node, server_id) or node.supervisor.info(program_name(server_id)) is not None:
        node.supervisor.update()


def remove_workers(node: Node, server_ids: list[int]) -> None:
    """Stop and remove, all at once, the workers of servers held stopped (parked or being
    purged by the zombie purge), then report each one gone from supervisord as stopped:
    that report is what lets the purge delete the server. A server that wants to run
    again by now is left to its own `apply_server`."""
    held = selectors.host_servers_held_stopped(host_name=node.host_name, server_ids=server_ids)
    names = [program_name(server_id) for server_id in held]
    supervisor = node.supervisor
    try:
        supervisor.stop_all(names)
        for server_id in held:
            _undo(node, server_id)
        supervisor.update()
        left = {info.name for info in supervisor.all_info()}
    except SupervisorUnavailable as exc:
        services.host_record_seen(host=selectors.host_get(name=node.host_name), detail=str(exc))
        return
    services.servers_record_stopped(
        server_ids=[server_id for server_id in held if program_name(server_id) not in left],
        detail=f"Stopped and removed from host {node.host_name}: held stopped by the purge.",
    )


def _undo(node: Node, server_id: int) -> bool:
    """Remove the worker's files; whether there were any."""
    existed = node.program_path(server_id).exists() or node.config_path(server_id).exists()
    node.webphone_program_path(server_id).unlink(missing_ok=True)
    node.program_path(server_id).unlink(missing_ok=True)
    node.config_path(server_id).unlink(missing_ok=True)
    return existed


def report_server(node: Node, server_id: int, info: ProcessInfo | None) -> None:
    """Write the state read back from supervisord; a FATAL worker brings its last log lines."""
    if info is None:
        state, detail = VirtualServer.State.STOPPED, "No worker is configured on the host."
    else:
        state = STATE_FROM_SUPERVISOR.get(info.state, VirtualServer.State.UNKNOWN)
        detail = info.description
        if state == VirtualServer.State.FAILED:
            detail = (
                f"The worker keeps crashing ({info.spawn_error or info.description}). "
                f"Last lines of its log:\n{node.supervisor.log_tail(info.name, LOG_TAIL_BYTES)}"
            )
    services.server_record_worker_state(server_id=server_id, state=state, detail=detail)


def sync_host(node: Node) -> None:
    """Read every worker's state back, and note that this host is alive."""
    host = selectors.host_get(name=node.host_name)
    try:
        infos = node.supervisor.all_info()
    except SupervisorUnavailable as exc:
        services.host_record_seen(host=host, detail=str(exc))
        return
    by_server = {server_id_of(info.name): info for info in infos}
    ours = selectors.host_server_ids(host=host)
    for server_id in ours:
        report_server(node, server_id, by_server.get(server_id))
    for server_id in by_server.keys() - ours - {None}:
        remove_server(node, server_id)
    services.host_record_seen(host=host, detail=f"{len(infos)} programs")
