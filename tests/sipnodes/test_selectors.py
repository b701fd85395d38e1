"""Reads for the operator's pages and the node agent: they see every tenant."""

import datetime

from django.utils import timezone

from sipnodes import selectors, services
from sipnodes.models import PortAllocation, SipHost, VirtualServer
from tenants.models import Tenant


def test_a_host_lists_its_own_servers_only(tenant_a, tenant_b, host):
    other = SipHost.objects.create(
        name="other", public_address="10.0.0.2", sip_port_min=17000, sip_port_max=17010
    )
    elsewhere = services.server_create(tenant=Tenant.objects.create(name="t"), name="x")
    VirtualServer.objects.filter(pk=elsewhere.pk).update(host=other)

    assert selectors.host_get(name="test-host") == host
    assert selectors.host_names() == ["other", "test-host"]
    assert selectors.host_server_ids(host=host) == {tenant_a.server.pk, tenant_b.server.pk}
    assert selectors.host_server_ids(host=other) == {elsewhere.pk}


def test_a_deleted_server_is_none_for_the_agent(tenant_a):
    server_id = tenant_a.server.pk
    assert selectors.server_get(server_id=server_id) == tenant_a.server
    tenant_a.server.delete()
    assert selectors.server_get(server_id=server_id) is None


def test_a_server_lists_its_own_users_by_number(tenant_a, tenant_b):
    server = tenant_a.server
    services.local_user_create(server=server, number="20")
    services.local_user_create(server=server, number="1000")
    numbers = [u.number for u in selectors.server_local_users(server=server)]
    assert numbers == ["100", "1000", "20"]  # numbers are text: the worker's order too


def test_the_clients_summary_counts_against_the_edition(tenant_a):
    at = timezone.now()
    VirtualServer.objects.filter(pk=tenant_a.server.pk).update(
        edition=10, registered_clients=12, registered_clients_at=at
    )
    clients = selectors.server_clients(server=VirtualServer.objects.get(pk=tenant_a.server.pk))
    assert str(clients) == "12 of 10 clients registered"
    assert clients.over_limit and clients.as_of == at
    assert "no new client can register until fewer than 10 are registered" in clients.note
    full = selectors.Clients(registered=10, limit=10, as_of=None)
    assert not full.over_limit


def test_the_edition_preview_writes_nothing_and_matches_the_change(tenant_a, tenant_b):
    server = tenant_a.server
    ledger = list(PortAllocation.objects.order_by("port").values_list("port", "server"))

    preview = selectors.server_edition_change(server=server, edition=20)
    assert list(PortAllocation.objects.order_by("port").values_list("port", "server")) == ledger
    assert VirtualServer.objects.get(pk=server.pk).edition == 5

    paid = timezone.localdate() + datetime.timedelta(days=1)
    done = services.server_change_edition(server=server, edition=20, paid_until=paid)
    assert done == preview
    assert done.new_media == range(tenant_b.server.media_port_last + 1, 20120)


def test_the_preview_of_a_stopped_server_says_it_starts_with_the_new_limit(tenant_a):
    server = tenant_a.server
    services.server_set_desired_state(server=server, state=VirtualServer.State.STOPPED)
    preview = selectors.server_edition_change(server=server, edition=10)
    assert "The worker is stopped; it starts with 10 clients." in preview.consequences
