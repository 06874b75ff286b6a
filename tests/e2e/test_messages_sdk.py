"""Anthropic's Messages API with the official ``anthropic`` SDK against the default instruct model
(smollm2-135m-instruct; ChatML, so tools go through hearth's generic envelope): ``create``,
``stream`` with its event helpers, ``text_stream`` and ``get_final_message()``, a tool round
trip, and ``count_tokens``. Greedy (``temperature`` 0, sent as an extra field: SDK 2.x no longer
names it) and one request at a time, so the answers are the model's own and repeatable."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import pytest
from harness import Server
from hearth.tools.cli.bootstrap import DEFAULT_MODEL_ID as MODEL

pytestmark = pytest.mark.e2e

GREEDY: dict[str, Any] = {"extra_body": {"temperature": 0}}
WEATHER: dict[str, Any] = {
    "name": "get_weather", "description": "Get the current weather in a city",
    "input_schema": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}
QUESTION: list[Any] = [{"role": "user", "content": "What is the weather like in Paris today?"}]


def root_url(server: Server) -> str:
    """The SDK's base_url: the server's root (the SDK adds /v1/messages)."""
    return server.base_url.removesuffix("/v1")


@pytest.fixture
def client(default_server: Server) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=root_url(default_server),
                             api_key=default_server.api_key, max_retries=0, timeout=120) as c:
        yield c


def test_create(client: anthropic.Anthropic) -> None:
    msg = client.messages.create(model=MODEL, max_tokens=40, system="You are a helpful assistant.",
                                 messages=[{"role": "user",
                                            "content": "What is the capital of France?"}],
                                 **GREEDY)
    assert msg.id.startswith("msg_") and msg.model == MODEL and msg.role == "assistant"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].type == "text" and "Paris" in msg.content[0].text
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    assert msg.usage.input_tokens + (msg.usage.cache_read_input_tokens or 0) > 10
    assert 0 < msg.usage.output_tokens < 40


def test_stream_helpers_and_final_message(client: anthropic.Anthropic) -> None:
    kw: dict[str, Any] = {"model": MODEL, "max_tokens": 30, **GREEDY,
                          "messages": [{"role": "user", "content": "Name three colours."}]}
    whole = client.messages.create(**kw)
    kinds: list[str] = []
    texts: list[str] = []
    with client.messages.stream(**kw) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "text":  # the helper's own event, with the snapshot so far
                texts.append(event.text)
                assert event.snapshot.endswith(event.text)
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "text",
            "message_delta"} <= set(kinds)
    assert [b.to_dict() for b in final.content] == [b.to_dict() for b in whole.content]
    assert "".join(texts) == whole.content[0].text  # type: ignore[union-attr]
    assert (final.stop_reason, final.usage.output_tokens) == \
        (whole.stop_reason, whole.usage.output_tokens)
    with client.messages.stream(**kw) as stream:
        assert "".join(stream.text_stream) == whole.content[0].text  # type: ignore[union-attr]


def test_max_tokens_and_stop_sequences(client: anthropic.Anthropic) -> None:
    cut = client.messages.create(model=MODEL, max_tokens=3, messages=QUESTION, **GREEDY)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 3
    free = client.messages.create(model=MODEL, max_tokens=40, messages=QUESTION, **GREEDY)
    text = free.content[0].text  # type: ignore[union-attr]
    word = text.split()[2]
    stopped = client.messages.create(model=MODEL, max_tokens=40, messages=QUESTION,
                                     stop_sequences=[word], **GREEDY)
    assert (stopped.stop_reason, stopped.stop_sequence) == ("stop_sequence", word)
    assert stopped.content[0].text == text[:text.index(word)]  # type: ignore[union-attr]


def test_tool_round_trip(client: anthropic.Anthropic) -> None:
    first = client.messages.create(model=MODEL, max_tokens=100, messages=QUESTION,
                                   tools=[WEATHER], tool_choice={"type": "any"},  # type: ignore[list-item]
                                   **GREEDY)
    assert first.stop_reason == "tool_use"
    calls = [b for b in first.content if b.type == "tool_use"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].id.startswith("toolu_")
    jsonschema.validate(calls[0].input, WEATHER["input_schema"])
    assert calls[0].input["city"] == "Paris"  # type: ignore[index]
    answer = client.messages.create(
        model=MODEL, max_tokens=100, tools=[WEATHER], **GREEDY,  # type: ignore[list-item]
        messages=[*QUESTION, {"role": "assistant", "content": first.content},  # type: ignore[list-item]
                  {"role": "user", "content": [{
                      "type": "tool_result", "tool_use_id": calls[0].id,
                      "content": json.dumps({"temperature_c": 21, "sky": "sunny"})}]}])
    assert answer.stop_reason == "end_turn"
    assert [b.type for b in answer.content] == ["text"]
    assert "sunny" in answer.content[0].text.lower()  # type: ignore[union-attr]


def test_streamed_tool_call(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=100, messages=QUESTION,
                                tools=[WEATHER], **GREEDY,  # type: ignore[list-item]
                                tool_choice={"type": "tool", "name": "get_weather"}) as stream:
        partial = [e for e in stream if e.type == "input_json"]
        final = stream.get_final_message()
    calls = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and [c.name for c in calls] == ["get_weather"]
    assert partial and partial[-1].snapshot == calls[0].input


def test_count_tokens(client: anthropic.Anthropic) -> None:
    kw: dict[str, Any] = {"model": MODEL, "system": "You are a helpful assistant.",
                          "messages": QUESTION}
    counted = client.messages.count_tokens(**kw)
    msg = client.messages.create(max_tokens=1, **kw, **GREEDY)
    assert counted.input_tokens == msg.usage.input_tokens + (msg.usage.cache_read_input_tokens
                                                             or 0)
    with_tools = client.messages.count_tokens(tools=[WEATHER], **kw)  # type: ignore[list-item]
    assert with_tools.input_tokens > counted.input_tokens


def test_readme_messages_example_prints_what_it_says(
        default_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Anthropic's Messages API"):
                     readme.index("### Request fields")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    code = "\n".join(blocks).replace('"http://127.0.0.1:1337"', repr(root_url(default_server)))
    code = code.replace('"<the key hearth printed>"', repr(default_server.api_key))
    exec(compile(code, "README.md", "exec"), {})
    said = [line.removeprefix("# ") for block in blocks for line in block.splitlines()
            if line.startswith("# ")]
    assert capsys.readouterr().out.splitlines() == said
