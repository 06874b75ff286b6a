"""Embeddings through real processes on the tiny model (no pooling in its GGUF: mean)."""

from __future__ import annotations

import base64
import json
import math
import struct
import threading

import pytest
from harness import Server

pytestmark = pytest.mark.integration

DIM = 64  # the tiny model's embedding length


def embed(server: Server, inp: object, **extra: object) -> tuple[int, dict[str, object]]:
    r = server.request("POST", "/v1/embeddings", {"model": "tiny", "input": inp, **extra})
    return r.status, r.json()


def test_vectors_are_unit_length_and_in_order(server: Server) -> None:
    status, body = embed(server, ["alpha", "beta gamma", "delta"])
    assert status == 200, body
    data = body["data"]
    assert isinstance(data, list) and [d["index"] for d in data] == [0, 1, 2]
    for d in data:
        assert d["object"] == "embedding" and len(d["embedding"]) == DIM
        assert abs(math.sqrt(sum(x * x for x in d["embedding"])) - 1) < 1e-5
    assert body["object"] == "list" and body["model"] == "tiny"


def test_base64_is_little_endian_float32(server: Server) -> None:
    _, plain = embed(server, "same text")
    _, packed = embed(server, "same text", encoding_format="base64")
    floats = plain["data"][0]["embedding"]  # type: ignore[index]
    raw = base64.b64decode(packed["data"][0]["embedding"])  # type: ignore[index]
    assert list(struct.unpack(f"<{DIM}f", raw)) == pytest.approx(floats, abs=1e-7)


def test_bad_encoding_format_is_400(server: Server) -> None:
    status, body = embed(server, "x", encoding_format="int8")
    assert status == 400 and body["error"]["param"] == "encoding_format"  # type: ignore[index]


def test_dimensions_other_than_the_models_width_are_400(server: Server) -> None:
    status, body = embed(server, "x", dimensions=DIM)
    assert status == 200 and len(body["data"][0]["embedding"]) == DIM  # type: ignore[index]
    status, body = embed(server, "x", dimensions=DIM // 2)
    assert status == 400
    assert body["error"] == {  # the scheduler knows the width (the GGUF's embedding_length)
        "message": "'tiny' does not support shortening its embeddings: its vectors have "
                   f"{DIM} dimensions.",
        "type": "invalid_request_error", "param": "dimensions", "code": None}
    # wider than any job message can carry: refused by validation, not a 500 (found by fuzzing)
    status, body = embed(server, "x", dimensions=112885005652653719552)
    assert status == 400 and body["error"]["param"] == "dimensions"  # type: ignore[index]


def test_unknown_model_is_404(server: Server) -> None:
    status, body = embed(server, "x", model="nope")
    assert status == 404
    error = body["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"  # type: ignore[index]


def test_input_longer_than_context_is_400(server: Server) -> None:
    status, body = embed(server, "word " * 400)  # the server's --ctx-size is 256
    assert status == 400
    assert body["error"]["param"] == "input"  # type: ignore[index]
    assert "256" in body["error"]["message"]  # type: ignore[index]


def test_many_concurrent_requests_beside_chat_streams(server: Server) -> None:
    results: list[int] = []
    chats: list[tuple[int, str]] = []

    def embedder(i: int) -> None:
        status, body = embed(server, [f"text {i} {j}" for j in range(40)])
        assert status == 200, body
        results.append(len(body["data"]))  # type: ignore[arg-type]

    def chatter() -> None:
        chunks = [json.loads(p) for p in server.stream({
            "model": "tiny", "max_tokens": 20, "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}]}) if p != b"[DONE]"]
        chats.append((chunks[-1]["usage"]["completion_tokens"],
                      chunks[-2]["choices"][0]["finish_reason"]))

    threads = [threading.Thread(target=embedder, args=(i,)) for i in range(6)]
    threads += [threading.Thread(target=chatter) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == [40] * 6
    assert chats == [(20, "length")] * 2
