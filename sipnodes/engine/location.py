"""The location table: which devices (contacts) each local user has registered.

In memory for lookups; every change is also described as a `LocationOp` for the
shell to write through to Redis, so a restarted worker reloads its bindings.

Redis layout: one hash `sipcloud:vs:<server_uid>:loc`, keyed by the server's uid, never
reused (unlike its database id), so a new server can never inherit another's bindings;
field `<user> <contact>`, value the JSON of `Binding.to_record()`. In memory, times are
on the engine's monotonic clock; in Redis they are UTC epoch seconds (`expires_at`), since the
monotonic clock of one process means nothing to the next.
Hash fields cannot expire on their own, so the worker deletes a field when the
binding ends, skips expired records when it restores, and the key gets a TTL of
the longest binding as a backstop for a server that never comes back.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from .sipmsg import Peer
from .timers import ToWall


def location_key(server_uid: str) -> str:
    return f"sipcloud:vs:{server_uid}:loc"


@dataclasses.dataclass(frozen=True, slots=True)
class Binding:
    user: str
    contact: str  # the Contact URI as registered
    peer: Peer  # where the REGISTER came from: requests go here (NAT fix-up)
    expires_at: float  # monotonic
    call_id: str
    cseq: int
    registered_at: float  # monotonic
    wall_offset: float = 0.0  # UTC epoch seconds minus monotonic, when registered

    @property
    def field(self) -> str:
        return f"{self.user} {self.contact}"

    def to_record(self) -> str:
        return json.dumps(
            {
                "user": self.user,
                "contact": self.contact,
                "transport": self.peer.transport,
                "host": self.peer.host,
                "port": self.peer.port,
                "expires_at": self.expires_at + self.wall_offset,
                "call_id": self.call_id,
                "cseq": self.cseq,
                "registered_at": self.registered_at + self.wall_offset,
            }
        )

    @classmethod
    def from_record(cls, text: str | bytes, wall_offset: float) -> Binding:
        """The binding of a record, on the monotonic clock whose offset is given."""
        d: dict[str, Any] = json.loads(text)
        return cls(
            user=str(d["user"]),
            contact=str(d["contact"]),
            peer=Peer(str(d["transport"]), str(d["host"]), int(d["port"])),
            expires_at=float(d["expires_at"]) - wall_offset,
            call_id=str(d["call_id"]),
            cseq=int(d["cseq"]),
            registered_at=float(d.get("registered_at", 0.0)) - wall_offset,
            wall_offset=wall_offset,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class LocationOp:
    """A write-through to Redis: set (with the binding) or delete a field."""

    op: str  # "set" | "del"
    field: str
    binding: Binding | None = None


class LocationTable:
    def __init__(self, to_wall: ToWall) -> None:
        self.to_wall = to_wall
        self._by_user: dict[str, dict[str, Binding]] = {}
        self.ops: list[LocationOp] = []

    def registered_clients(self) -> int:
        """Distinct users with at least one binding (several devices count once)."""
        return len(self._by_user)

    def has_user(self, user: str) -> bool:
        return user in self._by_user

    def bindings(self, user: str) -> list[Binding]:
        """Live bindings, most recently registered first."""
        found = self._by_user.get(user)
        if not found:
            return []
        return sorted(found.values(), key=lambda b: b.registered_at, reverse=True)

    def get(self, user: str, contact: str) -> Binding | None:
        return self._by_user.get(user, {}).get(contact)

    def put(self, binding: Binding) -> None:
        self._by_user.setdefault(binding.user, {})[binding.contact] = binding
        self.ops.append(LocationOp("set", binding.field, binding))

    def remove(self, user: str, contact: str) -> Binding | None:
        found = self._by_user.get(user)
        if not found or contact not in found:
            return None
        binding = found.pop(contact)
        if not found:
            del self._by_user[user]
        self.ops.append(LocationOp("del", binding.field))
        return binding

    def remove_user(self, user: str) -> list[Binding]:
        return [
            b for b in list(self._by_user.get(user, {}).values()) if self.remove(user, b.contact)
        ]

    def expire(self, now: float) -> list[Binding]:
        """Remove bindings whose time has passed; returns them."""
        gone = [
            b for found in self._by_user.values() for b in found.values() if b.expires_at <= now
        ]
        for b in gone:
            self.remove(b.user, b.contact)
        return gone

    def wall_offset(self, now: float) -> float:
        return self.to_wall(now) - now

    def restore(self, records: dict[Any, Any], now: float) -> list[Binding]:
        """Load records read from Redis, skipping expired and unreadable ones (not re-written)."""
        restored = []
        offset = self.wall_offset(now)
        for field, value in records.items():
            try:
                binding = Binding.from_record(value, offset)
            except (ValueError, KeyError, TypeError):
                self.ops.append(LocationOp("del", _text(field)))
                continue
            if binding.expires_at <= now:
                self.ops.append(LocationOp("del", _text(field)))
                continue
            self._by_user.setdefault(binding.user, {})[binding.contact] = binding
            restored.append(binding)
        return restored

    def all(self) -> list[Binding]:
        return [b for found in self._by_user.values() for b in found.values()]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
