"""Server-sent events for streamed chat completions: every ``data:`` line of one stream.

Content chunks are the hot path (one per token per stream), so their bytes are built from a
prefix and suffix encoded once per stream around the JSON-encoded text, instead of encoding a
whole chunk object per token. ``tests/unit/test_sse.py`` checks both paths give the same JSON.
"""

from __future__ import annotations

import msgspec
from hearth.api import openai_types
from hearth.api.logprobs import ChoiceLogprobs, TokenLogprobOut

_json = msgspec.json.Encoder()
DONE = b"data: [DONE]\n\n"


def event(obj: msgspec.Struct) -> bytes:
    return b"data: " + _json.encode(obj) + b"\n\n"


class ChunkEncoder:
    """The chunks of one stream's choice ``index`` (same id, created and model in each; a
    request of n choices has an encoder per choice)."""

    def __init__(self, rid: str, created: int, model: str, index: int = 0) -> None:
        self.rid, self.created, self.model, self.index = rid, created, model, index
        marker = "\x00"
        probe = event(self._chunk(openai_types.ChunkDelta(content=marker)))
        encoded_marker = _json.encode(marker)
        self._head, _, self._tail = probe.partition(encoded_marker)

    def _chunk(self, delta: openai_types.ChunkDelta, finish: str | None = None,
               logprobs: ChoiceLogprobs | None = None) -> openai_types.ChatCompletionChunk:
        return openai_types.ChatCompletionChunk(
            id=self.rid, created=self.created, model=self.model,
            choices=[openai_types.ChunkChoice(self.index, delta, finish, logprobs)])

    def role(self, content: str | None = "") -> bytes:
        """The first chunk. ``content=None`` leaves content out, for an answer that may be only
        tool calls (whose content OpenAI gives as null, where a stream of text starts with "")."""
        return event(self._chunk(openai_types.ChunkDelta(role="assistant", content=content)))

    def content(self, text: str) -> bytes:
        return self._head + _json.encode(text) + self._tail

    def content_logprobs(self, text: str, entries: list[TokenLogprobOut]) -> bytes:
        """A content chunk with its tokens' log-probabilities (``choices[0].logprobs``)."""
        return event(self._chunk(openai_types.ChunkDelta(content=text),
                                 logprobs=ChoiceLogprobs(entries)))

    def reasoning(self, text: str) -> bytes:
        return event(self._chunk(openai_types.ChunkDelta(reasoning_content=text)))

    def call_start(self, index: int, call_id: str, name: str) -> bytes:
        """A tool call's first delta: its index, id, type and name, with empty arguments."""
        return event(self._chunk(openai_types.ChunkDelta(tool_calls=[openai_types.ToolCallDelta(
            index, call_id, "function", openai_types.FunctionDelta(name, ""))])))

    def call_arguments(self, index: int, text: str) -> bytes:
        return event(self._chunk(openai_types.ChunkDelta(tool_calls=[openai_types.ToolCallDelta(
            index, function=openai_types.FunctionDelta(arguments=text))])))

    def finish(self, reason: str) -> bytes:
        return event(self._chunk(openai_types.ChunkDelta(), reason))

    def usage(self, usage: openai_types.Usage) -> bytes:
        return event(openai_types.ChatCompletionChunk(id=self.rid, created=self.created,
                                                      model=self.model, choices=[], usage=usage))
