"""Reads of a server's call features: hunt groups, feature codes, who holds a number."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from django.db.models import Prefetch, QuerySet
from django.utils.translation import gettext as _

from sipnodes.engine.config import FEATURES, FeatureCodes
from sipnodes.feature_texts import FEATURE_TEXTS
from sipnodes.models import FeatureCode, HuntGroup, HuntGroupMember, LocalUser, VirtualServer

DEFAULT_FEATURE_CODES = FeatureCodes()


def server_hunt_groups(*, server: VirtualServer) -> QuerySet[HuntGroup]:
    """The server's hunt groups by number, each with its members in ring order."""
    members = HuntGroupMember.objects.select_related("user").order_by("position")
    return (
        HuntGroup.objects.filter(server=server)
        .order_by("number")
        .prefetch_related(Prefetch("members", queryset=members))
    )


def hunt_group_member_numbers(*, group: HuntGroup) -> list[str]:
    """The members' numbers in ring order (uses the prefetch of `server_hunt_groups`)."""
    return [member.user.number for member in group.members.all()]


def number_holder(
    *,
    server: VirtualServer,
    number: str,
    except_user: LocalUser | None = None,
    except_group: HuntGroup | None = None,
) -> LocalUser | HuntGroup | None:
    """The local user or hunt group of the server that has this number, if any: a number
    is one or the other, never both."""
    users = LocalUser.objects.filter(server=server, number=number)
    if except_user is not None:
        users = users.exclude(pk=except_user.pk)
    groups = HuntGroup.objects.filter(server=server, number=number)
    if except_group is not None:
        groups = groups.exclude(pk=except_group.pk)
    return users.first() or groups.first()


def call_settings_summary(*, user: LocalUser) -> str:
    """A user's DND and forwarding in a few words, for the server page."""
    forwarded = {
        "unconditional": _("all calls to %(number)s"),
        "busy": _("when busy to %(number)s"),
        "no_answer": _("when not answered to %(number)s"),
        "unreachable": _("when unreachable to %(number)s"),
    }
    parts = [_("do not disturb")] if user.dnd else []
    parts += [forwarded[c] % {"number": n} for c, n in user.forwarding.items()]
    return "; ".join(parts) if parts else _("no DND, no forwarding")


def server_feature_codes(*, server: VirtualServer) -> FeatureCodes:
    """The codes the server's users dial: the engine's defaults with the server's renames."""
    renamed = dict(
        FeatureCode.objects.filter(server=server, feature__in=FEATURES).values_list(
            "feature", "code"
        )
    )
    return dataclasses.replace(DEFAULT_FEATURE_CODES, **renamed)


@dataclass(frozen=True)
class FeatureCodeRow:
    """One line of the feature codes page."""

    feature: str
    name: str
    how: str
    code: str
    default: str

    @property
    def renamed(self) -> bool:
        return self.code != self.default


def feature_code_rows(*, server: VirtualServer) -> list[FeatureCodeRow]:
    codes = server_feature_codes(server=server)
    rows = []
    for feature in FEATURES:
        name, how = FEATURE_TEXTS[feature]
        code = getattr(codes, feature)
        rows.append(
            FeatureCodeRow(
                feature=feature,
                name=str(name),
                how=str(how) % {"code": code},
                code=code,
                default=getattr(DEFAULT_FEATURE_CODES, feature),
            )
        )
    return rows
