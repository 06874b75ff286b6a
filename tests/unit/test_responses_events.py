"""api/responses_events.py: the Responses event sequence from made-up parser pieces (no model):
order, ``sequence_number``, ``output_index``, ``content_index`` and ``item_id``, and the final
response built from the same pieces."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
from hearth.api import responses_types as rt
from hearth.api.responses_events import ResponseEvents
from hearth.api.tool_parsers import CallArguments, CallStart, Reasoning, Text

USAGE = rt.ResponseUsage(5, 4, 9, rt.InputTokensDetails(2), rt.OutputTokensDetails(1))


def builder() -> ResponseEvents:
    counter = itertools.count()
    response = rt.Response(id="resp_1", created_at=0, model="m", status="in_progress", output=[])
    return ResponseEvents(response, lambda prefix: f"{prefix}_{next(counter)}")


def as_json(events: list[rt.Event]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = msgspec.json.decode(msgspec.json.encode(events))
    return out


def test_text_only() -> None:
    b = builder()
    evs = b.start() + b.feed([Text("Hel"), Text(""), Text("lo")])
    evs += b.finish(USAGE, incomplete=False)
    got = as_json(evs)
    assert [e["type"] for e in got] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta",
        "response.output_text.delta", "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    assert got[0]["response"]["status"] == "in_progress" and got[0]["response"]["output"] == []
    added = got[2]
    assert added["output_index"] == 0 and added["item"] == {
        "type": "message", "id": "msg_0", "role": "assistant", "content": [],
        "status": "in_progress"}
    for e in got[3:9]:
        if "item_id" in e:
            assert (e["item_id"], e["output_index"], e["content_index"]) == ("msg_0", 0, 0)
    assert [e["delta"] for e in got[4:6]] == ["Hel", "lo"]
    assert got[6]["text"] == "Hello" and got[7]["part"]["text"] == "Hello"
    done = got[8]["item"]
    assert done["status"] == "completed" and done["content"][0]["text"] == "Hello"
    final = got[9]["response"]
    assert final["status"] == "completed" and final["output"] == [done]
    assert final["usage"]["output_tokens_details"] == {"reasoning_tokens": 1}


def test_thinking_then_text_then_two_calls() -> None:
    b = builder()
    evs = b.start()
    evs += b.feed([Reasoning("hmm"), Reasoning(" ok"), Text("Let me look.")])
    evs += b.feed([CallStart(0, "call_a", "get_weather"), CallArguments(0, '{"city":"Paris"}')])
    evs += b.feed([CallStart(1, "call_b", "get_time"), CallArguments(1, '{"zone":"CET"}')])
    evs += b.finish(USAGE, incomplete=False)
    got = as_json(evs)
    assert [e["sequence_number"] for e in got] == list(range(len(got)))
    kinds = [(e["type"], e.get("output_index")) for e in got]
    assert kinds == [
        ("response.created", None), ("response.in_progress", None),
        ("response.output_item.added", 0), ("response.content_part.added", 0),
        ("response.reasoning_text.delta", 0), ("response.reasoning_text.delta", 0),
        ("response.reasoning_text.done", 0), ("response.content_part.done", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1), ("response.content_part.added", 1),
        ("response.output_text.delta", 1), ("response.output_text.done", 1),
        ("response.content_part.done", 1), ("response.output_item.done", 1),
        ("response.output_item.added", 2), ("response.function_call_arguments.delta", 2),
        ("response.function_call_arguments.done", 2), ("response.output_item.done", 2),
        ("response.output_item.added", 3), ("response.function_call_arguments.delta", 3),
        ("response.function_call_arguments.done", 3), ("response.output_item.done", 3),
        ("response.completed", None)]
    assert got[3]["part"] == {"type": "reasoning_text", "text": ""}
    assert got[8]["item"] == {"type": "reasoning", "id": "rs_0", "summary": [],
                              "content": [{"type": "reasoning_text", "text": "hmm ok"}],
                              "status": "completed"}
    assert got[15]["item"] == {"type": "function_call", "id": "fc_2", "call_id": "call_a",
                               "name": "get_weather", "arguments": "", "status": "in_progress"}
    assert got[16]["item_id"] == "fc_2" and got[16]["delta"] == '{"city":"Paris"}'
    assert got[17]["arguments"] == '{"city":"Paris"}'
    assert got[18]["item"]["arguments"] == '{"city":"Paris"}'
    assert got[18]["item"]["status"] == "completed"
    final = got[-1]["response"]
    assert [i["type"] for i in final["output"]] == ["reasoning", "message", "function_call",
                                                   "function_call"]
    assert [i["id"] for i in final["output"]] == ["rs_0", "msg_1", "fc_2", "fc_3"]
    assert final["output"][3]["call_id"] == "call_b"


def test_text_after_a_call_is_a_new_message() -> None:
    b = builder()
    b.start()
    b.feed([Text("a"), CallStart(0, "call_a", "f"), CallArguments(0, "{}"), Text("b")])
    b.finish(USAGE, incomplete=False)
    assert [type(i).__name__ for i in b.response.output] == ["MessageItem", "FunctionCallItem",
                                                            "MessageItem"]


def test_max_output_tokens_makes_it_incomplete() -> None:
    b = builder()
    b.start()
    b.feed([Text("cut sh")])
    got = as_json(b.finish(USAGE, incomplete=True))
    assert got[-2]["type"] == "response.output_item.done"
    assert got[-2]["item"]["status"] == "incomplete"
    assert got[-1]["type"] == "response.incomplete"
    assert got[-1]["response"]["status"] == "incomplete"
    assert got[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_an_answer_with_nothing_is_one_empty_message() -> None:
    b = builder()
    b.start()
    got = as_json(b.finish(USAGE, incomplete=False))
    assert [e["type"] for e in got] == [
        "response.output_item.added", "response.content_part.added",
        "response.output_text.done", "response.content_part.done",
        "response.output_item.done", "response.completed"]
    assert got[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_a_failure_closes_what_is_open_then_error_and_failed() -> None:
    b = builder()
    b.start()
    b.feed([Text("par")])
    got = as_json(b.fail("worker_died", "The worker died.", None))
    assert [e["type"] for e in got] == [
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "error", "response.failed"]
    assert got[2]["item"]["status"] == "incomplete"
    assert got[3] == {"type": "error", "sequence_number": 8, "message": "The worker died.",
                      "code": "worker_died", "param": None}
    failed = got[4]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "worker_died", "message": "The worker died."}


def test_the_frame_has_an_event_line() -> None:
    b = builder()
    first = b.start()[0]
    frame = rt.sse(first)
    assert frame.startswith(b"event: response.created\ndata: {")
    assert frame.endswith(b"}\n\n") and frame.count(b"\n") == 3
