"""The branch network pages, and network trunks and rules on the trunk and dial-plan pages.

What a network makes is tested in tests/sipnodes/test_branch_networks.py; who may reach
the edit and delete pages of another tenant's network in tests/tenants/test_isolation.py.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import translation

from sipnodes import services
from sipnodes.models import BranchNetwork, DialRule, Trunk, VirtualServer
from tests.factories import make_member
from tests.sipnodes.test_branch_networks import Servers, make_network


@pytest.fixture
def servers(tenant_a) -> Servers:
    t = services.server_create(tenant=tenant_a.tenant, name="Head office")
    b = services.server_create(tenant=tenant_a.tenant, name="Branch B")
    return Servers(tenant_a, tenant_a.server, t, b)


def network_form(
    trunk_server: VirtualServer, prefixes: dict[VirtualServer, str], **changes: object
) -> dict[str, object]:
    data: dict[str, object] = {"name": "Offices", "trunk_server": trunk_server.pk}
    data |= {f"prefix_{server.pk}": prefix for server, prefix in prefixes.items()}
    return data | changes


LIST = reverse("tenants:branch-network-list")
CREATE = reverse("tenants:branch-network-create")


def edit_url(network: BranchNetwork) -> str:
    return reverse("tenants:branch-network-edit", args=[network.pk])


def delete_url(network: BranchNetwork) -> str:
    return reverse("tenants:branch-network-delete", args=[network.pk])


def test_the_server_list_links_the_branch_networks(owner_client, tenant_a):
    assert LIST in owner_client.get(reverse("tenants:server-list")).content.decode()


def test_an_owner_makes_a_network_and_sees_it_listed(owner_client, servers):
    s = servers
    form = owner_client.get(CREATE).content.decode()
    assert all(server.name in form for server in (s.a, s.t, s.b))
    response = owner_client.post(CREATE, network_form(s.t, {s.a: "8001", s.b: "8002"}))
    assert response.status_code == 302 and response.url == LIST
    network = BranchNetwork.objects.get()
    assert (network.tenant, network.trunk_server) == (s.tenant.tenant, s.t)
    assert [(m.server, m.prefix) for m in network.members.all()] == [(s.a, "8001"), (s.b, "8002")]
    assert Trunk.objects.filter(branch_network=network).count() == 4
    html = owner_client.get(LIST).content.decode()
    assert "Offices" in html and "8001 = " in html and "Branch B" in html
    assert edit_url(network) in html and delete_url(network) in html


def test_the_edit_form_shows_the_prefixes_and_saves_changes(owner_client, servers):
    s = servers
    network = make_network(s)
    html = owner_client.get(edit_url(network)).content.decode()
    assert 'value="8001"' in html and 'value="8002"' in html and 'value="Offices"' in html
    response = owner_client.post(
        edit_url(network), network_form(s.t, {s.a: "8001", s.b: "8009"}, name="Shops")
    )
    assert response.status_code == 302
    network.refresh_from_db()
    assert network.name == "Shops"
    assert DialRule.objects.filter(server=s.a, prefix="8009").exists()
    assert not DialRule.objects.filter(prefix="8002").exists()


def test_an_owner_deletes_a_network(owner_client, servers):
    network = make_network(servers)
    response = owner_client.post(delete_url(network))
    assert response.status_code == 302
    assert not BranchNetwork.objects.exists() and not Trunk.objects.exists()


@pytest.mark.parametrize(
    ("prefixes", "message"),
    [
        ({"a": "80", "b": "801"}, "Prefix 80 begins prefix 801"),
        ({"a": "80", "b": "80"}, "Prefix 80 is given twice"),
        ({"t": "80"}, "Head office is the trunk server: it cannot be a branch too."),
        ({}, "Give at least one branch server a prefix."),
        ({"a": "8x"}, "Use digits only."),
    ],
)
def test_bad_branches_are_refused_on_the_form(owner_client, servers, prefixes, message):
    s = servers
    by_letter = {"a": s.a, "b": s.b, "t": s.t}
    data = network_form(s.t, {by_letter[x]: p for x, p in prefixes.items()})
    response = owner_client.post(CREATE, data)
    assert response.status_code == 200 and message in response.content.decode()
    assert not BranchNetwork.objects.exists() and not Trunk.objects.exists()


def test_a_network_hiding_local_numbers_is_saved_only_once_confirmed(owner_client, servers):
    s = servers
    services.local_user_create(server=s.b, number="80011")
    data = network_form(s.t, {s.a: "8001", s.b: "8002"})
    html = owner_client.post(CREATE, data).content.decode()
    assert "Branch B: 1 local numbers begin with 8001" in html
    assert 'type="checkbox" name="confirm"' in html and not BranchNetwork.objects.exists()
    assert owner_client.post(CREATE, data | {"confirm": "on"}).status_code == 302
    assert BranchNetwork.objects.exists()


def test_a_network_without_warnings_shows_no_confirm_box(owner_client, servers):
    html = owner_client.get(CREATE).content.decode()
    assert 'type="hidden" name="confirm"' in html


# ---- other tenants ---------------------------------------------------------------------------


def test_servers_of_another_tenant_are_neither_offered_nor_taken(owner_client, servers, tenant_b):
    s = servers
    html = owner_client.get(CREATE).content.decode()
    assert tenant_b.server.name not in html
    # As trunk server: not a choice of the form.
    response = owner_client.post(CREATE, network_form(tenant_b.server, {s.a: "8001"}))
    assert response.status_code == 200 and not BranchNetwork.objects.exists()
    # As a branch: the form has no field for it; the posted prefix is not read.
    data = network_form(s.t, {s.a: "8001", tenant_b.server: "8002"})
    assert owner_client.post(CREATE, data).status_code == 302
    network = BranchNetwork.objects.get()
    assert [m.server for m in network.members.all()] == [s.a]
    assert not Trunk.objects.filter(server=tenant_b.server).exists()


def test_the_list_shows_only_the_members_tenants_networks(client, servers, tenant_b):
    make_network(servers)
    other_t = services.server_create(tenant=tenant_b.tenant, name="Globex head")
    other = BranchNetwork.objects.create(
        tenant=tenant_b.tenant, name="Globex net", trunk_server=other_t
    )
    client.force_login(make_member(tenant_b.tenant, "owner"))
    html = client.get(LIST).content.decode()
    assert "Globex net" in html and "Offices" not in html
    assert edit_url(other) in html


def test_a_network_of_another_tenant_cannot_be_edited_with_own_servers(client, servers, tenant_b):
    """A member of B posting B's servers to A's network: 404, nothing changes."""
    network = make_network(servers)
    client.force_login(make_member(tenant_b.tenant, "owner"))
    data = network_form(tenant_b.server, {})
    assert client.post(edit_url(network), data).status_code == 404
    assert client.post(delete_url(network)).status_code == 404
    network.refresh_from_db()
    assert network.trunk_server == servers.t and network.members.count() == 2


# ---- viewers and CSRF ------------------------------------------------------------------------


def test_a_viewer_sees_networks_but_no_change_links(viewer_client, servers):
    network = make_network(servers)
    html = viewer_client.get(LIST).content.decode()
    assert "Offices" in html
    assert CREATE not in html and edit_url(network) not in html and delete_url(network) not in html


def test_a_viewer_cannot_add_a_network(viewer_client, servers):
    s = servers
    assert viewer_client.get(CREATE).status_code == 403
    response = viewer_client.post(CREATE, network_form(s.t, {s.a: "8001"}))
    assert response.status_code == 403 and not BranchNetwork.objects.exists()


@pytest.mark.parametrize("name", ["create", "edit", "delete"])
def test_the_network_pages_refuse_a_post_without_the_csrf_token(servers, name):
    s = servers
    network = make_network(s)
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_member(s.tenant.tenant, "owner"))
    url = {"create": CREATE, "edit": edit_url(network), "delete": delete_url(network)}[name]
    response = client.post(url, network_form(s.t, {s.a: "7001"}, name="Other"))
    assert response.status_code == 403
    assert list(BranchNetwork.objects.values_list("name", flat=True)) == ["Offices"]


# ---- on the trunk and dial-plan pages ---------------------------------------------------------


def test_network_trunks_and_rules_are_marked_and_not_changed_from_their_pages(
    owner_client, servers
):
    s = servers
    make_network(s)
    to_t = Trunk.objects.get(server=s.a)
    rule = DialRule.objects.get(server=s.a)
    html = owner_client.get(reverse("tenants:trunk-list", args=[s.a.pk])).content.decode()
    assert "made by branch network" in html and "Also any local user" in html
    assert reverse("tenants:trunk-edit", args=[s.a.pk, to_t.pk]) not in html
    html = owner_client.get(reverse("tenants:dial-rule-list", args=[s.a.pk])).content.decode()
    assert "made by branch network" in html
    assert reverse("tenants:dial-rule-edit", args=[s.a.pk, rule.pk]) not in html

    response = owner_client.post(reverse("tenants:trunk-delete", args=[s.a.pk, to_t.pk]))
    assert response.status_code == 409 and "change it on the branch networks page" in (
        response.content.decode()
    )
    response = owner_client.post(reverse("tenants:dial-rule-delete", args=[s.a.pk, rule.pk]))
    assert response.status_code == 409 and "change it on the branch networks page" in (
        response.content.decode()
    )
    edit = owner_client.post(
        reverse("tenants:dial-rule-edit", args=[s.a.pk, rule.pk]),
        {"prefix": "8002", "route": "local_user", "strip": 0, "call_level": 0},
    )
    assert edit.status_code == 200 and "change it on the branch networks page" in (
        edit.content.decode()
    )
    assert Trunk.objects.filter(pk=to_t.pk).exists()
    assert DialRule.objects.get(pk=rule.pk).route == "sip_trunk"
    # The rule form and the external line do not offer the network's trunk.
    html = owner_client.get(reverse("tenants:dial-rule-create", args=[s.a.pk])).content.decode()
    assert f'value="{to_t.pk}"' not in html


def test_the_trunk_form_sets_the_caller_prefix_and_where_inbound_calls_go(owner_client, tenant_a):
    from tests.tenants.test_trunks import trunk_form

    url = reverse("tenants:trunk-create", args=[tenant_a.server.pk])
    html = owner_client.get(url).content.decode()
    assert "Caller number prefix" in html and "This server&#x27;s dial plan" in html
    data = trunk_form(mode="ip_trust", password="", caller_prefix="81", inbound="transit")
    assert owner_client.post(url, data).status_code == 302
    trunk = Trunk.objects.get()
    assert (trunk.caller_prefix, trunk.inbound) == ("81", "transit")
    response = owner_client.post(url, trunk_form(name="X", caller_prefix="8a", inbound="all"))
    assert response.status_code == 200 and Trunk.objects.count() == 1


@pytest.fixture
def chinese():
    yield {"HTTP_ACCEPT_LANGUAGE": "zh-CN"}
    translation.deactivate()


def test_the_network_pages_read_in_chinese(owner_client, servers, chinese):
    make_network(servers)
    html = owner_client.get(LIST, **chinese).content.decode()
    assert "分支网络" in html
    html = owner_client.get(CREATE, **chinese).content.decode()
    assert "中继服务器" in html and "分支前缀" in html
