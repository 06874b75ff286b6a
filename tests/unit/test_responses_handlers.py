"""api/handlers/responses.py through a real Tornado app and real HTTP, over the fake bridge of
tests/unit/test_job_handlers.py (scripted job events, no model): the translation reaches the
job, the answer and its stream are the Responses shapes, and stored responses are per key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tornado.httpclient
from hearth.scheduler.messages import ChatJob, Failed, Finished, Started, TextDelta
from test_job_handlers import KEY, Rig, generation, run


async def call(rig: Rig, method: str, path: str, body: object = None,
               key: str = KEY) -> tuple[int, Any]:
    client = tornado.httpclient.AsyncHTTPClient()
    r = await client.fetch(f"http://127.0.0.1:{rig.port}/v1{path}", method=method,
                           body=None if body is None else json.dumps(body),
                           headers={"Authorization": f"Bearer {key}"}, raise_error=False)
    return r.code, r.body


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event line, data) of each server-sent event."""
    out = []
    for frame in raw.decode().split("\n\n"):
        if not frame:
            continue
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        out.append((name[len("event: "):], json.loads(data[len("data: "):])))
    return out


def test_a_string_input_is_a_user_message_and_the_answer_a_message(
        tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = generation("Hel", "lo")
        status, raw = await call(rig, "POST", "/responses", {
            "model": "alias", "input": "hi", "instructions": "Be brief.",
            "max_output_tokens": 7, "temperature": 0, "metadata": {"a": "b"}})
        assert status == 200, raw
        resp = json.loads(raw)
        job = rig.bridge.jobs[0]
        assert isinstance(job, ChatJob)
        assert [(m.role, m.content) for m in job.messages] == [("system", "Be brief."),
                                                                ("user", "hi")]
        assert job.params.max_tokens == 7 and job.params.temperature == 0
        assert resp["id"].startswith("resp_") and resp["object"] == "response"
        assert resp["status"] == "completed" and resp["model"] == "alias"
        assert resp["metadata"] == {"a": "b"} and resp["instructions"] == "Be brief."
        [item] = resp["output"]
        assert item["type"] == "message" and item["role"] == "assistant"
        assert item["content"] == [{"type": "output_text", "text": "Hello", "annotations": [],
                                    "logprobs": []}]
        assert resp["usage"] == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5,
                                 "input_tokens_details": {"cached_tokens": 1},
                                 "output_tokens_details": {"reasoning_tokens": 0}}

    run(tmp_path, tiny_model_path, body)


def test_a_stream_is_the_event_sequence_with_event_lines(tmp_path: Path,
                                                          tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = generation("Hel", "lo")
        status, raw = await call(rig, "POST", "/responses",
                                 {"model": "tiny", "input": "hi", "stream": True})
        assert status == 200, raw
        got = events(raw)
        assert [name for name, _ in got] == [
            "response.created", "response.in_progress", "response.output_item.added",
            "response.content_part.added", "response.output_text.delta",
            "response.output_text.delta", "response.output_text.done",
            "response.content_part.done", "response.output_item.done", "response.completed"]
        assert all(data["type"] == name for name, data in got)
        assert [data["sequence_number"] for _, data in got] == list(range(10))
        final = got[-1][1]["response"]
        assert final["output"][0]["content"][0]["text"] == "Hello"
        # stored as streamed
        status, raw = await call(rig, "GET", f"/responses/{final['id']}")
        assert status == 200 and json.loads(raw) == final

    run(tmp_path, tiny_model_path, body)


def test_max_output_tokens_reached_is_incomplete(tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        def script(job: Any) -> list[Any]:
            rid = job.request_id
            return [Started(rid, 3, 0), TextDelta(rid, "cut", 1),
                    Finished(rid, "length", 3, 1, 0)]

        rig.bridge.script = script
        status, raw = await call(rig, "POST", "/responses",
                                 {"model": "tiny", "input": "hi", "max_output_tokens": 1})
        resp = json.loads(raw)
        assert status == 200 and resp["status"] == "incomplete"
        assert resp["incomplete_details"] == {"reason": "max_output_tokens"}
        assert resp["output"][0]["status"] == "incomplete"

    run(tmp_path, tiny_model_path, body)


def test_a_failure_mid_stream_is_error_then_response_failed(tmp_path: Path,
                                                            tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = generation("par", fail=Failed("x", "WorkerDied", "gone"))
        status, raw = await call(rig, "POST", "/responses",
                                 {"model": "tiny", "input": "hi", "stream": True})
        got = events(raw)
        assert status == 200
        assert [name for name, _ in got][-2:] == ["error", "response.failed"]
        assert got[-2][1]["code"] == "worker_died"
        assert got[-1][1]["response"]["status"] == "failed"

    run(tmp_path, tiny_model_path, body)


def test_stored_responses_belong_to_their_key(tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.state.keys.replace([("key1", KEY), ("key2", "sk-other")])
        rig.bridge.script = generation("one")
        status, raw = await call(rig, "POST", "/responses", {"model": "tiny", "input": "q1"})
        first = json.loads(raw)
        rid = first["id"]
        for method, path in (("GET", f"/responses/{rid}"), ("DELETE", f"/responses/{rid}"),
                             ("GET", f"/responses/{rid}/input_items")):
            status, raw = await call(rig, method, path, key="sk-other")
            assert status == 404, (method, path)
            assert json.loads(raw)["error"]["code"] == "response_not_found"
        status, raw = await call(rig, "POST", "/responses", {
            "model": "tiny", "input": "q2", "previous_response_id": rid}, key="sk-other")
        err = json.loads(raw)["error"]
        assert status == 404 and err["param"] == "previous_response_id"
        assert len(rig.bridge.jobs) == 1  # nothing was submitted for key2
        # the owner continues it: the stored conversation comes first
        rig.bridge.script = generation("two")
        status, raw = await call(rig, "POST", "/responses", {
            "model": "tiny", "input": "q2", "previous_response_id": rid})
        assert status == 200
        second = json.loads(raw)
        assert second["previous_response_id"] == rid
        job = rig.bridge.jobs[-1]
        assert [(m.role, m.content) for m in job.messages] == [
            ("user", "q1"), ("assistant", "one"), ("user", "q2")]
        status, raw = await call(rig, "GET", f"/responses/{second['id']}/input_items")
        page = json.loads(raw)
        assert status == 200 and page["object"] == "list" and not page["has_more"]
        assert [i["role"] for i in page["data"]] == ["user", "assistant", "user"]  # desc
        status, raw = await call(rig, "GET",
                                 f"/responses/{second['id']}/input_items?order=asc&limit=1")
        page = json.loads(raw)
        assert page["has_more"] and page["data"][0]["content"][0]["text"] == "q1"
        status, raw = await call(
            rig, "GET", f"/responses/{second['id']}/input_items?order=asc&after="
            f"{page['last_id']}")
        assert [i["role"] for i in json.loads(raw)["data"]] == ["assistant", "user"]
        for query, param in (("stream=true", "stream"), ("include[]=x", "include"),
                             ("include=message.output_text.logprobs", "include")):
            status, raw = await call(rig, "GET", f"/responses/{rid}?{query}")
            assert status == 400 and json.loads(raw)["error"]["param"] == param
        status, raw = await call(rig, "GET", f"/responses/{rid}?stream=false")
        assert status == 200
        status, raw = await call(rig, "DELETE", f"/responses/{rid}")
        assert status == 200 and json.loads(raw) == {"id": rid, "object": "response.deleted",
                                                     "deleted": True}
        status, _ = await call(rig, "GET", f"/responses/{rid}")
        assert status == 404

    run(tmp_path, tiny_model_path, body)


def test_store_false_keeps_nothing(tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = generation("x")
        status, raw = await call(rig, "POST", "/responses",
                                 {"model": "tiny", "input": "q", "store": False})
        assert status == 200 and json.loads(raw)["store"] is False
        assert len(rig.state.responses) == 0

    run(tmp_path, tiny_model_path, body)


def test_a_function_call_and_its_400s(tmp_path: Path, tiny_model_path: Path) -> None:
    tool = {"type": "function", "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}

    async def body(rig: Rig) -> None:
        # the tiny model's template has no tool support: hearth's generic JSON envelope
        rig.bridge.script = generation(
            '{"tool_calls": [{"name": "get_weather", ', '"arguments": {"city": "Paris"}}]}')
        status, raw = await call(rig, "POST", "/responses", {
            "model": "tiny", "input": "weather?", "tools": [tool], "tool_choice": "required"})
        assert status == 200, raw
        [item] = json.loads(raw)["output"]
        assert item["type"] == "function_call" and item["name"] == "get_weather"
        assert json.loads(item["arguments"]) == {"city": "Paris"}
        assert item["call_id"].startswith("call_") and item["id"].startswith("fc_")
        job = rig.bridge.jobs[-1]
        assert isinstance(job, ChatJob) and job.grammar is not None
        for bad, param in (
                ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
                ({"truncation": "auto"}, "truncation"),
                ({"tools": [{**tool, "defer_loading": True}]}, "tools[0].defer_loading"),
                ({"tools": [{**tool, "output_schema": {"type": "object"}}]},
                 "tools[0].output_schema"),
                ({"text": {"format": {"type": "json_schema", "name": "p"}}},
                 "text.format.schema"),
                ({"tools": [{**tool, "parameters": {"type": "array"}}]}, "tools[0].parameters"),
                ({"input": [{"type": "function_call_output", "call_id": "c9", "output": "r"}]},
                 "input[0].call_id"),
                ({"background": True}, "background"),
                ({"model": "nope"}, "model")):
            status, raw = await call(rig, "POST", "/responses",
                                     {"model": "tiny", "input": "q", **bad})
            err = json.loads(raw)["error"]
            assert status in (400, 404) and err["param"] == param, (bad, raw)
        assert len(rig.bridge.jobs) == 1

    run(tmp_path, tiny_model_path, body)
