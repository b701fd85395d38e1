"""Password guessing: failed digest answers counted per source address and per user.

A source that fails `THRESHOLD` times within `WINDOW` is blocked: its requests
are dropped, unanswered (as Kamailio's pike/htable recipes do), so a cracker
learns nothing and waits for timeouts. Each new block of the same source lasts
twice as long, from `FIRST_BLOCK` up to `MAX_BLOCK`. A user failed for from
many sources (`USER_THRESHOLD` within the window: guessing spread over
addresses) makes every further failing source blocked at its first failure.

A source that answered a challenge correctly is trusted for `TRUST` seconds and
never blocked: a phone behind the same NAT as an attacker keeps working, and a
legitimate phone elsewhere never notices. Each server's worker keeps its own
guard, so one tenant's attacker costs other tenants' servers nothing.
"""

from __future__ import annotations

import dataclasses
import json
from collections import deque

from .digest import AuthResult, Outcome
from .timers import ToWall

THRESHOLD = 5
USER_THRESHOLD = 10
WINDOW = 60.0
FIRST_BLOCK = 60.0
MAX_BLOCK = 3600.0
TRUST = 3600.0
MAX_SOURCES = 10_000  # memory stays bounded under a spoofed-address flood


@dataclasses.dataclass(eq=False)
class Source:
    failures: deque[float] = dataclasses.field(default_factory=deque)
    blocks: int = 0
    until: float = 0.0  # blocked until this instant (monotonic)
    user: str = ""  # the user it last failed for
    checked: int = 0  # wrong answers checked in all (none while blocked: dropped unread)


class Guard:
    def __init__(self, to_wall: ToWall) -> None:
        self.to_wall = to_wall
        self.sources: dict[str, Source] = {}
        self.users: dict[str, deque[float]] = {}
        self.trusted: dict[str, float] = {}
        self.changed = False  # the block list changed since the shell last wrote it

    def blocked(self, host: str, now: float) -> bool:
        source = self.sources.get(host)
        return source is not None and source.until > now

    def observe(self, host: str, result: AuthResult, now: float) -> None:
        """The outcome of one answered challenge from `host`."""
        if result.outcome in (Outcome.OK, Outcome.STALE):
            self.trusted[host] = now + TRUST
            if self.sources.pop(host, None) is not None:
                self.changed = True
            return
        if result.outcome is not Outcome.FORBIDDEN or self.trusted.get(host, 0.0) > now:
            return
        source = self.sources.get(host)
        if source is None:
            if len(self.sources) >= MAX_SOURCES:
                self.sweep(now)
            source = self.sources[host] = Source()
        source.user = result.username
        source.checked += 1
        tried = self.users.setdefault(result.username, deque())
        for window in (source.failures, tried):
            _slide(window, now)
            window.append(now)
        if len(source.failures) >= THRESHOLD or len(tried) >= USER_THRESHOLD:
            self._block(source, now)

    def _block(self, source: Source, now: float) -> None:
        source.blocks += 1
        source.until = now + min(MAX_BLOCK, FIRST_BLOCK * 2 ** (source.blocks - 1))
        source.failures.clear()
        self.changed = True

    def sweep(self, now: float) -> None:
        """Forget what no longer matters: blocks long over, old failures, old trust."""
        for host, source in list(self.sources.items()):
            _slide(source.failures, now)
            if source.until + MAX_BLOCK < now and not source.failures:
                del self.sources[host]
        for user, tried in list(self.users.items()):
            _slide(tried, now)
            if not tried:
                del self.users[user]
        for host, until in list(self.trusted.items()):
            if until < now:
                del self.trusted[host]

    def block_list(self, now: float) -> bytes:
        """What the server's pages show: each blocked source, until when, and for whom."""
        entries = [
            {
                "source": host,
                "until": round(self.to_wall(s.until), 3),
                "blocks": s.blocks,
                "user": s.user,
                "checked": s.checked,
            }
            for host, s in sorted(self.sources.items())
            if s.until > now
        ]
        return json.dumps(entries).encode()


def _slide(window: deque[float], now: float) -> None:
    while window and window[0] <= now - WINDOW:
        window.popleft()
