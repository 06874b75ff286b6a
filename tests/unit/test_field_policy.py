"""The request-field table (api/field_policy.py): refused fields are a 400 naming the field,
their neutral values pass, applied/ignored rows are the request Structs' own fields, and the
README shows the table as generated."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hearth.api import completion_types as ct
from hearth.api import field_policy as fp
from hearth.api import openai_types
from hearth.api.errors import NotFound
from hearth.scheduler.errors import InvalidRequest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
EMBED: dict[str, Any] = {"model": "m", "input": "hi"}

# One value per refused field that asks for something hearth does not do.
ASKING: dict[str, Any] = {
    "functions": [{"name": "f", "parameters": {}}], "function_call": {"name": "f"},
    "audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "x"}, "web_search_options": {},
    "reasoning_effort": "high", "verbosity": "low", "grammar": "root ::= \"a\"",
    "json_schema": {"type": "object"}, "guided_json": {"type": "object"}, "guided_regex": "a+",
    "guided_choice": ["a"], "guided_grammar": "x", "repeat_penalty": 1.3,
    "repetition_penalty": 1.3, "typical_p": 0.5, "mirostat": 2, "ignore_eos": True,
    "min_tokens": 5, "n_probs": 3, "chat_template_kwargs": {"enable_thinking": True},
    "moderation": {"model": "omni-moderation-latest"},
}
REFUSED_CHAT = [r for r in fp.CHAT_FIELDS if r.policy is fp.Policy.REFUSED]


def test_every_refused_chat_field_has_an_asking_value_here() -> None:
    assert {r.name for r in REFUSED_CHAT} == set(ASKING)


@pytest.mark.parametrize("rule", REFUSED_CHAT, ids=lambda r: r.name)
def test_a_refused_chat_field_is_a_400_naming_it(rule: fp.FieldRule) -> None:
    with pytest.raises(InvalidRequest) as err:
        openai_types.parse_chat_request(json.dumps({**CHAT, rule.name: ASKING[rule.name]}).encode())
    assert err.value.param == rule.name
    assert err.value.message == f"'{rule.name}' is not supported by this server."


@pytest.mark.parametrize("rule", REFUSED_CHAT, ids=lambda r: r.name)
def test_a_refused_field_with_its_neutral_value_passes(rule: fp.FieldRule) -> None:
    for value in (None, *rule.neutral):
        openai_types.parse_chat_request(json.dumps({**CHAT, rule.name: value}).encode())


@pytest.mark.parametrize("name,value", [("function_call", {"name": "f", "arguments": "{}"}),
                                        ("audio", {"id": "a1"}),
                                        ("refusal", "I can't help with that.")])
def test_a_refused_message_field_names_the_message(name: str, value: Any) -> None:
    body = {**CHAT, "messages": [CHAT["messages"][0], {"role": "assistant", "content": "x",
                                                       name: value}]}
    with pytest.raises(InvalidRequest) as err:
        openai_types.parse_chat_request(json.dumps(body).encode())
    assert err.value.param == f"messages[1].{name}"


def test_message_tool_calls_empty_passes() -> None:
    body = {**CHAT, "messages": [{"role": "assistant", "content": "x", "tool_calls": []}]}
    openai_types.parse_chat_request(json.dumps(body).encode())


@pytest.mark.parametrize("kind", ["image_url", "input_audio", "file"])
def test_a_non_text_content_part_is_refused(kind: str) -> None:
    body = {**CHAT, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "look"}, {"type": kind, kind: {}}]}]}
    req = openai_types.parse_chat_request(json.dumps(body).encode())
    with pytest.raises(InvalidRequest, match="not supported") as err:
        openai_types.chat_messages(req)
    assert err.value.param == "messages[0].content[1].type"


def test_ignored_fields_pass() -> None:
    body = {**CHAT, "user": "u", "store": True, "metadata": {"a": "b"}, "service_tier": "auto",
            "safety_identifier": "s", "prompt_cache_key": "k",
            "prompt_cache_options": {"ttl": "30m"}, "prompt_cache_retention": "24h",
            "stream_options": {"include_usage": True, "include_obfuscation": True}}
    openai_types.parse_chat_request(json.dumps(body).encode())


@pytest.mark.parametrize("name,value", [("input_type", "query"), ("truncate", True)])
def test_a_refused_embeddings_field_is_a_400_naming_it(name: str, value: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        openai_types.parse_embedding_request(json.dumps({**EMBED, name: value}).encode())
    assert err.value.param == name


REFUSED_COMPLETION = [r for r in fp.COMPLETION_FIELDS if r.policy is fp.Policy.REFUSED]
COMPLETION: dict[str, Any] = {"model": "m", "prompt": "hi"}


@pytest.mark.parametrize("rule", REFUSED_COMPLETION, ids=lambda r: r.name)
def test_a_refused_completion_field_is_a_400_naming_it(rule: fp.FieldRule) -> None:
    # values asking for what completions do not do (chat applies some of them)
    value = {"response_format": {"type": "json_object"}}.get(rule.name) \
        or ASKING[rule.name]
    with pytest.raises(InvalidRequest) as err:
        ct.parse_completion_request(json.dumps({**COMPLETION, rule.name: value}).encode())
    assert err.value.param == rule.name
    for neutral in (None, *rule.neutral):
        ct.parse_completion_request(json.dumps({**COMPLETION, rule.name: neutral}).encode())


def test_embeddings_neutral_values_pass() -> None:
    for body in ({**EMBED, "truncate": False}, {**EMBED, "truncate": "NONE"},
                 {**EMBED, "input_type": None}):
        openai_types.parse_embedding_request(json.dumps(body).encode())


@pytest.mark.parametrize("rules,struct", [(fp.CHAT_FIELDS, openai_types.ChatCompletionRequest),
                                          (fp.EMBEDDING_FIELDS, openai_types.EmbeddingRequest),
                                          (fp.COMPLETION_FIELDS, ct.CompletionRequest)])
def test_applied_and_ignored_rows_are_the_request_fields(
        rules: tuple[fp.FieldRule, ...], struct: type[msgspec.Struct]) -> None:
    # The Struct decodes the fields hearth reads; the table's other accepted rows are ignored
    # ones that need no field. A row moved to APPLIED needs its field on the Struct, and back.
    struct_fields = set(struct.__struct_fields__)
    applied = {r.name for r in rules if r.policy is fp.Policy.APPLIED}
    assert applied <= struct_fields
    refused = {r.name for r in rules if r.policy is fp.Policy.REFUSED}
    assert not refused & struct_fields
    ignored_on_struct = struct_fields - applied
    assert all(fp.Policy.IGNORED is next(r.policy for r in rules if r.name == f)
               for f in ignored_on_struct)


def test_each_field_is_in_the_table_once() -> None:
    for rules in (fp.CHAT_FIELDS, fp.MESSAGE_FIELDS, fp.EMBEDDING_FIELDS, fp.COMPLETION_FIELDS):
        names = [r.name for r in rules]
        assert len(names) == len(set(names))


@pytest.mark.parametrize("marker,rules", [("chat-fields", fp.CHAT_FIELDS),
                                          ("message-fields", fp.MESSAGE_FIELDS),
                                          ("embedding-fields", fp.EMBEDDING_FIELDS),
                                          ("completion-fields", fp.COMPLETION_FIELDS)])
def test_readme_shows_the_generated_table(marker: str, rules: tuple[fp.FieldRule, ...]) -> None:
    m = re.search(rf"<!-- {marker}: generated from api/field_policy.py -->\n(.*?)\n"
                  rf"<!-- end {marker} -->", README, re.S)
    assert m, f"the README has no {marker} table"
    assert m.group(1) == fp.markdown_table(rules), \
        f"regenerate the README's {marker} table from api/field_policy.markdown_table"


def test_404_under_the_prefix_says_the_endpoint_does_not_exist() -> None:
    msg = NotFound.unknown_path("POST", "/v1/nope", "/v1").message
    assert "does not exist" in msg and "lives under" not in msg
    assert "does not exist" in NotFound.unknown_path("GET", "/v1", "/v1").message
    assert "does not exist" in NotFound.unknown_path("GET", "/nope", "").message


def test_404_outside_the_prefix_names_the_prefix() -> None:
    msg = NotFound.unknown_path("POST", "/chat/completions", "/v1").message
    assert "The API lives under /v1." in msg
    assert "lives under" in NotFound.unknown_path("GET", "/v10/models", "/v1").message


def test_neutral_values_compare_as_json_does() -> None:
    """``false`` is not the neutral ``0`` (Python's ``False == 0`` would let it through, while
    the served document's enum refuses it); ``0.0`` is ``0``; containers compare deeply."""
    from hearth.api.field_policy import FieldRule, Policy

    zero = FieldRule("min_tokens", Policy.REFUSED, neutral=(0,))
    assert not zero.refuses(0) and not zero.refuses(0.0) and not zero.refuses(None)
    assert zero.refuses(False) and zero.refuses(1) and zero.refuses("0")
    off = FieldRule("truncate", Policy.REFUSED, neutral=(False, "NONE"))
    assert not off.refuses(False) and not off.refuses("NONE") and off.refuses(0)
    text = FieldRule("response_format", Policy.REFUSED, neutral=({"type": "text"},))
    assert not text.refuses({"type": "text"}) and text.refuses({"type": "json_object"})
    assert FieldRule("tools", Policy.REFUSED, neutral=([],)).refuses([{}])


def _typed_dict_keys(td: Any) -> set[str]:
    keys: set[str] = set()
    for klass in td.__mro__:
        keys |= set(getattr(klass, "__annotations__", {}))
    return keys


def test_every_field_the_official_sdk_can_send_is_classified() -> None:
    """Source of truth for "every field OpenAI's API has": the installed official ``openai``
    SDK's request types (generated from OpenAI's API description). A field missing here would
    be silently ignored; an SDK upgrade that adds one fails this test until the field gets a
    row in api/field_policy.py."""
    from openai.types import completion_create_params as legacy_completion_params
    from openai.types import embedding_create_params
    from openai.types.chat import (
        ChatCompletionAssistantMessageParam,
        ChatCompletionDeveloperMessageParam,
        ChatCompletionFunctionMessageParam,
        ChatCompletionSystemMessageParam,
        ChatCompletionToolMessageParam,
        ChatCompletionUserMessageParam,
        completion_create_params,
    )

    chat = _typed_dict_keys(completion_create_params.CompletionCreateParamsBase)
    assert chat - {r.name for r in fp.CHAT_FIELDS} == set()
    legacy = _typed_dict_keys(legacy_completion_params.CompletionCreateParamsBase)
    assert legacy - {r.name for r in fp.COMPLETION_FIELDS} == set()
    embed = _typed_dict_keys(embedding_create_params.EmbeddingCreateParams)
    assert embed - {r.name for r in fp.EMBEDDING_FIELDS} == set()
    message = set().union(*(_typed_dict_keys(t) for t in (
        ChatCompletionSystemMessageParam, ChatCompletionDeveloperMessageParam,
        ChatCompletionUserMessageParam, ChatCompletionAssistantMessageParam,
        ChatCompletionToolMessageParam, ChatCompletionFunctionMessageParam)))
    handled = set(openai_types.Message.__struct_fields__) | {r.name for r in fp.MESSAGE_FIELDS}
    assert message - handled == {"tool_call_id"} or message - handled == set()


def test_every_responses_field_the_official_sdk_can_send_is_classified() -> None:
    """As above, for ``POST /responses``: every field of the SDK's ``ResponseCreateParams``
    has a row in ``RESPONSES_FIELDS``; the applied rows are the request Struct's fields."""
    from hearth.api import responses_types
    from openai.types.responses import response_create_params

    sdk = _typed_dict_keys(response_create_params.ResponseCreateParamsBase) | {"stream"}
    rows = {r.name for r in fp.RESPONSES_FIELDS}
    assert sdk - rows == set()
    struct_fields = set(responses_types.ResponsesRequest.__struct_fields__)
    applied = {r.name for r in fp.RESPONSES_FIELDS if r.policy is fp.Policy.APPLIED}
    refused = {r.name for r in fp.RESPONSES_FIELDS if r.policy is fp.Policy.REFUSED}
    assert applied <= struct_fields and not refused & struct_fields
    assert len(rows) == len(fp.RESPONSES_FIELDS)


def test_readme_shows_the_responses_table() -> None:
    test_readme_shows_the_generated_table("responses-fields", fp.RESPONSES_FIELDS)


# ---- Anthropic's Messages ---------------------------------------------------------------------

MESSAGES_BODY: dict[str, Any] = {"model": "m", "max_tokens": 8,
                                 "messages": [{"role": "user", "content": "hi"}]}
MESSAGES_ASKING: dict[str, Any] = {
    "container": "container_1",
    "mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}],
    "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
}
REFUSED_MESSAGES = [r for r in fp.MESSAGES_FIELDS if r.policy is fp.Policy.REFUSED]


@pytest.mark.parametrize("rule", REFUSED_MESSAGES, ids=lambda r: r.name)
def test_a_refused_messages_field_is_a_400_naming_it(rule: fp.FieldRule) -> None:
    from hearth.api import anthropic_types as at

    with pytest.raises(InvalidRequest) as err:
        at.parse_messages_request(json.dumps({**MESSAGES_BODY,
                                              rule.name: MESSAGES_ASKING[rule.name]}).encode())
    assert err.value.param == rule.name
    for neutral in (None, *rule.neutral):
        at.parse_messages_request(json.dumps({**MESSAGES_BODY, rule.name: neutral}).encode())


def test_messages_applied_and_ignored_rows_are_the_request_fields() -> None:
    from hearth.api import anthropic_types as at

    struct_fields = set(at.MessagesRequest.__struct_fields__)
    rules = {r.name: r.policy for r in fp.MESSAGES_FIELDS}
    assert {n for n, p in rules.items() if p is fp.Policy.APPLIED} <= struct_fields
    assert not {n for n, p in rules.items() if p is fp.Policy.REFUSED} & struct_fields
    assert all(rules[f] is not fp.Policy.REFUSED for f in struct_fields)
    assert set(REFUSED_MESSAGES_NAMES) == set(MESSAGES_ASKING)
    names = [r.name for r in fp.MESSAGES_FIELDS]
    assert len(names) == len(set(names))


REFUSED_MESSAGES_NAMES = [r.name for r in REFUSED_MESSAGES]


def test_every_field_the_anthropic_sdk_can_send_is_classified() -> None:
    """Source of truth: the installed official ``anthropic`` SDK's ``MessageCreateParams`` and
    ``MessageCountTokensParams`` (generated from Anthropic's API description), plus the
    sampling fields the Messages API documents that SDK 2.x no longer names (``temperature``,
    ``top_p``, ``top_k``) and ``stream``. An SDK upgrade that adds a field fails this test until
    it gets a row in api/field_policy.py."""
    from anthropic.types import message_count_tokens_params, message_create_params

    create = _typed_dict_keys(message_create_params.MessageCreateParamsBase)
    count = _typed_dict_keys(message_count_tokens_params.MessageCountTokensParams)
    classified = {r.name for r in fp.MESSAGES_FIELDS}
    assert (create | count | {"temperature", "top_p", "top_k", "stream"}) - classified == set()


def test_readme_shows_the_messages_table() -> None:
    m = re.search(r"<!-- messages-fields: generated from api/field_policy.py -->\n(.*?)\n"
                  r"<!-- end messages-fields -->", README, re.S)
    assert m, "the README has no messages-fields table"
    assert m.group(1) == fp.markdown_table(fp.MESSAGES_FIELDS)
