"""Tool calling through real processes on the tiny random-weight model, with the official SDK:
one copy built with a Hermes-style chat template (``<tool_call>`` family), one with the plain
ChatML template (the generic envelope). Random weights write nonsense, but the grammar holds it
to the calls' shape: every call that comes back names an offered function and its arguments
validate against that function's schema (``jsonschema``); the family's markup never reaches
content; a stream reassembles the same calls as the whole answer."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from harness import Server
from hearth.tools.cli.tiny_model import ORDINARY_END, build_tiny_model

pytestmark = pytest.mark.integration

# A Hermes-style template (written for this test from the format's description): tools in the
# system turn, calls as <tool_call> blocks, results as <tool_response> in a user turn.
HERMES_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nYou may call these functions:\n<tools>\n"
    "{%- for t in tools %}{{ t | tojson }}\n{% endfor %}</tools>\n"
    "Call one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call><|im_end|>\n"
    "{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and m.tool_calls %}<|im_start|>assistant\n"
    "{%- for c in m.tool_calls %}<tool_call>\n{\"name\": \"{{ c.function.name }}\", "
    "\"arguments\": {{ c.function.arguments | tojson }}}\n</tool_call>{% endfor %}<|im_end|>\n"
    "{%- elif m.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ m.content }}\n"
    "</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Mistral's v11 format (written for this test from Mistral Small 3.2's template): calls as
# [TOOL_CALLS]name[ARGS]{arguments}; the tiny vocabulary writes the markers as plain text.
MISTRAL_V11_TEMPLATE = (
    "{%- if tools %}[AVAILABLE_TOOLS]{{ tools | tojson }}[/AVAILABLE_TOOLS]{%- endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'user' %}[INST]{{ m.content }}[/INST]"
    "{%- elif m.role == 'assistant' and m.tool_calls %}{%- for c in m.tool_calls %}"
    "[TOOL_CALLS]{{ c.function.name }}[ARGS]{{ c.function.arguments | tojson }}{%- endfor %}</s>"
    "{%- elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]"
    "{%- else %}{{ m.content }}</s>{%- endif %}{%- endfor %}"
)

WEATHER: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"], "additionalProperties": False}}}
ALARM: dict[str, Any] = {"type": "function", "function": {
    "name": "set_alarm", "parameters": {"type": "object", "properties": {
        "hour": {"type": "integer"}, "loud": {"type": "boolean"},
        "days": {"type": "array", "items": {"enum": ["mon", "tue"]}, "maxItems": 2},
        "label": {"anyOf": [{"type": "string", "maxLength": 8}, {"type": "null"}]}},
        "required": ["hour", "loud"]}}}
NOARGS: dict[str, Any] = {"type": "function", "function": {"name": "ping"}}
TOOLS = [WEATHER, ALARM, NOARGS]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object"})
           for t in TOOLS}
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
MARKUP = ("<tool_call>", "</tool_call>", '{"tool_calls"', '{"content"', "[TOOL_CALLS]", "[ARGS]")


# A template whose generation prompt opens the thinking (as DeepSeek-R1 distills' do).
THINKING_TEMPLATE = (
    "{%- for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("tool-models")
    shutil.copy(tiny_model_path, d / "tiny.gguf")
    build_tiny_model(d / "hermes.gguf", chat_template=HERMES_TEMPLATE)
    build_tiny_model(d / "mistral11.gguf", chat_template=MISTRAL_V11_TEMPLATE)
    build_tiny_model(d / "thinker.gguf", chat_template=THINKING_TEMPLATE)
    build_tiny_model(d / "closer.gguf", chat_template=THINKING_TEMPLATE,
                     extra_pieces=["</think>"])
    srv = Server(d, "tiny", tmp_path_factory.mktemp("home"),
                 args=("--parallel", "2", "--ctx-size", "2048", "--threads", "1"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key or "none",
                         max_retries=0, timeout=120)


def check_calls(calls: list[tuple[str, str]], allowed: set[str], finish: str | None) -> None:
    """Every call names an offered function and its arguments validate; with ``finish``
    "length" the last one may have been cut while its arguments streamed."""
    for i, (name, arguments) in enumerate(calls):
        assert name in allowed
        if finish == "length" and i == len(calls) - 1:
            assert arguments.startswith("{")
            continue
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def whole(client: openai.OpenAI, model: str, **kw: Any) -> tuple[Any, list[tuple[str, str]]]:
    out = client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS, **kw)
    choice = out.choices[0]
    calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
    for c in choice.message.tool_calls or []:
        assert c.id.startswith("call_") and c.type == "function"
    return choice, calls


def streamed(client: openai.OpenAI, model: str, **kw: Any) -> tuple[
        str, str | None, list[tuple[str, str]], int]:
    """(content, finish_reason, calls, how many argument deltas) of a stream, the calls
    reassembled by hand from OpenAI's delta shape (the first delta of a call has its id, type,
    name and empty arguments)."""
    content, finish, pieces = "", None, 0
    calls: dict[int, list[str]] = {}
    for chunk in client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS,
                                                stream=True, **kw):
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        content += delta.content or ""
        for tc in delta.tool_calls or []:
            if tc.index not in calls:
                assert tc.id and tc.id.startswith("call_") and tc.type == "function"
                assert tc.function and tc.function.name and tc.function.arguments == ""
                assert tc.index == len(calls)
                calls[tc.index] = [tc.function.name, ""]
            else:
                assert tc.id is None and tc.function and tc.function.name is None
                calls[tc.index][1] += tc.function.arguments or ""
                pieces += 1
        finish = chunk.choices[0].finish_reason or finish
    return content, finish, [(n, a) for n, a in (calls[i] for i in sorted(calls))], pieces


@pytest.mark.parametrize("model", ["hermes", "tiny", "mistral11"])
@pytest.mark.parametrize("parallel", [True, False])
def test_required_calls_always_parse_and_validate(client: openai.OpenAI, model: str,
                                                  parallel: bool) -> None:
    done, called = 0, 0
    for seed in range(6):
        choice, calls = whole(client, model, tool_choice="required", seed=seed,
                              max_tokens=200, parallel_tool_calls=parallel)
        check_calls(calls, set(SCHEMAS), choice.finish_reason)
        called += bool(calls)
        if choice.finish_reason == "length":
            continue  # cut: the only way an answer may be incomplete
        done += 1
        assert choice.finish_reason == "tool_calls"
        assert calls and (parallel or len(calls) == 1)
        assert choice.message.content is None
    # Random weights may go on adding calls until max_tokens; one call is all parallel off allows
    assert called and (parallel or done), "no call within max_tokens"


@pytest.mark.parametrize("model", ["hermes", "tiny"])
def test_named_function_is_the_one_called(client: openai.OpenAI, model: str) -> None:
    for seed in range(3):
        choice, calls = whole(client, model, seed=seed, max_tokens=200,
                              tool_choice={"type": "function", "function": {"name": "set_alarm"}},
                              parallel_tool_calls=False)
        assert choice.finish_reason == "tool_calls"
        assert [n for n, _ in calls] == ["set_alarm"]
        check_calls(calls, {"set_alarm"}, choice.finish_reason)


@pytest.mark.parametrize("model", ["hermes", "tiny"])
def test_auto_answers_are_text_or_valid_calls(client: openai.OpenAI, model: str) -> None:
    for seed in range(4):
        choice, calls = whole(client, model, seed=seed, max_tokens=60)
        check_calls(calls, set(SCHEMAS), choice.finish_reason)
        assert not any(m in (choice.message.content or "") for m in MARKUP[:2])
        if model == "tiny" and choice.finish_reason != "length":  # the envelope was closed
            assert not any(m in (choice.message.content or "") for m in MARKUP)


@pytest.mark.parametrize("model", ["hermes", "tiny", "mistral11"])
def test_stream_reassembles_the_same_calls(client: openai.OpenAI, model: str) -> None:
    kw: dict[str, Any] = {"tool_choice": "required", "seed": 2, "max_tokens": 200,
                          "parallel_tool_calls": False}
    choice, calls = whole(client, model, **kw)
    content, finish, stream_calls, pieces = streamed(client, model, **kw)
    assert (finish, stream_calls) == (choice.finish_reason, calls)
    assert finish == "tool_calls" and len(calls) == 1
    assert pieces > 1  # the arguments came in pieces as they were written
    assert content == (choice.message.content or "")
    # the SDK's own stream helper agrees
    with client.chat.completions.stream(model=model, messages=MESSAGES, tools=TOOLS,
                                        **kw) as stream:
        final = stream.get_final_completion()
    helper = [(c.function.name, c.function.arguments)
              for c in final.choices[0].message.tool_calls or []]
    assert helper == calls


@pytest.mark.parametrize("model", ["hermes", "tiny"])
def test_round_trip_with_a_tool_result(client: openai.OpenAI, model: str) -> None:
    messages: list[Any] = [
        *MESSAGES,
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 21}'}]
    out = client.chat.completions.create(model=model, messages=messages, tools=TOOLS,
                                         max_tokens=8, seed=1)
    assert out.choices[0].finish_reason in ("length", "stop", "tool_calls")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, max_tokens=8, tools=TOOLS, messages=[
            *messages[:2], {"role": "tool", "tool_call_id": "call_9", "content": "x"}])
    assert err.value.body["param"] == "messages[2].tool_call_id"  # type: ignore[index]


def test_requests_with_and_without_tools_side_by_side(client: openai.OpenAI) -> None:
    """Grammar state is per slot: a constrained request beside free ones (2 slots)."""
    from concurrent.futures import ThreadPoolExecutor

    def free(seed: int) -> str:
        out = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=30,
                                             seed=seed)
        return out.choices[0].finish_reason or ""

    def bound(seed: int) -> list[tuple[str, str]]:
        choice, calls = whole(client, "tiny", tool_choice="required", seed=seed, max_tokens=200)
        if choice.finish_reason != "length":
            assert calls
        check_calls(calls, set(SCHEMAS), choice.finish_reason)
        return calls

    with ThreadPoolExecutor(4) as pool:
        frees = [pool.submit(free, s) for s in range(3)]
        bounds = [pool.submit(bound, s) for s in range(3)]
        assert [f.result() for f in frees] == ["length"] * 3
        for b in bounds:
            b.result()


def test_thinking_goes_to_reasoning_content(client: openai.OpenAI) -> None:
    """Random weights never close the thinking: every token is reasoning, none is content,
    streamed or not, and usage counts them as reasoning tokens."""
    out = client.chat.completions.create(model="thinker", messages=MESSAGES, max_tokens=12,
                                         seed=3)
    message: Any = out.choices[0].message
    assert message.content == "" and message.reasoning_content
    assert out.usage is not None and out.usage.completion_tokens_details is not None
    assert out.usage.completion_tokens_details.reasoning_tokens == out.usage.completion_tokens
    reasoning, content = "", ""
    for chunk in client.chat.completions.create(model="thinker", messages=MESSAGES,
                                                max_tokens=12, seed=3, stream=True):
        if chunk.choices:
            delta: Any = chunk.choices[0].delta
            reasoning += getattr(delta, "reasoning_content", None) or ""
            content += delta.content or ""
    assert (content, reasoning) == ("", message.reasoning_content)


# closer.gguf's one extra piece: "</think>" as a single token, which logit_bias can make likely
# (random weights alone practically never write the eight characters in a row)
THINK_CLOSE_ID = ORDINARY_END
ANSWER_SCHEMA: dict[str, Any] = {"type": "object", "properties": {
    "city": {"type": "string", "enum": ["Paris", "Rome"]}, "days": {"type": "integer"}},
    "required": ["city", "days"], "additionalProperties": False}


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_holds_the_answer_after_the_thinking(client: openai.OpenAI,
                                                             stream: bool) -> None:
    """The prompt opens the thinking; a logit_bias on "</think>" makes the model close it after
    a few tokens. The thinking is free text (the schema does not hold it), the answer after it
    validates, and the model cannot stop before answering."""
    answered = 0
    for seed in range(6):
        kw: dict[str, Any] = {
            "model": "closer", "messages": MESSAGES, "max_tokens": 120, "seed": seed,
            "logit_bias": {str(THINK_CLOSE_ID): 9},
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "answer", "schema": ANSWER_SCHEMA}}}
        if stream:
            reasoning, content, finish = "", "", None
            for chunk in client.chat.completions.create(stream=True, **kw):
                if chunk.choices:
                    delta: Any = chunk.choices[0].delta
                    reasoning += getattr(delta, "reasoning_content", None) or ""
                    content += delta.content or ""
                    finish = chunk.choices[0].finish_reason or finish
        else:
            out = client.chat.completions.create(**kw)
            message: Any = out.choices[0].message
            reasoning, content = message.reasoning_content or "", message.content or ""
            finish = out.choices[0].finish_reason
        assert "</think>" not in reasoning + content
        if finish == "length":
            continue  # cut: the only way an answer may be incomplete
        assert finish == "stop"
        jsonschema.validate(json.loads(content), ANSWER_SCHEMA)
        answered += bool(reasoning.strip())
    assert answered, "no answer after a thinking within max_tokens"


@pytest.mark.parametrize("model", ["hermes", "tiny", "mistral11"])
@pytest.mark.parametrize("stream", [False, True])
def test_response_format_beside_tools_answers_json_or_calls(client: openai.OpenAI, model: str,
                                                           stream: bool) -> None:
    """OpenAI allows both: the answer is either calls or content valid against the schema
    (random weights choose either); the stream gives the same as the whole answer."""
    for seed in range(4):
        kw: dict[str, Any] = {"seed": seed, "max_tokens": 150, "response_format": {
            "type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}}}
        choice, calls = whole(client, model, **kw)
        check_calls(calls, set(SCHEMAS), choice.finish_reason)
        if choice.finish_reason == "length":
            continue
        if calls:
            assert choice.finish_reason == "tool_calls"
        else:
            assert choice.finish_reason == "stop"
            jsonschema.validate(json.loads(choice.message.content or ""), ANSWER_SCHEMA)
        if stream:
            content, finish, stream_calls, _ = streamed(client, model, **kw)
            assert (content, finish, stream_calls) == (
                choice.message.content or "", choice.finish_reason, calls)


@pytest.mark.parametrize("model", ["hermes", "tiny"])
def test_stop_with_active_tools_is_a_400_naming_stop(client: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS,  # type: ignore[arg-type]
                                       stop=["}"], max_tokens=4)
    assert err.value.body["param"] == "stop"  # type: ignore[index]
    out = client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS,  # type: ignore[arg-type]
                                         tool_choice="none", stop=["}"], max_tokens=4)
    assert out.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("model", ["hermes", "tiny"])
def test_each_of_n_choices_makes_its_own_calls(client: openai.OpenAI, model: str) -> None:
    """``n`` with tools: every choice has its own grammar (worker) and parser (api)."""
    kw: dict[str, Any] = {"seed": 4, "max_tokens": 200, "parallel_tool_calls": False, "n": 2,
                          "tool_choice": {"type": "function", "function": {"name": "set_alarm"}}}
    out = client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS, **kw)
    assert [c.index for c in out.choices] == [0, 1]
    for choice in out.choices:
        assert choice.finish_reason == "tool_calls"
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        assert [n for n, _ in calls] == ["set_alarm"]
        check_calls(calls, {"set_alarm"}, choice.finish_reason)
    streamed_calls: dict[int, list[str]] = {}
    finishes: dict[int, str] = {}
    for chunk in client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS,
                                                stream=True, **kw):
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                assert tc.function is not None
                if tc.function.name:
                    streamed_calls[choice.index] = [tc.function.name, ""]
                streamed_calls[choice.index][1] += tc.function.arguments or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "tool_calls", 1: "tool_calls"}
    for name, arguments in streamed_calls.values():
        check_calls([(name, arguments)], {"set_alarm"}, "tool_calls")
