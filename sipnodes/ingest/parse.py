"""Pure parsing: a stream entry in, a typed `Event` out; a CDR as its database columns.

The event contract is checked by `Event.from_entry`, with the payload
dataclasses of `sipnodes.engine.events`: there is no second list of field
names here. What this module adds is what the database needs.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from typing import Any

from django.db import models

from sipnodes.engine.events import CdrData, Event, MalformedEvent
from sipnodes.models import Cdr

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
_TEXT_LIMITS = {
    f.name: f.max_length for f in Cdr._meta.get_fields() if isinstance(f, models.CharField)
}


def parse_entry(fields: Fields) -> Event:
    """Read one stream entry; raises `MalformedEvent` naming the first thing wrong with it."""
    if not fields:
        raise MalformedEvent("the entry is empty (deleted from the stream before it was ingested)")
    return Event.from_entry(fields)


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
