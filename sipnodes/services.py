"""Changes to virtual servers and their local users; each function is one transaction."""

import secrets
from dataclasses import dataclass
from datetime import date

from django.core.validators import validate_ipv46_address
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from sipnodes import branch_services, features_services, ports, selectors
from sipnodes.credentials import digest_ha1, random_sip_password
from sipnodes.live_state import live_state_delete_on_commit
from sipnodes.models import (
    FREE_EDITION,
    LocalUser,
    PortAllocation,
    SipHost,
    VirtualServer,
    callback_secret_format,
)
from sipnodes.provisioning import apply_on_commit, remove_workers_on_commit, restart_on_commit
from sipnodes.selectors import EditionChange
from tenants.models import Tenant

STARTER_USER_NUMBERS = ("100", "101", "102")


class NoHostAvailable(Exception):
    """No SIP host has the ports a new virtual server needs."""


class PortInUse(Exception):
    """The asked port belongs to another server or lies outside the host's range."""


class EditionChangeRefused(Exception):
    """The edition cannot be changed as asked; the message says why, for the operator."""


@dataclass(frozen=True)
class IssuedPassword:
    """A SIP password shown to the customer once; only its HA1 digests are stored."""

    number: str
    password: str


def _pick_host(edition: int) -> SipHost:
    for host in SipHost.objects.order_by("pk"):
        if ports.host_has_room(host, edition):
            return host
    raise NoHostAvailable("no SIP host has room for a new server; ask an operator to add one")


def _free_ports(host: SipHost, edition: int) -> tuple[int, int, range]:
    """A SIP port, a call-back port and a media block free on a host locked by the caller."""
    used = ports.used_ports(host)
    ranges = host.port_ranges()
    try:
        sip_port = ports.first_free_port(ranges["sip"], used)
        callback_port = ports.first_free_port(ranges["callback"], used)
        media = ports.first_free_block(ranges["media"], used, ports.media_block_size(edition))
    except ports.NoPortsAvailable as exc:
        raise NoHostAvailable(str(exc)) from exc
    return sip_port, callback_port, media


@transaction.atomic
def server_create(
    *, tenant: Tenant, name: str, edition: int = FREE_EDITION, hold_for_verification: bool = False
) -> VirtualServer:
    host = ports.lock_host(_pick_host(edition).pk)
    sip_port, callback_port, media = _free_ports(host, edition)
    server = VirtualServer.objects.create(
        tenant=tenant,
        name=name,
        edition=edition,
        host=host,
        realm=f"vs-{secrets.token_hex(5)}.sipcloud",
        sip_port=sip_port,
        callback_port=callback_port,
        media_port_first=media.start,
        media_port_last=media.stop - 1,
        desired_state=(
            VirtualServer.State.STOPPED if hold_for_verification else VirtualServer.State.RUNNING
        ),
        awaiting_verification=hold_for_verification,
    )
    ports.record_allocation(server, PortAllocation.Purpose.SIP, [sip_port])
    ports.record_allocation(server, PortAllocation.Purpose.CALLBACK, [callback_port])
    ports.record_allocation(server, PortAllocation.Purpose.MEDIA, media)
    apply_on_commit(server)
    return server


def _set_password(user: LocalUser, password: str) -> None:
    user.ha1_md5, user.ha1_sha256 = digest_ha1(user.number, user.server.realm, password)


@transaction.atomic
def local_user_create(
    *, server: VirtualServer, number: str, display_name: str = "", call_level: int = 1
) -> tuple[LocalUser, IssuedPassword]:
    features_services.lock_numbers(server)
    features_services.number_must_be_free(server=server, number=number)
    password = random_sip_password()
    user = LocalUser(server=server, number=number, display_name=display_name, call_level=call_level)
    _set_password(user, password)
    user.save()
    apply_on_commit(server)
    return user, IssuedPassword(number=number, password=password)


@transaction.atomic
def local_user_update(*, user: LocalUser, display_name: str, call_level: int) -> LocalUser:
    user.display_name = display_name
    user.call_level = call_level
    user.save(update_fields=["display_name", "call_level", "updated_at"])
    apply_on_commit(user.server)
    return user


@transaction.atomic
def local_user_reset_password(*, user: LocalUser) -> IssuedPassword:
    password = random_sip_password()
    _set_password(user, password)
    user.save(update_fields=["ha1_md5", "ha1_sha256", "updated_at"])
    apply_on_commit(user.server)
    return IssuedPassword(number=user.number, password=password)


@transaction.atomic
def local_user_delete(*, user: LocalUser) -> None:
    user.delete()
    apply_on_commit(user.server)


@transaction.atomic
def server_create_starter_users(*, server: VirtualServer) -> list[IssuedPassword]:
    return [local_user_create(server=server, number=n)[1] for n in STARTER_USER_NUMBERS]


SYSTEM_SETTINGS = (
    "name",
    "out_group_prefix",
    "prompt_language",
    "media_relay",
    "upnp",
    "cdr_failed_calls",
    "cdr_realtime_display",
    "digest_algorithms",
)


@transaction.atomic
def server_update_settings(*, server: VirtualServer, **values: object) -> VirtualServer:
    """Settings the worker takes by a reload (SIGHUP), the digest algorithms included, so a
    change keeps its calls and registrations."""
    unknown = set(values) - set(SYSTEM_SETTINGS)
    if unknown:
        raise TypeError(f"not a system setting: {', '.join(sorted(unknown))}")
    algorithms = values.get("digest_algorithms", server.digest_algorithms)
    if algorithms not in VirtualServer.DigestAlgorithms.values:
        # Refused here, where it is made, not later by the node agent that renders it.
        raise ValueError(f"no such digest algorithms choice: {algorithms!r}")
    for field, value in values.items():
        setattr(server, field, value)
    server.save(update_fields=[*values, "updated_at"])
    apply_on_commit(server)
    return server


@transaction.atomic
def server_update_callback(
    *,
    server: VirtualServer,
    app_server_address: str,
    port: int,
    default_caller: str,
    secret: str | None = None,
) -> VirtualServer:
    """Port 0 closes the call-back service; another port must be free in the host's range.

    `secret`: None keeps the shared secret, "" removes it. The worker takes all of it,
    a new port included, by a reload: calls in progress go on.
    """
    if app_server_address:
        validate_ipv46_address(app_server_address)  # the worker compares sources with it
    if secret:
        callback_secret_format(secret)
    if port != server.callback_port:
        host = ports.lock_host(server.host_id)
        if port and port not in host.port_ranges()["callback"]:
            r = host.port_ranges()["callback"]
            raise PortInUse(
                _("choose a port in %(first)s-%(last)s, or 0 to close the service")
                % {"first": r.start, "last": r.stop - 1}
            )
        PortAllocation.objects.filter(
            server=server, purpose=PortAllocation.Purpose.CALLBACK
        ).delete()
        if port:
            try:
                with transaction.atomic():
                    ports.record_allocation(server, PortAllocation.Purpose.CALLBACK, [port])
            except IntegrityError as exc:
                raise PortInUse(
                    _("port %(port)s is used by another server") % {"port": port}
                ) from exc
    server.callback_app_server_address = app_server_address
    server.callback_port = port
    server.callback_default_caller = default_caller
    if secret is not None:
        server.callback_secret = secret
    server.save(
        update_fields=[
            "callback_app_server_address",
            "callback_port",
            "callback_default_caller",
            "callback_secret",
            "updated_at",
        ]
    )
    apply_on_commit(server)
    return server


@transaction.atomic
def server_set_desired_state(*, server: VirtualServer, state: str) -> VirtualServer:
    server.desired_state = state
    server.save(update_fields=["desired_state", "updated_at"])
    apply_on_commit(server)
    return server


@transaction.atomic
def server_restart(*, server: VirtualServer) -> None:
    """Restart the worker (ends its calls); registrations come back from Redis."""
    if server.desired_state != VirtualServer.State.RUNNING:
        server_set_desired_state(server=server, state=VirtualServer.State.RUNNING)
    else:
        restart_on_commit(server)


@transaction.atomic
def server_delete(*, server: VirtualServer) -> None:
    """Delete a server with its ports, users and CDRs; its host's agent removes the worker,
    and its live state in Redis (registrations, calls in progress) goes on commit. Its
    branch networks forget it first, so that the other servers' workers are told."""
    branch_services.server_leaving(server=server)
    apply_on_commit(server)
    live_state_delete_on_commit(server)
    server.delete()


@transaction.atomic
def servers_remove_workers(*, servers: list[VirtualServer]) -> None:
    """Hold servers stopped with no worker on their hosts (the zombie purge): each host's
    agent stops and removes their workers in one go, and reports each as stopped."""
    VirtualServer.objects.filter(pk__in=[server.pk for server in servers]).update(
        desired_state=VirtualServer.State.STOPPED, updated_at=timezone.now()
    )
    by_host: dict[str, list[int]] = {}
    for server in servers:
        by_host.setdefault(server.host.name, []).append(server.pk)
    for host_name, server_ids in by_host.items():
        remove_workers_on_commit(host_name, server_ids)


@transaction.atomic
def server_release_ports(*, server: VirtualServer) -> None:
    """Give a stopped server's ports back to its host; it keeps port 0 until it gets new
    ones (`server_allocate_ports`)."""
    PortAllocation.objects.filter(server=server).delete()
    server.sip_port = server.callback_port = 0
    server.media_port_first = server.media_port_last = 0
    server.save(update_fields=["sip_port", "callback_port", "media_port_first", "media_port_last"])


@transaction.atomic
def server_allocate_ports(*, server: VirtualServer, callback: bool) -> VirtualServer:
    """New ports on the server's host for a server that gave its own back; `callback`: open
    the call-back port too. The caller starts the worker."""
    host = ports.lock_host(server.host_id)
    sip_port, callback_port, media = _free_ports(host, server.edition)
    server.sip_port, server.callback_port = sip_port, callback_port if callback else 0
    server.media_port_first, server.media_port_last = media.start, media.stop - 1
    server.save(update_fields=["sip_port", "callback_port", "media_port_first", "media_port_last"])
    ports.record_allocation(server, PortAllocation.Purpose.SIP, [sip_port])
    if callback:
        ports.record_allocation(server, PortAllocation.Purpose.CALLBACK, [callback_port])
    ports.record_allocation(server, PortAllocation.Purpose.MEDIA, media)
    # The trunks other servers' branch networks have to it point at the new SIP port.
    branch_services.server_address_changed(server=server)
    return server


def edition_validate(*, edition: int, paid_until: date | None) -> None:
    """A paid edition runs until a date not yet past; the free edition never expires."""
    if edition not in VirtualServer.Edition.values:
        raise EditionChangeRefused(
            _("there is no %(edition)s-client edition") % {"edition": edition}
        )
    if edition == FREE_EDITION:
        if paid_until is not None:
            raise EditionChangeRefused(_("the free edition never expires: leave paid until empty"))
    elif paid_until is None:
        raise EditionChangeRefused(_("a paid edition needs the date it is paid until"))
    elif paid_until < timezone.localdate():
        raise EditionChangeRefused(
            _("paid until %(date)s is in the past") % {"date": paid_until.isoformat()}
        )


@transaction.atomic
def server_change_edition(
    *, server: VirtualServer, edition: int, paid_until: date | None
) -> EditionChange:
    """Set the edition and re-size the media block to it, moving the block only if it
    cannot grow in place. The SIP and call-back ports stay, so the running worker gets the
    new limit by a reload, not a restart. Clients over a lower limit stay registered until
    they leave; the returned change says so."""
    edition_validate(edition=edition, paid_until=paid_until)
    ports.lock_host(server.host_id)
    server.refresh_from_db()
    change = selectors.server_edition_change(server=server, edition=edition)
    new, old = change.new_media, change.old_media
    if new is None:
        raise EditionChangeRefused(change.consequences[0])
    if new != old:
        PortAllocation.objects.filter(server=server, purpose=PortAllocation.Purpose.MEDIA).exclude(
            port__range=(new.start, new[-1])
        ).delete()
        ports.record_allocation(
            server, PortAllocation.Purpose.MEDIA, [port for port in new if port not in old]
        )
    server.edition, server.paid_until = edition, paid_until
    server.media_port_first, server.media_port_last = new.start, new[-1]
    server.save(
        update_fields=[
            "edition",
            "paid_until",
            "media_port_first",
            "media_port_last",
            "updated_at",
        ]
    )
    if edition != change.old_edition:
        apply_on_commit(server)
    return change


@transaction.atomic
def lapse_paid_editions(*, today: date) -> int:
    """A paid edition whose `paid_until` has passed falls back to the free 5 clients."""
    lapsed = list(
        VirtualServer.objects.select_related("host").filter(
            paid_until__lt=today, edition__gt=FREE_EDITION
        )
    )
    for server in lapsed:
        server_change_edition(server=server, edition=FREE_EDITION, paid_until=None)
    return len(lapsed)


def server_record_worker_state(*, server_id: int, state: str, detail: str) -> None:
    """The node agent's report of what supervisord says about the worker."""
    VirtualServer.objects.filter(pk=server_id).update(
        actual_state=state, state_detail=detail, state_checked_at=timezone.now()
    )


def servers_record_stopped(*, server_ids: list[int], detail: str) -> None:
    """The node agent's report that these servers' workers are gone from their host."""
    VirtualServer.objects.filter(pk__in=server_ids).update(
        actual_state=VirtualServer.State.STOPPED,
        state_detail=detail,
        state_checked_at=timezone.now(),
    )


def host_record_seen(*, host: SipHost, detail: str) -> None:
    SipHost.objects.filter(pk=host.pk).update(last_seen_at=timezone.now(), status_detail=detail)
