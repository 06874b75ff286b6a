"""hearth.engine.templates: fallback formats, HF-style features, and the sandbox."""

from __future__ import annotations

import dataclasses
import time
from types import SimpleNamespace

import msgspec
import pytest
from hearth.engine.templates import (
    ChatTemplate,
    TemplateError,
    fallback_template,
    template_for,
)

CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi!"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "What is 2+2?"},
]


# -- fallbacks -----------------------------------------------------------------------------------


def test_gemma_fallback_exact() -> None:
    prompt = template_for("gemma3", None).render(CONVERSATION)
    assert prompt == (
        "<start_of_turn>user\n"
        "You are terse.\n\nHi!<end_of_turn>\n"
        "<start_of_turn>model\n"
        "Hello.<end_of_turn>\n"
        "<start_of_turn>user\n"
        "What is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


@pytest.mark.parametrize("arch", ["gemma", "gemma2", "gemma3", "Gemma3"])
def test_gemma_family_shares_the_fallback(arch: str) -> None:
    assert fallback_template(arch) == fallback_template("gemma3")
    assert "<start_of_turn>" in fallback_template(arch)


def test_gemma_fallback_emits_no_bos() -> None:
    # The worker tokenizes with add_bos (gemma-3's tokenizer.ggml.add_bos_token is true).
    prompt = template_for("gemma3", None, bos_token="<bos>").render(CONVERSATION)
    assert "<bos>" not in prompt


def test_gemma_fallback_without_generation_prompt() -> None:
    prompt = template_for("gemma3", None).render(CONVERSATION[:3], add_generation_prompt=False)
    assert prompt == (
        "<start_of_turn>user\nYou are terse.\n\nHi!<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
    )


def test_gemma_fallback_edge_roles() -> None:
    t = template_for("gemma3", None)
    # No system: plain user turn. System only: becomes a user turn of its own.
    assert t.render([{"role": "user", "content": " Hi \n"}], add_generation_prompt=False) == (
        "<start_of_turn>user\nHi<end_of_turn>\n"
    )
    assert t.render([{"role": "system", "content": "S"}], add_generation_prompt=False) == (
        "<start_of_turn>user\nS<end_of_turn>\n"
    )
    # developer is a system message; tool results are user turns.
    prompt = t.render(
        [
            {"role": "developer", "content": "D"},
            {"role": "user", "content": "U"},
            {"role": "tool", "content": "T", "tool_call_id": "x"},
        ],
        add_generation_prompt=False,
    )
    assert prompt == (
        "<start_of_turn>user\nD\n\nU<end_of_turn>\n<start_of_turn>user\nT<end_of_turn>\n"
    )


def test_content_parts_and_null_content() -> None:
    t = template_for("gemma3", None)
    prompt = t.render(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "data:"}},
                    {"type": "text", "text": "here"},
                ],
            },
            {"role": "assistant", "content": None},
        ],
        add_generation_prompt=False,
    )
    assert prompt == (
        "<start_of_turn>user\nlook\nhere<end_of_turn>\n<start_of_turn>model\n<end_of_turn>\n"
    )


def test_chatml_fallback_exact() -> None:
    t = template_for("llama", None)
    assert t.render(CONVERSATION) == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nHi!<|im_end|>\n"
        "<|im_start|>assistant\nHello.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert t.render(CONVERSATION[1:2], add_generation_prompt=False) == (
        "<|im_start|>user\nHi!<|im_end|>\n"
    )


def test_template_for_precedence() -> None:
    gguf = "GGUF{{ messages | length }}"
    override = "OVERRIDE"
    assert template_for("gemma3", gguf, override).render(CONVERSATION) == "OVERRIDE"
    assert template_for("gemma3", gguf).render(CONVERSATION) == "GGUF4"
    assert template_for("gemma3", "").render(CONVERSATION).startswith("<start_of_turn>user")
    assert template_for("qwen2", None).source == fallback_template("qwen2")


# -- inputs --------------------------------------------------------------------------------------


class _StructMessage(msgspec.Struct):
    role: str
    content: str


@dataclasses.dataclass
class _DataMessage:
    role: str
    content: str


@pytest.mark.parametrize(
    "make",
    [
        lambda r, c: {"role": r, "content": c},
        lambda r, c: SimpleNamespace(role=r, content=c),
        _StructMessage,
        _DataMessage,
    ],
    ids=["dict", "object", "msgspec", "dataclass"],
)
def test_message_kinds(make: object) -> None:
    messages = [make(m["role"], m["content"]) for m in CONVERSATION]  # type: ignore[operator]
    assert template_for("gemma3", None).render(messages) == template_for("gemma3", None).render(
        CONVERSATION
    )


def test_objects_reach_the_template_as_plain_data() -> None:
    # Only role/content of an arbitrary object are passed: its methods are not reachable.
    class Message:
        role = "user"
        content = "hi"

        def secret(self) -> str:
            return "leaked"

    t = ChatTemplate("{{ messages[0].secret }}|{{ messages[0]['role'] }}")
    assert t.render([Message()]) == "|user"


# -- HF-style features ---------------------------------------------------------------------------

HF_STYLE = """\
{{ bos_token }}{% for message in messages %}
{% if message['role'] not in ['user', 'assistant'] %}
{{ raise_exception('Conversation roles must be user or assistant, got ' + message['role']) }}
{% endif %}
[{{ message['role'] }}] {{ message['content'] }}{{ eos_token if message['role'] == 'assistant' }}
{% endfor %}
{% if add_generation_prompt %}[assistant] {% endif %}"""


def test_hf_style_template_renders() -> None:
    t = ChatTemplate(HF_STYLE, bos_token="<s>", eos_token="</s>")
    prompt = t.render(CONVERSATION[1:])
    assert prompt == "<s>[user] Hi!\n[assistant] Hello.</s>\n[user] What is 2+2?\n[assistant] "


def test_raise_exception_becomes_template_error() -> None:
    t = ChatTemplate(HF_STYLE)
    with pytest.raises(TemplateError, match="roles must be user or assistant, got system"):
        t.render(CONVERSATION)


def test_leading_bos_stripped_when_tokenizer_adds_it() -> None:
    t = template_for("x", HF_STYLE, bos_token="<s>", tokenizer_adds_bos=True)
    assert t.render(CONVERSATION[1:2]) == "[user] Hi!\n[assistant] "


def test_tojson_strftime_tools_and_loopcontrols() -> None:
    t = ChatTemplate(
        "{{ tools | tojson }}|{{ {'k': 'é'} | tojson(indent=2) }}|{{ strftime_now('%Y') }}|"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}"
        "{% endfor %}|{% generation %}gen{% endgeneration %}"
    )
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    out = t.render(CONVERSATION, tools=tools).split("|")
    assert out[0] == '[{"type": "function", "function": {"name": "f", "parameters": {}}}]'
    assert out[1] == '{\n  "k": "é"\n}'  # ensure_ascii=False, like HF
    assert out[2] == str(time.localtime().tm_year)
    assert out[3] == "system"
    assert out[4] == "gen"


def test_tools_default_to_none() -> None:
    assert ChatTemplate("{{ tools is none }}").render(CONVERSATION) == "True"


def test_undefined_use_is_template_error() -> None:
    with pytest.raises(TemplateError, match="undefined"):
        ChatTemplate("{{ messages[9].content }}").render(CONVERSATION)
    with pytest.raises(TemplateError, match="line 2"):
        ChatTemplate("ok\n{{ nothing.here }}").render(CONVERSATION)


def test_syntax_error_at_construction() -> None:
    with pytest.raises(TemplateError, match="syntax error at line 2"):
        ChatTemplate("fine\n{% for m in messages %}{{ m }")
    with pytest.raises(TemplateError):
        template_for("gemma3", "{% if %}")


def test_template_error_is_value_error() -> None:
    assert issubclass(TemplateError, ValueError)


# -- sandbox -------------------------------------------------------------------------------------

HOSTILE = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__['os'] }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ raise_exception.__globals__ }}",
    "{{ strftime_now.__globals__ }}",
    "{{ range.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ messages.__class__.__base__ }}",
    "{{ messages['__class__'] }}",
    "{{ (messages|attr('__class__')) }}",
    "{{ ''.format.__globals__ }}",
    "{{ '{0.__class__.__mro__}'.format('') }}",
    "{% set x = [].append(1) %}",
    "{% set d = {} %}{{ d.update({'a': 1}) }}",
    "{{ messages.pop() }}",
    "{{ messages[0].clear() }}",
    "{{ lipsum(10**9) }}",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_templates_are_refused(source: str) -> None:
    t = ChatTemplate(source)
    with pytest.raises(TemplateError) as info:
        t.render(CONVERSATION)
    message = str(info.value)
    # Nothing from the interpreter leaks into the error.
    for leak in ("<class", "<function", "<module", "builtins", "os.path", "subprocess"):
        assert leak not in message


def test_mutation_attempt_does_not_change_the_callers_messages() -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(TemplateError):
        ChatTemplate("{{ messages[0].update({'role': 'x'}) }}").render(messages)
    assert messages == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "source",
    [
        "{% for i in range(10**9) %}xxxxxxxx{% endfor %}",  # over the sandbox's MAX_RANGE
        "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxx{% endfor %}{% endfor %}",
        "{{ 'x' * 10**10 }}",
        "{{ [0] * 10**9 }}",
        "{{ 2 ** (10**8) }}",  # (Jinja's ** is left-associative)
        "{{ 'x' | center(10**10) }}",
        "{{ [1] | batch(10**9, 0) | list }}",
        "{{ {'a': 1} | tojson(indent=10**9) }}",
        (
            "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
            "{% endfor %}{{ ns.s }}"
        ),
    ],
)
def test_resource_hogs_fail_fast(source: str) -> None:
    t = ChatTemplate(source)
    started = time.monotonic()
    with pytest.raises(TemplateError):
        t.render(CONVERSATION)
    assert time.monotonic() - started < 5


def test_output_size_guard() -> None:
    t = ChatTemplate("{% for m in messages %}{{ m.content }}{% endfor %}", max_output_chars=10)
    assert t.render([{"role": "user", "content": "x" * 10}]) == "x" * 10
    with pytest.raises(TemplateError, match="exceeds 10 characters"):
        t.render([{"role": "user", "content": "x" * 11}])


def test_time_guard_stops_silent_loops() -> None:
    # Produces no output at all, so only the deadline can stop it.
    t = ChatTemplate(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        timeout_s=0.2,
    )
    started = time.monotonic()
    with pytest.raises(TemplateError, match="longer than"):
        t.render(CONVERSATION)
    assert time.monotonic() - started < 5


def test_sandbox_survives_a_refusal() -> None:
    t = template_for("gemma3", None)
    with pytest.raises(TemplateError):
        ChatTemplate("{{ ''.__class__ }}").render(CONVERSATION)
    assert t.render(CONVERSATION).endswith("<start_of_turn>model\n")


# ---- assistant prefill: a last assistant message is continued, not answered ----------------

PREFILL = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Bl"}]


def test_prefill_continues_the_message_with_the_tiny_models_template() -> None:
    from hearth.tools.cli.tiny_model import TINY_CHAT_TEMPLATE

    t = ChatTemplate(TINY_CHAT_TEMPLATE)
    assert t.render(PREFILL, continue_assistant=True) == (
        "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\nBl")


def test_prefill_with_chatml_and_gemma_fallbacks() -> None:
    assert template_for("llama", None).render(PREFILL, continue_assistant=True) == (
        "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\nBl")
    assert template_for("gemma3", None).render(PREFILL, continue_assistant=True) == (
        "<start_of_turn>user\nName a colour.<end_of_turn>\n<start_of_turn>model\nBl")


def test_prefill_keeps_the_text_verbatim_and_joins_text_parts() -> None:
    t = template_for("llama", None)
    msgs = [PREFILL[0], {"role": "assistant", "content": [
        {"type": "text", "text": " A"}, {"type": "text", "text": "B "}]}]
    assert t.render(msgs, continue_assistant=True).endswith("<|im_start|>assistant\n A\nB ")


def test_empty_prefill_is_a_plain_generation_prompt() -> None:
    t = template_for("llama", None)
    empty = [PREFILL[0], {"role": "assistant", "content": None}]
    assert t.render(empty, continue_assistant=True) == t.render(PREFILL[:1])


def test_without_continue_assistant_the_last_assistant_turn_is_closed() -> None:
    t = template_for("llama", None)
    assert t.render(PREFILL).endswith("Bl<|im_end|>\n<|im_start|>assistant\n")


def test_prefill_only_applies_to_a_last_assistant_message() -> None:
    t = template_for("llama", None)
    assert t.render(PREFILL[:1], continue_assistant=True) == t.render(PREFILL[:1])
