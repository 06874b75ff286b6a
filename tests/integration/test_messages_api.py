"""Anthropic's Messages API (``POST /v1/messages``, ``/v1/messages/count_tokens``) through real
processes on the tiny random-weight model (ChatML: the generic tool envelope), with the official
``anthropic`` SDK and raw HTTP: answers, streams, stop reasons, token counts, tools, and every
error in Anthropic's envelope. Random weights write nonsense, so what is checked is what must
hold whatever the text: shapes, stop reasons, usage, the grammar's calls."""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import pytest
from harness import API_KEY, Server
from hearth.tools.cli.tiny_model import build_tiny_model
from test_metrics import requests, scrape
from test_tool_calls import HERMES_TEMPLATE, THINKING_TEMPLATE

pytestmark = pytest.mark.integration

HELLO: list[Any] = [{"role": "user", "content": "Hello there"}]
# The SDK (2.x) has no temperature argument any more; the API still takes it (the list)
GREEDY: dict[str, Any] = {"extra_body": {"temperature": 0}}
WEATHER: dict[str, Any] = {
    "name": "get_weather", "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]}},
        "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[Server]:
    """The tiny model with ChatML (tools through the generic envelope, whose system prompt needs
    more than the usual 256 tokens of context), with a Hermes template, and with a template that
    opens a ``<think>`` block."""
    d = tmp_path_factory.mktemp("messages-models")
    shutil.copy(tiny_model_path, d / "tiny.gguf")
    build_tiny_model(d / "hermes.gguf", chat_template=HERMES_TEMPLATE)
    build_tiny_model(d / "thinker.gguf", chat_template=THINKING_TEMPLATE)
    srv = Server(d, "tiny", tmp_path_factory.mktemp("home"),
                 args=("--parallel", "2", "--ctx-size", "2048", "--threads", "1"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


@pytest.fixture
def client(server: Server) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=f"http://127.0.0.1:{server.port}", api_key=API_KEY,
                             max_retries=0) as c:
        yield c


def post(server: Server, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    h = {"Content-Type": "application/json", "x-api-key": API_KEY,
         "anthropic-version": "2023-06-01", **headers}
    r = server.request("POST", path, body, headers=h)
    return r.status, r.json()


def sse(server: Server, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """(event name, data) of each frame of a streamed Messages answer."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request("POST", "/v1/messages", body=json.dumps({**body, "stream": True}),
                     headers={"Content-Type": "application/json", "x-api-key": API_KEY})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        assert resp.getheader("Content-Type", "").startswith("text/event-stream")
        frames = resp.read().decode().strip().split("\n\n")
    finally:
        conn.close()
    out = []
    for f in frames:
        name, data = f.split("\n")
        assert name.startswith("event: ") and data.startswith("data: "), f
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == name.removeprefix("event: ")
        out.append((payload["type"], payload))
    return out


def test_a_message_and_its_usage(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model="tiny", max_tokens=5, messages=HELLO,
                                 system="Be brief.", **GREEDY)
    assert msg.id.startswith("msg_") and msg.type == "message" and msg.role == "assistant"
    assert msg.model == "tiny"
    assert [b.type for b in msg.content] in (["text"], [])
    assert msg.stop_reason in ("end_turn", "max_tokens") and msg.stop_sequence is None
    assert msg.usage.output_tokens <= 5
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) > 5


def test_max_tokens_is_the_stop_reason_when_they_run_out(client: anthropic.Anthropic) -> None:
    for seed_text in ("a", "b", "c"):  # random weights may end a turn early: one of these won't
        msg = client.messages.create(model="tiny", max_tokens=2, **GREEDY,
                                     messages=[{"role": "user", "content": seed_text}])
        if msg.usage.output_tokens == 2:
            assert msg.stop_reason == "max_tokens"
            return
        assert msg.stop_reason == "end_turn"
    pytest.fail("every answer ended before 2 tokens")


def test_stop_sequence_says_which_one_matched(client: anthropic.Anthropic) -> None:
    # greedy, one request at a time: the same prompt gives the same text again
    free = client.messages.create(model="tiny", max_tokens=24, messages=HELLO, **GREEDY)
    text = "".join(b.text for b in free.content if b.type == "text")
    assert len(text) >= 6, text
    stop = text[3:5]
    msg = client.messages.create(model="tiny", max_tokens=24, messages=HELLO, **GREEDY,
                                 stop_sequences=["never-said-by-it", stop])
    assert msg.stop_reason == "stop_sequence"
    assert msg.stop_sequence == stop
    cut = "".join(b.text for b in msg.content if b.type == "text")
    assert cut == text[:text.index(stop)]


def test_the_stream_s_events_in_order(server: Server) -> None:
    frames = sse(server, {"model": "tiny", "max_tokens": 6, "temperature": 0, "messages": HELLO})
    names = [name for name, _ in frames]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    start = frames[0][1]["message"]
    assert start["id"].startswith("msg_") and start["content"] == []
    assert start["stop_reason"] is None and start["usage"]["input_tokens"] > 0
    middle = names[2:-2]
    if middle:  # one text block: start, deltas, stop
        assert middle[0] == "content_block_start" and middle[-1] == "content_block_stop"
        assert set(middle[1:-1]) <= {"content_block_delta"}
        assert all(d["index"] == 0 for _, d in frames[2:-2])
    delta = frames[-2][1]
    assert delta["delta"]["stop_reason"] in ("end_turn", "max_tokens")
    assert 0 < delta["usage"]["output_tokens"] <= 6


def test_the_sdk_s_stream_helper_gives_the_same_message(client: anthropic.Anthropic) -> None:
    kw: dict[str, Any] = {"model": "tiny", "max_tokens": 8, "messages": HELLO, **GREEDY}
    whole = client.messages.create(**kw)
    with client.messages.stream(**kw) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert [b.to_dict() for b in final.content] == [b.to_dict() for b in whole.content]
    assert streamed_text == "".join(b.text for b in whole.content if b.type == "text")
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens


@pytest.mark.parametrize("model", ["tiny", "hermes"])  # tools in the system text; the template's
def test_count_tokens_is_the_input_of_a_create(client: anthropic.Anthropic, model: str) -> None:
    kw: dict[str, Any] = {"model": model, "system": "You are terse.",
                          "messages": [*HELLO, {"role": "assistant", "content": "Hi"},
                                       {"role": "user", "content": "What now?"}]}
    counted = client.messages.count_tokens(**kw).input_tokens
    msg = client.messages.create(max_tokens=1, **kw)
    assert counted == msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0)
    with_tools = client.messages.count_tokens(tools=[WEATHER], **kw).input_tokens  # type: ignore[list-item]
    assert with_tools > counted  # the tools are in the prompt
    msg = client.messages.create(max_tokens=1, tools=[WEATHER], **kw)  # type: ignore[list-item]
    assert with_tools == msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0)


def test_a_forced_tool_call_and_its_round_trip(client: anthropic.Anthropic) -> None:
    # one call at most: random weights may go on adding calls until max_tokens otherwise
    msg = client.messages.create(model="tiny", max_tokens=200, messages=HELLO, **GREEDY,
                                 tools=[WEATHER],  # type: ignore[list-item]
                                 tool_choice={"type": "any", "disable_parallel_tool_use": True})
    assert msg.stop_reason == "tool_use"
    calls = [b for b in msg.content if b.type == "tool_use"]
    assert calls and calls[0].id.startswith("toolu_") and calls[0].name == "get_weather"
    jsonschema.validate(calls[0].input, WEATHER["input_schema"])
    follow = client.messages.create(
        model="tiny", max_tokens=4, **GREEDY, tools=[WEATHER],  # type: ignore[list-item]
        messages=[*HELLO, {"role": "assistant", "content": msg.content},  # type: ignore[list-item]
                  {"role": "user", "content": [{"type": "tool_result",
                                                "tool_use_id": calls[0].id,
                                                "content": "sunny, 21 C"}]}])
    assert follow.stop_reason in ("end_turn", "max_tokens", "tool_use")


@pytest.mark.parametrize("model", ["tiny", "hermes"])
def test_a_streamed_tool_call_arrives_as_input_json(server: Server, model: str) -> None:
    frames = sse(server, {"model": model, "max_tokens": 200, "temperature": 0,
                          "messages": HELLO, "tools": [WEATHER],
                          "tool_choice": {"type": "tool", "name": "get_weather",
                                          "disable_parallel_tool_use": True}})
    starts = [d for name, d in frames if name == "content_block_start"]
    use = [s for s in starts if s["content_block"]["type"] == "tool_use"]
    assert len(use) == 1 and use[0]["content_block"]["input"] == {}
    index = use[0]["index"]
    parts = [d["delta"]["partial_json"] for name, d in frames if name == "content_block_delta"
             and d["index"] == index]
    jsonschema.validate(json.loads("".join(parts)), WEATHER["input_schema"])
    assert frames[-2][1]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize("body,param_hint", [
    ({"model": "tiny", "messages": HELLO}, "max_tokens"),
    ({"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "AAAA"}}]}]}, "messages[0].content[0]"),
    ({"model": "tiny", "max_tokens": 4, "messages": HELLO,
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"model": "tiny", "max_tokens": 4, "messages": HELLO,
      "thinking": {"type": "enabled", "budget_tokens": 2048}}, "max_tokens"),
    ({"model": "tiny", "max_tokens": 4000, "messages": HELLO,
      "thinking": {"type": "enabled", "budget_tokens": 2048}}, "does not think"),
    ({"model": "tiny", "max_tokens": 4, "messages": HELLO, "temperature": 1.5}, "temperature"),
    ({"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}]},
     "messages[0].content[0].tool_use_id"),
])
def test_a_bad_request_is_a_400_in_anthropic_s_envelope(server: Server, body: dict[str, Any],
                                                        param_hint: str) -> None:
    status, err = post(server, "/v1/messages", body)
    assert status == 400
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert set(err) == {"type", "error"} and set(err["error"]) == {"type", "message"}
    assert param_hint in err["error"]["message"]


def test_the_sdk_raises_its_own_errors(server: Server, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="tiny", max_tokens=4, messages=[
            {"role": "user", "content": [{"type": "document", "source": {
                "type": "text", "media_type": "text/plain", "data": "x"}}]}])  # type: ignore[list-item]
    assert "'document'" in bad.value.message
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.create(model="nope", max_tokens=4, messages=HELLO)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with anthropic.Anthropic(base_url=f"http://127.0.0.1:{server.port}", api_key="wrong",
                             max_retries=0) as wrong, \
            pytest.raises(anthropic.AuthenticationError) as denied:
        wrong.messages.create(model="tiny", max_tokens=4, messages=HELLO)
    assert denied.value.body == {"type": "error", "error": {  # type: ignore[comparison-overlap]
        "type": "authentication_error", "message": "Incorrect API key provided."}}


def test_errors_before_the_handler_are_in_the_envelope_too(server: Server) -> None:
    status, err = post(server, "/v1/messages", {"model": "tiny"}, **{"x-api-key": "wrong"})
    assert status == 401 and err["error"]["type"] == "authentication_error"
    status, err = post(server, "/v1/messages/count_tokens", HELLO, **{"x-api-key": "wrong"})
    assert status == 401 and err["error"]["type"] == "authentication_error"
    status, err = post(server, "/v1/messages", {}, Host="evil.example")
    assert status == 403 and err["error"]["type"] == "permission_error"
    big = {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user",
                                                            "content": "x" * (9 << 20)}]}
    status, err = post(server, "/v1/messages", big)
    assert status == 413 and err == {"type": "error", "error": {
        "type": "request_too_large", "message": err["error"]["message"]}}
    r = server.request("GET", "/v1/messages", headers={"x-api-key": API_KEY})
    assert r.status == 405 and r.json()["type"] == "error"
    # the other routes keep OpenAI's envelope
    r = server.request("POST", "/v1/chat/completions", {}, headers={"x-api-key": "wrong"})
    assert r.status == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_bearer_auth_and_anthropic_headers_are_accepted(server: Server) -> None:
    status, _ = post(server, "/v1/messages/count_tokens", {"model": "tiny", "messages": HELLO},
                     **{"x-api-key": "", "Authorization": f"Bearer {API_KEY}",
                        "anthropic-beta": "token-counting-2024-11-01"})
    assert status == 200


def test_messages_are_counted_by_endpoint(server: Server) -> None:
    before = scrape(server)
    status, _ = post(server, "/v1/messages", {"model": "tiny", "max_tokens": 2,
                                              "messages": HELLO})
    assert status == 200
    status, _ = post(server, "/v1/messages/count_tokens", {"model": "tiny", "messages": HELLO})
    assert status == 200
    status, _ = post(server, "/v1/messages", {"model": "tiny", "messages": HELLO})
    assert status == 400
    after = scrape(server)
    for args in (("messages", "tiny", "200", "key1"),
                 ("messages.count_tokens", "tiny", "200", "key1"),
                 ("messages", "-", "400", "key1")):
        assert requests(after, *args) == requests(before, *args) + 1, args


def test_thinking_comes_as_thinking_blocks(client: anthropic.Anthropic, server: Server) -> None:
    kw: dict[str, Any] = {"model": "thinker", "max_tokens": 12, "messages": HELLO, **GREEDY}
    msg = client.messages.create(**kw)
    assert msg.content and msg.content[0].type == "thinking"
    assert msg.content[0].thinking and msg.content[0].signature == ""
    with client.messages.stream(**kw) as stream:
        final = stream.get_final_message()
    assert [b.to_dict() for b in final.content] == [b.to_dict() for b in msg.content]
    frames = sse(server, kw | {"extra_body": None, "temperature": 0})
    deltas = {d["delta"]["type"] for name, d in frames if name == "content_block_delta"
              and d["index"] == 0}
    assert deltas == {"thinking_delta"}


def test_thinking_enabled_for_a_model_that_thinks(client: anthropic.Anthropic) -> None:
    """Claude Code and other Anthropic apps may ask for thinking: for a model whose template
    thinks it is what it does anyway; asking it not to think is a 400 (hearth cannot switch it
    off), and so is asking a model that does not think to think."""
    kw: dict[str, Any] = {"max_tokens": 2000, "messages": HELLO, **GREEDY}
    msg = client.messages.create(model="thinker", **kw,
                                 thinking={"type": "enabled", "budget_tokens": 1024})
    assert msg.content and msg.content[0].type == "thinking"
    counted = client.messages.count_tokens(model="thinker", messages=HELLO,
                                           thinking={"type": "adaptive"})
    assert counted.input_tokens > 0
    with pytest.raises(anthropic.BadRequestError) as off:
        client.messages.create(model="thinker", **kw, thinking={"type": "disabled"})
    assert "cannot switch that off" in off.value.message
    with pytest.raises(anthropic.BadRequestError) as on:
        client.messages.create(model="tiny", **kw, thinking={"type": "adaptive"})
    assert "does not think" in on.value.message
    plain = client.messages.create(model="tiny", **kw, thinking={"type": "disabled"})
    assert plain.content[0].type == "text"


def test_the_request_log_has_a_line_per_messages_request(server: Server) -> None:
    status, msg = post(server, "/v1/messages", {"model": "tiny", "max_tokens": 3,
                                                "messages": [{"role": "user", "content": "log"}]})
    assert status == 200
    prompt = msg["usage"]["input_tokens"] + msg["usage"]["cache_read_input_tokens"]
    line = (f"200 POST /v1/messages key=key1 model=tiny prompt_tokens={prompt} "
            f"completion_tokens={msg['usage']['output_tokens']} ")
    status, _ = post(server, "/v1/messages/count_tokens", {"model": "tiny", "messages": HELLO})
    assert status == 200
    logged = server.wait_for_stdout("") + "".join(server.stderr)
    assert line in logged
    assert "200 POST /v1/messages/count_tokens key=key1 model=tiny" in logged
