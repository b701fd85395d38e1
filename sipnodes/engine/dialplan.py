"""Dial plan ("analyze called number"): which route a dialed number takes.

Longest matching prefix wins; a rule may strip leading digits, add a prefix,
and require a call level of the caller. With no rule matching (or an empty
plan), a number of a local user or hunt group goes there (route `local_user`); the
out-group prefix (`system.out_group_prefix`, default 9) followed by a number
goes to the external line with the prefix stripped; anything else is
unallocated (404, Q.850 cause 1).

A `sip_trunk` rule names its trunk; the out-group prefix reaches the server's
external line, which is a trunk too. With no external line configured, the
out-group prefix answers 503 (cause 34, no circuit available).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from .config import DialRule


@dataclasses.dataclass(frozen=True, slots=True)
class RouteDecision:
    route: str  # "local_user" | "external_line" | "sip_trunk" | "none"
    number: str  # the number after strip/add
    status: int = 0  # non-zero: refuse the call with this SIP status
    cause: int = 0  # Q.850 cause when refused
    reason: str = ""
    trunk: int = 0  # the trunk the call leaves by (routes sip_trunk and external_line)

    @property
    def refused(self) -> bool:
        return self.status != 0


class DialPlan:
    def __init__(
        self,
        rules: tuple[DialRule, ...],
        local: Collection[str],
        out_group_prefix: str = "",
        external_line: int = 0,
    ) -> None:
        """`local`: the server's own numbers (local users and hunt groups)."""
        # Longest prefix first; ties keep the configured order.
        self.rules = sorted(rules, key=lambda r: -len(r.prefix))
        self.local = local
        self.out_group_prefix = out_group_prefix
        self.external_line = external_line

    def match(self, dialed: str) -> DialRule | None:
        for rule in self.rules:
            if dialed.startswith(rule.prefix):
                return rule
        return None

    def route(self, dialed: str, caller_level: int) -> RouteDecision:
        rule = self.match(dialed)
        if rule is None:
            if dialed in self.local:
                return RouteDecision("local_user", dialed)
            prefix = self.out_group_prefix
            if prefix and dialed.startswith(prefix) and len(dialed) > len(prefix):
                rule = DialRule(prefix=prefix, route="external_line", strip=len(prefix))
            else:
                return RouteDecision("none", dialed, 404, 1, "Not Found")
        number = rule.add + dialed[rule.strip :]
        if caller_level < rule.call_level:
            return RouteDecision(rule.route, number, 403, 21, "Forbidden - call level")
        if rule.route == "local_user":
            if number not in self.local:
                return RouteDecision(rule.route, number, 404, 1, "Not Found")
            return RouteDecision(rule.route, number)
        trunk = rule.trunk if rule.route == "sip_trunk" else self.external_line
        if not trunk:
            reason = f"Service Unavailable - {rule.route} not available"
            return RouteDecision(rule.route, number, 503, 34, reason)
        return RouteDecision(rule.route, number, trunk=trunk)
