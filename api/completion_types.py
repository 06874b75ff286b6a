"""OpenAI's legacy completions (``POST {prefix}/completions``) and hearth's tokenize /
detokenize, as msgspec Structs, with their validation (as api/openai_types.py does for chat).

Prompt forms (OpenAI's API reference, "Create completion"): a string, a list of strings, a list
of token ids, or a list of lists of token ids. Each string or id list is one prompt, answered by
one choice (``index`` in order). ``max_tokens`` not set: the model's configured default, else 16
(OpenAI's default for this endpoint; see scheduler.messages.COMPLETION_MAX_TOKENS).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from hearth.api import field_policy
from hearth.api.logprobs import CompletionLogprobs
from hearth.api.openai_types import (
    INT32_MAX,
    INT64_MAX,
    MAX_MESSAGES,
    Int64,
    LogitBias,
    Message,
    Penalty,
    PositiveInt,
    PromptTokensDetails,
    SpeculativeDecoding,
    StopString,
    StreamOptions,
    Temperature,
    TopP,
    Usage,
    _doc,
    decode_body,
)
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import RawPrompt
from msgspec import UNSET, Meta, UnsetType

MAX_PROMPTS = 64  # prompts in one request: each takes a slot (or waits for one)
MAX_STOP = 4
MAX_LOGPROBS = 5  # OpenAI's bound on the legacy completions' logprobs

TokenId = Annotated[int, Meta(ge=0, le=INT32_MAX)]
# One array-like member per msgspec union: items are checked for a single kind below (and the
# document says so with the anyOf).
PromptInput = str | Annotated[
    list[str | TokenId | Annotated[list[TokenId], _doc(minItems=1)]],
    _doc(minItems=1,
         anyOf=[{"items": {"type": "string"}, "maxItems": MAX_PROMPTS},
                {"items": {"type": "integer"}},
                {"items": {"type": "array"}, "maxItems": MAX_PROMPTS}])]


class CompletionRequest(msgspec.Struct):
    model: str
    prompt: PromptInput
    suffix: str | None = None
    max_tokens: Annotated[int, Meta(ge=0, le=INT64_MAX, description=(
        "The most tokens to generate. 0 only with 'echo': the prompt is scored (with "
        "'logprobs') and nothing generated, as OpenAI allows."))] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: Annotated[int, Meta(ge=0, le=2**63 - 1)] | None = None
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    logit_bias: LogitBias | None = None
    stop: StopString | Annotated[list[StopString], _doc(maxItems=MAX_STOP)] | None = None
    seed: Int64 | None = None
    echo: bool | None = False
    logprobs: Annotated[int, Meta(ge=0, le=MAX_LOGPROBS, description=(
        "Each generated token's log-probability (the log-softmax of the model's logits before "
        "sampling filters) and this many most likely tokens, in the legacy shape. With "
        "'echo', the prompt's tokens come first (the first one's log-probability null)."
        ))] | None = None
    n: PositiveInt | None = None  # at most --max-n (the served document says so)
    best_of: PositiveInt | None = None  # at least n; more: the best n of best_of (handler)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    speculative_decoding: SpeculativeDecoding | None = None


_decoder = msgspec.json.Decoder(CompletionRequest)


def parse_completion_request(body: bytes) -> CompletionRequest:
    """The request, or InvalidRequest naming the field (a wrong type or value, a refused field
    of :mod:`.field_policy`, ``echo`` with ``suffix``)."""
    try:
        req = decode_body(_decoder, body)
    except InvalidRequest as exc:
        if exc.param and exc.param.startswith("prompt["):
            exc.param = "prompt"  # as OpenAI names it, whichever item was wrong
        raise
    field_policy.check_completion_fields(body)
    n = req.n or 1
    if req.best_of is not None and req.best_of < n:
        raise InvalidRequest(f"'best_of' ({req.best_of}) must be at least 'n' ({n}).",
                             param="best_of")
    if req.best_of is not None and req.best_of > n and req.stream:
        raise InvalidRequest("'best_of' larger than 'n' cannot be streamed (the best are "
                             "known only at the end).", param="best_of")
    if req.max_tokens == 0 and not req.echo:
        raise InvalidRequest("'max_tokens' may be 0 only with 'echo' (to score the prompt); "
                             "send at least 1.", param="max_tokens")
    if req.echo and req.suffix is not None:
        raise InvalidRequest("'echo' cannot be used with 'suffix' (the echoed prompt would not "
                             "be the text before the completion).", param="echo")
    return req


def raw_prompts(req: CompletionRequest) -> list[RawPrompt]:
    """One RawPrompt per prompt of the request, in order."""
    inp = req.prompt
    items: list[str | int | list[int]] = [inp] if isinstance(inp, str) else list(inp)
    if not items:
        raise InvalidRequest("'prompt' must not be an empty list.", param="prompt")
    kind = type(items[0])
    if any(type(item) is not kind for item in items):
        raise InvalidRequest("'prompt' must be a string, a list of strings, a list of token ids "
                             "or a list of lists of token ids, not a mixture.", param="prompt")
    echo, suffix = bool(req.echo), req.suffix
    if kind is int:
        tokens = [t for t in items if isinstance(t, int)]
        return [RawPrompt(tokens=tokens, suffix=suffix, echo=echo)]
    if len(items) > MAX_PROMPTS:
        raise InvalidRequest(f"'prompt' may hold at most {MAX_PROMPTS} prompts.", param="prompt")
    if kind is str:
        return [RawPrompt(text=t, suffix=suffix, echo=echo) for t in items if isinstance(t, str)]
    lists = [t for t in items if isinstance(t, list)]
    for i, toks in enumerate(lists):
        if not toks:
            raise InvalidRequest(f"prompt[{i}] is an empty list of tokens.", param="prompt")
    return [RawPrompt(tokens=t, suffix=suffix, echo=echo) for t in lists]


# ---- responses --------------------------------------------------------------------------------


class CompletionChoice(msgspec.Struct):
    text: str
    index: int
    finish_reason: str | None
    logprobs: CompletionLogprobs | None = None


class Completion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None  # in a stream's chunks: only the last (include_usage)
    object: Literal["text_completion"] = "text_completion"


def usage(prompt: int, completion: int, cached: int) -> Usage:
    return Usage(prompt, completion, prompt + completion, PromptTokensDetails(cached))


# ---- tokenize / detokenize ----------------------------------------------------------------------


class TokenizeRequest(msgspec.Struct):
    """``content`` (text) or ``messages`` (rendered with the model's chat template, the
    generation prompt added), as llama.cpp's server's ``/tokenize`` takes them."""

    model: str | None = None  # None: the server's default model
    content: str | UnsetType = UNSET
    messages: Annotated[list[Message], _doc(minItems=1, maxItems=MAX_MESSAGES)] | UnsetType = \
        UNSET
    add_special: bool = False
    with_pieces: bool = False


class DetokenizeRequest(msgspec.Struct):
    tokens: list[TokenId]
    model: str | None = None


class TokenPiece(msgspec.Struct):
    """One token with its text; ``piece`` is a list of byte values when its bytes are not
    UTF-8 on their own (part of a multi-byte character), as llama.cpp's server gives it."""

    id: int
    piece: str | list[int]


class TokenizeResponse(msgspec.Struct):
    tokens: list[int | TokenPiece]  # ids; with ``with_pieces``, every item a TokenPiece


class DetokenizeResponse(msgspec.Struct):
    content: str


_tokenize_decoder = msgspec.json.Decoder(TokenizeRequest)
_detokenize_decoder = msgspec.json.Decoder(DetokenizeRequest)


def parse_tokenize_request(body: bytes) -> TokenizeRequest:
    req = decode_body(_tokenize_decoder, body)
    field_policy.check_tokenize_fields(body)
    if isinstance(req.content, UnsetType) == isinstance(req.messages, UnsetType):
        raise InvalidRequest("Send exactly one of 'content' and 'messages'.", param="content")
    return req


def parse_detokenize_request(body: bytes) -> DetokenizeRequest:
    try:
        return decode_body(_detokenize_decoder, body)
    except InvalidRequest as exc:
        if exc.param and exc.param.startswith("tokens["):
            exc.param = "tokens"
        raise


def pieces(tokens: list[int], raw: list[bytes]) -> list[TokenPiece]:
    out = []
    for token, data in zip(tokens, raw, strict=True):
        try:
            piece: str | list[int] = data.decode("utf-8")
        except UnicodeDecodeError:
            piece = list(data)
        out.append(TokenPiece(token, piece))
    return out
