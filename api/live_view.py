"""What the web page's live view shows, read from the same series as ``GET /metrics``.

:func:`read_series` collects the api's Prometheus registry (api.metrics: the api's own counters,
the scheduler's last status, requests in flight) into plain numbers; :class:`LiveSampler` keeps
one reading a second for the last five minutes, so the view can say tokens per second over the
last 10 s, time to first token (TTFT) over the last five minutes, and draw a chart of tokens per
second from before the page was opened. Pure Python over a ``CollectorRegistry``: unit-tested
without a server.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

HISTORY_S = 300  # the chart's span: five minutes of one-second samples
RATE_WINDOW_S = 10.0  # "tokens/s" is over the last 10 s
CHART_STEP_S = 5  # each chart point is the rate over 5 s (worker stats arrive about once a second)

Labels = tuple[tuple[str, str], ...]


def read_series(registry: CollectorRegistry) -> dict[str, dict[Labels, float]]:
    """Every sample of ``registry`` as ``{sample name: {sorted labels: value}}`` (counters under
    their ``_total`` name, histograms as ``_bucket``/``_count``/``_sum``), as a scrape sees it."""
    out: dict[str, dict[Labels, float]] = {}
    for family in registry.collect():
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def by_label(series: dict[str, dict[Labels, float]], name: str, label: str) -> dict[str, float]:
    """The samples of ``name`` summed by the value of ``label``."""
    out: dict[str, float] = {}
    for labels, value in series.get(name, {}).items():
        key = dict(labels).get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


def ttft_buckets(series: dict[str, dict[Labels, float]]) -> dict[float, float]:
    """hearth_time_to_first_token_seconds' cumulative bucket counts, summed over models, by
    upper bound (``inf`` included)."""
    return {float(le): n for le, n in
            by_label(series, "hearth_time_to_first_token_seconds_bucket", "le").items()}


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated linearly inside its bucket as
    Prometheus' ``histogram_quantile`` does; None with no observations. A quantile in the
    ``+Inf`` bucket is the highest finite bound."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


@dataclass
class Sample:
    at: float  # time.monotonic()
    tokens: float  # tokens generated so far, all models (hearth_engine_tokens)
    ttft: dict[float, float] = field(default_factory=dict)


class LiveSampler:
    """One reading of the counters a second (``sample``, called by a timer on the api's loop),
    the last HISTORY_S seconds kept. ``clock`` is injectable for tests."""

    def __init__(self, registry: CollectorRegistry,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = registry
        self.clock = clock
        self.samples: deque[Sample] = deque(maxlen=HISTORY_S + 1)

    def sample(self) -> dict[str, dict[Labels, float]]:
        series = read_series(self.registry)
        tokens = sum(series.get("hearth_engine_tokens_total", {}).values())
        self.samples.append(Sample(self.clock(), tokens, ttft_buckets(series)))
        return series

    def tick(self) -> None:
        """``sample``, for a timer."""
        self.sample()

    def _ago(self, seconds: float) -> Sample | None:
        """The newest sample at least ``seconds`` older than the last, else the oldest."""
        if not self.samples:
            return None
        last = self.samples[-1]
        for s in reversed(self.samples):
            if last.at - s.at >= seconds:
                return s
        return self.samples[0]

    def tokens_per_s(self, window: float = RATE_WINDOW_S) -> float:
        """Tokens generated per second over the last ``window`` seconds (less if the sampler
        is younger); 0.0 before two samples."""
        first = self._ago(window)
        if first is None or first is self.samples[-1]:
            return 0.0
        last = self.samples[-1]
        return max(0.0, last.tokens - first.tokens) / (last.at - first.at)

    def ttft_p50(self) -> float | None:
        """Median time to first token, in seconds, of the requests whose first token came in
        the sampler's history (about five minutes); None if none did."""
        if not self.samples:
            return None
        first, last = self.samples[0], self.samples[-1]
        window = {le: n - first.ttft.get(le, 0.0) for le, n in last.ttft.items()}
        return quantile(0.5, window)

    def chart(self) -> list[tuple[float, float]]:
        """(seconds before the last sample, tokens/s over the CHART_STEP_S before it), oldest
        first, one point per CHART_STEP_S."""
        points: list[tuple[float, float]] = []
        samples = list(self.samples)
        if len(samples) < 2:
            return points
        last = samples[-1]
        i = len(samples) - 1
        while i > 0:
            j = i
            while j > 0 and samples[i].at - samples[j].at < CHART_STEP_S:
                j -= 1
            span = samples[i].at - samples[j].at
            if span <= 0:
                break
            rate = max(0.0, samples[i].tokens - samples[j].tokens) / span
            points.append((round(last.at - samples[i].at, 1), round(rate, 2)))
            i = j
        points.reverse()
        return points


def models_view(series: dict[str, dict[Labels, float]],
                files: Iterable[tuple[str, int]]) -> list[dict[str, Any]]:
    """One row per model: every file of the models directory (``files``: (id, size in bytes))
    and every model the scheduler reports, with loaded, slots busy/total and worker restarts."""
    loaded = by_label(series, "hearth_model_loaded", "model")
    busy = by_label(series, "hearth_slots_busy", "model")
    total = by_label(series, "hearth_slots_total", "model")
    size = by_label(series, "hearth_model_size_bytes", "model")
    restarts = by_label(series, "hearth_worker_restarts_total", "model")
    crashes = by_label(series, "hearth_worker_crashes_total", "model")
    sizes = dict(files)
    for model, n in size.items():
        sizes.setdefault(model, int(n))
    return [{"id": model, "loaded": loaded.get(model, 0.0) > 0, "size_bytes": sizes[model],
             "slots_busy": int(busy.get(model, 0)), "slots_total": int(total.get(model, 0)),
             "worker_restarts": int(restarts.get(model, 0)),
             "worker_crashes": int(crashes.get(model, 0))}
            for model in sorted(sizes)]


def live_view(sampler: LiveSampler, series: dict[str, dict[Labels, float]],
              files: Iterable[tuple[str, int]], default_model: str) -> dict[str, Any]:
    """The body of ``GET /web/api/live`` (see README, "The web page"). Key *names* only."""
    up = sum(series.get("hearth_scheduler_up", {}).values()) > 0
    queue = {k: int(v) for k, v in by_label(series, "hearth_queue_depth", "key").items()}
    in_flight = {k: int(v) for k, v in
                 by_label(series, "hearth_requests_in_flight", "key").items()}
    models = models_view(series, files)
    return {
        "scheduler_up": up,
        "default_model": default_model,
        "models": models,
        "queue_depth": sum(queue.values()),
        "queue_by_key": queue,
        "in_flight_by_key": in_flight,
        "tokens_per_s": round(sampler.tokens_per_s(), 2),
        "ttft_p50_s": sampler.ttft_p50(),
        "worker_restarts": sum(m["worker_restarts"] for m in models),
        "chart": {"step_s": CHART_STEP_S, "points": sampler.chart()},
    }
