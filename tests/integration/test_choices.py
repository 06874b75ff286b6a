"""``n`` > 1 on chat and completions through real processes on the tiny model: a request of n
choices is one job in n slots, its prompt evaluated once, each choice with its own seed.

Requests run one at a time (DESIGN's determinism note: identical output is only guaranteed for
identical batch composition)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Response, Server, wait_until
from hearth.tools.cli.tiny_model import IM_END_ID

pytestmark = pytest.mark.integration

SLOTS = 4
EOS_ID = 2  # the tiny vocabulary's </s>
# every generated token carries text, and none ends the answer: n choices of max_tokens each
# generate exactly n * max_tokens tokens, one content chunk per token
FULL_LENGTH = {str(t): -100 for t in [EOS_ID, IM_END_ID, *range(3, 259)]}
MESSAGES = [{"role": "user", "content": "Tell me a story about a fox."}]


@pytest.fixture(scope="module")
def srv(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home"),
               args=("--parallel", str(SLOTS), "--ctx-size", "256", "--threads", "1"))
    s.start()
    yield s
    assert s.stop() == 0, "".join(s.stderr)
    assert s.orphans() == []


def chat(srv: Server, **body: Any) -> Response:
    return srv.chat({"model": "tiny", "messages": MESSAGES, **body})


def complete(srv: Server, **body: Any) -> Response:
    return srv.request("POST", "/v1/completions", {"model": "tiny", **body})


def sse(srv: Server, path: str, body: dict[str, Any]) -> list[Any]:
    return srv.stream_payloads(path, {"model": "tiny", **body})


def texts(data: dict[str, Any]) -> list[str]:
    return [c["message"]["content"] for c in sorted(data["choices"], key=lambda c: c["index"])]


def test_n_choices_with_a_seed_are_reproducible_choice_by_choice(srv: Server) -> None:
    body = {"n": 4, "seed": 7, "temperature": 1.0, "max_tokens": 8, "logit_bias": FULL_LENGTH}
    first = chat(srv, **body)
    assert first.status == 200, first.body
    data = first.json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    assert all(c["finish_reason"] == "length" for c in data["choices"])
    assert len(set(texts(data))) > 1  # each choice samples with its own seed (7, 8, 9, 10)
    again = chat(srv, **body)
    assert again.status == 200, again.body
    assert texts(again.json()) == texts(data)
    other = chat(srv, **{**body, "seed": 8})  # choice i of seed 7 is seeded 7 + i
    assert texts(other.json()) != texts(data)


def test_usage_counts_the_prompt_once_and_every_choice(srv: Server) -> None:
    one = chat(srv, max_tokens=5, temperature=0, logit_bias=FULL_LENGTH).json()["usage"]
    three = chat(srv, n=3, max_tokens=5, temperature=0, logit_bias=FULL_LENGTH).json()["usage"]
    assert three["prompt_tokens"] == one["prompt_tokens"]
    assert three["completion_tokens"] == 15
    assert three["total_tokens"] == one["prompt_tokens"] + 15


def test_greedy_choices_are_the_same_answer(srv: Server) -> None:
    data = chat(srv, n=3, max_tokens=6, temperature=0).json()
    assert len(set(texts(data))) == 1


def test_a_streamed_chat_of_n_choices_carries_each_chunk_s_index(srv: Server) -> None:
    chunks = sse(srv, "/v1/chat/completions", {
        "messages": MESSAGES, "n": 3, "seed": 1, "temperature": 1.0, "max_tokens": 6,
        "logit_bias": FULL_LENGTH, "stream_options": {"include_usage": True}})
    assert chunks[-1] == "[DONE]"
    usage = chunks[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 18
    by_index: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks[:-2]:
        (choice,) = chunk["choices"]
        by_index.setdefault(choice["index"], []).append(choice)
    assert sorted(by_index) == [0, 1, 2]
    for choices in by_index.values():
        assert choices[0]["delta"] == {"role": "assistant", "content": ""}
        assert choices[-1]["finish_reason"] == "length"
        pieces = [c["delta"]["content"] for c in choices[1:-1]]
        assert len(pieces) == 6 and all(pieces)
    whole = chat(srv, n=3, seed=1, temperature=1.0, max_tokens=6, logit_bias=FULL_LENGTH)
    assert ["".join(c["delta"].get("content") or "" for c in by_index[i]) for i in range(3)] \
        == texts(whole.json())


def test_completions_of_several_prompts_and_n_choices_are_in_openai_s_order(srv: Server) -> None:
    body = {"prompt": ["one two", "three four five"], "n": 2, "max_tokens": 4, "seed": 3,
            "temperature": 1.0, "logit_bias": FULL_LENGTH, "echo": True}
    r = complete(srv, **body)
    assert r.status == 200, r.body
    data = r.json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2, 3]
    # choice prompt_index * n + i: the first two echo the first prompt
    assert [c["text"].split(" ")[0] for c in data["choices"]] == ["one", "one", "three", "three"]
    singles = [complete(srv, prompt=p, max_tokens=1).json()["usage"]["prompt_tokens"]
               for p in body["prompt"]]
    assert data["usage"]["prompt_tokens"] == sum(singles)
    assert data["usage"]["completion_tokens"] == 16
    chunks = sse(srv, "/v1/completions", {**body, "stream_options": {"include_usage": True}})
    streamed: dict[int, str] = {}
    for chunk in chunks[:-2]:
        (choice,) = chunk["choices"]
        streamed[choice["index"]] = streamed.get(choice["index"], "") + choice["text"]
    assert streamed == {c["index"]: c["text"] for c in data["choices"]}
    got = chunks[-2]["usage"]
    assert [got[k] for k in ("prompt_tokens", "completion_tokens")] == \
        [data["usage"][k] for k in ("prompt_tokens", "completion_tokens")]


@pytest.mark.parametrize("streamed", [True, False])
def test_a_disconnect_cancels_every_choice(srv: Server, streamed: bool) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", headers=srv.headers(), body=json.dumps(
        {"model": "tiny", "messages": MESSAGES, "n": SLOTS, "max_tokens": 100000,
         "logit_bias": FULL_LENGTH, "stream": streamed}).encode())
    if streamed:
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.readline()
    wait_until(lambda: srv.busy_slots() == SLOTS, srv.health)
    conn.sock.close()  # type: ignore[union-attr]
    conn.close()
    wait_until(lambda: srv.busy_slots() == 0, srv.health)


def test_a_request_of_n_choices_waits_for_n_free_slots(srv: Server) -> None:
    """While one slot is taken, a request of 4 choices waits; it runs once all are free."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", headers=srv.headers(), body=json.dumps(
        {"model": "tiny", "messages": MESSAGES, "max_tokens": 100000, "logit_bias": FULL_LENGTH,
         "stream": True}).encode())
    resp = conn.getresponse()
    assert resp.status == 200 and resp.readline()
    wait_until(lambda: srv.busy_slots() == 1, srv.health)
    waiting = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    waiting.request("POST", "/v1/chat/completions", headers=srv.headers(), body=json.dumps(
        {"model": "tiny", "messages": MESSAGES, "n": SLOTS, "max_tokens": 3}).encode())
    wait_until(lambda: srv.health().json()["queued"] == 1, srv.health)
    assert srv.busy_slots() == 1
    conn.sock.close()  # type: ignore[union-attr]
    conn.close()
    answer = waiting.getresponse()
    assert answer.status == 200
    assert len(json.loads(answer.read())["choices"]) == SLOTS
    waiting.close()
    wait_until(lambda: srv.busy_slots() == 0, srv.health)


def test_each_choice_has_its_own_grammar_and_parser(srv: Server) -> None:
    r = chat(srv, n=2, seed=5, temperature=1.0, max_tokens=40,
             response_format={"type": "json_object"})
    assert r.status == 200, r.body
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    for c in choices:
        if c["finish_reason"] == "stop":
            assert isinstance(json.loads(c["message"]["content"]), dict)
        else:
            assert c["message"]["content"].lstrip().startswith("{")


@pytest.mark.parametrize("body,param,words", [
    ({"n": SLOTS + 1}, "n", "--parallel"),
    ({"n": 9}, "n", "--max-n"),
    ({"n": 0}, "n", ""),
    ({"n": "two"}, "n", ""),
])
def test_bad_n_is_a_400_naming_it(srv: Server, body: dict[str, Any], param: str,
                                  words: str) -> None:
    for r in (chat(srv, **body), complete(srv, prompt="x", **body)):
        assert r.status == 400, r.body
        err = r.json()["error"]
        assert err["param"] == param and words in err["message"]
    assert srv.busy_slots() == 0


@pytest.mark.parametrize(("body", "words"), [
    ({"n": 3, "best_of": 2}, "at least"),
    ({"best_of": 2, "stream": True}, "streamed"),
    ({"best_of": SLOTS + 1}, "--parallel"),
    ({"best_of": 9}, "--max-n")])
def test_best_of_the_server_cannot_give_is_a_400(srv: Server, body: dict[str, Any],
                                                 words: str) -> None:
    r = complete(srv, prompt="x", **body)
    assert r.status == 400, r.body
    err = r.json()["error"]
    assert err["param"] == "best_of" and words in err["message"], err
    assert srv.busy_slots() == 0


def mean(choice: dict[str, Any]) -> float:
    values = choice["logprobs"]["token_logprobs"]
    return sum(values) / len(values)


def test_best_of_returns_the_n_choices_with_the_highest_mean_logprob(srv: Server) -> None:
    """best_of 4, n 2 with a seed generates what n 4 with that seed generates (choice i is
    seeded seed + i; requests one at a time), and returns the two of those with the highest
    mean token log-probability, best first; usage counts all four."""
    body = {"prompt": "The river", "max_tokens": 6, "temperature": 1.0, "seed": 11,
            "logprobs": 0}
    every = complete(srv, n=SLOTS, **body).json()
    assert len(every["choices"]) == SLOTS
    ranked = sorted(every["choices"], key=lambda c: (-mean(c), c["index"]))
    best = complete(srv, n=2, best_of=SLOTS, **body).json()
    assert [c["index"] for c in best["choices"]] == [0, 1]
    assert [c["text"] for c in best["choices"]] == [c["text"] for c in ranked[:2]]
    assert [mean(c) for c in best["choices"]] == [mean(c) for c in ranked[:2]]
    counts = ("prompt_tokens", "completion_tokens", "total_tokens")  # (the cache differs)
    assert [best["usage"][k] for k in counts] == [every["usage"][k] for k in counts]
    # without logprobs asked, none are shown (they were computed to rank the choices)
    plain = complete(srv, n=2, best_of=SLOTS, **{**body, "logprobs": None}).json()
    assert [c["text"] for c in plain["choices"]] == [c["text"] for c in ranked[:2]]
    assert all(c["logprobs"] is None for c in plain["choices"])


def test_best_of_equal_to_n_passes(srv: Server) -> None:
    r = complete(srv, prompt="x", n=2, best_of=2, max_tokens=2)
    assert r.status == 200, r.body
    assert len(r.json()["choices"]) == 2
