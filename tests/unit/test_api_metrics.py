"""api.metrics: counters, token timing and the scheduler-fed series, without a server."""

from __future__ import annotations

import time

import pytest
from hearth.api.metrics import Metrics, TokenTimer
from hearth.scheduler.messages import ModelState, Placement, RamCacheStats, SchedulerStatus
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(metrics: Metrics) -> Samples:
    body, _ = metrics.exposition(None)
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(body.decode()) for s in f.samples}


def get(m: Samples, name: str, **labels: str) -> float | None:
    return m.get((name, frozenset(labels.items())))


STATUS = SchedulerStatus("a", [
    ModelState("a", "ready", slots=4, busy=3, size_bytes=1000, starts=3, crashes=2,
               placement=Placement("gpu", 20, 24)),
    ModelState("b", "loading", slots=0, busy=0, size_bytes=50, starts=1),
    ModelState("c", "failed", size_bytes=7, starts=2, crashes=2, message="bad file"),
], queued=5, queued_by_key={"key2": 5})


def test_scheduler_series() -> None:
    m = samples(Metrics(lambda: STATUS, lambda: ["key1", "key2"]))
    assert get(m, "hearth_scheduler_up") == 1
    assert get(m, "hearth_queue_depth", key="key1") == 0
    assert get(m, "hearth_queue_depth", key="key2") == 5
    assert get(m, "hearth_slots_busy", model="a") == 3
    assert get(m, "hearth_slots_total", model="a") == 4
    assert get(m, "hearth_model_loaded", model="a") == 1
    assert get(m, "hearth_model_size_bytes", model="a") == 1000
    assert get(m, "hearth_worker_starts_total", model="a") == 3
    assert get(m, "hearth_worker_crashes_total", model="a") == 2
    assert get(m, "hearth_worker_restarts_total", model="a") == 2
    assert get(m, "hearth_model_gpu_layers", model="a") == 20  # where it runs
    assert get(m, "hearth_model_layers", model="a") == 24
    assert get(m, "hearth_model_gpu_layers", model="b") is None  # not loaded: not reported
    for model in ("b", "c"):  # not serving: no slots, not loaded; the file size is known
        assert get(m, "hearth_model_loaded", model=model) == 0
        assert get(m, "hearth_slots_total", model=model) == 0
    assert get(m, "hearth_model_size_bytes", model="c") == 7
    assert get(m, "hearth_worker_restarts_total", model="b") == 0
    assert get(m, "hearth_worker_restarts_total", model="c") == 1


def test_no_fresh_status_is_scheduler_down_and_nothing_else() -> None:
    m = samples(Metrics(lambda: None, lambda: ["key1"]))
    assert get(m, "hearth_scheduler_up") == 0
    assert not any(name.startswith(("hearth_slots", "hearth_queue", "hearth_worker",
                                    "hearth_model")) for name, _ in m)


def test_status_is_read_at_scrape_time() -> None:
    current: list[SchedulerStatus | None] = [None]
    metrics = Metrics(lambda: current[0])
    assert get(samples(metrics), "hearth_scheduler_up") == 0
    current[0] = STATUS
    assert get(samples(metrics), "hearth_scheduler_up") == 1


def test_request_counter_and_bounded_endpoints() -> None:
    metrics = Metrics(lambda: None)
    metrics.count_request("chat.completions", "a", 200, "key1")
    metrics.count_request("chat.completions", "a", 200, "key1")
    metrics.count_request("/some/path", "-", 404, "-")
    m = samples(metrics)
    assert get(m, "hearth_requests_total", endpoint="chat.completions", model="a",
               status="200", key="key1") == 2
    assert get(m, "hearth_requests_total", endpoint="other", model="-", status="404",
               key="-") == 1


def test_usage() -> None:
    metrics = Metrics(lambda: None)
    metrics.usage("a", prompt=10, completion=5, cached=0)
    m = samples(metrics)
    assert get(m, "hearth_prompt_tokens_total", model="a") == 10
    assert get(m, "hearth_completion_tokens_total", model="a") == 5
    assert get(m, "hearth_prompt_tokens_cached_total", model="a") == 0
    assert get(m, "hearth_prefix_cache_hits_total", model="a") == 0  # exists, at 0
    metrics.usage("a", prompt=10, completion=5, cached=8)
    m = samples(metrics)
    assert get(m, "hearth_prompt_tokens_total", model="a") == 20
    assert get(m, "hearth_prompt_tokens_cached_total", model="a") == 8
    assert get(m, "hearth_prefix_cache_hits_total", model="a") == 1


def test_token_timer(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    metrics = Metrics(lambda: None)
    timer = metrics.token_timer("a", elapsed=0.5)  # arrived at 99.5
    assert isinstance(timer, TokenTimer)
    now[0] = 100.25
    timer.token()  # first token: 0.75 s after arrival
    now[0] = 100.3125
    timer.token()  # 0.0625 s later (binary fractions: exact sums and bucket edges)
    now[0] = 100.34375
    timer.token()  # 0.03125 s later
    m = samples(metrics)
    assert get(m, "hearth_time_to_first_token_seconds_count", model="a") == 1
    assert get(m, "hearth_time_to_first_token_seconds_sum", model="a") == pytest.approx(0.75)
    assert get(m, "hearth_inter_token_latency_seconds_count", model="a") == 2
    assert get(m, "hearth_inter_token_latency_seconds_sum", model="a") == 0.09375
    assert get(m, "hearth_inter_token_latency_seconds_bucket", model="a", le="0.05") == 1
    assert get(m, "hearth_inter_token_latency_seconds_bucket", model="a", le="0.075") == 2


def test_token_timer_times_each_choice_against_its_own_last_token(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """n choices' tokens of one step arrive together: not intervals of each other."""
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    metrics = Metrics(lambda: None)
    timer = metrics.token_timer("a", elapsed=0.5)
    now[0] = 100.25
    timer.token(("r", 0))
    timer.token(("r", 1))
    now[0] = 100.3125
    timer.token(("r", 0))
    timer.token(("r", 1))
    m = samples(metrics)
    assert get(m, "hearth_time_to_first_token_seconds_count", model="a") == 1
    assert get(m, "hearth_inter_token_latency_seconds_count", model="a") == 2
    assert get(m, "hearth_inter_token_latency_seconds_sum", model="a") == 0.125


def test_own_registry_never_the_global_one() -> None:
    a, b = Metrics(lambda: None), Metrics(lambda: None)  # no "duplicated timeseries" error
    a.count_request("health", "-", 200, "-")
    assert get(samples(b), "hearth_requests_total", endpoint="health", model="-",
               status="200", key="-") is None
    assert REGISTRY.get_sample_value("hearth_requests_total") is None


def test_openmetrics_when_asked() -> None:
    body, content_type = Metrics(lambda: STATUS).exposition(
        "application/openmetrics-text; version=1.0.0,text/plain;q=0.5")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
    _, content_type = Metrics(lambda: STATUS).exposition(None)
    assert content_type.startswith("text/plain")


def test_entries_of_one_model_add_up() -> None:
    """Should the scheduler report a model once per replica, the series stay one per model."""
    status = SchedulerStatus("a", [
        ModelState("a", "ready", slots=4, busy=1, size_bytes=10, starts=3, crashes=1),
        ModelState("a", "ready", slots=4, busy=2, size_bytes=10, starts=3, crashes=1),
        ModelState("a", "loading", size_bytes=10, starts=3, crashes=1),
    ], queued=0)
    m = samples(Metrics(lambda: status))
    assert get(m, "hearth_slots_busy", model="a") == 3
    assert get(m, "hearth_slots_total", model="a") == 8
    assert get(m, "hearth_model_loaded", model="a") == 1
    assert get(m, "hearth_worker_starts_total", model="a") == 3
    assert get(m, "hearth_worker_restarts_total", model="a") == 2
    assert sum(1 for name, _ in m if name == "hearth_slots_total") == 1


def test_ram_cache_series() -> None:
    status = SchedulerStatus("a", [ModelState(
        "a", "ready", slots=2, ram_cache=RamCacheStats(4096, 3, 7, 2, 9, 4, 1, 0.5))], queued=0)
    m = samples(Metrics(lambda: status))
    assert get(m, "hearth_ram_cache_bytes", model="a") == 4096
    assert get(m, "hearth_ram_cache_entries", model="a") == 3
    assert get(m, "hearth_ram_cache_hits_total", model="a") == 7
    assert get(m, "hearth_ram_cache_misses_total", model="a") == 2
    assert get(m, "hearth_ram_cache_saves_total", model="a") == 9
    assert get(m, "hearth_ram_cache_evictions_total", model="a") == 4
    assert get(m, "hearth_ram_cache_restore_failures_total", model="a") == 1
    assert get(m, "hearth_ram_cache_restore_seconds_total", model="a") == 0.5
