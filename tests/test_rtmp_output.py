"""rtmp/output.py: the write batch and the time behind live, driven with ``now`` passed in."""

from __future__ import annotations

import pytest

from rtmp.output import MARK_INTERVAL, LagMeter, WriteBatch


def test_lag_is_the_age_of_the_oldest_unread_write() -> None:
    meter = LagMeter()
    assert meter.lag(0, 5.0) == 0.0  # nothing written
    meter.wrote(100, 1.0)
    meter.wrote(50, 2.0)
    assert meter.lag(150, 3.0) == pytest.approx(2.0)  # all unread: the first write's age
    assert meter.lag(50, 3.0) == pytest.approx(1.0)  # the first write arrived
    assert meter.lag(0, 3.0) == 0.0  # everything arrived
    meter.wrote(10, 4.0)
    assert meter.lag(10, 4.5) == pytest.approx(0.5)


def test_writes_close_together_share_the_older_mark() -> None:
    """One mark per MARK_INTERVAL: a later write in the same interval extends the mark's
    bytes but keeps its time, so the lag is never understated."""
    meter = LagMeter()
    meter.wrote(100, 1.0)
    meter.wrote(100, 1.0 + MARK_INTERVAL / 2)
    assert meter.lag(50, 2.0) == pytest.approx(1.0)  # 50 of the second write unread
    meter.wrote(100, 1.0 + MARK_INTERVAL * 2)
    assert meter.lag(100, 2.0) == pytest.approx(1.0 - MARK_INTERVAL * 2)


class Output:
    def __init__(self) -> None:
        self.flushes: list[float | None] = []

    def flush(self, now: float | None = None) -> None:
        self.flushes.append(now)


def test_a_batch_flushes_each_deferred_output_once_at_the_outermost_end() -> None:
    batch = WriteBatch()
    a, b = Output(), Output()
    batch.begin()
    batch.dirty.add(a)
    batch.begin()  # a player's flush inside another read
    batch.dirty.add(b)
    batch.end(7.0)
    assert a.flushes == [] and b.flushes == []
    batch.dirty.add(a)
    batch.end(8.0)
    assert a.flushes == [8.0] and b.flushes == [8.0]
    assert batch.depth == 0 and not batch.dirty
