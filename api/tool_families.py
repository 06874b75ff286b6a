"""Chat-template families for tool calling, told apart by the GGUF's chat template text, and the
grammar each one's tool calls are held to.

=========  ===========================================  ================================
family     what the model writes (its own format)       detected by the template holding
=========  ===========================================  ================================
hermes     ``<tool_call>{"name", "arguments"}</tool_call>``  ``<tool_call>`` (Hermes 2 Pro,
           per call                                     Qwen 2.5, Qwen 3, QwQ)
llama3     ``{"name", "parameters"}``, alone or after   ``<|python_tag|>`` (Llama 3.1+)
           ``<|python_tag|>``
mistral    ``[TOOL_CALLS][{"name", "arguments"}, …]``   ``[TOOL_CALLS]``
mistral-   ``[TOOL_CALLS]name[ARGS]{…}`` per call       ``[TOOL_CALLS]`` and ``[ARGS]``
v11                                                     (Mistral Small 3.1+, Magistral,
                                                        Devstral Small 1.1)
generic    hearth's JSON envelope (:mod:`.tool_parsers`) anything else, e.g. SmolLM2's
                                                        ChatML and Gemma's templates
=========  ===========================================  ================================

A marker family's template must also read ``tools`` (it renders them itself); otherwise the
template is treated as generic: hearth describes the tools in the system prompt.

Grammars (llama.cpp GBNF, see :class:`~hearth.scheduler.messages.Grammar`): each tool's
arguments rule comes from its parameters schema (:mod:`.json_gbnf`); hearth's own rules put the
family's markup around them. ``tool_choice: auto`` in a marker family is a lazy grammar
triggered at the family's marker (free text until then); ``required`` or a named function
constrain from the first token; the generic envelope always does (its text answers are part of
it). In a template family that thinks first (``<think>…</think>``, :func:`thinking_of`), every
grammar (tools' and ``response_format``'s) holds the answer after the thinking, not the thinking
(:func:`after_thinking`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hearth.api import gbnf_rules, tool_parsers
from hearth.api.json_gbnf import RuleSet, SchemaError, literal
from hearth.scheduler.messages import Grammar


class Family(enum.Enum):
    HERMES = "hermes"
    LLAMA3 = "llama3"
    MISTRAL = "mistral"
    MISTRAL_V11 = "mistral-v11"
    GENERIC = "generic"


class Thinking(enum.Enum):
    NONE = "none"  # the template knows no <think>
    TAGGED = "tagged"  # the model may open <think> itself
    OPEN = "open"  # the generation prompt ends inside <think>


def family_of(template: str | None) -> Family:
    src = template or ""
    if "tools" not in src:
        return Family.GENERIC
    if "<tool_call>" in src:
        return Family.HERMES
    if "[TOOL_CALLS]" in src and "[ARGS]" in src:
        return Family.MISTRAL_V11
    if "[TOOL_CALLS]" in src:
        return Family.MISTRAL
    if "<|python_tag|>" in src:
        return Family.LLAMA3
    return Family.GENERIC


_EMPTY_THINK = re.compile(r"<think>(?:\s|\\n)*</think>")


def thinking_of(template: str | None) -> Thinking:
    """Whether the model thinks in ``<think>`` tags first, and whether the prompt opens them: a
    ``<think>`` left in the template after its last ``add_generation_prompt``, once empty think
    blocks (Qwen 3's ``enable_thinking=false``) are taken out, is one the prompt ends with
    (DeepSeek-R1 distills)."""
    src = template or ""
    if "<think>" not in src:
        return Thinking.NONE
    tail = src[src.rfind("add_generation_prompt"):] if "add_generation_prompt" in src else ""
    if "<think>" in _EMPTY_THINK.sub("", tail):
        return Thinking.OPEN
    return Thinking.TAGGED


@dataclass(frozen=True)
class ToolDef:
    """A tool as the request offered it (validated)."""

    name: str
    description: str | None
    parameters: dict[str, Any]


def parser_for(family: Family, thinking: Thinking, names: Sequence[str], parallel: bool,
               tools_on: bool, json_answer: bool = False) -> tool_parsers.Parser:
    """The streaming parser of one answer. ``tools_on`` false (no tools, or ``tool_choice:
    none``): text passes through (thinking still split). ``json_answer``: a text answer is
    ``response_format``'s JSON (the generic family writes it bare, not in its envelope)."""
    inner: tool_parsers.ToolParser
    if not tools_on:
        inner = tool_parsers.ToolParser()
    elif family is Family.HERMES:
        inner = tool_parsers.HermesParser(names, parallel)
    elif family is Family.LLAMA3:
        inner = tool_parsers.Llama3Parser(names, parallel)
    elif family is Family.MISTRAL:
        inner = tool_parsers.MistralParser(names, parallel)
    elif family is Family.MISTRAL_V11:
        inner = tool_parsers.MistralArgsParser(names, parallel)
    else:
        inner = tool_parsers.GenericParser(names, parallel, json_answer=json_answer)
    if thinking is Thinking.NONE:
        return inner
    return tool_parsers.ReasoningSplitter(inner, open=thinking is Thinking.OPEN)


# ---- grammars ---------------------------------------------------------------------------------

# A JSON string's characters, as JSON allows them (the converter's own `char` rule, restated).
_CHAR = r'[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt/] | "u" [0-9a-fA-F]{4})'


def build_rules(tools: Sequence[ToolDef]) -> tuple[RuleSet, list[str]]:
    """A RuleSet with each tool's arguments rule (``tool-<i>-args``), and those rule names.
    Raises json_gbnf.SchemaError naming ``tools[i].function.parameters``."""
    rules = RuleSet()
    names = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}].function.parameters"
        try:
            names.append(rules.add(tool.parameters, f"tool-{i}-args"))
        except SchemaError as exc:
            raise SchemaError(f"{where}: {exc}", where) from None
    return rules, names


def _call_rules(rules: RuleSet, tools: Sequence[ToolDef], args: Sequence[str],
                only: str | None, args_key: str) -> tuple[str, str]:
    """Rules ``call`` (one call's JSON object) and ``call-rest`` (the same after its first
    characters ``{"name"``, where a lazy grammar's marker may end); returns both names."""
    alts = []
    for i, (tool, arg_rule) in enumerate(zip(tools, args, strict=True)):
        if only is not None and tool.name != only:
            continue
        body = (f'space ":" space {literal(chr(34) + tool.name + chr(34))} space "," space '
                f'{literal(chr(34) + args_key + chr(34))} space ":" space {arg_rule} "}}" space')
        alts.append(rules.rule(f"call-rest-{i}", body))
    rest = rules.rule("call-rest", " | ".join(alts))
    return rules.rule("call", f'"{{" space {literal(chr(34) + "name" + chr(34))} {rest}'), rest


# the blank space ReasoningSplitter skips before a model's own <think>, as a GBNF class body
_LEAD = "".join({" ": " ", "\t": "\\t", "\n": "\\n", "\r": "\\r"}[c]
                for c in tool_parsers.THINK_LEAD)


def after_thinking(grammar: Grammar, thinking: Thinking) -> Grammar:
    """``grammar`` (not lazy) applied to the answer after the model's thinking: with
    ``Thinking.OPEN`` the output is thinking text, ``</think>``, optional blank space, then what
    ``grammar`` allows; with ``TAGGED`` it may also start with ``<think>`` (after blank space,
    ``tool_parsers.THINK_LEAD``, as ``ReasoningSplitter`` reads it) and such a block, or be
    the answer alone. The thinking is any text without ``</think>``: the grammar holds the
    answer only, and the model cannot end before it has given one (only ``max_tokens`` can cut
    it). ``NONE``: ``grammar`` as it is."""
    if thinking is Thinking.NONE:
        return grammar
    if grammar.triggers:
        raise ValueError("a lazy grammar cannot follow the thinking")
    text = grammar.gbnf
    answer = gbnf_rules.free_name(text, "hearth-answer")
    text = gbnf_rules.rename(text, "root", answer)
    think = gbnf_rules.text_until("hearth-think", tool_parsers.THINK_CLOSE,
                                  "hearth-after-think", may_end=False)
    root = "root ::= hearth-think-0\n" if thinking is Thinking.OPEN else \
        f'root ::= [{_LEAD}]* {literal(tool_parsers.THINK_OPEN)} hearth-think-0 | {answer}\n'
    return Grammar(f"{root}{think}hearth-after-think ::= [{_LEAD}]* {answer}\n{text}",
                   param=grammar.param)


def grammar_for(family: Family, thinking: Thinking, tools: Sequence[ToolDef],
                args: Sequence[str], rules: RuleSet, *, required: bool, only: str | None,
                parallel: bool, answer: str | None = None) -> Grammar:
    """The grammar of one answer with tools (``tool_choice`` not none): ``required`` for
    ``required`` or a named function (``only``: its name). In a family that thinks, it starts
    after the thinking (:func:`after_thinking`); a ``tool_choice: auto`` grammar is then not
    lazy but written as free text up to the family's marker, so that the marker inside the
    thinking does not start a call.

    ``answer``: the rule of ``response_format``'s JSON (in ``rules``), for ``auto``: the answer
    is then either that JSON or the family's calls, one grammar from the first token."""
    if family is Family.MISTRAL_V11:
        return _mistral_v11_grammar(thinking, tools, args, rules, required=required, only=only,
                                    parallel=parallel, answer=answer)
    args_key = "parameters" if family is Family.LLAMA3 else "arguments"
    call, rest = _call_rules(rules, tools, args, only, args_key)
    if family is Family.GENERIC:
        calls = (f'{literal(tool_parsers.CALLS_PREFIX)} {call} '
                 + ('("," space ' + call + ")* " if parallel else "") + '"]}"')
        rules.rule("calls", calls)
        if required:
            body = "calls"
        elif answer is not None:
            body = f"{answer} | calls"
        else:
            rules.rule("content-unit", _CHAR)
            rules.rule("content", f'{literal(tool_parsers.CONTENT_PREFIX)} content-unit* "\\"}}"')
            body = "content | calls"
        return after_thinking(Grammar(f"root ::= {body}\n{rules.rules()}\n", param="tools"),
                              thinking)
    if family is Family.HERMES:
        block = rules.rule("block", f'"<tool_call>" "\\n"? {call} "\\n"? "</tool_call>"')
        more = f' ( [ \\n]* {block} )*' if parallel else ""
        body = block + more
        marker, after_marker = "<tool_call>", f'"\\n"? {call} "\\n"? "</tool_call>"{more}'
    elif family is Family.LLAMA3:
        more = f' ( [ \\n]* ";"? [ \\n]* {call} )*' if parallel else ""
        body = call + more
        marker, after_marker = '{"name"', rest + more
    else:
        more = f' ( "," space {call} )*' if parallel else ""
        body = f'"[" space {call}{more} "]"'
        marker, after_marker = '[{"name"', f'{rest}{more} "]"'
    if answer is not None and not required:
        body = f"{answer} | {body}"
        required = True  # one grammar from the first token: the JSON answer, or the calls
    if required:
        return after_thinking(Grammar(f"root ::= {body}\n{rules.rules()}\n", param="tools"),
                              thinking)
    if thinking is Thinking.NONE:
        return Grammar(f"root ::= {body}\n{rules.rules()}\n", [marker], param="tools")
    calls = rules.rule("calls-after-marker", after_marker)
    return after_thinking(_free_text_answer(marker, calls, thinking, rules), thinking)


def _free_text_answer(marker: str, calls: str, thinking: Thinking, rules: RuleSet) -> Grammar:
    """``tool_choice: auto`` after the thinking: free text up to the family's ``marker``, then
    rule ``calls``. Where the model opens ``<think>`` itself (``TAGGED``) the text may not start
    with it (after blank space): that is the thinking, as ReasoningSplitter reads it, whose
    text the grammar leaves free; a marker there must start no call."""
    if thinking is Thinking.TAGGED:
        free = gbnf_rules.text_until_unless("hearth-text", marker, calls,
                                            avoid=tool_parsers.THINK_OPEN,
                                            lead=tool_parsers.THINK_LEAD)
        start = "hearth-text-g0"
    else:
        free = gbnf_rules.text_until("hearth-text", marker, calls, may_end=True)
        start = "hearth-text-0"
    return Grammar(f"root ::= {start}\n{free}{rules.rules()}\n", param="tools")


def _mistral_v11_grammar(thinking: Thinking, tools: Sequence[ToolDef], args: Sequence[str],
                         rules: RuleSet, *, required: bool, only: str | None,
                         parallel: bool, answer: str | None) -> Grammar:
    """``[TOOL_CALLS]<name>[ARGS]<arguments>`` per call (the markers are the model's control
    tokens, whose text llama.cpp's grammar matches); lazy from ``[TOOL_CALLS]`` for ``auto``."""
    marker, args_marker = tool_parsers.MistralArgsParser.TOOL_CALLS, \
        tool_parsers.MistralArgsParser.ARGS
    alts = [rules.rule(f"v11-call-{i}", f"{literal(tool.name)} {literal(args_marker)} {rule}")
            for i, (tool, rule) in enumerate(zip(tools, args, strict=True))
            if only is None or tool.name == only]
    rest = rules.rule("v11-rest", " | ".join(alts))
    call = rules.rule("v11-call", f"{literal(marker)} {rest}")
    more = f" ( [ \\n]* {call} )*" if parallel else ""
    body = call + more
    if answer is not None and not required:
        body, required = f"{answer} | {body}", True
    if required:
        return after_thinking(Grammar(f"root ::= {body}\n{rules.rules()}\n", param="tools"),
                              thinking)
    if thinking is Thinking.NONE:
        return Grammar(f"root ::= {body}\n{rules.rules()}\n", [marker], param="tools")
    calls = rules.rule("calls-after-marker", rest + more)
    return after_thinking(_free_text_answer(marker, calls, thinking, rules), thinking)
