"""Changes to a server's trunks, their DIDs, its dial plan and its external line.

Each function is one transaction and hands the server to its host's node agent once
committed (`apply_on_commit`): the worker takes trunks and rules by a reload, keeping
its calls and registrations. Rules that span objects are checked here, and a broken
one raises a `ValidationError` naming the form's field, as in `features_services`.

A trunk password is written here and read only by `runtime_config`: nothing returns it.

Trunks and rules a branch network made (`branch_network` set) are changed only through
the network (`branch_services`, which reuses the checks here): edited here, they would
be overwritten the next time the network is saved.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from sipnodes.models import DialRule, LocalUser, Trunk, TrunkDid, VirtualServer
from sipnodes.provisioning import apply_on_commit
from sipnodes.trunk_selectors import dial_rule_warnings

TRUNK_FIELDS = (
    "name",
    "address",
    "port",
    "transport",
    "mode",
    "username",
    "auth_username",
    "realm",
    "expires",
    "caller_id",
    "caller_prefix",
    "inbound",
    "default_user",
)
# What the worker registers with: a change to one makes the state shown out of date.
REGISTRATION_FIELDS = (
    "address",
    "port",
    "transport",
    "mode",
    "username",
    "auth_username",
    "password",
    "realm",
    "expires",
)
DIAL_RULE_FIELDS = ("prefix", "route", "trunk", "strip", "add", "call_level")
PASSWORD_MAX_LENGTH = Trunk._meta.get_field("password").max_length


def _lock_server(server: VirtualServer) -> None:
    """One change to a server's trunks and rules at a time: checking a name, a DID or a
    prefix and taking it is then one step."""
    VirtualServer.objects.select_for_update(no_key=True).filter(pk=server.pk).exists()


def _check_fields(values: dict[str, object], allowed: Sequence[str]) -> None:
    unknown = set(values) - set(allowed)
    if unknown:
        raise TypeError(f"not a field here: {', '.join(sorted(unknown))}")


def _check_password(password: str) -> None:
    if len(password) > PASSWORD_MAX_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise ValidationError(
            {
                "password": _("Use at most %(max)s characters, without control characters.")
                % {"max": PASSWORD_MAX_LENGTH}
            }
        )


def lock_servers(servers: Sequence[VirtualServer]) -> None:
    """`_lock_server` for several servers at once, always in the same order (by id), so
    that two changes spanning the same servers cannot deadlock."""
    ids = sorted({server.pk for server in servers})
    list(VirtualServer.objects.select_for_update(no_key=True).filter(pk__in=ids).order_by("pk"))


def _refuse_network_owned(obj: Trunk | DialRule) -> None:
    if obj.branch_network_id is not None:
        raise ValidationError(
            _("Branch network %(network)s made this: change it on the branch networks page.")
            % {"network": obj.branch_network.name}  # type: ignore[union-attr]
        )


def trunk_check(trunk: Trunk, *, dids: Sequence[tuple[str, LocalUser]] = ()) -> None:
    """The rules a trunk keeps on its server, checked without saving it: the server is
    locked by the caller. Also for the trunks a branch network makes."""
    server = trunk.server
    trunk.clean_fields(exclude=["server", "default_user", "branch_network"])
    others = Trunk.objects.filter(server=server).exclude(pk=trunk.pk)
    if others.filter(name=trunk.name).exists():
        raise ValidationError({"name": _("This server already has a trunk of that name.")})
    if trunk.default_user is not None and trunk.default_user.server_id != server.pk:
        raise ValidationError({"default_user": _("Choose a local user of this server.")})
    if trunk.registers:
        if not trunk.username:
            raise ValidationError({"username": _("A registering trunk needs a user name.")})
        if not trunk.password:
            raise ValidationError({"password": _("A registering trunk needs a password.")})
    _check_dids(trunk, dids)


def _save_trunk(
    trunk: Trunk, *, password: str | None, dids: Sequence[tuple[str, LocalUser]]
) -> Trunk:
    server = trunk.server
    _lock_server(server)
    if password is not None:
        _check_password(password)
        trunk.password = password
    trunk_check(trunk, dids=dids)
    if trunk.pk is not None:
        saved = Trunk.objects.get(pk=trunk.pk)
        if any(getattr(saved, name) != getattr(trunk, name) for name in REGISTRATION_FIELDS):
            _reset_state(trunk)
    else:
        _reset_state(trunk)
    trunk.save()
    TrunkDid.objects.filter(trunk=trunk).delete()
    TrunkDid.objects.bulk_create(
        TrunkDid(server=server, trunk=trunk, number=number, user=user) for number, user in dids
    )
    apply_on_commit(server)
    return trunk


def _reset_state(trunk: Trunk) -> None:
    """Not reported yet: what the worker said about the old settings no longer holds, and
    a report about them read late is older than this (`state_at`) and is ignored."""
    trunk.state, trunk.state_reason = Trunk.State.UNKNOWN, ""
    trunk.state_at, trunk.next_attempt_at = timezone.now(), None


def _check_dids(trunk: Trunk, dids: Sequence[tuple[str, LocalUser]]) -> None:
    numbers = [number for number, _user in dids]
    for number in numbers:
        TrunkDid(number=number).clean_fields(exclude=["server", "trunk", "user"])
    twice = sorted({n for n in numbers if numbers.count(n) > 1})
    if twice:
        raise ValidationError(
            {"dids": _("Each DID may be listed once: %(numbers)s.") % {"numbers": ", ".join(twice)}}
        )
    if any(user.server_id != trunk.server_id for _number, user in dids):
        raise ValidationError({"dids": _("DIDs must ring local users of this server.")})
    taken = (
        TrunkDid.objects.filter(server_id=trunk.server_id, number__in=numbers)
        .exclude(trunk_id=trunk.pk)
        .select_related("trunk")
        .order_by("number")
    )
    if taken:
        raise ValidationError(
            {
                "dids": [
                    _("%(number)s is already a DID of trunk %(trunk)s.")
                    % {"number": did.number, "trunk": did.trunk.name}
                    for did in taken
                ]
            }
        )


@transaction.atomic
def trunk_create(
    *,
    server: VirtualServer,
    password: str = "",
    dids: Sequence[tuple[str, LocalUser]] = (),
    **values: object,
) -> Trunk:
    """`values`: the trunk's fields (`TRUNK_FIELDS`); `dids`: (number, user) pairs."""
    _check_fields(values, TRUNK_FIELDS)
    return _save_trunk(Trunk(server=server, **values), password=password, dids=dids)


@transaction.atomic
def trunk_update(
    *,
    trunk: Trunk,
    password: str | None = None,
    dids: Sequence[tuple[str, LocalUser]] = (),
    **values: object,
) -> Trunk:
    """The trunk anew, its DIDs included. `password`: None keeps it, "" clears it."""
    _check_fields(values, TRUNK_FIELDS)
    _refuse_network_owned(trunk)
    for name, value in values.items():
        setattr(trunk, name, value)
    return _save_trunk(trunk, password=password, dids=dids)


@transaction.atomic
def trunk_delete(*, trunk: Trunk) -> None:
    """Refused while dial-plan rules route to the trunk: deleting them unasked would send
    their numbers elsewhere unseen. The server's external line, if it was this trunk,
    becomes none (the out-group prefix then reaches no trunk)."""
    _refuse_network_owned(trunk)
    _lock_server(trunk.server)
    prefixes = list(trunk.dial_rules.order_by("prefix").values_list("prefix", flat=True))
    if prefixes:
        raise ValidationError(
            _("Dial-plan rules for %(prefixes)s use trunk %(trunk)s: change or delete them first.")
            % {"prefixes": ", ".join(prefixes), "trunk": trunk.name}
        )
    server = trunk.server
    trunk.delete()
    apply_on_commit(server)


@transaction.atomic
def server_set_external_line(*, server: VirtualServer, trunk: Trunk | None) -> VirtualServer:
    """The trunk the out-group prefix reaches; None: no external line. Not a branch
    network's trunk: saving the network makes its trunks anew, which would drop it."""
    if trunk is not None and (trunk.server_id != server.pk or trunk.branch_network_id):
        raise ValidationError({"external_line": _("Choose a trunk of this server.")})
    server.external_line = trunk
    server.save(update_fields=["external_line", "updated_at"])
    apply_on_commit(server)
    return server


def dial_rule_check(rule: DialRule, *, confirmed: bool) -> None:
    """The rules a rule keeps on its server (its trunk, a free prefix, warnings confirmed),
    checked without saving it: the server is locked by the caller. Also for the rules a
    branch network makes."""
    server = rule.server
    if rule.route == DialRule.Route.LOCAL_USER:
        rule.trunk = None  # a rule to a local user goes to no trunk, whatever was chosen
    rule.clean_fields(exclude=["server", "trunk", "branch_network"])
    if rule.route == DialRule.Route.SIP_TRUNK:
        if rule.trunk is None:
            raise ValidationError({"trunk": _("Choose the trunk these calls go to.")})
        # A network's trunk is made anew with the network: only its own rules may use it.
        if (
            rule.trunk.server_id != server.pk
            or rule.trunk.branch_network_id != rule.branch_network_id
        ):
            raise ValidationError({"trunk": _("Choose a trunk of this server.")})
    taken = DialRule.objects.filter(server=server, prefix=rule.prefix).exclude(pk=rule.pk)
    if taken.exists():
        raise ValidationError(
            {
                "prefix": _("There is already a rule for prefix %(prefix)s.")
                % {"prefix": rule.prefix}
            }
        )
    warnings = dial_rule_warnings(
        server=server,
        prefix=rule.prefix,
        route=rule.route,
        strip=rule.strip,
        add=rule.add,
        call_level=rule.call_level,
    )
    if warnings and not confirmed:
        raise ValidationError({"confirm": warnings})


def _save_dial_rule(rule: DialRule, *, confirmed: bool) -> DialRule:
    server = rule.server
    _lock_server(server)
    dial_rule_check(rule, confirmed=confirmed)
    rule.save()
    apply_on_commit(server)
    return rule


@transaction.atomic
def dial_rule_create(
    *, server: VirtualServer, confirmed: bool = False, **values: object
) -> DialRule:
    """`values`: the rule's fields (`DIAL_RULE_FIELDS`). `confirmed`: the admin has seen the
    warnings (`dial_rule_warnings`) and wants the rule anyway; without it, a rule with
    warnings is refused with them, on the field `confirm`."""
    _check_fields(values, DIAL_RULE_FIELDS)
    return _save_dial_rule(DialRule(server=server, **values), confirmed=confirmed)


@transaction.atomic
def dial_rule_update(*, rule: DialRule, confirmed: bool = False, **values: object) -> DialRule:
    _check_fields(values, DIAL_RULE_FIELDS)
    _refuse_network_owned(rule)
    for name, value in values.items():
        setattr(rule, name, value)
    return _save_dial_rule(rule, confirmed=confirmed)


@transaction.atomic
def dial_rule_delete(*, rule: DialRule) -> None:
    _refuse_network_owned(rule)
    rule.delete()
    apply_on_commit(rule.server)
