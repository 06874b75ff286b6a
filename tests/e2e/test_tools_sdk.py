"""Tool calling with the official openai SDK and LangChain against the default model
(smollm2-135m-instruct, whose ChatML template has no tool support: hearth's generic envelope).
Greedy, one request at a time, so the answers are the model's own and repeatable."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from harness import Server
from hearth.tools.cli.bootstrap import DEFAULT_MODEL_ID as MODEL
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field, SecretStr
from test_openai_sdk import client

pytestmark = pytest.mark.e2e

WEATHER: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
TIME: dict[str, Any] = {"type": "function", "function": {
    "name": "get_time", "description": "The local time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                   "required": ["zone"]}}}
QUESTION = [{"role": "user", "content": "What is the weather like in Paris today?"}]
RESULT = json.dumps({"temperature_c": 21, "sky": "sunny"})


def weather_call(message: Any) -> Any:
    assert message.content is None and message.tool_calls and len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, WEATHER["function"]["parameters"])
    assert args["city"] == "Paris"
    return call


def round_trip(call: Any) -> list[Any]:
    return [*QUESTION,
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": call.id, "type": "function",
                "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
            {"role": "tool", "tool_call_id": call.id, "content": RESULT}]


def test_weather_round_trip(default_server: Server) -> None:
    with client(default_server) as c:
        first = c.chat.completions.create(model=MODEL, messages=QUESTION,  # type: ignore[arg-type]
                                          tools=[WEATHER, TIME], tool_choice="required",  # type: ignore[list-item]
                                          temperature=0, max_tokens=100)
        assert first.choices[0].finish_reason == "tool_calls"
        call = weather_call(first.choices[0].message)
        answer = c.chat.completions.create(model=MODEL, messages=round_trip(call),
                                           tools=[WEATHER, TIME],  # type: ignore[list-item]
                                           temperature=0, max_tokens=100)
    choice = answer.choices[0]
    assert choice.finish_reason == "stop" and choice.message.tool_calls is None
    assert choice.message.content and "sunny" in choice.message.content.lower()
    assert "{" not in choice.message.content  # the envelope is not in the answer


def test_weather_round_trip_streamed(default_server: Server) -> None:
    with client(default_server) as c:
        kw: dict[str, Any] = {"model": MODEL, "tools": [WEATHER, TIME], "temperature": 0,
                              "max_tokens": 100}
        whole = c.chat.completions.create(messages=QUESTION, tool_choice="required", **kw)
        # raw chunks: OpenAI's delta shape
        chunks = list(c.chat.completions.create(messages=QUESTION, tool_choice="required",
                                                stream=True, **kw))
        deltas = [ch.choices[0].delta.tool_calls[0] for ch in chunks
                  if ch.choices and ch.choices[0].delta.tool_calls]
        assert deltas[0].index == 0 and deltas[0].id and deltas[0].id.startswith("call_")
        assert deltas[0].function and deltas[0].function.name == "get_weather"
        assert deltas[0].function.arguments == ""
        assert "".join(d.function.arguments or "" for d in deltas[1:] if d.function) == \
            whole.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index]
        assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "tool_calls"
        # the SDK's stream helper reassembles the same call
        with c.chat.completions.stream(messages=QUESTION, tool_choice="required", **kw) as s:
            final = s.get_final_completion()
        call = weather_call(final.choices[0].message)
        assert call.function.arguments == \
            whole.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index]
        text = ""
        with c.chat.completions.stream(messages=round_trip(call), **kw) as s:
            for event in s:
                if event.type == "content.delta":
                    text += event.delta
            answer = s.get_final_completion()
    assert answer.choices[0].finish_reason == "stop"
    assert text == answer.choices[0].message.content and "sunny" in text.lower()


def test_named_tool_choice(default_server: Server) -> None:
    with client(default_server) as c:
        out = c.chat.completions.create(
            model=MODEL, messages=QUESTION, tools=[WEATHER, TIME],  # type: ignore[arg-type, list-item]
            tool_choice={"type": "function", "function": {"name": "get_time"}},
            temperature=0, max_tokens=100)
    calls = out.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_time"]  # type: ignore[union-attr]
    assert isinstance(json.loads(calls[0].function.arguments)["zone"], str)  # type: ignore[union-attr]


def test_tool_choice_errors(default_server: Server) -> None:
    with client(default_server) as c:
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(model=MODEL, messages=QUESTION,  # type: ignore[arg-type]
                                      tool_choice="required", max_tokens=5)
        assert err.value.body["param"] == "tool_choice"  # type: ignore[index]
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(model=MODEL, messages=QUESTION, tools=[WEATHER],  # type: ignore[arg-type, list-item]
                                      tool_choice={"type": "function",
                                                   "function": {"name": "nope"}}, max_tokens=5)
        assert err.value.body["param"] == "tool_choice"  # type: ignore[index]


def test_langchain_bind_tools(default_server: Server) -> None:
    def get_weather(city: str) -> str:
        """Get the current weather in a city."""
        return "sunny"

    with openai.DefaultHttpxClient() as http:
        llm = ChatOpenAI(model=MODEL, base_url=default_server.base_url,
                         api_key=SecretStr(default_server.api_key or ""), temperature=0,
                         max_retries=0, http_client=http)
        msg = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(
            "What is the weather like in Paris today?")
    assert [c["name"] for c in msg.tool_calls] == ["get_weather"]  # type: ignore[attr-defined]
    assert msg.tool_calls[0]["args"]["city"] == "Paris"  # type: ignore[attr-defined]


def test_readme_tool_calling_examples_print_what_they_say(
        default_server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Tool calling"):readme.index("### Embeddings")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    code = "\n".join(blocks).replace('"http://127.0.0.1:1337/v1"', repr(default_server.base_url))
    code = code.replace('"<the key hearth printed>"', repr(default_server.api_key))
    exec(compile(code, "README.md", "exec"), {})
    said = [line.removeprefix("# ") for line in blocks[0].splitlines() if line.startswith("# ")]
    printed = capsys.readouterr().out.splitlines()
    assert printed[:2] == said
    assert printed[2] == said[0]  # the streamed call is the same


class Capital(BaseModel):
    """A country's capital city."""

    city: str = Field(description="The capital city")
    country: str = Field(description="The country")


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_langchain_with_structured_output(default_server: Server, method: str) -> None:
    """LangChain's ``with_structured_output`` in each of its modes: ``json_schema`` (its
    default: ``response_format`` with the model's schema), ``function_calling`` (a tool named
    after the model, forced with ``tool_choice``) and ``json_mode`` (``json_object``: the prompt
    must say the keys). The answer parses into the Pydantic model."""
    question = "What is the capital of France?"
    if method == "json_mode":
        question += ' Answer in JSON with the keys "city" and "country".'
    with openai.DefaultHttpxClient() as http:
        llm = ChatOpenAI(model=MODEL, base_url=default_server.base_url,
                         api_key=SecretStr(default_server.api_key or ""), temperature=0,
                         max_retries=0, http_client=http, max_completion_tokens=100)
        out = llm.with_structured_output(Capital, method=method).invoke(question)
    assert isinstance(out, Capital)
    assert out.city == "Paris"
