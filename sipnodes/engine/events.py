"""The event contract: what workers report upwards, every field with its type.

Workers (and each host's exit listener) append `Event`s to the Redis Stream
`sipcloud:events`; the ingest consumer reads them back with `Event.from_entry`,
so the payload dataclasses below are the only list of field names, and the
field constraints (ranges, allowed values) are declared beside each field.
Times are UTC epoch seconds as numbers everywhere. `docs/events.md` describes
the contract for readers of the stream.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import types
import typing
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar

STREAM_KEY = "sipcloud:events"
STREAM_MAXLEN = 1_000_000

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_EPOCH_MAX = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last time a datetime can hold


def live_channel(server_uid: str) -> str:
    """Pub/sub channel on which a worker publishes its call events as they happen."""
    return f"sipcloud:vs:{server_uid}:live"


def guard_key(server_uid: str) -> str:
    """The sources the server blocks for guessing passwords (JSON list, `guard.block_list`)."""
    return f"sipcloud:vs:{server_uid}:blocked"


def live_calls_key(server_uid: str) -> str:
    """Hash of the calls in progress (field: O-side Call-ID, value: the last call event)."""
    return f"sipcloud:vs:{server_uid}:calls"


class EventType(enum.StrEnum):
    """The stream's `type` field; each value has one payload class."""

    CDR = "cdr"
    REGISTRATION = "registration"
    CALL = "call"
    STATUS = "status"
    CRASH = "crash"
    CALL_SETTINGS = "call_settings"
    TRUNK = "trunk"


class MalformedEvent(ValueError):
    """A stream entry or spool line that breaks the contract; the message names what is wrong."""


@dataclasses.dataclass(frozen=True, slots=True)
class Range:
    """Annotation: the lowest and highest value a number field may take."""

    low: float
    high: float


class OneOf:
    """Annotation: the values a text field may take."""

    __slots__ = ("values",)

    def __init__(self, *values: str) -> None:
        self.values = frozenset(values)


Epoch = Annotated[float, Range(0.0, _EPOCH_MAX)]  # a time: UTC epoch seconds
Count = Annotated[int, Range(0, _INT32_MAX)]


@dataclasses.dataclass(frozen=True, slots=True)
class CdrData:
    """One call detail record, written once per call by its O-side (event_id: `uuid`)."""

    TYPE: ClassVar[EventType] = EventType.CDR
    uuid: str
    call_id: str
    caller: str
    dialed: str
    callee: str
    route: str
    start: Epoch
    ring: Epoch | None
    answer: Epoch | None
    release: Epoch
    talk_seconds: Annotated[float, Range(0.0, _INT32_MAX)]
    released_by: Annotated[str, OneOf("caller", "callee", "server")]
    status: Annotated[int, Range(100, 699)]  # the final SIP status the caller got
    call_tag: Annotated[int, Range(1, 32767)]  # where the call was released: `cdr.CallTag`
    cause: Annotated[int, Range(1, 127)]  # ITU-T Q.850 cause
    fci: str  # "callTag=<call_tag>;cause=<cause>", then `cdr.Cdr.features`
    answered: bool


@dataclasses.dataclass(frozen=True, slots=True)
class RegistrationData:
    """A binding changed; `registered_clients` is the server's count of users after it."""

    TYPE: ClassVar[EventType] = EventType.REGISTRATION
    action: Annotated[str, OneOf("register", "unregister", "expire")]
    user: str
    contact: str
    expires: Count
    registered_clients: Count


@dataclasses.dataclass(frozen=True, slots=True)
class CallData:
    """A call in progress changed state (only with the server's real-time display on)."""

    TYPE: ClassVar[EventType] = EventType.CALL
    call_id: str
    caller: str
    callee: str
    state: Annotated[str, OneOf("initiated", "ringing", "answered", "released")]


@dataclasses.dataclass(frozen=True, slots=True)
class StatusData:
    """The worker's own report when it has started, reloaded its config or is stopping."""

    TYPE: ClassVar[EventType] = EventType.STATUS
    state: Annotated[str, OneOf("started", "reloaded", "stopped")]
    name: str
    registered_clients: Count
    active_calls: Count


@dataclasses.dataclass(frozen=True, slots=True)
class CrashData:
    """supervisord saw the worker exit unexpectedly or fail to start (the exit listener).

    A worker that dies cannot say so itself, hence a type of its own.
    """

    TYPE: ClassVar[EventType] = EventType.CRASH
    pid: Count  # 0 when the worker never started


@dataclasses.dataclass(frozen=True, slots=True)
class CallSettingsData:
    """A user changed their DND or forwarding with a feature code: the whole new state.

    Ingest applies it only if `changed` is newer than what the database holds, so
    the portal and the phone can both change settings without one undoing the other.
    """

    TYPE: ClassVar[EventType] = EventType.CALL_SETTINGS
    user: str
    dnd: bool
    forward_unconditional: str
    forward_busy: str
    forward_no_answer: str
    forward_unreachable: str
    changed: Epoch


@dataclasses.dataclass(frozen=True, slots=True)
class TrunkData:
    """A trunk's registration changed state, or failed again (with when it retries)."""

    TYPE: ClassVar[EventType] = EventType.TRUNK
    trunk: Annotated[int, Range(1, _INT64_MAX)]  # the trunk's id
    state: Annotated[str, OneOf("registered", "failing", "unregistered")]
    reason: str  # why it is failing, e.g. "403 Forbidden"; empty otherwise
    attempt: Epoch  # the last REGISTER sent
    next_attempt: Epoch | None  # when a failing registration is tried again


EventData = (
    CdrData | RegistrationData | CallData | StatusData | CrashData | CallSettingsData | TrunkData
)


@dataclasses.dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: type  # str, int, float or bool
    optional: bool
    range: Range | None
    one_of: OneOf | None


def _describe(cls: type) -> tuple[_Field, ...]:
    """Each field's type and constraints, read from the payload class's annotations."""
    hints = typing.get_type_hints(cls, include_extras=True)
    described = []
    for field in dataclasses.fields(cls):
        hint = hints[field.name]
        optional = typing.get_origin(hint) in (typing.Union, types.UnionType)
        if optional:
            [hint] = [a for a in typing.get_args(hint) if a is not type(None)]
        kind, *extras = typing.get_args(hint) if typing.get_origin(hint) is Annotated else [hint]
        if kind not in (str, int, float, bool):
            raise TypeError(f"{cls.__name__}.{field.name}: the stream carries no {kind!r}")
        described.append(
            _Field(
                name=field.name,
                kind=kind,
                optional=optional,
                range=next((e for e in extras if isinstance(e, Range)), None),
                one_of=next((e for e in extras if isinstance(e, OneOf)), None),
            )
        )
    return tuple(described)


_PAYLOADS: dict[EventType, type[EventData]] = {cls.TYPE: cls for cls in typing.get_args(EventData)}
_FIELDS: dict[type[EventData], tuple[_Field, ...]] = {
    cls: _describe(cls) for cls in _PAYLOADS.values()
}


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One stream entry: who (`server_id`), when (`ts`), what (`data`, typed by `type`)."""

    type: EventType
    server_id: int
    event_id: str
    ts: float
    data: EventData

    def __post_init__(self) -> None:
        if self.data.TYPE is not self.type:
            raise ValueError(f"a {self.type.value} event cannot carry {type(self.data).__name__}")

    def fields(self) -> dict[str, str]:
        """The Redis Stream entry: `ts` as a number, `data` as a JSON object."""
        data = {f.name: getattr(self.data, f.name) for f in _FIELDS[type(self.data)]}
        return {
            "type": self.type.value,
            "server_id": str(self.server_id),
            "event_id": self.event_id,
            "ts": repr(self.ts),
            "data": json.dumps(data, separators=(",", ":")),
        }

    def to_json(self) -> str:
        """The stream entry as one JSON object (a spool line, a live-calls hash value)."""
        return json.dumps(self.fields(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Event:
        """Read back what `to_json` wrote; raises `MalformedEvent`."""
        try:
            fields = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise MalformedEvent(f"not JSON: {exc}") from exc
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise MalformedEvent("not a JSON object of strings")
        return cls.from_fields(fields)

    @classmethod
    def from_entry(cls, entry: Mapping[bytes, bytes]) -> Event:
        """Read a stream entry as redis-py returns it (bytes); raises `MalformedEvent`."""
        fields = {}
        for name in _ENVELOPE:
            raw = entry.get(name.encode())
            if raw is None:
                raise MalformedEvent(f"missing field {name!r}")
            try:
                fields[name] = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise MalformedEvent(f"field {name!r} is not UTF-8") from exc
        return cls.from_fields(fields)

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Event:
        """Check every field against the contract; raises `MalformedEvent` at the first fault."""
        missing = [name for name in _ENVELOPE if name not in fields]
        if missing:
            raise MalformedEvent(f"missing field {missing[0]!r}")
        try:
            event_type = EventType(fields["type"])
        except ValueError:
            raise MalformedEvent(f"unknown event type {fields['type'][:40]!r}") from None
        server_id = fields["server_id"]
        if not (
            server_id.isascii()
            and server_id.isdigit()
            and len(server_id) < 20  # int() of thousands of digits would raise
            and 0 < int(server_id) <= _INT64_MAX
        ):
            raise MalformedEvent(f"server_id {server_id[:40]!r} is not a positive integer")
        event_id = _uuid(fields["event_id"], "event_id")
        ts = _epoch_seconds(fields["ts"])
        data = _payload(_PAYLOADS[event_type], _json_object(fields["data"]))
        if isinstance(data, CdrData) and _uuid(data.uuid, "uuid") != event_id:
            raise MalformedEvent("a CDR's event_id must be its uuid")
        return cls(event_type, int(server_id), fields["event_id"], ts, data)


_ENVELOPE = tuple(f.name for f in dataclasses.fields(Event))


def make_event(data: EventData, server_id: int, ts: float, event_id: str | None = None) -> Event:
    """An event of `data`'s type; a CDR's event_id is its UUID, others get a new UUID4."""
    if event_id is None:
        event_id = data.uuid if isinstance(data, CdrData) else str(uuid.uuid4())
    return Event(data.TYPE, server_id, event_id, float(ts), data)


def _uuid(text: str, name: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise MalformedEvent(f"{name} {text[:40]!r} is not a UUID") from None


def _epoch_seconds(text: str) -> float:
    try:
        ts = float(text)
    except ValueError:
        ts = math.nan
    if not 0 <= ts <= _EPOCH_MAX:  # also false for NaN
        raise MalformedEvent(f"ts {text[:40]!r} is not a time in UTC epoch seconds")
    return ts


def _json_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise MalformedEvent(f"data is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedEvent("data is not a JSON object")
    return data


def _payload(cls: type[EventData], data: dict[str, Any]) -> EventData:
    """The payload from its JSON object; keys the contract does not name are ignored."""
    values: dict[str, Any] = {}
    for field in _FIELDS[cls]:
        try:
            value = data[field.name]
        except KeyError:
            raise MalformedEvent(f"data has no {field.name!r}") from None
        values[field.name] = _value(field, value)
    return cls(**values)


def _value(field: _Field, value: object) -> object:
    """One JSON value checked against its field (`type() is`: JSON has no subclasses)."""
    name, kind = field.name, field.kind
    if value is None:
        if field.optional:
            return None
        raise MalformedEvent(f"{name} must not be null")
    if kind is str:
        if type(value) is not str:
            raise MalformedEvent(f"{name} is not a string")
        _check_text(name, value)
        if field.one_of is not None and value not in field.one_of.values:
            raise MalformedEvent(
                f"{name} {value[:40]!r} is not one of {', '.join(sorted(field.one_of.values))}"
            )
        return value
    if kind is bool:
        if type(value) is not bool:
            raise MalformedEvent(f"{name} is not true or false")
        return value
    if type(value) is not int and type(value) is not float:
        raise MalformedEvent(f"{name} is not a number")
    if kind is int and type(value) is float:
        raise MalformedEvent(f"{name} {value!r:.40} is not an integer")
    if field.range is not None and not field.range.low <= value <= field.range.high:
        # (also true for NaN)
        raise MalformedEvent(f"{name} {value!r:.40} is not in {field.range.low}-{field.range.high}")
    return float(value) if kind is float else value


def _check_text(name: str, value: str) -> None:
    """Text any consumer can store: no NUL (PostgreSQL refuses it), no lone surrogates."""
    if "\x00" in value:
        raise MalformedEvent(f"{name} contains a NUL character")
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedEvent(f"{name} is not valid Unicode") from None
