"""One batch of stream entries, one durable transaction.

CDRs are inserted once by UUID; what the batch says about each server (last
call, last registration, client count, crashes) is applied with conditional
updates, so a batch read late or twice never moves anything backwards.
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
    CdrData,
    CrashData,
    Event,
    EventType,
    MalformedEvent,
    RegistrationData,
    StatusData,
)
from sipnodes.models import Cdr as CdrRow
from sipnodes.models import VirtualServer

from .parse import Entry, Fields, cdr_columns, parse_entry, utc


@dataclass(frozen=True, slots=True)
class BadEntry:
    """An entry for the dead-letter stream: its id, its fields and what is wrong."""

    entry_id: bytes
    fields: Fields
    error: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one batch held: events of existing servers by type (duplicates included)."""

    by_type: Counter[EventType]
    unknown_server: int
    bad: tuple[BadEntry, ...]


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
    return IngestResult(
        by_type=Counter(event.type for event in known),
        unknown_server=len(parsed) - len(known),
        bad=tuple(bad),
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


def _at_least(column: str, value: datetime.datetime) -> Greatest:
    """max(column, value); Coalesce, because SQLite's max() of a NULL is NULL."""
    return Greatest(Coalesce(column, Value(value)), Value(value))
