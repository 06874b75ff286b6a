"""api/openapi.py: the served document states what the server validates (schemathesis found the
rules the code checks missing from it), and describes a stream as events."""

from __future__ import annotations

import json
from typing import Any

import jsonschema_rs
import pytest
from harness import api_accepts
from hearth.api import completion_types, openai_types, openapi

DOC = openapi.build("/v1", "0", max_n=4)  # n above it: refused by the handler (settings)


def document_accepts(name: str, body: Any) -> bool:
    return bool(jsonschema_rs.Draft202012Validator(
        {"$ref": f"#/components/schemas/{name}", "components": DOC["components"]}).is_valid(body))


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


def message(**fields: Any) -> dict[str, Any]:
    return chat(messages=[{"role": "user", **fields}])


CHAT = [
    (chat(), True),
    (chat(messages=[]), False),
    (chat(messages=[{"role": "user"}] * (openai_types.MAX_MESSAGES + 1)), False),
    (chat(messages=[{"role": "wizard"}]), False),
    (message(content=[{"type": "text", "text": "a"}]), True),
    (message(content=[{"type": "image_url", "text": "a"}]), False),
    (message(content=[{"type": "text"}]), False),
    (message(content=[{"type": "text", "text": None}]), False),
    (chat(n=1), True),
    (chat(logprobs=True, top_logprobs=openai_types.MAX_TOP_LOGPROBS), True),
    (chat(logprobs=True, top_logprobs=openai_types.MAX_TOP_LOGPROBS + 1), False),
    (chat(logprobs=True, top_logprobs=-1), False),
    (chat(logprobs=False, top_logprobs=0), True),
    (chat(top_logprobs=None), True),
    (chat(top_logprobs=2), False),
    (chat(logprobs=False, top_logprobs=2), False),
    (chat(n=2), True),
    (chat(n=4), True),
    (chat(n=0), False),
    (chat(stop=["x" * openai_types.MAX_STOP_LENGTH] * openai_types.MAX_STOP), True),
    (chat(stop=["a"] * (openai_types.MAX_STOP + 1)), False),
    (chat(stop="x" * (openai_types.MAX_STOP_LENGTH + 1)), False),
    (chat(stop=["x" * (openai_types.MAX_STOP_LENGTH + 1)]), False),
    (chat(logit_bias={"2147483647": 100, "0000000005": -100, "0": 1.5}), True),
    (chat(logit_bias={"2147483648": 1}), False),
    (chat(logit_bias={"00000000005": 1}), False),
    (chat(logit_bias={"-5": 1}), False),
    (chat(logit_bias={"5\n": 1}), False),
    (chat(logit_bias={"٣": 1}), False),
    (chat(logit_bias={"5": 100.5}), False),
    (chat(logit_bias={str(i): 1 for i in range(openai_types.MAX_LOGIT_BIAS + 1)}), False),
]
EMBEDDING = [
    ({"model": "m", "input": "a"}, True),
    ({"model": "m", "input": ["a", "b"]}, True),
    ({"model": "m", "input": [1, 2]}, True),
    ({"model": "m", "input": [[1], [2, 3]]}, True),
    ({"model": "m", "input": ""}, False),
    ({"model": "m", "input": []}, False),
    ({"model": "m", "input": ["a", ""]}, False),
    ({"model": "m", "input": [[1], []]}, False),
    ({"model": "m", "input": ["a", 1]}, False),
    ({"model": "m", "input": [1, [2]]}, False),
    ({"model": "m", "input": ["a"] * (openai_types.MAX_EMBEDDING_INPUTS + 1)}, False),
]


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "prompt": "hi", **fields}


COMPLETION = [
    (completion(), True),
    (completion(prompt=""), True),
    (completion(prompt=["a", "b"]), True),
    (completion(prompt=list(range(200))), True),
    (completion(prompt=[[1, 2], [3]]), True),
    (completion(prompt=[]), False),
    (completion(prompt=[[1], []]), False),
    (completion(prompt=["a", 1]), False),
    (completion(prompt=[1, [2]]), False),
    (completion(prompt=[-1]), False),
    (completion(prompt=["a"] * (completion_types.MAX_PROMPTS + 1)), False),
    (completion(prompt=[[1]] * (completion_types.MAX_PROMPTS + 1)), False),
    (completion(suffix="x"), True),
    (completion(suffix="x", echo=True), False),
    (completion(suffix="x", echo=False), True),
    (completion(suffix=None, echo=True), True),
    (completion(best_of=1, n=1), True),
    (completion(best_of=2), True),
    (completion(best_of=2, stream=True), False),
    (completion(best_of=2, n=2, stream=True), True),
    (completion(best_of=2, stream=False), True),
    (completion(n=2), True),
    (completion(n=3, best_of=3), True),
    (completion(n=3, best_of=4), True),
    (completion(n=3, best_of=2), False),
    (completion(n=None, best_of=1), True),
    (completion(n=0), False),
    (completion(max_tokens=0), False),
    (completion(max_tokens=0, echo=True), True),  # OpenAI's prompt scoring
    (completion(logprobs=None), True),
    (completion(logprobs=0), True),
    (completion(logprobs=completion_types.MAX_LOGPROBS), True),
    (completion(logprobs=completion_types.MAX_LOGPROBS + 1), False),
    (completion(logprobs=-1), False),
    (completion(logprobs=1, echo=True), True),
    (completion(logprobs=1, echo=False), True),
    (completion(logprobs=None, echo=True), True),
    ({"model": "m"}, False),
]
TOKENIZE = [
    ({"content": "a"}, True),
    ({"model": "m", "content": "a", "add_special": True, "with_pieces": True}, True),
    ({"messages": [{"role": "user", "content": "a"}]}, True),
    ({"messages": []}, False),
    ({}, False),
    ({"content": "a", "messages": [{"role": "user", "content": "a"}]}, False),
    ({"content": None}, False),
    ({"messages": [{"role": "assistant", "content": "a", "tool_calls": [{"id": "1"}]}]}, False),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, False),
]
DETOKENIZE = [
    ({"tokens": [1, 2]}, True),
    ({"tokens": []}, True),
    ({"tokens": [-1]}, False),
    ({"model": "m"}, False),
]
_ENDPOINT = {"ChatCompletionRequest": "chat", "EmbeddingRequest": "embeddings",
             "CompletionRequest": "completions", "TokenizeRequest": "tokenize",
             "DetokenizeRequest": "detokenize"}


@pytest.mark.parametrize(("name", "body", "valid"),
                         [("ChatCompletionRequest", b, v) for b, v in CHAT]
                         + [("EmbeddingRequest", b, v) for b, v in EMBEDDING]
                         + [("CompletionRequest", b, v) for b, v in COMPLETION]
                         + [("TokenizeRequest", b, v) for b, v in TOKENIZE]
                         + [("DetokenizeRequest", b, v) for b, v in DETOKENIZE])
def test_document_and_validation_agree(name: str, body: Any, valid: bool) -> None:
    assert api_accepts(_ENDPOINT[name], body) is valid
    assert document_accepts(name, body) is valid


def test_a_stream_is_described_as_events_carrying_chunks_errors_or_done() -> None:
    ok = DOC["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]
    event = ok["text/event-stream"]["schema"]
    assert event["required"] == ["data"]
    done, payload = event["properties"]["data"]["anyOf"]
    assert done == {"const": "[DONE]"}
    assert payload["contentMediaType"] == "application/json"
    assert payload["contentSchema"] == {"anyOf": [
        {"$ref": "#/components/schemas/ChatCompletionChunk"},
        {"$ref": "#/components/schemas/ErrorEnvelope"}]}


def test_refused_fields_are_declared_with_the_values_that_pass() -> None:
    """A field the server refuses (api/field_policy.py) is in the document with only null and
    its neutral values, so nothing reading the document (a client, the fuzz tests) takes any
    other value for one the server serves."""
    from hearth.api.field_policy import (
        CHAT_FIELDS,
        COMPLETION_FIELDS,
        EMBEDDING_FIELDS,
        MESSAGE_FIELDS,
        Policy,
    )

    schemas = openapi.build("/v1", "test")["components"]["schemas"]
    for component, rules in (("ChatCompletionRequest", CHAT_FIELDS), ("Message", MESSAGE_FIELDS),
                             ("EmbeddingRequest", EMBEDDING_FIELDS),
                             ("CompletionRequest", COMPLETION_FIELDS)):
        refused = [r for r in rules if r.policy is Policy.REFUSED]
        assert refused
        for rule in refused:
            assert schemas[component]["properties"][rule.name]["enum"] == [None, *rule.neutral]


RESPONSES = [
    ({"model": "m", "input": "hi"}, True),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text",
                                                           "text": "hi"}]},
                              {"type": "function_call_output", "call_id": "c",
                               "output": "r"}]}, True),
    ({"model": "m", "input": "hi", "truncation": "disabled", "background": False}, True),
    ({"model": "m", "input": "hi", "truncation": "auto"}, False),
    ({"model": "m", "input": "hi", "background": True}, False),
    ({"model": "m", "input": "hi", "tools": [{"type": "web_search"}]}, False),
    ({"model": "m", "input": "hi", "max_output_tokens": 0}, False),
    ({"input": "hi"}, False),
]


@pytest.mark.parametrize(("body", "valid"), RESPONSES)
def test_the_responses_request_in_the_document(body: Any, valid: bool) -> None:
    """The served document states what POST /responses accepts (its refusals included)."""
    from hearth.api import responses_translate, responses_types
    from hearth.scheduler.errors import InvalidRequest

    assert document_accepts("ResponsesRequest", body) is valid
    try:
        req = responses_types.parse_request(json.dumps(body).encode())
        responses_translate.to_chat(req, responses_translate.input_items(req), [])
        accepted = True
    except InvalidRequest:
        accepted = False
    assert accepted is valid


def test_the_responses_paths_and_their_stream() -> None:
    paths = DOC["paths"]
    ops = {paths["/v1/responses"]["post"]["operationId"],
           paths["/v1/responses/{response_id}"]["get"]["operationId"],
           paths["/v1/responses/{response_id}"]["delete"]["operationId"],
           paths["/v1/responses/{response_id}/input_items"]["get"]["operationId"]}
    assert ops == {"createResponse", "getResponse", "deleteResponse", "listResponseInputItems"}
    event = paths["/v1/responses"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    refs = event["schema"]["properties"]["data"]["contentSchema"]["anyOf"]
    names = {r["$ref"].rsplit("/", 1)[1] for r in refs}
    assert {"ResponseCreated", "OutputTextDelta", "ResponseCompleted", "ErrorEvent"} <= names
    assert all(name in DOC["components"]["schemas"] for name in names)


# ---- Anthropic's Messages ---------------------------------------------------------------------

def _messages(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}],
            **fields}


@pytest.mark.parametrize("body,valid", [
    (_messages(), True),
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, False),
    (_messages(max_tokens=0), False),
    (_messages(messages=[]), False),
    (_messages(messages=[{"role": "system", "content": "x"}]), False),
    (_messages(temperature=1.0, top_p=1.0, top_k=0), True),
    (_messages(temperature=1.5), False),
    (_messages(thinking={"type": "disabled"}), True),
    (_messages(thinking={"type": "adaptive"}), True),  # (the model decides: see the handler)
    (_messages(thinking={"type": "sometimes"}), False),
    (_messages(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}]}]), True),
])
def test_messages_document_and_validation_agree(body: Any, valid: bool) -> None:
    from hearth.api import anthropic_types
    from hearth.api.messages_translate import to_chat
    from hearth.scheduler.errors import InvalidRequest

    assert document_accepts("AnthropicMessagesRequest", body) is valid
    try:
        to_chat(anthropic_types.parse_messages_request(__import__("json").dumps(body).encode()))
        served = True
    except InvalidRequest:
        served = False
    assert served is valid


def test_messages_paths_answer_in_anthropic_s_envelope() -> None:
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        responses = DOC["paths"][path]["post"]["responses"]
        assert responses["401"]["content"]["application/json"]["schema"] == \
            {"$ref": "#/components/schemas/AnthropicErrorEnvelope"}
    stream = DOC["paths"]["/v1/messages"]["post"]["responses"]["200"]["content"]
    assert "text/event-stream" in stream


def test_speculative_decoding_is_documented_on_chat_and_completions() -> None:
    schemas = openapi.build("/v1", "x")["components"]["schemas"]
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        field = schemas[name]["properties"]["speculative_decoding"]
        assert {"type": "boolean"} in [{"type": b.get("type")} for b in field["anyOf"]]
        assert "hearth extension" in field["anyOf"][0]["description"]
