"""The operator's view of hosts and servers (Django admin)."""

from datetime import timedelta

from django.utils import timezone

from sipnodes.models import SipHost, VirtualServer


def test_an_unreachable_host_is_named_as_such(operator_client, host):
    html = operator_client.get("/admin/sipnodes/siphost/").content.decode()
    assert "unreachable: its node agent has never reported" in html

    SipHost.objects.filter(pk=host.pk).update(last_seen_at=timezone.now() - timedelta(minutes=5))
    html = operator_client.get("/admin/sipnodes/siphost/").content.decode()
    assert "unreachable: no report since" in html

    SipHost.objects.filter(pk=host.pk).update(last_seen_at=timezone.now())
    html = operator_client.get("/admin/sipnodes/siphost/").content.decode()
    assert "reporting" in html and "unreachable" not in html


def test_the_tenant_page_warns_when_the_host_is_not_reporting(owner_client, tenant_a):
    html = owner_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert f"Host {tenant_a.server.host.name} is not reporting" in html
    SipHost.objects.update(last_seen_at=timezone.now())
    html = owner_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert "is not reporting" not in html


def test_servers_list_shows_state_and_restarts_to_operators(operator_client, tenant_a):
    VirtualServer.objects.filter(pk=tenant_a.server.pk).update(
        actual_state="failed", restart_count=4
    )
    html = operator_client.get("/admin/sipnodes/virtualserver/").content.decode()
    assert '<td class="field-restart_count">4</td>' in html
    assert '<td class="field-actual_state">Failed</td>' in html


def test_operators_stop_servers_through_the_service(
    operator_client, tenant_a, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        operator_client.post(
            "/admin/sipnodes/virtualserver/",
            {"action": "stop_servers", "_selected_action": [tenant_a.server.pk]},
        )
    assert VirtualServer.objects.get(pk=tenant_a.server.pk).desired_state == "stopped"
    assert len(callbacks) == 1
