"""GBNF grammar text read as rules, and rules written for text around a marker.

Reading: :func:`rules` splits a grammar into its rules by lexing it as llama.cpp's GBNF parser
does (``llama-grammar.cpp``: rule names are ``[a-zA-Z0-9-]+`` followed by ``::=``; string
literals ``"…"`` and character classes ``[…]`` take backslash escapes; ``#`` starts a comment
to the end of the line), so a name inside a literal, a class or a comment is never taken for a
rule or a reference. :func:`rename` renames a rule and every reference to it.

Writing: :func:`text_until` writes the rules of "any text, up to the first occurrence of a
marker, then something else" (the thinking before ``</think>``; free text before a tool call's
marker). It is the exact automaton of the marker (Knuth-Morris-Pratt's), one rule per
characters-matched-so-far: the text cannot hold the marker anywhere before the place where
the grammar continues (a plain nested alternation such as ``[^<] | "<" [^/] …`` lets ``<</x>``
through). Each rule ends in a reference to the next, which llama.cpp's parser follows without
growing its stacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"[a-zA-Z0-9-]+")
_DEFINES = re.compile(r"[ \t]*::=")


@dataclass(frozen=True)
class Rule:
    """One rule of a grammar text: its name, and where its body is in the text."""

    name: str
    start: int  # the body's first character (after ``::=``)
    end: int  # just past the body's last character (before the next rule's name)


def _tokens(text: str) -> list[tuple[str, int, int]]:
    """Names in ``text`` as (name, start, end), skipping literals, classes and comments; a name
    that defines a rule is given as ``name::=``."""
    out: list[tuple[str, int, int]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in "\"[":
            close = '"' if ch == '"' else "]"
            i += 1
            while i < n and text[i] != close:
                i += 2 if text[i] == "\\" else 1
            i += 1
        elif ch == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        else:
            m = _NAME.match(text, i)
            if m is None:
                i += 1
                continue
            d = _DEFINES.match(text, m.end())
            if d is not None:
                out.append((m.group() + "::=", m.start(), d.end()))
            else:
                out.append((m.group(), m.start(), m.end()))
            i = m.end() if d is None else d.end()
    return out


def rules(text: str) -> dict[str, Rule]:
    """The rules of a GBNF grammar text, by name."""
    defs = [(name[:-3], start, end) for name, start, end in _tokens(text) if name.endswith("::=")]
    out: dict[str, Rule] = {}
    for k, (name, _, body) in enumerate(defs):
        end = defs[k + 1][1] if k + 1 < len(defs) else len(text)
        out[name] = Rule(name, body, end)
    return out


def body(text: str, name: str) -> str | None:
    """Rule ``name``'s body (stripped), or None when the grammar has no such rule."""
    rule = rules(text).get(name)
    return None if rule is None else text[rule.start:rule.end].strip()


def replace_body(text: str, name: str, new: str) -> str:
    """``text`` with rule ``name``'s body replaced by ``new`` (KeyError when there is none)."""
    rule = rules(text)[name]
    tail = text[rule.start:rule.end]
    trailing = tail[len(tail.rstrip()):]
    return f"{text[:rule.start]} {new}{trailing}{text[rule.end:]}"


def rename(text: str, old: str, new: str) -> str:
    """``text`` with rule ``old`` renamed ``new``, in its definition and every reference."""
    out, last = [], 0
    for name, start, end in _tokens(text):
        if name == old:
            out.append(text[last:start] + new)
            last = end
        elif name == old + "::=":
            out.append(text[last:start] + new + " ::=")
            last = end
    return "".join(out) + text[last:]


def free_name(text: str, wanted: str) -> str:
    """``wanted``, or ``wanted`` with a number after it, so that no rule of ``text`` has it."""
    taken = set(rules(text))
    name, k = wanted, 1
    while name in taken:
        name, k = f"{wanted}{k}", k + 1
    return name


def _char(ch: str) -> str:
    """One character, escaped for a GBNF literal or class."""
    return ch if ch.isalnum() or ch == " " else f"\\x{ord(ch):02X}"


def _next_state(marker: str, matched: int, ch: str) -> int:
    """Characters of ``marker`` matched after ``ch`` follows ``matched`` of them (KMP)."""
    text = marker[:matched] + ch
    for k in range(min(len(text), len(marker)), 0, -1):
        if text.endswith(marker[:k]):
            return k
    return 0


def text_until(prefix: str, marker: str, then: str, *, may_end: bool) -> str:
    """Rules (GBNF text) named ``{prefix}-0`` … ``{prefix}-{len(marker)-1}``: any text in which
    ``marker`` first appears where rule ``then`` continues the grammar right after it.
    ``may_end``: the text may also end without the marker (free text before an optional tool
    call); otherwise the marker must come (thinking, closed by ``</think>``). Start at
    ``{prefix}-0``. ``marker`` is ASCII."""
    if not marker or not marker.isascii():
        raise ValueError("the marker must be non-empty ASCII")
    lines = []
    for k in range(len(marker)):
        # the characters that keep part of the marker matched; any other one matches none
        moves = {c: _next_state(marker, k, c) for c in sorted(set(marker))}
        moves = {c: j for c, j in moves.items() if j}
        alts = [f"[^{''.join(_char(c) for c in moves)}] {prefix}-0"]
        for c, j in moves.items():
            alts.append(f'"{_char(c)}" ' + (then if j == len(marker) else f"{prefix}-{j}"))
        rule = " | ".join(alts)
        lines.append(f"{prefix}-{k} ::= " + (f"( {rule} )?" if may_end else rule))
    return "\n".join(lines) + "\n"


def text_until_unless(prefix: str, marker: str, then: str, *, avoid: str, lead: str) -> str:
    """:func:`text_until` (``may_end``) that cannot start with ``avoid`` after any run of
    ``lead`` characters: the free-text answer of a model that may open its thinking itself,
    which would otherwise also match thinking that ``tool_parsers.ReasoningSplitter`` reads as
    reasoning. Start at ``{prefix}-g0`` (rules ``{prefix}-g0`` … ``{prefix}-g{len(avoid)-1}``
    beside :func:`text_until`'s). All ASCII; ``marker`` holds no ``lead`` character and does
    not occur in ``avoid``."""
    if not avoid or not (avoid + lead).isascii() or set(lead) & set(marker + avoid):
        raise ValueError("avoid and lead must be ASCII, lead apart from the marker and avoid")
    lines = [text_until(prefix, marker, then, may_end=True)]
    for j in range(len(avoid)):
        state = 0  # the marker's state after avoid[:j]
        for ch in avoid[:j]:
            state = _next_state(marker, state, ch)
            if state == len(marker):
                raise ValueError("the marker occurs in avoid")
        alts = []
        special = set(marker) | {avoid[j]} | (set(lead) if j == 0 else set())
        for c in sorted(special):
            if c == avoid[j]:
                if j + 1 < len(avoid):
                    alts.append(f'"{_char(c)}" {prefix}-g{j + 1}')
                continue  # all of avoid: no way on
            if j == 0 and c in lead:
                alts.append(f'"{_char(c)}" {prefix}-g0')
                continue
            k = _next_state(marker, state, c)
            alts.append(f'"{_char(c)}" ' + (then if k == len(marker) else f"{prefix}-{k}"))
        others = "".join(_char(c) for c in sorted(special))
        alts.insert(0, f"[^{others}] {prefix}-0")
        lines.append(f"{prefix}-g{j} ::= ( {' | '.join(alts)} )?\n")
    return "".join(lines)
