"""One batch of stream entries, one durable transaction.

CDRs are inserted once by UUID; what the batch says about each server (last
call, last registration, client count, crashes), each user's call settings
(DND and forwarding set from a phone) and each trunk's registration state is
applied with conditional updates, so a batch read late or twice never moves
anything backwards.
"""

from __future__ import annotations

import datetime
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Case, F, PositiveIntegerField, Q, Value, When
from django.db.models.functions import Coalesce, Greatest

from sipnodes.engine.events import (
    CallSettingsData,
    CdrData,
    CrashData,
    Event,
    EventType,
    MalformedEvent,
    RegistrationData,
    StatusData,
    TrunkData,
)
from sipnodes.models import Cdr as CdrRow
from sipnodes.models import LocalUser, Trunk, VirtualServer
from sipnodes.provisioning import apply_on_commit

from .parse import Entry, Fields, cdr_columns, parse_entry, utc


@dataclass(frozen=True, slots=True)
class BadEntry:
    """An entry for the dead-letter stream: its id, its fields and what is wrong."""

    entry_id: bytes
    fields: Fields
    error: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one batch held: events of existing servers by type (duplicates included);
    `unknown_user`: call settings events of a user the server no longer has."""

    by_type: Counter[EventType]
    unknown_server: int
    bad: tuple[BadEntry, ...]
    unknown_user: int = 0


@dataclass
class _Activity:
    """What one batch says about one server.

    The client count comes from registration events and from the worker's status
    reports (start, reload, stop); the newest event wins, whatever the stream order.
    """

    last_call_at: datetime.datetime | None = None
    last_registration_at: datetime.datetime | None = None
    clients_at: datetime.datetime | None = None
    clients: int = 0
    crashes: int = 0

    def add(self, event: Event) -> None:
        data = event.data
        if isinstance(data, CdrData):
            self.last_call_at = _later(self.last_call_at, utc(data.start))
        elif isinstance(data, RegistrationData | StatusData):
            at = utc(event.ts)
            if isinstance(data, RegistrationData) and data.action == "register":
                self.last_registration_at = _later(self.last_registration_at, at)
            if self.clients_at is None or at >= self.clients_at:  # a tie goes to the later entry
                self.clients_at, self.clients = at, data.registered_clients
        elif isinstance(data, CrashData):
            self.crashes += 1


def _later(a: datetime.datetime | None, b: datetime.datetime) -> datetime.datetime:
    return b if a is None or b > a else a


def _parse_all(entries: Sequence[Entry]) -> tuple[list[Event], list[BadEntry]]:
    parsed: list[Event] = []
    bad: list[BadEntry] = []
    for entry_id, fields in entries:
        try:
            parsed.append(parse_entry(fields))
        except MalformedEvent as exc:
            bad.append(BadEntry(entry_id=entry_id, fields=fields, error=str(exc)))
    return parsed, bad


@transaction.atomic(durable=True)
def ingest_batch(entries: Sequence[Entry]) -> IngestResult:
    """Write one batch; durable, because the caller acknowledges the entries after it returns."""
    parsed, bad = _parse_all(entries)
    servers = _lock_servers({event.server_id for event in parsed})
    known = [event for event in parsed if event.server_id in servers]
    CdrRow.objects.bulk_create(
        [
            CdrRow(server_id=event.server_id, **cdr_columns(event.data))
            for event in known
            if isinstance(event.data, CdrData)
        ],
        ignore_conflicts=True,
    )
    activity: dict[int, _Activity] = {}
    for event in known:
        activity.setdefault(event.server_id, _Activity()).add(event)
    for server_id, server_activity in activity.items():
        _record_activity(server_id, server_activity)
    unknown_user, changed_servers = _record_call_settings(known)
    record_trunk_states(
        [
            TrunkReport.of(event.server_id, event.ts, event.data)
            for event in known
            if isinstance(event.data, TrunkData)
        ]
    )
    for server in VirtualServer.objects.filter(pk__in=changed_servers).select_related("host"):
        apply_on_commit(server)  # the rendered config holds the phone's change from now on
    return IngestResult(
        by_type=Counter(event.type for event in known),
        unknown_server=len(parsed) - len(known),
        bad=tuple(bad),
        unknown_user=unknown_user,
    )


def _lock_servers(server_ids: set[int]) -> set[int]:
    """The servers that exist, locked in id order: none is purged under us, no deadlock."""
    return set(
        VirtualServer.objects.filter(pk__in=server_ids)
        .order_by("pk")
        .select_for_update(no_key=True)
        .values_list("pk", flat=True)
    )


def _record_activity(server_id: int, activity: _Activity) -> None:
    """Conditional updates, so a batch read late never moves anything backwards."""
    updates: dict[str, Any] = {}
    if activity.last_call_at is not None:
        updates["last_call_at"] = _at_least("last_call_at", activity.last_call_at)
    if activity.clients_at is not None:
        # Only an event newer than the count's own time may change it.
        # (Both sides of SET read the row as it was before this UPDATE.)
        updates["registered_clients"] = Case(
            When(
                Q(registered_clients_at__isnull=True)
                | Q(registered_clients_at__lte=activity.clients_at),
                then=Value(activity.clients),
            ),
            default=F("registered_clients"),
            output_field=PositiveIntegerField(),
        )
        updates["registered_clients_at"] = _at_least("registered_clients_at", activity.clients_at)
    if activity.crashes:
        updates["restart_count"] = F("restart_count") + activity.crashes
    if activity.last_registration_at is not None:
        updates["last_registration_at"] = _at_least(
            "last_registration_at", activity.last_registration_at
        )
    if updates:
        VirtualServer.objects.filter(pk=server_id).update(**updates)


def _record_call_settings(events: list[Event]) -> tuple[int, set[int]]:
    """Each user's newest call settings, applied only over older ones: the portal's own
    change may be newer than a phone's that is read late. Returns how many events named a
    user the server does not have (deleted since, dropped), and the servers changed: their
    config is rendered again, so a worker restarted later still has the phone's change."""
    newest: dict[tuple[int, str], CallSettingsData] = {}
    counts: Counter[tuple[int, str]] = Counter()
    for event in events:
        data = event.data
        if isinstance(data, CallSettingsData):
            key = (event.server_id, data.user)
            counts[key] += 1
            if key not in newest or data.changed >= newest[key].changed:
                newest[key] = data
    unknown, changed_servers = 0, set()
    for (server_id, number), data in newest.items():
        changed = utc(data.changed)
        users = LocalUser.objects.filter(server_id=server_id, number=number)
        applied = users.filter(
            Q(call_settings_changed__isnull=True) | Q(call_settings_changed__lt=changed)
        ).update(
            dnd=data.dnd,
            forward_unconditional=data.forward_unconditional,
            forward_busy=data.forward_busy,
            forward_no_answer=data.forward_no_answer,
            forward_unreachable=data.forward_unreachable,
            call_settings_changed=changed,
        )
        if applied:
            changed_servers.add(server_id)
        elif not users.exists():
            unknown += counts[(server_id, number)]
    return unknown, changed_servers


@dataclass(frozen=True, slots=True)
class TrunkReport:
    """What a `trunk` event says about one trunk of one server; times in epoch seconds."""

    server_id: int
    trunk_id: int
    ts: float  # the event's own time
    state: str
    reason: str
    attempt: float
    next_attempt: float | None

    @classmethod
    def of(cls, server_id: int, ts: float, data: TrunkData) -> TrunkReport:
        return cls(
            server_id, data.trunk, ts, data.state, data.reason, data.attempt, data.next_attempt
        )

    @property
    def order(self) -> tuple[float, float]:
        return (self.ts, self.attempt)


# The state's reason as the column can hold it (the worker's text is cut, not refused).
_REASON_LENGTH = Trunk._meta.get_field("state_reason").max_length


def record_trunk_states(reports: Sequence[TrunkReport]) -> int:
    """Each trunk's newest report, applied only over older ones: neither the event's time
    nor its attempt may be older than the row's. A trunk edited in the portal since
    (`state_at` moved to the edit) ignores reports about its old settings; a trunk that
    is not the server's (deleted since, or never) is skipped. Returns the rows changed."""
    newest: dict[tuple[int, int], TrunkReport] = {}
    for report in reports:
        key = (report.server_id, report.trunk_id)
        if key not in newest or report.order >= newest[key].order:  # a tie: the later entry
            newest[key] = report
    changed = 0
    for report in newest.values():
        at, attempt = utc(report.ts), utc(report.attempt)
        changed += (
            Trunk.objects.filter(server_id=report.server_id, pk=report.trunk_id)
            .filter(Q(state_at__isnull=True) | Q(state_at__lte=at))
            .filter(Q(last_attempt_at__isnull=True) | Q(last_attempt_at__lte=attempt))
            .update(
                state=report.state,
                state_reason=report.reason[:_REASON_LENGTH],
                state_at=at,
                last_attempt_at=attempt,
                next_attempt_at=None if report.next_attempt is None else utc(report.next_attempt),
            )
        )
    return changed


def _at_least(column: str, value: datetime.datetime) -> Greatest:
    """max(column, value); Coalesce, because SQLite's max() of a NULL is NULL."""
    return Greatest(Coalesce(column, Value(value)), Value(value))
