"""The official openai SDK's embeddings calls against hearth serving the default model."""

from __future__ import annotations

import base64
import math
import struct
import threading

import openai
import pytest
from harness import Server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID as MODEL
from test_openai_sdk import client

pytestmark = pytest.mark.e2e

DIM = 640  # gemma-3-270m's embedding length


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_one_string(gemma_server: Server) -> None:
    with client(gemma_server) as c:
        resp = c.embeddings.create(model=MODEL, input="A hearth keeps a home warm.")
    assert resp.object == "list" and resp.model == MODEL
    (item,) = resp.data
    assert item.object == "embedding" and item.index == 0
    assert len(item.embedding) == DIM
    assert abs(math.sqrt(sum(x * x for x in item.embedding)) - 1.0) < 1e-4
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens


def test_batch_in_order_and_equal_to_single(gemma_server: Server) -> None:
    texts = ["the cat sat on the mat", "stock markets fell sharply today",
             "a recipe for bread", "quantum computers use qubits"]
    with client(gemma_server) as c:
        batch = c.embeddings.create(model=MODEL, input=texts)
        singles = [c.embeddings.create(model=MODEL, input=t).data[0].embedding
                   for t in texts]
    assert [d.index for d in batch.data] == [0, 1, 2, 3]
    for got, alone in zip(batch.data, singles, strict=True):
        assert cosine(got.embedding, alone) > 0.999
    # different texts really give different vectors
    assert cosine(batch.data[0].embedding, batch.data[1].embedding) < 0.999


def test_token_id_inputs(gemma_server: Server) -> None:
    with client(gemma_server) as c:
        flat = c.embeddings.create(model=MODEL, input=[2, 818, 5279, 529])
        nested = c.embeddings.create(model=MODEL,
                                     input=[[2, 818, 5279, 529], [2, 9259]])
    assert len(flat.data) == 1 and flat.usage.prompt_tokens == 4
    assert len(nested.data) == 2 and nested.usage.prompt_tokens == 6
    assert cosine(flat.data[0].embedding, nested.data[0].embedding) > 0.999


def test_base64_decodes_to_the_same_floats(gemma_server: Server) -> None:
    text = "base64 or float, the same vector"
    with client(gemma_server) as c:
        floats = c.embeddings.create(model=MODEL, input=text,
                                     encoding_format="float").data[0].embedding
        raw = c.embeddings.with_raw_response.create(model=MODEL, input=text,
                                                    encoding_format="base64")
    b64 = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(b64, str)
    decoded = list(struct.unpack(f"<{DIM}f", base64.b64decode(b64)))
    assert decoded == pytest.approx(floats, abs=1e-6)


def test_dimensions(gemma_server: Server) -> None:
    with client(gemma_server) as c:
        ok = c.embeddings.create(model=MODEL, input="x", dimensions=DIM)
        assert len(ok.data[0].embedding) == DIM
        with pytest.raises(openai.BadRequestError) as info:
            c.embeddings.create(model=MODEL, input="x", dimensions=64)
    assert info.value.param == "dimensions"


@pytest.mark.parametrize("bad", [
    "", [], [""], ["ok", ""], [[]], [2, 10**7], [[2, 262144]],
    ["word"] * 2049, "word " * 2000,
], ids=["empty-string", "empty-list", "empty-item", "one-empty-item", "empty-token-list",
        "token-out-of-vocab", "nested-token-out-of-vocab", "too-many-inputs", "too-long"])
def test_bad_input_is_400_and_the_worker_lives(gemma_server: Server, bad: object) -> None:
    with client(gemma_server) as c:
        with pytest.raises(openai.BadRequestError) as info:
            c.embeddings.create(model=MODEL, input=bad)  # type: ignore[arg-type]
        assert info.value.param == "input"
        assert c.embeddings.create(model=MODEL, input="still alive").data


def test_unknown_model_is_404(gemma_server: Server) -> None:
    with client(gemma_server) as c:
        with pytest.raises(openai.NotFoundError) as info:
            c.embeddings.create(model="text-embedding-nope", input="x")
    assert info.value.code == "model_not_found"


def test_chat_stream_while_embedding(gemma_server: Server) -> None:
    done: dict[str, object] = {}

    def chat() -> None:
        with client(gemma_server) as c:
            stream = c.chat.completions.create(
                model=MODEL, max_tokens=48, temperature=0, stream=True,
                messages=[{"role": "user", "content": "Tell me about hearths."}],
                stream_options={"include_usage": True})
            chunks = list(stream)
        done["finish"] = [ch.choices[0].finish_reason for ch in chunks
                          if ch.choices and ch.choices[0].finish_reason]
        done["usage"] = chunks[-1].usage

    t = threading.Thread(target=chat)
    t.start()
    with client(gemma_server) as c:
        for _ in range(5):
            resp = c.embeddings.create(model=MODEL,
                                       input=[f"text number {i}" for i in range(32)])
            assert len(resp.data) == 32
    t.join(120)
    assert done["finish"] in (["stop"], ["length"])
    assert done["usage"] is not None
