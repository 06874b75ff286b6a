"""What a tool parser says about model output (content, reasoning, a call's start, a call's
arguments), and the pieces every family's parser shares: where a JSON value ends, the calls
found so far (numbering, the offered names, the parallel rule), and a lenient JSON reader."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Text:
    """Content text of the answer."""

    text: str


@dataclass(frozen=True)
class Reasoning:
    """Text inside ``<think>…</think>``."""

    text: str


@dataclass(frozen=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class CallArguments:
    index: int
    text: str


Out = Text | Reasoning | CallStart | CallArguments


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class JsonEnd:
    """Finds where one JSON object or array ends, fed in pieces (strings and escapes tracked
    across pieces). ``feed`` returns the index in the piece just after the value's last
    character, or None while it is unfinished. Scalars and malformed input are not its business:
    the caller parses the text it delimits."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.started = False

    def feed(self, piece: str) -> int | None:
        for i, ch in enumerate(piece):
            if self.in_string:
                if self.escape:
                    self.escape = False
                elif ch == "\\":
                    self.escape = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
                self.started = True
            elif ch in "}]":
                self.depth -= 1
                if self.started and self.depth <= 0:
                    return i + 1
        return None


class Calls:
    """The calls found so far: numbering, the parallel rule, the offered names."""

    def __init__(self, names: Collection[str], parallel: bool) -> None:
        self.names = set(names)
        self.parallel = parallel
        self.count = 0

    def admit(self, name: str) -> int | None:
        """Number a new call to ``name``: its index; -1 when it is a call beyond the first with
        parallel calls off (to be dropped); None when ``name`` was not offered."""
        if name not in self.names:
            return None
        if self.count and not self.parallel:
            return -1
        self.count += 1
        return self.count - 1

    def make(self, obj: Any, args_keys: tuple[str, ...] = ("arguments",)) -> list[Out] | None:
        """The deltas of a call written as ``obj`` (a decoded JSON value), [] when it is a call
        beyond the first with parallel calls off, or None when ``obj`` is not a call."""
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            return None
        name = obj["name"]
        if name not in self.names:
            return None
        args: Any = {}
        for key in args_keys:
            if key in obj:
                args = obj[key]
                break
        if isinstance(args, str):  # some models write the arguments as a JSON string
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if not isinstance(args, dict):
            return None
        if self.count and not self.parallel:
            return []
        index = self.count
        self.count += 1
        text = json.dumps(args, ensure_ascii=False, separators=(",", ":"))
        return [CallStart(index, new_call_id(), name), CallArguments(index, text)]


def loads(text: str) -> Any:
    """The JSON value ``text`` holds, or None. Control characters are allowed inside strings:
    llama.cpp's schema grammars let a raw newline into a string, which strict JSON refuses."""
    try:
        return json.loads(text, strict=False)
    except ValueError:
        return None
