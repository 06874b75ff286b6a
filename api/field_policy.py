"""The one table of request fields: which are applied, which are accepted and ignored, and which
are refused — for ``POST {prefix}/chat/completions``, ``POST {prefix}/completions``,
``POST {prefix}/embeddings``, ``POST {prefix}/responses`` and Anthropic's
``POST {prefix}/messages``.

House rule: a field that changes the meaning of an answer is applied or refused with a 400
naming it, never silently ignored; a harmless field is ignored. A refused field sent with its
*neutral* value (the value that asks for nothing: ``logprobs: false``, ``tools: []``,
``response_format: {"type": "text"}``, ``null``) passes, since honouring it needs nothing.

Sources of the field lists: OpenAI's API reference (chat completions, embeddings), plus the
sampling extensions of llama.cpp's server and vLLM that clients send to local servers.
``tests/unit/test_field_policy.py`` checks that every request and message field the installed
official ``openai`` SDK can send is in these tables, so an SDK that learns a new field fails
that test until the field is classified here.

When a refused field gets implemented (issue 16: ``tools``, ``response_format``…), its row
moves to ``APPLIED`` here — one line — and its type goes on the request Struct in
:mod:`.openai_types`. ``tests/unit/test_field_policy.py`` checks that the applied and ignored
rows are exactly the Structs' fields, and that the README shows this table.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from hearth.scheduler.errors import InvalidRequest


class Policy(enum.Enum):
    APPLIED = "applied"
    IGNORED = "accepted, ignored"
    REFUSED = "refused (400)"


@dataclass(frozen=True)
class FieldRule:
    """One request field. ``neutral``: the JSON values (besides ``null``) that ask for nothing,
    so they pass even when the field is refused. ``note``: what hearth does with it, for the
    README."""

    name: str
    policy: Policy
    note: str = ""
    neutral: tuple[Any, ...] = ()

    def refuses(self, value: Any) -> bool:
        return self.policy is Policy.REFUSED and value is not None and not any(
            _json_equal(value, n) for n in self.neutral)


def _json_equal(a: Any, b: Any) -> bool:
    """Equal as JSON values are (JSON Schema's ``enum``, which the served document uses for
    these fields): ``false`` is not ``0`` (Python's ``False == 0`` would let ``min_tokens:
    false`` through as if it were the neutral ``0``), while ``0`` and ``0.0`` are one number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    return type(a) is type(b) and bool(a == b)


APPLY, IGNORE, REFUSE = Policy.APPLIED, Policy.IGNORED, Policy.REFUSED

# The sampling fields chat and completions share.
SAMPLING_FIELDS: tuple[FieldRule, ...] = (
    FieldRule("temperature", APPLY, "0–2; 0 is greedy"),
    FieldRule("top_p", APPLY),
    FieldRule("top_k", APPLY, "llama.cpp extension"),
    FieldRule("min_p", APPLY, "llama.cpp extension"),
    FieldRule("frequency_penalty", APPLY),
    FieldRule("presence_penalty", APPLY),
    FieldRule("logit_bias", APPLY, "ids outside the model's vocabulary are a 400"),
    FieldRule("stop", APPLY, "up to 4 strings"),
    FieldRule("seed", APPLY),
    FieldRule("speculative_decoding", APPLY,
              "hearth extension: `false` turns n-gram speculative decoding off for the request, "
              "`true` on (greedy requests only; the output stays the greedy one); default: the "
              "model's setting. See [Speculative decoding](#speculative-decoding)"),
)

# The sampling and grammar extensions of llama.cpp's server and vLLM that clients send to local
# servers, refused on chat and completions alike.
EXTENSION_FIELDS: tuple[FieldRule, ...] = (
    FieldRule("grammar", REFUSE, "llama.cpp extension; `\"\"` passes", ("",)),
    FieldRule("json_schema", REFUSE, "llama.cpp extension"),
    FieldRule("guided_json", REFUSE, "vLLM extension"),
    FieldRule("guided_regex", REFUSE, "vLLM extension"),
    FieldRule("guided_choice", REFUSE, "vLLM extension"),
    FieldRule("guided_grammar", REFUSE, "vLLM extension"),
    FieldRule("repeat_penalty", REFUSE, "llama.cpp extension; `1` passes", (1, 1.0)),
    FieldRule("repetition_penalty", REFUSE, "vLLM extension; `1` passes", (1, 1.0)),
    FieldRule("typical_p", REFUSE, "llama.cpp extension; `1` passes", (1, 1.0)),
    FieldRule("mirostat", REFUSE, "llama.cpp extension; `0` passes", (0,)),
    FieldRule("ignore_eos", REFUSE, "`false` passes", (False,)),
    FieldRule("min_tokens", REFUSE, "vLLM extension; `0` passes", (0,)),
    FieldRule("n_probs", REFUSE, "llama.cpp extension; `0` passes", (0,)),
)

CHAT_FIELDS: tuple[FieldRule, ...] = (
    FieldRule("model", APPLY),
    FieldRule("messages", APPLY, "text content only; image, audio and file parts are refused; "
              "an assistant's `reasoning_content` (its earlier thinking) is passed to the chat "
              "template, which decides whether the model sees it again"),
    FieldRule("max_tokens", APPLY),
    FieldRule("max_completion_tokens", APPLY, "wins over `max_tokens`"),
    *SAMPLING_FIELDS,
    FieldRule("n", APPLY, "up to `--max-n` (8) and the model's slots; the prompt is evaluated "
              "once; see [Several choices](#several-choices-n)"),
    FieldRule("stream", APPLY),
    FieldRule("stream_options", APPLY, "`include_usage` applied; `include_obfuscation` ignored"),
    FieldRule("response_format", APPLY,
              "`text`, `json_object`, `json_schema` (enforced by a grammar; a schema it cannot "
              "enforce is a 400: see [Structured outputs](#structured-outputs))"),
    FieldRule("user", IGNORE, "an end-user id for the provider's abuse tracking"),
    FieldRule("safety_identifier", IGNORE, "as `user`"),
    FieldRule("prompt_cache_key", IGNORE, "hearth reuses cached prefixes on its own"),
    FieldRule("store", IGNORE, "nothing is stored"),
    FieldRule("metadata", IGNORE, "nothing is stored"),
    FieldRule("service_tier", IGNORE, "one tier"),
    FieldRule("prompt_cache_options", IGNORE, "hearth reuses cached prefixes on its own"),
    FieldRule("prompt_cache_retention", IGNORE, "as `prompt_cache_options`"),
    FieldRule("moderation", REFUSE, "no moderation model runs here"),
    FieldRule("tools", APPLY, "functions only, at most 128; see [Tool calling](#tool-calling)"),
    FieldRule("tool_choice", APPLY, "`none`, `auto`, `required` or a named function"),
    FieldRule("parallel_tool_calls", APPLY, "`false`: at most one call"),
    FieldRule("functions", REFUSE, "deprecated form of `tools`; `[]` passes", ([],)),
    FieldRule("function_call", REFUSE,
              "deprecated form of `tool_choice`; `\"none\"`, `\"auto\"` pass", ("none", "auto")),
    FieldRule("logprobs", APPLY, "log-softmax of the model's logits before sampling; not with "
              "tools or a thinking model (a 400): see [Log-probabilities](#log-probabilities)"),
    FieldRule("top_logprobs", APPLY, "0–20; above 0 needs `logprobs: true`"),
    FieldRule("audio", REFUSE, "text output only"),
    FieldRule("modalities", REFUSE, "`[\"text\"]` passes", (["text"],)),
    FieldRule("prediction", REFUSE, "predicted outputs"),
    FieldRule("web_search_options", REFUSE, "no web access"),
    FieldRule("reasoning_effort", REFUSE, "no model here reasons on request; `\"none\"` passes",
              ("none",)),
    FieldRule("verbosity", REFUSE, "`\"medium\"` (OpenAI's default) passes", ("medium",)),
    *EXTENSION_FIELDS,
    FieldRule("chat_template_kwargs", REFUSE, "`{}` passes", ({},)),
)

# Fields of one message (``messages[i].…``) beyond role/content/name.
MESSAGE_FIELDS: tuple[FieldRule, ...] = (
    FieldRule("tool_calls", APPLY, "an assistant's earlier tool calls"),
    FieldRule("tool_call_id", APPLY, "a `tool` message's: an earlier call's id"),
    FieldRule("function_call", REFUSE, "deprecated form of `tool_calls`"),
    FieldRule("audio", REFUSE, "an earlier audio answer"),
    FieldRule("refusal", REFUSE, "an earlier refusal; send its text as `content`"),
)

EMBEDDING_FIELDS: tuple[FieldRule, ...] = (
    FieldRule("model", APPLY),
    FieldRule("input", APPLY, "strings or token ids; ids outside the vocabulary are a 400"),
    FieldRule("encoding_format", APPLY, "`float` or `base64`"),
    FieldRule("dimensions", APPLY, "only the model's own width"),
    FieldRule("user", IGNORE, "an end-user id for the provider's abuse tracking"),
    FieldRule("input_type", REFUSE, "asymmetric (query/passage) embedding models"),
    FieldRule("truncate", REFUSE, "over-long inputs are a 400; `false` and `\"NONE\"` pass",
              (False, "NONE")),
)


COMPLETION_FIELDS: tuple[FieldRule, ...] = (
    FieldRule("model", APPLY),
    FieldRule("prompt", APPLY, "a string, strings, token ids or lists of token ids; one choice "
              "per prompt; no chat template; special-token text is parsed as special tokens"),
    FieldRule("suffix", APPLY, "fill-in-the-middle with the model's FIM tokens; a 400 for a "
              "model without them"),
    FieldRule("max_tokens", APPLY, "default: the model's configured one, else 16 (OpenAI's); "
              "0 only with `echo` (the prompt scored)"),
    *SAMPLING_FIELDS,
    FieldRule("echo", APPLY, "not with `suffix`"),
    FieldRule("n", APPLY, "up to `--max-n` (8) and the model's slots; choice "
              "`prompt_index * n + i`; see [Several choices](#several-choices-n)"),
    FieldRule("best_of", APPLY, "at least `n`, up to `--max-n` and the model's slots: the `n` "
              "of `best_of` choices with the highest mean token logprob; not streamed"),
    FieldRule("stream", APPLY),
    FieldRule("stream_options", APPLY, "`include_usage` applied"),
    FieldRule("user", IGNORE, "an end-user id for the provider's abuse tracking"),
    FieldRule("logprobs", APPLY, "0–5, the legacy shape; with `echo`, the prompt's tokens "
              "first: see [Log-probabilities](#log-probabilities)"),
    FieldRule("response_format", REFUSE, "`{\"type\": \"text\"}` passes", ({"type": "text"},)),
    *EXTENSION_FIELDS,
)

# ``POST {prefix}/responses`` (the Responses API): translated into a chat request, so the
# sampling and tool fields mean what chat's do. Source: the SDK's ``ResponseCreateParams``.
RESPONSES_FIELDS: tuple[FieldRule, ...] = (
    FieldRule("model", APPLY),
    FieldRule("input", APPLY, "a string, or items: `message` (text parts), `function_call`, "
              "`function_call_output`, `reasoning` (given to the chat template as the next "
              "assistant message's `reasoning_content`); other item "
              "and part kinds are refused"),
    FieldRule("instructions", APPLY, "a system message first; not carried over by "
              "`previous_response_id`"),
    FieldRule("max_output_tokens", APPLY, "reached: `status: \"incomplete\"`; from 1 (OpenAI "
              "asks for at least 16; smaller is allowed here, as chat's `max_tokens` is)"),
    FieldRule("temperature", APPLY, "0–2; 0 is greedy"),
    FieldRule("top_p", APPLY),
    FieldRule("tools", APPLY, "`function` tools only (the flat shape), at most 128; any other "
              "type is refused"),
    FieldRule("tool_choice", APPLY, "`none`, `auto`, `required` or `{\"type\": \"function\", "
              "\"name\": …}`"),
    FieldRule("parallel_tool_calls", APPLY, "`false`: at most one call"),
    FieldRule("text", APPLY, "`format`: `text`, `json_object`, `json_schema` (chat's grammar); "
              "`verbosity` other than `medium` is refused"),
    FieldRule("stream", APPLY),
    FieldRule("store", APPLY, "default true: kept in memory, per API key, lost on restart"),
    FieldRule("previous_response_id", APPLY, "a stored response of the same API key"),
    FieldRule("metadata", APPLY, "stored and echoed"),
    FieldRule("truncation", APPLY, "`disabled` only; `auto` is a 400"),
    FieldRule("user", IGNORE, "echoed; an end-user id for the provider's abuse tracking"),
    FieldRule("safety_identifier", IGNORE, "as `user`"),
    FieldRule("prompt_cache_key", IGNORE, "hearth reuses cached prefixes on its own"),
    FieldRule("prompt_cache_options", IGNORE, "as `prompt_cache_key`"),
    FieldRule("prompt_cache_retention", IGNORE, "as `prompt_cache_key`"),
    FieldRule("service_tier", IGNORE, "one tier"),
    FieldRule("stream_options", IGNORE, "`include_obfuscation`: no obfuscation is sent"),
    FieldRule("max_tool_calls", IGNORE, "counts built-in tools' calls, and there are none"),
    FieldRule("access_programs", IGNORE, "OpenAI's access tiers"),
    FieldRule("image", IGNORE, "image context options; images are refused"),
    FieldRule("background", REFUSE, "every response runs in the foreground; `false` passes",
              (False,)),
    FieldRule("background_options", REFUSE, "as `background`"),
    FieldRule("conversation", REFUSE, "no Conversations API: use `previous_response_id`"),
    FieldRule("context_management", REFUSE, "no compaction"),
    FieldRule("include", REFUSE, "no logprobs, encrypted reasoning or built-in tool outputs; "
              "`[]` passes", ([],)),
    FieldRule("moderation", REFUSE, "no moderation model runs here"),
    FieldRule("prompt", REFUSE, "no stored prompt templates"),
    FieldRule("reasoning", REFUSE, "no model here reasons on request; `{}` passes", ({},)),
    FieldRule("top_logprobs", REFUSE, "`0` passes", (0,)),
)

# Anthropic's Messages API (``POST {prefix}/messages`` and ``/messages/count_tokens``), translated
# into a chat request (api/messages_translate.py). Source: the official ``anthropic`` SDK's
# ``MessageCreateParams`` (tests/unit/test_field_policy.py checks every one of its fields is here).
MESSAGES_FIELDS: tuple[FieldRule, ...] = (
    FieldRule("model", APPLY),
    FieldRule("max_tokens", APPLY, "required (not on count_tokens)"),
    FieldRule("messages", APPLY, "`text`, `tool_use`, `tool_result` blocks; an earlier "
              "`thinking` block goes to the chat template as its message's `reasoning_content` "
              "(`redacted_thinking` is dropped); `image`, `document` and other blocks are "
              "refused"),
    FieldRule("system", APPLY, "a string or text blocks"),
    FieldRule("stop_sequences", APPLY, "up to 4; `stop_reason: \"stop_sequence\"` names the one "
              "that matched"),
    FieldRule("stream", APPLY),
    FieldRule("temperature", APPLY, "0–1; 0 is greedy"),
    FieldRule("top_p", APPLY),
    FieldRule("top_k", APPLY),
    FieldRule("tools", APPLY, "client tools (`name`, `description`, `input_schema`); server "
              "tools (a `type` other than `custom`) are refused"),
    FieldRule("tool_choice", APPLY, "`auto`, `any`, `tool`, `none`; "
              "`disable_parallel_tool_use`"),
    FieldRule("output_config", APPLY, "`format` (`json_schema`) as chat's `response_format`; "
              "`effort` refused"),
    FieldRule("metadata", IGNORE, "`user_id`: an end-user id for the provider's abuse tracking"),
    FieldRule("service_tier", IGNORE, "one tier"),
    FieldRule("inference_geo", IGNORE, "one place"),
    FieldRule("speed", IGNORE, "one speed"),
    FieldRule("cache_control", IGNORE, "hearth reuses cached prefixes on its own"),
    FieldRule("diagnostics", IGNORE, "no cache-miss reports"),
    FieldRule("user_profile_id", IGNORE, "one account"),
    FieldRule("workspace_id", IGNORE, "one workspace"),
    FieldRule("thinking", APPLY, "`enabled` (`budget_tokens` ≥ 1,024 and below `max_tokens`: "
              "a target, as Anthropic's; the model thinks within `max_tokens`) or `adaptive` for "
              "a model whose template thinks — a 400 for one that does not; `disabled` the "
              "other way round: hearth cannot switch a model's thinking on or off"),
    FieldRule("container", REFUSE, "no code execution"),
    FieldRule("mcp_servers", REFUSE, "no MCP connector; `[]` passes", ([],)),
    FieldRule("context_management", REFUSE, "hearth never edits the context"),
)


def _raw_struct(name: str, rules: Sequence[FieldRule],
                extra: Sequence[tuple[str, Any, Any]] = ()) -> type[msgspec.Struct]:
    """A Struct holding only the refused fields, each kept as raw JSON (not parsed unless
    present), so one extra decode finds them whatever else the body holds."""
    fields: list[tuple[str, Any, Any]] = [(r.name, msgspec.Raw, msgspec.Raw(b""))
                                          for r in rules if r.policy is Policy.REFUSED]
    return msgspec.defstruct(name, [*fields, *extra])


_MessageExtras = _raw_struct("_MessageExtras", MESSAGE_FIELDS)
_ChatExtras = _raw_struct("_ChatExtras", CHAT_FIELDS,
                          [("messages", list[_MessageExtras], [])])  # type: ignore[valid-type]
_EmbeddingExtras = _raw_struct("_EmbeddingExtras", EMBEDDING_FIELDS)
_chat_decoder = msgspec.json.Decoder(_ChatExtras)
_embedding_decoder = msgspec.json.Decoder(_EmbeddingExtras)
_CompletionExtras = _raw_struct("_CompletionExtras", COMPLETION_FIELDS)
_TokenizeExtras = msgspec.defstruct(
    "_TokenizeExtras", [("messages", list[_MessageExtras], [])])  # type: ignore[valid-type]
_tokenize_decoder = msgspec.json.Decoder(_TokenizeExtras)
_completion_decoder = msgspec.json.Decoder(_CompletionExtras)
_ResponsesExtras = _raw_struct("_ResponsesExtras", RESPONSES_FIELDS)
_responses_decoder = msgspec.json.Decoder(_ResponsesExtras)
_messages_decoder = msgspec.json.Decoder(_raw_struct("_MessagesExtras", MESSAGES_FIELDS))


def _check(found: msgspec.Struct, rules: Sequence[FieldRule], where: str = "") -> None:
    for rule in rules:
        if rule.policy is not Policy.REFUSED:
            continue
        raw: msgspec.Raw = getattr(found, rule.name)
        if not raw:
            continue
        value = msgspec.json.decode(raw)
        if rule.refuses(value):
            param = f"{where}{rule.name}"
            raise InvalidRequest(f"'{param}' is not supported by this server.", param=param)


def check_chat_fields(body: bytes) -> None:
    """Raise InvalidRequest (``param``: the field, e.g. ``tools`` or ``messages[2].tool_calls``)
    for the first refused field the body sends with a non-neutral value. Call it after the body
    has decoded as a ChatCompletionRequest (so it is a JSON object of the right shape)."""
    found: Any = _chat_decoder.decode(body)
    _check(found, CHAT_FIELDS)
    for i, message in enumerate(found.messages):
        _check(message, MESSAGE_FIELDS, f"messages[{i}].")


def check_embedding_fields(body: bytes) -> None:
    """As :func:`check_chat_fields`, for an embeddings request."""
    _check(_embedding_decoder.decode(body), EMBEDDING_FIELDS)


def check_completion_fields(body: bytes) -> None:
    """As :func:`check_chat_fields`, for a completions request."""
    _check(_completion_decoder.decode(body), COMPLETION_FIELDS)


def check_responses_fields(body: bytes) -> None:
    """As :func:`check_chat_fields`, for a Responses API request."""
    _check(_responses_decoder.decode(body), RESPONSES_FIELDS)


def check_messages_fields(body: bytes) -> None:
    """As :func:`check_chat_fields`, for a Messages (or count_tokens) request."""
    _check(_messages_decoder.decode(body), MESSAGES_FIELDS)


def check_tokenize_fields(body: bytes) -> None:
    """The message fields of a tokenize request's ``messages``, refused as a chat's are (they
    would change the prompt the tokens stand for)."""
    found: Any = _tokenize_decoder.decode(body)
    for i, message in enumerate(found.messages):
        _check(message, MESSAGE_FIELDS, f"messages[{i}].")


def markdown_table(rules: Sequence[FieldRule]) -> str:
    """The README's table of ``rules``: | field | hearth | note |, one row per field."""
    rows = ["| field | hearth | note |", "|---|---|---|"]
    rows += [f"| `{r.name}` | {r.policy.value} | {r.note} |" for r in rules]
    return "\n".join(rows)
