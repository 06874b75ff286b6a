"""Grammars in template families that think: the grammar holds the answer after ``</think>``,
not the thinking; and Mistral's v11 call format. Checked in llama.cpp's own grammar engine
(engine.gbnf on the tiny model's vocabulary, fed one byte-fallback token per byte): which whole
outputs it accepts, and that the model cannot end before the answer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import pytest
from hearth.api import gbnf_rules, openai_types, tool_parsers
from hearth.api.json_schema import schema_grammar
from hearth.api.tool_calling import plan_tools
from hearth.api.tool_families import Thinking, after_thinking
from hearth.engine import gbnf
from hearth.scheduler.messages import Grammar
from hearth.tools.cli.tiny_model import IM_END_ID

BYTE0 = 3  # the tiny vocabulary's <0x00>; <0xNN> is BYTE0 + NN
QWEN3 = ("{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}<tool_call>"
         "{% if m.reasoning_content %}<think>{% endif %}"
         "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
R1 = "{% if add_generation_prompt %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
          "additionalProperties": False}
WEATHER: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}}}


@pytest.fixture(scope="module")
def vocab(tiny_model_path: Path) -> Iterator[Any]:
    llm = llama_cpp.Llama(str(tiny_model_path), vocab_only=True, verbose=False)
    yield llama_cpp.llama_model_get_vocab(llm._model.model)
    llm.close()


def accepts(vocab: Any, grammar: Grammar, text: str, *, end: bool = True) -> bool:
    """Whether the grammar takes ``text`` (and then end-of-generation, when ``end``)."""
    g = gbnf.parse(vocab, grammar.gbnf, IM_END_ID + 1)
    try:
        for byte in text.encode():
            if not g.allows(BYTE0 + byte):
                return False
            g.accept(BYTE0 + byte)
        return g.allows(IM_END_ID) if end else True
    finally:
        g.free()


def tools_grammar(template: str, choice: str = "auto") -> Grammar:
    body = {"model": "m", "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [WEATHER], "tool_choice": choice}
    req = openai_types.parse_chat_request(json.dumps(body).encode())
    grammar = plan_tools(req, openai_types.chat_messages(req), template).grammar
    assert grammar is not None
    return grammar


def test_schema_after_open_thinking(vocab: Any) -> None:
    g = after_thinking(schema_grammar(SCHEMA), Thinking.OPEN)
    assert not g.triggers
    assert accepts(vocab, g, 'Thinking {not "json" at all\n</think>\n\n{"a": 1}')
    assert accepts(vocab, g, '</think>{"a": 2}')
    assert accepts(vocab, g, 'a <</think>{"a": 3}')  # the first </think> closes it
    assert not accepts(vocab, g, 'thinking </think> x</think>{"a": 1}')
    assert not accepts(vocab, g, 'still thinking')  # no end before the answer
    assert not accepts(vocab, g, 'done</think>{"a": "one"}')  # the answer is held to the schema
    assert accepts(vocab, g, 'done</think>{"a": 1', end=False)
    assert not accepts(vocab, g, 'done</think>{"a": 1')  # cut short: not complete


def test_schema_after_tagged_thinking_or_alone(vocab: Any) -> None:
    g = after_thinking(schema_grammar(SCHEMA), Thinking.TAGGED)
    assert accepts(vocab, g, '<think>maybe {"a": "x"}</think>\n{"a": 1}')
    assert accepts(vocab, g, '{"a": 1}')
    assert not accepts(vocab, g, 'plain text')
    assert not accepts(vocab, g, '<think>no answer yet</think>\n')


def test_blank_space_may_come_before_tagged_thinking(vocab: Any) -> None:
    """As ReasoningSplitter reads it (tests/unit/test_tool_parsers.py): spaces, tabs and
    newlines before the model's own <think> still open the thinking, whose text the grammar
    leaves free; the answer after it is held."""
    g = after_thinking(schema_grammar(SCHEMA), Thinking.TAGGED)
    assert accepts(vocab, g, '\n\n<think>maybe {"a": "x"}</think>\n{"a": 1}')
    assert accepts(vocab, g, ' \t\r\n<think>x</think>\r\n\t{"a": 2}')
    assert not accepts(vocab, g, '\n<think>x</think>\nnot json')
    assert not accepts(vocab, g, '\n<think>no answer yet</think>\n')
    assert not accepts(vocab, g, '\n<think>still thinking')  # no end before the answer
    assert not accepts(vocab, g, '\nx<think>x</think>{"a": 1}')
    tools = tools_grammar(QWEN3, "required")
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert accepts(vocab, tools, "\n<think>I could write <tool_call>{</think>\n\n" + call)
    assert accepts(vocab, tools, call)
    assert not accepts(vocab, tools, "\n<think>x</think>\n\nNo call.")


def test_after_thinking_leaves_other_families_and_refuses_lazy_grammars() -> None:
    plain = schema_grammar(SCHEMA)
    assert after_thinking(plain, Thinking.NONE) is plain
    with pytest.raises(ValueError):
        after_thinking(Grammar("root ::= x\nx ::= \"a\"\n", ["a"]), Thinking.OPEN)


def test_tool_marker_inside_thinking_does_not_start_a_call(vocab: Any) -> None:
    g = tools_grammar(QWEN3)
    assert not g.triggers  # one grammar from the first token: the thinking comes first
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert accepts(vocab, g, '<think>I could write <tool_call>{"name": 1}</think>\n\nSure. '
                   + call)
    assert accepts(vocab, g, "<think>No tool needed.</think>\n\nHello there.")
    assert accepts(vocab, g, "Hello without thinking.")
    assert not accepts(vocab, g, '<think>x</think>Text <tool_call>{"name": "other"}</tool_call>')
    assert not accepts(vocab, g, '<think>x</think>' + call + " and text after")


def test_required_call_after_open_thinking(vocab: Any) -> None:
    g = tools_grammar(R1, "required")
    body = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}'
    assert accepts(vocab, g, "Let me <tool_call> think.</think>\n" + body)  # R1 is generic
    assert not accepts(vocab, g, "Let me think.</think>\nNo call.")


def test_rules_are_read_by_name_not_by_substring() -> None:
    text = ('root ::= "char ::= " a # root ::= b\nchar ::= [^"\\\\] | "x"\n'
            'a ::= "root" [root] char\n')
    assert list(gbnf_rules.rules(text)) == ["root", "char", "a"]
    assert gbnf_rules.body(text, "char") == '[^"\\\\] | "x"'
    renamed = gbnf_rules.rename(text, "char", "ch")
    assert renamed == ('root ::= "char ::= " a # root ::= b\nch ::= [^"\\\\] | "x"\n'
                       'a ::= "root" [root] ch\n')
    assert gbnf_rules.replace_body(text, "a", '"y"').endswith('a ::= "y"\n')
    assert gbnf_rules.free_name(text, "a") == "a1"


@pytest.mark.parametrize("marker", ["</think>", "<tool_call>", "aab", "[{\"name\""])
def test_text_until_a_marker_is_exact(vocab: Any, marker: str) -> None:
    """Every text over the marker's own characters: accepted with the marker's first occurrence
    followed by "!" (then the end), refused when "!" comes anywhere else."""
    rules = gbnf_rules.text_until("t", marker, "bang", may_end=False)
    g = Grammar(f'root ::= t-0\nbang ::= "!"\n{rules}')
    alphabet = sorted(set(marker))
    texts = [""]
    for _ in range(3):
        texts = [t + c for t in texts for c in alphabet] + texts
    for t in set(texts):
        whole = t + marker
        first = whole.find(marker)
        good = whole[: first + len(marker)] + "!"
        assert accepts(vocab, g, good), good
        if first + len(marker) < len(whole):
            assert not accepts(vocab, g, whole + "!"), whole


@pytest.mark.parametrize("marker", ["<tool_call>", "{\"name\"", "[TOOL_CALLS]"])
def test_free_text_that_is_no_thinking_is_exact(vocab: Any, marker: str) -> None:
    """text_until_unless against its definition, on texts made of pieces that matter (parts
    of <think> and of the marker, blank space, other text): a text with the marker is accepted
    up to its first marker and "!" (the calls), one without it accepted whole, unless it starts
    with <think> after blank space (that is the thinking, as ReasoningSplitter reads it)."""
    lead = tool_parsers.THINK_LEAD
    rules = gbnf_rules.text_until_unless("t", marker, "bang", avoid="<think>", lead=lead)
    g = Grammar(f'root ::= t-g0\nbang ::= "!"\n{rules}')
    pieces = ["<think>", "<thi", "<t", "<", marker, marker[:2], " ", "\n", "x", "think>"]
    texts = [""]
    for _ in range(3):
        texts = [t + p for t in texts for p in pieces] + texts
    for t in sorted(set(texts)):
        first = t.find(marker)
        text = t if first < 0 else t[: first + len(marker)] + "!"
        thinking = text.lstrip(lead).startswith("<think>")
        assert accepts(vocab, g, text) is not thinking, repr(text)


def test_auto_tools_free_text_never_holds_the_thinking(vocab: Any) -> None:
    """Qwen 3 with tool_choice auto: an output that starts with <think> (after blank space) is
    the thinking, so a call inside it is no call, and the thinking must close before the
    answer; without it the text is the answer and its marker starts a call."""
    g = tools_grammar(QWEN3)
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert not accepts(vocab, g, "\n<think>I call it: " + call)  # the thinking never closed
    assert not accepts(vocab, g, "<think>I call it: " + call)
    assert accepts(vocab, g, "\n<think>I call it.</think>\n\n" + call)
    assert accepts(vocab, g, "\nSure. " + call)
    assert accepts(vocab, g, "\n<thin is not a tag. " + call)
    assert not accepts(vocab, g, "Sure. <tool_call>{\"name\": 1}")


MISTRAL_V11 = ("{% if tools %}[AVAILABLE_TOOLS]{{ tools }}[/AVAILABLE_TOOLS]{% endif %}"
               "{{ '[TOOL_CALLS]' + name + '[ARGS]' + arguments }}")


def test_mistral_v11_calls_as_its_templates_write_them(vocab: Any) -> None:
    required = tools_grammar(MISTRAL_V11, "required")
    call = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}'
    assert accepts(vocab, required, call)
    assert accepts(vocab, required, call + "\n" + call)
    assert not accepts(vocab, required, '[TOOL_CALLS]get_weather[ARGS]{"town": "Paris"}')
    assert not accepts(vocab, required, "Paris")
    lazy = tools_grammar(MISTRAL_V11)
    assert lazy.triggers == ["[TOOL_CALLS]"]
    assert accepts(vocab, lazy, call)  # from the trigger's first character


ANSWER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8}},
          "required": ["city"], "additionalProperties": False}
HERMES = "{% if tools %}<tools>{{ tools | tojson }}</tools>{% endif %}<tool_call>"


def json_and_tools(template: str | None, choice: str = "auto") -> tuple[Grammar, Any]:
    body = {"model": "m", "messages": [{"role": "user", "content": "Weather?"}],
            "tools": [WEATHER], "tool_choice": choice, "response_format": {
                "type": "json_schema", "json_schema": {"name": "a", "schema": ANSWER}}}
    req = openai_types.parse_chat_request(json.dumps(body).encode())
    plan = plan_tools(req, openai_types.chat_messages(req), template)
    assert plan.grammar is not None
    return plan.grammar, plan


@pytest.mark.parametrize("template", [None, HERMES, MISTRAL_V11, QWEN3])
def test_response_format_beside_tools_is_the_json_or_calls(vocab: Any,
                                                          template: str | None) -> None:
    g, plan = json_and_tools(template)
    assert not g.triggers  # from the first token: free text is not an answer
    assert accepts(vocab, g, '{"city": "Paris"}')
    assert not accepts(vocab, g, '{"city": "Paris", "x": 1}')
    assert not accepts(vocab, g, "Plain text.")
    calls = {None: '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]}',
             HERMES: '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}'
                     '</tool_call>',
             QWEN3: '<tool_call>{"name": "get_weather", "arguments": {"city": "Rome"}}'
                    '</tool_call>',
             MISTRAL_V11: '[TOOL_CALLS]get_weather[ARGS]{"city": "Rome"}'}[template]
    assert accepts(vocab, g, calls)
    parser = plan.parser()
    outs = parser.feed('{"city": "Paris"}') + parser.finish()
    assert "".join(o.text for o in outs if hasattr(o, "text")) == '{"city": "Paris"}'
    assert parser.call_count == 0


def test_response_format_beside_required_tools_is_calls_only(vocab: Any) -> None:
    g, plan = json_and_tools(None, "required")
    assert plan.answer_schema is None
    assert not accepts(vocab, g, '{"city": "Paris"}')
