"""The Responses API (``/v1/responses``) through real processes on the tiny random-weight model,
with the official ``openai`` SDK: whole and streamed answers, ``max_output_tokens`` making a
response incomplete, ``text.format`` json_schema answers that validate, stored responses (GET,
DELETE, input_items, previous_response_id) isolated between two API keys, the 400s, and the
request log and ``/metrics`` naming the endpoint.

The tiny model's words are random: the tests check shapes and what must hold, not text."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from conftest import TINY_ARGS
from harness import API_KEY, Server
from hearth.tools.cli.tiny_model import build_tiny_model

pytestmark = pytest.mark.integration

OTHER_KEY = "other-key-0123456789"
# The answer under this schema is `{"ok": true}` or `{"ok": false}`: a few tokens, then the
# grammar allows only the end of generation, whatever the random weights say.
OK_SCHEMA = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
             "additionalProperties": False}


# A template whose generation prompt opens the thinking (as DeepSeek-R1 distills' do): random
# weights never close it, so every token is reasoning.
THINKING_TEMPLATE = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


@pytest.fixture(scope="module")
def two_keys(tiny_model_path: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with two API keys (``key1``: the harness's, ``key2``: OTHER_KEY), serving the
    tiny model and a thinking one."""
    models = tmp_path_factory.mktemp("responses-models")
    shutil.copy(tiny_model_path, models / "tiny.gguf")
    build_tiny_model(models / "thinker.gguf", chat_template=THINKING_TEMPLATE)
    srv = Server(models, "tiny", tmp_path_factory.mktemp("home"),
                 args=(*TINY_ARGS, "--api-key", OTHER_KEY))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


@pytest.fixture(scope="module")
def c(two_keys: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=two_keys.base_url, api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


@pytest.fixture(scope="module")
def theirs(two_keys: Server) -> Iterator[openai.OpenAI]:
    """The second key's client."""
    with openai.OpenAI(base_url=two_keys.base_url, api_key=OTHER_KEY, max_retries=0) as sdk:
        yield sdk


def test_a_whole_response(c: openai.OpenAI) -> None:
    resp = c.responses.create(model="tiny", input="Hello", instructions="Hi.",
                                             max_output_tokens=8, temperature=0,
                                             metadata={"case": "whole"})
    assert resp.id.startswith("resp_") and resp.object == "response"
    assert resp.status in ("completed", "incomplete") and resp.model == "tiny"
    assert resp.metadata == {"case": "whole"} and resp.instructions == "Hi."
    [item] = resp.output
    assert item.type == "message" and item.role == "assistant"
    assert resp.output_text == item.content[0].text  # type: ignore[union-attr]
    usage = resp.usage
    assert usage is not None and usage.input_tokens > 0
    assert 0 < usage.output_tokens <= 8
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens >= 0
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_max_output_tokens_reached_is_incomplete(c: openai.OpenAI) -> None:
    resp = c.responses.create(model="tiny", input="Tell me a story",
                                             max_output_tokens=2, temperature=0)
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None
    assert resp.incomplete_details.reason == "max_output_tokens"
    assert resp.usage is not None and resp.usage.output_tokens == 2
    assert resp.output[0].status == "incomplete"


def test_a_stream_and_the_sdk_helper(c: openai.OpenAI) -> None:
    with c.responses.stream(model="tiny", input="Hello", max_output_tokens=6,
                            temperature=0) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response() if kinds[-1] == "response.completed" else None
    assert kinds[:4] == ["response.created", "response.in_progress",
                         "response.output_item.added", "response.content_part.added"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert kinds.count("response.output_text.delta") >= 1
    if final is not None:
        assert final.status == "completed" and final.output_text
    # the raw stream: each frame has its event line, and sequence numbers count from 0
    raw = c.responses.create(model="tiny", input="Hello", max_output_tokens=4, stream=True,
                             temperature=0)
    events = list(raw)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    last = events[-1]
    assert last.type == "response.incomplete" and last.response.usage is not None  # type: ignore[union-attr]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert last.response.output_text == text  # type: ignore[union-attr]


def test_event_lines_name_each_event(two_keys: Server) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", two_keys.port, timeout=60)
    conn.request("POST", "/v1/responses", body=json.dumps(
        {"model": "tiny", "input": "Hi", "max_output_tokens": 3, "stream": True}),
        headers=two_keys.headers())
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type", "").startswith("text/event-stream")
    frames = [f for f in resp.read().decode().split("\n\n") if f]
    conn.close()
    for frame in frames:
        event, data = frame.split("\n")
        assert event.removeprefix("event: ") == json.loads(data.removeprefix("data: "))["type"]


def test_thinking_is_a_reasoning_item(c: openai.OpenAI) -> None:
    resp = c.responses.create(model="thinker", input="Hello", max_output_tokens=6)
    [item] = resp.output
    assert item.type == "reasoning" and item.content and item.content[0].text
    assert resp.status == "incomplete" and resp.output_text == ""
    assert resp.usage is not None
    assert resp.usage.output_tokens_details.reasoning_tokens == resp.usage.output_tokens == 6
    events = list(c.responses.create(model="thinker", input="Hello", max_output_tokens=6,
                                     stream=True))
    kinds = [e.type for e in events]
    assert "response.reasoning_text.delta" in kinds and "response.output_text.delta" not in kinds
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_text.delta")  # type: ignore[union-attr]
    done = next(e for e in events if e.type == "response.output_item.done")
    assert done.item.content[0].text == thought  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
def test_json_schema_output_validates(c: openai.OpenAI, stream: bool) -> None:
    fmt: Any = {"format": {"type": "json_schema", "name": "ok", "schema": OK_SCHEMA,
                           "strict": True}}
    if stream:
        with c.responses.stream(model="tiny", input="Is it ok?", text=fmt,
                                max_output_tokens=40) as s:
            resp = s.get_final_response()
    else:
        resp = c.responses.create(model="tiny", input="Is it ok?", text=fmt,
                                  max_output_tokens=40)
    assert resp.status == "completed"
    jsonschema.validate(json.loads(resp.output_text), OK_SCHEMA)
    assert resp.text is not None and resp.text.format.type == "json_schema"


def test_stored_responses_and_their_isolation(c: openai.OpenAI, theirs: openai.OpenAI) -> None:
    mine = c
    first = mine.responses.create(model="tiny", input="One", max_output_tokens=3)
    assert mine.responses.retrieve(first.id).output_text == first.output_text
    items = mine.responses.input_items.list(first.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == "One"  # type: ignore[union-attr]

    # another key: 404 on GET, DELETE, input_items and previous_response_id, as if absent
    for call in (lambda: theirs.responses.retrieve(first.id),
                 lambda: theirs.responses.delete(first.id),
                 lambda: theirs.responses.input_items.list(first.id),
                 lambda: theirs.responses.create(model="tiny", input="Two",
                                                 previous_response_id=first.id)):
        with pytest.raises(openai.NotFoundError) as err:
            call()
        assert err.value.status_code == 404
    assert mine.responses.retrieve(first.id).id == first.id  # still there

    second = mine.responses.create(model="tiny", input="Two", previous_response_id=first.id,
                                   max_output_tokens=3)
    assert second.previous_response_id == first.id
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens  # the conversation came first
    listed = mine.responses.input_items.list(second.id, order="asc")
    assert [i.type for i in listed.data] == ["message", "message", "message"]
    assert [i.role for i in listed.data] == ["user", "assistant", "user"]  # type: ignore[union-attr]

    mine.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        mine.responses.retrieve(first.id)
    mine.responses.retrieve(second.id)  # its own copy of the conversation stays

    unstored = mine.responses.create(model="tiny", input="x", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        mine.responses.retrieve(unstored.id)


@pytest.mark.parametrize("kwargs,param,status", [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type", 400),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type", 400),
    ({"truncation": "auto"}, "truncation", 400),
    ({"previous_response_id": "resp_unknown"}, "previous_response_id", 404),
    ({"background": True}, "background", 400),
    ({"include": ["message.output_text.logprobs"]}, "include", 400),
    ({"reasoning": {"effort": "high"}}, "reasoning", 400),
    ({"text": {"format": {"type": "json_schema", "name": "n",
                          "schema": {"type": "integer", "minimum": 1}}}}, "text.format", 400),
    ({"input": [{"role": "user", "content": [{"type": "input_image",
                                              "image_url": "http://x/y.png"}]}]},
     "input[0].content[0].type", 400),
    ({"model": "nope"}, "model", 404),
])
def test_refusals_name_the_field(c: openai.OpenAI, kwargs: dict[str, Any], param: str,
                                 status: int) -> None:
    body: dict[str, Any] = {"model": "tiny", "input": "x", "max_output_tokens": 2, **kwargs}
    for stream in (False, True):
        with pytest.raises(openai.APIStatusError) as err:
            c.responses.create(**body, stream=stream)
        assert err.value.status_code == status
        assert err.value.body["param"] == param  # type: ignore[index]


def test_log_and_metrics_name_the_endpoint(two_keys: Server, c: openai.OpenAI) -> None:
    c.responses.create(model="tiny", input="x", max_output_tokens=2)
    metrics = two_keys.request("GET", "/metrics").body.decode()
    line = next(ln for ln in metrics.splitlines()
                if ln.startswith("hearth_requests_total{") and 'endpoint="responses"' in ln
                and 'status="200"' in ln)
    assert float(line.rsplit(" ", 1)[1]) >= 1
    deadline = time.monotonic() + 10  # the log line is written as the request ends
    while "POST /v1/responses key=key1" not in "".join(two_keys.stderr):
        assert time.monotonic() < deadline, "".join(two_keys.stderr)
        time.sleep(0.05)


def test_a_key_that_floods_the_store_evicts_its_own(tiny_models_dir: Path,
                                                    tmp_path_factory: pytest.TempPathFactory,
                                                    ) -> None:
    """With ``--responses-store-max 3``: one key's fourth, fifth… responses evict its own
    oldest, never the other key's one; the evicted id is a 404 like any absent one."""
    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home"),
                 args=(*TINY_ARGS, "--api-key", OTHER_KEY, "--responses-store-max", "3"))
    srv.start()
    try:
        with openai.OpenAI(base_url=srv.base_url, api_key=API_KEY, max_retries=0) as mine, \
                openai.OpenAI(base_url=srv.base_url, api_key=OTHER_KEY, max_retries=0) as other:
            kept = other.responses.create(model="tiny", input="hi", max_output_tokens=2)
            flood = [mine.responses.create(model="tiny", input="hi", max_output_tokens=2)
                     for _ in range(5)]
            assert other.responses.retrieve(kept.id).id == kept.id
            assert [r.id for r in flood[-2:]] == \
                [mine.responses.retrieve(r.id).id for r in flood[-2:]]
            with pytest.raises(openai.NotFoundError):
                mine.responses.retrieve(flood[0].id)
    finally:
        assert srv.stop() == 0, "".join(srv.stderr)
