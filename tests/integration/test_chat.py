"""Chat completions through real processes (api, scheduler, worker) on the tiny model."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable

import pytest
from harness import Server

pytestmark = pytest.mark.integration


def _chat(max_tokens: int = 16, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"model": "tiny", "max_tokens": max_tokens,
                               "messages": [{"role": "user", "content": "Hello there"}]}
    body.update(extra)
    return body


def test_non_streaming_completion(server: Server) -> None:
    r = server.chat(_chat(12))
    assert r.status == 200, r.body
    data = r.json()
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert data["model"] == "tiny"
    assert isinstance(data["created"], int)
    (choice,) = data["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str)
    assert choice["finish_reason"] == "length"
    usage = data["usage"]
    assert usage["completion_tokens"] == 12
    assert usage["prompt_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12


def test_max_completion_tokens_wins_over_max_tokens(server: Server) -> None:
    r = server.chat(_chat(30, max_completion_tokens=5))
    assert r.status == 200, r.body
    assert r.json()["usage"]["completion_tokens"] == 5


def test_stream_chunks_follow_openai_shape(server: Server) -> None:
    payloads = list(server.stream(_chat(10, stream=True,
                                        stream_options={"include_usage": True})))
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    usage_chunk = chunks[-1]
    assert usage_chunk["choices"] == []
    final = chunks[-2]
    assert final["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-2])
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-1])
    assert usage_chunk["usage"]["completion_tokens"] == 10
    assert usage_chunk["usage"]["total_tokens"] == (usage_chunk["usage"]["prompt_tokens"] + 10)
    assert isinstance(text, str)


def test_stream_without_usage_has_no_usage_chunk(server: Server) -> None:
    payloads = list(server.stream(_chat(4, stream=True)))
    assert payloads[-1] == b"[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"] for c in chunks)


def test_stream_and_non_stream_agree_on_greedy_output(server: Server) -> None:
    body = _chat(16, temperature=0)
    server.chat(body)  # warm the prefix cache so both runs below see the same cache state
    plain = server.chat(body).json()["choices"][0]["message"]["content"]
    chunks = [json.loads(p) for p in server.stream({**body, "stream": True})
              if p != b"[DONE]"]
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert streamed == plain


def test_same_seed_same_output(server: Server) -> None:
    body = _chat(16, temperature=1.0, seed=1234)
    server.chat(body)  # warm the cache: the next two see identical cache state
    a = server.chat(body).json()["choices"][0]["message"]["content"]
    b = server.chat(body).json()["choices"][0]["message"]["content"]
    assert a == b


def test_stop_string_ends_generation_and_is_not_returned(server: Server) -> None:
    r = server.chat(_chat(200, stop=["e"], temperature=1.0, seed=7))
    data = r.json()
    assert r.status == 200, r.body
    assert "e" not in data["choices"][0]["message"]["content"]
    assert data["choices"][0]["finish_reason"] == "stop"


def test_content_as_text_parts(server: Server) -> None:
    body = {"model": "tiny", "max_tokens": 3, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "Hi"},
                                     {"type": "text", "text": "there"}]}]}
    r = server.chat(body)
    assert r.status == 200, r.body


def test_prompt_longer_than_context_is_400(server: Server) -> None:
    r = server.chat({"model": "tiny", "max_tokens": 4,
                     "messages": [{"role": "user", "content": "word " * 600}]})
    assert r.status == 400
    err = r.json()["error"]
    assert err["code"] == "context_length_exceeded"
    assert err["param"] == "messages"
    assert err["type"] == "invalid_request_error"


def test_generation_stops_at_the_context_with_length(server: Server) -> None:
    r = server.chat({"model": "tiny", "max_tokens": 1000,
                     "messages": [{"role": "user", "content": "word " * 100}]})
    assert r.status == 200, r.body
    data = r.json()
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["total_tokens"] == 256


def test_stream_error_before_start_is_a_status(server: Server) -> None:
    r = server.chat({"model": "tiny", "stream": True,
                     "messages": [{"role": "user", "content": "word " * 600}]})
    assert r.status == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


def _busy_slots(server: Server) -> int:
    return int(server.health().json()["slots"]["busy"])


def _wait_busy(server: Server, ok: Callable[[int], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok(_busy_slots(server)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ok(_busy_slots(server)), server.health().json()


def test_disconnect_mid_stream_frees_the_slot(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", headers=server.headers(),
                 body=json.dumps(_chat(100000, stream=True)).encode())
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(3):
        assert resp.readline()
    # /health learns of busy slots from the scheduler's status, which may reach the api after
    # the worker's first tokens (another socket, another process): wait for it
    _wait_busy(server, lambda busy: busy >= 1)
    conn.sock.close()  # type: ignore[union-attr]
    conn.close()
    _wait_busy(server, lambda busy: busy == 0)


def test_disconnect_non_streaming_frees_the_slot(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", headers=server.headers(),
                 body=json.dumps(_chat(100000)).encode())
    _wait_busy(server, lambda busy: busy >= 1)
    conn.sock.close()  # type: ignore[union-attr]
    conn.close()
    _wait_busy(server, lambda busy: busy == 0)


def test_concurrent_streams_lose_no_token(server: Server) -> None:
    """8 streams at once over 2 slots: each ends properly and every generated token arrives.
    Byte-fallback tokens are biased away so that every token carries text, making the number
    of content chunks equal to the number of tokens generated."""
    no_bytes = {str(t): -100 for t in range(3, 259)}
    results: dict[int, tuple[int, int, str | None]] = {}

    def one(i: int) -> None:
        chunks = [json.loads(p) for p in server.stream(_chat(
            8 + i, stream=True, temperature=1.0, seed=i, logit_bias=no_bytes,
            stream_options={"include_usage": True})) if p != b"[DONE]"]
        deltas = [c["choices"][0] for c in chunks if c["choices"]]
        pieces = [d["delta"]["content"] for d in deltas if d["delta"].get("content")]
        results[i] = (len(pieces), chunks[-1]["usage"]["completion_tokens"],
                      deltas[-1]["finish_reason"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == list(range(8))
    for i, (pieces, completion, finish) in results.items():
        assert (pieces, completion, finish) == (8 + i, 8 + i, "length")


def test_shared_system_prompt_is_reused_across_slots(server: Server) -> None:
    """While one request with a long system prompt is generating, a second one with the same
    system prompt gets it from that busy slot's cache (a copy) instead of evaluating it."""
    system = "You are a careful assistant who answers in plain words. " * 6
    first = {"model": "tiny", "max_tokens": 100000, "stream": True, "messages": [
        {"role": "system", "content": system}, {"role": "user", "content": "first"}]}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", json.dumps(first).encode(), server.headers())
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(3):
        assert resp.readline()
    try:
        r = server.chat({"model": "tiny", "max_tokens": 4, "messages": [
            {"role": "system", "content": system}, {"role": "user", "content": "second"}]})
        usage = r.json()["usage"]
        assert usage["prompt_tokens_details"]["cached_tokens"] > 120
        assert usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"] < 30
    finally:
        conn.close()
    _wait_busy(server, lambda busy: busy == 0)
