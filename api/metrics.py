"""Prometheus metrics for ``GET /metrics``: what the api counts itself, and what the scheduler
last reported.

One :class:`Metrics` per api process, built at start-up and shared through ``AppState``; it owns
its own ``CollectorRegistry`` (never prometheus_client's global one), so two apps in one process
(tests) never share counters. Everything here runs on the api's event loop; nothing blocks.

Two kinds of series:

* counted by the api as requests are served: requests by endpoint/model/status/key name, prompt
  and completion tokens, prefix-cache reuse, time to first token and inter-token latency;
* read from the scheduler's latest ``SchedulerStatus`` at scrape time (a custom collector):
  queue depth per key, slots busy/total, loaded models and their file size, worker starts,
  crashes and restarts, where the step loops spent their time (decode, sample, overhead), and
  how chat requests were routed among a model's workers (by prefix affinity or by load), and
  the workers' host-RAM prompt caches (bytes, entries, hits, misses, restore time...).
  With no fresh status only ``hearth_scheduler_up 0`` is reported;
* read from the api's own bridge at scrape time: requests in flight per key name.

Label values are bounded: ``endpoint`` is one of :data:`ENDPOINTS`, ``model`` is a model id the
registry knows (else ``-``), ``key`` is a key *name* (``key1``…, never the key) or ``-``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping

from hearth.scheduler.messages import ModelState, SchedulerStatus
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# The ``endpoint`` label's values; a path no handler serves is "other".
ENDPOINTS = ("chat.completions", "completions", "embeddings", "tokenize", "detokenize", "models",
             "openapi", "health", "metrics", "web", "responses", "messages",
             "messages.count_tokens", "other")

# A local server on CPU: the first token may wait behind a queue for minutes.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
               1.0, 2.5, 5.0)


class TokenTimer:
    """Times one request's tokens as the api receives them: the first one against the request's
    arrival (TTFT), every later one against the one before in the same sequence (inter-token
    latency). A request of several sequences (choices of ``n``, prompts of a completions list)
    names each with a ``stream`` key: their tokens of one step arrive together, and are not
    each other's intervals.

    Per token: one ``time.monotonic()``, one subtraction and one histogram observation, with the
    labelled histogram children looked up once per request."""

    __slots__ = ("_itl", "_last", "_start", "_ttft")

    def __init__(self, ttft: Histogram, itl: Histogram, start: float) -> None:
        self._ttft = ttft
        self._itl = itl
        self._start = start  # the request's arrival, on the time.monotonic() clock
        self._last: dict[object, float] = {}  # stream -> its last token's time

    def token(self, stream: object = None) -> None:
        now = time.monotonic()
        last = self._last.get(stream)
        if last is not None:
            self._itl.observe(now - last)
        elif not self._last:
            self._ttft.observe(now - self._start)
        self._last[stream] = now


class SchedulerCollector(Collector):
    """Gauges and counters from the scheduler's latest status, built at scrape time.

    ``status`` returns that status, or None when it is stale (scheduler gone or not started).
    ``key_names`` returns the configured keys' names at scrape time (the key file may change
    them: a name it adds gets its series from the next scrape, one it removes loses it unless
    requests of that name still wait). Each configured name gets a
    queue-depth series, 0 when nothing waits, so the series exist before the first request
    queues."""

    def __init__(self, status: Callable[[], SchedulerStatus | None],
                 key_names: Callable[[], Iterable[str]]) -> None:
        self._status = status
        self._key_names = key_names

    def collect(self) -> Iterable[Metric]:
        status = self._status()
        yield GaugeMetricFamily("hearth_scheduler_up",
                                "1 while the scheduler reports its status, else 0",
                                value=0 if status is None else 1)
        if status is None:
            return
        depth = dict.fromkeys(self._key_names(), 0)
        depth.update(status.queued_by_key)
        queue = GaugeMetricFamily("hearth_queue_depth",
                                  "requests waiting for a slot, by API key name", labels=["key"])
        for key, n in sorted(depth.items()):
            queue.add_metric([key], n)
        yield queue

        busy = GaugeMetricFamily("hearth_slots_busy", "slots generating now",
                                 labels=["model"])
        total = GaugeMetricFamily("hearth_slots_total", "slots of the model's loaded worker",
                                  labels=["model"])
        loaded = GaugeMetricFamily("hearth_model_loaded",
                                   "1 if the model is loaded and serving, else 0",
                                   labels=["model"])
        size = GaugeMetricFamily("hearth_model_size_bytes",
                                 "size of the model's GGUF file: roughly the memory its weights "
                                 "take when loaded (KV cache not included)", labels=["model"])
        starts = CounterMetricFamily("hearth_worker_starts",
                                     "worker processes started for the model", labels=["model"])
        crashes = CounterMetricFamily("hearth_worker_crashes",
                                      "workers that exited unexpectedly (crashed, killed or "
                                      "failed to load)", labels=["model"])
        restarts = CounterMetricFamily("hearth_worker_restarts",
                                       "workers started again after the first",
                                       labels=["model"])
        gpu_layers = GaugeMetricFamily(
            "hearth_model_gpu_layers", "layers of the loaded model its llama.cpp build put on a "
            "GPU (0: it runs on the CPU)", labels=["model"])
        layers = GaugeMetricFamily("hearth_model_layers", "repeating layers of the loaded model",
                                   labels=["model"])
        engine_s = CounterMetricFamily(
            "hearth_engine_seconds",
            "the workers' step loops' time while generating: part=decode (llama_decode), "
            "sample (sampling) or overhead (everything else the server does per step)",
            labels=["model", "part"])
        engine_steps = CounterMetricFamily("hearth_engine_steps",
                                           "batched decode steps run", labels=["model"])
        engine_tokens = CounterMetricFamily("hearth_engine_tokens",
                                            "tokens generated by the step loops",
                                            labels=["model"])
        drafts = CounterMetricFamily(
            "hearth_draft_tokens",
            "speculative decoding's n-gram draft tokens: outcome=proposed (fed to llama_decode) "
            "or accepted (kept as output); accepted / proposed is the acceptance rate",
            labels=["model", "outcome"])
        routed = CounterMetricFamily(
            "hearth_routed_requests",
            "chat requests routed to one of the model's workers: by=prefix to a worker whose "
            "slots held the start of the prompt (--routing prefix), by=load to the least "
            "loaded one", labels=["model", "by"])
        cache = _ram_cache_families()
        by_model: dict[str, list[ModelState]] = {}
        for m in status.models:  # one entry per model today; one per replica would also do
            by_model.setdefault(m.model, []).append(m)
        for model, states in sorted(by_model.items()):
            ready = [m for m in states if m.state == "ready"]
            n_starts = max(m.starts for m in states)  # per-model counters, on every entry
            busy.add_metric([model], sum(m.busy for m in ready))
            total.add_metric([model], sum(m.slots for m in ready))
            loaded.add_metric([model], 1 if ready else 0)
            size.add_metric([model], max(m.size_bytes for m in states))
            starts.add_metric([model], n_starts)
            crashes.add_metric([model], max(m.crashes for m in states))
            restarts.add_metric([model], max(n_starts - 1, 0))
            placed = next((m.placement for m in ready if m.placement is not None), None)
            if placed is not None:
                gpu_layers.add_metric([model], placed.gpu_layers)
                layers.add_metric([model], placed.layers)
            times = states[0].engine  # per model, on every entry
            engine_s.add_metric([model, "decode"], times.decode_s)
            engine_s.add_metric([model, "sample"], times.sample_s)
            engine_s.add_metric([model, "overhead"], times.overhead_s)
            engine_steps.add_metric([model], times.steps)
            engine_tokens.add_metric([model], times.tokens)
            drafts.add_metric([model, "proposed"], times.draft_proposed)
            drafts.add_metric([model, "accepted"], times.draft_accepted)
            by_prefix = max(m.routed_by_prefix for m in states)  # per model, on every entry
            routed.add_metric([model, "prefix"], by_prefix)
            routed.add_metric([model, "load"], max(m.routed for m in states) - by_prefix)
            ram = states[0].ram_cache  # per model, on every entry
            for name, value in (("bytes", ram.bytes), ("entries", ram.entries),
                                ("hits", ram.hits), ("misses", ram.misses),
                                ("saves", ram.saves), ("evictions", ram.evictions),
                                ("restore_failures", ram.failures),
                                ("restore_seconds", ram.restore_s)):
                cache[name].add_metric([model], value)
        yield from (busy, total, loaded, size, starts, crashes, restarts, gpu_layers, layers,
                    engine_s, engine_steps, engine_tokens, drafts, routed, *cache.values())
        yield from remote_metrics(status)
        yield from worker_metrics(status)


def _ram_cache_families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    """The host-RAM prompt cache's series (engine/ram_cache.py), by model: its workers' sums."""
    def gauge(name: str, text: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"hearth_ram_cache_{name}", text, labels=["model"])

    def counter(name: str, text: str) -> CounterMetricFamily:
        return CounterMetricFamily(f"hearth_ram_cache_{name}", text, labels=["model"])

    return {
        "bytes": gauge("bytes", "bytes of KV state the host-RAM prompt cache holds"),
        "entries": gauge("entries", "conversations (saved KV states) the host-RAM prompt "
                                    "cache holds"),
        "hits": counter("hits", "requests whose prompt was served from a KV state restored "
                                "from the host-RAM prompt cache"),
        "misses": counter("misses", "requests the host-RAM prompt cache had nothing better for "
                                    "than the slots' own caches"),
        "saves": counter("saves", "KV states saved to the host-RAM prompt cache (a slot's "
                                  "conversation about to be overwritten)"),
        "evictions": counter("evictions", "KV states dropped from the host-RAM prompt cache "
                                          "for room (least recently used first)"),
        "restore_failures": counter("restore_failures",
                                    "restores llama.cpp refused (the prompt was evaluated "
                                    "instead)"),
        "restore_seconds": counter("restore_seconds",
                                   "time spent restoring KV states from the host-RAM prompt "
                                   "cache"),
    }


def remote_metrics(status: SchedulerStatus) -> Iterable[Metric]:
    """Per remote box joined over --worker-listen (label ``worker``: its key's name; ``host``:
    the host name it reported): slots, busy slots, tokens/s, the link's round-trip time, the
    age of the last heartbeat and the box's memory budget."""
    labels = ["worker", "host"]
    up = GaugeMetricFamily("hearth_remote_worker_up",
                           "1 for each remote worker joined now", labels=labels)
    slots = GaugeMetricFamily("hearth_remote_worker_slots", "slots of the remote worker",
                              labels=labels)
    busy = GaugeMetricFamily("hearth_remote_worker_slots_busy",
                             "slots of the remote worker generating now", labels=labels)
    rate = GaugeMetricFamily("hearth_remote_worker_tokens_per_second",
                             "tokens the remote worker generated per second, lately",
                             labels=labels)
    tokens = CounterMetricFamily("hearth_remote_worker_tokens",
                                 "tokens the remote worker generated since it joined",
                                 labels=labels)
    rtt = GaugeMetricFamily("hearth_remote_worker_rtt_seconds",
                            "round-trip time of the last heartbeat on the worker's link",
                            labels=labels)
    age = GaugeMetricFamily("hearth_remote_worker_heartbeat_age_seconds",
                            "seconds since the remote worker was last heard", labels=labels)
    budget = GaugeMetricFamily("hearth_remote_worker_memory_budget_bytes",
                               "the remote box's own --memory-budget, as it said when it joined",
                               labels=labels)
    for r in status.remotes:
        key = [r.name, r.host]
        up.add_metric(key, 1)
        slots.add_metric(key, r.slots)
        busy.add_metric(key, r.busy)
        rate.add_metric(key, r.tokens_per_s)
        tokens.add_metric(key, r.tokens)
        rtt.add_metric(key, r.rtt_ms / 1000)
        age.add_metric(key, r.heartbeat_age_s)
        budget.add_metric(key, r.memory_budget)
    yield from (up, slots, busy, rate, tokens, rtt, age, budget)


def worker_metrics(status: SchedulerStatus) -> Iterable[Metric]:
    """Per worker process, local or on a remote box (labels ``worker``: its id; ``model``;
    ``place``: "local" or the box's name; ``host``: the host it runs on): up (1 ready, 0
    loading or stopping), slots, busy slots, tokens generated and tokens/s, and the seconds
    since it last sent anything. A local worker speaks only when it has something to say (it
    reports its counts about once a second while it generates): its liveness is its process,
    whose exit the scheduler sees at once; a box's is its link's heartbeat
    (``hearth_remote_worker_heartbeat_age_seconds``)."""
    labels = ["worker", "model", "place", "host"]
    up = GaugeMetricFamily("hearth_worker_up", "1 for each worker process ready to take "
                           "requests, 0 while it loads or stops", labels=labels)
    slots = GaugeMetricFamily("hearth_worker_slots", "slots of the worker", labels=labels)
    busy = GaugeMetricFamily("hearth_worker_slots_busy", "slots of the worker generating now",
                             labels=labels)
    tokens = CounterMetricFamily("hearth_worker_tokens", "tokens the worker generated since "
                                 "it started", labels=labels)
    rate = GaugeMetricFamily("hearth_worker_tokens_per_second", "tokens the worker generated "
                             "per second over the last seconds", labels=labels)
    heard = GaugeMetricFamily("hearth_worker_heard_age_seconds", "seconds since the worker "
                              "last sent anything (its start, at first)", labels=labels)
    for w in status.workers:
        key = [w.worker_id, w.model, w.place, w.host]
        up.add_metric(key, 1 if w.state == "ready" else 0)
        slots.add_metric(key, w.slots)
        busy.add_metric(key, w.busy)
        tokens.add_metric(key, w.tokens)
        rate.add_metric(key, w.tokens_per_s)
        heard.add_metric(key, w.heard_age_s)
    yield from (up, slots, busy, tokens, rate, heard)


class InFlightCollector(Collector):
    """``hearth_requests_in_flight{key}``: jobs submitted and not yet answered, by key name
    (``in_flight`` returns them, e.g. ``Bridge.in_flight_by_key``); every configured name gets
    a series, 0 when it has none."""

    def __init__(self, in_flight: Callable[[], Mapping[str, int]],
                 key_names: Callable[[], Iterable[str]]) -> None:
        self._in_flight = in_flight
        self._key_names = key_names

    def collect(self) -> Iterable[Metric]:
        counts = dict.fromkeys(self._key_names(), 0)
        counts.update(self._in_flight())
        family = GaugeMetricFamily("hearth_requests_in_flight",
                                   "generation and embedding requests being answered (queued or "
                                   "running), by API key name", labels=["key"])
        for key, n in sorted(counts.items()):
            family.add_metric([key], n)
        yield family


class Metrics:
    """The api's metrics. Built once at start-up; handlers reach it through ``AppState``."""

    def __init__(self, status: Callable[[], SchedulerStatus | None],
                 key_names: Callable[[], Iterable[str]] = tuple,
                 in_flight: Callable[[], Mapping[str, int]] = dict) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "hearth_requests", "HTTP requests answered, by endpoint, model, status and key name",
            ["endpoint", "model", "status", "key"], registry=r)
        self.prompt_tokens = Counter(
            "hearth_prompt_tokens", "prompt tokens of finished requests (chat and embeddings)",
            ["model"], registry=r)
        self.completion_tokens = Counter(
            "hearth_completion_tokens", "tokens generated for finished chat requests",
            ["model"], registry=r)
        self.cached_tokens = Counter(
            "hearth_prompt_tokens_cached", "prompt tokens reused from a slot's prefix cache",
            ["model"], registry=r)
        self.prefix_cache_hits = Counter(
            "hearth_prefix_cache_hits", "chat requests that reused at least one cached token",
            ["model"], registry=r)
        self.ttft = Histogram(
            "hearth_time_to_first_token_seconds",
            "from a chat request's arrival to its first token reaching the api (queueing and "
            "prompt processing included)", ["model"], buckets=TTFT_BUCKETS, registry=r)
        self.itl = Histogram(
            "hearth_inter_token_latency_seconds",
            "time between consecutive tokens of a chat request, as the api receives them",
            ["model"], buckets=ITL_BUCKETS, registry=r)
        scheduler = SchedulerCollector(status, key_names)
        in_flight_collector = InFlightCollector(in_flight, key_names)
        r.register(scheduler)
        r.register(in_flight_collector)
        # The same series again, only those the web page's live view reads (api.live_view),
        # so that its once-a-second sample does not collect every request counter.
        self.live = CollectorRegistry()
        for collector in (self.ttft, scheduler, in_flight_collector):
            self.live.register(collector)

    def count_request(self, endpoint: str, model: str, status: int, key: str) -> None:
        if endpoint not in ENDPOINTS:
            endpoint = "other"
        self.requests.labels(endpoint, model, str(status), key).inc()

    def usage(self, model: str, prompt: int, completion: int, cached: int = 0) -> None:
        """A request finished with this usage."""
        self.prompt_tokens.labels(model).inc(prompt)
        self.completion_tokens.labels(model).inc(completion)
        self.cached_tokens.labels(model).inc(cached)
        hits = self.prefix_cache_hits.labels(model)  # the series exists from the first request
        if cached:
            hits.inc()

    def token_timer(self, model: str, elapsed: float) -> TokenTimer:
        """A timer for one request to ``model`` that arrived ``elapsed`` seconds ago."""
        return TokenTimer(self.ttft.labels(model), self.itl.labels(model),
                          time.monotonic() - elapsed)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The scrape body and its Content-Type: Prometheus text (0.0.4) unless ``accept`` asks
        for OpenMetrics, as prometheus_client's own exporters negotiate it."""
        encode, content_type = choose_encoder(accept or "")
        return encode(self.registry), content_type
