"""Tenant isolation: another tenant's objects look missing; viewers change nothing."""

import pytest
from django.urls import reverse

from sipnodes import features_services
from sipnodes.models import FeatureCode, HuntGroup, HuntGroupMember, LocalUser, VirtualServer
from tenants import urls as tenant_urls
from tests.factories import TenantWithServer, make_member


def hunt_group(t: TenantWithServer) -> HuntGroup:
    """The tenant's hunt group 600 (made the first time it is asked for)."""
    group = HuntGroup.objects.filter(server=t.server, number="600").first()
    return group or features_services.hunt_group_create(
        server=t.server, number="600", name="Sales", mode="simultaneous", members=[t.user]
    )


# Every tenant-object URL, with the arguments it takes from a tenant's server and user.
OBJECT_URLS = {
    "server-detail": lambda t: [t.server.pk],
    "server-settings": lambda t: [t.server.pk],
    "server-callback": lambda t: [t.server.pk],
    "server-power": lambda t: [t.server.pk, "stop"],
    "user-create": lambda t: [t.server.pk],
    "user-edit": lambda t: [t.server.pk, t.user.pk],
    "user-delete": lambda t: [t.server.pk, t.user.pk],
    "user-reset-password": lambda t: [t.server.pk, t.user.pk],
    "cdr-table": lambda t: [t.server.pk, "basic"],
    "cdr-export": lambda t: [t.server.pk, "failed"],
    "live-calls": lambda t: [t.server.pk],
    "live-calls-events": lambda t: [t.server.pk],
    "user-call-settings": lambda t: [t.server.pk, t.user.pk],
    "hunt-group-list": lambda t: [t.server.pk],
    "hunt-group-create": lambda t: [t.server.pk],
    "hunt-group-edit": lambda t: [t.server.pk, hunt_group(t).pk],
    "hunt-group-delete": lambda t: [t.server.pk, hunt_group(t).pk],
    "feature-codes": lambda t: [t.server.pk],
}
# Pages that only show: a POST to them is refused before anything is looked up (405).
READ_ONLY_URLS = {
    "server-detail",
    "cdr-table",
    "cdr-export",
    "live-calls",
    "live-calls-events",
    "hunt-group-list",
}
# The account page takes no id: it shows the member's own tenant (tests/tenants/test_i18n.py).
NOT_OBJECT_URLS = {"signup", "verify-email", "server-list", "account", "set-language"}


def test_every_tenant_url_is_covered_here():
    names = {p.name for p in tenant_urls.urlpatterns}
    assert names == set(OBJECT_URLS) | NOT_OBJECT_URLS


def snapshot() -> list:
    return [
        list(VirtualServer.objects.order_by("pk").values()),
        list(LocalUser.objects.order_by("pk").values()),
        list(HuntGroup.objects.order_by("pk").values()),
        list(HuntGroupMember.objects.order_by("pk").values()),
        list(FeatureCode.objects.order_by("pk").values()),
    ]


@pytest.mark.parametrize("name", sorted(OBJECT_URLS))
@pytest.mark.parametrize("role", ["owner", "admin", "viewer"])
def test_a_member_of_a_gets_404_for_b_objects(client, tenant_a, tenant_b, name, role):
    client.force_login(make_member(tenant_a.tenant, role))
    url = reverse(f"tenants:{name}", args=OBJECT_URLS[name](tenant_b))
    before = snapshot()
    assert client.get(url).status_code in {404, 405}
    post = client.post(
        url,
        {
            "name": "pwned",
            "number": "666",
            "port": 0,
            "secret_action": "generate",
            "dnd": "on",
            "reset": "1",
            "members": "100",
        },
    )
    assert post.status_code == (405 if name in READ_ONLY_URLS else 404)
    assert snapshot() == before


def test_a_user_of_a_cannot_be_reached_through_a_server_of_b(client, tenant_a, tenant_b):
    client.force_login(make_member(tenant_a.tenant, "owner"))
    url = reverse("tenants:user-edit", args=[tenant_a.server.pk, tenant_b.user.pk])
    assert client.get(url).status_code == 404


def test_the_server_list_shows_only_own_servers(client, tenant_a, tenant_b):
    client.force_login(make_member(tenant_a.tenant, "viewer"))
    html = client.get(reverse("tenants:server-list")).content.decode()
    assert tenant_a.server.name in html
    assert tenant_b.server.name not in html


@pytest.mark.parametrize("name", sorted(OBJECT_URLS))
def test_a_viewer_cannot_change_anything(viewer_client, tenant_a, name):
    url = reverse(f"tenants:{name}", args=OBJECT_URLS[name](tenant_a))
    before = snapshot()
    response = viewer_client.post(
        url,
        {
            "name": "changed",
            "number": "555",
            "display_name": "x",
            "call_level": 1,
            "out_group_prefix": "0",
            "prompt_language": "en",
            "port": 0,
            "app_server_address": "",
            "secret_action": "generate",
            "dnd": "on",
            "no_answer_seconds": 20,
            "pickup_group": 0,
            "mode": "simultaneous",
            "members": "100",
            "ring_seconds": 15,
            "timeout": 60,
            "dnd_on": "*55",
            "reset": "1",
        },
    )
    assert response.status_code == (405 if name in READ_ONLY_URLS else 403)
    assert snapshot() == before


def test_a_viewer_sees_the_server_without_change_buttons(viewer_client, tenant_a):
    html = viewer_client.get(tenant_a.server.get_absolute_url()).content.decode()
    assert tenant_a.server.sip_address in html
    assert "Add a user" not in html and "System settings" not in html


def test_anonymous_visitors_are_sent_to_login(client, tenant_a):
    for name, args in OBJECT_URLS.items():
        response = client.get(reverse(f"tenants:{name}", args=args(tenant_a)))
        assert response.status_code in {302, 405}
        if response.status_code == 302:
            assert response.url.startswith(reverse("login"))
