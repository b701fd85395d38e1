"""Overload control: the share of new requests a worker admits, from its UDP backlog.

AIMD on the bytes queued on the SIP socket, re-assessed by the shell every
`ADJUST_EVERY` seconds. Above `BACKLOG_HIGH` (~300 datagrams, ~0.1 s of work)
the share is halved, but only while the backlog still grows: a cut shows in
the backlog only after the queue ahead of it has drained, and cutting again
meanwhile drove the share far below what the worker could serve (measured with
`bench/engine_sip_bench.py`, REGISTER goodput as a share of the peak: at 2x the
peak's rate from 36-44 % to 60-74 %, at 3x from 19 % to 29-52 %, over two and
five runs). Below `BACKLOG_LOW` the share grows back by a step. The core
decides what is new: handshakes under way are always served. Admitting a steady
share rather than all-or-nothing keeps goodput near the peak past it, where
on/off shedding either starved or flooded the worker.
"""

from __future__ import annotations

BACKLOG_HIGH = 600_000
BACKLOG_LOW = 200_000
ADJUST_EVERY = 0.05
ADMIT_MIN = 0.02
ADMIT_STEP = 0.05


class Admission:
    """Sans-IO: feed the backlog every `ADJUST_EVERY` seconds, get the share to admit."""

    def __init__(self) -> None:
        self.share = 1.0
        self._backlog = 0  # bytes queued at the last adjustment

    def adjust(self, backlog: int) -> float:
        """The share of new requests to admit (ADMIT_MIN..1) with `backlog` bytes queued."""
        growing = backlog >= self._backlog
        self._backlog = backlog
        if backlog > BACKLOG_HIGH and growing:
            self.share = max(ADMIT_MIN, self.share / 2)
        elif backlog < BACKLOG_LOW:
            self.share = min(1.0, self.share + ADMIT_STEP)
        return self.share
