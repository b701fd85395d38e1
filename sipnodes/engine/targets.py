"""Who rings for a call, and who next when nobody answers: forwarding and hunt groups.

The dial plan routes a call to a local number. A `TargetPlan` turns that number
into stages: the users whose devices ring together (every device of each user:
parallel ringing), and for how long. When a stage ends without an answer
(`Outcome`), `TargetPlan.next` says what follows:

- a user: forwarding for that outcome if set (`FORWARD_ON`), otherwise the end.
  Unconditional forwarding applies before anything rings; DND counts as busy.
- a hunt group: simultaneous rings every member for the group's timeout;
  sequential rings one member at a time for `ring_seconds`, in the configured
  order; round-robin does the same starting one member further on each call.
  When the members or the group's timeout run out: the overflow target, if any.
  Members with DND on are skipped; members' own forwarding does not apply.

A number the dial plan sends to a trunk (an outside number) is one stage of
its own: the upstream rings it, and nothing follows when it fails. A
forwarding target is routed through the dial plan with the caller's call
level, as if the caller had dialled it. More than `MAX_HOPS` forwards, or a
number the call has already reached, ends the call (482, cause 25).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping

from .cdr import CallTag
from .config import HuntGroup, User
from .dialplan import DialPlan

MAX_HOPS = 5


class Outcome(enum.Enum):
    """Why a stage ended without an answer."""

    BUSY = "busy"  # every device refused (486, 600, ...) or the user has DND on
    NO_ANSWER = "no_answer"  # the stage's time ran out
    UNREACHABLE = "unreachable"  # no device registered, or none responded


@dataclasses.dataclass(frozen=True, slots=True)
class Forward:
    """One forward of the call: `reason` is an Outcome value, "unconditional" or "overflow"."""

    reason: str
    by: str
    to: str

    @property
    def fci(self) -> str:
        return f"{self.reason}:{self.by}>{self.to}"


@dataclasses.dataclass(frozen=True, slots=True)
class Ring:
    """Ring every device of `numbers` for `seconds` (0: until the call's no-answer timeout)."""

    numbers: tuple[str, ...]
    seconds: int
    forward: Forward | None = None  # this stage follows a forward: the caller gets 181
    trunk: int = 0  # not local users: one number, dialled through this trunk


@dataclasses.dataclass(frozen=True, slots=True)
class Stop:
    """Nobody else to ring. With no status, the call ends on what the callee side said."""

    status: int = 0
    phrase: str = ""
    cause: int = 0
    tag: CallTag = CallTag.ROUTING_FAILED


Step = Ring | Stop

# The forwarding target a user's settings give for each outcome.
FORWARD_ON = {
    Outcome.BUSY: "busy",
    Outcome.NO_ANSWER: "no_answer",
    Outcome.UNREACHABLE: "unreachable",
}
DND_REFUSAL = Stop(486, "Busy Here - do not disturb", 17, CallTag.DO_NOT_DISTURB)
LOOP_REFUSAL = Stop(482, "Loop Detected - forwarded too often", 25, CallTag.FORWARD_LOOP)


@dataclasses.dataclass
class Directory:
    """What plans read: users (with their current DND and forwarding), groups, the dial plan."""

    users: Mapping[str, User]
    groups: Mapping[str, HuntGroup]
    dialplan: DialPlan
    # Round-robin groups: the member index the next call starts at.
    cursors: dict[str, int] = dataclasses.field(default_factory=dict)


class TargetPlan:
    """The stages of one call; `first` once, then `next` after each stage that failed."""

    def __init__(
        self, number: str, caller_level: int, directory: Directory, trunk: int = 0
    ) -> None:
        self.number = number  # the user, group or outside number ringing now
        self.trunk = trunk  # the outside number's trunk
        self.caller_level = caller_level
        self.directory = directory
        self.forwards: list[Forward] = []
        self.reached = {number}
        self.dnd = False  # the user reached last has DND on
        self.group: HuntGroup | None = None
        self.order: tuple[str, ...] = ()  # the group members still to ring, in order
        self.deadline = 0.0  # the group's timeout, as a time

    @property
    def callee(self) -> str:
        """The number the call is with now (the CDR's callee)."""
        return self.number

    def first(self, now: float) -> Step:
        if self.trunk:
            return Ring((self.number,), 0, None, self.trunk)
        return self._enter(self.number, None, now)

    def next(self, outcome: Outcome, now: float) -> Step:
        if self.trunk:  # an outside number: the upstream had its say
            return Stop()
        if self.group is not None:
            return self._next_member(now)
        if self.dnd:
            outcome = Outcome.BUSY
        user = self.directory.users.get(self.number)
        target = getattr(user.forwarding, FORWARD_ON[outcome]) if user else ""
        if target:
            return self._forward(FORWARD_ON[outcome], target, now)
        return DND_REFUSAL if self.dnd else Stop()

    def _enter(self, number: str, forward: Forward | None, now: float) -> Step:
        self.number, self.group, self.dnd = number, None, False
        group = self.directory.groups.get(number)
        if group is not None:
            return self._enter_group(group, forward, now)
        user = self.directory.users.get(number)
        if user is None:  # a number routed as local but not (or no longer) a user
            return Stop(404, "Not Found", 1)
        if user.forwarding.unconditional:
            return self._forward("unconditional", user.forwarding.unconditional, now)
        if user.dnd:
            self.dnd = True
            return self.next(Outcome.BUSY, now)
        fw = user.forwarding
        return Ring((number,), fw.no_answer_seconds if fw.no_answer else 0, forward)

    def _forward(self, reason: str, to: str, now: float) -> Step:
        by = self.number
        if len(self.forwards) >= MAX_HOPS:
            return LOOP_REFUSAL
        decision = self.directory.dialplan.route(to, self.caller_level)
        if decision.refused:
            return Stop(decision.status, decision.reason, decision.cause)
        if decision.number in self.reached:
            return LOOP_REFUSAL
        self.reached.add(decision.number)
        forward = Forward(reason, by, decision.number)
        self.forwards.append(forward)
        if decision.trunk:
            self.number, self.group, self.trunk = decision.number, None, decision.trunk
            return Ring((decision.number,), 0, forward, decision.trunk)
        return self._enter(decision.number, forward, now)

    def _enter_group(self, group: HuntGroup, forward: Forward | None, now: float) -> Step:
        self.group = group
        self.deadline = now + group.timeout
        users = self.directory.users
        members = tuple(m for m in group.members if m in users and not users[m].dnd)
        if group.mode == "simultaneous":
            self.order = ()
            if not members:
                return self._overflow(now)
            return Ring(members, group.timeout, forward)
        if group.mode == "round_robin" and members:
            start = self.directory.cursors.get(group.number, 0) % len(members)
            self.directory.cursors[group.number] = start + 1
            members = members[start:] + members[:start]
        self.order = members
        return self._next_member(now, forward)

    def _next_member(self, now: float, forward: Forward | None = None) -> Step:
        group = self.group
        assert group is not None
        remaining = self.deadline - now
        if not self.order or remaining <= 0:
            return self._overflow(now)
        member, self.order = self.order[0], self.order[1:]
        seconds = max(1, min(group.ring_seconds, int(remaining + 0.5)))
        return Ring((member,), seconds, forward)

    def _overflow(self, now: float) -> Step:
        group = self.group
        assert group is not None
        self.order = ()
        if group.overflow:
            return self._forward("overflow", group.overflow, now)
        return Stop()
