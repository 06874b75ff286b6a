"""Chat-template rendering: OpenAI ``messages`` -> one prompt string.

Templates are Jinja2 sources, usually the GGUF's ``tokenizer.chat_template`` written for Hugging
Face's ``apply_chat_template``. They come from downloaded files, so they are untrusted code:

* they are compiled once, in an :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` (never a
  plain Environment), which blocks ``_``-prefixed and interpreter-internal attributes and the
  methods that mutate lists, dicts and sets;
* an unsafe attribute access raises at once (Jinja's default would render it as an empty string);
* the template only ever sees plain builtins (dicts, lists, str, numbers), never our objects;
* a render is bounded: output size, sequence sizes built by ``*`` / ``+`` / ``**`` and a few
  filters, and wall-clock time (checked on every attribute access, call, operator and ``range``
  step), so a looping template fails fast instead of eating the process.

Every failure (syntax at construction; security violation, undefined value, ``raise_exception``
or any other exception while rendering) surfaces as :class:`TemplateError`, a ``ValueError`` the
api maps to a 400 on ``messages``.

BOS: our fallback templates never emit ``<bos>``. The worker tokenizes the prompt with
``add_special`` following the model's ``tokenizer.ggml.add_bos_token`` (gemma-3-270m: true), so a
template-emitted BOS would be doubled. Many GGUF templates do start with ``{{ bos_token }}``; for
those, build the :class:`ChatTemplate` with ``tokenizer_adds_bos=True`` and one leading BOS string
is stripped from the rendered prompt (what llama.cpp's own chat code does).

Thread-safety: a ChatTemplate is immutable after construction; ``render`` may be called from any
thread or task concurrently (per-render limits live in a ContextVar).
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import msgspec
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "MAX_OUTPUT_CHARS",
    "RENDER_TIMEOUT_S",
    "ChatTemplate",
    "TemplateError",
    "fallback_template",
    "template_for",
]

#: A rendered prompt larger than this is refused (no real context window comes near it).
MAX_OUTPUT_CHARS = 16 * 1024 * 1024
#: Wall-clock bound on one render. Real templates render in well under a millisecond per message.
RENDER_TIMEOUT_S = 5.0
#: Biggest list a template may build with ``*`` / ``+`` / ``batch``.
_MAX_SEQUENCE_ITEMS = 1 << 20
#: Biggest exponent for integer ``**`` (beyond this Python spends unbounded time on big ints).
_MAX_INT_EXPONENT = 4096
#: ``range`` checks the deadline once per this many steps.
_RANGE_CHECK_EVERY = 1024


class TemplateError(ValueError):
    """A chat template could not be compiled, or refused / failed to render the messages."""


class _RaisedByTemplate(Exception):
    """``raise_exception(msg)`` called by the template itself (e.g. roles must alternate)."""


# --------------------------------------------------------------------------------------------
# Per-render limits


class _RenderGuard:
    __slots__ = ("deadline", "max_chars", "timeout_s")

    def __init__(self, timeout_s: float, max_chars: int) -> None:
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.max_chars = max_chars

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(f"rendering took longer than {self.timeout_s:g} s")


_guard: contextvars.ContextVar[_RenderGuard | None] = contextvars.ContextVar(
    "hearth_template_guard", default=None
)


def _check_time() -> None:
    guard = _guard.get()
    if guard is not None:
        guard.check_time()


def _max_chars() -> int:
    guard = _guard.get()
    return guard.max_chars if guard is not None else MAX_OUTPUT_CHARS


class _GuardedRange(Sequence[int]):
    """``range`` for templates: the sandbox's MAX_RANGE cap, plus deadline checks while iterating
    (nested ranges multiply, and each is individually under the cap)."""

    __slots__ = ("_range",)

    def __init__(self, *args: int) -> None:
        self._range = jinja2.sandbox.safe_range(*args)

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, index: Any) -> Any:
        return self._range[index]

    def __iter__(self) -> Iterator[int]:
        return self._guarded(iter(self._range))

    def __reversed__(self) -> Iterator[int]:
        return self._guarded(reversed(self._range))

    def __contains__(self, value: object) -> bool:
        return value in self._range

    def __repr__(self) -> str:
        return repr(self._range)

    @staticmethod
    def _guarded(it: Iterator[int]) -> Iterator[int]:
        for n, value in enumerate(it):
            if n % _RANGE_CHECK_EVERY == 0:
                _check_time()
            yield value


def _guarded_range(*args: int) -> _GuardedRange:
    # A function, not the class itself: a class would expose class-level machinery
    # (``range['x']`` is a typing alias) to templates.
    return _GuardedRange(*args)


def _check_len(n: int, what: str, limit: int) -> None:
    if n > limit:
        raise SecurityError(f"{what} of {n} items exceeds the template limit ({limit})")


def _limit_for(value: Any) -> int:
    return _max_chars() if isinstance(value, str) else _MAX_SEQUENCE_ITEMS


# --------------------------------------------------------------------------------------------
# Environment


class _GenerationTag(Extension):
    """``{% generation %}…{% endgeneration %}``: HF's marker for assistant-token masks; we only
    need the body rendered."""

    tags = {"generation"}

    def parse(self, parser: Any) -> list[nodes.Node]:
        next(parser.stream)
        body: list[nodes.Node] = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return body


class _Sandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment that raises on unsafe access and enforces render limits."""

    intercepted_binops = frozenset({"*", "+", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> NoReturn:
        # Jinja returns an Undefined here, which prints as "" - a probe would fail silently and
        # the template author would get no error. Refuse loudly instead.
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def getattr(self, obj: Any, attribute: str) -> Any:
        _check_time()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _check_time()
        return super().getitem(obj, argument)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _check_time()
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        _check_time()
        if operator_ == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                    _check_len(len(seq) * max(count, 0), "a repeated sequence", _limit_for(seq))
        elif operator_ == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                _check_len(len(left) + len(right), "a concatenation", _limit_for(left))
        elif (
            operator_ == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right > _MAX_INT_EXPONENT
        ):
            raise SecurityError(f"integer exponent {right} is too large")
        return self.binop_table[operator_](left, right)


def _raise_exception(message: Any) -> NoReturn:
    raise _RaisedByTemplate(str(message))


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(str(fmt))


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # HF's tojson: plain json.dumps (no HTML escaping, unicode kept), with its options exposed.
    if (isinstance(indent, int) and indent > 64) or (isinstance(indent, str) and len(indent) > 64):
        raise SecurityError("tojson indent is too large")
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _width_capped(name: str, filt: Any, position: int, keyword: str) -> Any:
    """Wrap a builtin filter whose numeric argument sets the size of what it builds."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        width = kwargs.get(keyword, args[position] if len(args) > position else None)
        if isinstance(width, int) and width > _MAX_SEQUENCE_ITEMS:
            raise SecurityError(f"{name}({width}) is too large")
        return filt(*args, **kwargs)

    wrapper.__name__ = name
    return wrapper


def _new_environment() -> _Sandbox:
    env = _Sandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols", _GenerationTag],
    )
    env.globals["range"] = _guarded_range
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    # lipsum(n=10**9) is a free denial of service, and no chat template uses it.
    env.globals.pop("lipsum", None)
    env.filters["tojson"] = _tojson
    # (filter, index of the size argument counting the value, its keyword)
    for name, position, keyword in (
        ("center", 1, "width"),
        ("indent", 1, "width"),
        ("batch", 1, "linecount"),
    ):
        env.filters[name] = _width_capped(name, env.filters[name], position, keyword)
    return env


# --------------------------------------------------------------------------------------------
# Inputs: only plain builtins reach the template.

_MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content")


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, msgspec.Struct):
        return msgspec.to_builtins(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    raise TypeError(f"cannot pass a {type(value).__name__} to a chat template")


def _plain_message(message: Any) -> dict[str, Any]:
    if isinstance(message, (Mapping, msgspec.Struct)) or dataclasses.is_dataclass(message):
        out = _plain(message)
    else:
        out = {f: _plain(getattr(message, f)) for f in _MESSAGE_FIELDS if hasattr(message, f)}
    if not isinstance(out, dict) or "role" not in out:
        raise TemplateError("every message needs a role")
    # Absent and null look the same to templates written for JSON requests (`is defined` checks),
    # except content, which may legitimately be null (assistant tool calls).
    return {k: v for k, v in out.items() if v is not None or k == "content"}


def _content_text(content: Any) -> str:
    """A message's content as text: a string, null, or a list of parts (text parts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content
                         if isinstance(p, dict) and p.get("type") == "text")
    raise TemplateError("a message's content must be a string, null or a list of parts")


# --------------------------------------------------------------------------------------------


def _template_line(exc: BaseException) -> int | None:
    """Line of the template where a render error happened (Jinja rewrites tracebacks so that
    template frames carry template line numbers)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class ChatTemplate:
    """A compiled chat template. Construct once per model; ``render`` per request."""

    def __init__(
        self,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        tokenizer_adds_bos: bool = False,
        max_output_chars: int = MAX_OUTPUT_CHARS,
        timeout_s: float = RENDER_TIMEOUT_S,
    ) -> None:
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.tokenizer_adds_bos = tokenizer_adds_bos
        self.max_output_chars = max_output_chars
        self.timeout_s = timeout_s
        try:
            self._template = _new_environment().from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"chat template syntax error at line {exc.lineno}: {exc.message}"
            ) from None
        except Exception as exc:
            raise TemplateError(f"chat template does not compile: {exc}") from None

    def render(
        self,
        messages: Sequence[Any],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Any] | None = None,
        extra_context: Mapping[str, Any] | None = None,
        continue_assistant: bool = False,
    ) -> str:
        """Render ``messages`` (dicts, msgspec Structs, dataclasses or any objects with ``.role``
        and ``.content``) into the prompt string. ``extra_context`` is for template switches such
        as ``enable_thinking`` and cannot override the standard variables.

        ``continue_assistant`` (assistant prefill): when the last message is the assistant's,
        the model continues that message instead of starting a new turn — the messages before it
        are rendered with the generation prompt (the assistant's header) and its text is
        appended verbatim, with no end-of-turn after it. That is the convention of llama.cpp's
        server and Ollama, and it works whatever the template's turn markers are.

        Raises TemplateError; never anything else for a bad template or bad messages."""
        try:
            plain = [_plain_message(m) for m in messages]
        except TypeError as exc:
            raise TemplateError(str(exc)) from None
        prefill = ""
        if continue_assistant and plain and plain[-1]["role"] == "assistant":
            prefill = _content_text(plain.pop()["content"])
            add_generation_prompt = True
        try:
            context: dict[str, Any] = dict(_plain(dict(extra_context or {})))
            context.update(
                messages=plain,
                tools=_plain(list(tools)) if tools is not None else None,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except TypeError as exc:
            raise TemplateError(str(exc)) from None

        token = _guard.set(_RenderGuard(self.timeout_s, self.max_output_chars))
        try:
            prompt = self._render_bounded(context)
        finally:
            _guard.reset(token)

        prompt += prefill
        if self.tokenizer_adds_bos and self.bos_token and prompt.startswith(self.bos_token):
            prompt = prompt[len(self.bos_token) :]
        return prompt

    def _render_bounded(self, context: dict[str, Any]) -> str:
        chunks: list[str] = []
        size = 0
        try:
            for chunk in self._template.generate(context):
                size += len(chunk)
                if size > self.max_output_chars:
                    raise SecurityError(
                        f"rendered prompt exceeds {self.max_output_chars} characters"
                    )
                chunks.append(chunk)
        except _RaisedByTemplate as exc:
            raise TemplateError(f"chat template rejected the messages: {exc}") from None
        except SecurityError as exc:
            raise TemplateError(f"chat template refused: {exc}") from None
        except RecursionError:
            raise TemplateError("chat template error: recursion too deep") from None
        except Exception as exc:
            line = _template_line(exc)
            where = f" at line {line}" if line is not None else ""
            kind = "undefined value" if isinstance(exc, jinja2.UndefinedError) else "error"
            raise TemplateError(f"chat template {kind}{where}: {exc}") from None
        return "".join(chunks)

    def __repr__(self) -> str:
        return f"ChatTemplate({len(self.source)} chars)"


# --------------------------------------------------------------------------------------------
# Fallback templates (our own), for GGUFs that ship none.

# Shared macro: OpenAI content is a string, null, or a list of parts; only text parts render.
_CONTENT_MACRO = r"""{%- macro text(content, strip) -%}
{%- if content is none -%}
{%- elif content is string -%}{{ content | trim if strip else content }}
{%- else -%}
{%- for part in content if part.type == 'text' -%}
{{ (part.text | trim if strip else part.text) + ('' if loop.last else '\n') }}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
"""

# Gemma turn format. No <bos> (the tokenizer adds it). Gemma has no system role: system (and
# developer) text is held and prepended to the next user turn, separated by a blank line; if no
# user turn follows, it is sent as a user turn of its own. Assistant is "model"; tool results and
# any other role are user turns. Content is trimmed, as in Gemma's training format.
_GEMMA = (
    _CONTENT_MACRO
    + r"""{%- set ns = namespace(system='') -%}
{%- for message in messages -%}
{%- set body = text(message.content, true) -%}
{%- if message.role in ('system', 'developer') -%}
{%- if body -%}{%- set ns.system = ns.system + ('\n\n' if ns.system else '') + body -%}{%- endif -%}
{%- elif message.role in ('assistant', 'model') -%}
{{ '<start_of_turn>model\n' + body + '<end_of_turn>\n' }}
{%- else -%}
{{ '<start_of_turn>user\n' + (ns.system + '\n\n' if ns.system else '') + body + '<end_of_turn>\n' }}
{%- set ns.system = '' -%}
{%- endif -%}
{%- endfor -%}
{%- if ns.system -%}{{ '<start_of_turn>user\n' + ns.system + '<end_of_turn>\n' }}{%- endif -%}
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}
"""
)

# ChatML, the most widely understood turn format. Content verbatim; "developer" is "system".
_CHATML = (
    _CONTENT_MACRO
    + r"""{%- for message in messages -%}
{{ '<|im_start|>' + ('system' if message.role == 'developer' else message.role) + '\n'
   + text(message.content, false) + '<|im_end|>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\n' }}{%- endif -%}
"""
)

_FALLBACKS = {"gemma": _GEMMA, "gemma2": _GEMMA, "gemma3": _GEMMA}


def fallback_template(architecture: str) -> str:
    """Our template source for a GGUF ``general.architecture`` that ships no chat template:
    Gemma's turn format for the gemma family, ChatML otherwise."""
    return _FALLBACKS.get(architecture.lower(), _CHATML)


def template_for(
    architecture: str,
    gguf_template: str | None,
    override: str | None = None,
    bos_token: str = "",
    eos_token: str = "",
    *,
    tokenizer_adds_bos: bool = False,
) -> ChatTemplate:
    """The template to use for a model: the configured override, else the GGUF's own, else our
    fallback for its architecture. Raises TemplateError if the chosen source does not compile."""
    if override:
        source = override
    elif gguf_template:
        source = gguf_template
    else:
        source = fallback_template(architecture)
    return ChatTemplate(
        source, bos_token=bos_token, eos_token=eos_token, tokenizer_adds_bos=tokenizer_adds_bos
    )
