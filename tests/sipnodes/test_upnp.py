"""UPnP in the control plane: what the agent reads, what it writes, what the workers and
the server page get. The router itself is in tests/sipnodes/upnp/ (sans-IO and end to end)."""

import re

from sipnodes import services, upnp_selectors, upnp_services
from sipnodes.engine.config import parse_config
from sipnodes.models import SipHost, UpnpState, VirtualServer
from sipnodes.runtime_config import render_runtime_config
from tests.factories import make_member
from tests.sipnodes.test_provisioning import queued


def behind_router(server: VirtualServer, **host: object) -> VirtualServer:
    SipHost.objects.filter(pk=server.host_id).update(behind_router=True, **host)
    services.server_update_settings(server=server, upnp=True)
    return VirtualServer.objects.select_related("host").get(pk=server.pk)


def test_the_agent_reads_servers_with_upnp_on_that_should_run(tenant_a, tenant_b):
    behind_router(tenant_a.server, router_max_mappings=12)
    services.server_set_desired_state(server=tenant_b.server, state=VirtualServer.State.STOPPED)
    services.server_update_settings(server=tenant_b.server, upnp=True)
    host = upnp_selectors.host_upnp(host_name="test-host")
    assert host.behind_router and host.max_mappings == 12
    [needs] = host.servers
    server = tenant_a.server
    assert (needs.server_id, needs.sip_port, needs.edition) == (server.pk, server.sip_port, 5)
    assert (needs.media_first, needs.media_last, needs.relay) == (
        server.media_port_first,
        server.media_port_last,
        True,
    )

    # Held stopped by the zombie purge (then parked or deleted): nothing left to map, so
    # the agent removes its mappings at its next round.
    services.servers_remove_workers(servers=[tenant_a.server])
    assert upnp_selectors.host_upnp(host_name="test-host").servers == ()


def test_workers_advertise_the_routers_external_address_once_known(
    tenant_a, tenant_b, broker, django_capture_on_commit_callbacks, tmp_path
):
    server = behind_router(tenant_a.server)
    broker.delete("host.test-host")
    render = lambda s: parse_config(  # noqa: E731
        render_runtime_config(s, redis_url="redis://", spool_dir=tmp_path)
    )
    assert render(server).public_address == "127.0.0.1"  # nothing read from the router yet
    with django_capture_on_commit_callbacks(execute=True):
        assert upnp_services.host_record_router(
            host_name="test-host", external_address="203.0.113.7"
        )
        assert not upnp_services.host_record_router(
            host_name="test-host", external_address="203.0.113.7"
        )
    server = VirtualServer.objects.select_related("host").get(pk=server.pk)
    assert render(server).public_address == "203.0.113.7"
    assert server.sip_address == f"203.0.113.7:{server.sip_port}"
    # Every server of the host is re-rendered and signalled, once, by its node agent.
    assert sorted(queued(broker)) == sorted(
        ("sipnodes.tasks.apply_server", f"[{s.pk}]") for s in (tenant_a.server, tenant_b.server)
    )


def test_the_relay_uses_only_the_media_ports_the_router_forwards(
    tenant_a, broker, django_capture_on_commit_callbacks, tmp_path
):
    server = behind_router(tenant_a.server)
    broker.delete("host.test-host")
    with django_capture_on_commit_callbacks(execute=True):
        upnp_services.server_record_upnp(server_id=server.pk, state=UpnpState.MAPPED, media_ports=8)
        upnp_services.server_record_upnp(  # the same again: nothing for the worker
            server_id=server.pk, state=UpnpState.MAPPED, media_ports=8
        )
    assert queued(broker) == [("sipnodes.tasks.apply_server", f"[{server.pk}]")]
    server.refresh_from_db()
    config = parse_config(render_runtime_config(server, redis_url="redis://", spool_dir=tmp_path))
    assert config.listen.media_ports == (server.media_port_first, server.media_port_first + 7)

    # UPnP switched off: the state goes and the whole block is the relay's again.
    services.server_update_settings(server=server, upnp=False)
    upnp_services.servers_clear_upnp(host_name="test-host", keep=[])
    server.refresh_from_db()
    assert (server.upnp_state, server.upnp_media_ports) == ("", 0)
    config = parse_config(render_runtime_config(server, redis_url="redis://", spool_dir=tmp_path))
    assert config.listen.media_ports == (server.media_port_first, server.media_port_last)


def text(client, server) -> str:
    response = client.get(server.get_absolute_url())
    return re.sub(r"\s+", " ", response.content.decode())


def test_the_server_page_shows_each_upnp_state(tenant_a, owner_client):
    server = tenant_a.server
    assert 'id="upnp"' not in text(owner_client, server)  # not behind a router: no row
    server = behind_router(server, router_external_address="203.0.113.7")
    assert 'id="upnp-state">Waiting for the router<' in text(owner_client, server)

    upnp_services.server_record_upnp(server_id=server.pk, state=UpnpState.MAPPED, media_ports=8)
    page = text(owner_client, server)
    first = server.media_port_first
    assert f"203.0.113.7:{server.sip_port}" in page
    assert f"The router forwards 203.0.113.7: UDP {server.sip_port} (SIP), " in page
    assert f"UDP {first}-{first + 7} (media relay)." in page
    assert "That carries 2 concurrent relayed calls" in page

    upnp_services.server_record_upnp(server_id=server.pk, state=UpnpState.NO_ROOM)
    page = text(owner_client, server)
    assert "Forward ports by hand: no room left on the router" in page
    assert f"UDP {server.sip_port} (SIP)" in page
    assert f"UDP {first}-{server.media_port_last} (media relay)" in page

    upnp_services.server_record_upnp(
        server_id=server.pk, state=UpnpState.REFUSED, detail="UDP 15060: 718 ConflictInMappingEntry"
    )
    assert "The router answered: UDP 15060: 718 ConflictInMappingEntry" in text(
        owner_client, server
    )
    upnp_services.server_record_upnp(
        server_id=server.pk, state=UpnpState.NO_ROUTER, detail="no UPnP router answered"
    )
    assert "Nothing is mapped: no UPnP router answered" in text(owner_client, server)


def test_another_tenants_member_cannot_see_a_servers_upnp_state(tenant_a, tenant_b, client):
    server = behind_router(tenant_a.server)
    client.force_login(make_member(tenant_b.tenant, "owner"))
    assert client.get(server.get_absolute_url()).status_code == 404


def test_a_host_no_longer_behind_a_router_advertises_its_public_address_again(
    tenant_a, broker, django_capture_on_commit_callbacks
):
    server = behind_router(tenant_a.server)
    upnp_services.host_record_router(host_name="test-host", external_address="203.0.113.7")
    SipHost.objects.filter(name="test-host").update(behind_router=False)
    broker.delete("host.test-host")
    with django_capture_on_commit_callbacks(execute=True):
        assert upnp_services.host_record_router(host_name="test-host", external_address="")
    assert queued(broker) == [("sipnodes.tasks.apply_server", f"[{server.pk}]")]
    server.host.refresh_from_db()
    assert server.host.advertised_address == "127.0.0.1"
    assert not upnp_services.host_record_router(host_name="no-such-host", external_address="")
