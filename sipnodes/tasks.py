"""Celery tasks: thin, take ids, idempotent. `host.<name>` queues run on that host's agent."""

from celery import shared_task
from django.utils import timezone

from sipnodes import cdr_services, node_agent, selectors, services
from sipnodes.provisioning import host_queue


@shared_task(acks_late=True, soft_time_limit=100, time_limit=120)
def lapse_paid_editions() -> int:
    return services.lapse_paid_editions(today=timezone.localdate())


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def apply_server(server_id: int) -> None:
    node_agent.apply_server(node_agent.Node.from_settings(), server_id)


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60)
def restart_server(server_id: int) -> None:
    node_agent.restart_server(node_agent.Node.from_settings(), server_id)


@shared_task(acks_late=True, soft_time_limit=20, time_limit=30, expires=30)
def start_webphone(server_id: int) -> None:
    node_agent.start_webphone(node_agent.Node.from_settings(), server_id)


@shared_task(acks_late=True, soft_time_limit=100, time_limit=120)
def remove_workers(server_ids: list[int]) -> None:
    node_agent.remove_workers(node_agent.Node.from_settings(), server_ids)


@shared_task(acks_late=True, soft_time_limit=50, time_limit=60, expires=30)
def sync_host() -> None:
    node_agent.sync_host(node_agent.Node.from_settings())


@shared_task(soft_time_limit=20, time_limit=30)
def poll_hosts() -> None:
    """Ask every host's agent for a state report; a host that never answers goes stale."""
    for name in selectors.host_names():
        sync_host.apply_async(queue=host_queue(name))


@shared_task(acks_late=True, soft_time_limit=240, time_limit=300, expires=600)
def delete_expired_cdrs() -> int:
    """CDR retention per edition, in bounded batches (`cdr_services.cdr_delete_expired`)."""
    return cdr_services.cdr_delete_expired(now=timezone.now())
