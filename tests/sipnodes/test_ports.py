import threading

import pytest
from django.db import IntegrityError, connection, transaction

from sipnodes import services
from sipnodes.models import PortAllocation, SipHost, VirtualServer
from sipnodes.ports import NoPortsAvailable, first_free_block, media_block_size
from tenants.models import Tenant


def all_ports(server: VirtualServer) -> set[int]:
    return {
        server.sip_port,
        server.callback_port,
        *range(server.media_port_first, server.media_port_last + 1),
    }


def test_first_free_block_skips_used_ports():
    assert first_free_block(range(100, 120), {102, 107}, 5) == range(108, 113)
    with pytest.raises(NoPortsAvailable):
        first_free_block(range(100, 110), {104}, 6)


def test_new_servers_get_ports_from_the_host_ranges_and_never_share(host):
    tenant = Tenant.objects.create(name="t")
    first = services.server_create(tenant=tenant, name="a")
    second = services.server_create(tenant=tenant, name="b", edition=20)
    assert first.sip_port in host.port_ranges()["sip"]
    assert first.callback_port in host.port_ranges()["callback"]
    assert second.media_port_last - second.media_port_first + 1 == media_block_size(20)
    assert not all_ports(first) & all_ports(second)
    assert PortAllocation.objects.filter(server=second).count() == len(all_ports(second))


def test_the_database_refuses_a_port_given_twice(host):
    tenant = Tenant.objects.create(name="t")
    server = services.server_create(tenant=tenant, name="a")
    other = services.server_create(tenant=tenant, name="b")
    with pytest.raises(IntegrityError), transaction.atomic():
        PortAllocation.objects.create(
            host=host, server=other, port=server.sip_port, purpose="callback"
        )


def test_a_full_host_refuses_a_new_server_cleanly(db):
    SipHost.objects.create(
        name="tiny",
        public_address="127.0.0.1",
        sip_port_min=15060,
        sip_port_max=15060,
        callback_port_min=16000,
        callback_port_max=16000,
    )
    tenant = Tenant.objects.create(name="t")
    services.server_create(tenant=tenant, name="fits")
    with pytest.raises(services.NoHostAvailable):
        services.server_create(tenant=tenant, name="too many")
    assert VirtualServer.objects.count() == 1


def test_servers_go_to_the_next_host_with_room(db):
    small = SipHost.objects.create(
        name="small", public_address="10.0.0.1", sip_port_min=15060, sip_port_max=15060
    )
    big = SipHost.objects.create(name="big", public_address="10.0.0.2")
    tenant = Tenant.objects.create(name="t")
    assert services.server_create(tenant=tenant, name="a").host == small
    assert services.server_create(tenant=tenant, name="b").host == big


@pytest.mark.django_db(transaction=True)
def test_concurrent_allocation_on_postgresql_gives_every_port_once(host):
    assert connection.vendor == "postgresql"
    tenant = Tenant.objects.create(name="t")
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def create(i: int) -> None:
        try:
            barrier.wait()
            for j in range(3):
                services.server_create(tenant=tenant, name=f"s{i}-{j}")
        except BaseException as exc:  # reported below, with the thread's own error
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    servers = list(VirtualServer.objects.all())
    assert len(servers) == 24
    seen: set[int] = set()
    for server in servers:
        assert not seen & all_ports(server)
        seen |= all_ports(server)
    assert PortAllocation.objects.count() == len(seen)


def test_callback_port_zero_closes_and_a_taken_port_is_refused(host):
    tenant = Tenant.objects.create(name="t")
    server = services.server_create(tenant=tenant, name="a")
    other = services.server_create(tenant=tenant, name="b")
    services.server_update_callback(
        server=server, app_server_address="127.0.0.1", port=0, default_caller=""
    )
    server.refresh_from_db()
    assert server.callback_port == 0
    assert not PortAllocation.objects.filter(server=server, purpose="callback").exists()

    with pytest.raises(services.PortInUse):
        services.server_update_callback(
            server=server,
            app_server_address="127.0.0.1",
            port=other.callback_port,
            default_caller="",
        )
    server.refresh_from_db()
    assert server.callback_port == 0

    free = max(host.port_ranges()["callback"])
    services.server_update_callback(
        server=server, app_server_address="", port=free, default_caller="200"
    )
    server.refresh_from_db()
    assert (server.callback_port, server.callback_app_server_address) == (free, "")
    assert PortAllocation.objects.get(server=server, purpose="callback").port == free
