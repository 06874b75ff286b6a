"""``hearth status``: reading Prometheus text, tokens/s between scrapes, the rendered view."""

from __future__ import annotations

import argparse
import io
from typing import Any

import pytest
from hearth.api.metrics import Metrics
from hearth.scheduler.messages import ModelState, SchedulerStatus
from hearth.tools.cli import status as st


@pytest.fixture(autouse=True)
def no_user_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    """Never read the user's HEARTH_* variables or saved key."""
    import os

    for name in list(os.environ):
        if name.startswith("HEARTH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


TEXT = """\
# HELP hearth_scheduler_up 1 while the scheduler reports its status, else 0
# TYPE hearth_scheduler_up gauge
hearth_scheduler_up 1.0
# TYPE hearth_queue_depth gauge
hearth_queue_depth{key="key1"} 3.0
hearth_queue_depth{key="key2"} 0.0
# TYPE hearth_slots_busy gauge
hearth_slots_busy{model="big"} 2.0
hearth_slots_busy{model="tiny"} 0.0
# TYPE hearth_slots_total gauge
hearth_slots_total{model="big"} 8.0
hearth_slots_total{model="tiny"} 0.0
# TYPE hearth_model_loaded gauge
hearth_model_loaded{model="big"} 1.0
hearth_model_loaded{model="tiny"} 0.0
# TYPE hearth_model_size_bytes gauge
hearth_model_size_bytes{model="big"} 2.5e+08
hearth_model_size_bytes{model="tiny"} 1024.0
# TYPE hearth_worker_starts_total counter
hearth_worker_starts_total{model="big"} 3.0
hearth_worker_starts_total{model="tiny"} 1.0
# TYPE hearth_worker_crashes_total counter
hearth_worker_crashes_total{model="big"} 2.0
hearth_worker_crashes_total{model="tiny"} 1.0
# TYPE hearth_completion_tokens_total counter
hearth_completion_tokens_total{model="big"} 1500.0
# TYPE hearth_model_gpu_layers gauge
hearth_model_gpu_layers{model="big"} 28.0
# TYPE hearth_model_layers gauge
hearth_model_layers{model="big"} 30.0
# TYPE hearth_requests_total counter
hearth_requests_total{endpoint="chat.completions",key="key1",model="big",status="200"} 7.0
"""


def test_parse_metrics_reads_models_queue_and_up() -> None:
    s = st.parse_metrics(TEXT, taken_at=5.0)
    assert s.scheduler_up is True
    assert s.taken_at == 5.0
    assert s.queue == {"key1": 3, "key2": 0}
    big = s.models["big"]
    assert (big.loaded, big.busy, big.slots, big.size_bytes, big.starts, big.crashes) == \
        (True, 2, 8, 250_000_000, 3, 2)
    assert big.completion_tokens == 1500.0
    assert (big.gpu_layers, big.layers) == (28, 30)
    tiny = s.models["tiny"]
    assert (tiny.loaded, tiny.slots, tiny.crashes, tiny.completion_tokens) == (False, 0, 1, 0.0)


def test_parse_metrics_of_a_server_whose_scheduler_is_gone() -> None:
    s = st.parse_metrics("# TYPE hearth_scheduler_up gauge\nhearth_scheduler_up 0.0\n")
    assert s.scheduler_up is False
    assert s.models == {} and s.queue == {}


def test_parse_metrics_ignores_other_series_and_rejects_garbage() -> None:
    s = st.parse_metrics('# TYPE x counter\nx_total{model="m"} 1.0\nprocess_cpu 2\n')
    assert s.models == {}
    with pytest.raises(ValueError):
        st.parse_metrics("this is { not prometheus\n")


def test_parse_metrics_reads_what_the_api_exposes() -> None:
    """Round trip through api.metrics, so the two sides agree on names and labels."""
    status = SchedulerStatus("tiny", [
        ModelState("tiny", "ready", slots=4, busy=1, size_bytes=4096, starts=2, crashes=1),
        ModelState("gone", "stopped", size_bytes=10, starts=1, crashes=0),
    ], queued=2, queued_by_key={"key2": 2})
    metrics = Metrics(lambda: status, lambda: ["key1", "key2"])
    metrics.usage("tiny", prompt=10, completion=7, cached=3)
    body, content_type = metrics.exposition(None)
    assert content_type.startswith("text/plain")
    s = st.parse_metrics(body.decode())
    assert s.scheduler_up
    assert s.queue == {"key1": 0, "key2": 2}
    tiny = s.models["tiny"]
    assert (tiny.loaded, tiny.busy, tiny.slots, tiny.size_bytes, tiny.starts, tiny.crashes,
            tiny.completion_tokens) == (True, 1, 4, 4096, 2, 1, 7.0)
    gone = s.models["gone"]
    assert (gone.loaded, gone.busy, gone.slots, gone.size_bytes) == (False, 0, 0, 10)


def scrape_at(t: float, **tokens: float) -> st.Scrape:
    return st.Scrape(True, {m: st.ModelView(completion_tokens=n) for m, n in tokens.items()},
                     {}, t)


def test_tokens_per_second() -> None:
    rates = st.tokens_per_second(scrape_at(10.0, a=100, b=5), scrape_at(12.0, a=160, b=5, c=8))
    assert rates == {"a": 30.0, "b": 0.0, "c": 4.0}
    # a restarted server's counter went down: count from zero
    assert st.tokens_per_second(scrape_at(0.0, a=500), scrape_at(1.0, a=20)) == {"a": 20.0}
    assert st.tokens_per_second(scrape_at(1.0, a=1), scrape_at(1.0, a=2)) == {}


def test_render_shows_models_slots_queue_and_rate() -> None:
    s = st.parse_metrics(TEXT)
    text = st.render("http://127.0.0.1:1337", {"status": "ok", "model": "big"}, s,
                     {"big": 42.04, "tiny": 0.0})
    lines = text.splitlines()
    assert lines[0] == "server   http://127.0.0.1:1337  ok"
    assert "default  big" in lines
    assert "slots    2/8 busy   queued 3   tokens/s 42.0" in lines
    header = next(line for line in lines if line.startswith("MODEL"))
    assert header.split() == ["MODEL", "LOADED", "DEVICE", "SLOTS", "TOKENS/S", "SIZE",
                              "STARTS", "CRASHES"]
    big = next(line for line in lines if line.startswith("big "))
    assert big.split() == ["big", "yes", "gpu", "28/30", "2/8", "42.0", "238.4", "MiB", "3",
                           "2"]
    tiny = next(line for line in lines if line.startswith("tiny "))
    assert tiny.split()[:5] == ["tiny", "no", "-", "0/0", "0.0"]
    assert any(line.split() == ["key1", "3"] for line in lines)


def test_device_column() -> None:
    assert st._device(st.ModelView(loaded=True, gpu_layers=0, layers=30)) == "cpu"
    assert st._device(st.ModelView(loaded=True, gpu_layers=30, layers=30)) == "gpu 30/30"
    assert st._device(st.ModelView(loaded=True)) == "-"  # an older server: not reported
    assert st._device(st.ModelView(loaded=False, gpu_layers=0)) == "-"


def test_render_when_things_are_missing() -> None:
    text = st.render("http://h:1", None, None, None, "nothing answers")
    assert "not reachable" in text and "nothing answers" in text
    text = st.render("http://h:1", {"status": "loading", "reason": "the default model 'x' is "
                                    "loading"}, st.Scrape(), None)
    assert "loading (the default model 'x' is loading)" in text
    assert "scheduler  not reporting" in text
    assert "no model started yet" in text
    assert "tokens/s" not in text  # not measured


@pytest.mark.parametrize(("url", "prefix", "root"), [
    ("http://127.0.0.1:1337/v1", "/v1", "http://127.0.0.1:1337"),
    ("http://127.0.0.1:1337/v1/", "/v1", "http://127.0.0.1:1337"),
    ("http://127.0.0.1:1337", "/v1", "http://127.0.0.1:1337"),
    ("http://box:8080/api", "/api", "http://box:8080"),
    ("http://box:8080", "", "http://box:8080"),
])
def test_server_root(url: str, prefix: str, root: str) -> None:
    assert st.server_root(url, prefix) == root


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    st.add_status_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["status", *argv])


def test_arguments() -> None:
    args = parse(["--url", "http://x:1/v1", "--api-key", "k", "--watch", "0.5"])
    assert (args.url, args.api_key, args.watch) == ("http://x:1/v1", ["k"], 0.5)
    with pytest.raises(SystemExit):
        parse(["--watch", "0"])
    with pytest.raises(SystemExit):
        parse(["--watch", "soon"])


class FakeServer:
    """Stands in for read_health/read_metrics: completion tokens rise by 10 per read."""

    def __init__(self) -> None:
        self.reads = 0
        self.keys: list[str | None] = []
        self.clock = 0.0

    def health(self, root: str, timeout: float = 0, tls: object = None) -> dict[str, Any]:
        return {"status": "ok", "model": "tiny"}

    def metrics(self, root: str, key: str | None, timeout: float = 0,
                tls: object = None) -> st.Scrape:
        self.keys.append(key)
        self.reads += 1
        return scrape_at(self.clock, tiny=10.0 * self.reads)

    def sleep(self, seconds: float) -> None:
        self.clock += seconds


def test_run_status_once_measures_over_one_second(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer()
    monkeypatch.setattr(st, "read_health", fake.health)
    monkeypatch.setattr(st, "read_metrics", fake.metrics)
    out = io.StringIO()
    args = parse(["--url", "http://x:1/v1", "--api-key", "secret"])
    assert st.run_status(args, out=out, sleep=fake.sleep) == 0
    assert fake.reads == 2 and fake.clock == 1.0
    assert fake.keys == ["secret", "secret"]
    assert "tokens/s 10.0" in out.getvalue()
    assert out.getvalue().startswith("server   http://x:1  ok")


def test_run_status_watch_until_ctrl_c(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeServer()
    monkeypatch.setattr(st, "read_health", fake.health)
    monkeypatch.setattr(st, "read_metrics", fake.metrics)
    frames = 0

    def sleep(seconds: float) -> None:
        nonlocal frames
        if seconds == 2.0:
            frames += 1
            if frames == 3:
                raise KeyboardInterrupt
        fake.sleep(seconds)

    out = io.StringIO()
    assert st.run_status(parse(["--url", "http://x:1", "--api-key", "k", "--watch", "2"]),
                         out=out, sleep=sleep) == 0
    text = out.getvalue()
    assert text.count("server   http://x:1  ok") == 3
    assert fake.reads == 4  # two for the first frame, then one per frame
    assert "tokens/s 10.0" in text  # first frame: 10 tokens in 1 s
    assert "tokens/s 5.0" in text  # later frames: 10 tokens in 2 s


def test_run_status_server_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(root: str, timeout: float = 0, tls: object = None) -> dict[str, Any]:
        raise st.ServerError(f"nothing answers at {root}")

    monkeypatch.setattr(st, "read_health", down)
    out = io.StringIO()
    assert st.run_status(parse(["--url", "http://x:1"]), out=out) == 1
    assert "nothing answers at http://x:1" in out.getvalue()


def test_run_status_real_http_server_not_running() -> None:
    from harness import free_port

    out = io.StringIO()
    code = st.run_status(parse(["--url", f"http://127.0.0.1:{free_port()}/v1"]), out=out)
    assert code == 1
    assert "nothing answers" in out.getvalue()


def test_remote_workers_round_trip_and_render() -> None:
    from hearth.scheduler.messages import RemoteStatus

    status = SchedulerStatus("tiny", [ModelState("tiny", "ready", slots=6, busy=1,
                                                 workers=["gpubox", "local"])], queued=0,
                             remotes=[RemoteStatus("gpubox", "gpu1", "10.0.0.2", ["tiny"], 4,
                                                   1, rtt_ms=0.8, heartbeat_age_s=0.3,
                                                   tokens=900, tokens_per_s=123.4,
                                                   memory_budget=8 << 30)])
    body, _ = Metrics(lambda: status, lambda: []).exposition(None)
    s = st.parse_metrics(body.decode())
    r = s.remotes["gpubox"]
    assert (r.host, r.slots, r.busy, r.tokens_per_s) == ("gpu1", 4, 1, 123.4)
    assert r.rtt_s == pytest.approx(0.0008) and r.heartbeat_age_s == pytest.approx(0.3)
    text = st.render("http://x", {"status": "ok"}, s, None)
    assert "REMOTE WORKER" in text and "gpubox" in text and "0.8 ms" in text
    assert "0.3 s ago" in text and "1/4" in text
    assert r.memory_budget == 8 << 30 and "8.0 GiB" in text


def test_workers_round_trip_and_render() -> None:
    from hearth.scheduler.messages import WorkerStatus

    status = SchedulerStatus("tiny", [ModelState("tiny", "ready", slots=6, busy=1,
                                                 workers=["gpubox", "local"])], queued=0,
                             workers=[
                                 WorkerStatus("tiny-aa", "tiny", "local", "lanbox", "ready", 2,
                                              1, 500, 41.5, 0.4, pid=1234),
                                 WorkerStatus("tiny-bb", "tiny", "gpubox", "gpu1", "loading",
                                              0, 0, 0, 0.0, 2.5)])
    body, _ = Metrics(lambda: status, lambda: []).exposition(None)
    assert b'hearth_worker_tokens_total{host="lanbox",model="tiny",place="local",' \
           b'worker="tiny-aa"} 500.0' in body
    s = st.parse_metrics(body.decode())
    a, b = s.workers["tiny-aa"], s.workers["tiny-bb"]
    assert (a.model, a.place, a.host, a.up, a.slots, a.busy) == ("tiny", "local", "lanbox",
                                                                 True, 2, 1)
    assert a.tokens_per_s == pytest.approx(41.5) and a.heard_age_s == pytest.approx(0.4)
    assert (b.place, b.host, b.up) == ("gpubox", "gpu1", False)
    assert s.models["tiny"].slots == 6  # the per-model series are still read as before
    text = st.render("http://x", {"status": "ok"}, s, None)
    assert "WORKER" in text and "tiny-aa" in text and "lanbox" in text and "41.5" in text
    assert text.index("tiny-aa") < text.index("tiny-bb")  # local first
    assert "starting" in text and "2.5 s ago" in text
