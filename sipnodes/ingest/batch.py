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

from django.db import connection, models, transaction
from django.db.models import Q

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

from .parse import CDR_COLUMNS, Entry, Fields, cdr_columns, parse_entry, utc


@dataclass(frozen=True, slots=True)
class BadEntry:
    """An entry for the dead-letter stream: its id, its fields and what is wrong."""

    entry_id: bytes
    fields: Fields
    error: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one batch held: events of existing servers by type (duplicates included;
    `call` events whatever their server, which is not looked up); `unknown_server`: other
    events of a server that does not exist; `unknown_user`: call settings events of a user
    the server no longer has."""

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
    # A `call` event writes nothing (live calls are read from Redis): its server is not
    # looked up, and most events of a batch under load are call states.
    servers = _lock_servers({e.server_id for e in parsed if e.type is not EventType.CALL})
    known = [e for e in parsed if e.server_id in servers or e.type is EventType.CALL]
    _insert_cdrs([event for event in known if isinstance(event.data, CdrData)])
    activity: dict[int, _Activity] = {}
    for event in known:
        if event.server_id in servers:
            activity.setdefault(event.server_id, _Activity()).add(event)
    _record_activity(servers, activity)
    unknown_user, changed_servers = _record_call_settings(known)
    record_trunk_states(
        [
            TrunkReport.of(event.server_id, event.ts, event.data)
            for event in known
            if isinstance(event.data, TrunkData)
        ]
    )
    if changed_servers:
        for server in VirtualServer.objects.filter(pk__in=changed_servers).select_related("host"):
            apply_on_commit(server)  # the rendered config holds the phone's change from now on
    return IngestResult(
        by_type=Counter(event.type for event in known),
        unknown_server=len(parsed) - len(known),
        bad=tuple(bad),
        unknown_user=unknown_user,
    )


# Every batch reads and updates a few servers' activity columns. In plain SQL, written once:
# building the same statements with the ORM cost about a millisecond each, per batch.
_SERVERS = VirtualServer._meta.db_table
_ACTIVITY = (
    "last_call_at",
    "last_registration_at",
    "registered_clients",
    "registered_clients_at",
    "restart_count",
)


_CDR_COLUMNS = [CdrRow._meta.get_field(name) for name in ("server", *CDR_COLUMNS)]
# The columns whose values the database backend must convert (SQLite keeps a UUID as hex
# and a datetime as naive text); the others go as they are.
_CDR_CONVERTED = [isinstance(f, models.DateTimeField | models.UUIDField) for f in _CDR_COLUMNS]


def _insert_cdrs(events: list[Event]) -> None:
    """One row per CDR; a UUID already there is skipped (`ON CONFLICT DO NOTHING`, which
    PostgreSQL and SQLite both know), so a batch read twice adds nothing."""
    if not events:
        return
    rows = []
    for event in events:
        assert isinstance(event.data, CdrData)
        values = {"server": event.server_id, **cdr_columns(event.data)}
        rows.append(
            [
                f.get_db_prep_save(values[f.name], connection) if converted else values[f.name]
                for f, converted in zip(_CDR_COLUMNS, _CDR_CONVERTED, strict=True)
            ]
        )
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in _CDR_COLUMNS)
    marks = ", ".join(["%s"] * len(_CDR_COLUMNS))
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {qn(CdrRow._meta.db_table)} ({columns}) VALUES ({marks}) "
            "ON CONFLICT DO NOTHING",
            rows,
        )


@dataclass(frozen=True, slots=True)
class _ServerRow:
    """A server's activity as the database holds it (read under the row's lock)."""

    last_call_at: datetime.datetime | None
    last_registration_at: datetime.datetime | None
    registered_clients: int
    registered_clients_at: datetime.datetime | None


def _lock_servers(server_ids: set[int]) -> dict[int, _ServerRow]:
    """The servers that exist, locked in id order (none is purged under us, no deadlock),
    with their activity. On SQLite the transaction holds the database's write lock."""
    if not server_ids:
        return {}
    ids = sorted(server_ids)
    qn = connection.ops.quote_name
    sql = f"SELECT {qn('id')}, {', '.join(qn(c) for c in _ACTIVITY[:4])} FROM {qn(_SERVERS)} "
    params: list[Any]
    if connection.vendor == "postgresql":  # one statement text, whatever the number of ids
        sql += f"WHERE {qn('id')} = ANY(%s) ORDER BY {qn('id')} FOR NO KEY UPDATE"
        params = [ids]
    else:
        sql += f"WHERE {qn('id')} IN ({', '.join(['%s'] * len(ids))}) ORDER BY {qn('id')}"
        params = list(ids)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {
            pk: _ServerRow(_aware(call), _aware(registration), clients, _aware(clients_at))
            for pk, call, registration, clients, clients_at in cursor.fetchall()
        }


def _aware(value: datetime.datetime | str | None) -> datetime.datetime | None:
    """A datetime column read with plain SQL: SQLite gives it naive (UTC) or as text."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value


def _activity_updates(row: _ServerRow, activity: _Activity) -> dict[str, Any]:
    """The columns the batch moves forward; nothing ever moves backwards."""
    updates: dict[str, Any] = {}
    if activity.last_call_at is not None and _newer(activity.last_call_at, row.last_call_at):
        updates["last_call_at"] = activity.last_call_at
    if activity.last_registration_at is not None and _newer(
        activity.last_registration_at, row.last_registration_at
    ):
        updates["last_registration_at"] = activity.last_registration_at
    at = activity.clients_at
    # Only an event at least as new as the one that set the count may change it.
    if at is not None and (row.registered_clients_at is None or row.registered_clients_at <= at):
        if activity.clients != row.registered_clients:
            updates["registered_clients"] = activity.clients
        if at != row.registered_clients_at:
            updates["registered_clients_at"] = at
    if activity.crashes:
        updates["restart_count"] = activity.crashes  # added to the column
    return updates


def _newer(value: datetime.datetime, than: datetime.datetime | None) -> bool:
    return than is None or value > than


def _record_activity(servers: dict[int, _ServerRow], activity: dict[int, _Activity]) -> None:
    """One UPDATE per server whose activity moved, the same ones sent together."""
    statements: dict[tuple[str, ...], list[list[Any]]] = {}
    for server_id, server_activity in sorted(activity.items()):
        updates = _activity_updates(servers[server_id], server_activity)
        if updates:
            params = [
                connection.ops.adapt_datetimefield_value(v)
                if isinstance(v, datetime.datetime)
                else v
                for v in updates.values()
            ]
            statements.setdefault(tuple(updates), []).append([*params, server_id])
    qn = connection.ops.quote_name
    with connection.cursor() as cursor:
        for columns, rows in statements.items():
            assignments = ", ".join(
                f"{qn(c)} = {qn(c)} + %s" if c == "restart_count" else f"{qn(c)} = %s"
                for c in columns
            )
            cursor.executemany(
                f"UPDATE {qn(_SERVERS)} SET {assignments} WHERE {qn('id')} = %s", rows
            )


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
