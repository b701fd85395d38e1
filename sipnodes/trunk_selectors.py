"""Reads of a server's trunks, DIDs and dial plan, and the warnings a new rule deserves."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet
from django.utils.translation import gettext as _

from sipnodes.models import DialRule, HuntGroup, LocalUser, Trunk, TrunkDid, VirtualServer

# How many of the numbers a rule would hide are named in its warning.
SHOWN_NUMBERS = 5


def server_trunks(*, server: VirtualServer) -> QuerySet[Trunk]:
    """The server's trunks by name, each with its DIDs (by number) and default user."""
    dids = TrunkDid.objects.select_related("user").order_by("number")
    return (
        Trunk.objects.filter(server=server)
        .select_related("default_user", "branch_network")
        .prefetch_related(Prefetch("dids", queryset=dids))
        .order_by("name")
    )


def server_own_trunks(*, server: VirtualServer) -> QuerySet[Trunk]:
    """The trunks the admin's rules and the external line may use: not those a branch
    network made, which are made anew with it (`branch_services`)."""
    return server_trunks(server=server).filter(branch_network__isnull=True)


def trunk_did_lines(*, trunk: Trunk) -> str:
    """The trunk's DIDs as the trunk form shows them: one `number = user` a line."""
    return "\n".join(f"{did.number} = {did.user.number}" for did in trunk.dids.all())


def server_dial_rules(*, server: VirtualServer) -> QuerySet[DialRule]:
    return (
        DialRule.objects.filter(server=server)
        .select_related("trunk", "branch_network")
        .order_by("prefix")
    )


def local_numbers(*, server: VirtualServer) -> list[str]:
    """The numbers the server answers itself: its users' and its hunt groups'."""
    users = LocalUser.objects.filter(server=server).values_list("number", flat=True)
    groups = HuntGroup.objects.filter(server=server).values_list("number", flat=True)
    return sorted([*users, *groups])


def dial_rule_warnings(
    *,
    server: VirtualServer,
    prefix: str,
    route: str,
    strip: int,
    add: str,
    call_level: int,
) -> list[str]:
    """What a rule would take away, for the admin to confirm before it is saved.

    The worker matches rules before the server's own numbers (`engine.dialplan`): a rule
    whose prefix begins a local number takes that number's calls, unless it hands them
    to the same local number unchanged. And a rule whose prefix and the out-group prefix
    begin one another takes some of the calls meant for the external line.
    """
    warnings = []
    passes_through = (
        route == DialRule.Route.LOCAL_USER and strip == 0 and not add and call_level == 0
    )
    hidden = [n for n in local_numbers(server=server) if n.startswith(prefix)]
    if hidden and not passes_through:
        shown = ", ".join(hidden[:SHOWN_NUMBERS]) + (", …" if len(hidden) > SHOWN_NUMBERS else "")
        warnings.append(
            _(
                "%(count)s local numbers begin with %(prefix)s (%(numbers)s): calls to them "
                "will follow this rule instead of ringing them."
            )
            % {"count": len(hidden), "prefix": prefix, "numbers": shown}
        )
    out_group = server.out_group_prefix
    if out_group and (prefix.startswith(out_group) or out_group.startswith(prefix)):
        warnings.append(
            _(
                "%(out_group)s is the out-group prefix: numbers dialled with %(prefix)s will "
                "follow this rule instead of reaching the external line."
            )
            % {
                "out_group": out_group,
                "prefix": prefix if len(prefix) > len(out_group) else out_group,
            }
        )
    return warnings


def out_group_prefix_warnings(*, server: VirtualServer, out_group_prefix: str) -> list[str]:
    """The dial-plan rules that would take calls from a new out-group prefix: rules are
    matched first, so a rule whose prefix and the out-group prefix begin one another wins."""
    if not out_group_prefix:
        return []
    clashing = [
        rule.prefix
        for rule in server_dial_rules(server=server)
        if rule.prefix.startswith(out_group_prefix) or out_group_prefix.startswith(rule.prefix)
    ]
    if not clashing:
        return []
    return [
        _(
            "Dial-plan rules for %(prefixes)s are matched before the out-group prefix "
            "%(out_group)s: some or all of the numbers dialled with it will follow those "
            "rules instead of reaching the external line."
        )
        % {"prefixes": ", ".join(clashing), "out_group": out_group_prefix}
    ]
