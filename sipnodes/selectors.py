"""Reads of hosts, virtual servers and local users, for the admin, the node agent and views.

These see every tenant: the operator's pages and the agent need that. What a tenant's
member may see is filtered in `tenants.selectors` first.
"""

from dataclasses import dataclass
from datetime import datetime

from django.db.models import QuerySet
from django.utils.translation import gettext as _

from sipnodes import ports
from sipnodes.models import LocalUser, SipHost, VirtualServer


def host_get(*, name: str) -> SipHost:
    return SipHost.objects.get(name=name)


def host_names() -> list[str]:
    return list(SipHost.objects.values_list("name", flat=True))


def host_server_ids(*, host: SipHost) -> set[int]:
    """The servers a host's agent must run; any other worker on the host is removed."""
    return set(VirtualServer.objects.filter(host=host).values_list("pk", flat=True))


def host_servers_held_stopped(*, host_name: str, server_ids: list[int]) -> list[int]:
    """Of these servers, those on the host that are to stay stopped."""
    return list(
        VirtualServer.objects.filter(pk__in=server_ids, host__name=host_name)
        .exclude(desired_state=VirtualServer.State.RUNNING)
        .values_list("pk", flat=True)
    )


def server_get(*, server_id: int) -> VirtualServer | None:
    """None when the server was deleted: its agent then removes the worker."""
    return VirtualServer.objects.select_related("host").filter(pk=server_id).first()


def server_local_users(*, server: VirtualServer) -> QuerySet[LocalUser]:
    return LocalUser.objects.filter(server=server).order_by("number")


def limit_note(*, registered: int, limit: int) -> str:
    """What the worker does when clients reach the limit (see `engine.registrar`)."""
    return _(
        "%(registered)s clients are registered now; they stay registered until they "
        "unregister or their registration expires; no new client can register until fewer "
        "than %(limit)s are registered."
    ) % {"registered": registered, "limit": limit}


@dataclass(frozen=True)
class Clients:
    """A server's registered clients against its edition, as of the last registration event."""

    registered: int
    limit: int
    as_of: datetime | None

    @property
    def over_limit(self) -> bool:
        """More are registered than the edition allows: the edition was lowered under them."""
        return self.registered > self.limit

    @property
    def note(self) -> str:
        return limit_note(registered=self.registered, limit=self.limit)

    def __str__(self) -> str:
        return _("%(registered)s of %(limit)s clients registered") % {
            "registered": self.registered,
            "limit": self.limit,
        }


def server_clients(*, server: VirtualServer) -> Clients:
    return Clients(
        registered=server.registered_clients,
        limit=server.edition,
        as_of=server.registered_clients_at,
    )


def _ports(block: range) -> str:
    return f"{block.start}-{block[-1]}"


@dataclass(frozen=True)
class EditionChange:
    """What changing a server's edition does; shown before the change and reported after it."""

    old_edition: int
    new_edition: int
    old_media: range
    new_media: range | None  # None: the host has no free block of that size
    host_name: str
    registered_clients: int
    worker_running: bool

    @property
    def possible(self) -> bool:
        return self.new_media is not None

    @property
    def limit_reached(self) -> bool:
        """The clients registered now fill the new edition or more: no new one can register."""
        return self.registered_clients >= self.new_edition

    @property
    def consequences(self) -> list[str]:
        if self.new_media is None:
            size = ports.media_block_size(self.new_edition)
            return [
                _(
                    "Host %(host)s has no free block of %(size)s media ports: "
                    "the edition cannot change to %(edition)s clients there."
                )
                % {"host": self.host_name, "size": size, "edition": self.new_edition}
            ]
        edition = {"edition": self.new_edition}
        if self.new_edition == self.old_edition:
            return [_("The edition stays at %(edition)s clients.") % edition]
        lines = [self._media_line(self.new_media)]
        if self.worker_running:
            lines.append(
                _(
                    "The SIP and call-back ports stay: the running worker re-reads its limit "
                    "of %(edition)s clients without a restart; calls and registrations are "
                    "kept."
                )
                % edition
            )
        else:
            lines.append(_("The worker is stopped; it starts with %(edition)s clients.") % edition)
        if self.limit_reached:
            lines.append(limit_note(registered=self.registered_clients, limit=self.new_edition))
        return lines

    def _media_line(self, new: range) -> str:
        blocks = {"old": _ports(self.old_media), "new": _ports(new)}
        if new.start != self.old_media.start:
            return (
                _("Media ports %(old)s move to %(new)s: the ports after the block are taken.")
                % blocks
            )
        if len(new) < len(self.old_media):
            freed = _ports(range(new.stop, self.old_media.stop))
            return _("Media ports %(old)s shrink to %(new)s; %(freed)s go back to the host.") % {
                **blocks,
                "freed": freed,
            }
        return _("Media ports %(old)s grow to %(new)s.") % blocks


def server_edition_change(*, server: VirtualServer, edition: int) -> EditionChange:
    """What `server_change_edition` would do now, with the ports free on the host now."""
    current = range(server.media_port_first, server.media_port_last + 1)
    used = ports.used_ports(server.host) - set(current)
    try:
        new_media: range | None = ports.resized_block(
            server.host.port_ranges()["media"], used, current, ports.media_block_size(edition)
        )
    except ports.NoPortsAvailable:
        new_media = None
    return EditionChange(
        old_edition=server.edition,
        new_edition=edition,
        old_media=current,
        new_media=new_media,
        host_name=server.host.name,
        registered_clients=server.registered_clients,
        worker_running=server.desired_state == VirtualServer.State.RUNNING,
    )
