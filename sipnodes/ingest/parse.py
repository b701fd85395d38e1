"""Pure parsing: a stream entry in, a typed `Event` out; a CDR as its database columns.

The event contract is checked by `Event.from_entry`, with the payload
dataclasses of `sipnodes.engine.events`: there is no second list of field
names here. What this module adds is what the database needs.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping
from typing import Any

from django.db import models

from sipnodes.engine.events import CallSettingsData, CdrData, Event, MalformedEvent
from sipnodes.models import Cdr, LocalUser

Fields = Mapping[bytes, bytes]
Entry = tuple[bytes, Fields]

# A CDR's times are stored as datetimes under these columns; every other field of
# `CdrData` under its own name (a test checks that the model has them all).
CDR_TIME_COLUMNS = {
    "start": "started_at",
    "ring": "ring_at",
    "answer": "answered_at",
    "release": "released_at",
}
_CDR_FIELDS = tuple(f.name for f in dataclasses.fields(CdrData))
CDR_COLUMNS = tuple(CDR_TIME_COLUMNS.get(name, name) for name in _CDR_FIELDS)  # of `cdr_columns`
_TEXT_LIMITS = {
    f.name: f.max_length for f in Cdr._meta.get_fields() if isinstance(f, models.CharField)
}


# The numbers of a call settings event, stored as they are: unlike a CDR's text, a number
# cut to fit would be another number.
_CALL_SETTINGS_NUMBERS = (
    "user",
    "forward_unconditional",
    "forward_busy",
    "forward_no_answer",
    "forward_unreachable",
)
_NUMBER_LENGTH = LocalUser._meta.get_field("number").max_length
_DIGITS = re.compile(r"[0-9]*")


def parse_entry(fields: Fields) -> Event:
    """Read one stream entry; raises `MalformedEvent` naming the first thing wrong with it."""
    if not fields:
        raise MalformedEvent("the entry is empty (deleted from the stream before it was ingested)")
    event = Event.from_entry(fields)
    if isinstance(event.data, CallSettingsData):
        _check_call_settings(event.data)
    return event


def _check_call_settings(data: CallSettingsData) -> None:
    """Numbers the portal can store and show: digits, as a local user's (a forwarding
    target is empty when not set)."""
    if not data.user:
        raise MalformedEvent("user is empty")
    for name in _CALL_SETTINGS_NUMBERS:
        value = getattr(data, name)
        if len(value) > _NUMBER_LENGTH or not _DIGITS.fullmatch(value):
            raise MalformedEvent(f"{name} {value[:40]!r} is not a number of at most 32 digits")


def utc(ts: float) -> datetime.datetime:
    """A contract time (UTC epoch seconds) as an aware datetime."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC)


def cdr_columns(data: CdrData) -> dict[str, Any]:
    """The `sipnodes.models.Cdr` column values of one CDR, its server aside.

    Over-long text is cut to fit rather than lost; talk time is kept in whole
    seconds, rounded half up (the engine reports milliseconds).
    """
    columns: dict[str, Any] = {}
    for name in _CDR_FIELDS:
        value = getattr(data, name)
        if name in CDR_TIME_COLUMNS:
            columns[CDR_TIME_COLUMNS[name]] = None if value is None else utc(value)
        elif name == "talk_seconds":
            columns[name] = int(value + 0.5)
        elif name in _TEXT_LIMITS:
            columns[name] = value[: _TEXT_LIMITS[name]]
        else:
            columns[name] = value
    return columns
