"""scheduler/token_rate.py: tokens/s from cumulative counts, with the time passed in."""

from __future__ import annotations

import pytest
from hearth.scheduler.token_rate import TokenRate


def test_rate_is_the_rise_over_the_window() -> None:
    rate = TokenRate(window=5.0, min_gap=1.0)
    rate.sample(0, now=1.0)
    rate.sample(50, now=1.5)  # too soon after the last sample: ignored
    assert rate.samples == [(1.0, 0)]
    rate.sample(100, now=3.0)
    assert rate.per_s == pytest.approx(50.0)
    for t in range(4, 12):
        rate.sample(100 + 10 * (t - 3), now=float(t))
    assert rate.per_s == pytest.approx(10.0)  # the early burst has left the window
    assert rate.now_per_s(11.5) == pytest.approx(10.0)


def test_a_count_that_went_down_starts_afresh() -> None:
    rate = TokenRate()
    rate.sample(500, now=1.0)
    rate.sample(900, now=2.0)
    rate.sample(10, now=3.0)  # restarted
    assert rate.samples == [(3.0, 10)] and rate.per_s == 0.0


def test_silence_reads_as_idle() -> None:
    rate = TokenRate(window=5.0)
    assert rate.now_per_s(0.0) == 0.0
    rate.sample(0, now=0.0)
    rate.sample(40, now=2.0)
    assert rate.now_per_s(3.0) == pytest.approx(20.0)
    assert rate.now_per_s(7.0) == 0.0  # no report for a whole window: it went idle
