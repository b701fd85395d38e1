"""Tenant isolation: another tenant's objects look missing; viewers change nothing."""

import pytest
from django.urls import reverse

from sipnodes import branch_services, features_services, trunk_services
from sipnodes import services as sipnode_services
from sipnodes.models import (
    BranchNetwork,
    BranchNetworkMember,
    DialRule,
    FeatureCode,
    HuntGroup,
    HuntGroupMember,
    LocalUser,
    Trunk,
    TrunkDid,
    VirtualServer,
)
from tenants import urls as tenant_urls
from tests.factories import TenantWithServer, make_member


def hunt_group(t: TenantWithServer) -> HuntGroup:
    """The tenant's hunt group 600 (made the first time it is asked for)."""
    group = HuntGroup.objects.filter(server=t.server, number="600").first()
    return group or features_services.hunt_group_create(
        server=t.server, number="600", name="Sales", mode="simultaneous", members=[t.user]
    )


def trunk(t: TenantWithServer) -> Trunk:
    """The tenant's trunk ITSP, with a DID (made the first time it is asked for)."""
    found = Trunk.objects.filter(server=t.server, name="ITSP").first()
    return found or trunk_services.trunk_create(
        server=t.server,
        password="trunk-password",
        dids=[("85550100", t.user)],
        name="ITSP",
        address="203.0.113.5",
        port=5060,
        transport="UDP",
        mode="register",
        username="acme",
    )


def dial_rule(t: TenantWithServer) -> DialRule:
    """The tenant's rule for prefix 0, to its trunk (made the first time it is asked for)."""
    found = DialRule.objects.filter(server=t.server, prefix="0").first()
    return found or trunk_services.dial_rule_create(
        server=t.server, prefix="0", route="sip_trunk", trunk=trunk(t), strip=1
    )


def branch_network(t: TenantWithServer) -> BranchNetwork:
    """The tenant's network Offices: its server a branch (81) of a second server (made
    the first time it is asked for)."""
    found = BranchNetwork.objects.filter(tenant=t.tenant).first()
    if found:
        return found
    hub = sipnode_services.server_create(tenant=t.tenant, name=f"{t.tenant.name} hub")
    return branch_services.branch_network_create(
        tenant=t.tenant, name="Offices", trunk_server=hub, members=[(t.server, "81")]
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
    "trunk-list": lambda t: [t.server.pk],
    "trunk-create": lambda t: [t.server.pk],
    "trunk-edit": lambda t: [t.server.pk, trunk(t).pk],
    "trunk-delete": lambda t: [t.server.pk, trunk(t).pk],
    "dial-rule-list": lambda t: [t.server.pk],
    "dial-rule-create": lambda t: [t.server.pk],
    "dial-rule-edit": lambda t: [t.server.pk, dial_rule(t).pk],
    "dial-rule-delete": lambda t: [t.server.pk, dial_rule(t).pk],
    "branch-network-edit": lambda t: [branch_network(t).pk],
    "branch-network-delete": lambda t: [branch_network(t).pk],
    "web-phone": lambda t: [t.server.pk],
    "web-phone-open": lambda t: [t.server.pk],
    "web-phone-action": lambda t: [t.server.pk, "a-session"],
    "web-phone-events": lambda t: [t.server.pk, "a-session"],
}
# Pages that only show: a POST to them is refused before anything is looked up (405).
READ_ONLY_URLS = {
    "server-detail",
    "cdr-table",
    "cdr-export",
    "live-calls",
    "live-calls-events",
    "hunt-group-list",
    "dial-rule-list",
    "web-phone",
    "web-phone-events",
}
# The account page takes no id: it shows the member's own tenant (tests/tenants/test_i18n.py).
# The branch network list and its create page take no id either: they are the member's
# tenant's (tests/tenants/test_branch_networks.py shows other tenants' are out of reach).
NOT_OBJECT_URLS = {
    "signup",
    "verify-email",
    "server-list",
    "account",
    "set-language",
    "branch-network-list",
    "branch-network-create",
}


# What the trunk and dial-plan forms take, valid, so that a view that forgot its checks
# would change something (the trunk and rule of `trunk()` and `dial_rule()` included).
TRUNK_AND_RULE_POST = {
    "address": "198.51.100.9",
    "transport": "UDP",
    "mode": "ip_trust",
    "expires": 3600,
    "password": "pwned-password",
    "clear_password": "on",
    "dids": "666 = 100",
    "external_line": "",
    "prefix": "66",
    "route": "local_user",
    "strip": 0,
    "call_level": 0,
    "confirm": "on",
    "caller_prefix": "66",
    "inbound": "transit",
    "prefix_1": "66",
}


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
        list(Trunk.objects.order_by("pk").values()),
        list(TrunkDid.objects.order_by("pk").values()),
        list(DialRule.objects.order_by("pk").values()),
        list(BranchNetwork.objects.order_by("pk").values()),
        list(BranchNetworkMember.objects.order_by("pk").values()),
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
            **TRUNK_AND_RULE_POST,
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
            **TRUNK_AND_RULE_POST,
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
