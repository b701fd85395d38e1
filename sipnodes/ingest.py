"""The ingest consumer: worker events from the Redis Stream into PostgreSQL.

Workers never touch the database; they append events to `sipcloud:events`
(see `sipnodes.engine.events`). This module reads them as the consumer group
`ingest` and writes each batch in one transaction, idempotently: CDRs are
unique by UUID and server activity only ever moves forward, so a batch that
is read twice (a crash between the commit and XACK, a claim from a consumer
that looked dead) changes nothing the second time. Entries are acknowledged
only after the commit; malformed ones go to a dead-letter stream instead of
blocking the ones behind them.

Three parts: `parse_entry` (pure: text in, a frozen value or `BadEvent` out),
`ingest_batch` (one transaction) and `IngestConsumer` (the Redis loop).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import logging
import math
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from django.db import DatabaseError, InterfaceError, connection, transaction
from django.db.models import Case, F, PositiveIntegerField, Q, Value, When
from django.db.models.functions import Coalesce, Greatest
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from sipnodes.engine.events import STREAM_KEY
from sipnodes.models import Cdr, VirtualServer

log = logging.getLogger(__name__)

DEAD_LETTER_KEY = f"{STREAM_KEY}:dead"
DEAD_LETTER_MAXLEN = 100_000
GROUP = "ingest"
BATCH_SIZE = 500
BLOCK_MS = 1000
CLAIM_IDLE_MS = 60_000  # a consumer silent this long is taken for dead; its entries are claimed
CLAIM_INTERVAL = 30.0
FORGET_IDLE_MS = 24 * 3600 * 1000  # a consumer with nothing pending, silent this long, is removed
BACKOFF_FIRST = 0.2
BACKOFF_MAX = 5.0

_SMALLINT_MAX = 32767
_INT_MAX = 2**31 - 1
_BIGINT_MAX = 2**63 - 1
_REGISTRATION_ACTIONS = frozenset({"register", "unregister", "expire"})

Fields = Mapping[bytes, bytes]
Entry = tuple[bytes, Fields]


class BadEvent(ValueError):
    """A stream entry that can never be ingested; the message says what is wrong with it."""


# ---- parsed events (pure) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class CdrEvent:
    """One call detail record, shaped like `sipnodes.models.Cdr`."""

    server_id: int
    uuid: uuid.UUID
    call_id: str
    caller: str
    dialed: str
    callee: str
    route: str
    started_at: datetime.datetime
    ring_at: datetime.datetime | None
    answered_at: datetime.datetime | None
    released_at: datetime.datetime | None
    talk_seconds: int
    released_by: str
    status: int
    answered: bool
    fci: str
    cause: int | None
    call_tag: int | None


@dataclass(frozen=True, slots=True)
class RegistrationEvent:
    """A binding changed; `registered_clients` is the server's count of users after it."""

    server_id: int
    at: datetime.datetime
    action: str
    registered_clients: int


@dataclass(frozen=True, slots=True)
class WorkerCrashEvent:
    """supervisord saw the worker die unexpectedly (reported by `sipnodes.exit_listener`).

    Counted at least once: a batch committed but not acknowledged is counted again.
    """

    server_id: int
    at: datetime.datetime


@dataclass(frozen=True, slots=True)
class IgnoredEvent:
    """A well-formed event nothing consumes yet (acknowledged and dropped)."""

    server_id: int
    type: str


ParsedEvent = CdrEvent | RegistrationEvent | WorkerCrashEvent | IgnoredEvent


@dataclass(frozen=True, slots=True)
class _Envelope:
    type: str
    server_id: int
    event_id: uuid.UUID
    at: datetime.datetime
    data: dict[str, Any]


def parse_entry(fields: Fields) -> ParsedEvent:
    """Read one stream entry; raises `BadEvent` naming the first thing wrong with it."""
    if not fields:
        raise BadEvent("the entry is empty (deleted from the stream before it was ingested)")
    envelope = _parse_envelope(fields)
    parser = _PARSERS.get(envelope.type)
    if parser is None:
        raise BadEvent(f"unknown event type {envelope.type[:40]!r}")
    return parser(envelope)


def _field(fields: Fields, name: str) -> str:
    raw = fields.get(name.encode())
    if raw is None:
        raise BadEvent(f"missing field {name!r}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadEvent(f"field {name!r} is not UTF-8") from exc


def _parse_envelope(fields: Fields) -> _Envelope:
    server_id = _field(fields, "server_id")
    if not server_id.isascii() or not server_id.isdigit() or not 0 < int(server_id) <= _BIGINT_MAX:
        raise BadEvent(f"server_id {server_id[:40]!r} is not a positive integer")
    try:
        data = json.loads(_field(fields, "data"))
    except (ValueError, RecursionError) as exc:
        raise BadEvent(f"data is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadEvent("data is not a JSON object")
    return _Envelope(
        type=_field(fields, "type"),
        server_id=int(server_id),
        event_id=_uuid(_field(fields, "event_id"), "event_id"),
        at=_unix_time(_field(fields, "ts")),
        data=data,
    )


def _uuid(text: object, name: str) -> uuid.UUID:
    if not isinstance(text, str):
        raise BadEvent(f"{name} is not a string")
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise BadEvent(f"{name} {text[:40]!r} is not a UUID") from exc


def _unix_time(text: str) -> datetime.datetime:
    try:
        ts = float(text)
        if not math.isfinite(ts) or ts <= 0:
            raise ValueError(text)
        return datetime.datetime.fromtimestamp(ts, datetime.UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise BadEvent(f"ts {text[:40]!r} is not a unix time") from exc


def _get(data: dict[str, Any], name: str) -> Any:
    if name not in data:
        raise BadEvent(f"data has no {name!r}")
    return data[name]


def _text(data: dict[str, Any], name: str, max_length: int) -> str:
    """A string that PostgreSQL accepts; an over-long one is cut to fit rather than lost."""
    value = _get(data, name)
    if not isinstance(value, str):
        raise BadEvent(f"{name} is not a string")
    if "\x00" in value:
        raise BadEvent(f"{name} contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadEvent(f"{name} is not valid Unicode") from exc
    return value[:max_length]


def _int(data: dict[str, Any], name: str, low: int, high: int) -> int:
    value = _get(data, name)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadEvent(f"{name} {value!r:.40} is not an integer in {low}-{high}")
    return value


def _time(data: dict[str, Any], name: str, *, required: bool) -> datetime.datetime | None:
    value = _get(data, name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadEvent(f"{name} is not an ISO-8601 time")
    try:
        parsed = datetime.datetime.fromisoformat(value)
        utc = parsed.astimezone(datetime.UTC)
    except (ValueError, OverflowError, OSError) as exc:
        raise BadEvent(f"{name} {value[:40]!r} is not an ISO-8601 time") from exc
    if parsed.utcoffset() is None:  # astimezone() took it for local time
        raise BadEvent(f"{name} {value[:40]!r} has no UTC offset")
    return utc


def _seconds(data: dict[str, Any], name: str) -> int:
    """Whole seconds, rounded half up (the engine reports milliseconds)."""
    value = _get(data, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadEvent(f"{name} is not a number")
    if not 0 <= value < _INT_MAX:
        raise BadEvent(f"{name} {value!r:.40} is out of range")
    return int(value + 0.5)


def _fci_params(fci: str) -> tuple[int | None, int | None]:
    """`callTag=<n>;cause=<n>` -> (call_tag, cause); a part that is absent gives None."""
    params: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in fci.split(";"))):
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise BadEvent(f"fci part {part[:40]!r} is not name=number")
        params[name.strip().lower()] = int(value)
    call_tag, cause = params.get("calltag"), params.get("cause")
    if call_tag is not None and call_tag > _SMALLINT_MAX:
        raise BadEvent(f"fci callTag {call_tag} is out of range")
    if cause is not None and cause > 127:
        raise BadEvent(f"fci cause {cause} is not a Q.850 cause")
    return call_tag, cause


def _parse_cdr(envelope: _Envelope) -> CdrEvent:
    data = envelope.data
    cdr_uuid = _uuid(_get(data, "uuid"), "uuid")
    if cdr_uuid != envelope.event_id:
        raise BadEvent("a CDR's event_id must be its uuid")
    answered = _get(data, "answered")
    if not isinstance(answered, bool):
        raise BadEvent("answered is not a boolean")
    fci = _text(data, "fci", Cdr._meta.get_field("fci").max_length)
    call_tag, cause = _fci_params(fci)

    def text(name: str) -> str:
        return _text(data, name, Cdr._meta.get_field(name).max_length)

    return CdrEvent(
        server_id=envelope.server_id,
        uuid=cdr_uuid,
        call_id=text("call_id"),
        caller=text("caller"),
        dialed=text("dialed"),
        callee=text("callee"),
        route=text("route"),
        started_at=_time(data, "start", required=True),
        ring_at=_time(data, "ring", required=False),
        answered_at=_time(data, "answer", required=False),
        released_at=_time(data, "release", required=False),
        talk_seconds=_seconds(data, "talk_seconds"),
        released_by=text("released_by"),
        status=_int(data, "status", 100, 699),
        answered=answered,
        fci=fci,
        cause=cause,
        call_tag=call_tag,
    )


def _parse_registration(envelope: _Envelope) -> RegistrationEvent:
    action = _get(envelope.data, "action")
    if action not in _REGISTRATION_ACTIONS:
        raise BadEvent(f"action {action!r:.40} is not one of {sorted(_REGISTRATION_ACTIONS)}")
    return RegistrationEvent(
        server_id=envelope.server_id,
        at=envelope.at,
        action=action,
        registered_clients=_int(envelope.data, "registered_clients", 0, _INT_MAX),
    )


def _ignored(envelope: _Envelope) -> IgnoredEvent:
    return IgnoredEvent(server_id=envelope.server_id, type=envelope.type)


def _parse_status(envelope: _Envelope) -> WorkerCrashEvent | IgnoredEvent:
    if envelope.data.get("state") == "crashed":
        return WorkerCrashEvent(server_id=envelope.server_id, at=envelope.at)
    return _ignored(envelope)


# What each event type becomes. Live call states and the workers' own status reports
# are read by later features (live calls page, fleet dashboard); until then only
# crashes count, and the rest is dropped.
_PARSERS: dict[str, Callable[[_Envelope], ParsedEvent]] = {
    "cdr": _parse_cdr,
    "registration": _parse_registration,
    "call": _ignored,
    "status": _parse_status,
}


# ---- one batch, one transaction ------------------------------------------------


@dataclass(frozen=True, slots=True)
class BadEntry:
    """An entry for the dead-letter stream: its id, its fields and what is wrong."""

    entry_id: bytes
    fields: Fields
    error: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What one batch held; counts of events for existing servers, duplicates included."""

    cdrs: int
    registrations: int
    ignored: int
    unknown_server: int
    bad: tuple[BadEntry, ...]


@dataclass
class _Activity:
    last_call_at: datetime.datetime | None = None
    last_registration_at: datetime.datetime | None = None
    newest_registration: RegistrationEvent | None = None
    crashes: int = 0

    def add(self, event: ParsedEvent) -> None:
        if isinstance(event, CdrEvent):
            self.last_call_at = _later(self.last_call_at, event.started_at)
        elif isinstance(event, RegistrationEvent):
            if event.action == "register":
                self.last_registration_at = _later(self.last_registration_at, event.at)
            newest = self.newest_registration
            if newest is None or event.at >= newest.at:  # a tie goes to the later entry
                self.newest_registration = event
        elif isinstance(event, WorkerCrashEvent):
            self.crashes += 1


def _later(a: datetime.datetime | None, b: datetime.datetime) -> datetime.datetime:
    return b if a is None or b > a else a


def _parse_all(entries: Sequence[Entry]) -> tuple[list[ParsedEvent], list[BadEntry]]:
    parsed: list[ParsedEvent] = []
    bad: list[BadEntry] = []
    for entry_id, fields in entries:
        try:
            parsed.append(parse_entry(fields))
        except BadEvent as exc:
            bad.append(BadEntry(entry_id=entry_id, fields=fields, error=str(exc)))
    return parsed, bad


@transaction.atomic(durable=True)
def ingest_batch(entries: Sequence[Entry]) -> IngestResult:
    """Write one batch; durable, because the caller acknowledges the entries after it returns."""
    parsed, bad = _parse_all(entries)
    servers = _lock_servers({event.server_id for event in parsed})
    known = [event for event in parsed if event.server_id in servers]
    cdrs = [event for event in known if isinstance(event, CdrEvent)]
    Cdr.objects.bulk_create([_cdr_row(c) for c in cdrs], ignore_conflicts=True)
    activity: dict[int, _Activity] = {}
    for event in known:
        activity.setdefault(event.server_id, _Activity()).add(event)
    for server_id, server_activity in activity.items():
        _record_activity(server_id, server_activity)
    return IngestResult(
        cdrs=len(cdrs),
        registrations=sum(isinstance(e, RegistrationEvent) for e in known),
        ignored=sum(isinstance(e, IgnoredEvent) for e in known),
        unknown_server=len(parsed) - len(known),
        bad=tuple(bad),
    )


def _cdr_row(event: CdrEvent) -> Cdr:
    # Not dataclasses.asdict(): it deep-copies every value, a third of the batch's time.
    return Cdr(**{f.name: getattr(event, f.name) for f in dataclasses.fields(event)})


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
    newest = activity.newest_registration
    if newest is not None:
        # Only an event newer than the count's own time may change it.
        # (Both sides of SET read the row as it was before this UPDATE.)
        updates["registered_clients"] = Case(
            When(
                Q(registered_clients_at__isnull=True) | Q(registered_clients_at__lte=newest.at),
                then=Value(newest.registered_clients),
            ),
            default=F("registered_clients"),
            output_field=PositiveIntegerField(),
        )
        updates["registered_clients_at"] = _at_least("registered_clients_at", newest.at)
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


# ---- the consumer loop -----------------------------------------------------------


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class _Backoff:
    """0.2 s doubling to 5 s; reset after a success."""

    delay: float = BACKOFF_FIRST

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, BACKOFF_MAX)
        return delay

    def reset(self) -> None:
        self.delay = BACKOFF_FIRST


class IngestConsumer:
    """Reads the event stream as one member of the consumer group and ingests it.

    At-least-once: an entry is acknowledged only after the transaction that
    wrote it committed, and writing it again is harmless.
    """

    def __init__(
        self,
        *,
        redis_url: str,
        stream: str = STREAM_KEY,
        dead_letter_stream: str = DEAD_LETTER_KEY,
        group: str = GROUP,
        name: str | None = None,
        batch_size: int = BATCH_SIZE,
        block_ms: int = BLOCK_MS,
        claim_idle_ms: int = CLAIM_IDLE_MS,
        forget_idle_ms: int = FORGET_IDLE_MS,
    ) -> None:
        self.redis_url = redis_url
        self.stream = stream
        self.dead_letter_stream = dead_letter_stream
        self.group = group
        self.name = name or consumer_name()
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.forget_idle_ms = forget_idle_ms
        self.stopping = False
        self._client: redis.Redis | None = None
        self._db_backoff = _Backoff()
        self._redis_backoff = _Backoff()

    def stop(self) -> None:
        """Finish the batch in hand, then return from `run`."""
        self.stopping = True

    @contextlib.contextmanager
    def stopping_on_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT stop the loop cleanly; the previous handlers come back after."""
        signums = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.signal(signum, lambda *_: self.stop()) for signum in signums}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def run(self, *, drain: bool = False) -> None:
        """Consume until stopped; with `drain`, return once no entry is left to read."""
        log.info("ingest consumer %s reading %s as group %s", self.name, self.stream, self.group)
        try:
            while not self.stopping:
                try:
                    if self._serve(drain=drain):
                        return
                except RedisError as exc:
                    delay = self._redis_backoff.next()
                    log.warning(
                        "redis unavailable (%s); reconnecting in %.1fs", _one_line(exc), delay
                    )
                    self._disconnect()
                    self._sleep(delay)
        finally:
            self._disconnect()

    def _serve(self, *, drain: bool) -> bool:
        """Own pending entries first (a restart), then dead consumers', then new ones."""
        self._ensure_group()
        self._redis_backoff.reset()
        self._handle_own_pending()
        self._claim_stale()
        next_claim = time.monotonic() + CLAIM_INTERVAL
        while not self.stopping:
            entries = self._read(">", block=None if drain else self.block_ms)
            if entries:
                self._handle(entries)
            elif drain:
                return True
            if time.monotonic() >= next_claim:
                self._claim_stale()
                next_claim = time.monotonic() + CLAIM_INTERVAL
        return False

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.redis_url,
                socket_timeout=self.block_ms / 1000 + 5.0,
                socket_connect_timeout=2.0,
                retry=Retry(NoBackoff(), 0),  # our own loop retries, with backoff
            )
        return self._client

    def _disconnect(self) -> None:
        if self._client is not None:
            with contextlib.suppress(RedisError):
                self._client.close()
            self._client = None

    def _ensure_group(self) -> None:
        try:
            self._redis().xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self, start: bytes | str, block: int | None) -> list[Entry]:
        reply = self._redis().xreadgroup(
            self.group, self.name, {self.stream: start}, count=self.batch_size, block=block
        )
        return reply[0][1] if reply else []

    def _handle_own_pending(self) -> None:
        last: bytes | str = "0"
        while not self.stopping:
            entries = self._read(last, block=None)
            if not entries:
                return
            self._handle(entries)
            last = entries[-1][0]

    def _claim_stale(self) -> None:
        start: bytes | str = "0-0"
        while not self.stopping:
            start, entries, *_ = self._redis().xautoclaim(
                self.stream,
                self.group,
                self.name,
                min_idle_time=self.claim_idle_ms,
                start_id=start,
                count=self.batch_size,
            )
            if entries:
                log.info("claimed %d entries idle for over %d ms", len(entries), self.claim_idle_ms)
                self._handle(entries)
            if start in (b"0-0", "0-0"):
                break
        self._forget_dead_consumers()

    def _forget_dead_consumers(self) -> None:
        """Each process start is a new consumer name; drop the old ones once they hold nothing."""
        for consumer in self._redis().xinfo_consumers(self.stream, self.group):
            name = consumer["name"].decode()
            if (
                name != self.name
                and not consumer["pending"]
                and consumer["idle"] > self.forget_idle_ms
            ):
                self._redis().xgroup_delconsumer(self.stream, self.group, name)

    def _handle(self, entries: list[Entry]) -> None:
        """Ingest, retrying the same entries while the database is away; then acknowledge."""
        attempt = 0
        while True:
            attempt += 1
            try:
                result = ingest_batch(entries)
                break
            except (DatabaseError, InterfaceError) as exc:
                delay = self._db_backoff.next()
                log.warning(
                    "database unavailable (%s); %d entries kept pending; attempt %d, next in %.1fs",
                    _one_line(exc),
                    len(entries),
                    attempt,
                    delay,
                )
                with contextlib.suppress(DatabaseError, InterfaceError):
                    connection.close()
                if self.stopping:
                    return
                self._sleep(delay)
        self._db_backoff.reset()
        self._acknowledge(entries, result.bad)

    def _acknowledge(self, entries: list[Entry], bad: tuple[BadEntry, ...]) -> None:
        """Dead letters and XACK in one MULTI: either both happen or the batch is re-read."""
        pipe = self._redis().pipeline(transaction=True)
        for entry in bad:
            log.warning("dead-lettering entry %s: %s", entry.entry_id.decode(), entry.error)
            pipe.xadd(
                self.dead_letter_stream,
                {
                    **entry.fields,
                    b"ingest_error": entry.error.encode(),
                    b"ingest_entry_id": entry.entry_id,
                },
                maxlen=DEAD_LETTER_MAXLEN,
                approximate=True,
            )
        pipe.xack(self.stream, self.group, *(entry_id for entry_id, _ in entries))
        pipe.execute()

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))


def _one_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__
