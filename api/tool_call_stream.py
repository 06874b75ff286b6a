"""A tool call's arguments streamed while the model writes them.

A family's parser hands :class:`ArgStream` the text of one call object (``{"name": …,
"arguments": {…}}``, from its ``{``) as it arrives. Once the object's canonical start — the
``name`` first, then the arguments key, then the arguments object's ``{`` (the order hearth's
grammars write, and the one every family's documentation shows) — is there and names an
offered function, the stream says :class:`~.tool_outputs.CallStart` and then the arguments'
text piece by piece, without the whitespace between JSON tokens, up to the arguments' closing
``}`` and never past it: what follows (the call's own ``}``, a family's closing markup) is
not arguments. A call object in any other shape (the arguments first, or as a JSON string, or
escapes inside the name) is left to the parser, which reads it whole once it is complete, as
before (:meth:`ArgStream.end` returns None).

:class:`ListStream` does the same for a JSON list of call objects (Mistral's ``[TOOL_CALLS]
[…]``): each item's arguments stream; once the first item has streamed, an item that is not a
call is dropped (the list is calls).

Arguments are never re-serialised once streaming, so what a client gets is the model's JSON
with the blank space between tokens taken out (escapes as the model wrote them).
"""

from __future__ import annotations

from collections.abc import Sequence

from hearth.api.tool_outputs import (
    CallArguments,
    Calls,
    CallStart,
    JsonEnd,
    Out,
    loads,
    new_call_id,
)

_WS = " \t\r\n"
_WAIT = "wait"  # the start may still come
_NO = "no"  # it cannot


def _head(buf: str, args_keys: Sequence[str]) -> tuple[str, int] | str:
    """(the name, where the arguments' value starts in ``buf``) once ``buf`` starts with
    ``{"name": "<name>", "<args key>": {`` (blank space between tokens allowed); else _WAIT or
    _NO."""
    i, n = 0, len(buf)

    def skip(i: int) -> int:
        while i < n and buf[i] in _WS:
            i += 1
        return i

    def lit(i: int, options: Sequence[str]) -> tuple[int, str | None]:
        """(index after the matched literal, None) or (-1, _WAIT / _NO)."""
        i = skip(i)
        rest = buf[i:]
        for text in options:
            if rest.startswith(text):
                return i + len(text), None
        if any(text.startswith(rest) for text in options):
            return -1, _WAIT
        return -1, _NO

    name = ""
    steps: list[Sequence[str] | None] = [("{",), ('"name"',), (":",), None, (",",),
                                         [f'"{k}"' for k in args_keys], (":",), ("{",)]
    for step in steps:
        if step is None:  # the name's string: no escapes
            i = skip(i)
            if i >= n:
                return _WAIT
            if buf[i] != '"':
                return _NO
            end = buf.find('"', i + 1)
            if "\\" in buf[i + 1: n if end < 0 else end]:
                return _NO
            if end < 0:
                return _WAIT
            name, i = buf[i + 1:end], end + 1
            continue
        i, why = lit(i, step)
        if why is not None:
            return why
    return name, i - 1


class Compact:
    """A JSON value's text fed in pieces, given back without blank space between tokens, up to
    its end (:class:`JsonEnd` finds it)."""

    def __init__(self) -> None:
        self.end = JsonEnd()
        self._string = (False, False)  # inside a string; after its backslash

    def feed(self, piece: str) -> tuple[str, int | None]:
        """(the compacted text of ``piece`` up to the value's end, the index after the end in
        ``piece`` or None)."""
        stop = self.end.feed(piece)
        part = piece if stop is None else piece[:stop]
        # blank space outside strings: JsonEnd tracked strings, so redo it here per character
        out: list[str] = []
        in_string, escape = self._string
        for ch in part:
            if in_string:
                out.append(ch)
                if escape:
                    escape = False
                elif ch == "\\":
                    escape = True
                elif ch == '"':
                    in_string = False
            elif ch not in _WS:
                out.append(ch)
                in_string = ch == '"'
        self._string = (in_string, escape)
        return "".join(out), stop


class ArgStream:
    """One call object's start and arguments, streamed (see the module docstring). ``feed``
    gets the object's text in order (it may run past the object's end: the rest is ignored);
    ``end`` gets the whole object's text once the parser has delimited it."""

    def __init__(self, calls: Calls, args_keys: Sequence[str] = ("arguments",)) -> None:
        self.calls = calls
        self.args_keys = args_keys
        self.buf = ""
        self.state = "head"  # head | args | after | off | dropped
        self.index = -1
        self.args = Compact()

    @property
    def started(self) -> bool:
        """Whether the call was said (or dropped by the parallel rule): it is then the
        stream's."""
        return self.state in ("args", "after", "dropped")

    def feed(self, piece: str) -> list[Out]:
        if self.state == "head":
            self.buf += piece
            head = _head(self.buf, self.args_keys)
            if head == _WAIT:
                return []
            if head == _NO:
                self.state = "off"
                return []
            assert isinstance(head, tuple)
            name, at = head
            index = self.calls.admit(name)
            if index is None:
                self.state = "off"
                return []
            piece, self.buf = self.buf[at:], ""
            if index < 0:
                self.state = "dropped"
                return []
            self.index, self.state = index, "args"
            return [CallStart(index, new_call_id(), name), *self._args(piece)]
        if self.state == "args":
            return self._args(piece)
        return []

    def _args(self, piece: str) -> list[Out]:
        text, stop = self.args.feed(piece)
        if stop is not None:
            self.state = "after"
        return [CallArguments(self.index, text)] if text else []

    def end(self) -> list[Out] | None:
        """What is left to say once the object is complete: [] for a streamed (or dropped)
        call; None when the stream never started — the parser reads the object itself."""
        if self.started:
            return []
        self.state = "off"
        return None


class ListStream:
    """A JSON list of call objects, streamed item by item (see the module docstring)."""

    def __init__(self, calls: Calls, args_keys: Sequence[str] = ("arguments",)) -> None:
        self.calls = calls
        self.args_keys = args_keys
        self.state = "open"  # open | between | item | done | off
        self.item: ArgStream | None = None
        self.item_text = ""
        self.item_end = JsonEnd()
        self.committed = False

    def feed(self, piece: str) -> list[Out]:
        out: list[Out] = []
        i = 0
        while i < len(piece) and self.state not in ("done", "off"):
            ch = piece[i]
            if self.state in ("open", "between"):
                if ch in _WS or (ch == "," and self.state == "between"):
                    i += 1
                elif ch == "[" and self.state == "open":
                    self.state = "between"
                    i += 1
                elif ch == "]" and self.state == "between":
                    self.state = "done"
                elif ch == "{" and self.state == "between":
                    self.state, self.item_text, self.item_end = "item", "", JsonEnd()
                    self.item = ArgStream(self.calls, self.args_keys)
                else:
                    self.state = "off"
                continue
            assert self.item is not None
            stop = self.item_end.feed(piece[i:])
            part = piece[i:] if stop is None else piece[i:i + stop]
            self.item_text += part
            out.extend(self.item.feed(part))
            self.committed = self.committed or self.item.started
            if stop is None:
                break
            i += stop
            self.state = "between"
            tail = self.item.end()
            if tail is None and self.committed:
                tail = self.calls.make(loads(self.item_text)) or []
            elif tail is None:
                self.state = "off"  # not calls as they stream: the parser reads it whole
            out.extend(tail or [])
        return out

    def end(self) -> list[Out] | None:
        """[] once the list is the stream's (its first item streamed); else None: the parser
        reads the list itself."""
        return [] if self.committed else None
