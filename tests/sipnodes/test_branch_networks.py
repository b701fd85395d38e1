"""Branch networks in the control plane: the trunks and rules a network makes on every
server (the shape tests/sipnodes/engine/test_e2e_branches.py runs with real workers),
what deleting and changing it touches, its checks, and the worker config rendered.

The pages are in tests/tenants/test_branch_networks.py; who may reach them in
tests/tenants/test_isolation.py.
"""

from __future__ import annotations

import dataclasses

import pytest
from django.core.exceptions import ValidationError

from sipnodes import branch_services, services, trunk_services
from sipnodes.engine.config import parse_config
from sipnodes.models import BranchNetwork, DialRule, Trunk, VirtualServer
from sipnodes.runtime_config import render_runtime_config
from tests.factories import TenantWithServer
from tests.sipnodes.test_trunks import make_rule, make_trunk


@dataclasses.dataclass
class Servers:
    """Branch A (the tenant's first server), the trunk server T, branch B."""

    tenant: TenantWithServer
    a: VirtualServer
    t: VirtualServer
    b: VirtualServer


@pytest.fixture
def servers(tenant_a) -> Servers:
    t = services.server_create(tenant=tenant_a.tenant, name="Head office")
    b = services.server_create(tenant=tenant_a.tenant, name="Branch B")
    return Servers(tenant_a, tenant_a.server, t, b)


def make_network(
    s: Servers, members: list[tuple[VirtualServer, str]] | None = None, **values: object
) -> BranchNetwork:
    fields: dict[str, object] = {
        "tenant": s.tenant.tenant,
        "name": "Offices",
        "trunk_server": s.t,
        "members": [(s.a, "8001"), (s.b, "8002")] if members is None else members,
    }
    return branch_services.branch_network_create(**(fields | values))  # type: ignore[arg-type]


def worker_view(server: VirtualServer, tmp_path) -> tuple[list[tuple], list[tuple]]:
    """The server's trunks and rules as its worker reads them (the engine's own parser),
    each trunk named by the port it points at, as test_e2e_branches.py writes them."""
    server.refresh_from_db()
    config = parse_config(render_runtime_config(server, redis_url="redis://", spool_dir=tmp_path))
    port_of = {trunk.id: trunk.port for trunk in config.trunks}
    trunks = [
        (
            t.address,
            t.port,
            t.transport,
            t.registration,
            t.inbound,
            t.caller_prefix,
            t.caller_id,
            dict(t.dids),
            t.default_user,
        )
        for t in sorted(config.trunks, key=lambda t: t.port)
    ]
    rules = [(r.prefix, r.route, port_of[r.trunk], r.strip, r.add) for r in config.dial_plan]
    return trunks, rules


def trunk(port: int, inbound: str, caller_prefix: str = "") -> tuple:
    return ("127.0.0.1", port, "UDP", None, inbound, caller_prefix, "", {}, "")


def route(prefix: str, port: int, strip: int = 0) -> tuple:
    return (prefix, "sip_trunk", port, strip, "")


def network_objects() -> tuple[list, list]:
    return (
        sorted(Trunk.objects.filter(branch_network__isnull=False).values_list("server", "name")),
        sorted(
            DialRule.objects.filter(branch_network__isnull=False).values_list("server", "prefix")
        ),
    )


# ---- what a network makes ------------------------------------------------------------------


def test_a_network_makes_the_trunks_and_rules_of_the_e2e_branch_test(
    servers, tmp_path, django_capture_on_commit_callbacks
):
    s = servers
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        network = make_network(s)
    assert len(callbacks) == 3  # one reload per server touched

    assert worker_view(s.a, tmp_path) == (
        [trunk(s.t.sip_port, "local", "8001")],
        [route("8002", s.t.sip_port)],
    )
    assert worker_view(s.b, tmp_path) == (
        [trunk(s.t.sip_port, "local", "8002")],
        [route("8001", s.t.sip_port)],
    )
    assert worker_view(s.t, tmp_path) == (
        sorted([trunk(s.a.sip_port, "transit"), trunk(s.b.sip_port, "transit")]),
        [route("8001", s.a.sip_port, strip=4), route("8002", s.b.sip_port, strip=4)],
    )
    names = dict(Trunk.objects.values_list("server", "name").filter(server__in=[s.a, s.b]))
    assert names == {s.a.pk: "to Head office", s.b.pk: "to Head office"}
    assert sorted(Trunk.objects.filter(server=s.t).values_list("name", flat=True)) == [
        "to Acme PBX",
        "to Branch B",
    ]
    assert set(Trunk.objects.values_list("branch_network", flat=True)) == {network.pk}
    assert set(DialRule.objects.values_list("branch_network", flat=True)) == {network.pk}
    assert [(m.server, m.prefix) for m in network.members.all()] == [(s.a, "8001"), (s.b, "8002")]


def test_three_branches_each_route_the_two_others_to_the_trunk_server(servers, tmp_path):
    s = servers
    c = services.server_create(tenant=s.tenant.tenant, name="Branch C")
    make_network(s, [(s.a, "71"), (s.b, "72"), (c, "73")])
    assert worker_view(c, tmp_path)[1] == [route("71", s.t.sip_port), route("72", s.t.sip_port)]
    assert [rule[0::3] for rule in worker_view(s.t, tmp_path)[1]] == [
        ("71", 2),
        ("72", 2),
        ("73", 2),
    ]


def test_branches_of_the_same_name_get_trunks_of_their_own_name(servers):
    s = servers
    s.b.name = s.a.name
    s.b.save()
    make_trunk(s.t, "to Acme PBX", mode="ip_trust")  # the admin's own, left alone
    make_network(s)
    assert sorted(Trunk.objects.filter(server=s.t).values_list("name", flat=True)) == [
        "to Acme PBX",
        "to Acme PBX (2)",
        "to Acme PBX (3)",
    ]


# ---- deleting and changing ----------------------------------------------------------------


def test_deleting_a_network_removes_only_what_it_made(
    servers, tmp_path, django_capture_on_commit_callbacks
):
    s = servers
    itsp = make_trunk(s.a)
    make_rule(s.a, "0", trunk=itsp)
    make_rule(s.t, "7", route="local_user", strip=0)
    network = make_network(s)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        branch_services.branch_network_delete(network=network)
    assert len(callbacks) == 3
    assert network_objects() == ([], [])
    assert list(Trunk.objects.values_list("name", flat=True)) == ["ITSP"]
    assert sorted(DialRule.objects.values_list("prefix", flat=True)) == ["0", "7"]
    assert not BranchNetwork.objects.exists()
    assert worker_view(s.b, tmp_path) == ([], [])


def test_changing_a_network_makes_its_objects_anew_and_leaves_dropped_servers(
    servers, tmp_path, django_capture_on_commit_callbacks
):
    s = servers
    c = services.server_create(tenant=s.tenant.tenant, name="Branch C")
    itsp = make_trunk(s.b)
    make_rule(s.b, "0", trunk=itsp)
    network = make_network(s)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        branch_services.branch_network_update(
            network=network, name="Shops", trunk_server=s.t, members=[(s.a, "8001"), (c, "8003")]
        )
    assert len(callbacks) == 4  # B, which it left, too
    assert worker_view(s.a, tmp_path)[1] == [route("8003", s.t.sip_port)]
    assert worker_view(c, tmp_path) == (
        [trunk(s.t.sip_port, "local", "8003")],
        [route("8001", s.t.sip_port)],
    )
    assert [r[0] for r in worker_view(s.t, tmp_path)[1]] == ["8001", "8003"]
    # B keeps only what its admin made.
    assert list(Trunk.objects.filter(server=s.b).values_list("name", flat=True)) == ["ITSP"]
    assert list(DialRule.objects.filter(server=s.b).values_list("prefix", flat=True)) == ["0"]
    network.refresh_from_db()
    assert network.name == "Shops"


def test_another_trunk_server_moves_the_trunks(servers, tmp_path):
    s = servers
    network = make_network(s, [(s.b, "8002")])
    branch_services.branch_network_update(
        network=network, name="Offices", trunk_server=s.a, members=[(s.b, "8002")]
    )
    assert worker_view(s.t, tmp_path) == ([], [])
    assert worker_view(s.a, tmp_path) == (
        [trunk(s.b.sip_port, "transit")],
        [route("8002", s.b.sip_port, strip=4)],
    )
    assert worker_view(s.b, tmp_path) == ([trunk(s.a.sip_port, "local", "8002")], [])


# ---- checks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([], "Give at least one branch server a prefix."),
        ([("a", "80"), ("b", "801")], "Prefix 80 begins prefix 801"),
        ([("a", "80"), ("b", "80")], "Prefix 80 is given twice"),
        ([("a", "8x")], "Acme PBX: a prefix is 1 to 16 digits."),
        ([("a", "")], "Acme PBX: a prefix is 1 to 16 digits."),
        ([("a", "1" * 17)], "Acme PBX: a prefix is 1 to 16 digits."),
        ([("t", "80")], "Head office is the trunk server: it cannot be a branch too."),
        ([("a", "80"), ("a", "81")], "Each server may be a branch once."),
    ],
)
def test_bad_branches_are_refused(servers, members, message):
    s = servers
    by_letter = {"a": s.a, "b": s.b, "t": s.t}
    with pytest.raises(ValidationError) as exc:
        make_network(s, [(by_letter[x], prefix) for x, prefix in members])
    assert any(m.startswith(message) for m in exc.value.message_dict["members"])
    assert not BranchNetwork.objects.exists() and network_objects() == ([], [])


def test_servers_of_another_tenant_are_refused(servers, tenant_b):
    s = servers
    with pytest.raises(ValidationError) as exc:
        make_network(s, trunk_server=tenant_b.server)
    assert "trunk_server" in exc.value.message_dict
    with pytest.raises(ValidationError) as exc:
        make_network(s, [(s.a, "8001"), (tenant_b.server, "8002")])
    assert "members" in exc.value.message_dict
    network = make_network(s)
    with pytest.raises(ValidationError):
        branch_services.branch_network_update(
            network=network, name="x", trunk_server=s.t, members=[(tenant_b.server, "8002")]
        )
    assert not Trunk.objects.filter(server=tenant_b.server).exists()


def test_network_names_are_unique_per_tenant(servers):
    make_network(servers)
    with pytest.raises(ValidationError) as exc:
        make_network(servers, [(servers.b, "9")])
    assert "name" in exc.value.message_dict


def test_a_prefix_another_rule_has_is_refused_naming_the_server(servers):
    s = servers
    make_rule(s.t, "8002", route="local_user", strip=0)
    with pytest.raises(ValidationError) as exc:
        make_network(s)
    assert exc.value.message_dict["members"] == [
        "Head office: There is already a rule for prefix 8002."
    ]
    assert not BranchNetwork.objects.exists() and network_objects() == ([], [])


def test_a_parked_server_is_refused(servers):
    services.server_release_ports(server=servers.b)
    with pytest.raises(ValidationError) as exc:
        make_network(servers)
    assert exc.value.message_dict["members"] == [
        "Branch B has no SIP port now (it is parked): start it first."
    ]


def test_prefixes_hiding_local_numbers_or_the_out_group_prefix_need_confirming(servers):
    s = servers
    services.local_user_create(server=s.b, number="80011")
    with pytest.raises(ValidationError) as exc:
        make_network(s, [(s.a, "8001"), (s.b, "9002")])
    warnings = exc.value.message_dict["confirm"]
    assert any(w.startswith("Branch B: 1 local numbers begin with 8001") for w in warnings)
    assert any(w.startswith("Acme PBX: 9 is the out-group prefix") for w in warnings)
    assert any(w.startswith("Head office: 9 is the out-group prefix") for w in warnings)
    assert not BranchNetwork.objects.exists()
    make_network(s, [(s.a, "8001"), (s.b, "9002")], confirmed=True)
    assert DialRule.objects.filter(server=s.b, prefix="8001").exists()


# ---- the network's objects are the network's ----------------------------------------------


def test_the_trunk_and_dial_plan_services_leave_network_objects_alone(servers):
    s = servers
    network = make_network(s)
    to_t = Trunk.objects.get(server=s.a)
    rule = DialRule.objects.get(server=s.a)
    refusal = "Branch network Offices made this: change it on the branch networks page."
    for call in (
        lambda: trunk_services.trunk_update(trunk=to_t, name="mine"),
        lambda: trunk_services.trunk_delete(trunk=to_t),
        lambda: trunk_services.dial_rule_update(rule=rule, strip=1),
        lambda: trunk_services.dial_rule_delete(rule=rule),
    ):
        with pytest.raises(ValidationError) as exc:
            call()
        assert exc.value.messages == [refusal]
    # The admin's rules and external line cannot use it: it is made anew with the network.
    with pytest.raises(ValidationError) as exc:
        make_rule(s.a, "5", trunk=to_t)
    assert "trunk" in exc.value.message_dict
    with pytest.raises(ValidationError):
        trunk_services.server_set_external_line(server=s.a, trunk=to_t)
    assert network_objects()[1] == sorted(
        [(s.a.pk, "8002"), (s.b.pk, "8001"), (s.t.pk, "8001"), (s.t.pk, "8002")]
    )
    assert network.members.count() == 2


# ---- servers that change or go --------------------------------------------------------------


def test_new_ports_of_a_member_reach_the_trunks_to_it(
    servers, tmp_path, django_capture_on_commit_callbacks
):
    s = servers
    make_network(s)
    services.server_release_ports(server=s.t)
    s.t.refresh_from_db()
    # Parked (port 0): the trunks to it stay as they were until it has ports again.
    assert Trunk.objects.get(server=s.a).port > 0
    services.server_create(tenant=s.tenant.tenant, name="Takes the old port")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.server_allocate_ports(server=s.t, callback=False)
    assert len(callbacks) == 2  # A and B reload; T's own start is its caller's
    assert worker_view(s.a, tmp_path)[0] == [trunk(s.t.sip_port, "local", "8001")]
    assert worker_view(s.b, tmp_path)[0] == [trunk(s.t.sip_port, "local", "8002")]


def test_a_new_host_address_reaches_the_trunks_to_its_servers(servers, tmp_path):
    s = servers
    make_network(s)
    host = s.t.host
    host.public_address = "sip.example.net"
    host.save()
    branch_services.host_address_changed(host=host)
    assert set(Trunk.objects.values_list("address", flat=True)) == {"sip.example.net"}


def test_deleting_a_branch_server_takes_it_out_of_its_networks(
    servers, tmp_path, django_capture_on_commit_callbacks
):
    s = servers
    c = services.server_create(tenant=s.tenant.tenant, name="Branch C")
    network = make_network(s, [(s.a, "8001"), (s.b, "8002"), (c, "8003")])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.server_delete(server=c)
    # A, B and T reload; C's worker is removed (its own apply_server and live state).
    assert len(callbacks) == 5
    assert worker_view(s.a, tmp_path)[1] == [route("8002", s.t.sip_port)]
    assert worker_view(s.t, tmp_path) == (
        sorted([trunk(s.a.sip_port, "transit"), trunk(s.b.sip_port, "transit")]),
        [route("8001", s.a.sip_port, strip=4), route("8002", s.b.sip_port, strip=4)],
    )
    assert [m.prefix for m in network.members.all()] == ["8001", "8002"]


def test_deleting_the_trunk_server_deletes_its_networks(
    servers, tmp_path, django_capture_on_commit_callbacks
):
    s = servers
    make_trunk(s.a)
    make_network(s)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        services.server_delete(server=s.t)
    assert len(callbacks) == 4  # A and B reload; T's worker and live state go
    assert not BranchNetwork.objects.exists() and network_objects() == ([], [])
    assert list(Trunk.objects.values_list("name", flat=True)) == ["ITSP"]
    assert worker_view(s.b, tmp_path) == ([], [])
