"""Hands a virtual server's changes to its host's node agent, once the change is committed."""

from celery import current_app
from django.db import transaction

from sipnodes.models import VirtualServer


def host_queue(host_name: str) -> str:
    return f"host.{host_name}"


def _send(task: str, server: VirtualServer) -> None:
    # Read now: a server deleted in the same transaction has no pk by commit time.
    args, queue = [server.pk], host_queue(server.host.name)
    transaction.on_commit(
        lambda: current_app.send_task(f"sipnodes.tasks.{task}", args=args, queue=queue)
    )


def apply_on_commit(server: VirtualServer) -> None:
    """The worker's config or desired state changed, or the server is gone: let the agent
    converge it (a worker whose server no longer exists is removed)."""
    _send("apply_server", server)


def restart_on_commit(server: VirtualServer) -> None:
    _send("restart_server", server)


def remove_workers_on_commit(host_name: str, server_ids: list[int]) -> None:
    """Servers held stopped (the zombie purge): their host's agent stops and removes their
    workers in one go, and reports each as stopped."""
    ids, queue = list(server_ids), host_queue(host_name)
    transaction.on_commit(
        lambda: current_app.send_task("sipnodes.tasks.remove_workers", args=[ids], queue=queue)
    )
