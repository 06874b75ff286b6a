"""The OpenAI Responses API's wire types (``POST {prefix}/responses`` and the stored responses'
endpoints) as msgspec Structs: the request, the response object, its output items and the
streamed events.

Source of the shapes: OpenAI's API reference for the Responses API and the official ``openai``
SDK's types (``openai.types.responses``: ``Response``, ``ResponseOutputMessage``,
``ResponseFunctionToolCall``, ``ResponseReasoningItem``, the ``Response*Event`` classes); the
SDK's ``responses.stream()`` helper reads the events in ``tests/e2e/test_responses_sdk.py``.

The request is decoded loosely where the API is wide (an input item is one Struct with every
field an accepted item kind has; a tool and a content part carry their ``type`` as a string):
:mod:`.responses_translate` checks the kinds by hand, so that a kind hearth does not serve is a
400 naming it (``input[2].content[0].type``, ``tools[1].type``) with a message that says so.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from hearth.api import field_policy
from hearth.api.openai_types import (
    FUNCTION_NAME,
    MAX_MESSAGES,
    MAX_TOOLS,
    PositiveInt,
    Temperature,
    TopP,
    decode_body,
)
from msgspec import Meta

# ---- the request ------------------------------------------------------------------------------


class ContentPartIn(msgspec.Struct):
    """A part of an input message's content: ``input_text`` or ``output_text`` (an earlier
    answer's text) are served; any other kind is a 400 naming its ``type``."""

    type: Annotated[str, Meta(extra_json_schema={"enum": ["input_text", "output_text"]})]
    text: str | None = None


class InputItem(msgspec.Struct):
    """One item of ``input``: a ``message`` (``type`` may be left out, as the SDK's
    ``EasyInputMessageParam`` does), a ``function_call`` (an earlier call of the model), a
    ``function_call_output`` (its result) or a ``reasoning`` item (an earlier answer's thinking:
    given to the chat template as the next assistant message's ``reasoning_content``)."""

    type: Annotated[str, Meta(extra_json_schema={
        "enum": ["message", "function_call", "function_call_output", "reasoning"]})] = "message"
    role: str | None = None
    content: str | list[ContentPartIn] | None = None
    id: str | None = None
    status: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[ContentPartIn] | None = None
    # labels of the SDK's newer items, accepted and not shown to the model (hearth's models
    # were not trained on them): an assistant message's ``phase`` (OpenAI's commentary / final
    # answer), a call's or output's ``namespace`` (of a namespaced tool) and ``caller`` (what
    # ran the call: ``direct`` or a code-execution ``program``)
    phase: Literal["commentary", "final_answer"] | None = None
    namespace: str | None = None
    caller: dict[str, Any] | None = None


class FunctionTool(msgspec.Struct, omit_defaults=True):
    """A tool in the Responses API's flat shape. Only ``function`` tools are served; any other
    ``type`` (web_search, file_search, mcp…) is a 400 naming it."""

    type: Annotated[str, Meta(extra_json_schema={"enum": ["function"]})]
    name: Annotated[str, Meta(extra_json_schema={"pattern": FUNCTION_NAME})] | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    # the SDK's newer tool fields, refused when they ask for something (responses_translate)
    defer_loading: bool | None = None
    allowed_callers: Any = None
    output_schema: Any = None


class NamedFunctionChoice(msgspec.Struct):
    """``tool_choice: {"type": "function", "name": …}``."""

    type: Annotated[str, Meta(extra_json_schema={"enum": ["function"]})]
    name: str | None = None


ToolChoiceIn = Literal["none", "auto", "required"] | NamedFunctionChoice


class TextFormat(msgspec.Struct, omit_defaults=True):
    """``text.format``: ``text``, ``json_object`` or ``json_schema`` (flat: ``name``,
    ``schema``, ``strict``, ``description`` beside ``type``)."""

    type: Literal["text", "json_object", "json_schema"]
    name: Annotated[str, Meta(max_length=64)] | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class TextConfig(msgspec.Struct, omit_defaults=True):
    format: TextFormat | None = None
    verbosity: str | None = None  # only "medium" (OpenAI's default) or null: else a 400


class ResponsesRequest(msgspec.Struct):
    model: str
    input: str | Annotated[list[InputItem], Meta(max_length=MAX_MESSAGES)] | None = None
    instructions: str | None = None
    max_output_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    tools: Annotated[list[FunctionTool], Meta(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoiceIn | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    stream: bool | None = False
    store: bool | None = True
    previous_response_id: str | None = None
    metadata: Annotated[dict[str, Annotated[str, Meta(max_length=512)]],
                        Meta(max_length=16)] | None = None
    user: str | None = None
    # "auto" decodes, to be refused with a message saying why (responses_translate.to_chat)
    truncation: Literal["auto", "disabled"] | None = None


_decoder = msgspec.json.Decoder(ResponsesRequest)


def parse_request(body: bytes) -> ResponsesRequest:
    """The request, or InvalidRequest: a wrong type or value (``param`` names it), or a field
    that :mod:`.field_policy` refuses for the Responses API."""
    req = decode_body(_decoder, body)
    field_policy.check_responses_fields(body)
    return req


# ---- the response object and its items --------------------------------------------------------

ItemStatus = Literal["in_progress", "completed", "incomplete"]


class InputTextPart(msgspec.Struct, tag="input_text", tag_field="type"):
    text: str


class OutputTextPart(msgspec.Struct, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = []
    logprobs: list[Any] = []


class ReasoningTextPart(msgspec.Struct, tag="reasoning_text", tag_field="type"):
    text: str


class MessageItem(msgspec.Struct, tag="message", tag_field="type"):
    """A message: the answer's (role ``assistant``, ``output_text`` parts) or, in a stored
    response's input, any role's."""

    id: str
    role: Literal["user", "system", "developer", "assistant"]
    content: list[InputTextPart | OutputTextPart]
    status: ItemStatus = "completed"


class FunctionCallItem(msgspec.Struct, tag="function_call", tag_field="type"):
    id: str
    call_id: str
    name: str
    arguments: str  # JSON text of an object
    status: ItemStatus = "completed"


class FunctionCallOutputItem(msgspec.Struct, tag="function_call_output", tag_field="type"):
    id: str
    call_id: str
    output: str
    status: ItemStatus = "completed"


class ReasoningItem(msgspec.Struct, tag="reasoning", tag_field="type"):
    """The model's thinking (``<think>…</think>``) as ``reasoning_text`` content."""

    id: str
    summary: list[Any] = []
    content: list[ReasoningTextPart] = []
    status: ItemStatus = "completed"


OutputItem = MessageItem | FunctionCallItem | ReasoningItem
Item = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem


class InputTokensDetails(msgspec.Struct):
    cached_tokens: int = 0


class OutputTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class ResponseUsage(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens_details: OutputTokensDetails


class IncompleteDetails(msgspec.Struct):
    reason: Literal["max_output_tokens"]


class ResponseError(msgspec.Struct):
    code: str
    message: str


ResponseStatus = Literal["in_progress", "completed", "incomplete", "failed"]


class Response(msgspec.Struct):
    """The response object. Request fields are echoed as OpenAI does (``tools`` as sent,
    ``text.format`` defaulting to ``text``); ``output_text`` is not a field of the JSON: the
    official SDKs compute it from ``output``."""

    id: str
    created_at: int
    model: str
    status: ResponseStatus
    output: list[OutputItem]
    object: Literal["response"] = "response"
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    metadata: dict[str, str] = {}
    parallel_tool_calls: bool = True
    temperature: float | None = None
    top_p: float | None = None
    tool_choice: ToolChoiceIn = "auto"
    tools: list[FunctionTool] = []
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    store: bool = True
    text: TextConfig = msgspec.field(default_factory=lambda: TextConfig(TextFormat("text")))
    truncation: Literal["disabled"] = "disabled"
    user: str | None = None
    usage: ResponseUsage | None = None


class DeletedResponse(msgspec.Struct):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class ItemList(msgspec.Struct):
    """``GET {prefix}/responses/{id}/input_items``: a page of the input items."""

    data: list[Item]
    first_id: str | None
    last_id: str | None
    has_more: bool
    object: Literal["list"] = "list"


# ---- streamed events --------------------------------------------------------------------------
# Each one is sent as ``event: <type>`` and ``data: <the event as JSON>``; ``sequence_number``
# counts the stream's events from 0.


class _Event(msgspec.Struct, tag_field="type"):
    sequence_number: int


class ResponseCreated(_Event, tag="response.created"):
    response: Response


class ResponseInProgress(_Event, tag="response.in_progress"):
    response: Response


class ResponseCompleted(_Event, tag="response.completed"):
    response: Response


class ResponseIncomplete(_Event, tag="response.incomplete"):
    response: Response


class ResponseFailed(_Event, tag="response.failed"):
    response: Response


class OutputItemAdded(_Event, tag="response.output_item.added"):
    output_index: int
    item: OutputItem


class OutputItemDone(_Event, tag="response.output_item.done"):
    output_index: int
    item: OutputItem


class ContentPartAdded(_Event, tag="response.content_part.added"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputTextPart | ReasoningTextPart


class ContentPartDone(_Event, tag="response.content_part.done"):
    item_id: str
    output_index: int
    content_index: int
    part: OutputTextPart | ReasoningTextPart


class OutputTextDelta(_Event, tag="response.output_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str
    logprobs: list[Any] = []


class OutputTextDone(_Event, tag="response.output_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str
    logprobs: list[Any] = []


class ReasoningTextDelta(_Event, tag="response.reasoning_text.delta"):
    item_id: str
    output_index: int
    content_index: int
    delta: str


class ReasoningTextDone(_Event, tag="response.reasoning_text.done"):
    item_id: str
    output_index: int
    content_index: int
    text: str


class FunctionCallArgumentsDelta(_Event, tag="response.function_call_arguments.delta"):
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDone(_Event, tag="response.function_call_arguments.done"):
    item_id: str
    output_index: int
    arguments: str


class ErrorEvent(_Event, tag="error"):
    """An error after the stream began (a worker died, the server shut down): then
    ``response.failed``."""

    message: str
    code: str | None = None
    param: str | None = None


Event = (ResponseCreated | ResponseInProgress | ResponseCompleted | ResponseIncomplete
         | ResponseFailed | OutputItemAdded | OutputItemDone | ContentPartAdded | ContentPartDone
         | OutputTextDelta | OutputTextDone | ReasoningTextDelta | ReasoningTextDone
         | FunctionCallArgumentsDelta | FunctionCallArgumentsDone | ErrorEvent)

_json = msgspec.json.Encoder()


def sse(event: Event) -> bytes:
    """One server-sent event: its ``event:`` line (the event's type) and its ``data:`` line."""
    tag = type(event).__struct_config__.tag
    return b"event: " + str(tag).encode() + b"\ndata: " + _json.encode(event) + b"\n\n"
