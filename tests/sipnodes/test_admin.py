"""The operator's view of hosts and servers (Django admin)."""

import ast
import inspect
from datetime import timedelta

from django.urls import reverse
from django.utils import timezone

from sipnodes import admin as sipnodes_admin
from sipnodes import services
from sipnodes.models import PortAllocation, SipHost, VirtualServer


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


def test_the_admin_module_never_reaches_provisioning_itself():
    tree = ast.parse(inspect.getsource(sipnodes_admin))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
            imported.add(node.module or "")
    assert not {name for name in imported if "provisioning" in name}


def change_url(server: VirtualServer) -> str:
    return reverse("admin:sipnodes_virtualserver_change", args=[server.pk])


def change_form(server: VirtualServer, **changes: object) -> dict[str, object]:
    """The server's change form as posted unchanged, with `changes` applied."""
    users = list(server.users.order_by("pk"))
    data: dict[str, object] = {
        "name": server.name,
        "out_group_prefix": server.out_group_prefix,
        "prompt_language": server.prompt_language,
        "digest_algorithms": server.digest_algorithms,
        "callback_app_server_address": server.callback_app_server_address,
        "callback_default_caller": server.callback_default_caller,
        "users-TOTAL_FORMS": len(users),
        "users-INITIAL_FORMS": len(users),
        "users-MIN_NUM_FORMS": 0,
        "users-MAX_NUM_FORMS": 1000,
    }
    for flag in ("media_relay", "upnp", "cdr_failed_calls", "cdr_realtime_display"):
        if getattr(server, flag):
            data[flag] = "on"
    for i, user in enumerate(users):
        data |= {
            f"users-{i}-id": user.pk,
            f"users-{i}-server": server.pk,
            f"users-{i}-display_name": user.display_name,
            f"users-{i}-call_level": user.call_level,
        }
    return data | changes


def test_the_server_form_edits_only_what_a_service_changes(operator_client, tenant_a):
    response = operator_client.get(change_url(tenant_a.server))
    editable = set(response.context["adminform"].form.fields)
    assert editable == set(services.SYSTEM_SETTINGS) | set(sipnodes_admin.CALLBACK_FIELDS)


def test_operator_edits_go_through_the_services(
    operator_client, tenant_a, django_capture_on_commit_callbacks
):
    server = tenant_a.server
    posted = change_form(server, upnp="on", callback_default_caller="200", edition=500)
    with django_capture_on_commit_callbacks() as callbacks:
        response = operator_client.post(change_url(server), posted)
    assert response.status_code == 302
    server = VirtualServer.objects.get(pk=server.pk)
    assert (server.upnp, server.callback_default_caller, server.edition) == (True, "200", 5)
    assert len(callbacks) == 2  # the settings service and the call-back service

    with django_capture_on_commit_callbacks() as callbacks:
        operator_client.post(change_url(server), change_form(server))
    assert callbacks == []  # nothing changed, nothing sent


def test_operator_edits_and_deletes_local_users_through_the_services(
    operator_client, tenant_a, django_capture_on_commit_callbacks
):
    server = tenant_a.server
    services.local_user_create(server=server, number="101")
    posted = change_form(server, **{"users-0-display_name": "Front desk", "users-1-DELETE": "on"})
    with django_capture_on_commit_callbacks() as callbacks:
        response = operator_client.post(change_url(server), posted)
    assert response.status_code == 302
    assert [(u.number, u.display_name) for u in server.users.all()] == [("100", "Front desk")]
    assert len(callbacks) == 2

    user = server.users.get()
    user_url = reverse("admin:sipnodes_localuser_delete", args=[user.pk])
    with django_capture_on_commit_callbacks() as callbacks:
        operator_client.post(user_url, {"post": "yes"})
    assert not server.users.exists() and len(callbacks) == 1


def test_a_server_deleted_by_an_operator_is_handed_to_its_agent(
    operator_client, tenant_a, tenant_b, django_capture_on_commit_callbacks
):
    url = reverse("admin:sipnodes_virtualserver_delete", args=[tenant_a.server.pk])
    with django_capture_on_commit_callbacks() as callbacks:
        operator_client.post(url, {"post": "yes"})
    assert not VirtualServer.objects.filter(pk=tenant_a.server.pk).exists()
    assert not PortAllocation.objects.filter(server_id=tenant_a.server.pk).exists()
    assert len(callbacks) == 2  # the task to its agent, the deletion of its live state

    with django_capture_on_commit_callbacks() as callbacks:
        operator_client.post(
            "/admin/sipnodes/virtualserver/",
            {"action": "delete_selected", "_selected_action": [tenant_b.server.pk], "post": "yes"},
        )
    assert not VirtualServer.objects.exists() and not PortAllocation.objects.exists()
    assert len(callbacks) == 2


def test_the_port_ledger_is_read_only_to_operators(operator_client, tenant_a):
    allocation = PortAllocation.objects.first()
    assert operator_client.get("/admin/sipnodes/portallocation/").status_code == 200
    url = reverse("admin:sipnodes_portallocation_change", args=[allocation.pk])
    operator_client.post(url, {"port": 1, "purpose": "sip"})
    allocation.refresh_from_db()
    assert allocation.port != 1
    delete = reverse("admin:sipnodes_portallocation_delete", args=[allocation.pk])
    assert operator_client.post(delete, {"post": "yes"}).status_code == 403
