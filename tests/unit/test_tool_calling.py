"""Tool fields of a chat request: the 400s (each naming its field), the family a template belongs
to, the job's messages for templates without tool support, and grammars that llama.cpp parses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
from hearth.api import openai_types
from hearth.api.tool_calling import ToolPlan, generic_messages, plan_tools
from hearth.api.tool_families import Family, Thinking, family_of, thinking_of
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import ChatMessage, Grammar, ToolCall
from hypothesis import given, settings
from hypothesis import strategies as st

WEATHER: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["location"]}}}
TIME: dict[str, Any] = {"type": "function", "function": {"name": "get_time"}}
HERMES = "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}<tool_call>"
LLAMA3 = "{% if tools %}{{ tools }}{% endif %}<|python_tag|>"
MISTRAL = "{% if tools %}[AVAILABLE_TOOLS]{{ tools }}{% endif %}[TOOL_CALLS]"
# Mistral Small 3.2 / Devstral's way of writing a call (their templates, shortened)
MISTRAL_V11 = ("{% if tools %}[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS]{% endif %}"
               "{%- for tool in m.tool_calls %}{{ '[TOOL_CALLS]' + tool.function.name + '[ARGS]'"
               " + tool.function.arguments }}{%- endfor %}")
QWEN3 = (HERMES + "{% if m.reasoning_content %}<think>{% endif %}{%- if add_generation_prompt %}"
         "<|im_start|>assistant\n{%- if enable_thinking is defined and enable_thinking is false"
         " %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")
R1 = "{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"


def plan(body: dict[str, Any], template: str | None = None) -> ToolPlan:
    full = {"model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}], **body}
    req = openai_types.parse_chat_request(json.dumps(full).encode())
    return plan_tools(req, openai_types.chat_messages(req), template)


def refused(body: dict[str, Any], template: str | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        plan(body, template)
    return err.value


def test_families_from_template_text() -> None:
    assert family_of(HERMES) is Family.HERMES
    assert family_of(LLAMA3) is Family.LLAMA3
    assert family_of(MISTRAL) is Family.MISTRAL
    assert family_of(MISTRAL_V11) is Family.MISTRAL_V11
    assert family_of(None) is Family.GENERIC
    assert family_of("<|im_start|>{{ m }}") is Family.GENERIC
    assert family_of("<tool_call> and nothing else") is Family.GENERIC
    assert thinking_of(HERMES) is Thinking.NONE
    assert thinking_of(QWEN3) is Thinking.TAGGED
    assert thinking_of(R1) is Thinking.OPEN


@pytest.mark.parametrize("body,param", [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
     "tool_choice"),
    ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
    ({"tools": [WEATHER] * 129}, "tools"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
     "tools[0].function.name"),
    ({"tools": [{"type": "retrieval", "function": {"name": "f"}}]}, "tools[0].type"),
    ({"tools": [TIME, {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}}}]},
     "tools[1].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"n": {"type": "nonsense"}}}}}]},
     "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "string"}}}]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "$ref": "https://example.com/s.json"}}}]}, "tools[0].function.parameters"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}}]},
     "tools[0].function.parameters"),
])
def test_bad_tool_fields_are_400s_naming_the_field(body: dict[str, Any], param: str) -> None:
    assert refused(body).param == param


def test_tool_message_must_answer_an_earlier_call() -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}
    ok = [{"role": "user", "content": "Weather?"},
          {"role": "assistant", "content": None, "tool_calls": [call]},
          {"role": "tool", "tool_call_id": "call_1", "content": "20 C"}]
    plan({"messages": ok, "tools": [WEATHER]})
    wrong = [*ok[:2], {"role": "tool", "tool_call_id": "call_2", "content": "20 C"}]
    assert refused({"messages": wrong, "tools": [WEATHER]}).param == "messages[2].tool_call_id"
    early = [ok[0], ok[2], ok[1]]
    assert refused({"messages": early, "tools": [WEATHER]}).param == "messages[1].tool_call_id"
    # found by a review: a tool message with no id answered nothing and was let through
    bare = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "x"}]
    for body in ({"messages": bare}, {"messages": bare, "tools": [WEATHER]}):
        assert refused(body).param == "messages[1].tool_call_id"


def test_choices() -> None:
    assert not plan({}).active and plan({}).grammar is None
    assert not plan({"tools": [WEATHER], "tool_choice": "none"}).active
    auto = plan({"tools": [WEATHER, TIME]}, HERMES)
    assert auto.active and auto.grammar is not None and auto.grammar.triggers == ["<tool_call>"]
    assert [t.name for t in auto.job_tools()] == ["get_weather", "get_time"]
    req = plan({"tools": [WEATHER], "tool_choice": "required"}, HERMES)
    assert req.grammar is not None and req.grammar.triggers == []
    generic = plan({"tools": [WEATHER]})
    assert generic.grammar is not None and generic.grammar.triggers == []
    assert generic.job_tools() == []  # described in the system prompt instead
    named = plan({"tools": [WEATHER, TIME],
                  "tool_choice": {"type": "function", "function": {"name": "get_time"}}})
    assert named.grammar is not None and "get_weather" not in named.grammar.gbnf.split(
        "root ::=")[1].split("\n")[0] and '\\"get_time\\"' in named.grammar.gbnf


def test_control_token_markers_are_shown_as_text() -> None:
    """The markers a family's parser reads that are control tokens in its models' vocabularies
    are streamed as their text (ChatJob.shown_tokens); only while tools are active."""
    assert plan({"tools": [WEATHER]}, LLAMA3).shown_tokens() == ["<|python_tag|>"]
    assert plan({"tools": [WEATHER], "tool_choice": "required"}, LLAMA3).shown_tokens() == [
        "<|python_tag|>"]
    assert plan({"tools": [WEATHER], "tool_choice": "none"}, LLAMA3).shown_tokens() == []
    assert plan({}, LLAMA3).shown_tokens() == []
    assert plan({"tools": [WEATHER]}, MISTRAL).shown_tokens() == ["[TOOL_CALLS]"]
    assert plan({"tools": [WEATHER]}, HERMES).shown_tokens() == []  # <tool_call> is plain text


def test_generic_messages_describe_tools_and_rewrite_history() -> None:
    body = {"tools": [WEATHER], "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}},
            {"id": "b", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "a", "content": "20 C"},
        {"role": "tool", "tool_call_id": "b", "content": "25 C"}]}
    full = {"model": "m", **body}
    req = openai_types.parse_chat_request(json.dumps(full).encode())
    messages = openai_types.chat_messages(req)
    assert messages[2].tool_calls == [ToolCall("a", "get_weather", '{"location": "Paris"}'),
                                      ToolCall("b", "get_weather", '{"location": "Rome"}')]
    assert messages[3].tool_call_id == "a"
    out = generic_messages(plan_tools(req, messages, None), messages, req)
    assert [m.role for m in out] == ["system", "user", "assistant", "user"]
    assert out[0].content.startswith("Be brief.\n\nYou can call these functions:")
    assert out[2].content == ('I called get_weather with {"location": "Paris"}.\n'
                              'I called get_weather with {"location": "Rome"}.')
    assert out[3] == ChatMessage("user", "get_weather returned: 20 C\nget_weather returned: 25 C"
                                         "\nAnswer my question with this result.")


# ---- the grammars parse in llama.cpp ------------------------------------------------------------

@pytest.fixture(scope="module")
def vocab(tiny_model_path: Path) -> Iterator[Any]:
    llm = llama_cpp.Llama(str(tiny_model_path), vocab_only=True, verbose=False)
    yield llama_cpp.llama_model_get_vocab(llm._model.model)
    llm.close()


def parses(vocab: Any, grammar: Grammar) -> bool:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.gbnf.encode(), b"root")
    if not sampler:
        return False
    llama_cpp.llama_sampler_free(sampler)
    return True


NESTED: dict[str, Any] = {"type": "function", "function": {"name": "book", "parameters": {
    "type": "object", "$defs": {"Person": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 20}, "age": {"type": ["integer", "null"]}},
        "required": ["name"]}},
    "properties": {"guests": {"type": "array", "items": {"$ref": "#/$defs/Person"},
                              "minItems": 1, "maxItems": 4},
                   "date": {"type": "string", "format": "date"},
                   "when": {"anyOf": [{"const": "now"}, {"type": "number"}]},
                   "code": {"type": "string", "enum": ["ABC", "XYZ"]},
                   "phone": {"type": "string", "pattern": r"^\(\d{3}\) \d{3}-\d{4}$"},
                   "ref": {"type": "string", "pattern": r"^[A-Z]\w+[\.\-]\d+$"}},
    "required": ["guests"], "additionalProperties": False}}}
# Same definition name, different shape: each tool keeps its own.
OTHER: dict[str, Any] = {"type": "function", "function": {"name": "other", "parameters": {
    "type": "object", "$defs": {"Person": {"type": "integer"}},
    "properties": {"p": {"$ref": "#/$defs/Person"}}}}}


@pytest.mark.parametrize("template", [None, HERMES, LLAMA3, MISTRAL, MISTRAL_V11, QWEN3, R1])
@pytest.mark.parametrize("choice", ["auto", "required", "named"])
@pytest.mark.parametrize("parallel", [True, False])
def test_grammars_parse(vocab: Any, template: str | None, choice: str, parallel: bool) -> None:
    tool_choice: Any = choice if choice != "named" else {
        "type": "function", "function": {"name": "book"}}
    p = plan({"tools": [WEATHER, TIME, NESTED, OTHER], "tool_choice": tool_choice,
              "parallel_tool_calls": parallel}, template)
    assert p.grammar is not None
    assert parses(vocab, p.grammar), p.grammar.gbnf
    lines = p.grammar.gbnf.splitlines()
    assert any(line.startswith("tool-2-args-Person ::= ") for line in lines)
    assert "tool-3-args-p ::= integer" in lines  # its own Person, an integer


@pytest.mark.parametrize("template", [None, HERMES])
@pytest.mark.parametrize("choice", ["auto", "required"])
def test_grammars_of_tools_without_string_arguments_parse(vocab: Any, template: str | None,
                                                          choice: str) -> None:
    p = plan({"tools": [TIME], "tool_choice": choice}, template)  # no string rule of its own
    assert p.grammar is not None and parses(vocab, p.grammar), p.grammar.gbnf


def test_a_broken_grammar_does_not_parse(vocab: Any) -> None:
    assert not parses(vocab, Grammar('root ::= "a'))


# ---- any schema: a plan or a 400, nothing else ------------------------------------------------


_KEYS = st.sampled_from(["type", "properties", "items", "required", "enum", "const", "anyOf",
                         "oneOf", "allOf", "$ref", "$defs", "additionalProperties", "minItems",
                         "maxItems", "format", "pattern", "nullable", "minLength", "x"])
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(
    ["object", "string", "integer", "array", "null", "number", "boolean", "#/$defs/a", "a",
     "date", ""]))
_SCHEMAS = st.recursive(_SCALARS, lambda kids: st.one_of(
    st.lists(kids, max_size=3), st.dictionaries(_KEYS, kids, max_size=4)), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_SCHEMAS, st.sampled_from([None, HERMES, LLAMA3, MISTRAL, MISTRAL_V11, QWEN3]))
def test_any_parameters_give_a_plan_or_a_400(schema: Any, template: str | None) -> None:
    body = {"tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}],
            "tool_choice": "required"}
    try:
        plan({**body, "tool_choice": "auto"}, template)
        plan(body, template)
    except InvalidRequest as exc:
        assert exc.param in ("tools", "tools[0].function.parameters")
