"""The fast content-chunk path produces exactly the JSON of a full chunk object."""

from __future__ import annotations

import json

import msgspec
import pytest
from hearth.api import openai_types, sse
from hearth.api.logprobs import chat_entries
from hearth.scheduler.messages import TokenLogprob, TopLogprob


@pytest.mark.parametrize("text", ["hi", "", " spaced ", 'quo"te\\', "é😀\n\t\x00\u2028", "}]}"])
def test_content_chunk_equals_full_encoding(text: str) -> None:
    enc = sse.ChunkEncoder("chatcmpl-1", 1700000000, 'model "x"')
    fast = enc.content(text)
    full = sse.event(openai_types.ChatCompletionChunk(
        id="chatcmpl-1", created=1700000000, model='model "x"',
        choices=[openai_types.ChunkChoice(0, openai_types.ChunkDelta(content=text))]))
    assert fast == full
    assert fast.startswith(b"data: ") and fast.endswith(b"\n\n")
    assert json.loads(fast[6:])["choices"][0]["delta"]["content"] == text


def test_role_finish_and_usage_chunks() -> None:
    enc = sse.ChunkEncoder("chatcmpl-2", 1, "m")
    role = msgspec.json.decode(enc.role()[6:])
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    fin = msgspec.json.decode(enc.finish("length")[6:])
    assert fin["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length",
                                 "logprobs": None}
    usage = msgspec.json.decode(enc.usage(openai_types.Usage(3, 4, 7))[6:])
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 7


def test_content_chunk_with_logprobs_carries_its_tokens() -> None:
    enc = sse.ChunkEncoder("chatcmpl-3", 1, "m")
    part = b"\xe2\x80"  # two bytes of a three-byte character
    entries = chat_entries([TokenLogprob(7, part, -0.25, [TopLogprob(7, part, -0.25)])])
    chunk = json.loads(enc.content_logprobs("", entries)[6:])
    (choice,) = chunk["choices"]
    assert choice["delta"] == {"content": ""}
    assert choice["logprobs"] == {"content": [{
        "token": "bytes:\\xe2\\x80", "logprob": -0.25, "bytes": [0xe2, 0x80],
        "top_logprobs": [{"token": "bytes:\\xe2\\x80", "logprob": -0.25, "bytes": [0xe2, 0x80]}]}],
        "refusal": None}
