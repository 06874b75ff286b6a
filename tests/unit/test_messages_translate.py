"""Anthropic Messages requests translated into chat requests (api/messages_translate.py): every
block kind, tools and tool_choice, sampling fields, the 400s naming the Messages field, and a
chat error's ``param`` mapped back to the Messages field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hearth.api import anthropic_types as at
from hearth.api import openai_types as oa
from hearth.api.messages_translate import Translated, to_chat
from hearth.api.tool_calling import plan_tools
from hearth.scheduler.errors import InvalidRequest

BASE: dict[str, Any] = {"model": "m", "max_tokens": 16}


def translate(**body: Any) -> Translated:
    return to_chat(at.parse_messages_request(json.dumps({**BASE, **body}).encode()))


def refused(**body: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as err:
        translate(**body)
    return err.value


def shape(t: Translated) -> list[tuple[str, Any, Any, Any]]:
    return [(m.role, m.content, m.tool_call_id,
             [(c.id, c.function.name, json.loads(c.function.arguments))
              for c in m.tool_calls or []])
            for m in t.chat.messages]


def test_strings_and_a_system_string() -> None:
    t = translate(system="Be brief.", messages=[{"role": "user", "content": "Hi"},
                                                {"role": "assistant", "content": "Hello"}])
    assert shape(t) == [("system", "Be brief.", None, []), ("user", "Hi", None, []),
                        ("assistant", "Hello", None, [])]
    assert [s.path for s in t.sources] == ["system", "messages[0]", "messages[1]"]


def test_system_blocks_and_text_blocks_join_with_newlines() -> None:
    t = translate(system=[{"type": "text", "text": "a"}, {"type": "text", "text": "b",
                                                          "cache_control": {"type": "ephemeral"}}],
                  messages=[{"role": "user", "content": [{"type": "text", "text": "x"},
                                                         {"type": "text", "text": "y"}]}])
    assert shape(t) == [("system", "a\nb", None, []), ("user", "x\ny", None, [])]


def test_no_system_no_system_message() -> None:
    assert shape(translate(system="", messages=[{"role": "user", "content": "q"}]))[0][0] == \
        "user"


def test_a_tool_round_trip() -> None:
    t = translate(messages=[
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "call it", "signature": "sig"},
            {"type": "text", "text": "Looking."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}},
            {"type": "redacted_thinking", "data": "xx"},
            {"type": "tool_use", "id": "toolu_2", "name": "get_time", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": [{"type": "text", "text": "no"}, {"type": "text", "text": "clock"}]},
            {"type": "text", "text": "and tomorrow?"}]}])
    assert shape(t) == [
        ("user", "weather?", None, []),
        ("assistant", "Looking.", None, [("toolu_1", "get_weather", {"city": "Paris"}),
                                         ("toolu_2", "get_time", {})]),
        ("tool", "sunny", "toolu_1", []),
        ("tool", "Error: no\nclock", "toolu_2", []),
        ("user", "and tomorrow?", None, [])]
    # the thinking block is the message's reasoning_content; a redacted one has nothing to read
    assert [m.reasoning_content for m in t.chat.messages] == [None, "call it", None, None, None]
    assert oa.chat_messages(t.chat)[1].reasoning_content == "call it"
    assert [s.path for s in t.sources] == [
        "messages[0]", "messages[1]", "messages[2].content[0]", "messages[2].content[1]",
        "messages[2].content[2]"]
    oa.check_tool_call_ids(oa.chat_messages(t.chat))  # chat's own rules hold


def test_text_between_results_keeps_its_place() -> None:
    t = translate(messages=[
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "a", "name": "f", "input": {}},
            {"type": "tool_use", "id": "b", "name": "f", "input": {}}]},
        {"role": "user", "content": [
            {"type": "text", "text": "first"},
            {"type": "tool_result", "tool_use_id": "a"},
            {"type": "text", "text": "between"},
            {"type": "tool_result", "tool_use_id": "b", "content": "B"}]}])
    assert [(m.role, m.content) for m in t.chat.messages] == [
        ("assistant", ""), ("user", "first"), ("tool", ""), ("user", "between"), ("tool", "B")]


@pytest.mark.parametrize("kind", ["image", "document", "search_result", "server_tool_use",
                                  "web_search_tool_result", "container_upload"])
def test_other_blocks_are_a_400_naming_them(kind: str) -> None:
    err = refused(messages=[{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": kind, "source": {}}]}])
    assert err.param == "messages[0].content[1].type"
    assert f"'{kind}'" in err.message and "not supported" in err.message


def test_an_image_inside_a_tool_result_is_a_400_naming_it() -> None:
    err = refused(messages=[
        {"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": [
            {"type": "image", "source": {}}]}]}])
    assert err.param == "messages[1].content[0].content[0].type"


@pytest.mark.parametrize("role,block,param", [
    ("user", {"type": "tool_use", "id": "a", "name": "f", "input": {}},
     "messages[0].content[0].type"),
    ("assistant", {"type": "tool_result", "tool_use_id": "a"}, "messages[0].content[0].type"),
    ("user", {"type": "tool_result", "tool_use_id": "nope"}, "messages[0].content[0].tool_use_id"),
    ("user", {"type": "tool_result"}, "messages[0].content[0].tool_use_id"),
    ("assistant", {"type": "tool_use", "name": "f"}, "messages[0].content[0].id"),
    ("user", {"type": "text"}, "messages[0].content[0].text"),
])
def test_blocks_in_the_wrong_place_or_incomplete(role: str, block: dict[str, Any],
                                                 param: str) -> None:
    assert refused(messages=[{"role": role, "content": [block]}]).param == param


def test_a_system_block_that_is_not_text() -> None:
    err = refused(system=[{"type": "image", "text": ""}],
                  messages=[{"role": "user", "content": "q"}])
    assert err.param == "system[0].type"


WEATHER = {"name": "get_weather", "description": "weather",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
Q = [{"role": "user", "content": "q"}]


def test_tools_become_functions() -> None:
    t = translate(messages=Q, tools=[WEATHER, {**WEATHER, "name": "other", "type": "custom",
                                                "cache_control": {"type": "ephemeral"}}])
    assert t.chat.tools is not None
    assert [(x.type, x.function.name, x.function.description, x.function.parameters)
            for x in t.chat.tools] == [
        ("function", "get_weather", "weather", WEATHER["input_schema"]),
        ("function", "other", "weather", WEATHER["input_schema"])]


@pytest.mark.parametrize("choice,chat,parallel", [
    ({"type": "auto"}, "auto", None),
    ({"type": "any"}, "required", None),
    ({"type": "none"}, "none", None),
    ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    ({"type": "tool", "name": "get_weather"},
     oa.NamedToolChoice("function", oa.NamedFunction("get_weather")), None),
])
def test_tool_choice(choice: dict[str, Any], chat: Any, parallel: bool | None) -> None:
    t = translate(messages=Q, tools=[WEATHER], tool_choice=choice)
    assert t.chat.tool_choice == chat
    assert t.chat.parallel_tool_calls is parallel


@pytest.mark.parametrize("tools,choice,param", [
    ([{"type": "web_search_20250305", "name": "web_search"}], None, "tools[0].type"),
    ([{"type": "bash_20250124", "name": "bash"}], None, "tools[0].type"),
    ([{"name": "f"}], None, "tools[0].input_schema"),
    ([{"name": "f", "input_schema": {"type": "string"}}], None, "tools[0].input_schema.type"),
    ([{"name": "bad name", "input_schema": {"type": "object"}}], None, "tools[0].name"),
    ([WEATHER, WEATHER], None, "tools[1].name"),
    ([WEATHER], {"type": "tool"}, "tool_choice.name"),
    ([WEATHER], {"type": "tool", "name": "nope"}, "tool_choice.name"),
    ([WEATHER], {"type": "sometimes"}, "tool_choice.type"),
    (None, {"type": "any"}, "tool_choice"),
])
def test_tool_400s_name_the_messages_field(tools: Any, choice: Any, param: str) -> None:
    body: dict[str, Any] = {"messages": Q}
    if tools is not None:
        body["tools"] = tools
    if choice is not None:
        body["tool_choice"] = choice
    assert refused(**body).param == param


def test_sampling_fields() -> None:
    t = translate(messages=Q, temperature=0.5, top_p=0.9, top_k=40,
                  stop_sequences=["\n\n", "END"], stream=True, metadata={"user_id": "u1"})
    c = t.chat
    assert (c.max_tokens, c.temperature, c.top_p, c.top_k, c.stop, c.stream, c.user) == \
        (16, 0.5, 0.9, 40, ["\n\n", "END"], True, "u1")
    params = oa.requested_sampling(c)
    assert params.stop == ["\n\n", "END"] and params.max_tokens == 16


def test_output_config_format_is_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    t = translate(messages=Q, output_config={"format": {"type": "json_schema",
                                                        "schema": schema}})
    assert isinstance(t.chat.response_format, oa.ResponseFormatJSONSchema)
    assert t.chat.response_format.json_schema.schema == schema
    assert oa.response_grammar(t.chat) is not None
    assert refused(messages=Q, output_config={"effort": "high"}).param == \
        "output_config.effort"


@pytest.mark.parametrize("body,param", [
    ({"messages": Q, "max_tokens": None}, "max_tokens"),
    ({"messages": Q, "max_tokens": 0}, "max_tokens"),
    ({"messages": Q, "temperature": 1.5}, "temperature"),
    ({"messages": Q, "top_k": -1}, "top_k"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"messages": Q, "stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
    ({"messages": Q, "thinking": {"type": "sometimes"}}, "thinking.type"),
    ({"messages": Q, "container": "c1"}, "container"),
    ({"messages": Q, "mcp_servers": [{"type": "url", "url": "x", "name": "n"}]}, "mcp_servers"),
])
def test_request_400s_name_the_field(body: dict[str, Any], param: str) -> None:
    raw = {**BASE, **body}
    if raw.get("max_tokens") is None:
        raw.pop("max_tokens")
    with pytest.raises(InvalidRequest) as err:
        to_chat(at.parse_messages_request(json.dumps(raw).encode()))
    assert err.value.param == param


@pytest.mark.parametrize("thinking,max_tokens,thinks,param", [
    ({"type": "enabled", "budget_tokens": 2048}, 4096, True, None),
    ({"type": "adaptive"}, 16, True, None),
    ({"type": "disabled"}, 16, False, None),
    ({"type": "enabled", "budget_tokens": 2048}, 4096, False, "thinking.type"),
    ({"type": "adaptive"}, 16, False, "thinking.type"),
    ({"type": "disabled"}, 16, True, "thinking.type"),
    ({"type": "enabled"}, 4096, True, "thinking.budget_tokens"),
    ({"type": "enabled", "budget_tokens": 1023}, 4096, True, "thinking.budget_tokens"),
    ({"type": "enabled", "budget_tokens": 4096}, 4096, True, "thinking.budget_tokens"),
    ({"type": "enabled", "budget_tokens": 9000}, None, True, None),  # count_tokens: no max
    ({"type": "adaptive", "display": "omitted"}, 16, True, "thinking.display"),
])
def test_thinking_is_applied_by_what_the_model_does(thinking: dict[str, Any],
                                                    max_tokens: int | None, thinks: bool,
                                                    param: str | None) -> None:
    """hearth cannot switch a model's thinking on or off: ``enabled`` / ``adaptive`` pass for a
    model whose template thinks, ``disabled`` for one that does not; ``budget_tokens`` is
    checked as Anthropic checks it."""
    parsed = at.parse_messages_request(json.dumps(
        {**BASE, "messages": Q, "thinking": thinking}).encode()).thinking
    if param is None:
        at.check_thinking(parsed, max_tokens, thinks)
        return
    with pytest.raises(InvalidRequest) as err:
        at.check_thinking(parsed, max_tokens, thinks)
    assert err.value.param == param


def test_neutral_values_of_refused_fields_pass() -> None:
    translate(messages=Q, thinking={"type": "disabled"}, mcp_servers=[], container=None,
              service_tier="auto", cache_control={"type": "ephemeral"}, speed="fast")


def test_count_tokens_requests_translate_without_max_tokens() -> None:
    req = at.parse_count_tokens_request(json.dumps({"model": "m", "messages": Q,
                                                    "tools": [WEATHER]}).encode())
    t = to_chat(req)
    assert t.chat.max_tokens is None and t.chat.tools is not None


def test_a_chat_param_maps_back_to_the_messages_field() -> None:
    t = translate(system="s", messages=[
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [{"type": "text", "text": "x"},
                                          {"type": "tool_use", "id": "a", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a"}]}],
        tools=[WEATHER])
    assert t.param("messages[0].content") == "system"
    assert t.param("messages[1].content") == "messages[0]"
    assert t.param("messages[2].tool_calls[0].function.name") == "messages[1].content[1].name"
    assert t.param("messages[3].tool_call_id") == "messages[2].content[0].tool_use_id"
    assert t.param("messages[3].content") == "messages[2].content[0]"
    assert t.param("tools[0].function.parameters.properties.city") == \
        "tools[0].input_schema.properties.city"
    assert t.param("tools[0].function.name") == "tools[0].name"
    assert t.param("stop") == "stop_sequences"
    assert t.param("response_format") == "output_config.format"
    assert t.param("messages") == "messages"
    assert t.param(None) is None


def test_chat_s_own_checks_pass_on_a_translated_request() -> None:
    t = translate(messages=Q, tools=[WEATHER], tool_choice={"type": "any"})
    plan = plan_tools(t.chat, oa.chat_messages(t.chat), None)
    assert plan.active and plan.grammar is not None


@pytest.mark.parametrize("body,param", [
    ({"tools": [WEATHER], "stop_sequences": ["x"]}, "stop_sequences"),
    ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
      "stop_sequences": ["x"]}, "stop_sequences"),
])
def test_chat_s_rules_across_fields_in_messages_terms(body: dict[str, Any], param: str) -> None:
    err = refused(messages=Q, **body)
    assert err.param == param and param in err.message


def test_tools_together_with_a_format_pass() -> None:
    """As chat since tools16r: the answer is either tool calls or JSON matching the format."""
    t = translate(messages=Q, tools=[WEATHER], output_config={
        "format": {"type": "json_schema", "schema": {"type": "object"}}})
    assert t.chat.tools and t.chat.response_format is not None


def test_stop_sequences_with_tools_off_pass() -> None:
    translate(messages=Q, tools=[WEATHER], tool_choice={"type": "none"}, stop_sequences=["x"])


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
     "messages[0].content[0].text"),
    ({"messages": [*Q, {"role": "assistant", "content": ""}, *Q]}, "messages[1].content"),
    ({"messages": [*Q, {"role": "assistant", "content": [{"type": "text", "text": ""}]}]},
     "messages[1].content[0].text"),
    ({"messages": Q, "stop_sequences": ["x", ""]}, "stop_sequences"),
])
def test_empty_text_is_refused_as_anthropic_refuses_it(body: dict[str, Any], param: str) -> None:
    """Empty content (but a final assistant turn, a prefill) and an empty stop sequence are
    400s, as Anthropic's API answers them, not a silently odd prompt."""
    assert refused(**body).param == param


def test_a_final_empty_assistant_turn_passes() -> None:
    translate(messages=[*Q, {"role": "assistant", "content": ""}])
