"""api/openai_types.py: chat request validation (param names the field at fault) and the
requested sampling values; how a request's sampling values meet the model's defaults
(scheduler.messages.resolve_sampling)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hearth.api import openai_types
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import (
    ChatMessage,
    RequestedSampling,
    ResolvedSampling,
    ToolCall,
    resolve_sampling,
)
from hearth.tools.model_config import SamplingDefaults


def body(**fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}]}
    out.update(fields)
    return out


def validate(data: dict[str, Any] | bytes) -> tuple[openai_types.ChatCompletionRequest,
                                                    list[ChatMessage], RequestedSampling]:
    """What the chat handler does with a body, in the same order."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    req = openai_types.parse_chat_request(raw)
    return req, openai_types.chat_messages(req), openai_types.requested_sampling(req)


def param_of(data: dict[str, Any] | bytes) -> str | None:
    with pytest.raises(InvalidRequest) as info:
        validate(data)
    assert info.value.message  # always says what is wrong
    return info.value.param


# ---- valid bodies -----------------------------------------------------------------------------


def test_minimal_body() -> None:
    req, messages, params = validate(body())
    assert req.model == "tiny"
    assert req.stream is False
    assert messages == [ChatMessage("user", "Hi")]
    assert params == RequestedSampling()
    # unset values stay unset: the model's configured defaults apply in the worker
    assert params.max_tokens is None and params.temperature is None and params.top_p is None
    assert params.top_k is None and params.min_p is None
    assert params.stop == [] and params.logit_bias == {} and params.seed is None
    resolved = resolve_sampling(params)
    assert (resolved.temperature, resolved.top_p, resolved.top_k, resolved.min_p) == (
        1.0, 1.0, 0, 0.0)


def test_model_defaults_fill_what_the_request_left_unset() -> None:
    _, _, params = validate(body(temperature=0.2))
    resolved = resolve_sampling(params, SamplingDefaults(temperature=0.9, top_p=0.5,
                                                         max_tokens=7))
    assert (resolved.temperature, resolved.top_p, resolved.max_tokens) == (0.2, 0.5, 7)


def test_unknown_fields_are_ignored() -> None:
    # Harmless ones only: those that change the answer are refused (tests/unit/test_field_policy)
    req, messages, _ = validate(body(
        tools=[], response_format={"type": "text"}, something_new={"x": 1},
        metadata={"a": "b"}, parallel_tool_calls=None, service_tier="auto",
        messages=[{"role": "user", "content": "Hi", "refusal": None, "extra": [1, 2]}]))
    assert req.model == "tiny"
    assert messages == [ChatMessage("user", "Hi")]


def test_full_body_maps_to_sampling_params() -> None:
    req, messages, params = validate(body(
        messages=[{"role": "developer", "content": "Be brief."},
                  {"role": "system", "content": "S"},
                  {"role": "user", "content": [{"type": "text", "text": "a"},
                                               {"type": "text", "text": "b"}]},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "c1", "type": "function",
                       "function": {"name": "calc", "arguments": "{}"}}]},
                  {"role": "tool", "content": "42", "tool_call_id": "c1"}],
        max_tokens=7, temperature=0, top_p=0.5, top_k=40, min_p=0.05, seed=-3,
        frequency_penalty=-2, presence_penalty=2, logit_bias={"15": -100, "7": 100.0, "0": 1.5},
        stop=["\n\n", "", "END"], stream=True, stream_options={"include_usage": True},
        user="u1", n=1))
    assert messages == [ChatMessage("system", "Be brief."), ChatMessage("system", "S"),
                        ChatMessage("user", "a\nb"),
                        ChatMessage("assistant", "", [ToolCall("c1", "calc", "{}")]),
                        ChatMessage("tool", "42", [], "c1")]
    assert req.stream is True
    assert req.stream_options is not None and req.stream_options.include_usage is True
    assert params == RequestedSampling(
        max_tokens=7, temperature=0.0, top_p=0.5, top_k=40, min_p=0.05, seed=-3,
        frequency_penalty=-2.0, presence_penalty=2.0,
        logit_bias={15: -100.0, 7: 100.0, 0: 1.5}, stop=["\n\n", "END"])


def test_stop_string_becomes_a_list() -> None:
    assert validate(body(stop="###"))[2].stop == ["###"]
    assert validate(body(stop=""))[2].stop == []
    assert validate(body(stop=None))[2].stop == []
    assert validate(body(stop=["a", "b", "c", "d"]))[2].stop == ["a", "b", "c", "d"]


def test_max_completion_tokens_is_preferred() -> None:
    assert validate(body(max_tokens=30, max_completion_tokens=5))[2].max_tokens == 5
    assert validate(body(max_completion_tokens=9))[2].max_tokens == 9
    assert validate(body(max_tokens=11))[2].max_tokens == 11


def test_nulls_mean_defaults() -> None:
    _, _, params = validate(body(temperature=None, top_p=None, max_tokens=None, seed=None,
                                 logit_bias=None, n=None, stream=None))
    assert params == RequestedSampling()


def test_boundary_values_are_accepted() -> None:
    _, _, params = validate(body(temperature=2.0, top_p=1.0, max_tokens=1, min_p=1.0,
                                 seed=2**63 - 1))
    assert (params.temperature, params.top_p, params.max_tokens, params.seed) == \
        (2.0, 1.0, 1, 2**63 - 1)


def test_sampling_params_cross_the_wire() -> None:
    # whatever validation accepts must encode as msgpack (the ChatJob message)
    _, _, params = validate(body(seed=-(2**63), max_tokens=2**63 - 1, top_k=2**63 - 1,
                                 logit_bias={"2147483647": 1}))
    raw = msgspec.msgpack.encode(params)
    assert msgspec.msgpack.decode(raw, type=RequestedSampling) == params


# ---- resolving sampling values: request, else the model's default, else built in --------------

MODEL_DEFAULTS = [info.name for info in msgspec.structs.fields(SamplingDefaults)]
REQUEST_VALUE: dict[str, Any] = {"temperature": 0.3, "top_p": 0.4, "top_k": 5, "min_p": 0.06,
                                 "frequency_penalty": 0.7, "presence_penalty": -0.8,
                                 "max_tokens": 11}
MODEL_VALUE: dict[str, Any] = {"temperature": 1.3, "top_p": 0.9, "top_k": 50, "min_p": 0.2,
                               "frequency_penalty": -1.5, "presence_penalty": 1.5,
                               "max_tokens": 99}


def test_every_model_default_is_a_request_value_and_a_resolved_one() -> None:
    assert set(MODEL_DEFAULTS) == set(REQUEST_VALUE) == set(MODEL_VALUE)
    request_fields = {info.name for info in msgspec.structs.fields(RequestedSampling)}
    resolved_fields = {info.name for info in msgspec.structs.fields(ResolvedSampling)}
    assert set(MODEL_DEFAULTS) <= request_fields == resolved_fields


@pytest.mark.parametrize("name", MODEL_DEFAULTS)
def test_each_value_comes_from_the_request_else_the_model_else_built_in(name: str) -> None:
    asked = RequestedSampling(**{name: REQUEST_VALUE[name]})
    model = SamplingDefaults(**{name: MODEL_VALUE[name]})
    built_in = getattr(ResolvedSampling(), name)
    assert getattr(resolve_sampling(asked, model), name) == REQUEST_VALUE[name]
    assert getattr(resolve_sampling(RequestedSampling(), model), name) == MODEL_VALUE[name]
    assert getattr(resolve_sampling(RequestedSampling()), name) == built_in
    assert getattr(resolve_sampling(RequestedSampling(), SamplingDefaults()), name) == built_in


def test_a_request_value_that_is_falsy_still_wins() -> None:
    # 0 and 0.0 are values a request may ask for (greedy, no top_k), not "unset"
    resolved = resolve_sampling(RequestedSampling(temperature=0.0, top_k=0, frequency_penalty=0.0),
                                SamplingDefaults(temperature=0.8, top_k=40,
                                                 frequency_penalty=1.0))
    assert (resolved.temperature, resolved.top_k, resolved.frequency_penalty) == (0.0, 0, 0.0)


def test_seed_logit_bias_and_stop_come_from_the_request_only() -> None:
    asked = RequestedSampling(seed=7, logit_bias={3: -1.0}, stop=["END"])
    resolved = resolve_sampling(asked, SamplingDefaults(temperature=0.5))
    assert (resolved.seed, resolved.logit_bias, resolved.stop) == (7, {3: -1.0}, ["END"])
    plain = resolve_sampling(RequestedSampling(), SamplingDefaults(temperature=0.5))
    assert (plain.seed, plain.logit_bias, plain.stop) == (None, {}, [])


# ---- invalid bodies: param names the field ----------------------------------------------------


@pytest.mark.parametrize(("fields", "param"), [
    ({"max_tokens": "10"}, "max_tokens"),
    ({"max_tokens": 1.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"min_p": 2}, "min_p"),
    ({"frequency_penalty": 2.5}, "frequency_penalty"),
    ({"presence_penalty": -3}, "presence_penalty"),
    ({"seed": "42"}, "seed"),
    ({"seed": 2**64}, "seed"),
    ({"max_tokens": 10**30}, "max_tokens"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ({"stop": 5}, "stop"),
    ({"stop": ["a", 1]}, "stop[1]"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"n": 0}, "n"),
    ({"logit_bias": {"5": 101}}, "logit_bias"),
    ({"logit_bias": {"5": -100.5}}, "logit_bias"),
    ({"logit_bias": {"hello": 1}}, "logit_bias"),
    ({"logit_bias": {"-5": 1}}, "logit_bias"),
    ({"logit_bias": {"1_000": 1}}, "logit_bias"),
    ({"logit_bias": {str(2**70): 1}}, "logit_bias"),
    ({"logit_bias": {"5": "x"}}, "logit_bias"),
    ({"logit_bias": [1, 2]}, "logit_bias"),
    ({"logit_bias": {str(i): 1 for i in range(301)}}, "logit_bias"),
    ({"model": 5}, "model"),
    ({"model": None}, "model"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "a"}, "b"]}, "messages[1]"),
    ({"messages": [{"role": 1, "content": "a"}]}, "messages[0].role"),
    ({"messages": [{"role": "wizard", "content": "a"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]},
     "messages[1].role"),
    ({"messages": [{"content": "a"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": [{"text": "a"}]}]},
     "messages[0].content[0].type"),
    ({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]},
     "messages[0].content[1].type"),
    ({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "messages[0].content[0].type"),
])
def test_invalid_field(fields: dict[str, Any], param: str) -> None:
    assert param_of(body(**fields)) == param


def test_missing_required_fields_are_named() -> None:
    assert param_of({"messages": [{"role": "user", "content": "a"}]}) == "model"
    assert param_of({"model": "tiny"}) == "messages"


@pytest.mark.parametrize("raw", [b"", b"   \n", b"{", b"{'model': 'x'}", b"\xff\xfe",
                                 b'{"model": "tiny", "messages": []} trailing', b"null", b"[]",
                                 b'"text"'])
def test_bodies_that_are_not_a_json_object(raw: bytes) -> None:
    assert param_of(raw) is None


def test_empty_body_message() -> None:
    with pytest.raises(InvalidRequest, match="empty"):
        openai_types.parse_chat_request(b"")


def test_invalid_json_message() -> None:
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        openai_types.parse_chat_request(b"{nope")


def test_error_message_names_the_path() -> None:
    with pytest.raises(InvalidRequest) as info:
        openai_types.parse_chat_request(json.dumps(body(temperature=2.5)).encode())
    assert "temperature" in info.value.message


# ---- responses --------------------------------------------------------------------------------


def test_response_shapes_encode_like_openai() -> None:
    usage = openai_types.Usage(3, 2, 5, openai_types.PromptTokensDetails(1))
    done = openai_types.ChatCompletion(
        id="chatcmpl-1", created=1, model="tiny",
        choices=[openai_types.Choice(0, openai_types.ResponseMessage("assistant", "hi"), "stop")],
        usage=usage)
    assert json.loads(msgspec.json.encode(done)) == {
        "id": "chatcmpl-1", "created": 1, "model": "tiny", "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5,
                  "prompt_tokens_details": {"cached_tokens": 1}}}
    chunk = openai_types.ChatCompletionChunk(id="c", created=1, model="tiny",
                                             choices=[openai_types.ChunkChoice(
                                                 0, openai_types.ChunkDelta(content="x"))])
    assert json.loads(msgspec.json.encode(chunk))["choices"][0] == {
        "index": 0, "delta": {"content": "x"}, "finish_reason": None, "logprobs": None}


def test_message_count_and_stop_length_are_bounded() -> None:
    with pytest.raises(InvalidRequest) as info:
        validate(body(messages=[{"role": "user", "content": "x"}] * 4097))
    assert info.value.param == "messages"
    with pytest.raises(InvalidRequest) as info:
        validate(body(stop=["x" * 257]))
    assert info.value.param == "stop"
    validate(body(messages=[{"role": "user", "content": "x"}] * 4096, stop="y" * 256))


@pytest.mark.parametrize("parse", [openai_types.parse_chat_request,
                                   openai_types.parse_embedding_request])
def test_deeply_nested_unknown_field_is_invalid_not_a_crash(parse: Any) -> None:
    # msgspec skips an unknown field's value recursively: this was a RecursionError (a 500)
    depth = 100_000
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        parse(b'{"model": "tiny", "extra": ' + b"[" * depth + b"]" * depth + b"}")
    with pytest.raises(InvalidRequest, match="nested too deeply"):
        parse(b'{"extra": ' + b'{"a":' * depth + b"1" + b"}" * depth + b"}")


@pytest.mark.parametrize("parse", [openai_types.parse_chat_request,
                                   openai_types.parse_embedding_request])
@pytest.mark.parametrize("junk", [b"\xca", b"\xff", b"\xed\xa0\x80", b"\xc0\x80", b"a\xe2\x82"])
def test_invalid_utf8_in_a_string_is_invalid_not_a_crash(parse: Any, junk: bytes) -> None:
    # this was a UnicodeDecodeError out of msgspec (a 500)
    for field in (b"model", b"user"):
        with pytest.raises(InvalidRequest, match="UTF-8"):
            parse(b'{"model": "tiny", "input": "x", "messages": [{"role": "user"}], "' + field
                  + b'": "' + junk + b'"}')


@pytest.mark.parametrize("messages,param", [
    # a call's type other than "function" (the served document's enum; fuzzing found the
    # decoder let it through on /tokenize)
    ([{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "", "function": {"name": "f", "arguments": "{}"}}]}],
     "messages[0].tool_calls[0].type"),
    ([{"role": "user", "content": "x", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}],
     "messages[0].tool_calls"),
    ([{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}],
     "messages[1].tool_call_id"),
])
def test_tool_fields_of_messages_are_checked_wherever_messages_come(
        messages: list[dict[str, object]], param: str) -> None:
    """Chat and /tokenize share the message checks (messages_of, check_tool_call_ids)."""
    with pytest.raises(InvalidRequest) as err:
        req = openai_types.parse_chat_request(json.dumps(
            {"model": "m", "messages": messages}).encode())
        openai_types.check_tool_call_ids(openai_types.chat_messages(req))
    assert err.value.param == param
