"""Anthropic Messages content blocks and stream events from made-up parser pieces (no model):
order, indexes, stop reasons and usage; every event and the whole message validate as the
official ``anthropic`` SDK's types, and the events rebuild the whole message's blocks."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from hearth.api import anthropic_types as at
from hearth.api.messages_events import (
    MessageBuilder,
    frame,
    frame_slow,
    stop_reason,
    tool_use_id,
)
from hearth.api.tool_parsers import CallArguments, CallStart, Out, Reasoning, Text
from hearth.scheduler.messages import Finished
from pydantic import TypeAdapter

EVENT = TypeAdapter(RawMessageStreamEvent)


def fin(reason: str = "stop", stop: str | None = None, prompt: int = 10, completion: int = 7,
        cached: int = 4) -> Finished:
    return Finished("msg_1", reason, prompt, completion, cached,  # type: ignore[arg-type]
                    stop_sequence=stop)


def run(pieces: list[list[Out]], end: Finished) -> tuple[list[Any], MessageBuilder]:
    """Every event of a stream, as JSON, for ``pieces`` (one list per engine delta)."""
    b = MessageBuilder("msg_1", "tiny")
    events: list[msgspec.Struct] = [*b.start(end.prompt_tokens, end.cached_tokens)]
    for p in pieces:
        events += b.feed(p)
    events += b.finish(end)
    return [json.loads(msgspec.json.encode(e)) for e in events], b


def kinds(events: list[Any]) -> list[str]:
    out = []
    for e in events:
        kind = e["type"]
        if kind == "content_block_start":
            kind += ":" + e["content_block"]["type"] + f"@{e['index']}"
        elif kind in ("content_block_delta",):
            kind += ":" + e["delta"]["type"] + f"@{e['index']}"
        elif kind == "content_block_stop":
            kind += f"@{e['index']}"
        out.append(kind)
    return out


def rebuilt(events: list[Any]) -> list[Any]:
    """The content blocks a client rebuilds from the events: each start's block, its deltas
    appended, tool inputs parsed at the block's stop (the SDK's stream helper does this too;
    the integration tests run the helper itself)."""
    blocks: list[Any] = []
    partial: dict[int, str] = {}
    for e in events:
        if e["type"] == "content_block_start":
            assert e["index"] == len(blocks)
            blocks.append(dict(e["content_block"]))
        elif e["type"] == "content_block_delta":
            block, delta = blocks[e["index"]], e["delta"]
            if delta["type"] == "input_json_delta":
                partial[e["index"]] = partial.get(e["index"], "") + delta["partial_json"]
            else:
                field = {"text_delta": "text", "thinking_delta": "thinking"}[delta["type"]]
                block[field] += delta[field]
        elif e["type"] == "content_block_stop" and e["index"] in partial:
            blocks[e["index"]]["input"] = json.loads(partial[e["index"]])
    return blocks


def test_text_only() -> None:
    events, b = run([[Text("Hel")], [Text("")], [Text("lo")]], fin())
    assert kinds(events) == [
        "message_start", "ping", "content_block_start:text@0", "content_block_delta:text_delta@0",
        "content_block_delta:text_delta@0", "content_block_stop@0", "message_delta",
        "message_stop"]
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["role"] == "assistant"
    assert start["usage"] == {"input_tokens": 6, "output_tokens": 0,
                              "cache_creation_input_tokens": 0, "cache_read_input_tokens": 4}
    assert events[2]["content_block"] == {"type": "text", "text": ""}
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2]["usage"]["output_tokens"] == 7
    whole = b.message(fin())
    assert json.loads(msgspec.json.encode(whole))["content"] == [{"type": "text",
                                                                    "text": "Hello"}]


def test_thinking_then_text_then_calls() -> None:
    pieces: list[list[Out]] = [
        [Reasoning("hmm")], [Reasoning(" ok")], [Text("Let me look.")],
        [CallStart(0, "call_abc", "get_weather"), CallArguments(0, '{"city":')],
        [CallArguments(0, '"Paris"}'), CallStart(1, "call_def", "get_time"),
         CallArguments(1, "{}")]]
    events, b = run(pieces, fin())
    assert kinds(events) == [
        "message_start", "ping",
        "content_block_start:thinking@0", "content_block_delta:thinking_delta@0",
        "content_block_delta:thinking_delta@0", "content_block_stop@0",
        "content_block_start:text@1", "content_block_delta:text_delta@1", "content_block_stop@1",
        "content_block_start:tool_use@2", "content_block_delta:input_json_delta@2",
        "content_block_delta:input_json_delta@2", "content_block_stop@2",
        "content_block_start:tool_use@3", "content_block_delta:input_json_delta@3",
        "content_block_stop@3", "message_delta", "message_stop"]
    assert events[9]["content_block"] == {"type": "tool_use", "id": "toolu_abc",
                                          "name": "get_weather", "input": {}}
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    whole = json.loads(msgspec.json.encode(b.message(fin())))
    assert whole["stop_reason"] == "tool_use"
    assert whole["content"] == [
        {"type": "thinking", "thinking": "hmm ok", "signature": ""},
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "toolu_abc", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_def", "name": "get_time", "input": {}}]


def test_every_event_and_the_message_are_the_sdk_s_types() -> None:
    pieces: list[list[Out]] = [[Reasoning("a")], [Text("b")],
                               [CallStart(0, "call_x", "f"), CallArguments(0, '{"n": 1}')]]
    events, b = run(pieces, fin())
    for e in events:
        if e["type"] != "ping":
            EVENT.validate_python(e)
    whole = json.loads(msgspec.json.encode(b.message(fin())))
    assert Message.model_validate(whole).to_dict() == whole
    assert rebuilt(events) == whole["content"]


@pytest.mark.parametrize("end,calls,expected", [
    (fin("stop"), 0, ("end_turn", None)),
    (fin("length"), 0, ("max_tokens", None)),
    (fin("length", completion=7), 1, ("max_tokens", None)),
    (fin("stop", stop="\n\n"), 0, ("stop_sequence", "\n\n")),
    (fin("stop"), 2, ("tool_use", None)),
])
def test_stop_reasons(end: Finished, calls: int, expected: tuple[str, str | None]) -> None:
    assert stop_reason(end, calls) == expected


def test_a_stop_sequence_reaches_message_delta_and_the_message() -> None:
    events, b = run([[Text("one")]], fin(stop="two"))
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "two"}
    message = b.message(fin(stop="two"))
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "two")


def test_an_empty_answer_has_no_blocks() -> None:
    events, b = run([[Text("")]], fin(completion=1))
    assert kinds(events) == ["message_start", "ping", "message_delta", "message_stop"]
    assert b.message(fin()).content == []


def test_frames_name_their_event() -> None:
    out = frame(at.ContentBlockDelta(3, at.TextDelta("hi\n")))
    assert out == (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":3,'
                   b'"delta":{"type":"text_delta","text":"hi\\n"}}\n\n')
    assert frame(at.Ping()) == b'event: ping\ndata: {"type":"ping"}\n\n'


def test_tool_use_ids() -> None:
    assert tool_use_id("call_0123") == "toolu_0123"


def test_an_error_after_the_200_is_an_error_frame() -> None:
    from hearth.api.errors import anthropic_envelope
    from hearth.scheduler.errors import WorkerDied

    out = frame(anthropic_envelope(WorkerDied("the worker died")))
    assert out == (b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
                   b'"message":"the worker died"}}\n\n')


@pytest.mark.parametrize("text", ["", "plain", 'quo"te\\', "line\nbreak\t", "\x00\x1f\u2028",
                                  "é😀", "</script>"])
def test_the_text_delta_fast_path_is_the_whole_event(text: str) -> None:
    for index in (0, 7, 123):
        event = at.ContentBlockDelta(index, at.TextDelta(text))
        assert frame(event) == frame_slow(event)
    for other in (at.ContentBlockDelta(1, at.InputJsonDelta('{"a"')), at.Ping(),
                  at.ContentBlockStop(2)):
        assert frame(other) == frame_slow(other)
