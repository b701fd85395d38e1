"""A heap of deadlines driven by a clock the caller passes in.

The cores schedule work here instead of calling the event loop, so tests move
a fake clock (`run_due(now)`) and never sleep; the shell re-arms one
`loop.call_at` on `next_deadline()`.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

# Turns an instant of the monotonic clock the cores run on into UTC epoch
# seconds, for timestamps in events, CDRs and Redis records; the shell owns both
# clocks, so a wall-clock step never moves a timer.
ToWall = Callable[[float], float]


def _noop(*_: Any) -> None:
    return None


class Timer:
    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        # The heap keeps the entry until its deadline: drop what it refers to
        # (transactions, calls) so they are freed now, not up to 32 s later.
        self.fn = _noop
        self.args = ()


# Every this many timers, the heap is rebuilt without its cancelled entries if they are
# the most of it: a call's no-answer and duration timers are cancelled long before their
# deadline, and would otherwise stay for hours at a few hundred bytes each.
COMPACT_EVERY = 256


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Run `fn(now, *args)` once the clock passes `when`."""
        timer = Timer(when, fn, args)
        seq = next(self._seq)
        heapq.heappush(self._heap, (when, seq, timer))
        if seq % COMPACT_EVERY == 0:
            self._compact()
        return timer

    def _compact(self) -> None:
        live = [entry for entry in self._heap if not entry[2].cancelled]
        if 2 * len(live) < len(self._heap):
            heapq.heapify(live)
            self._heap = live

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Fire every timer due at `now`; returns how many fired."""
        fired = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                continue
            fn, args = timer.fn, timer.args
            timer.cancel()
            fired += 1
            fn(now, *args)
        return fired

    def __len__(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)
