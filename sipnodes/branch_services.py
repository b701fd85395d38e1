"""Branch networks: servers of one tenant whose users call each other by prefix, through
a trunk server (docs/trunks.md, "Branch networks").

A network is stored as its trunk server and its branches (server, prefix), and made
real as trunks and dial-plan rules on those servers (`_plan`), each marked with the
network (`branch_network`). Saving a network deletes what it made and makes it anew
from its members; deleting it deletes them; the admin's own trunks and rules are never
touched. What is made passes `trunk_services`' own checks (a prefix another rule has is
refused; a prefix that hides local numbers or the out-group prefix is warned about and
needs confirming, for all servers at once).

Each function is one transaction and hands every server it touched, once, to its
host's node agent (`apply_on_commit`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from sipnodes.models import (
    BranchNetwork,
    BranchNetworkMember,
    DialRule,
    SipHost,
    Trunk,
    VirtualServer,
    digits,
)
from sipnodes.provisioning import apply_on_commit
from sipnodes.trunk_selectors import dial_rule_warnings
from sipnodes.trunk_services import dial_rule_check, lock_servers, trunk_check
from tenants.models import Tenant

NAME_MAX_LENGTH = BranchNetwork._meta.get_field("name").max_length
PREFIX_MAX_LENGTH = BranchNetworkMember._meta.get_field("prefix").max_length
TRUNK_NAME_MAX_LENGTH = Trunk._meta.get_field("name").max_length

Member = tuple[VirtualServer, str]  # a branch server and its prefix


@dataclasses.dataclass(frozen=True)
class _Link:
    """One trunk a network makes on `server`, pointing at `peer`, and the prefixes its
    rules send to it (stripped on the trunk server, kept on a branch)."""

    server: VirtualServer
    peer: VirtualServer
    inbound: str
    caller_prefix: str
    prefixes: tuple[str, ...]
    strip: bool


def _plan(trunk_server: VirtualServer, members: Sequence[Member]) -> list[_Link]:
    """A branch B with prefix P gets a trunk to the trunk server T that presents B's
    callers as P + their number and takes in calls to B's own numbers ("local"), and a
    rule for every other branch's prefix to it. T gets a trunk to B whose calls follow
    T's dial plan ("transit"), and a rule for P to it that strips P."""
    links = []
    for server, prefix in members:
        others = tuple(sorted(p for s, p in members if s.pk != server.pk))
        links.append(_Link(server, trunk_server, Trunk.Inbound.LOCAL, prefix, others, strip=False))
        links.append(_Link(trunk_server, server, Trunk.Inbound.TRANSIT, "", (prefix,), strip=True))
    return links


def _on(server: VirtualServer, check: Callable[[], None]) -> None:
    """A check of `trunk_services`, its refusal said on the network form, with the server
    it is about."""
    try:
        check()
    except ValidationError as exc:
        raise ValidationError(
            {
                "members": [
                    _("%(server)s: %(error)s") % {"server": server.name, "error": message}
                    for message in exc.messages
                ]
            }
        ) from exc


def _check(
    *,
    tenant_id: int,
    name: str,
    trunk_server: VirtualServer,
    members: Sequence[Member],
    network_pk: int | None,
) -> None:
    if not name or len(name) > NAME_MAX_LENGTH:
        raise ValidationError(
            {
                "name": _("Give the network a name of at most %(max)s characters.")
                % {"max": NAME_MAX_LENGTH}
            }
        )
    same_name = BranchNetwork.objects.filter(tenant_id=tenant_id, name=name)
    if same_name.exclude(pk=network_pk).exists():
        raise ValidationError({"name": _("You already have a branch network of that name.")})
    if trunk_server.tenant_id != tenant_id:
        raise ValidationError({"trunk_server": _("Choose one of your own servers.")})
    if not members:
        raise ValidationError(
            {"members": _("Give at least one branch server a prefix.")},
        )
    errors = []
    for server, prefix in members:
        if server.tenant_id != tenant_id:
            raise ValidationError({"members": _("Choose your own servers as branches.")})
        if server.pk == trunk_server.pk:
            errors.append(
                _("%(server)s is the trunk server: it cannot be a branch too.")
                % {"server": server.name}
            )
        try:
            digits(prefix)
            if len(prefix) > PREFIX_MAX_LENGTH:
                raise ValidationError("too long")
        except ValidationError:
            errors.append(
                _("%(server)s: a prefix is 1 to %(max)s digits.")
                % {"server": server.name, "max": PREFIX_MAX_LENGTH}
            )
    servers = [server.pk for server, _prefix in members]
    if len(set(servers)) != len(servers):
        errors.append(_("Each server may be a branch once."))
    prefixes = sorted(prefix for _server, prefix in members)
    for i, prefix in enumerate(prefixes):
        for other in prefixes[i + 1 :]:
            if other.startswith(prefix):
                errors.append(
                    _(
                        "Prefix %(prefix)s begins prefix %(other)s: calls to the second "
                        "branch would reach the first. Give branches prefixes that do not "
                        "begin one another."
                    )
                    % {"prefix": prefix, "other": other}
                    if other != prefix
                    else _("Prefix %(prefix)s is given twice: each branch needs its own.")
                    % {"prefix": prefix}
                )
    for server in [trunk_server, *(server for server, _prefix in members)]:
        if not server.sip_port:
            errors.append(
                _("%(server)s has no SIP port now (it is parked): start it first.")
                % {"server": server.name}
            )
    if errors:
        raise ValidationError({"members": errors})


def _warnings(links: Iterable[_Link]) -> list[str]:
    """What the network's rules would take from each server's own numbers or its
    external line: the warnings of a dial-plan rule, with the server they are about."""
    found = []
    for link in links:
        for prefix in link.prefixes:
            for warning in dial_rule_warnings(
                server=link.server,
                prefix=prefix,
                route=DialRule.Route.SIP_TRUNK,
                strip=len(prefix) if link.strip else 0,
                add="",
                call_level=0,
            ):
                found.append(
                    _("%(server)s: %(error)s") % {"server": link.server.name, "error": warning}
                )
    return found


def _trunk_name(server: VirtualServer, peer: VirtualServer) -> str:
    """ "to <peer>", numbered when the server has a trunk of that name already (two
    branches may share a name; the admin may have used it). Stored, so not translated."""
    base = f"to {peer.name}"
    taken = set(Trunk.objects.filter(server=server).values_list("name", flat=True))
    n = 1
    while True:
        suffix = f" ({n})" if n > 1 else ""
        name = base[: TRUNK_NAME_MAX_LENGTH - len(suffix)] + suffix
        if name not in taken:
            return name
        n += 1


def _build(network: BranchNetwork, links: Iterable[_Link]) -> None:
    for link in links:
        trunk = Trunk(
            server=link.server,
            branch_network=network,
            branch_peer=link.peer,
            name=_trunk_name(link.server, link.peer),
            address=link.peer.host.advertised_address,
            port=link.peer.sip_port,
            transport=Trunk.Transport.UDP,
            mode=Trunk.Mode.IP_TRUST,
            inbound=link.inbound,
            caller_prefix=link.caller_prefix,
        )
        _on(link.server, lambda trunk=trunk: trunk_check(trunk))
        trunk.save()
        for prefix in link.prefixes:
            rule = DialRule(
                server=link.server,
                branch_network=network,
                prefix=prefix,
                route=DialRule.Route.SIP_TRUNK,
                trunk=trunk,
                strip=len(prefix) if link.strip else 0,
            )
            # The warnings were confirmed for all servers at once (`_warnings`).
            _on(link.server, lambda rule=rule: dial_rule_check(rule, confirmed=True))
            rule.save()


def _unbuild(network: BranchNetwork) -> None:
    """Remove what the network made, rules first (they hold on to their trunks)."""
    DialRule.objects.filter(branch_network=network).delete()
    Trunk.objects.filter(branch_network=network).delete()


def _servers_of(network: BranchNetwork) -> list[VirtualServer]:
    """Every server the network has made something on, or names."""
    ids = {network.trunk_server_id}
    ids |= set(network.members.values_list("server_id", flat=True))
    ids |= set(Trunk.objects.filter(branch_network=network).values_list("server_id", flat=True))
    return list(VirtualServer.objects.select_related("host").filter(pk__in=ids).order_by("pk"))


def _apply(servers: Iterable[VirtualServer]) -> None:
    """Each touched server's worker reloads once."""
    seen = set()
    for server in servers:
        if server.pk not in seen:
            seen.add(server.pk)
            apply_on_commit(server)


def _save(
    network: BranchNetwork,
    *,
    name: str,
    trunk_server: VirtualServer,
    members: Sequence[Member],
    confirmed: bool,
) -> BranchNetwork:
    name = name.strip()
    _check(
        tenant_id=network.tenant_id,
        name=name,
        trunk_server=trunk_server,
        members=members,
        network_pk=network.pk,
    )
    before = _servers_of(network) if network.pk else []
    after = [trunk_server, *(server for server, _prefix in members)]
    lock_servers([*before, *after])
    links = _plan(trunk_server, members)
    warnings = _warnings(links)
    if warnings and not confirmed:
        raise ValidationError({"confirm": warnings})
    if network.pk:
        _unbuild(network)
    network.name, network.trunk_server = name, trunk_server
    network.save()
    BranchNetworkMember.objects.filter(network=network).delete()
    BranchNetworkMember.objects.bulk_create(
        BranchNetworkMember(network=network, server=server, prefix=prefix)
        for server, prefix in members
    )
    _build(network, links)
    _apply([*before, *after])
    return network


@transaction.atomic
def branch_network_create(
    *,
    tenant: Tenant,
    name: str,
    trunk_server: VirtualServer,
    members: Sequence[Member],
    confirmed: bool = False,
) -> BranchNetwork:
    """`members`: (branch server, prefix) pairs. `confirmed`: the admin has seen the
    warnings (a prefix hiding local numbers or the out-group prefix on some server) and
    wants the network anyway; without it, a network with warnings is refused with them,
    on the field `confirm`."""
    network = BranchNetwork(tenant=tenant)
    return _save(
        network, name=name, trunk_server=trunk_server, members=members, confirmed=confirmed
    )


@transaction.atomic
def branch_network_update(
    *,
    network: BranchNetwork,
    name: str,
    trunk_server: VirtualServer,
    members: Sequence[Member],
    confirmed: bool = False,
) -> BranchNetwork:
    """The network anew: what it made is deleted and made again from the new members;
    servers it no longer names lose its trunks and rules."""
    BranchNetwork.objects.select_for_update().filter(pk=network.pk).exists()
    return _save(
        network, name=name, trunk_server=trunk_server, members=members, confirmed=confirmed
    )


@transaction.atomic
def branch_network_delete(*, network: BranchNetwork) -> None:
    """Deletes the trunks and rules the network made on every server, and nothing else."""
    _delete(network)


def _delete(network: BranchNetwork, *, leaving: VirtualServer | None = None) -> None:
    """`leaving`: a server being deleted, whose worker is removed anyway."""
    servers = _servers_of(network)
    lock_servers(servers)
    _unbuild(network)
    network.delete()
    _apply(s for s in servers if leaving is None or s.pk != leaving.pk)


@transaction.atomic
def server_leaving(*, server: VirtualServer) -> None:
    """Before a server is deleted: the networks it is the trunk server of go, and the
    others forget it as a branch (its prefix's rules and the trunk to it on the trunk
    server; the other branches' rules for its prefix). Their servers reload."""
    for network in BranchNetwork.objects.filter(trunk_server=server):
        _delete(network, leaving=server)
    memberships = BranchNetworkMember.objects.filter(server=server).select_related("network")
    for member in memberships:
        network = member.network
        servers = _servers_of(network)
        lock_servers(servers)
        DialRule.objects.filter(branch_network=network, prefix=member.prefix).delete()
        Trunk.objects.filter(branch_network=network, branch_peer=server).delete()
        member.delete()
        _apply(s for s in servers if s.pk != server.pk)


@transaction.atomic
def server_address_changed(*, server: VirtualServer) -> None:
    """A server got new ports (or its host a new address): the network trunks that point
    at it follow, and the servers they are on reload. Nothing else changes."""
    trunks = Trunk.objects.filter(branch_network__isnull=False, branch_peer=server)
    on = list(VirtualServer.objects.select_related("host").filter(pk__in=trunks.values("server")))
    if not on or not server.sip_port:
        return  # a parked server (port 0) keeps the trunks to it as they were
    lock_servers(on)
    trunks.update(address=server.host.advertised_address, port=server.sip_port)
    _apply(on)


@transaction.atomic
def host_address_changed(*, host: SipHost) -> None:
    """`server_address_changed` for every server of a host whose public address changed
    (or, behind a router, its external address: `SipHost.advertised_address`)."""
    for server in VirtualServer.objects.select_related("host").filter(host=host):
        server_address_changed(server=server)
