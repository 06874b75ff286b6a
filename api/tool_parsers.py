"""Streaming parsers of model output: text pieces in, content / reasoning / tool-call deltas out.

One parser per chat-template family (:mod:`.tool_families`), fed the generated text as the worker
streams it (``TextDelta.text``: any split, even inside a marker or a JSON string). ``feed``
returns what can be said for sure so far and holds back the rest (a possible marker's first
characters, an unfinished call); ``finish`` says the rest once the output has ended. The same
parser serves streamed and whole answers, so both give the same calls; the unit tests feed every
output split at every position and check the result is the same as in one piece.

Contracts, for every family:

* the family's markup (``<tool_call>``, ``[TOOL_CALLS]``, ``<|python_tag|>``, the generic
  envelope's JSON) never reaches content;
* a call is given as :class:`CallStart` (its index, a fresh ``call_…`` id and the name) then
  :class:`CallArguments` pieces whose text, put together, is its arguments' JSON object: in the
  canonical shape (name first, then the arguments object) they stream as the model writes them,
  blank space between tokens taken out, never past the arguments' closing brace
  (:mod:`.tool_call_stream`); in any other shape (arguments first, or as a JSON string) the
  call comes whole once its JSON is complete, re-serialised compactly, non-ASCII kept;
* a call to a function the request did not offer, or one whose JSON does not parse, is not a
  call: its text (markup stripped) is content; so is an unfinished call when the output ends
  (cut by ``max_tokens``) — unless its arguments had begun to stream: it then stays a call with
  the arguments that came (without a grammar, or cut short, they may not be whole JSON);
* with ``parallel`` false only the first call is kept.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from hearth.api.tool_call_stream import ArgStream, Compact, ListStream
from hearth.api.tool_outputs import (
    CallArguments,
    Calls,
    CallStart,
    JsonEnd,
    Out,
    Reasoning,
    Text,
    loads,
    new_call_id,
)

__all__ = ["CallArguments", "CallStart", "JsonEnd", "Out", "Reasoning", "Text", "new_call_id"]


def _held(buf: str, marker: str) -> int:
    """How many characters at the end of ``buf`` could be the start of ``marker``."""
    for n in range(min(len(marker) - 1, len(buf)), 0, -1):
        if marker.startswith(buf[-n:]):
            return n
    return 0


# How a JSON value of calls starts (Llama 3's and Mistral's bare JSON)
CALL_STARTS = ('{"name"', '[{"name"')


def _cut_call(text: str, starts: Sequence[str]) -> bool:
    """Whether ``text``, unfinished at the end of the output, is the start of a call (or of
    the envelope): it begins with one of ``starts``, or is a beginning of one."""
    t = text.lstrip()
    return bool(t) and any(t.startswith(p) or p.startswith(t) for p in starts)


def _emit_unheld(buf: str, markers: Sequence[str], out: list[Out]) -> str:
    """Append to ``out`` the text of ``buf`` (which holds no whole marker) that cannot be the
    start of one of ``markers``; return the rest, held for the next piece."""
    keep = max((_held(buf, m) for m in markers), default=0)
    if len(buf) > keep:
        out.append(Text(buf[: len(buf) - keep]))
    return buf[len(buf) - keep:]


class ToolParser:
    """Base: a parser that passes text through (``tool_choice: none``, or no tools)."""

    def __init__(self, names: Collection[str] = (), parallel: bool = True) -> None:
        self.calls = Calls(names, parallel)

    @property
    def call_count(self) -> int:
        return self.calls.count

    def feed(self, text: str) -> list[Out]:
        return [Text(text)] if text else []

    def finish(self) -> list[Out]:
        return []


class MarkerParser(ToolParser):
    """Free text, and calls each introduced by ``open`` (and closed by ``close`` when it is not
    empty): Hermes / Qwen (``<tool_call>{json}</tool_call>``). Subclasses read what follows the
    marker (:meth:`_read_call`)."""

    open = "<tool_call>"
    close = "</tool_call>"

    def __init__(self, names: Collection[str] = (), parallel: bool = True) -> None:
        super().__init__(names, parallel)
        self.buf = ""
        self.in_call = False
        self.after_call = False  # whitespace after a call is dropped
        self.stream = ArgStream(self.calls)
        self.fed = 0  # characters of buf (in a call) given to the stream

    def feed(self, text: str) -> list[Out]:
        self.buf += text
        out: list[Out] = []
        while True:
            if self.in_call:
                if not self._read_call(out, final=False):
                    return out
                continue
            if self.after_call:
                stripped = self.buf.lstrip()
                if not stripped:
                    self.buf = ""
                    return out
                self.buf = stripped
                self.after_call = False
            i = self.buf.find(self.open)
            if i < 0:
                self.buf = _emit_unheld(self.buf, (self.open,), out)
                return out
            if i:
                out.append(Text(self.buf[:i]))
            self.buf = self.buf[i + len(self.open):]
            self.in_call = True
            self.stream, self.fed = ArgStream(self.calls), 0

    def finish(self) -> list[Out]:
        out: list[Out] = []
        if self.in_call:
            self._read_call(out, final=True)
        if self.buf and not self.after_call:
            out.append(Text(self.buf))
        self.buf = ""
        return out

    def _read_call(self, out: list[Out], final: bool) -> bool:
        """Consume one call from ``buf`` (just after the marker) into ``out``; False (and
        nothing consumed) while it is unfinished and ``final`` is false."""
        j = self.buf.find(self.close)
        # the arguments stream up to the closing tag (or what may be its start), never past it
        safe = j if j >= 0 else len(self.buf) - (0 if final else _held(self.buf, self.close))
        if safe > self.fed:
            out.extend(self.stream.feed(self.buf[self.fed:safe]))
            self.fed = safe
        if j < 0 and not final:
            return False
        inner = self.buf if j < 0 else self.buf[:j]
        self.buf = "" if j < 0 else self.buf[j + len(self.close):]
        self.in_call = False
        call = self.stream.end()
        if call is None:
            call = self.calls.make(loads(inner.strip()))
        if call is None:
            # a closed block that is not a call is text; an unclosed one is a call cut short
            # (max_tokens): markup, never content
            if inner and j >= 0:
                out.append(Text(inner))
        else:
            out.extend(call)
            self.after_call = True
        return True


class HermesParser(MarkerParser):
    """Hermes 2 Pro / Qwen 2.5 / Qwen 3: ``<tool_call>\\n{"name": …, "arguments": {…}}
    \\n</tool_call>``, one block per call (format: NousResearch's Hermes-Function-Calling
    README and Qwen's function-calling docs). A missing closing tag at the end of the output is
    forgiven."""


class _JsonCallsParser(ToolParser):
    """Output that is either text, or (after optional ``markers`` and whitespace, at the very
    start or after a marker) a JSON value holding calls. The value is delimited with
    :class:`JsonEnd` and handed to :meth:`_calls_of`."""

    markers: tuple[str, ...] = ()
    starts: str = "{["  # first characters of a JSON value of calls at the start of the output

    def __init__(self, names: Collection[str] = (), parallel: bool = True) -> None:
        super().__init__(names, parallel)
        self.buf = ""
        self.state = "start"  # start | json | text
        self.scan = JsonEnd()
        self.scanned = 0  # characters of buf fed to scan (and to stream)
        self.stream: ArgStream | ListStream = self._stream()

    def feed(self, text: str) -> list[Out]:
        self.buf += text
        out: list[Out] = []
        while self.buf:
            if self.state == "text":
                m, i = self._find_marker()
                if i < 0:
                    self.buf = _emit_unheld(self.buf, self.markers, out)
                    return out
                if i:
                    out.append(Text(self.buf[:i]))
                self.buf = self.buf[i + len(m):]
                self.state = "start"
                continue
            if self.state == "start":
                stripped = self.buf.lstrip(" \t\r\n;" if self.call_count else " \t\r\n")
                for mk in self.markers:
                    if stripped.startswith(mk):
                        stripped = stripped[len(mk):].lstrip()
                        break
                    if mk.startswith(stripped):
                        return out  # could still become the marker
                if not stripped:
                    return out
                if stripped[0] not in self.starts:
                    self.state = "text"
                    continue
                self.buf = stripped
                self.state = "json"
                self.scan, self.scanned, self.stream = JsonEnd(), 0, self._stream()
            new = self.buf[self.scanned:]
            end = self.scan.feed(new)
            out.extend(self.stream.feed(new if end is None else new[:end]))
            if end is None:
                self.scanned = len(self.buf)
                return out
            end += self.scanned
            value, self.buf = self.buf[:end], self.buf[end:]
            calls = self.stream.end()
            if calls is None:
                calls = self._calls_of(loads(value))
            if calls is None:
                out.append(Text(value))
                self.state = "text"
            else:
                out.extend(calls)
                self.state = "start"
        return out

    def finish(self) -> list[Out]:
        text, self.buf = self.buf, ""
        if self.state == "json" and _cut_call(text, CALL_STARTS):
            return []  # a call cut short (max_tokens): markup, never content
        if self.state == "start":
            text = text.strip(" \t\r\n;" if self.call_count else " \t\r\n")
            for mk in self.markers:
                if text.startswith(mk):
                    text = text[len(mk):].strip()
                    break
        return [Text(text)] if text else []

    def _find_marker(self) -> tuple[str, int]:
        best = ("", -1)
        for mk in self.markers:
            i = self.buf.find(mk)
            if i >= 0 and (best[1] < 0 or i < best[1]):
                best = (mk, i)
        return best

    def _calls_of(self, value: Any) -> list[Out] | None:
        raise NotImplementedError

    def _stream(self) -> ArgStream | ListStream:
        raise NotImplementedError


class Llama3Parser(_JsonCallsParser):
    """Llama 3.1 / 3.2 / 3.3 JSON tool calls: ``{"name": …, "parameters": {…}}`` alone or after
    ``<|python_tag|>`` (Meta's llama-models prompt-format docs for 3.1; the chat template asks
    for exactly this shape). ``<|python_tag|>`` is a control token that the worker streams as
    its text for this family (``ChatJob.shown_tokens``), so a call after some text is read; the
    tag is markup, never content (text after it that is no call is content without it).
    Several calls separated by ``;`` are read too."""

    markers = ("<|python_tag|>",)
    starts = "{"

    def _calls_of(self, value: Any) -> list[Out] | None:
        return self.calls.make(value, ("parameters", "arguments"))

    def _stream(self) -> ArgStream:
        return ArgStream(self.calls, ("parameters", "arguments"))


class MistralParser(_JsonCallsParser):
    """Mistral's ``[TOOL_CALLS][{"name": …, "arguments": {…}}, …]`` (the v3 tokenizer format,
    mistral-common's docs), or the same list bare at the start of the output (``[TOOL_CALLS]``
    is a control token, rendered as nothing by hearth's detokenizer)."""

    markers = ("[TOOL_CALLS]",)
    starts = "["

    def _calls_of(self, value: Any) -> list[Out] | None:
        if not isinstance(value, list) or not value:
            return None
        out: list[Out] = []
        for item in value:
            call = self.calls.make(item)
            if call is None:
                return None
            out.extend(call)
        return out

    def _stream(self) -> ListStream:
        return ListStream(self.calls)


class MistralArgsParser(ToolParser):
    """Mistral's newer format (tokenizer v11 on: Mistral Small 3.1 / 3.2, Magistral, Devstral
    Small 1.1): each call is ``[TOOL_CALLS]<name>[ARGS]<arguments JSON>``, calls one after
    another, with ``[CALL_ID]<id>`` between the name and ``[ARGS]`` where the tokenizer writes
    call ids (format: mistral-common's v11 tokenizer, and the templates of those models, which
    write ``'[TOOL_CALLS]' + name + '[ARGS]' + arguments``). The three markers are control
    tokens that the worker streams as their text for this family (``ChatJob.shown_tokens``).
    Text before the first call is content; the arguments stream as they come."""

    TOOL_CALLS, ARGS, CALL_ID = "[TOOL_CALLS]", "[ARGS]", "[CALL_ID]"
    MAX_NAME = 64 + 64 + len("[CALL_ID]")  # a name (and an id) longer than this is not a call

    def __init__(self, names: Collection[str] = (), parallel: bool = True) -> None:
        super().__init__(names, parallel)
        self.buf = ""
        self.state = "text"  # text | name | args | skip | after
        self.index = -1
        self.args = Compact()
        self.skipped = ""  # a call to a function not offered: its text, for content

    def feed(self, text: str) -> list[Out]:
        self.buf += text
        out: list[Out] = []
        while self.buf:
            if self.state == "after":  # blank space between calls (or after the last) is dropped
                self.buf = self.buf.lstrip()
                if not self.buf:
                    return out
                self.state = "text"
                continue
            if self.state == "text":
                i = self.buf.find(self.TOOL_CALLS)
                if i < 0:
                    self.buf = _emit_unheld(self.buf, (self.TOOL_CALLS,), out)
                    return out
                if i:
                    out.append(Text(self.buf[:i]))
                self.buf, self.state = self.buf[i + len(self.TOOL_CALLS):], "name"
            if self.state == "name":
                i = self.buf.find(self.ARGS)
                if i < 0:
                    if len(self.buf) > self.MAX_NAME:  # not a call after all
                        self.state = "text"
                        continue
                    return out
                name = self.buf[:i].split(self.CALL_ID)[0].strip()
                self.buf = self.buf[i + len(self.ARGS):]
                index = self.calls.admit(name)
                self.args = Compact()
                if index is None:
                    self.state, self.skipped, self.index = "skip", name, -1
                else:
                    self.state, self.index = "args", index
                    if index >= 0:
                        out.append(CallStart(index, new_call_id(), name))
            piece, self.buf = self.buf, ""
            text_out, stop = self.args.feed(piece)
            if stop is not None:
                self.buf = piece[stop:]
            if self.state == "skip":
                self.skipped += piece if stop is None else piece[:stop]
                if stop is not None:
                    out.append(Text(self.skipped))
            elif text_out and self.index >= 0:
                out.append(CallArguments(self.index, text_out))
            if stop is None:
                return out
            self.state = "after"
        return out

    def finish(self) -> list[Out]:
        out: list[Out] = []
        if self.state == "text" and self.buf:
            out.append(Text(self.buf))
        # name: a call cut short, markup; args: cut while streaming, it keeps what came
        self.buf = ""
        return out


# ---- the generic envelope ---------------------------------------------------------------------

#: How an answer in the generic envelope starts (the grammar writes exactly these).
CONTENT_PREFIX = '{"content": "'
CALLS_PREFIX = '{"tool_calls": ['


class _JsonStringReader:
    """Decodes a JSON string's body fed in pieces, stopping at its closing quote."""

    def __init__(self) -> None:
        self.pending = ""  # an escape not complete yet
        self.done = False

    def feed(self, piece: str) -> tuple[str, str]:
        """(decoded text, what is left after the closing quote)."""
        out: list[str] = []
        s = self.pending + piece
        self.pending = ""
        i = 0
        while i < len(s):
            ch = s[i]
            if ch == '"':
                self.done = True
                return "".join(out), s[i + 1:]
            if ch != "\\":
                out.append(ch)
                i += 1
                continue
            if i + 1 >= len(s):
                self.pending = s[i:]
                break
            if s[i + 1] != "u":
                out.append(loads(f'"{s[i:i + 2]}"') or "")
                i += 2
                continue
            end = i + 6
            if end <= len(s) and 0xD800 <= _hex(s[i + 2:end]) < 0xDC00:
                end = i + 12  # a surrogate pair: decode both halves together
            if end > len(s):
                self.pending = s[i:]
                break
            out.append(loads(f'"{s[i:end]}"') or "")
            i = end
        return "".join(out), ""


def _hex(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        return -1


class GenericParser(ToolParser):
    """hearth's envelope for templates with no tool support: the grammar makes the whole answer
    one JSON object, ``{"content": "<text>"}`` or ``{"tool_calls": [{"name": …, "arguments":
    {…}}, …]}``. The content string streams as it is decoded, each call as soon as its object is
    complete (a call cut short at the end is content). Output that is not the envelope
    (no grammar applied) is content as it stands, except one whole JSON value of the envelope's
    or a call's shape.

    ``json_answer`` (``response_format`` beside tools): the text answer is the JSON that
    ``response_format`` asks for, as it stands, not a ``{"content": …}`` envelope; it streams as
    content once it cannot be the calls' envelope."""

    def __init__(self, names: Collection[str] = (), parallel: bool = True, *,
                 json_answer: bool = False) -> None:
        super().__init__(names, parallel)
        self.json_answer = json_answer
        self.buf = ""
        self.state = "start"  # start | content | after | calls | other | text
        self.string = _JsonStringReader()
        self.scan = JsonEnd()
        self.scanned = 0
        self.stream = ArgStream(self.calls)

    def feed(self, text: str) -> list[Out]:
        self.buf += text
        out: list[Out] = []
        if self.state == "start":
            stripped = self.buf.lstrip()
            if not stripped:
                return out
            if self.json_answer:
                if stripped.startswith(CALLS_PREFIX):
                    self.buf, self.state = stripped[len(CALLS_PREFIX):], "calls"
                elif CALLS_PREFIX.startswith(stripped):
                    return out
                else:
                    self.buf, self.state = stripped, "text"
            elif stripped[0] != "{":
                self.state = "text"
            elif stripped.startswith(CONTENT_PREFIX):
                self.buf = stripped[len(CONTENT_PREFIX):]
                self.state = "content"
            elif stripped.startswith(CALLS_PREFIX):
                self.buf = stripped[len(CALLS_PREFIX):]
                self.state = "calls"
            elif CONTENT_PREFIX.startswith(stripped) or CALLS_PREFIX.startswith(stripped):
                return out
            else:
                self.buf = stripped
                self.state = "other"
        if self.state == "text":
            out.append(Text(self.buf))
            self.buf = ""
        elif self.state == "content":
            decoded, rest = self.string.feed(self.buf)
            self.buf = ""
            if decoded:
                out.append(Text(decoded))
            if self.string.done:
                self.state = "after"
        elif self.state == "after":
            self.buf = ""  # the envelope's closing brace
        elif self.state == "calls":
            self._read_calls(out)
        elif self.state == "other":
            end = self.scan.feed(self.buf[self.scanned:])
            if end is None:
                self.scanned = len(self.buf)
                return out
            value, self.buf = self.buf[: self.scanned + end], ""
            self.state = "after"
            out.extend(self._whole(value))
        return out

    def _read_calls(self, out: list[Out]) -> None:
        """The envelope's list of calls, each given as soon as its object is complete."""
        while True:
            if not self.scanned:
                self.buf = self.buf.lstrip(" \t\r\n,")
                if not self.buf:
                    return
                if self.buf[0] == "]":
                    self.buf, self.state = "", "after"
                    return
                if self.buf[0] != "{":  # not the envelope after all (no grammar)
                    out.append(Text(self.buf))
                    self.buf, self.state = "", "text"
                    return
                self.stream = ArgStream(self.calls)
            new = self.buf[self.scanned:]
            end = self.scan.feed(new)
            out.extend(self.stream.feed(new if end is None else new[:end]))
            if end is None:
                self.scanned = len(self.buf)
                return
            value, self.buf = self.buf[: self.scanned + end], self.buf[self.scanned + end:]
            self.scan, self.scanned = JsonEnd(), 0
            call = self.stream.end()
            if call is None:
                call = self.calls.make(loads(value))
            out.extend([Text(value)] if call is None else call)

    def finish(self) -> list[Out]:
        out: list[Out] = []
        if self.json_answer and self.state == "start" and self.buf.strip():
            out.append(Text(self.buf.strip()))  # a JSON answer cut short (max_tokens)
        elif self.state in ("other", "start") and self.buf and \
                not _cut_call(self.buf, (CONTENT_PREFIX, CALLS_PREFIX)):
            out.extend(self._whole(self.buf))
        # state "calls": a call cut short (max_tokens) is the envelope's markup, never content
        self.buf = ""
        return out

    def _whole(self, text: str) -> list[Out]:
        """One whole JSON value: the envelope's calls or content, a bare call, or else text."""
        value = loads(text)
        if isinstance(value, dict) and set(value) == {"tool_calls"} and \
                isinstance(value["tool_calls"], list) and value["tool_calls"]:
            out: list[Out] = []
            for item in value["tool_calls"]:
                call = self.calls.make(item)
                if call is None:
                    return [Text(text)]
                out.extend(call)
            return out
        if isinstance(value, dict) and set(value) == {"content"} and \
                isinstance(value["content"], str):
            return [Text(value["content"])] if value["content"] else []
        call = self.calls.make(value)
        if call is not None:
            return call
        return [Text(text)] if text else []


# ---- reasoning --------------------------------------------------------------------------------

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
THINK_LEAD = " \t\r\n"  # blank space a model may write before its own <think>


class ReasoningSplitter:
    """``<think>…</think>`` at the start of the output goes out as :class:`Reasoning`; the rest
    goes through ``inner``. ``open`` is true when the prompt already opened the thinking
    (DeepSeek-R1 distills' templates end the generation prompt with ``<think>\\n``). Blank space
    (``THINK_LEAD``) before the model's own ``<think>`` is skipped, as the grammar of
    ``tool_families.after_thinking`` allows it. Whitespace right after ``</think>`` is dropped
    (Qwen 3 writes a blank line there)."""

    def __init__(self, inner: ToolParser, *, open: bool = False) -> None:
        self.inner = inner
        self.state = "think" if open else "start"  # start | think | gap | answer
        self.buf = ""

    @property
    def call_count(self) -> int:
        return self.inner.call_count

    @property
    def thinking(self) -> bool:
        return self.state in ("start", "think")

    def feed(self, text: str) -> list[Out]:
        if self.state == "answer":
            return self.inner.feed(text)
        self.buf += text
        out: list[Out] = []
        if self.state == "start":
            stripped = self.buf.lstrip(THINK_LEAD)
            if THINK_OPEN.startswith(stripped):
                return out  # whitespace, or the opening tag's start
            if not stripped.startswith(THINK_OPEN):
                self.state, rest, self.buf = "answer", self.buf, ""
                return self.inner.feed(rest)
            self.buf = stripped[len(THINK_OPEN):]
            self.state = "think"
        if self.state == "think":
            i = self.buf.find(THINK_CLOSE)
            if i < 0:
                keep = _held(self.buf, THINK_CLOSE)
                emit, self.buf = self.buf[: len(self.buf) - keep], self.buf[len(self.buf) - keep:]
                if emit:
                    out.append(Reasoning(emit))
                return out
            if i:
                out.append(Reasoning(self.buf[:i]))
            self.buf = self.buf[i + len(THINK_CLOSE):]
            self.state = "gap"
        rest = self.buf.lstrip()
        if rest:
            self.state, self.buf = "answer", ""
            out.extend(self.inner.feed(rest))
        else:
            self.buf = ""
        return out

    def finish(self) -> list[Out]:
        out: list[Out] = []
        if self.state == "think" and self.buf:
            out.append(Reasoning(self.buf))
        elif self.state == "start" and self.buf:
            out.extend(self.inner.feed(self.buf))
        self.buf = ""
        out.extend(self.inner.finish())
        return out


Parser = ToolParser | ReasoningSplitter
