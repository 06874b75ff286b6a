"""api/responses_translate.py: every input item kind into chat messages, tools / tool_choice /
text.format / max_output_tokens into chat's fields, the refusals, and chat's 400s re-labelled
with the Responses field they came from."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hearth.api import openai_types as ot
from hearth.api import responses_translate as tr
from hearth.api import responses_types as rt
from hearth.scheduler.errors import ContextLengthExceeded, InvalidRequest


def parse(**body: Any) -> rt.ResponsesRequest:
    return rt.parse_request(json.dumps({"model": "m", **body}).encode())


def ids() -> tr.NewId:
    counter = itertools.count()
    return lambda prefix: f"{prefix}_{next(counter)}"


def translate(history: list[rt.Item] | None = None, **body: Any) -> tr.Translated:
    req = parse(**body)
    return tr.to_chat(req, tr.input_items(req, ids()), history or [])


def roles(t: tr.Translated) -> list[tuple[str, str | None]]:
    return [(m.role, m.content if isinstance(m.content, str | None) else "parts")
            for m in t.chat.messages]


def test_a_string_is_one_user_message_after_the_instructions() -> None:
    t = translate(input="hi", instructions="Be brief.")
    assert roles(t) == [("system", "Be brief."), ("user", "hi")]
    req = parse(input="hi")
    assert tr.input_items(req, ids()) == [rt.MessageItem("msg_0", "user",
                                                         [rt.InputTextPart("hi")])]


def test_every_item_kind() -> None:
    items = [
        {"role": "developer", "content": "Use tools."},  # no type: a message
        {"type": "message", "role": "user",
         "content": [{"type": "input_text", "text": "Weather"},
                     {"type": "input_text", "text": "in Paris?"}]},
        {"type": "reasoning", "id": "rs_9", "summary": [],
         "content": [{"type": "reasoning_text", "text": "think"}]},
        {"type": "message", "role": "assistant", "id": "msg_x",
         "content": [{"type": "output_text", "text": "Looking."}]},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": '{"sky":"sunny"}'},
        {"type": "function_call_output", "call_id": "call_2",
         "output": [{"type": "input_text", "text": "noon"}]},
        {"type": "function_call", "call_id": "call_3", "name": "get_time", "arguments": "{}"},
        {"role": "system", "content": "Answer now."},
    ]
    req = parse(input=items)
    got = tr.input_items(req, ids())
    assert [type(i).__name__ for i in got] == [
        "MessageItem", "MessageItem", "ReasoningItem", "MessageItem", "FunctionCallItem",
        "FunctionCallItem", "FunctionCallOutputItem", "FunctionCallOutputItem",
        "FunctionCallItem", "MessageItem"]
    assert got[2] == rt.ReasoningItem("rs_9", [], [rt.ReasoningTextPart("think")])
    assert got[3] == rt.MessageItem("msg_x", "assistant", [rt.OutputTextPart("Looking.")])
    assert got[7] == rt.FunctionCallOutputItem("fco_5", "call_2", "noon")
    t = tr.to_chat(req, got, [])
    msgs = t.chat.messages
    assert [(m.role, m.content) for m in msgs] == [
        ("developer", "Use tools."), ("user", "Weather\nin Paris?"),
        ("assistant", "Looking."), ("tool", '{"sky":"sunny"}'), ("tool", "noon"),
        ("assistant", None), ("system", "Answer now.")]
    # a reasoning item goes with the assistant message after it, for the template to show
    assert [m.reasoning_content for m in msgs] == [None, None, "think", None, None, None, None]
    assert ot.chat_messages(t.chat)[2].reasoning_content == "think"
    # the calls right after the assistant's text join its message, as chat carries them
    assert [(c.id, c.function.name, c.function.arguments) for c in msgs[2].tool_calls or []] \
        == [("call_1", "get_weather", '{"city":"Paris"}'), ("call_2", "get_time", "{}")]
    assert [m.tool_call_id for m in msgs[3:5]] == ["call_1", "call_2"]
    assert [c.id for c in msgs[5].tool_calls or []] == ["call_3"]
    ot.check_tool_call_ids(ot.messages_of(msgs))  # chat accepts the conversation


def test_history_comes_first_and_instructions_before_it() -> None:
    history: list[rt.Item] = [
        rt.MessageItem("msg_a", "user", [rt.InputTextPart("one")]),
        rt.MessageItem("msg_b", "assistant", [rt.OutputTextPart("two")])]
    t = translate(history, input="three", instructions="sys")
    assert roles(t) == [("system", "sys"), ("user", "one"), ("assistant", "two"),
                        ("user", "three")]


def test_the_other_fields_map_onto_chat() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    t = translate(input="x", max_output_tokens=9, temperature=0.5, top_p=0.9,
                  parallel_tool_calls=False, user="u",
                  tools=[{"type": "function", "name": "f", "description": "d",
                          "parameters": schema, "strict": True}],
                  tool_choice={"type": "function", "name": "f"})
    chat = t.chat
    assert (chat.max_completion_tokens, chat.temperature, chat.top_p,
            chat.parallel_tool_calls, chat.user) == (9, 0.5, 0.9, False, "u")
    assert chat.tools == [ot.Tool("function", ot.FunctionDefinition("f", "d", schema, True))]
    assert chat.tool_choice == ot.NamedToolChoice("function", ot.NamedFunction("f"))
    assert translate(input="x", tool_choice="required").chat.tool_choice == "required"
    fmt = translate(input="x", text={"format": {"type": "json_schema", "name": "n",
                                                "schema": schema, "strict": True}})
    assert fmt.chat.response_format == ot.ResponseFormatJSONSchema(
        ot.JSONSchemaFormat("n", schema, True))
    assert isinstance(translate(input="x", text={"format": {"type": "json_object"}})
                      .chat.response_format, ot.ResponseFormatJSONObject)
    assert translate(input="x", text={"format": {"type": "text"}}).chat.response_format is None


@pytest.mark.parametrize("body,param", [
    ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "name": "f"}, {"type": "file_search"}]}, "tools[1].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].name"),
    ({"tool_choice": {"type": "file_search"}}, "tool_choice"),
    ({"truncation": "auto"}, "truncation"),
    ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name"),
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
     "input[0].content[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
     "input[0].call_id"),
    ({"input": [{"type": "function_call_output", "call_id": "c",
                 "output": [{"type": "input_file"}]}]}, "input[0].output[0].type"),
])
def test_what_hearth_does_not_serve_is_a_400_naming_it(body: dict[str, Any],
                                                       param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        translate(**{"input": "x", **body})
    assert err.value.param == param


@pytest.mark.parametrize("name,value", [("background", True), ("include", ["x"]),
                                        ("conversation", "conv_1"), ("reasoning",
                                                                     {"effort": "high"}),
                                        ("top_logprobs", 2), ("prompt", {"id": "p"})])
def test_a_refused_field_is_a_400_naming_it(name: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(input="x", **{name: value})
    assert err.value.param == name


def test_a_refused_field_with_its_neutral_value_passes() -> None:
    parse(input="x", background=False, include=[], reasoning={}, top_logprobs=0,
          conversation=None, service_tier="auto", prompt_cache_key="k", store=False)


def test_chats_400s_name_the_responses_field() -> None:
    items = [{"role": "user", "content": "q"},
             {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
             {"type": "function_call_output", "call_id": "c9", "output": "r"}]
    t = translate(input=items, instructions="s")
    assert t.param("messages[3].tool_call_id") == "input[2].call_id"
    assert t.param("messages[3].content") == "input[2].output"
    assert t.param("messages[2].tool_calls[0].function.arguments") == "input[1]"
    assert t.param("messages[1].content[0].type") == "input[0].content[0].type"
    assert t.param("messages[0].content") == "instructions"
    assert t.param("response_format") == "text.format"
    assert t.param("tools[2].function.parameters") == "tools[2].parameters"
    assert t.param("max_completion_tokens") == "max_output_tokens"
    assert t.param("messages") == "input"
    assert t.param("tool_choice") == "tool_choice"
    exc = t.relabel(InvalidRequest("messages[3].tool_call_id 'c9' answers no tool call.",
                                   param="messages[3].tool_call_id"))
    assert exc.param == "input[2].call_id"
    assert exc.message == "input[2].call_id 'c9' answers no tool call."
    long = t.relabel(ContextLengthExceeded("too long", param="messages"))
    assert long.param == "input"
    whole = translate(input="x")
    assert whole.param("messages[0].content") == "input"


def test_history_faults_name_previous_response_id() -> None:
    history: list[rt.Item] = [rt.FunctionCallOutputItem("fco_1", "c0", "r")]
    t = translate(history, input="x")
    assert t.param("messages[0].tool_call_id") == "previous_response_id"


def test_a_chat_request_refuses_what_it_always_did() -> None:
    # the translated request is checked by chat's own rules (ChatJobHandler.chat_turn)
    t = translate(input=[{"type": "function_call_output", "call_id": "nope", "output": "r"}])
    with pytest.raises(InvalidRequest) as err:
        ot.check_tool_call_ids(ot.messages_of(t.chat.messages))
    assert t.relabel(err.value).param == "input[0].call_id"


def test_newer_item_labels_are_accepted_and_not_shown() -> None:
    """``phase``, ``namespace`` and ``caller`` (the SDK's newer item fields) pass and change
    nothing the model sees; a ``phase`` outside the SDK's values is a 400 naming it."""
    labelled = parse(input=[
        {"type": "message", "role": "user", "content": "weather?"},
        {"type": "message", "role": "assistant", "content": "Looking.", "phase": "commentary"},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}",
         "namespace": "weather", "caller": {"type": "direct"}},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny",
         "namespace": "weather", "caller": {"type": "direct"}}])
    plain = parse(input=[
        {"type": "message", "role": "user", "content": "weather?"},
        {"type": "message", "role": "assistant", "content": "Looking."},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "sunny"}])
    got = tr.to_chat(labelled, tr.input_items(labelled, ids()), []).chat.messages
    want = tr.to_chat(plain, tr.input_items(plain, ids()), []).chat.messages
    assert got == want
    with pytest.raises(InvalidRequest) as err:
        parse(input=[{"type": "message", "role": "assistant", "content": "x", "phase": "later"}])
    assert err.value.param == "input[0].phase"
