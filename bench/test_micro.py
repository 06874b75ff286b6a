"""Micro-benchmarks of the per-step hot path (pytest-benchmark), each beside a baseline.

    .venv/bin/python -m pytest bench/test_micro.py --benchmark-group-by=group

Not part of the test suite (pytest's testpaths is tests/). Each group holds hearth's code and a
baseline measured in the same run, so the table's relative column is the ratio:
* policy: ``plan_step`` for 16 generating slots + 2 prefilling, vs building the same list of
  tuples by hand (the least any policy could cost);
* events: one step's EventBatch for 16 streams through msgpack (encode + decode), vs the same
  data as plain dicts through the stdlib json module;
* sse: a content chunk through the prefix/suffix fast path, vs encoding the whole chunk object;
* responses: one token's ``response.output_text.delta`` event (the answer parser's piece through
  the Responses event builder, then its ``event:``/``data:`` frame), vs chat's content chunk on
  its fast path (the same token as chat streams it), and one token of Anthropic's Messages
  stream (the builder's ``content_block_delta`` event, framed with its ``event:`` line).
* logprobs: what one token with ``top_logprobs`` 5 costs the api — its chat chunk (entries
  converted and the whole chunk encoded) and its EventBatch round trip for 16 streams — each
  beside the same without logprobs (the fast-path chunk; the plain batch).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hearth.api import openai_types, responses_types, sse
from hearth.api.logprobs import chat_entries
from hearth.api.responses_events import ResponseEvents
from hearth.api.tool_parsers import Text
from hearth.scheduler.messages import Codec, EventBatch, TextDelta, TokenLogprob, TopLogprob
from hearth.scheduler.policy import Phase, SlotView, plan_step

SLOTS = [SlotView(i, Phase.DECODE, admitted_at=i) for i in range(16)] + [
    SlotView(16, Phase.PREFILL, 700, 16), SlotView(17, Phase.PREFILL, 40, 17)]
BATCH = EventBatch([TextDelta(f"chatcmpl-{i:032x}", " word", 1) for i in range(16)])
CODEC = Codec()
ENTRY = TokenLogprob(1234, b" word", -0.25, [TopLogprob(1234 + i, b" word", -0.25 - i)
                                             for i in range(5)])
LP_BATCH = EventBatch([TextDelta(f"chatcmpl-{i:032x}", " word", 1, [ENTRY]) for i in range(16)])


@pytest.mark.benchmark(group="policy")
def test_plan_step(benchmark: Any) -> None:
    work = benchmark(plan_step, SLOTS, 512)
    assert len(work) == 17  # 16 decode tokens, then the oldest prefill fills the budget


@pytest.mark.benchmark(group="policy")
def test_plan_step_baseline_by_hand(benchmark: Any) -> None:
    def by_hand() -> list[tuple[int, int]]:
        return [(s.slot_id, 1) for s in SLOTS if s.phase is Phase.DECODE] + [(16, 496)]

    assert len(benchmark(by_hand)) == 17


@pytest.mark.benchmark(group="events")
def test_event_batch_msgpack(benchmark: Any) -> None:
    def roundtrip() -> EventBatch:
        return CODEC.events.decode(CODEC.encode(BATCH))

    assert benchmark(roundtrip) == BATCH


@pytest.mark.benchmark(group="events")
def test_event_batch_json_dicts_baseline(benchmark: Any) -> None:
    data = {"events": [{"type": "delta", "request_id": e.request_id, "text": e.text,
                        "tokens": e.tokens} for e in BATCH.events]}  # type: ignore[union-attr]

    def roundtrip() -> Any:
        return json.loads(json.dumps(data))

    assert benchmark(roundtrip) == data


@pytest.mark.benchmark(group="sse")
def test_sse_content_fast_path(benchmark: Any) -> None:
    enc = sse.ChunkEncoder("chatcmpl-" + "0" * 32, 1700000000, "gemma-3-270m-q4_k_m")
    assert benchmark(enc.content, " word").endswith(b"\n\n")


@pytest.mark.benchmark(group="sse")
def test_sse_content_full_object_baseline(benchmark: Any) -> None:
    def full() -> bytes:
        return sse.event(openai_types.ChatCompletionChunk(
            id="chatcmpl-" + "0" * 32, created=1700000000, model="gemma-3-270m-q4_k_m",
            choices=[openai_types.ChunkChoice(0, openai_types.ChunkDelta(content=" word"))]))

    assert benchmark(full).endswith(b"\n\n")


@pytest.mark.benchmark(group="responses")
def test_responses_text_delta_event(benchmark: Any) -> None:
    events = ResponseEvents(responses_types.Response(
        id="resp_" + "0" * 32, created_at=1700000000, model="gemma-3-270m-q4_k_m",
        status="in_progress", output=[]))
    events.start()
    events.feed([Text("first")])  # the message item is open: each later token is one delta
    piece = [Text(" word")]

    def one_token() -> bytes:
        return b"".join(responses_types.sse(e) for e in events.feed(piece))

    assert benchmark(one_token).endswith(b"\n\n")


@pytest.mark.benchmark(group="responses")
def test_responses_chat_chunk_baseline(benchmark: Any) -> None:
    enc = sse.ChunkEncoder("chatcmpl-" + "0" * 32, 1700000000, "gemma-3-270m-q4_k_m")
    assert benchmark(enc.content, " word").endswith(b"\n\n")


@pytest.mark.benchmark(group="logprobs")
def test_sse_chunk_with_top5_logprobs(benchmark: Any) -> None:
    enc = sse.ChunkEncoder("chatcmpl-" + "0" * 32, 1700000000, "gemma-3-270m-q4_k_m")
    assert benchmark(lambda: enc.content_logprobs(" word", chat_entries([ENTRY])))


@pytest.mark.benchmark(group="logprobs")
def test_sse_chunk_without_logprobs_baseline(benchmark: Any) -> None:
    enc = sse.ChunkEncoder("chatcmpl-" + "0" * 32, 1700000000, "gemma-3-270m-q4_k_m")
    assert benchmark(enc.content, " word")


@pytest.mark.benchmark(group="logprobs")
def test_event_batch_with_top5_logprobs(benchmark: Any) -> None:
    assert benchmark(lambda: CODEC.events.decode(CODEC.encode(LP_BATCH))) == LP_BATCH


@pytest.mark.benchmark(group="logprobs")
def test_event_batch_without_logprobs_baseline(benchmark: Any) -> None:
    assert benchmark(lambda: CODEC.events.decode(CODEC.encode(BATCH))) == BATCH
@pytest.mark.benchmark(group="sse")
def test_sse_messages_text_delta(benchmark: Any) -> None:
    from hearth.api.messages_events import MessageBuilder, frame
    from hearth.api.tool_parsers import Text

    builder = MessageBuilder("msg_" + "0" * 32, "gemma-3-270m-q4_k_m")
    builder.feed([Text("start")])  # the text block is open: each token is one delta event
    piece = [Text(" word")]

    def token() -> bytes:
        return b"".join(frame(e) for e in builder.feed(piece))

    assert benchmark(token).endswith(b"\n\n")
