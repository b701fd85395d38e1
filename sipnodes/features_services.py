"""Changes to a server's call features: users' call settings, hunt groups, feature codes.

Each function is one transaction and, like every change to what a worker serves, hands
the server to its host's node agent once committed (`apply_on_commit`): the worker gets
the new config by a reload, keeping its calls and registrations.

The rules that span objects are kept here, not in forms, and broken ones raise a
`ValidationError` naming the field, which a view puts on its form as it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from sipnodes.engine.config import FEATURES, FeatureCodes, feature_code_clashes
from sipnodes.features_selectors import (
    DEFAULT_FEATURE_CODES,
    number_holder,
    server_feature_codes,
)
from sipnodes.models import (
    FORWARD_CONDITIONS,
    FeatureCode,
    HuntGroup,
    HuntGroupMember,
    LocalUser,
    VirtualServer,
)
from sipnodes.provisioning import apply_on_commit

# What a phone changes with feature codes too: a change of one of these is dated
# (`call_settings_changed`), so the newer of the portal's and the phone's wins.
PHONE_SETTINGS = (
    "dnd",
    "forward_unconditional",
    "forward_busy",
    "forward_no_answer",
    "forward_unreachable",
)
CALL_SETTINGS = (*PHONE_SETTINGS, "no_answer_seconds", "pickup_group")
HUNT_GROUP_FIELDS = ("number", "name", "mode", "ring_seconds", "timeout", "overflow")


def lock_numbers(server: VirtualServer) -> None:
    """Users and hunt groups share a server's numbers, in two tables: the server row's
    lock makes checking a number and taking it one step."""
    VirtualServer.objects.select_for_update(no_key=True).filter(pk=server.pk).exists()


def number_must_be_free(
    *,
    server: VirtualServer,
    number: str,
    field: str = "number",
    except_user: LocalUser | None = None,
    except_group: HuntGroup | None = None,
) -> None:
    holder = number_holder(
        server=server, number=number, except_user=except_user, except_group=except_group
    )
    if isinstance(holder, LocalUser):
        message = _("%(number)s is already the number of a local user.")
    elif isinstance(holder, HuntGroup):
        message = _("%(number)s is already the number of hunt group %(name)s.")
    else:
        return
    params = {"number": number, "name": getattr(holder, "name", "")}
    raise ValidationError({field: ValidationError(message % params)})


class CallSettingsChangedMeanwhile(Exception):
    """DND or forwarding changed (from a phone, or another browser) after the portal page
    showing them was opened: saving it would undo that change unseen."""


@transaction.atomic
def local_user_update_call_settings(
    *, user: LocalUser, seen_changed: datetime | None, **values: object
) -> LocalUser:
    """`seen_changed`: the `call_settings_changed` of the settings the change is based on.

    The change time is moved only when DND or forwarding change: saving a new pickup
    group must not date an old DND state as new, or it would undo a phone's change that
    the worker has and ingest has not yet brought here.
    """
    if set(values) != set(CALL_SETTINGS):
        raise TypeError(f"call settings are exactly: {', '.join(CALL_SETTINGS)}")
    user = (
        LocalUser.objects.select_for_update(no_key=True, of=("self",))
        .select_related("server")
        .get(pk=user.pk)
    )
    if user.call_settings_changed != seen_changed:
        raise CallSettingsChangedMeanwhile
    phone_changed = any(getattr(user, name) != values[name] for name in PHONE_SETTINGS)
    for name, value in values.items():
        setattr(user, name, value)
    others = [f.name for f in LocalUser._meta.fields if f.name not in CALL_SETTINGS]
    user.clean_fields(exclude=others)
    targets = [f"forward_{condition}" for condition in FORWARD_CONDITIONS]
    own = {name: _("Not the user's own number.") for name in targets if values[name] == user.number}
    if own:
        raise ValidationError(own)
    fields = [*CALL_SETTINGS, "updated_at"]
    if phone_changed:
        user.call_settings_changed = timezone.now()
        fields.append("call_settings_changed")
    user.save(update_fields=fields)
    apply_on_commit(user.server)
    return user


def _check_hunt_group_fields(values: Mapping[str, object]) -> None:
    unknown = set(values) - set(HUNT_GROUP_FIELDS)
    if unknown:
        raise TypeError(f"not a hunt group field: {', '.join(sorted(unknown))}")


def _save_hunt_group(group: HuntGroup, members: Sequence[LocalUser]) -> HuntGroup:
    lock_numbers(group.server)
    group.clean_fields(exclude=["server"])
    number_must_be_free(server=group.server, number=group.number, except_group=group)
    if group.overflow == group.number:
        raise ValidationError({"overflow": _("Not the group's own number.")})
    if not members:
        raise ValidationError({"members": _("A hunt group needs at least one member.")})
    if any(user.server_id != group.server_id for user in members):
        raise ValidationError({"members": _("Members must be local users of this server.")})
    if len({user.pk for user in members}) != len(members):
        raise ValidationError({"members": _("Each member may be listed once.")})
    group.save()
    HuntGroupMember.objects.filter(group=group).delete()
    HuntGroupMember.objects.bulk_create(
        HuntGroupMember(group=group, user=user, position=i) for i, user in enumerate(members)
    )
    apply_on_commit(group.server)
    return group


@transaction.atomic
def hunt_group_create(
    *, server: VirtualServer, members: Sequence[LocalUser], **values: object
) -> HuntGroup:
    """`members` in ring order; `values`: the group's fields (`HUNT_GROUP_FIELDS`)."""
    _check_hunt_group_fields(values)
    return _save_hunt_group(HuntGroup(server=server, **values), members)


@transaction.atomic
def hunt_group_update(
    *, group: HuntGroup, members: Sequence[LocalUser], **values: object
) -> HuntGroup:
    """The whole group anew: its fields (`HUNT_GROUP_FIELDS`) and its members in order."""
    _check_hunt_group_fields(values)
    for name, value in values.items():
        setattr(group, name, value)
    return _save_hunt_group(group, members)


@transaction.atomic
def hunt_group_delete(*, group: HuntGroup) -> None:
    group.delete()
    apply_on_commit(group.server)


@transaction.atomic
def feature_codes_rename(*, server: VirtualServer, codes: Mapping[str, str]) -> FeatureCodes:
    """Give features new codes; the others keep theirs. A code equal to the default is
    stored as no rename, so it follows the engine's default."""
    unknown = set(codes) - set(FEATURES)
    if unknown:
        raise ValueError(f"no such feature: {', '.join(sorted(unknown))}")
    lock_numbers(server)  # also one rename at a time: each replaces all the server's rows
    current = server_feature_codes(server=server)
    new = {name: codes.get(name, getattr(current, name)) for name in FEATURES}
    _check_feature_codes(server, new)
    FeatureCode.objects.filter(server=server).delete()
    FeatureCode.objects.bulk_create(
        FeatureCode(server=server, feature=name, code=code)
        for name, code in new.items()
        if code != getattr(DEFAULT_FEATURE_CODES, name)
    )
    apply_on_commit(server)
    return FeatureCodes(**new)


def _check_feature_codes(server: VirtualServer, codes: Mapping[str, str]) -> None:
    """Each code valid, none shared, and none the start of another: a phone dialling the
    longer one would reach the shorter first."""
    errors: dict[str, list[ValidationError]] = {}
    for name, code in codes.items():
        try:
            FeatureCode(server=server, feature=name, code=code).clean_fields(exclude=["server"])
        except ValidationError as exc:
            errors[name] = exc.error_dict["code"]
    valid = {name: code for name, code in codes.items() if name not in errors}
    for name, other in feature_code_clashes(valid).items():
        code, longer = valid[name], valid[other]
        if code == longer:
            message = _("Code %(code)s is given to two features.") % {"code": code}
        else:
            message = _(
                "%(other)s, another feature's code, begins with %(code)s: phones could not dial it."
            ) % {"code": code, "other": longer}
        errors[name] = [ValidationError(message)]
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def feature_codes_reset(*, server: VirtualServer) -> None:
    """Every feature back to the engine's default code."""
    FeatureCode.objects.filter(server=server).delete()
    apply_on_commit(server)
