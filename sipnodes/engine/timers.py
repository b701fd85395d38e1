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
    __slots__ = ("when", "fn", "args", "cancelled", "scheduler")

    def __init__(
        self, when: float, fn: Callable[..., Any], args: tuple[Any, ...], scheduler: Scheduler
    ) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False
        self.scheduler: Scheduler | None = scheduler  # None once fired or cancelled

    def cancel(self) -> None:
        scheduler = self.scheduler
        self.done()
        if scheduler is not None:
            scheduler.cancelled_one()

    def done(self) -> None:
        """Fired or cancelled. The heap may keep the entry until its deadline: drop what it
        refers to (transactions, calls) so that they are freed now."""
        self.cancelled = True
        self.fn = _noop
        self.args = ()
        self.scheduler = None


# The heap is rebuilt without its cancelled entries once they are the most of it (and at
# least this many): a call's no-answer and duration timers are cancelled long before their
# deadline, and would otherwise stay for hours at a few hundred bytes each.
COMPACT_FROM = 256


class Scheduler:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._cancelled = 0  # entries of the heap whose timer was cancelled

    def call_at(self, when: float, fn: Callable[..., Any], *args: Any) -> Timer:
        """Run `fn(now, *args)` once the clock passes `when`."""
        timer = Timer(when, fn, args, self)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    def cancelled_one(self) -> None:
        """A timer still in the heap was cancelled (`Timer.cancel`)."""
        self._cancelled += 1
        if self._cancelled >= COMPACT_FROM and 2 * self._cancelled > len(self._heap):
            heap = self._heap  # in place: `run_due` may be walking it (a timer that cancels)
            heap[:] = [entry for entry in heap if not entry[2].cancelled]
            heapq.heapify(heap)
            self._cancelled = 0

    def next_deadline(self) -> float | None:
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> int:
        """Fire every timer due at `now`; returns how many fired."""
        fired = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if timer.cancelled:
                self._cancelled -= 1
                continue
            fn, args = timer.fn, timer.args
            timer.done()
            fired += 1
            fn(now, *args)
        return fired

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled
