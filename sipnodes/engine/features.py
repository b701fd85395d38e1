"""Feature codes: what a user dials to change their call settings or pick up a call.

Forwarding: `<code>*<number>` (a trailing `#` is allowed) sets the target,
`<code>#` clears it; DND on and off; group pickup; directed pickup
`<code><number>`. The codes are the server's (`config.FeatureCodes`). This
module only reads the dialled string and computes the user's new settings;
the B2BUA answers the phone and reports the change (`CallSettingsData`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from urllib.parse import unquote

from .config import FEATURES, FeatureCodes, Forwarding, User
from .events import CallSettingsData

FORWARDS = {
    "forward_unconditional": "unconditional",
    "forward_busy": "busy",
    "forward_no_answer": "no_answer",
    "forward_unreachable": "unreachable",
}
PICKUP = ("group_pickup", "directed_pickup")


@dataclasses.dataclass(frozen=True, slots=True)
class Feature:
    name: str  # a `config.FEATURES` name
    number: str = ""  # the forwarding target or the user whose call is picked up


def parse(dialed: str, codes: FeatureCodes) -> Feature | None:
    """The feature `dialed` asks for, or None for an ordinary number."""
    dialed = unquote(dialed)  # `#` arrives as %23 in a SIP URI
    if not dialed.startswith(("*", "#")):
        return None
    for name in FEATURES:
        code: str = getattr(codes, name)
        if not dialed.startswith(code):
            continue
        rest = dialed[len(code) :]
        if name in FORWARDS:
            if rest == "#":
                return Feature(name)
            number = rest[1:].removesuffix("#")
            if rest.startswith("*") and number.isdigit():
                return Feature(name, number)
        elif name == "directed_pickup":
            if rest.removesuffix("#").isdigit():
                return Feature(name, rest.removesuffix("#"))
        elif rest in ("", "#"):
            return Feature(name)
    return None


def apply(feature: Feature, user: User, changed: float) -> User:
    """The user's settings after a DND or forwarding code, stamped `changed` (epoch seconds)."""
    if feature.name in ("dnd_on", "dnd_off"):
        return dataclasses.replace(user, dnd=feature.name == "dnd_on", settings_changed=changed)
    targets = {
        "unconditional": user.forwarding.unconditional,
        "busy": user.forwarding.busy,
        "no_answer": user.forwarding.no_answer,
        "unreachable": user.forwarding.unreachable,
    }
    targets[FORWARDS[feature.name]] = feature.number
    forwarding = Forwarding(**targets, no_answer_seconds=user.forwarding.no_answer_seconds)
    return dataclasses.replace(user, forwarding=forwarding, settings_changed=changed)


def with_call_settings(user: User, changed: User) -> User:
    """`user` from a new config, with the DND and forwarding a newer feature code set."""
    forwarding = dataclasses.replace(
        changed.forwarding, no_answer_seconds=user.forwarding.no_answer_seconds
    )
    return dataclasses.replace(
        user, dnd=changed.dnd, forwarding=forwarding, settings_changed=changed.settings_changed
    )


def settings_data(user: User) -> CallSettingsData:
    fw: Forwarding = user.forwarding
    return CallSettingsData(
        user=user.number,
        dnd=user.dnd,
        forward_unconditional=fw.unconditional,
        forward_busy=fw.busy,
        forward_no_answer=fw.no_answer,
        forward_unreachable=fw.unreachable,
        changed=user.settings_changed,
    )


def may_pick_up(feature: Feature, ringing: str, group: int, users: Mapping[str, User]) -> bool:
    """Whether a user in pickup `group` may pick up a call ringing at user `ringing`."""
    if feature.name == "directed_pickup":
        return ringing == feature.number
    callee = users.get(ringing)
    return group > 0 and callee is not None and callee.pickup_group == group
