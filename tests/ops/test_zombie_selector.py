"""Who is a zombie: SPEC.md's definition, one condition at a time and together."""

import pytest
from django.db import connection
from django.utils import timezone

from ops import services
from ops.models import PurgePolicy
from ops.selectors import purge_candidates, zombie_servers
from sipnodes import services as sipnode_services
from tests.factories import make_tenant_with_server

from .conftest import WINDOW, age, make_zombie, member

pytestmark = pytest.mark.django_db


def zombies() -> set[str]:
    return set(
        zombie_servers(inactivity_days=WINDOW, now=timezone.now()).values_list("name", flat=True)
    )


def test_a_server_idle_for_the_whole_window_is_a_zombie(host):
    make_zombie("Idle")
    assert zombies() == {"Idle PBX"}


def test_a_server_never_used_at_all_is_a_zombie_once_older_than_the_window(host):
    made = make_tenant_with_server("Never")
    member(made.tenant, logged_in=None)
    age(made.server, created=WINDOW + 1)
    assert zombies() == {"Never PBX"}


def test_a_server_younger_than_the_window_is_never_a_zombie(host):
    made = make_tenant_with_server("Young")
    member(made.tenant, logged_in=None)
    age(made.server, created=WINDOW - 1)
    assert zombies() == set()


@pytest.mark.parametrize(
    "activity",
    [{"logged_in": WINDOW - 1}, {"registered": WINDOW - 1}, {"called": WINDOW - 1}],
    ids=["member-login", "registration", "call"],
)
def test_any_one_kind_of_activity_within_the_window_saves_the_server(host, activity):
    make_zombie("Active", **activity)
    make_zombie("Idle")
    assert zombies() == {"Idle PBX"}


def test_all_three_just_outside_the_window_make_a_zombie(host):
    make_zombie("Edge", logged_in=WINDOW + 0.01, registered=WINDOW + 0.01, called=WINDOW + 0.01)
    assert zombies() == {"Edge PBX"}


def test_one_member_who_logged_in_saves_every_server_of_the_tenant(host):
    made = make_tenant_with_server("Team")
    second = sipnode_services.server_create(tenant=made.tenant, name="Team second")
    member(made.tenant, logged_in=WINDOW + 300)
    member(made.tenant, logged_in=None, role="viewer")
    age(made.server, registered=WINDOW + 5)
    age(second)
    assert zombies() == {"Team PBX", "Team second"}

    member(made.tenant, logged_in=3, role="admin")
    assert zombies() == set()


def test_of_a_tenants_servers_only_the_idle_one_is_a_zombie(host):
    made = make_tenant_with_server("Two")
    busy = sipnode_services.server_create(tenant=made.tenant, name="Two busy")
    member(made.tenant, logged_in=WINDOW + 10)
    age(made.server)
    age(busy, called=2)
    assert zombies() == {"Two PBX"}


def test_exempt_servers_and_tenants_are_never_zombies(host, operator):
    kept = make_zombie("Kept")
    whole = make_zombie("Whole")
    make_zombie("Gone")
    services.exemption_add(operator=operator, reason="a customer asked", server=kept)
    services.exemption_add(operator=operator, reason="a partner", tenant=whole.tenant)
    assert zombies() == {"Gone PBX"}


def test_candidates_come_longest_idle_first_with_the_reason(host):
    make_zombie("Newer", created=WINDOW + 50, registered=WINDOW + 20, called=None)
    make_zombie("Older", created=WINDOW + 400, registered=None, called=WINDOW + 300)
    found = purge_candidates(policy=PurgePolicy(), now=timezone.now(), limit=10)
    assert [c.server_name for c in found] == ["Older PBX", "Newer PBX"]
    assert found[0].action == "purge"
    reason = found[0].reason
    assert reason.startswith("No activity for 730 days: last member login ")
    assert "last registration never" in reason and "UTC" in reason
    assert len(purge_candidates(policy=PurgePolicy(), now=timezone.now(), limit=1)) == 1


def test_the_zombie_query_is_an_index_scan_on_postgresql(host):
    assert connection.vendor == "postgresql"
    make_zombie("Planned")
    servers = zombie_servers(inactivity_days=WINDOW, now=timezone.now()).order_by("pk")[:500]
    sql, params = servers.query.sql_with_params()
    with connection.cursor() as cursor:
        # The test tables are tiny, where a scan is cheapest: take that choice away, as a
        # table of a million rows does, and see which indexes the plan can use.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "vs_last_activity_idx" in plan, plan
    assert "Seq Scan" not in plan, plan
