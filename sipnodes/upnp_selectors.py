"""Reads for UPnP: what a host's UPnP agent must map, and what a server's page shows."""

from dataclasses import dataclass

from django.utils.translation import gettext as _

from sipnodes.models import SipHost, UpnpState, VirtualServer
from sipnodes.upnp.plan import PORTS_PER_CALL, ServerNeeds


@dataclass(frozen=True)
class HostUpnp:
    """One host, as its UPnP agent needs it for one round."""

    behind_router: bool
    max_mappings: int
    listen_address: str
    servers: tuple[ServerNeeds, ...]  # UPnP on, wanted running, holding ports


def host_upnp(*, host_name: str) -> HostUpnp:
    """A host not (or no longer) in the database is taken as not behind a router."""
    host = SipHost.objects.filter(name=host_name).first()
    if host is None:
        return HostUpnp(False, 0, "", ())
    wanted = VirtualServer.objects.filter(host=host).filter(
        upnp=True, desired_state=VirtualServer.State.RUNNING, sip_port__gt=0
    )
    return HostUpnp(
        behind_router=host.behind_router,
        max_mappings=host.router_max_mappings,
        listen_address=host.listen_address,
        servers=tuple(
            ServerNeeds(
                server_id=s.pk,
                edition=s.edition,
                sip_port=s.sip_port,
                media_first=s.media_port_first,
                media_last=s.media_port_last,
                relay=s.media_relay,
            )
            for s in wanted.order_by("pk")
        ),
    )


@dataclass(frozen=True)
class UpnpView:
    """A server's UPnP state in words and numbers, for its page."""

    state: str  # an UpnpState value
    label: str
    detail: str
    external_address: str
    sip_port: int
    media_ports: tuple[int, int] | None  # first and last mapped, or to forward by hand
    calls: int  # concurrent relayed calls the mapped media ports carry
    forward_by_hand: bool


def server_upnp(*, server: VirtualServer) -> UpnpView | None:
    """None when UPnP does not apply: the setting is off or the host is not behind a router."""
    if not (server.upnp and server.host.behind_router):
        return None
    state = server.upnp_state or UpnpState.PENDING
    manual = state in {UpnpState.MANUAL, UpnpState.NO_ROOM}
    media: tuple[int, int] | None = None
    if state == UpnpState.MAPPED and server.upnp_media_ports:
        media = (server.media_port_first, server.media_port_first + server.upnp_media_ports - 1)
    elif manual and server.media_relay:
        media = (server.media_port_first, server.media_port_last)
    detail = server.upnp_detail
    if state == UpnpState.MAPPED and not server.media_relay:
        detail = _("The media relay is off: only the SIP port is mapped.")
    return UpnpView(
        state=state,
        label=UpnpState(state).label,
        detail=detail,
        external_address=server.host.router_external_address,
        sip_port=server.sip_port,
        media_ports=media,
        calls=server.upnp_media_ports // PORTS_PER_CALL,
        forward_by_hand=manual,
    )
