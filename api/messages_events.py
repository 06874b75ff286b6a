"""An answer's pieces (:mod:`.tool_parsers`' ``Text``, ``Reasoning``, ``CallStart``,
``CallArguments``) as Anthropic's Messages content blocks and stream events. Pure: no I/O, no
model; ``tests/unit/test_messages_events.py`` feeds it made-up pieces.

The stream (source: Anthropic's streaming reference and the ``anthropic`` SDK's
``RawMessageStreamEvent``): ``message_start`` (the message with no content yet, and the input
usage), ``ping``, then per content block ``content_block_start``, its ``content_block_delta``\\ s
(``text_delta``, ``thinking_delta``, ``input_json_delta``) and ``content_block_stop``; then
``message_delta`` (``stop_reason``, ``stop_sequence``, the output usage) and ``message_stop``.
Blocks are numbered from 0 in order and never interleave: a piece of another kind closes the
open block. The whole (non-streamed) answer is the same blocks, built by the same code.
"""

from __future__ import annotations

import json

import msgspec
from hearth.api import anthropic_types as at
from hearth.api.tool_parsers import CallArguments, CallStart, Out, Reasoning, Text
from hearth.scheduler.messages import Finished

_json = msgspec.json.Encoder()


def frame(event: msgspec.Struct) -> bytes:
    """One server-sent event: ``event: <its type>`` and ``data: <its JSON>`` (``event`` a
    Struct tagged with its ``type``: a stream event, or the error envelope). A text delta, the
    hot path (one per token), is laid out around its JSON-encoded text instead of encoding the
    whole event (``tests/unit/test_messages_events.py`` checks both give the same bytes)."""
    kind = type(event)
    if kind is at.ContentBlockDelta:
        assert isinstance(event, at.ContentBlockDelta)
        if type(event.delta) is at.TextDelta:
            return (_TEXT_HEAD + str(event.index).encode() + _TEXT_MID
                    + _json.encode(event.delta.text) + _TEXT_TAIL)
    head = _HEADS.get(kind)
    if head is None:
        head = _HEADS[kind] = b"event: " + str(kind.__struct_config__.tag).encode() + b"\ndata: "
    return head + _json.encode(event) + b"\n\n"


_HEADS: dict[type, bytes] = {}
_TEXT_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_TEXT_MID = b',"delta":{"type":"text_delta","text":'
_TEXT_TAIL = b"}}\n\n"


def frame_slow(event: msgspec.Struct) -> bytes:
    """:func:`frame` without its fast path (for the test that they agree)."""
    tag = type(event).__struct_config__.tag
    return b"event: " + str(tag).encode() + b"\ndata: " + _json.encode(event) + b"\n\n"


def tool_use_id(call_id: str) -> str:
    """A tool_use block's id (``toolu_…``, Anthropic's prefix) from the parser's ``call_…``."""
    return "toolu_" + call_id.removeprefix("call_")


def stop_reason(fin: Finished, calls: int) -> tuple[at.StopReason, str | None]:
    """(``stop_reason``, ``stop_sequence``) of a finished answer that made ``calls`` tool
    calls: ``max_tokens`` when it ran out of tokens; ``tool_use`` after calls;
    ``stop_sequence`` (naming it) when one of the request's stop sequences ended it; else
    ``end_turn``."""
    if fin.finish_reason == "length":
        return "max_tokens", None
    if calls:
        return "tool_use", None
    if fin.stop_sequence is not None:
        return "stop_sequence", fin.stop_sequence
    return "end_turn", None


def usage(fin: Finished) -> at.Usage:
    """Anthropic's usage: ``input_tokens`` leaves out the prompt tokens read from the cache."""
    return at.Usage(fin.prompt_tokens - fin.cached_tokens, fin.completion_tokens,
                    cache_read_input_tokens=fin.cached_tokens)


class MessageBuilder:
    """One answer's content blocks, built piece by piece; each call returns the stream events
    that say what changed (a whole answer ignores them and takes :meth:`message`)."""

    def __init__(self, message_id: str, model: str) -> None:
        self.message_id = message_id
        self.model = model
        self.blocks: list[at.ContentBlock] = []
        self.calls = 0
        self._open = False  # the last block is still open (no content_block_stop yet)
        self._parts: list[str] = []  # the open text or thinking block's text so far
        self._call_block: dict[int, int] = {}  # the parser's call index -> block index
        self._arguments: dict[int, str] = {}  # block index -> the call's JSON so far

    def start(self, prompt_tokens: int, cached_tokens: int) -> list[at.StreamEvent]:
        """``message_start`` (no content, no stop reason, the input usage) and a ``ping``."""
        empty = at.Message(self.message_id, self.model, [], None, None,
                           at.Usage(prompt_tokens - cached_tokens, 0,
                                    cache_read_input_tokens=cached_tokens))
        return [at.MessageStart(empty), at.Ping()]

    def _close(self, out: list[at.StreamEvent]) -> None:
        if not self._open:
            return
        index = len(self.blocks) - 1
        block = self.blocks[index]
        if isinstance(block, at.ToolUseBlock):
            text = self._arguments.get(index, "")
            block.input = json.loads(text) if text else {}
        elif isinstance(block, at.TextBlock):
            block.text = "".join(self._parts)
        else:
            block.thinking = "".join(self._parts)
        self._parts = []
        out.append(at.ContentBlockStop(index))
        self._open = False

    def _open_block(self, block: at.ContentBlock, out: list[at.StreamEvent]) -> int:
        self._close(out)
        self.blocks.append(block)
        self._open = True
        index = len(self.blocks) - 1
        # the start event carries the block empty: its content follows as deltas
        empty: at.ContentBlock
        if isinstance(block, at.ToolUseBlock):
            empty = at.ToolUseBlock(block.id, block.name, {})
        elif isinstance(block, at.ThinkingBlock):
            empty = at.ThinkingBlock("")
        else:
            empty = at.TextBlock("")
        out.append(at.ContentBlockStart(index, empty))
        return index

    def _last_open(self, kind: type) -> bool:
        return self._open and isinstance(self.blocks[-1], kind)

    def feed(self, outs: list[Out]) -> list[at.StreamEvent]:
        out: list[at.StreamEvent] = []
        for o in outs:
            if isinstance(o, Text):
                if not o.text:
                    continue
                if not self._last_open(at.TextBlock):
                    self._open_block(at.TextBlock(""), out)
                self._parts.append(o.text)
                out.append(at.ContentBlockDelta(len(self.blocks) - 1, at.TextDelta(o.text)))
            elif isinstance(o, Reasoning):
                if not o.text:
                    continue
                if not self._last_open(at.ThinkingBlock):
                    self._open_block(at.ThinkingBlock(""), out)
                self._parts.append(o.text)
                out.append(at.ContentBlockDelta(len(self.blocks) - 1,
                                                at.ThinkingDelta(o.text)))
            elif isinstance(o, CallStart):
                index = self._open_block(at.ToolUseBlock(tool_use_id(o.id), o.name, {}), out)
                self._call_block[o.index] = index
                self.calls += 1
            elif isinstance(o, CallArguments):
                index = self._call_block[o.index]
                self._arguments[index] = self._arguments.get(index, "") + o.text
                out.append(at.ContentBlockDelta(index, at.InputJsonDelta(o.text)))
        return out

    def finish(self, fin: Finished) -> list[at.StreamEvent]:
        """Close the open block; ``message_delta`` (stop reason, output usage) and
        ``message_stop``."""
        out: list[at.StreamEvent] = []
        self._close(out)
        reason, sequence = stop_reason(fin, self.calls)
        u = usage(fin)
        out.append(at.MessageDelta(at.StopDelta(reason, sequence),
                                   at.DeltaUsage(u.output_tokens, u.input_tokens,
                                                 u.cache_creation_input_tokens,
                                                 u.cache_read_input_tokens)))
        out.append(at.MessageStop())
        return out

    def message(self, fin: Finished) -> at.Message:
        """The whole answer (call after :meth:`finish`, which closes the last block: a block's
        text is joined when it closes)."""
        reason, sequence = stop_reason(fin, self.calls)
        return at.Message(self.message_id, self.model, self.blocks, reason, sequence, usage(fin))
