"""api/handlers/responses.py through a real Tornado app and real HTTP, over the fake bridge of
tests/unit/test_job_handlers.py (scripted job events, no model): the translation reaches the
job, the answer and its stream are the Responses shapes, and stored responses are per key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import tornado.httpclient
from hearth.scheduler.messages import ChatJob, Failed, Finished, Started, TextDelta
from test_job_handlers import KEY, FakeBridge, Rig, generation, run


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
