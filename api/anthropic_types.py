"""Anthropic's Messages API on the wire: ``POST {prefix}/messages`` and
``POST {prefix}/messages/count_tokens`` request and answer shapes, as msgspec Structs.

Source of the shapes: the official ``anthropic`` SDK's ``types/`` (``MessageCreateParams``,
``Message``, ``RawMessageStreamEvent``…), which ``tests/unit/test_messages_events.py`` checks
the answers and events against, and ``tests/unit/test_field_policy.py`` the request fields.
Requests decode leniently: a content block is one Struct with every field a block kind may
carry, so that a block of a kind hearth does not serve (``image``, ``document``…) is refused
by :mod:`.messages_translate` with a 400 that names it, rather than by a decode error.
Unknown fields are ignored, except those :mod:`.field_policy` refuses (``MESSAGES_FIELDS``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from hearth.api import field_policy
from hearth.api.openai_types import (
    INT64_MAX,
    MAX_MESSAGES,
    MAX_TOOLS,
    PositiveInt,
    decode_body,
)
from hearth.scheduler.errors import InvalidRequest
from msgspec import Meta

# Anthropic's ranges (its API reference): temperature 0–1, top_p 0–1, top_k ≥ 0.
Temperature = Annotated[float, Meta(ge=0.0, le=1.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
TopK = Annotated[int, Meta(ge=0, le=INT64_MAX)]
MAX_STOP_SEQUENCES = 4  # hearth's limit for chat's ``stop`` too
BLOCK_KINDS = ("text", "tool_use", "tool_result", "thinking", "redacted_thinking")


def _doc(**schema: Any) -> Meta:
    return Meta(extra_json_schema=schema)


class ResultBlock(msgspec.Struct):
    """A block inside a ``tool_result``'s content: text only is served."""

    type: Annotated[str, _doc(enum=["text"])]
    text: str | None = None


class Block(msgspec.Struct):
    """One content block of a message, any kind: ``text`` (``text``), ``tool_use`` (an
    assistant's earlier call: ``id``, ``name``, ``input``), ``tool_result`` (a user's answer to
    a call: ``tool_use_id``, ``content`` a string or text blocks, ``is_error``), ``thinking``
    (an assistant's earlier thinking: ``thinking``, ``signature``) / ``redacted_thinking``
    (``data``: dropped). Other kinds are a 400."""

    type: Annotated[str, _doc(enum=list(BLOCK_KINDS))]
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[ResultBlock] | None = None
    is_error: bool | None = None
    thinking: str | None = None
    signature: str | None = None  # Anthropic's check of its own thinking: nothing to check here
    data: str | None = None  # a redacted_thinking block's


class SystemBlock(msgspec.Struct):
    type: Annotated[str, _doc(enum=["text"])]
    text: str


class MessageParam(msgspec.Struct):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolParam(msgspec.Struct):
    """A client tool (``type`` absent or ``custom``); Anthropic's server tools (``web_search_…``,
    ``bash_…``…) are a 400 naming their ``type``."""

    name: str
    input_schema: dict[str, Any] | None = None
    description: str | None = None
    type: str | None = None


class ToolChoiceParam(msgspec.Struct):
    type: Annotated[str, _doc(enum=["auto", "any", "tool", "none"])]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class Metadata(msgspec.Struct):
    user_id: str | None = None


class OutputFormat(msgspec.Struct):
    type: Annotated[str, _doc(enum=["json_schema"])]
    schema: dict[str, Any]


class OutputConfig(msgspec.Struct):
    """``format``: the answer's JSON Schema (chat's ``response_format`` json_schema);
    ``effort`` is refused (no model here reasons on request)."""

    format: OutputFormat | None = None
    effort: str | None = None


Messages = Annotated[list[MessageParam], _doc(minItems=1, maxItems=MAX_MESSAGES)]
Tools = Annotated[list[ToolParam], _doc(maxItems=MAX_TOOLS)]


class ThinkingParam(msgspec.Struct):
    """``thinking``: ``{"type": "enabled", "budget_tokens": N}`` (N ≥ 1,024 and below
    ``max_tokens``, as Anthropic checks it), ``{"type": "adaptive"}`` or ``{"type":
    "disabled"}``; applied by :func:`check_thinking` once the model is known."""

    type: Literal["enabled", "adaptive", "disabled"]
    budget_tokens: int | None = None
    display: str | None = None  # Anthropic's summarized/omitted: refused (check_thinking)


class MessagesRequest(msgspec.Struct):
    model: str
    max_tokens: PositiveInt
    messages: Messages
    system: str | list[SystemBlock] | None = None
    stop_sequences: Annotated[list[str], _doc(maxItems=MAX_STOP_SEQUENCES)] | None = None
    stream: bool | None = False
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    tools: Tools | None = None
    tool_choice: ToolChoiceParam | None = None
    metadata: Metadata | None = None
    output_config: OutputConfig | None = None
    service_tier: str | None = None
    inference_geo: str | None = None
    thinking: ThinkingParam | None = None


class CountTokensRequest(msgspec.Struct):
    model: str
    messages: Messages
    system: str | list[SystemBlock] | None = None
    tools: Tools | None = None
    tool_choice: ToolChoiceParam | None = None
    output_config: OutputConfig | None = None
    thinking: ThinkingParam | None = None


_messages_decoder = msgspec.json.Decoder(MessagesRequest)
_count_decoder = msgspec.json.Decoder(CountTokensRequest)


def parse_messages_request(body: bytes) -> MessagesRequest:
    """The request, or InvalidRequest naming the field (a wrong type or value, ``max_tokens``
    missing, or a field :mod:`.field_policy` refuses)."""
    req = decode_body(_messages_decoder, body)
    field_policy.check_messages_fields(body)
    return req


def check_thinking(thinking: ThinkingParam | None, max_tokens: int | None,
                   model_thinks: bool) -> None:
    """Apply ``thinking`` once the model is known (InvalidRequest naming ``thinking…``).

    hearth cannot switch a model's thinking on or off: a model whose chat template knows
    ``<think>`` (Qwen 3, DeepSeek-R1 distills) thinks, and its thinking comes back as thinking
    blocks; others never do. So ``enabled`` / ``adaptive`` pass for a model that thinks and are
    a 400 for one that does not, and ``disabled`` the other way round. ``budget_tokens`` is
    checked as Anthropic checks it (at least 1,024, below ``max_tokens``; source: Anthropic's
    extended-thinking docs) and is a target there, not a cap: hearth's model thinks as long as
    it does, within ``max_tokens``."""
    if thinking is None:
        return
    if thinking.display is not None:
        raise InvalidRequest("thinking.display is not supported: the thinking comes back in "
                             "full, as the model wrote it; leave display out.",
                             param="thinking.display")
    kind = thinking.type
    if kind == "enabled":
        budget = thinking.budget_tokens
        if budget is None:
            raise InvalidRequest("thinking.budget_tokens is required when thinking is enabled.",
                                 param="thinking.budget_tokens")
        if budget < 1024:
            raise InvalidRequest(f"thinking.budget_tokens must be at least 1024; got {budget}.",
                                 param="thinking.budget_tokens")
        if max_tokens is not None and budget >= max_tokens:
            raise InvalidRequest(f"thinking.budget_tokens ({budget}) must be less than "
                                 f"max_tokens ({max_tokens}).", param="thinking.budget_tokens")
    if kind in ("enabled", "adaptive") and not model_thinks:
        raise InvalidRequest(f"thinking '{kind}' asks for thinking, and this model does not "
                             "think (its chat template knows no <think>); leave thinking out "
                             "or send {\"type\": \"disabled\"}.", param="thinking.type")
    if kind == "disabled" and model_thinks:
        raise InvalidRequest("This model thinks (its chat template knows <think>), and this "
                             "server cannot switch that off; leave thinking out or enable it: "
                             "the thinking comes back as thinking blocks.",
                             param="thinking.type")


def parse_count_tokens_request(body: bytes) -> CountTokensRequest:
    req = decode_body(_count_decoder, body)
    field_policy.check_messages_fields(body)
    return req


# ---- answers ----------------------------------------------------------------------------------


class TextBlock(msgspec.Struct, tag="text", tag_field="type"):
    text: str


class ToolUseBlock(msgspec.Struct, tag="tool_use", tag_field="type"):
    id: str  # toolu_…
    name: str
    input: dict[str, Any]


class ThinkingBlock(msgspec.Struct, tag="thinking", tag_field="type"):
    """``signature`` is empty: Anthropic signs its thinking so that it can be sent back and
    checked; hearth has nothing to check it against (a thinking block sent back goes to the chat
    template as ``reasoning_content``, signature unread)."""

    thinking: str
    signature: str = ""


ContentBlock = TextBlock | ToolUseBlock | ThinkingBlock
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


class Usage(msgspec.Struct):
    """As Anthropic counts: ``input_tokens`` are the prompt tokens *not* read from the cache, so
    that ``input_tokens + cache_read_input_tokens`` is the whole prompt (hearth never writes a
    cache entry on request: ``cache_creation_input_tokens`` is 0)."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class Message(msgspec.Struct, tag="message", tag_field="type"):
    id: str  # msg_…
    model: str
    content: list[ContentBlock]
    stop_reason: StopReason | None
    stop_sequence: str | None
    usage: Usage
    role: Literal["assistant"] = "assistant"


class CountTokensResponse(msgspec.Struct):
    input_tokens: int


# ---- stream events (``event: <type>`` then ``data: <the event>``) -----------------------------


class MessageStart(msgspec.Struct, tag="message_start", tag_field="type"):
    message: Message


class ContentBlockStart(msgspec.Struct, tag="content_block_start", tag_field="type"):
    index: int
    content_block: ContentBlock


class TextDelta(msgspec.Struct, tag="text_delta", tag_field="type"):
    text: str


class InputJsonDelta(msgspec.Struct, tag="input_json_delta", tag_field="type"):
    partial_json: str


class ThinkingDelta(msgspec.Struct, tag="thinking_delta", tag_field="type"):
    thinking: str


class SignatureDelta(msgspec.Struct, tag="signature_delta", tag_field="type"):
    signature: str


BlockDelta = TextDelta | InputJsonDelta | ThinkingDelta | SignatureDelta


class ContentBlockDelta(msgspec.Struct, tag="content_block_delta", tag_field="type"):
    index: int
    delta: BlockDelta


class ContentBlockStop(msgspec.Struct, tag="content_block_stop", tag_field="type"):
    index: int


class StopDelta(msgspec.Struct):
    stop_reason: StopReason | None
    stop_sequence: str | None


class DeltaUsage(msgspec.Struct):
    """The message's usage so far (cumulative), as ``message_delta`` carries it."""

    output_tokens: int
    input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class MessageDelta(msgspec.Struct, tag="message_delta", tag_field="type"):
    delta: StopDelta
    usage: DeltaUsage


class MessageStop(msgspec.Struct, tag="message_stop", tag_field="type"):
    pass


class Ping(msgspec.Struct, tag="ping", tag_field="type"):
    pass


StreamEvent = (MessageStart | ContentBlockStart | ContentBlockDelta | ContentBlockStop
               | MessageDelta | MessageStop | Ping)
