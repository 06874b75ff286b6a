"""The Responses API with the official openai SDK, unchanged, against hearth serving the default
model (smollm2-135m-instruct): ``responses.create``, ``responses.stream`` with its event helpers
and final response, ``previous_response_id``, a function tool round trip, ``text.format``
json_schema and ``responses.parse`` with a Pydantic model, and the README's example. Greedy, one
request at a time, so the answers are the model's own and repeatable."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from harness import Server
from hearth.tools.cli.bootstrap import DEFAULT_MODEL_ID as MODEL
from pydantic import BaseModel
from test_openai_sdk import client

pytestmark = pytest.mark.e2e

BRIEF = "You answer in one short sentence."
WEATHER: dict[str, Any] = {
    "type": "function", "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}, "strict": True}
TIME: dict[str, Any] = {
    "type": "function", "name": "get_time", "description": "The local time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                   "required": ["zone"]}, "strict": True}


def test_create(default_server: Server) -> None:
    with client(default_server) as c:
        resp = c.responses.create(model=MODEL, input="Name three colours.", instructions=BRIEF,
                                  temperature=0, max_output_tokens=60)
    assert resp.id.startswith("resp_") and resp.status == "completed"
    [item] = resp.output
    assert item.type == "message" and item.status == "completed"
    assert resp.output_text and resp.output_text == item.content[0].text  # type: ignore[union-attr]
    assert resp.usage is not None and resp.usage.output_tokens > 0


def test_stream_with_the_sdk_helper(default_server: Server) -> None:
    with client(default_server) as c:
        deltas: list[str] = []
        with c.responses.stream(model=MODEL, input="Name three colours.", instructions=BRIEF,
                                temperature=0, max_output_tokens=60) as stream:
            for event in stream:
                if event.type == "response.output_text.delta":
                    deltas.append(event.delta)
                    assert event.snapshot == "".join(deltas)  # the helper's running text
                elif event.type == "response.output_text.done":
                    done_text = event.text
            final = stream.get_final_response()
        whole = c.responses.create(model=MODEL, input="Name three colours.", instructions=BRIEF,
                                   temperature=0, max_output_tokens=60)
    assert final.status == "completed"
    assert final.output_text == "".join(deltas) == done_text
    assert final.output_text == whole.output_text  # streamed or not, the same answer


def test_previous_response_id_continues_the_conversation(default_server: Server) -> None:
    with client(default_server) as c:
        first = c.responses.create(model=MODEL, input="My name is Ada.", instructions=BRIEF,
                                   temperature=0, max_output_tokens=40)
        alone = c.responses.create(model=MODEL, input="What is my name?", instructions=BRIEF,
                                   temperature=0, max_output_tokens=40)
        second = c.responses.create(model=MODEL, input="What is my name?", instructions=BRIEF,
                                    previous_response_id=first.id, temperature=0,
                                    max_output_tokens=40)
        items = c.responses.input_items.list(second.id, order="asc").data
    assert first.usage and alone.usage and second.usage
    # the prompt held the first exchange: its input and its answer, then the question
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    assert [(i.role, i.content[0].text) for i in items] == [  # type: ignore[union-attr]
        ("user", "My name is Ada."), ("assistant", first.output_text),
        ("user", "What is my name?")]


def test_function_tool_round_trip(default_server: Server) -> None:
    with client(default_server) as c:
        first = c.responses.create(model=MODEL, input="What is the weather like in Paris today?",
                                   tools=[WEATHER, TIME], tool_choice="required",  # type: ignore[list-item]
                                   temperature=0, max_output_tokens=100)
        [call] = first.output
        assert call.type == "function_call" and call.name == "get_weather"
        assert call.call_id.startswith("call_") and call.status == "completed"
        args = json.loads(call.arguments)
        jsonschema.validate(args, WEATHER["parameters"])
        assert args["city"] == "Paris"
        result = json.dumps({"temperature_c": 21, "sky": "sunny"})
        # stateless: the call and its output sent back as input items
        stateless = c.responses.create(
            model=MODEL, tools=[WEATHER, TIME], temperature=0, max_output_tokens=100,  # type: ignore[list-item]
            input=[{"role": "user", "content": "What is the weather like in Paris today?"},
                   {"type": "function_call", "call_id": call.call_id, "name": call.name,
                    "arguments": call.arguments},
                   {"type": "function_call_output", "call_id": call.call_id, "output": result}])
        # stored: previous_response_id, then only the output
        stored = c.responses.create(
            model=MODEL, tools=[WEATHER, TIME], temperature=0, max_output_tokens=100,  # type: ignore[list-item]
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": result}])
    for answer in (stateless, stored):
        assert answer.status == "completed" and [i.type for i in answer.output] == ["message"]
        assert "sunny" in answer.output_text.lower() and "{" not in answer.output_text


def test_streamed_function_call(default_server: Server) -> None:
    with client(default_server) as c:
        with c.responses.stream(model=MODEL, input="What is the weather like in Paris today?",
                                tools=[WEATHER], tool_choice="required",  # type: ignore[list-item]
                                temperature=0, max_output_tokens=100) as stream:
            kinds = [event.type for event in stream]
            final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    [call] = final.output
    assert call.type == "function_call" and json.loads(call.arguments)["city"] == "Paris"


SKY: dict[str, Any] = {"type": "object", "properties": {
    "colours": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    "mood": {"type": "string", "enum": ["happy", "sad", "calm"]}},
    "required": ["colours", "mood"], "additionalProperties": False}


def test_text_format_json_schema(default_server: Server) -> None:
    with client(default_server) as c:
        resp = c.responses.create(
            model=MODEL, input="Name up to three colours of the sky.", temperature=0,
            max_output_tokens=100,
            text={"format": {"type": "json_schema", "name": "sky", "schema": SKY,
                             "strict": True}})
    assert resp.status == "completed"
    jsonschema.validate(json.loads(resp.output_text), SKY)


class City(BaseModel):
    name: str
    country: str


def test_parse_with_a_pydantic_model(default_server: Server) -> None:
    with client(default_server) as c:
        resp = c.responses.parse(model=MODEL, input="Name a famous city and its country.",
                                 text_format=City, temperature=0, max_output_tokens=60)
    assert resp.status == "completed"
    assert isinstance(resp.output_parsed, City) and resp.output_parsed.name


def test_readme_responses_examples_print_what_they_say(
        default_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("### Responses API")
    section = readme[start:readme.index("\n### ", start + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    code = "\n".join(blocks).replace('"http://127.0.0.1:1337/v1"', repr(default_server.base_url))
    code = code.replace('"<the key hearth printed>"', repr(default_server.api_key))
    exec(compile(code, "README.md", "exec"), {})
    said = [line.removeprefix("# ") for block in blocks for line in block.splitlines()
            if line.startswith("# ")]
    assert capsys.readouterr().out.splitlines() == said
