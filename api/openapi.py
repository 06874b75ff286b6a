"""The OpenAPI 3.1 document served at ``GET {prefix}/openapi.json``, generated from the msgspec
OpenAI types in api/openai_types.py (so it cannot drift from what the server validates) plus the
error statuses each endpoint can answer with."""

from __future__ import annotations

from typing import Any

import msgspec
from hearth.api import anthropic_types, completion_types, openai_types
from hearth.api import responses_types as rt
from hearth.api.errors import AnthropicErrorEnvelope, ErrorEnvelope
from hearth.api.field_policy import (
    CHAT_FIELDS,
    COMPLETION_FIELDS,
    EMBEDDING_FIELDS,
    MESSAGE_FIELDS,
    MESSAGES_FIELDS,
    RESPONSES_FIELDS,
    FieldRule,
    Policy,
)

_TYPES = [openai_types.ChatCompletionRequest, openai_types.ChatCompletion,
          openai_types.ChatCompletionChunk, openai_types.EmbeddingRequest,
          openai_types.EmbeddingList, openai_types.ModelList, openai_types.Model, ErrorEnvelope,
          completion_types.CompletionRequest, completion_types.Completion,
          completion_types.TokenizeRequest, completion_types.TokenizeResponse,
          completion_types.DetokenizeRequest, completion_types.DetokenizeResponse,
          rt.ResponsesRequest, rt.Response, rt.ItemList, rt.DeletedResponse, rt.Event]

_ERRORS = {
    "400": "invalid request: bad JSON, a wrong type or an out-of-range value (`param` names it)",
    "401": "missing or wrong API key (`invalid_api_key`)",
    "403": "the Host header is not trusted",
    "404": "unknown model (`model_not_found`), path, or stored response "
           "(`response_not_found`: never stored, deleted, evicted or another key's)",
    "413": "request body over --max-body",
    "500": "the model could not be loaded (`model_load_failed`)",
    "502": "the model's worker died during the request (`worker_died`)",
    "503": "queue full or shutting down; retry after Retry-After seconds",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


# One server-sent event of a streamed completion, described as OpenAPI 3.2 describes event
# streams (and schemathesis reads them): its `data` is a JSON chunk, a JSON error envelope
# (an error mid-stream) or the final `[DONE]`.
def _sse_event(chunk: str) -> dict[str, Any]:
    return {
        "type": "object", "required": ["data"],
        "properties": {"data": {"anyOf": [
            {"const": "[DONE]"},
            {"type": "string", "contentMediaType": "application/json",
             "contentSchema": {"anyOf": [_ref(chunk), _ref("ErrorEnvelope")]}}]}},
    }


_SSE_EVENT = _sse_event("ChatCompletionChunk")


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"description": _ERRORS[code], **_json(_ref("ErrorEnvelope"))}
            for code in codes}


def _declare_refused(schema: dict[str, Any], rules: tuple[FieldRule, ...]) -> None:
    """Put each refused field (api/field_policy.py) into ``schema``'s properties with the only
    values that pass: null and its neutral ones. Without this the document would let any value
    through (unknown fields are accepted), so a client or a fuzzer reading it would expect, say,
    ``tools: [...]`` to be served, and get the 400 that names the field."""
    props = schema.setdefault("properties", {})
    for rule in rules:
        if rule.policy is Policy.REFUSED and rule.name not in props:
            props[rule.name] = {"enum": [None, *rule.neutral],
                                "description": f"not supported: any other value is a 400 "
                                               f"naming '{rule.name}'"}


def _choices(schema: dict[str, Any], max_n: int) -> None:
    """``n``: 1 to ``max_n`` (checked in api/handlers/jobs.py and by the scheduler)."""
    schema["properties"]["n"] = {
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": max_n}, {"type": "null"}],
        "default": None,
        "description": "choices to generate, each in a slot of its own, the prompt evaluated "
                       "once; at most --max-n and the model's slots (--parallel)"}


def _best_of_branch(best_of: int, n: int) -> dict[str, Any]:
    """One allowed pair of ``best_of`` and ``n`` (absent or null ``n`` is 1); ``best_of`` > ``n``
    is not streamed."""
    props: dict[str, Any] = {"best_of": {"const": best_of},
                             "n": {"enum": [None, 1]} if n == 1 else {"const": n}}
    if best_of > n:
        props["stream"] = {"enum": [None, False]}
    return {"properties": props, "required": [] if n == 1 else ["n"]}


def build(prefix: str, version: str, max_n: int = 1) -> dict[str, Any]:
    """The document. ``max_n``: the most choices (``n``) a request may ask for here: --max-n,
    and no more than the models' slots."""
    _, components = msgspec.json.schema_components(
        _TYPES, ref_template="#/components/schemas/{name}")
    _choices(components["ChatCompletionRequest"], max_n)
    _choices(components["CompletionRequest"], max_n)
    # best_of: at least n (n absent or null is 1; checked in api/completion_types.py), at most
    # --max-n, and not streamed when larger than n (checked in api/handlers/completions.py)
    components["CompletionRequest"]["properties"]["best_of"] = {
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": max_n}, {"type": "null"}],
        "default": None, "description": "at least `n`: generates this many choices per prompt "
                                        "and returns the `n` with the highest mean token "
                                        "log-probability; not with `stream` when larger than "
                                        "`n`"}
    components["CompletionRequest"]["anyOf"] = [
        {"not": {"required": ["best_of"]}},
        {"properties": {"best_of": {"type": "null"}}},
        *(_best_of_branch(k, m) for k in range(1, max_n + 1) for m in range(1, k + 1))]
    _declare_refused(components["ChatCompletionRequest"], CHAT_FIELDS)
    _declare_refused(components["Message"], MESSAGE_FIELDS)
    _declare_refused(components["EmbeddingRequest"], EMBEDDING_FIELDS)
    _declare_refused(components["CompletionRequest"], COMPLETION_FIELDS)
    # rules across fields, checked in api/completion_types.py
    components["CompletionRequest"]["allOf"] = [
        {"not": {"required": ["echo", "suffix"],  # echo with suffix
                 "properties": {"echo": {"const": True}, "suffix": {"type": "string"}}}},
        {"not": {"required": ["max_tokens"],  # max_tokens 0 without echo
                 "properties": {"max_tokens": {"const": 0}, "echo": {"not": {"const": True}}}}}]
    # top_logprobs above 0 needs logprobs: true (checked in api/openai_types.py)
    components["ChatCompletionRequest"]["not"] = {
        "required": ["top_logprobs"],
        "properties": {"top_logprobs": {"type": "integer", "minimum": 1}},
        "not": {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}}}
    components["TokenizeRequest"]["oneOf"] = [{"required": ["content"]},
                                              {"required": ["messages"]}]
    common = ("400", "401", "403")
    model_errors = ("404", "413", "500", "502", "503")
    messages_components, messages_paths = anthropic_messages(prefix)
    components.update(messages_components)
    paths: dict[str, Any] = {
        **messages_paths,
        f"{prefix}/models": {"get": {
            "operationId": "listModels",
            "summary": "Every model in the models directory, and every model a joined remote "
                       "worker serves (hearth.workers: where each is loaded)",
            "responses": {"200": {"description": "the models", **_json(_ref("ModelList"))},
                          **_errors("401", "403")}}},
        f"{prefix}/models/{{model}}": {"get": {
            "operationId": "retrieveModel",
            "summary": "One model (a file stem, an alias, or a model a remote worker serves)",
            "parameters": [{"name": "model", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the model", **_json(_ref("Model"))},
                          **_errors("401", "403", "404")}}},
        f"{prefix}/chat/completions": {"post": {
            "operationId": "createChatCompletion", "summary": "A chat completion",
            "requestBody": {"required": True, **_json(_ref("ChatCompletionRequest"))},
            "responses": {
                "200": {"description": "the completion; with `stream: true`, server-sent "
                        "events of chat.completion.chunk objects ending with `data: [DONE]`",
                        "content": {"application/json": {"schema": _ref("ChatCompletion")},
                                    "text/event-stream": {"schema": _SSE_EVENT}}},
                **_errors(*common, *model_errors)}}},
        f"{prefix}/completions": {"post": {
            "operationId": "createCompletion",
            "summary": "A completion of one or more prompts, without the chat template; with "
                       "`suffix`, fill-in-the-middle",
            "requestBody": {"required": True, **_json(_ref("CompletionRequest"))},
            "responses": {
                "200": {"description": "the completion, one choice per prompt; with `stream: "
                        "true`, server-sent events of text_completion objects ending with "
                        "`data: [DONE]`",
                        "content": {"application/json": {"schema": _ref("Completion")},
                                    "text/event-stream": {"schema": _sse_event("Completion")}}},
                **_errors(*common, *model_errors)}}},
        f"{prefix}/tokenize": {"post": {
            "operationId": "tokenize", "summary": "Text or chat messages to the model's tokens",
            "requestBody": {"required": True, **_json(_ref("TokenizeRequest"))},
            "responses": {"200": {"description": "the token ids (with `with_pieces`: each "
                                  "with its text)", **_json(_ref("TokenizeResponse"))},
                          **_errors(*common, *model_errors)}}},
        f"{prefix}/detokenize": {"post": {
            "operationId": "detokenize", "summary": "Token ids to text",
            "requestBody": {"required": True, **_json(_ref("DetokenizeRequest"))},
            "responses": {"200": {"description": "the text",
                                  **_json(_ref("DetokenizeResponse"))},
                          **_errors(*common, *model_errors)}}},
        f"{prefix}/embeddings": {"post": {
            "operationId": "createEmbedding", "summary": "Embeddings of one or more inputs",
            "requestBody": {"required": True, **_json(_ref("EmbeddingRequest"))},
            "responses": {"200": {"description": "the vectors", **_json(_ref("EmbeddingList"))},
                          **_errors(*common, *model_errors)}}},
        "/health": {"get": {
            "operationId": "health", "summary": "Whether the server can serve (no key)",
            "security": [],
            "responses": {"200": {"description": "ready", **_json({"type": "object"})},
                          "503": {"description": "starting, or the scheduler is gone",
                                  **_json({"type": "object"})}}}},
        "/metrics": {"get": {
            "operationId": "metrics", "summary": "Prometheus metrics",
            "responses": {"200": {"description": "Prometheus text",
                                  "content": {"text/plain": {"schema": {"type": "string"}}}},
                          **_errors("401", "403")}}},
    }
    _declare_refused(components["ResponsesRequest"], RESPONSES_FIELDS)
    # "auto" decodes (to be refused with a message saying why); the document says what passes
    components["ResponsesRequest"]["properties"]["truncation"] = {
        "enum": ["disabled", None], "description": "`auto` is a 400 naming 'truncation'"}
    paths.update(responses_paths(prefix))
    return {
        "openapi": "3.1.0",
        "info": {"title": "hearth", "version": version,
                 "description": "A private, offline, OpenAI-compatible LLM API server."},
        "paths": paths,
        "components": {"schemas": components,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


def responses_paths(prefix: str) -> dict[str, Any]:
    """The Responses API's paths (api/handlers/responses.py)."""
    common = ("400", "401", "403")
    model_errors = ("404", "413", "500", "502", "503")
    events = [_ref(name) for name in sorted(
        t.__name__ for t in (rt.ResponseCreated, rt.ResponseInProgress, rt.ResponseCompleted,
                             rt.ResponseIncomplete, rt.ResponseFailed, rt.OutputItemAdded,
                             rt.OutputItemDone, rt.ContentPartAdded, rt.ContentPartDone,
                             rt.OutputTextDelta, rt.OutputTextDone, rt.ReasoningTextDelta,
                             rt.ReasoningTextDone, rt.FunctionCallArgumentsDelta,
                             rt.FunctionCallArgumentsDone, rt.ErrorEvent))]
    event = {"type": "object", "required": ["event", "data"], "properties": {
        "event": {"type": "string", "description": "the event's `type`"},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"anyOf": events}}}}
    response_id = [{"name": "response_id", "in": "path", "required": True,
                    "schema": {"type": "string"}}]
    return {
        f"{prefix}/responses": {"post": {
            "operationId": "createResponse",
            "summary": "A response (OpenAI's Responses API), translated into a chat job",
            "requestBody": {"required": True, **_json(_ref("ResponsesRequest"))},
            "responses": {
                "200": {"description": "the response; with `stream: true`, server-sent events "
                        "(each with its `event:` line) from `response.created` to "
                        "`response.completed`, `response.incomplete` or `response.failed`",
                        "content": {"application/json": {"schema": _ref("Response")},
                                    "text/event-stream": {"schema": event}}},
                **_errors(*common, *model_errors)}}},
        f"{prefix}/responses/{{response_id}}": {
            "get": {"operationId": "getResponse",
                    "summary": "A stored response of this API key",
                    "parameters": response_id,
                    "responses": {"200": {"description": "the response",
                                          **_json(_ref("Response"))},
                                  **_errors("401", "403", "404")}},
            "delete": {"operationId": "deleteResponse",
                       "summary": "Forget a stored response of this API key",
                       "parameters": response_id,
                       "responses": {"200": {"description": "deleted",
                                             **_json(_ref("DeletedResponse"))},
                                     **_errors("401", "403", "404")}}},
        f"{prefix}/responses/{{response_id}}/input_items": {"get": {
            "operationId": "listResponseInputItems",
            "summary": "A stored response's input items, a page at a time",
            "parameters": [*response_id,
                           {"name": "limit", "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
                           {"name": "order", "in": "query",
                            "schema": {"enum": ["asc", "desc"]}},
                           {"name": "after", "in": "query", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the items", **_json(_ref("ItemList"))},
                          **_errors("400", "401", "403", "404")}}},
    }


def web_paths() -> dict[str, Any]:
    """The web page's two JSON views (api/handlers/web.py), served unless --no-web."""
    return {
        "/web/api/live": {"get": {
            "operationId": "webLive",
            "summary": "The web page's live view: per model loaded/size/slots, queue depth, "
                       "tokens/s over 10 s, TTFT p50, requests in flight per key name, worker "
                       "restarts, a 5-minute tokens/s chart (read from the /metrics series)",
            "responses": {"200": {"description": "the numbers", **_json({"type": "object"})},
                          **_errors("401", "403")}}},
        "/web/api/settings": {"get": {
            "operationId": "webSettings",
            "summary": "The effective settings, each with its source (flag, environment, config "
                       "file, default) and flag; the per-model settings of the config's "
                       "[models.\"<id>\"] tables; API key names only, never a key",
            "responses": {"200": {"description": "the settings", **_json({"type": "object"})},
                          **_errors("401", "403")}}},
    }


# ---- Anthropic's Messages API -----------------------------------------------------------------

_ANTHROPIC_TYPES = [anthropic_types.MessagesRequest, anthropic_types.Message,
                    anthropic_types.CountTokensRequest, anthropic_types.CountTokensResponse,
                    AnthropicErrorEnvelope, anthropic_types.MessageStart,
                    anthropic_types.ContentBlockStart, anthropic_types.ContentBlockDelta,
                    anthropic_types.ContentBlockStop, anthropic_types.MessageDelta,
                    anthropic_types.MessageStop, anthropic_types.Ping]
_PREFIX = "Anthropic"  # its component names: Anthropic's ``Message`` is not chat's


def _anthropic_ref(name: str) -> dict[str, str]:
    return _ref(name if name.startswith(_PREFIX) else _PREFIX + name)


def _anthropic_errors(*codes: str) -> dict[str, Any]:
    return {code: {"description": _ERRORS[code] + " (Anthropic's error envelope)",
                   **_json(_anthropic_ref("AnthropicErrorEnvelope"))} for code in codes}


def anthropic_messages(prefix: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(components, paths) of ``POST {prefix}/messages`` and ``/messages/count_tokens``: the
    Anthropic types' schemas, named with the ``Anthropic`` prefix."""
    _, found = msgspec.json.schema_components(
        _ANTHROPIC_TYPES, ref_template=f"#/components/schemas/{_PREFIX}{{name}}")
    # the error envelope's own names start with the prefix already: not twice
    components = msgspec.json.decode(msgspec.json.encode(
        {_PREFIX + name: schema for name, schema in found.items()}).replace(
        b"AnthropicAnthropic", b"Anthropic"))
    _declare_refused(components[_PREFIX + "MessagesRequest"], MESSAGES_FIELDS)
    _declare_refused(components[_PREFIX + "CountTokensRequest"], MESSAGES_FIELDS)
    events = ["MessageStart", "ContentBlockStart", "ContentBlockDelta", "ContentBlockStop",
              "MessageDelta", "MessageStop", "Ping", "AnthropicErrorEnvelope"]
    stream_event = {
        "type": "object", "required": ["event", "data"],
        "properties": {
            "event": {"enum": ["message_start", "content_block_start", "content_block_delta",
                               "content_block_stop", "message_delta", "message_stop", "ping",
                               "error"]},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": {"anyOf": [_anthropic_ref(e) for e in events]}}}}
    failures = ("400", "401", "403", "404", "413", "500", "502", "503")
    paths = {
        f"{prefix}/messages": {"post": {
            "operationId": "createMessage",
            "summary": "Anthropic's Messages API: a message, translated into a chat completion",
            "requestBody": {"required": True, **_json(_anthropic_ref("MessagesRequest"))},
            "responses": {
                "200": {"description": "the message; with `stream: true`, server-sent events, "
                        "each with its `event:` line (an error after the 200 is `event: "
                        "error`)",
                        "content": {"application/json": {"schema": _anthropic_ref("Message")},
                                    "text/event-stream": {"schema": stream_event}}},
                **_anthropic_errors(*failures)}}},
        f"{prefix}/messages/count_tokens": {"post": {
            "operationId": "countMessageTokens",
            "summary": "The input tokens a Messages request would take (tools included)",
            "requestBody": {"required": True, **_json(_anthropic_ref("CountTokensRequest"))},
            "responses": {"200": {"description": "the count",
                                  **_json(_anthropic_ref("CountTokensResponse"))},
                          **_anthropic_errors(*failures)}}},
    }
    return components, paths
