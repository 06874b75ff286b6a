"""Each family's streaming parser on outputs in that family's own format (written from the formats'
documentation), fed whole and split at every position: the same content, reasoning and calls."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hearth.api.tool_parsers import (
    CallArguments,
    CallStart,
    GenericParser,
    HermesParser,
    Llama3Parser,
    MistralArgsParser,
    MistralParser,
    Out,
    Parser,
    Reasoning,
    ReasoningSplitter,
    Text,
    ToolParser,
)

NAMES = ("get_weather", "get_time")
Result = tuple[str, str, list[tuple[str, str]]]  # content, reasoning, [(name, arguments)]


def collect(outs: list[Out]) -> Result:
    content: list[str] = []
    reasoning: list[str] = []
    names: dict[int, str] = {}
    args: dict[int, str] = {}
    for o in outs:
        if isinstance(o, Text):
            content.append(o.text)
        elif isinstance(o, Reasoning):
            reasoning.append(o.text)
        elif isinstance(o, CallStart):
            assert o.index == len(names) and o.id.startswith("call_")
            names[o.index] = o.name
            args[o.index] = ""
        elif isinstance(o, CallArguments):
            args[o.index] += o.text
    return "".join(content), "".join(reasoning), [(names[i], args[i]) for i in sorted(names)]


def run(make: Callable[[], Parser], pieces: list[str]) -> Result:
    parser = make()
    outs: list[Out] = []
    for piece in pieces:
        outs.extend(parser.feed(piece))
    outs.extend(parser.finish())
    return collect(outs)


def every_split(make: Callable[[], Parser], text: str) -> Result:
    """The result of ``text`` in one piece, checked equal for every two-piece split, and for
    one character at a time."""
    whole = run(make, [text])
    for i in range(1, len(text)):
        assert run(make, [text[:i], text[i:]]) == whole, f"split at {i}: {text[:i]!r}"
    assert run(make, list(text)) == whole
    return whole


def hermes(parallel: bool = True) -> Callable[[], Parser]:
    return lambda: HermesParser(NAMES, parallel)


WEATHER = '{"location":"Paris","unit":"celsius"}'


def test_hermes_call_after_text() -> None:
    out = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": '
           '{"location": "Paris", "unit": "celsius"}}\n</tool_call>')
    assert every_split(hermes(), out) == ("Let me check.\n", "", [("get_weather", WEATHER)])


def test_hermes_two_calls_and_parallel_off() -> None:
    out = ('<tool_call>\n{"name": "get_weather", "arguments": {"location": "Paris", "unit": '
           '"celsius"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": '
           '{"zone": "Europe/Paris"}}\n</tool_call>')
    both = [("get_weather", WEATHER), ("get_time", '{"zone":"Europe/Paris"}')]
    assert every_split(hermes(), out) == ("", "", both)
    assert every_split(hermes(parallel=False), out) == ("", "", both[:1])


def test_hermes_plain_text_and_lookalikes() -> None:
    assert every_split(hermes(), "a < b and <tool is fine") == (
        "a < b and <tool is fine", "", [])


def test_hermes_malformed_unknown_and_unclosed() -> None:
    # without a grammar the model may close the block inside the arguments: they had begun to
    # stream, so it stays a call with what came, and the closing tag is not part of it
    bad = '<tool_call>{"name": "get_weather", "arguments": {"location": </tool_call>'
    assert every_split(hermes(), bad) == ("", "", [("get_weather", '{"location":')])
    bad_name = '<tool_call>{"name": "get_weather" "arguments": {}</tool_call>'
    assert every_split(hermes(), bad_name) == (bad_name[11:-12], "", [])
    unknown = '<tool_call>{"name": "rm_rf", "arguments": {}}</tool_call>'
    assert every_split(hermes(), unknown)[2] == []
    assert "<tool_call>" not in every_split(hermes(), unknown)[0]
    unclosed = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n'
    assert every_split(hermes(), unclosed) == ("", "", [("get_time", '{"zone":"UTC"}')])
    cut = '<tool_call>\n{"name": "get_time", "argu'
    # a call cut short (max_tokens) is markup: dropped, never content
    assert every_split(hermes(), cut) == ("", "", [])
    assert every_split(hermes(), "<tool_ca") == ("<tool_ca", "", [])


def test_hermes_arguments_as_a_string() -> None:
    out = '<tool_call>{"name": "get_time", "arguments": "{\\"zone\\": \\"UTC\\"}"}</tool_call>'
    assert every_split(hermes(), out)[2] == [("get_time", '{"zone":"UTC"}')]


def test_qwen3_thinking_then_call() -> None:
    out = ('<think>\nThe user wants the weather; call get_weather.\n</think>\n\n<tool_call>\n'
           '{"name": "get_weather", "arguments": {"location": "Paris", "unit": "celsius"}}\n'
           '</tool_call>')
    result = every_split(lambda: ReasoningSplitter(HermesParser(NAMES)), out)
    assert result == ("", "\nThe user wants the weather; call get_weather.\n",
                      [("get_weather", WEATHER)])


def test_reasoning_only_at_the_start_and_open_prompts() -> None:
    plain = lambda: ReasoningSplitter(ToolParser())  # noqa: E731
    assert every_split(plain, "<think>hmm</think>\n\nParis.") == ("Paris.", "hmm", [])
    assert every_split(plain, "Paris. <think>x</think>") == ("Paris. <think>x</think>", "", [])
    assert every_split(plain, "<thin") == ("<thin", "", [])
    opened = lambda: ReasoningSplitter(ToolParser(), open=True)  # noqa: E731
    assert every_split(opened, "Okay, so 2+2.\n</think>\n\n4") == ("4", "Okay, so 2+2.\n", [])
    assert every_split(opened, "still thinking </thi") == ("", "still thinking </thi", [])


def test_blank_space_before_the_models_own_think() -> None:
    """Blank space (spaces, tabs, newlines) before ``<think>`` is skipped as the grammar of
    tool_families.after_thinking allows it (tests/unit/test_thinking_grammar.py); other text
    first makes the whole output the answer, its leading blank space kept."""
    plain = lambda: ReasoningSplitter(ToolParser())  # noqa: E731
    assert every_split(plain, "\n\n<think>hmm</think>\n\nParis.") == ("Paris.", "hmm", [])
    assert every_split(plain, " \t\r\n<think>a\nb</think>Oslo.") == ("Oslo.", "a\nb", [])
    assert every_split(plain, "\n Paris. <think>x</think>") == (
        "\n Paris. <think>x</think>", "", [])
    assert every_split(plain, "\n\n") == ("\n\n", "", [])
    assert every_split(plain, "\n<thi") == ("\n<thi", "", [])
    assert every_split(plain, "\n<think>cut short") == ("", "cut short", [])
    # other Unicode blank space is not skipped (the grammar allows only these four)
    assert every_split(plain, "\u00a0<think>x</think>") == ("\u00a0<think>x</think>", "", [])
    qwen3 = lambda: ReasoningSplitter(HermesParser(NAMES))  # noqa: E731
    out = ('\n<think>\nCall it.\n</think>\n\n<tool_call>\n{"name": "get_weather", "arguments": '
           '{"location": "Paris", "unit": "celsius"}}\n</tool_call>')
    assert every_split(qwen3, out) == ("", "\nCall it.\n", [("get_weather", WEATHER)])


def llama3() -> Parser:
    return Llama3Parser(NAMES)


def test_llama3_bare_and_python_tag() -> None:
    bare = '{"name": "get_weather", "parameters": {"location": "Paris", "unit": "celsius"}}'
    assert every_split(llama3, bare) == ("", "", [("get_weather", WEATHER)])
    assert every_split(llama3, "<|python_tag|>" + bare) == ("", "", [("get_weather", WEATHER)])
    two = bare + '; {"name": "get_time", "parameters": {"zone": "UTC"}}'
    assert every_split(llama3, two)[2] == [("get_weather", WEATHER),
                                           ("get_time", '{"zone":"UTC"}')]


def test_llama3_text_and_non_call_json() -> None:
    assert every_split(llama3, "The weather is {sunny}.") == ("The weather is {sunny}.", "", [])
    assert every_split(llama3, '{"answer": 4}') == ('{"answer": 4}', "", [])
    assert every_split(llama3, '{"name": "get_w') == ("", "", [])  # a call cut short
    assert every_split(llama3, "Sure. <|python_tag|>" + '{"name": "get_time", "parameters": {}}'
                       ) == ("Sure. ", "", [("get_time", "{}")])


def test_llama3_python_tag_after_text_is_markup_never_content() -> None:
    """``<|python_tag|>`` arrives as its text (ChatJob.shown_tokens): a call after some text is
    read, several calls after one tag too, and the tag never reaches content."""
    call = '{"name": "get_weather", "parameters": {"location": "Paris", "unit": "celsius"}}'
    assert every_split(llama3, "Let me look that up.\n<|python_tag|>" + call) == (
        "Let me look that up.\n", "", [("get_weather", WEATHER)])
    two = '<|python_tag|>' + call + '; {"name": "get_time", "parameters": {"zone": "UTC"}}'
    assert every_split(llama3, "One moment. " + two) == (
        "One moment. ", "", [("get_weather", WEATHER), ("get_time", '{"zone":"UTC"}')])
    # the tag before something that is no call (Llama's built-in code interpreter): text, no tag
    assert every_split(llama3, 'Run: <|python_tag|>print("hi")') == ('Run: print("hi")', "", [])
    assert every_split(llama3, '<|python_tag|>{"answer": 4}') == ('{"answer": 4}', "", [])
    # a call cut short after the tag (max_tokens): markup, never content
    assert every_split(llama3, 'Sure. <|python_tag|>{"name": "get_wea') == ("Sure. ", "", [])
    # a tag cut short at the end is text the model wrote
    assert every_split(llama3, "Sure. <|python_t")[2] == []


def mistral() -> Parser:
    return MistralParser(NAMES)


def test_mistral_list() -> None:
    out = ('[TOOL_CALLS][{"name": "get_weather", "arguments": {"location": "Paris", "unit": '
           '"celsius"}}, {"name": "get_time", "arguments": {"zone": "UTC"}}]')
    calls = [("get_weather", WEATHER), ("get_time", '{"zone":"UTC"}')]
    assert every_split(mistral, out) == ("", "", calls)
    assert every_split(mistral, out[len("[TOOL_CALLS]"):]) == ("", "", calls)
    assert every_split(mistral, "[1, 2] are numbers") == ("[1, 2] are numbers", "", [])
    assert every_split(mistral, "No tools needed.") == ("No tools needed.", "", [])


def mistral_v11(parallel: bool = True) -> Callable[[], Parser]:
    return lambda: MistralArgsParser(NAMES, parallel)


# As Mistral Small 3.2's and Devstral's templates write calls: '[TOOL_CALLS]' + name + '[ARGS]'
# + arguments, one after another
V11 = ('[TOOL_CALLS]get_weather[ARGS]{"location": "Paris", "unit": "celsius"}'
       '[TOOL_CALLS]get_time[ARGS]{"zone": "UTC"}')


def test_mistral_v11_calls() -> None:
    calls = [("get_weather", WEATHER), ("get_time", '{"zone":"UTC"}')]
    assert every_split(mistral_v11(), V11) == ("", "", calls)
    spaced = V11.replace("}[", "} \n [") + "\n"
    assert every_split(mistral_v11(), spaced) == ("", "", calls)
    assert every_split(mistral_v11(parallel=False), V11) == ("", "", calls[:1])
    assert every_split(mistral_v11(), "Let me look.\n" + V11) == ("Let me look.\n", "", calls)
    with_id = '[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{"zone": "UTC"}'
    assert every_split(mistral_v11(), with_id) == ("", "", calls[1:])


def test_mistral_v11_text_unknown_and_cut() -> None:
    assert every_split(mistral_v11(), "[1, 2] and [TOOL") == ("[1, 2] and [TOOL", "", [])
    unknown = '[TOOL_CALLS]rm_rf[ARGS]{"path": "/"}'
    assert every_split(mistral_v11(), unknown) == ('rm_rf{"path": "/"}', "", [])
    assert every_split(mistral_v11(), "[TOOL_CALLS]get_ti") == ("", "", [])  # markup
    cut = '[TOOL_CALLS]get_time[ARGS]{"zone": "U'
    assert every_split(mistral_v11(), cut) == ("", "", [("get_time", '{"zone":"U')])
    long = "[TOOL_CALLS]" + "x" * 200
    assert every_split(mistral_v11(), long) == ("x" * 200, "", [])


def generic(parallel: bool = True) -> Callable[[], Parser]:
    return lambda: GenericParser(NAMES, parallel)


def test_generic_content_streams_decoded() -> None:
    out = '{"content": "It is 20 \\u00b0C in Paris \\ud83d\\ude00, \\"sunny\\"\\n."}'
    assert every_split(generic(), out) == ('It is 20 °C in Paris 😀, "sunny"\n.', "", [])
    parser = GenericParser(NAMES)
    parts = parser.feed('{"content": "Hel')
    assert parts == [Text("Hel")]  # streamed before the envelope is complete


def test_generic_calls() -> None:
    out = ('{"tool_calls": [{"name": "get_weather", "arguments": {"location": "Paris", '
           '"unit": "celsius"}}, {"name": "get_time", "arguments": {"zone": "UTC"}}]}')
    calls = [("get_weather", WEATHER), ("get_time", '{"zone":"UTC"}')]
    assert every_split(generic(), out) == ("", "", calls)
    assert every_split(generic(parallel=False), out) == ("", "", calls[:1])
    parser = GenericParser(NAMES)  # each call as soon as its object is complete
    first = parser.feed(out[: out.index("}}") + 2])
    assert [type(o) for o in first] == [CallStart, CallArguments]


def test_generic_without_grammar() -> None:
    assert every_split(generic(), "Just text.") == ("Just text.", "", [])
    bare = '{"name": "get_time", "arguments": {"zone": "UTC"}}'
    assert every_split(generic(), bare) == ("", "", [("get_time", '{"zone":"UTC"}')])
    assert every_split(generic(), '{"x": 1}') == ('{"x": 1}', "", [])
    cut = '{"tool_calls": [{"name": "get_time", "arguments": {}}, {"name": "get_ti'
    assert every_split(generic(), cut) == ("", "", [("get_time", "{}")])  # the cut one dropped
    assert every_split(generic(), '{"tool') == ("", "", [])


@pytest.mark.parametrize("make", [hermes(), llama3, mistral, mistral_v11(), generic()])
def test_empty_output(make: Callable[[], Parser]) -> None:
    assert run(make, []) == ("", "", [])


# ---- arguments stream in pieces ---------------------------------------------------------------

ARGS = '{"location":"Paris \\"15e\\" ","unit":"celsius","days":[1,2]}'
SPACED = '{"location": "Paris \\"15e\\" ", "unit": "celsius",\n "days": [1, 2]}'
STREAMED: list[tuple[str, Callable[[], Parser], str]] = [
    ("hermes", hermes(), f'Sure.\n<tool_call>\n{{"name": "get_weather", "arguments": {SPACED}}}'
                         "\n</tool_call>"),
    ("qwen3", lambda: ReasoningSplitter(HermesParser(NAMES)),
     f'<think>x</think>\n\n<tool_call>\n{{"name": "get_weather", "arguments": {SPACED}}}\n'
     "</tool_call>"),
    ("llama3", llama3, f'{{"name": "get_weather", "parameters": {SPACED}}}'),
    ("llama3-tag", llama3, f'<|python_tag|>{{"name": "get_weather", "parameters": {SPACED}}}'),
    ("mistral", mistral, f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {SPACED}}}, '
                         '{"name": "get_time", "arguments": {}}]'),
    ("mistral-v11", mistral_v11(), f'Sure.[TOOL_CALLS]get_weather[ARGS]{SPACED}'
                                   '[TOOL_CALLS]get_time[ARGS]{}'),
    ("generic", generic(), f'{{"tool_calls": [{{"name": "get_weather", "arguments": {SPACED}}}, '
                           '{"name": "get_time", "arguments": {}}]}'),
]


@pytest.mark.parametrize(("family", "make", "text"), STREAMED, ids=[f for f, _, _ in STREAMED])
def test_arguments_stream_in_pieces(family: str, make: Callable[[], Parser], text: str) -> None:
    """Split anywhere, the pieces put together are the whole arguments (blank space between
    tokens taken out); fed one character at a time, the call starts once the arguments' ``{``
    comes and its arguments arrive as they are written, the last piece with their ``}``."""
    calls = every_split(make, text)[2]
    assert calls[0] == ("get_weather", ARGS)
    assert json.loads(calls[0][1]) == json.loads(SPACED)
    parser = make()
    seen: list[tuple[int, Out]] = []
    for i, ch in enumerate(text):
        seen.extend((i, o) for o in parser.feed(ch))
    seen.extend((len(text), o) for o in parser.finish())
    opened = text.index("{", text.index('"location"') - 3)
    closed = text.index("]}", opened) + 1  # the arguments' closing brace
    starts = [i for i, o in seen if isinstance(o, CallStart)]
    pieces = [(i, o.text) for i, o in seen if isinstance(o, CallArguments) and o.index == 0]
    assert opened - len("]") <= starts[0] <= opened  # at "[ARGS]"'s end, or the '{'
    assert len(pieces) > 20 and pieces[-1][0] == closed
    assert "".join(p for _, p in pieces) == ARGS


def test_a_call_not_in_the_canonical_order_comes_whole() -> None:
    """Arguments before the name, or as a JSON string: read once the call is complete."""
    first = '<tool_call>{"arguments": {"zone": "UTC"}, "name": "get_time"}</tool_call>'
    parser = HermesParser(NAMES)
    early = parser.feed(first[:-13])
    assert early == []
    rest = parser.feed(first[-13:])
    assert [type(o) for o in rest] == [CallStart, CallArguments]
    assert every_split(hermes(), first)[2] == [("get_time", '{"zone":"UTC"}')]


def test_a_call_cut_while_its_arguments_stream_keeps_what_came() -> None:
    cut = '<tool_call>\n{"name": "get_time", "arguments": {"zone": "Europe/Pa'
    assert every_split(hermes(), cut) == ("", "", [("get_time", '{"zone":"Europe/Pa')])
    assert every_split(generic(), '{"tool_calls": [{"name": "get_time", "arguments": {"z') == (
        "", "", [("get_time", '{"z')])
