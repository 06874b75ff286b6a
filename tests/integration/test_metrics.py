"""GET /metrics on a real server: counters move as requests are served, gauges follow the
scheduler, a killed worker shows as a crash; ``hearth status`` reads it all."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import API_KEY, Server, worker_pids
from hearth.tools.cli import tiny_model
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

TINY_ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")  # as conftest's

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
CHAT = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "Hello"}]}


def scrape(srv: Server, key: str | None = API_KEY) -> Samples:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    r = srv.request("GET", "/metrics", headers=headers)
    assert r.status == 200, r.body
    out: Samples = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a series that does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests(samples: Samples, endpoint: str, model: str, status: str, key: str) -> float:
    return value(samples, "hearth_requests_total", endpoint=endpoint, model=model,
                 status=status, key=key)


def wait_for(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


# ---- the shared server --------------------------------------------------------------------


def test_metrics_needs_a_key(server: Server) -> None:
    r = server.request("GET", "/metrics", headers={})
    assert r.status == 401
    assert r.json()["error"]["code"] == "invalid_api_key"
    assert server.request("GET", "/metrics",
                          headers={"Authorization": "Bearer wrong"}).status == 401
    r = server.request("GET", "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert b"hearth_scheduler_up 1.0" in r.body
    assert API_KEY.encode() not in r.body  # key names only, never keys
    # Host check applies to /metrics too
    r = server.request("GET", "/metrics", headers={"Authorization": f"Bearer {API_KEY}",
                                                   "Host": "evil.example"})
    assert r.status == 403


def test_openmetrics_on_request(server: Server) -> None:
    r = server.request("GET", "/metrics", headers={
        "Authorization": f"Bearer {API_KEY}",
        "Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert r.body.rstrip().endswith(b"# EOF")


def test_a_chat_request_counts_once_with_its_usage(server: Server) -> None:
    before = scrape(server)
    r = server.chat(CHAT)
    assert r.status == 200, r.body
    usage = r.json()["usage"]
    after = scrape(server)
    args = ("chat.completions", "tiny", "200", "key1")
    assert requests(after, *args) == requests(before, *args) + 1
    for name, got in (("hearth_prompt_tokens_total", usage["prompt_tokens"]),
                      ("hearth_completion_tokens_total", usage["completion_tokens"]),
                      ("hearth_prompt_tokens_cached_total",
                       usage["prompt_tokens_details"]["cached_tokens"])):
        assert value(after, name, model="tiny") == value(before, name, model="tiny") + got, name
    hits = 1 if usage["prompt_tokens_details"]["cached_tokens"] else 0
    assert value(after, "hearth_prefix_cache_hits_total", model="tiny") == \
        value(before, "hearth_prefix_cache_hits_total", model="tiny") + hits


def test_the_step_loop_reports_where_its_time_went(server: Server) -> None:
    def engine(samples: Samples) -> tuple[float, ...]:
        return tuple(value(samples, "hearth_engine_seconds_total", model="tiny", part=part)
                     for part in ("decode", "sample", "overhead")) + (
            value(samples, "hearth_engine_steps_total", model="tiny"),
            value(samples, "hearth_engine_tokens_total", model="tiny"))

    before = engine(scrape(server))
    r = server.chat({**CHAT, "max_tokens": 6})
    assert r.status == 200, r.body
    made = r.json()["usage"]["completion_tokens"]
    # the worker reports before it frees the slot; the api sees it with the next status
    wait_for(lambda: engine(scrape(server))[4] == before[4] + made)
    after = engine(scrape(server))
    assert after[0] > before[0] and after[1] > before[1] and after[2] >= before[2]
    assert after[3] >= before[3] + made  # a step per token at least (prefill steps too)


def test_the_same_prompt_again_is_a_prefix_cache_hit(server: Server) -> None:
    assert server.chat(CHAT).status == 200
    before = scrape(server)
    r = server.chat(CHAT)
    assert r.status == 200
    cached = r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached > 0  # one request at a time: the slot still holds the prompt
    after = scrape(server)
    assert value(after, "hearth_prefix_cache_hits_total", model="tiny") == \
        value(before, "hearth_prefix_cache_hits_total", model="tiny") + 1
    assert value(after, "hearth_prompt_tokens_cached_total", model="tiny") == \
        value(before, "hearth_prompt_tokens_cached_total", model="tiny") + cached


def test_a_streamed_request_times_its_tokens(server: Server) -> None:
    before = scrape(server)
    usage = None
    for payload in server.stream({**CHAT, "max_tokens": 6, "stream": True,
                                  "stream_options": {"include_usage": True}}):
        if payload != b"[DONE]" and json.loads(payload).get("usage"):
            usage = json.loads(payload)["usage"]
    assert usage is not None
    after = scrape(server)
    n = usage["completion_tokens"]
    assert n >= 1
    ttft = "hearth_time_to_first_token_seconds_count"
    itl = "hearth_inter_token_latency_seconds_count"
    assert value(after, ttft, model="tiny") == value(before, ttft, model="tiny") + 1
    # one delta per token: every token after the first is one inter-token gap
    assert value(after, itl, model="tiny") == value(before, itl, model="tiny") + n - 1
    assert value(after, "hearth_time_to_first_token_seconds_sum", model="tiny") > \
        value(before, "hearth_time_to_first_token_seconds_sum", model="tiny")
    args = ("chat.completions", "tiny", "200", "key1")
    assert requests(after, *args) == requests(before, *args) + 1


def test_gauges_follow_the_scheduler(server: Server) -> None:
    samples = scrape(server)
    assert value(samples, "hearth_scheduler_up") == 1
    assert value(samples, "hearth_slots_total", model="tiny") == 2  # --parallel 2
    assert value(samples, "hearth_model_loaded", model="tiny") == 1
    size = (server.models_dir / "tiny.gguf").stat().st_size
    assert value(samples, "hearth_model_size_bytes", model="tiny") == size
    assert value(samples, "hearth_worker_starts_total", model="tiny") == 1
    assert value(samples, "hearth_worker_crashes_total", model="tiny") == 0
    assert value(samples, "hearth_worker_restarts_total", model="tiny") == 0
    # this CPU build of llama.cpp runs it on the CPU: no layer on a GPU
    assert value(samples, "hearth_model_gpu_layers", model="tiny") == 0
    assert value(samples, "hearth_model_layers", model="tiny") == tiny_model.N_LAYER
    assert ("hearth_queue_depth", frozenset({("key", "key1")})) in samples
    wait_for(lambda: value(scrape(server), "hearth_slots_busy", model="tiny") == 0)
    # one series per worker process: the model's one local worker, on this machine
    (worker,) = [dict(labels) for name, labels in samples if name == "hearth_worker_up"]
    assert worker["model"] == "tiny" and worker["place"] == "local"
    assert worker["host"] == socket.gethostname() and worker["worker"].startswith("tiny-")
    assert value(samples, "hearth_worker_up", **worker) == 1
    assert value(samples, "hearth_worker_slots", **worker) == 2


def test_errors_count_with_their_status(server: Server) -> None:
    before = scrape(server)
    assert server.chat({**CHAT, "model": "no-such-model"}).status == 404
    assert server.request("GET", "/v1/no/such/path", headers={}).status == 404
    assert server.chat(CHAT, headers={"Content-Type": "application/json"}).status == 401
    assert server.chat({**CHAT, "temperature": 9}).status == 400
    after = scrape(server)
    for args in (("chat.completions", "-", "404", "key1"),  # unknown model: no model label
                 ("other", "-", "404", "-"),
                 ("chat.completions", "-", "401", "-"),
                 ("chat.completions", "-", "400", "key1")):
        assert requests(after, *args) == requests(before, *args) + 1, args
    labels = {dict(k[1]).get("model") for k in after if k[0] == "hearth_requests_total"}
    assert "no-such-model" not in labels


def test_a_client_that_leaves_counts_as_499(server: Server) -> None:
    """A stream closed by the client before its end is counted (and logged) as 499."""
    body = {**CHAT, "max_tokens": 200, "stream": True}
    args = ("chat.completions", "tiny", "499", "key1")
    before = scrape(server)

    def counted() -> bool:
        return requests(scrape(server), *args) == requests(before, *args) + 1

    for _ in range(5):  # the request must still be generating when the client leaves
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                     headers=server.headers())
        resp = conn.getresponse()
        assert resp.status == 200
        resp.readline()  # the role chunk: the request has started
        conn.close()
        try:
            wait_for(counted, timeout=2)
            return
        except AssertionError:
            continue  # it finished first; try again
    raise AssertionError("no request was counted as 499")


def test_hearth_status_shows_models_and_slots(server: Server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["XDG_CONFIG_HOME"] = str(server.home / "config")
    run = subprocess.run(
        [sys.executable, "-m", "hearth.tools.cli", "status", "--url", server.base_url,
         "--api-key", API_KEY], capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert f"http://127.0.0.1:{server.port}" in out
    row = next(line for line in out.splitlines() if line.startswith("tiny "))
    assert row.split()[1:4] == ["yes", "cpu", "0/2"]  # loaded, on the CPU (this build)
    assert "tokens/s" in out
    assert "key1" in out
    worker = next(line for line in out.splitlines() if line.startswith("tiny-"))
    assert worker.split()[1:5] == ["tiny", "local", socket.gethostname(), "ready"]

    run = subprocess.run(
        [sys.executable, "-m", "hearth.tools.cli", "status", "--url", server.base_url],
        capture_output=True, text=True, env=env, timeout=60)
    assert run.returncode == 1
    assert "--api-key" in run.stdout


# ---- a server of our own: --metrics-public, and a worker that dies ----------------------


@pytest.fixture(scope="module")
def public_server(tiny_models_dir: Path,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home"),
                 args=(*TINY_ARGS, "--metrics-public"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


def test_metrics_public_needs_no_key(public_server: Server) -> None:
    samples = scrape(public_server, key=None)
    assert value(samples, "hearth_scheduler_up") == 1
    assert public_server.request("GET", "/metrics", headers={"Host": "evil.example"}).status \
        == 403
    # the rest of the API still needs the key
    assert public_server.request("GET", "/v1/models", headers={}).status == 401


def test_a_killed_worker_counts_as_a_crash(public_server: Server) -> None:
    srv = public_server
    assert srv.chat(CHAT).status == 200
    before = scrape(srv, key=None)
    pids = worker_pids(srv)
    assert len(pids) == 1, pids
    os.kill(pids[0], signal.SIGKILL)

    def crashed() -> bool:
        return value(scrape(srv, key=None), "hearth_worker_crashes_total", model="tiny") == \
            value(before, "hearth_worker_crashes_total", model="tiny") + 1

    wait_for(crashed)
    deadline = time.monotonic() + 60
    while (r := srv.chat(CHAT)).status != 200:  # a new worker serves again
        assert r.status in (500, 502, 503), r.body
        assert time.monotonic() < deadline, r.body
        time.sleep(0.2)
    # the scheduler's status travels beside the answer (another connection)
    wait_for(lambda: value(scrape(srv, key=None), "hearth_model_loaded", model="tiny") == 1)
    after = scrape(srv, key=None)
    starts = "hearth_worker_starts_total"
    assert value(after, starts, model="tiny") == value(before, starts, model="tiny") + 1
    assert value(after, "hearth_worker_restarts_total", model="tiny") == \
        value(before, "hearth_worker_restarts_total", model="tiny") + 1
    assert value(after, "hearth_worker_crashes_total", model="tiny") == \
        value(before, "hearth_worker_crashes_total", model="tiny") + 1
    assert value(after, "hearth_model_loaded", model="tiny") == 1
    args = ("chat.completions", "tiny", "200", "key1")
    assert requests(after, *args) >= requests(before, *args) + 1
