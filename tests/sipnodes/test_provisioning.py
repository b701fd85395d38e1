"""Changes reach the host's queue only once committed, and only that host's queue."""

import datetime
import json

import pytest
from django.utils import timezone

from sipnodes import services
from sipnodes.models import VirtualServer


def queued(broker) -> list[tuple[str, list]]:
    tasks = []
    for raw in reversed(broker.lrange("host.test-host", 0, -1)):  # LPUSH; BRPOP takes the tail
        message = json.loads(raw)
        tasks.append((message["headers"]["task"], message["headers"]["argsrepr"]))
    return tasks


def test_changes_are_sent_to_the_host_queue_after_commit(
    tenant_a, broker, django_capture_on_commit_callbacks
):
    server = tenant_a.server
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.server_update_settings(server=server, upnp=True)
    assert queued(broker) == []
    for callback in callbacks:
        callback()
    assert queued(broker) == [("sipnodes.tasks.apply_server", f"[{server.pk}]")]


def test_restart_and_stop_are_sent_to_the_host_queue(
    tenant_a, broker, django_capture_on_commit_callbacks
):
    server = tenant_a.server
    with django_capture_on_commit_callbacks(execute=True):
        services.server_restart(server=server)
        services.server_set_desired_state(server=server, state=VirtualServer.State.STOPPED)
    assert queued(broker) == [
        ("sipnodes.tasks.restart_server", f"[{server.pk}]"),
        ("sipnodes.tasks.apply_server", f"[{server.pk}]"),
    ]


def test_a_failed_change_sends_nothing(
    tenant_a, tenant_b, broker, django_capture_on_commit_callbacks
):
    with (
        django_capture_on_commit_callbacks(execute=True),
        pytest.raises(services.PortInUse),
    ):
        services.server_update_callback(
            server=tenant_a.server,
            app_server_address="",
            port=tenant_b.server.callback_port,
            default_caller="",
        )
    assert queued(broker) == []


def test_a_lapsed_paid_edition_falls_back_to_five_clients_and_reaches_the_worker(
    tenant_a, tenant_b, broker, django_capture_on_commit_callbacks
):
    VirtualServer.objects.filter(pk=tenant_a.server.pk).update(
        edition=20, paid_until=datetime.date(2026, 1, 31)
    )
    VirtualServer.objects.filter(pk=tenant_b.server.pk).update(
        edition=50, paid_until=datetime.date(2026, 2, 1)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert services.lapse_paid_editions(today=datetime.date(2026, 2, 1)) == 1
    lapsed = VirtualServer.objects.get(pk=tenant_a.server.pk)
    paid = VirtualServer.objects.get(pk=tenant_b.server.pk)
    assert (lapsed.edition, lapsed.paid_until) == (5, None)
    assert (paid.edition, paid.paid_until) == (50, datetime.date(2026, 2, 1))
    assert lapsed.desired_state == "running"  # it falls back, it is not stopped
    assert queued(broker) == [("sipnodes.tasks.apply_server", f"[{lapsed.pk}]")]


def test_an_edition_change_reaches_the_worker_as_a_reload_not_a_restart(
    tenant_a, broker, django_capture_on_commit_callbacks
):
    server = tenant_a.server
    paid_until = timezone.localdate() + datetime.timedelta(days=30)
    with django_capture_on_commit_callbacks(execute=True):
        services.server_change_edition(server=server, edition=10, paid_until=paid_until)
        # A later payment date alone changes nothing in the worker.
        services.server_change_edition(
            server=server, edition=10, paid_until=paid_until + datetime.timedelta(days=30)
        )
    assert queued(broker) == [("sipnodes.tasks.apply_server", f"[{server.pk}]")]


def test_a_deleted_server_is_sent_to_its_host_by_id(
    tenant_a, broker, django_capture_on_commit_callbacks
):
    server_id = tenant_a.server.pk
    with django_capture_on_commit_callbacks(execute=True):
        services.server_delete(server=tenant_a.server)
    assert queued(broker) == [("sipnodes.tasks.apply_server", f"[{server_id}]")]
