"""Writes for UPnP: a host's UPnP agent reports its router and each server's mappings.

A change that the workers must see (the address they advertise, or how much of the
media block the router forwards) is handed to the node agent, which re-renders the
config and signals the worker (SIGHUP): calls and registrations stay up.
"""

from django.db import transaction
from django.utils import timezone

from sipnodes import branch_services
from sipnodes.models import SipHost, VirtualServer
from sipnodes.provisioning import apply_on_commit


@transaction.atomic
def host_record_router(*, host_name: str, external_address: str) -> bool:
    """The router's external address as just read, blank once the host is no longer
    behind a router; whether it changed (every server of the host then advertises the new
    one, or the host's public address again)."""
    host = SipHost.objects.filter(name=host_name).first()
    if host is None or host.router_external_address == external_address:
        return False
    host.router_external_address = external_address
    host.save(update_fields=["router_external_address"])
    for server in VirtualServer.objects.filter(host=host).select_related("host"):
        apply_on_commit(server)
    branch_services.host_address_changed(host=host)  # trunks of branch networks to them
    return True


@transaction.atomic
def server_record_upnp(
    *, server_id: int, state: str, detail: str = "", media_ports: int = 0
) -> None:
    """One server's UPnP state as the agent just found it; a new count of mapped media
    ports resizes the relay's block, so that no call gets a port the router drops."""
    server = VirtualServer.objects.select_related("host").filter(pk=server_id).first()
    if server is None:
        return
    resize = server.upnp_media_ports != media_ports
    server.upnp_state, server.upnp_detail = state, detail
    server.upnp_media_ports, server.upnp_checked_at = media_ports, timezone.now()
    server.save(update_fields=["upnp_state", "upnp_detail", "upnp_media_ports", "upnp_checked_at"])
    if resize:
        apply_on_commit(server)


@transaction.atomic
def servers_clear_upnp(*, host_name: str, keep: list[int]) -> None:
    """Servers of the host no longer mapping (UPnP off, stopped): no state to show, and
    the whole media block is theirs again."""
    stale = (
        VirtualServer.objects.filter(host__name=host_name)
        .exclude(pk__in=keep)
        .exclude(upnp_state="", upnp_media_ports=0)
        .select_related("host")
    )
    for server in stale:
        resize = server.upnp_media_ports != 0
        server.upnp_state, server.upnp_detail, server.upnp_media_ports = "", "", 0
        server.save(update_fields=["upnp_state", "upnp_detail", "upnp_media_ports"])
        if resize:
            apply_on_commit(server)
