"""N-gram speculative decoding on a real server (the tiny model): greedy output is the same
with drafting on and off (requests one at a time), drafts are proposed and accepted (/metrics),
stop strings and max_tokens end a stream exactly where they would without drafts, and a client
that leaves while its slot drafts frees the slot."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Server, wait_until
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

# as conftest's, with speculative decoding on for the model
SPEC_ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1", "--speculative",
             "--draft-max", "6", "--draft-ngram", "2")

# prompts that repeat themselves, so the n-gram lookup finds drafts
PROMPTS = [
    "one two three four five six seven eight. one two three four five six seven eight. one two",
    "def f(x):\n    return x + 1\n\ndef f(x):\n    return x + 1\n\ndef f(x):\n",
    "the cat sat on the mat and the cat sat on the mat and the cat sat on the",
]
MAX = 48


@pytest.fixture(scope="module")
def spec_server(tiny_models_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home"), args=SPEC_ARGS)
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


def drafts(srv: Server) -> tuple[float, float]:
    """(proposed, accepted) draft tokens so far, from /metrics."""
    r = srv.request("GET", "/metrics", headers=srv.headers())
    assert r.status == 200, r.body
    got = {"proposed": 0.0, "accepted": 0.0}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            if s.name == "hearth_draft_tokens_total" and s.labels.get("model") == "tiny":
                got[s.labels["outcome"]] = s.value
    return got["proposed"], got["accepted"]


def complete(srv: Server, prompt: str | list[int], **extra: Any) -> dict[str, Any]:
    body = {"model": "tiny", "prompt": prompt, "max_tokens": MAX, "temperature": 0, **extra}
    r = srv.request("POST", "/v1/completions", body)
    assert r.status == 200, r.body
    answer: dict[str, Any] = r.json()
    return answer


def settle(srv: Server, before: tuple[float, float]) -> tuple[float, float]:
    """The draft counters once the worker's report after a request has reached the api."""
    deadline = time.monotonic() + 10
    now = drafts(srv)
    while now == before and time.monotonic() < deadline:
        time.sleep(0.1)
        now = drafts(srv)
    return now


def test_greedy_output_is_the_same_with_drafts_on_and_off(spec_server: Server) -> None:
    before = drafts(spec_server)
    for prompt in PROMPTS:
        off = complete(spec_server, prompt, speculative_decoding=False)
        on = complete(spec_server, prompt)  # the model's setting: on
        again = complete(spec_server, prompt, speculative_decoding=False)
        assert on["choices"][0]["text"] == off["choices"][0]["text"] == \
            again["choices"][0]["text"], prompt
        assert on["usage"]["completion_tokens"] == off["usage"]["completion_tokens"]
        assert on["choices"][0]["finish_reason"] == off["choices"][0]["finish_reason"]
    proposed, accepted = settle(spec_server, before)
    assert proposed > before[0]
    assert accepted > before[1]  # drafts were not only proposed but kept


def test_a_request_can_turn_drafting_off(spec_server: Server) -> None:
    complete(spec_server, PROMPTS[0], speculative_decoding=False)  # any report is in
    time.sleep(1.2)
    before = drafts(spec_server)
    complete(spec_server, PROMPTS[0], speculative_decoding=False)
    time.sleep(1.2)
    assert drafts(spec_server) == before


def test_speculative_decoding_must_be_a_boolean(spec_server: Server) -> None:
    body = {"model": "tiny", "prompt": "x", "max_tokens": 2, "speculative_decoding": "yes"}
    r = spec_server.request("POST", "/v1/completions", body)
    assert r.status == 400
    assert r.json()["error"]["param"] == "speculative_decoding"


def test_a_stop_string_ends_the_stream_exactly_where_it_would_without_drafts(
        spec_server: Server) -> None:
    prompt = PROMPTS[2]
    full = complete(spec_server, prompt, speculative_decoding=False)["choices"][0]["text"]
    stop = full[len(full) * 2 // 3:][:4]  # a stop string from late in the output
    assert stop.strip(), full
    payloads = spec_server.stream_payloads(
        "/v1/completions", {"model": "tiny", "prompt": prompt, "max_tokens": MAX,
                            "temperature": 0, "stop": [stop]})
    assert payloads[-1] == "[DONE]"
    chunks = [p for p in payloads[:-1] if p["choices"]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == full[:full.index(stop)]
    finishing = [c for c in chunks if c["choices"][0]["finish_reason"] is not None]
    assert len(finishing) == 1 and finishing[0]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1] is finishing[0]  # nothing after it


def looping(srv: Server) -> tuple[list[int], dict[str, float], str]:
    """A prompt and logit_bias that make the tiny model's greedy output one token, again and
    again (a request that drafts — and has its whole draft accepted — at every step), and that
    token's text."""
    ids = srv.request("POST", "/v1/tokenize", {"model": "tiny", "content": " ship",
                                               "add_special": False}).json()["tokens"]
    prompt, bias = [ids[-1]] * 8, {str(ids[-1]): 100.0}
    one = complete(srv, prompt, max_tokens=1, logit_bias=bias, speculative_decoding=False)
    return prompt, bias, one["choices"][0]["text"]


def test_a_stop_string_inside_an_accepted_draft_ends_the_stream_there(
        spec_server: Server) -> None:
    prompt, bias, piece = looping(spec_server)
    before = drafts(spec_server)
    payloads = spec_server.stream_payloads(
        "/v1/completions", {"model": "tiny", "prompt": prompt, "max_tokens": MAX,
                            "temperature": 0, "logit_bias": bias, "stop": [piece * 4],
                            "stream_options": {"include_usage": True}})
    chunks = [p for p in payloads[:-1] if p["choices"]]
    # every token so far is part of the stop string: nothing is streamed, and nothing after
    assert "".join(c["choices"][0]["text"] for c in chunks) == ""
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    usage = payloads[-2]["usage"]
    assert usage["completion_tokens"] <= 4
    _, accepted = settle(spec_server, before)
    # the step that met the stop string had a whole draft (6) accepted, past the stop
    assert accepted - before[1] >= 6 > usage["completion_tokens"]


def test_max_tokens_is_never_exceeded_by_an_accepted_draft(spec_server: Server) -> None:
    prompt, bias, piece = looping(spec_server)
    before = drafts(spec_server)
    for limit in range(1, 12):
        got = complete(spec_server, prompt, max_tokens=limit, logit_bias=bias)
        assert got["usage"]["completion_tokens"] == limit
        assert got["choices"][0]["text"] == piece * limit
        assert got["choices"][0]["finish_reason"] == "length"
    assert settle(spec_server, before)[1] > before[1]


def test_max_tokens_with_drafts_that_fail(spec_server: Server) -> None:
    prompt = PROMPTS[0]
    full = complete(spec_server, prompt, speculative_decoding=False)
    tokens = full["usage"]["completion_tokens"]
    for limit in (1, 2, 3, 5, 8, 13, 21):
        got = complete(spec_server, prompt, max_tokens=limit)
        assert got["usage"]["completion_tokens"] == min(limit, tokens)
        assert full["choices"][0]["text"].startswith(got["choices"][0]["text"])


def test_cancel_while_drafting_frees_the_slot(spec_server: Server) -> None:
    prompt, bias, piece = looping(spec_server)
    before = drafts(spec_server)
    conn = http.client.HTTPConnection("127.0.0.1", spec_server.port, timeout=60)
    body = {"model": "tiny", "prompt": prompt, "max_tokens": 240, "temperature": 0,
            "logit_bias": bias, "stream": True}
    conn.request("POST", "/v1/completions", body=json.dumps(body).encode(),
                 headers=spec_server.headers())
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(4):  # a few chunks in: the slot is drafting at every step
        assert resp.readline()
    assert spec_server.busy_slots() == 1
    conn.close()  # the client goes away mid-stream
    wait_until(lambda: spec_server.busy_slots() == 0, lambda: spec_server.health().json())
    # the slot serves the next requests, and exactly
    off = complete(spec_server, PROMPTS[1], speculative_decoding=False)
    on = complete(spec_server, PROMPTS[1])
    assert on["choices"][0]["text"] == off["choices"][0]["text"]
    # (a worker reports its counters while it generates: the cancelled request's are in now)
    assert settle(spec_server, before)[0] > before[0] + 8
