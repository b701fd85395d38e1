"""What a host behind a router maps there (sans-IO): decisions per server and bookkeeping.

The UPnP agent (`agent.py`) feeds this module what the database and the router say and
does what it returns; nothing here touches a socket or the clock. Every mapping is UDP,
external port = internal port. The state names are `sipnodes.models.UpnpState`'s values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

MAPPED = "mapped"
MANUAL = "manual"  # an edition of MANUAL_FROM_EDITION clients or more: never mapped
NO_ROOM = "no_room"  # the router's mappings are all taken by servers before this one
REFUSED = "refused"
NO_ROUTER = "no_router"
PENDING = "pending"

MANUAL_FROM_EDITION = 100
PORTS_PER_CALL = 4  # a relayed audio call: an RTP+RTCP pair facing each leg (engine/media.py)


@dataclass(frozen=True)
class ServerNeeds:
    """A server with UPnP on, running, on a host behind a router."""

    server_id: int
    edition: int
    sip_port: int
    media_first: int
    media_last: int
    relay: bool  # the media relay is on: its ports must be reachable too

    @property
    def media_ports(self) -> int:
        return self.media_last - self.media_first + 1 if self.relay and self.media_first else 0


@dataclass(frozen=True)
class Decision:
    server_id: int
    state: str  # MAPPED, MANUAL or NO_ROOM
    ports: tuple[int, ...] = ()  # what to map: the SIP port, then media ports from the first
    media_ports: int = 0  # how many of the media block are among `ports`

    @property
    def calls(self) -> int:
        """Concurrent relayed audio calls the mapped media ports carry."""
        return self.media_ports // PORTS_PER_CALL


def plan(servers: Iterable[ServerNeeds], limit: int) -> list[Decision]:
    """Share `limit` mappings out among the servers, oldest (lowest id) first, so that a
    new server never takes a running one's mappings. A server gets its SIP port and as
    many whole calls' worth of media ports as fit, at least one call when its relay is on,
    or nothing: a partial mapping with no room for a single call would fail silently."""
    left = limit
    decisions = []
    for s in sorted(servers, key=lambda s: s.server_id):
        if s.edition >= MANUAL_FROM_EDITION:
            decisions.append(Decision(s.server_id, MANUAL))
            continue
        calls = min(s.media_ports, max(0, left - 1)) // PORTS_PER_CALL
        if left < 1 or (s.media_ports and not calls):
            decisions.append(Decision(s.server_id, NO_ROOM))
            continue
        media = calls * PORTS_PER_CALL
        ports = (s.sip_port, *range(s.media_first, s.media_first + media))
        decisions.append(Decision(s.server_id, MAPPED, ports, media))
        left -= len(ports)
    return decisions


@dataclass
class Mappings:
    """The mappings this host holds on the router, and when they were last renewed.

    A renewal adds every wanted mapping again: the router extends its lease, and puts
    back one it lost (a reboot). Between renewals only new mappings are added.
    """

    lease: float  # seconds asked for each mapping
    owned: dict[int, int] = field(default_factory=dict)  # external port -> server id
    renew_at: float = 0.0

    def to_remove(self, decisions: Sequence[Decision]) -> list[int]:
        """Ports held that no decision wants any more (server stopped, deleted, shrunk)."""
        wanted = {(p, d.server_id) for d in decisions for p in d.ports}
        return sorted(p for p, sid in self.owned.items() if (p, sid) not in wanted)

    def to_add(self, decisions: Sequence[Decision], now: float) -> list[Decision]:
        """The decisions whose ports must be (re)added now, each as one unit."""
        renewing = now >= self.renew_at
        return [
            d
            for d in decisions
            if d.ports and (renewing or any(self.owned.get(p) != d.server_id for p in d.ports))
        ]

    def renewed(self, now: float) -> None:
        """Every wanted mapping was just added again: the next renewal at half the lease."""
        self.renew_at = now + self.lease / 2

    def added(self, server_id: int, ports: Iterable[int]) -> None:
        for port in ports:
            self.owned[port] = server_id

    def removed(self, ports: Iterable[int]) -> None:
        for port in ports:
            self.owned.pop(port, None)

    def forget_all(self) -> None:
        """The router is gone or was replaced: what it held is unknown; add all at once."""
        self.owned.clear()
        self.renew_at = 0.0


def description(host_name: str, server_id: int) -> str:
    """Names a mapping on the router, so the agent can find its own after a restart."""
    return f"sipcloud {host_name} vs-{server_id}"


def server_of(host_name: str, text: str) -> int | None:
    """The server id a mapping's description names, if this host made it."""
    prefix = f"sipcloud {host_name} vs-"
    tail = text[len(prefix) :] if text.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else None
