"""api/live_view.py: the live view's numbers, read from a Prometheus registry like /metrics."""

from __future__ import annotations

import pytest
from hearth.api.live_view import (
    CHART_STEP_S,
    HISTORY_S,
    LiveSampler,
    live_view,
    quantile,
    read_series,
)
from hearth.api.metrics import Metrics
from hearth.scheduler.messages import EngineTimes, ModelState, SchedulerStatus


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class World:
    """A Metrics over a scheduler status and in-flight counts the test sets."""

    def __init__(self) -> None:
        self.tokens = 0
        self.busy = 0
        self.in_flight: dict[str, int] = {}
        self.metrics = Metrics(self.status, lambda: ["alice", "key1"], lambda: self.in_flight)

    def status(self) -> SchedulerStatus:
        return SchedulerStatus(
            default_model="small",
            models=[ModelState("small", "ready", slots=4, busy=self.busy, size_bytes=1000,
                               starts=3, crashes=2, engine=EngineTimes(tokens=self.tokens)),
                    ModelState("other", "stopped", size_bytes=5, starts=1)],
            queued=2, queued_by_key={"alice": 2})


def test_quantile_interpolates_inside_the_bucket_like_histogram_quantile() -> None:
    inf = float("inf")
    assert quantile(0.5, {0.1: 0, 0.5: 10, 1.0: 10, inf: 10}) == pytest.approx(0.3)
    assert quantile(0.5, {0.1: 4, 0.5: 4, inf: 10}) == 0.5  # in +Inf: the highest bound
    assert quantile(0.5, {0.1: 0, inf: 0}) is None
    assert quantile(0.5, {}) is None


def test_rates_and_chart_from_one_sample_a_second() -> None:
    world, clock = World(), Clock()
    sampler = LiveSampler(world.metrics.live, clock)
    assert sampler.tokens_per_s() == 0.0 and sampler.chart() == []
    for _ in range(30):  # 30 s at 50 tokens/s
        sampler.sample()
        clock.now += 1
        world.tokens += 50
    sampler.sample()
    assert sampler.tokens_per_s() == 50.0
    points = sampler.chart()
    assert len(points) == 30 // CHART_STEP_S
    assert points[-1] == (0.0, 50.0) and points[0][0] == 30 - CHART_STEP_S
    # a counter that restarts from zero is not a negative rate
    world.tokens = 0
    clock.now += 1
    sampler.sample()
    assert sampler.tokens_per_s() == 0.0


def test_history_is_bounded() -> None:
    world, clock = World(), Clock()
    sampler = LiveSampler(world.metrics.live, clock)
    for _ in range(HISTORY_S + 50):
        sampler.sample()
        clock.now += 1
    assert len(sampler.samples) == HISTORY_S + 1


def test_ttft_median_over_the_history_window() -> None:
    world, clock = World(), Clock()
    sampler = LiveSampler(world.metrics.live, clock)
    for _ in range(3):
        world.metrics.ttft.labels("small").observe(30.0)  # before the window: not counted
    sampler.sample()
    assert sampler.ttft_p50() is None
    for seconds in (0.02, 0.03, 0.04):
        world.metrics.ttft.labels("small").observe(seconds)
    clock.now += 1
    sampler.sample()
    p50 = sampler.ttft_p50()
    assert p50 is not None and 0.025 <= p50 <= 0.05


def test_the_view_reads_the_metrics_series_and_names_keys_only() -> None:
    world, clock = World(), Clock()
    world.busy, world.in_flight = 3, {"alice": 5}
    sampler = LiveSampler(world.metrics.live, clock)
    series = sampler.sample()
    assert "hearth_requests_in_flight" in series
    view = live_view(sampler, series, [("small", 1000), ("unloaded", 77)], "small")
    assert view["models"] == [
        {"id": "other", "loaded": False, "size_bytes": 5, "slots_busy": 0, "slots_total": 0,
         "worker_restarts": 0, "worker_crashes": 0},
        {"id": "small", "loaded": True, "size_bytes": 1000, "slots_busy": 3, "slots_total": 4,
         "worker_restarts": 2, "worker_crashes": 2},
        {"id": "unloaded", "loaded": False, "size_bytes": 77, "slots_busy": 0,
         "slots_total": 0, "worker_restarts": 0, "worker_crashes": 0}]
    assert view["queue_depth"] == 2
    assert view["queue_by_key"] == {"alice": 2, "key1": 0}
    assert view["in_flight_by_key"] == {"alice": 5, "key1": 0}
    assert view["worker_restarts"] == 2
    assert view["scheduler_up"] is True


def test_without_a_scheduler_the_view_says_so() -> None:
    metrics = Metrics(lambda: None)
    sampler = LiveSampler(metrics.live, Clock())
    series = read_series(metrics.live)
    view = live_view(sampler, series, [("small", 10)], "small")
    assert view["scheduler_up"] is False
    assert view["models"][0]["loaded"] is False


def test_the_live_registry_is_the_metrics_series_it_needs_and_no_others() -> None:
    world = World()
    world.metrics.count_request("web", "-", 200, "-")
    world.metrics.ttft.labels("small").observe(0.1)
    full, live = read_series(world.metrics.registry), read_series(world.metrics.live)
    assert "hearth_requests_total" in full and "hearth_requests_total" not in live
    for name, samples in live.items():
        assert full[name] == samples, name
    for name in ("hearth_engine_tokens_total", "hearth_slots_busy", "hearth_requests_in_flight",
                 "hearth_time_to_first_token_seconds_bucket", "hearth_worker_restarts_total"):
        assert name in live, name
