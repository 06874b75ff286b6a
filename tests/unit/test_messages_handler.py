"""api/handlers/messages.py through a real Tornado app and real HTTP, over the fake bridge of
test_job_handlers.py (scripted worker events): the job a Messages request becomes, the answer
and stream it renders, count_tokens' job, and every error in Anthropic's envelope — a failed
first event, a failure after the answer was gathered, and one after the stream's 200."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hearth.scheduler.messages import (
    ChatJob,
    Event,
    Failed,
    Finished,
    Job,
    Started,
    TextDelta,
    Tokenized,
    TokenizeJob,
)
from test_job_handlers import Rig, generation, run

HI: dict[str, Any] = {"model": "tiny", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "hi"}]}


def frames(raw: bytes) -> list[tuple[str, Any]]:
    out = []
    for block in raw.decode().strip().split("\n\n"):
        name, data = block.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        out.append((name[7:], json.loads(data[6:])))
    return out


def test_a_message_is_a_chat_job_and_its_answer_a_message(tmp_path: Path,
                                                          tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = generation("Hel", "lo")
        status, raw = await rig.post("/messages", {**HI, "model": "alias", "system": "s",
                                                   "stop_sequences": ["END"], "top_k": 5})
        assert status == 200, raw
        (job,) = rig.bridge.jobs
        assert isinstance(job, ChatJob) and job.model == "tiny" and job.key_name == "key1"
        assert [(m.role, m.content) for m in job.messages] == [("system", "s"), ("user", "hi")]
        assert (job.params.max_tokens, job.params.stop, job.params.top_k) == (16, ["END"], 5)
        msg = json.loads(raw)
        assert msg == {"type": "message", "id": job.request_id, "model": "alias",
                       "content": [{"type": "text", "text": "Hello"}],
                       "stop_reason": "end_turn", "stop_sequence": None, "role": "assistant",
                       "usage": {"input_tokens": 2, "output_tokens": 2,
                                 "cache_creation_input_tokens": 0,
                                 "cache_read_input_tokens": 1}}
        assert job.request_id.startswith("msg_")
        assert (rig.usage("prompt_tokens"), rig.usage("completion_tokens")) == (3, 2)

    run(tmp_path, tiny_model_path, body)


def test_the_stop_sequence_that_ended_it(tmp_path: Path, tiny_model_path: Path) -> None:
    def script(job: Job) -> list[Event]:
        rid = job.request_id
        return [Started(rid, 3, 0), TextDelta(rid, "a", 1),
                Finished(rid, "stop", 3, 1, stop_sequence="END")]

    async def body(rig: Rig) -> None:
        rig.bridge.script = script
        for stream in (False, True):
            status, raw = await rig.post("/messages", {**HI, "stream": stream,
                                                       "stop_sequences": ["x", "END"]})
            assert status == 200
            if stream:
                delta = next(d for name, d in frames(raw) if name == "message_delta")["delta"]
            else:
                delta = json.loads(raw)
            assert (delta["stop_reason"], delta["stop_sequence"]) == ("stop_sequence", "END")

    run(tmp_path, tiny_model_path, body)


def test_a_stream_s_frames(tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = generation("Hel", "", "lo")
        status, raw = await rig.post("/messages", {**HI, "stream": True})
        assert status == 200
        got = frames(raw)
        assert [n for n, _ in got] == [
            "message_start", "ping", "content_block_start", "content_block_delta",
            "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
        assert [d["delta"]["text"] for n, d in got if n == "content_block_delta"] == ["Hel",
                                                                                     "lo"]
        assert got[0][1]["message"]["usage"]["input_tokens"] == 2
        assert got[-2][1]["usage"]["output_tokens"] == 3

    run(tmp_path, tiny_model_path, body)


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_first_event_is_the_status_in_anthropic_s_envelope(
        tmp_path: Path, tiny_model_path: Path, stream: bool) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = lambda job: [Failed(job.request_id, "Overloaded", "queue full")]
        status, raw = await rig.post("/messages", {**HI, "stream": stream})
        assert status == 503
        assert json.loads(raw) == {"type": "error", "error": {"type": "overloaded_error",
                                                              "message": "queue full"}}

    run(tmp_path, tiny_model_path, body)


def test_a_failure_after_the_answer_was_gathered(tmp_path: Path,
                                                 tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = lambda job: generation(
            "a", fail=Failed(job.request_id, "WorkerDied", "the worker died"))(job)
        status, raw = await rig.post("/messages", HI)
        assert status == 502
        assert json.loads(raw)["error"] == {"type": "api_error", "message": "the worker died"}

    run(tmp_path, tiny_model_path, body)


def test_a_failure_mid_stream_is_an_error_frame_and_the_end(tmp_path: Path,
                                                            tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = lambda job: generation(
            "a", fail=Failed(job.request_id, "WorkerDied", "the worker died"))(job)
        status, raw = await rig.post("/messages", {**HI, "stream": True})
        assert status == 200
        got = frames(raw)
        assert got[-1] == ("error", {"type": "error", "error": {
            "type": "api_error", "message": "the worker died"}})
        assert "message_stop" not in [n for n, _ in got]

    run(tmp_path, tiny_model_path, body)


def test_a_bad_request_and_an_unknown_model(tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        status, raw = await rig.post("/messages", {**HI, "model": "nope"})
        assert status == 404
        assert json.loads(raw)["error"]["type"] == "not_found_error"
        status, raw = await rig.post("/messages", {"model": "tiny", "messages": HI["messages"]})
        assert status == 400
        err = json.loads(raw)["error"]
        assert err["type"] == "invalid_request_error" and "max_tokens" in err["message"]
        assert rig.bridge.jobs == []

    run(tmp_path, tiny_model_path, body)


def test_count_tokens_is_a_tokenize_job_of_the_rendered_prompt(tmp_path: Path,
                                                               tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = lambda job: [Tokenized(job.request_id, tokens=[5, 6, 7, 8])]
        tool = {"name": "f", "input_schema": {"type": "object", "properties": {}}}
        status, raw = await rig.post("/messages/count_tokens", {
            "model": "tiny", "system": "s", "messages": HI["messages"], "tools": [tool]})
        assert status == 200 and json.loads(raw) == {"input_tokens": 4}
        (job,) = rig.bridge.jobs
        assert isinstance(job, TokenizeJob) and job.add_special and not job.detokenize
        # the tiny model's ChatML has no tool support: the tools are in the system message
        assert job.messages[0].role == "system" and '"f"' in job.messages[0].content
        assert [m.content for m in job.messages[1:]] == ["hi"]

    run(tmp_path, tiny_model_path, body)


def test_errors_found_before_the_handler_runs(tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        status, raw = await rig.post("/messages", {**HI, "system": "x" * 2048})
        assert status == 413
        assert json.loads(raw)["error"]["type"] == "request_too_large"
        rig.state.draining = True
        for path in ("/messages", "/messages/count_tokens"):
            status, raw = await rig.post(path, HI)
            assert status == 503
            assert json.loads(raw)["error"]["type"] == "overloaded_error"
        assert rig.bridge.jobs == []

    run(tmp_path, tiny_model_path, body, max_body=1024)


def test_an_unknown_path_under_messages_is_anthropic_s_404(tmp_path: Path,
                                                           tiny_model_path: Path) -> None:
    """An Anthropic SDK's other routes (Message Batches…) get a 404 it can read; a path
    elsewhere keeps OpenAI's envelope."""
    async def body(rig: Rig) -> None:
        for path in ("/messages/batches", "/messages/zzz"):
            status, raw = await rig.post(path, HI)
            assert status == 404
            doc = json.loads(raw)
            assert doc["type"] == "error" and doc["error"]["type"] == "not_found_error", doc
        status, raw = await rig.post("/nothing", HI)
        assert status == 404 and json.loads(raw)["error"]["code"] == "unknown_url"

    run(tmp_path, tiny_model_path, body)
