"""Events the worker reports upwards (CDRs, registrations, call states, status).

Plain values: the cores create them, `eventsink` writes them to the Redis
Stream `sipcloud:events` (or the spool file while Redis is away).
Stream fields: type, server_id, event_id (UUID4; the CDR's uuid for CDRs),
ts (unix float) and data (a JSON object).
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

STREAM_KEY = "sipcloud:events"
STREAM_MAXLEN = 1_000_000


def live_channel(server_id: int) -> str:
    return f"sipcloud:vs:{server_id}:live"


def live_calls_key(server_id: int) -> str:
    """Hash of the calls in progress (field: O-side Call-ID, value: the last call event)."""
    return f"sipcloud:vs:{server_id}:calls"


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    type: str  # "cdr" | "registration" | "call" | "status"
    server_id: int
    event_id: str
    ts: float
    data: dict[str, Any]

    def fields(self) -> dict[str, str]:
        """The Redis Stream entry."""
        return {
            "type": self.type,
            "server_id": str(self.server_id),
            "event_id": self.event_id,
            "ts": repr(self.ts),
            "data": json.dumps(self.data, separators=(",", ":")),
        }

    def to_json(self) -> str:
        return json.dumps(self.fields(), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Event:
        f = json.loads(text)
        return cls(
            type=f["type"],
            server_id=int(f["server_id"]),
            event_id=f["event_id"],
            ts=float(f["ts"]),
            data=json.loads(f["data"]),
        )


def make_event(
    type_: str, server_id: int, now: float, data: dict[str, Any], event_id: str | None = None
) -> Event:
    return Event(type_, server_id, event_id or str(uuid.uuid4()), now, data)
