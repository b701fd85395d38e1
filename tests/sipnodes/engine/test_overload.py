"""Overload control: the share of new requests admitted, from the UDP backlog (sans-IO)."""

from __future__ import annotations

import pytest

from sipnodes.engine.overload import ADMIT_MIN, ADMIT_STEP, BACKLOG_HIGH, BACKLOG_LOW, Admission

OVER = BACKLOG_HIGH + 100_000


def test_a_growing_backlog_halves_the_share_down_to_the_floor() -> None:
    admission = Admission()
    shares = [admission.adjust(OVER + i * 10_000) for i in range(10)]
    assert shares[:3] == [0.5, 0.25, 0.125]
    assert shares[-1] == ADMIT_MIN


def test_a_backlog_still_high_but_falling_keeps_the_share() -> None:
    """The last cut shows only once the queue ahead of it has drained: no second cut."""
    admission = Admission()
    admission.adjust(OVER + 200_000)
    assert admission.adjust(OVER + 100_000) == 0.5
    assert admission.adjust(OVER) == 0.5
    assert admission.adjust(OVER + 50_000) == 0.25  # growing again: cut again


def test_a_drained_backlog_grows_the_share_back_step_by_step() -> None:
    admission = Admission()
    for backlog in (OVER, OVER + 1, OVER + 2):
        admission.adjust(backlog)
    assert admission.share == 0.125
    assert admission.adjust(BACKLOG_LOW - 1) == pytest.approx(0.125 + ADMIT_STEP)
    shares = [admission.adjust(0) for _ in range(30)]
    assert shares[-1] == 1.0
    assert all(b >= a for a, b in zip(shares, shares[1:], strict=False))


def test_between_the_marks_the_share_holds() -> None:
    admission = Admission()
    admission.adjust(OVER)
    middle = (BACKLOG_LOW + BACKLOG_HIGH) // 2
    assert [admission.adjust(middle + i) for i in range(3)] == [0.5, 0.5, 0.5]


def test_no_backlog_admits_everything() -> None:
    assert Admission().adjust(0) == 1.0
