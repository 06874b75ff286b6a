"""api/handlers/jobs.py: the one road of job endpoints (chat and embeddings ride it), through a
real Tornado app and real HTTP on 127.0.0.1, over a fake of the layer below: a bridge that
answers each job with scripted events, as the scheduler and a worker would."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest
import tornado.httpclient
import tornado.netutil
from hearth.api.access import CorsPolicy, HostCheck, KeyRing
from hearth.api.app import make_app
from hearth.api.bridge import Bridge, RequestIdPrefix, Sink
from hearth.api.handlers.base import AppState
from hearth.api.http_server import HttpServer
from hearth.api.metrics import Metrics
from hearth.api.responses_store import ResponseStore
from hearth.scheduler.messages import (
    ChatJob,
    Embedded,
    EmbedJob,
    Event,
    Failed,
    Finished,
    Job,
    Started,
    TextDelta,
)
from hearth.tools.registry import ModelRegistry
from hearth.tools.settings import Settings

KEY = "sk-test"


class FakeBridge:
    """The bridge's contract for handlers: ``run`` gives a job's first event, ``attach`` the
    rest in order; ``cancel`` ends an attached sink with None. ``script`` makes a job's events
    from the job (None: the job never ends)."""

    frontend = "fe-test"

    def __init__(self) -> None:
        self.script: Callable[[Job], list[Event] | None] = lambda job: []
        self.jobs: list[Job] = []
        self.cancelled: list[str] = []
        self.done_ids: list[str] = []
        self._rest: dict[str, list[Event] | None] = {}
        self._sinks: dict[str, Sink] = {}

    @staticmethod
    def new_request_id(prefix: RequestIdPrefix) -> str:
        return Bridge.new_request_id(prefix)

    def fresh_status(self) -> None:
        return None

    async def run(self, job: Job) -> tuple[None, Event | None]:
        self.jobs.append(job)
        events = self.script(job)
        if events is None:
            self._rest[job.request_id] = None
            return None, Started(job.request_id, 3, 0)
        self._rest[job.request_id] = events[1:]
        return None, events[0]

    def attach(self, request_id: str, sink: Sink) -> None:
        self._sinks[request_id] = sink
        rest = self._rest.get(request_id)
        loop = asyncio.get_running_loop()
        for ev in rest or []:  # later, from the loop, as the bridge's reader would
            loop.call_soon(sink, ev)

    def cancel(self, request_id: str) -> None:
        self.cancelled.append(request_id)
        sink = self._sinks.pop(request_id, None)
        if sink is not None:
            sink(None)

    def done(self, request_id: str) -> None:
        self.done_ids.append(request_id)


def generation(*texts: str, fail: Failed | None = None) -> Callable[[Job], list[Event]]:
    """A chat job's events: Started, one TextDelta per text, then Finished (or ``fail``)."""

    def script(job: Job) -> list[Event]:
        rid = job.request_id
        events: list[Event] = [Started(rid, 3, 1)]
        events += [TextDelta(rid, t, 1) for t in texts]
        events.append(fail or Finished(rid, "stop", 3, len(texts), 1))
        return events

    return script


class Rig:
    def __init__(self, state: AppState, bridge: FakeBridge, port: int) -> None:
        self.state, self.bridge, self.port = state, bridge, port

    async def post(self, path: str, body: object) -> tuple[int, bytes]:
        client = tornado.httpclient.AsyncHTTPClient()
        r = await client.fetch(f"http://127.0.0.1:{self.port}/v1{path}", method="POST",
                               body=json.dumps(body),
                               headers={"Authorization": f"Bearer {KEY}"}, raise_error=False)
        return r.code, r.body

    def usage(self, name: str) -> float:
        value = self.state.metrics.registry.get_sample_value(f"hearth_{name}_total",
                                                             {"model": "tiny"})
        return value or 0.0


def run(tmp_path: Path, tiny_model_path: Path, body: Callable[[Rig], Awaitable[None]],
        **settings: object) -> None:
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(tiny_model_path, models / "tiny.gguf")

    async def main() -> None:
        bridge = FakeBridge()
        s = Settings(models_dir=str(models), **settings)  # type: ignore[arg-type]
        state = AppState(settings=s, hosts=HostCheck([]), cors=CorsPolicy(False, []),
                         keys=KeyRing([("key1", KEY)]), bridge=cast(Bridge, bridge),
                         registry=ModelRegistry(models, {"alias": "tiny"}),
                         metrics=Metrics(lambda: None),
                         responses=ResponseStore(s.responses_store_max,
                                                 s.responses_store_bytes))
        server = HttpServer(make_app(state))
        listening = tornado.netutil.bind_sockets(0, "127.0.0.1")
        server.add_sockets(listening)
        try:
            await asyncio.wait_for(body(Rig(state, bridge, listening[0].getsockname()[1])), 10)
        finally:
            server.stop()

    asyncio.run(main())


def test_chat_resolves_an_alias_once_and_gathers_the_answer(
        tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = generation("Hel", "lo")
        status, raw = await rig.post("/chat/completions", {
            "model": "alias", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200, raw
        answer = json.loads(raw)
        (job,) = rig.bridge.jobs
        assert isinstance(job, ChatJob) and job.model == "tiny" and job.key_name == "key1"
        assert job.frontend == "fe-test"
        assert answer["id"] == job.request_id and job.request_id.startswith("chatcmpl-")
        assert answer["model"] == "alias"  # the name the client used
        assert answer["choices"][0]["message"]["content"] == "Hello"
        assert answer["usage"]["prompt_tokens"] == 3
        assert answer["usage"]["completion_tokens"] == 2
        assert answer["usage"]["prompt_tokens_details"]["cached_tokens"] == 1
        assert rig.bridge.done_ids == [job.request_id]
        assert (rig.usage("prompt_tokens"), rig.usage("completion_tokens")) == (3, 2)

    run(tmp_path, tiny_model_path, body)


def test_an_unknown_model_is_the_one_404_and_nothing_is_submitted(
        tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        for path, extra in (("/chat/completions", {"messages": [{"role": "user",
                                                                  "content": "hi"}]}),
                            ("/embeddings", {"input": "x"})):
            status, raw = await rig.post(path, {"model": "nope", **extra})
            assert status == 404
            assert json.loads(raw)["error"] == {
                "message": "The model 'nope' does not exist. The models endpoint lists the "
                           "models this server has.",
                "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
        assert rig.bridge.jobs == []

    run(tmp_path, tiny_model_path, body)


@pytest.mark.parametrize("stream", [False, True])
def test_a_failed_first_event_is_the_answers_status(
        tmp_path: Path, tiny_model_path: Path, stream: bool) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = lambda job: [Failed(job.request_id, "Overloaded", "queue full")]
        status, raw = await rig.post("/chat/completions", {
            "model": "tiny", "stream": stream, "messages": [{"role": "user", "content": "x"}]})
        assert status == 503
        assert json.loads(raw)["error"]["message"] == "queue full"
        assert len(rig.bridge.done_ids) == 1

    run(tmp_path, tiny_model_path, body)


def test_a_failure_after_the_first_event_gathered_is_its_status(
        tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = lambda job: generation(
            "a", fail=Failed(job.request_id, "WorkerDied", "the worker died"))(job)
        status, raw = await rig.post("/chat/completions", {
            "model": "tiny", "messages": [{"role": "user", "content": "x"}]})
        assert status == 502
        assert json.loads(raw)["error"]["code"] == "worker_died"

    run(tmp_path, tiny_model_path, body)


def sse_data(raw: bytes) -> list[object]:
    lines = [line for line in raw.decode().split("\n\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [line[6:] if line == "data: [DONE]" else json.loads(line[6:]) for line in lines]


def test_a_stream_writes_each_delta_then_the_finish_and_usage(
        tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = generation("Hel", "", "lo")
        status, raw = await rig.post("/chat/completions", {
            "model": "tiny", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "x"}]})
        assert status == 200
        *chunks, usage, done = sse_data(raw)
        assert done == "[DONE]"
        deltas = [c["choices"][0]["delta"] for c in chunks]  # type: ignore[index]
        assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hel"},
                          {"content": "lo"}, {}]  # a delta without text writes nothing
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
        assert usage["usage"]["completion_tokens"] == 3  # type: ignore[index]
        assert rig.usage("completion_tokens") == 3

    run(tmp_path, tiny_model_path, body)


def test_a_failure_mid_stream_is_an_error_event_then_done(
        tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = lambda job: generation(
            "a", fail=Failed(job.request_id, "WorkerDied", "the worker died"))(job)
        status, raw = await rig.post("/chat/completions", {
            "model": "tiny", "stream": True, "messages": [{"role": "user", "content": "x"}]})
        assert status == 200
        *_, error, done = sse_data(raw)
        assert error == {"error": {"message": "the worker died", "type": "server_error",
                                   "param": None, "code": "worker_died"}}
        assert done == "[DONE]"
        assert rig.usage("completion_tokens") == 0  # no usage for a failed request

    run(tmp_path, tiny_model_path, body)


def test_a_client_that_leaves_a_stream_cancels_its_job(
        tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = lambda job: None  # it never ends
        payload = json.dumps({"model": "tiny", "stream": True,
                              "messages": [{"role": "user", "content": "x"}]}).encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", rig.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + KEY.encode() + b"\r\n"
                     b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        writer.transport.abort()
        while not rig.bridge.cancelled:
            await asyncio.sleep(0.01)
        (job,) = rig.bridge.jobs
        assert rig.bridge.cancelled == [job.request_id]
        while not rig.bridge.done_ids:
            await asyncio.sleep(0.01)
        assert rig.bridge.done_ids == [job.request_id]

    run(tmp_path, tiny_model_path, body)


def test_embeddings_ride_the_same_road_with_their_own_id_and_width(
        tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = lambda job: [Embedded(job.request_id, [b"\0\0\x80?"], 2)]
        status, raw = await rig.post("/embeddings", {"model": "alias", "input": ["hi"],
                                                     "dimensions": 1})
        assert status == 200, raw
        (job,) = rig.bridge.jobs
        assert isinstance(job, EmbedJob) and job.request_id.startswith("embd-")
        assert (job.model, job.texts, job.dimensions) == ("tiny", ["hi"], 1)
        answer = json.loads(raw)
        assert answer["data"][0]["embedding"] == [1.0]
        assert answer["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
        assert rig.usage("prompt_tokens") == 2
        assert rig.bridge.done_ids == [job.request_id]

    run(tmp_path, tiny_model_path, body)


def test_embeddings_leave_the_width_to_the_worker(
        tmp_path: Path, tiny_model_path: Path) -> None:
    async def body(rig: Rig) -> None:
        rig.bridge.script = lambda job: [Failed(job.request_id, "InvalidRequest", "too wide",
                                                "dimensions")]
        status, raw = await rig.post("/embeddings", {"model": "tiny", "input": "x",
                                                     "dimensions": 5})
        assert status == 400
        assert json.loads(raw)["error"]["param"] == "dimensions"

    run(tmp_path, tiny_model_path, body)

