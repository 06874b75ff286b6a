"""OpenAI request and response types as msgspec Structs, and request validation.

Unknown fields are accepted and ignored (clients send many), except those :mod:`.field_policy`
refuses because they would change the answer; a wrong type or an out-of-range
value is an ``InvalidRequest`` whose ``param`` names the field (``messages[1].content``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Protocol, TypeVar

import msgspec
from hearth.api import field_policy, json_schema
from hearth.api.logprobs import ChoiceLogprobs
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import ChatMessage, Grammar, RequestedSampling, ToolCall
from msgspec import Meta

T = TypeVar("T")

MAX_STOP = 4
MAX_MESSAGES = 4096  # and --max-body bounds their total size
MAX_STOP_LENGTH = 256  # characters in one stop string
MAX_LOGIT_BIAS = 300
INT32_MAX = 2**31 - 1  # token ids are llama_token (int32)
ROLES = ("system", "developer", "user", "assistant", "tool")


def _doc(**schema: Any) -> Meta:
    """A rule that the code below checks (so that its error names the field as OpenAI does), also
    stated in the served OpenAPI document; msgspec itself does not enforce it."""
    return Meta(extra_json_schema=schema)


class ContentPart(msgspec.Struct):
    type: Annotated[str, _doc(enum=["text"])]
    text: str | None = None


# In the document, a part's text is a required string (JSON Schema reads `$ref` siblings as allOf).
TextPart = Annotated[ContentPart, _doc(required=["type", "text"],
                                       properties={"text": {"type": "string"}})]


class FunctionCall(msgspec.Struct):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCallIn(msgspec.Struct):
    """One of an assistant message's earlier ``tool_calls``."""

    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class Message(msgspec.Struct):
    role: Annotated[str, _doc(enum=list(ROLES))]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # an assistant's
    tool_call_id: str | None = None  # a tool message's: the call it answers
    # an assistant's earlier thinking (as hearth, llama.cpp's server and vLLM return it):
    # passed to the chat template, which decides whether the model sees it again
    reasoning_content: str | None = None


MAX_TOOLS = 128
MAX_TOP_LOGPROBS = 20  # OpenAI's bound on chat's top_logprobs
FUNCTION_NAME = "^[a-zA-Z0-9_-]{1,64}$"  # OpenAI's rule for a function's name


class FunctionDefinition(msgspec.Struct):
    name: Annotated[str, _doc(pattern=FUNCTION_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema of an object; absent: no arguments
    strict: bool | None = None  # hearth always enforces the schema (see the README)


class Tool(msgspec.Struct):
    type: Annotated[str, _doc(enum=["function"])]
    function: FunctionDefinition


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    type: Annotated[str, _doc(enum=["function"])]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


# Integers are bounded to int64: they travel as msgpack, which cannot encode larger ones (an
# unbounded JSON integer would otherwise fail at submit time as a 500, not a 400).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
PositiveInt = Annotated[int, Meta(ge=1, le=INT64_MAX)]
Int64 = Annotated[int, Meta(ge=INT64_MIN, le=INT64_MAX)]
StopString = Annotated[str, _doc(maxLength=MAX_STOP_LENGTH)]
# A logit_bias key is a token id 0..INT32_MAX in at most 10 ASCII digits.
_TOKEN_ID = ("^(?:[0-9]{1,9}|[01][0-9]{9}|20[0-9]{8}|21[0-3][0-9]{7}|214[0-6][0-9]{6}"
             "|2147[0-3][0-9]{5}|21474[0-7][0-9]{4}|214748[0-2][0-9]{3}|2147483[0-5][0-9]{2}"
             "|21474836[0-3][0-9]|214748364[0-7])$")
LogitBias = Annotated[dict[Annotated[str, _doc(pattern=_TOKEN_ID)],
                           Annotated[float, _doc(minimum=-100, maximum=100)]],
                      _doc(maxProperties=MAX_LOGIT_BIAS)]


class JSONSchemaFormat(msgspec.Struct):
    """The JSON Schema the answer must be valid against, enforced while it is generated. A
    schema with a keyword that cannot be enforced (``minimum``, ``pattern``...) is a 400 with
    ``param: "response_format"``; see the README's "Structured outputs". ``strict`` is accepted
    either way: the schema is always enforced, or refused. No ``schema``: any JSON object."""

    name: Annotated[str, Meta(max_length=64)]
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class ResponseFormatText(msgspec.Struct, tag="text", tag_field="type"):
    pass


class ResponseFormatJSONObject(msgspec.Struct, tag="json_object", tag_field="type"):
    pass


class ResponseFormatJSONSchema(msgspec.Struct, tag="json_schema", tag_field="type"):
    json_schema: JSONSchemaFormat


ResponseFormat = ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema


# hearth's own request field (chat and completions): engine/speculation.py
SpeculativeDecoding = Annotated[bool, Meta(description=(
    "hearth extension: n-gram speculative decoding for this request. false: never; true: on "
    "(not with logprobs or a grammar); absent or null: the model's setting. It changes speed, "
    "not the answer: greedy output stays the greedy one, and sampled output keeps its "
    "distribution (speculative sampling; with a seed, the same tokens)."))]


class ChatCompletionRequest(msgspec.Struct):
    model: str
    messages: Annotated[list[Message], _doc(minItems=1, maxItems=MAX_MESSAGES)]
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Annotated[int, Meta(ge=0, le=INT64_MAX)] | None = None
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    stop: StopString | Annotated[list[StopString], _doc(maxItems=MAX_STOP)] | None = None
    seed: Int64 | None = None
    n: PositiveInt | None = None  # at most --max-n (the served document says so)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    tools: Annotated[list[Tool], _doc(maxItems=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    logprobs: Annotated[bool, Meta(description=(
        "Each generated token's log-probability: the log-softmax of the model's logits before "
        "sampling filters and grammars. A 400 with tools or a thinking model's parsed answer."
    ))] | None = None
    top_logprobs: Annotated[int, Meta(ge=0, le=MAX_TOP_LOGPROBS, description=(
        "How many of the most likely tokens to list at each step; above 0 needs "
        "'logprobs': true."))] | None = None
    speculative_decoding: SpeculativeDecoding | None = None


_decoder = msgspec.json.Decoder(ChatCompletionRequest)
_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_MISSING = re.compile(r"^Object missing required field `(?P<field>[^`]+)`")


def _param_of(message: str) -> tuple[str, str | None]:
    """Split msgspec's "... - at `$.a[0].b`" into (message, "a[0].b"). A missing field is
    named in the message, not the path: it is appended ("messages[0]" -> "messages[0].role").
    A dict value's path (`$.logit_bias[...]`) names the dict ("logit_bias")."""
    m = _PATH.search(message)
    text = message[: m.start()] if m else message
    path = m.group("path").lstrip(".").replace("[...]", "") if m else ""
    missing = _MISSING.match(text)
    if missing:
        path = f"{path}.{missing.group('field')}" if path else missing.group("field")
    return text, path or None


def _decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    if not body.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        text, param = _param_of(str(exc))
        raise InvalidRequest(f"Invalid request: {text}" + (f" (at '{param}')" if param else ""),
                             param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    except RecursionError:  # msgspec skips an unknown field's value recursively
        raise InvalidRequest("The request body is nested too deeply.") from None
    except UnicodeDecodeError:  # msgspec decodes a string's bytes with Python's codec
        raise InvalidRequest("The request body is not valid UTF-8.") from None


decode_body = _decode  # for the other request modules (api/completion_types.py)


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    """The request, or InvalidRequest: a wrong type or value, or a field that
    :mod:`.field_policy` refuses (``param`` names it)."""
    req = _decode(_decoder, body)
    field_policy.check_chat_fields(body)
    chat_logprobs(req)  # top_logprobs without logprobs
    return req


def chat_messages(req: ChatCompletionRequest) -> list[ChatMessage]:
    return messages_of(req.messages)


def messages_of(messages: list[Message]) -> list[ChatMessage]:
    """A request's messages as the job carries them (InvalidRequest naming the field)."""
    if not messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequest(f"'messages' may hold at most {MAX_MESSAGES} messages.",
                             param="messages")
    out = []
    for i, msg in enumerate(messages):
        if msg.role not in ROLES:
            raise InvalidRequest(
                f"Invalid role '{msg.role}' in messages[{i}]; expected one of "
                f"{', '.join(ROLES)}.", param=f"messages[{i}].role")
        content = msg.content
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:
            texts = []
            for j, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    raise InvalidRequest(
                        f"Content parts of type '{part.type}' are not supported by this server "
                        f"(messages[{i}].content[{j}]); send text parts.",
                        param=f"messages[{i}].content[{j}].type")
                texts.append(part.text)
            text = "\n".join(texts)
        role = "system" if msg.role == "developer" else msg.role
        calls = [ToolCall(c.id, c.function.name, c.function.arguments)
                 for c in msg.tool_calls or []]
        out.append(ChatMessage(role, text, calls,
                               msg.tool_call_id if role == "tool" else None, msg.name,
                               msg.reasoning_content if role == "assistant" else None))
    return out


def check_tool_call_ids(messages: list[ChatMessage]) -> None:
    """Only assistant messages carry ``tool_calls``; a tool message names, in
    ``tool_call_id``, a call of an earlier assistant message (InvalidRequest naming it). Rules
    across messages, which the OpenAPI document cannot state: the chat and tokenize handlers
    call this after :func:`messages_of`."""
    known: set[str] = set()
    for i, msg in enumerate(messages):
        if msg.tool_calls and msg.role != "assistant":
            raise InvalidRequest(f"messages[{i}] has tool_calls but only assistant messages may.",
                                 param=f"messages[{i}].tool_calls")
        known.update(c.id for c in msg.tool_calls)
        if msg.role == "tool" and msg.tool_call_id is None:
            raise InvalidRequest(f"messages[{i}] is a tool message without 'tool_call_id': say "
                                 "which earlier tool call it answers.",
                                 param=f"messages[{i}].tool_call_id")
        if msg.role == "tool" and msg.tool_call_id not in known:
            raise InvalidRequest(f"messages[{i}].tool_call_id '{msg.tool_call_id}' answers no "
                                 "tool call of an earlier assistant message.",
                                 param=f"messages[{i}].tool_call_id")


class SamplingFields(Protocol):
    """The sampling fields chat and completions requests share."""

    n: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    min_p: float | None
    seed: int | None
    frequency_penalty: float | None
    presence_penalty: float | None
    logit_bias: dict[str, float] | None
    stop: str | list[str] | None
    speculative_decoding: bool | None


def response_grammar(req: ChatCompletionRequest) -> Grammar | None:
    """The grammar ``response_format`` asks for (None: free text). Raises InvalidRequest
    (``param: "response_format"``) for a schema that cannot be enforced."""
    fmt = req.response_format
    if isinstance(fmt, ResponseFormatJSONObject):
        return json_schema.json_object_grammar()
    if isinstance(fmt, ResponseFormatJSONSchema):
        schema = fmt.json_schema.schema
        return json_schema.schema_grammar({} if schema is None else schema)
    return None


def chat_logprobs(req: ChatCompletionRequest) -> int | None:
    """What a chat request's ``logprobs`` / ``top_logprobs`` ask of the job (ChatJob.logprobs):
    None for nothing, else how many alternatives per token. ``top_logprobs`` above 0 without
    ``logprobs: true`` is an InvalidRequest naming it (OpenAI's rule); 0 asks for nothing."""
    if not req.logprobs:
        if req.top_logprobs:
            raise InvalidRequest("'top_logprobs' requires 'logprobs': true.",
                                 param="top_logprobs")
        return None
    return req.top_logprobs or 0


def requested_sampling(req: ChatCompletionRequest) -> RequestedSampling:
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None \
        else req.max_tokens
    return sampling_of(req, max_tokens)


def sampling_of(req: SamplingFields, max_tokens: int | None) -> RequestedSampling:
    """The sampling a chat or completions request asks for (InvalidRequest naming the field
    for what the Struct's types cannot say)."""
    stop: list[str] = []
    if isinstance(req.stop, str):
        stop = [req.stop] if req.stop else []
    elif req.stop is not None:
        if len(req.stop) > MAX_STOP:
            raise InvalidRequest(f"'stop' may hold at most {MAX_STOP} strings.", param="stop")
        stop = [s for s in req.stop if s]
    if any(len(s) > MAX_STOP_LENGTH for s in stop):
        raise InvalidRequest(f"a stop string may be at most {MAX_STOP_LENGTH} characters.",
                             param="stop")
    bias: dict[int, float] = {}
    if req.logit_bias:
        if len(req.logit_bias) > MAX_LOGIT_BIAS:
            raise InvalidRequest(f"'logit_bias' may hold at most {MAX_LOGIT_BIAS} entries.",
                                 param="logit_bias")
        for key, value in req.logit_bias.items():
            if not (key.isascii() and key.isdigit()) or len(key) > 10:
                raise InvalidRequest(f"logit_bias key '{key}' is not a token id.",
                                     param="logit_bias")
            token = int(key)
            if token > INT32_MAX or not -100.0 <= value <= 100.0:
                raise InvalidRequest("logit_bias values must be in [-100, 100] for token ids "
                                     "0 to 2147483647.", param="logit_bias")
            bias[token] = float(value)
    return RequestedSampling(
        max_tokens=max_tokens,
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        seed=req.seed,
        frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
        logit_bias=bias,
        stop=stop,
        speculative_decoding=req.speculative_decoding,
    )


# ---- responses --------------------------------------------------------------------------------


class PromptTokensDetails(msgspec.Struct):
    cached_tokens: Annotated[int, Meta(description=(
        "prompt tokens not evaluated again: reused from the slot's KV cache, copied from "
        "another slot's, or restored from the host-RAM prompt cache (--cache-ram)"))] = 0


class CompletionTokensDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class Usage(msgspec.Struct, omit_defaults=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None


class FunctionCallOut(msgspec.Struct):
    name: str
    arguments: str


class ToolCallOut(msgspec.Struct):
    id: str
    function: FunctionCallOut
    type: Literal["function"] = "function"


class ResponseMessage(msgspec.Struct, omit_defaults=True):
    role: Literal["assistant"]
    content: str | None  # null when the answer is only tool calls
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str | None = None


class Choice(msgspec.Struct):
    index: int
    message: ResponseMessage
    finish_reason: str | None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    object: Literal["chat.completion"] = "chat.completion"


class FunctionDelta(msgspec.Struct, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(msgspec.Struct, omit_defaults=True):
    """A call's first delta has ``id``, ``type``, ``function.name`` and ``arguments: ""``;
    later ones only ``index`` and an arguments fragment (OpenAI's streaming shape)."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta | None = None


class ChunkDelta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    usage: Usage | None = None


class ModelInfo(msgspec.Struct, omit_defaults=True):
    """hearth's own facts about a model (the ``hearth`` field of a model object)."""

    loaded: bool
    size_bytes: int
    alias_of: str | None = None  # this id is an alias (from the config) of that model
    architecture: str | None = None
    parameters: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    error: str | None = None
    # where it is loaded now: "local" and the names of remote workers' boxes (hearth worker
    # --join); left out when it is loaded nowhere
    workers: list[str] = []
    # the KV cache one slot takes: its types (--cache-type-k/-v or the model's table) and bytes
    # for the slot's context size (scheduler.placement.kv_bytes_per_slot; 0: the header can't say)
    kv_cache_type_k: Annotated[str, Meta(
        description="KV cache type of the keys (f16, q8_0, q4_0, f32)")] | None = None
    kv_cache_type_v: Annotated[str, Meta(
        description="KV cache type of the values")] | None = None
    kv_bytes_per_slot: Annotated[int, Meta(
        description="bytes of KV cache one slot takes at the model's context size and cache "
                    "types (from the GGUF header; 0 if it cannot say)")] | None = None
    # where a loaded model runs, as its worker's llama.cpp build placed it: "cpu", or "gpu" with
    # gpu_layers of its layers offloaded (absent while it is not loaded)
    device: Annotated[Literal["cpu", "gpu"], Meta(
        description="where the loaded model runs, as its worker's llama.cpp build placed it "
                    "(absent while not loaded)")] | None = None
    gpu_layers: Annotated[int, Meta(
        description="layers on the GPU (0 on the CPU)")] | None = None
    layers: Annotated[int, Meta(description="the model's repeating layers")] | None = None


class Model(msgspec.Struct):
    id: str
    created: int
    owned_by: str
    hearth: ModelInfo
    object: Literal["model"] = "model"


class ModelList(msgspec.Struct):
    data: list[Model]
    object: Literal["list"] = "list"


# ---- embeddings -------------------------------------------------------------------------------

MAX_EMBEDDING_INPUTS = 2048

TokenId = Annotated[int, Meta(ge=0, le=2**31 - 1)]
InputText = Annotated[str, _doc(minLength=1)]
# One array-like member per msgspec union: items are checked for a single kind below (and the
# document says so with the anyOf).
EmbeddingInput = InputText | Annotated[
    list[InputText | TokenId | Annotated[list[TokenId], _doc(minItems=1)]],
    _doc(minItems=1, maxItems=MAX_EMBEDDING_INPUTS,
         anyOf=[{"items": {"type": "string"}}, {"items": {"type": "integer"}},
                {"items": {"type": "array"}}])]


class EmbeddingRequest(msgspec.Struct):
    model: str
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] = "float"
    # bounded so that it always fits the job message (msgpack integers); no model is this wide
    dimensions: Annotated[int, Meta(ge=1, le=INT32_MAX)] | None = None
    user: str | None = None


_embedding_decoder = msgspec.json.Decoder(EmbeddingRequest)


def parse_embedding_request(body: bytes) -> EmbeddingRequest:
    try:
        req = _decode(_embedding_decoder, body)
    except InvalidRequest as exc:
        if exc.param and exc.param.startswith("input["):
            exc.param = "input"  # as OpenAI names it, whichever item was wrong
        raise
    field_policy.check_embedding_fields(body)
    return req


def embedding_inputs(req: EmbeddingRequest) -> tuple[list[str], list[list[int]]]:
    """(texts, token lists): exactly one of them is non-empty."""
    inp = req.input
    if isinstance(inp, str):
        inp = [inp]
    if not inp:
        raise InvalidRequest("'input' must not be empty.", param="input")
    if len(inp) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(f"'input' may hold at most {MAX_EMBEDDING_INPUTS} items, got "
                             f"{len(inp)}.", param="input")
    kind = type(inp[0])
    if any(type(item) is not kind for item in inp):
        raise InvalidRequest("'input' must be a string, a list of strings, a list of token ids "
                             "or a list of lists of token ids, not a mixture.", param="input")
    if kind is str:
        texts = [t for t in inp if isinstance(t, str)]
        for i, text in enumerate(texts):
            if not text:
                raise InvalidRequest(f"input[{i}] is an empty string.", param="input")
        return texts, []
    if kind is int:
        return [], [[t for t in inp if isinstance(t, int)]]
    lists = [t for t in inp if isinstance(t, list)]
    for i, toks in enumerate(lists):
        if not toks:
            raise InvalidRequest(f"input[{i}] is an empty list of tokens.", param="input")
    return [], lists


class Embedding(msgspec.Struct):
    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct):
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
    object: Literal["list"] = "list"
