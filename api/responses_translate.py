"""The Responses API as a translation into chat: a request's ``input`` items (and the stored
conversation ``previous_response_id`` continues) become a
:class:`~hearth.api.openai_types.ChatCompletionRequest`, so that one engine path, one queue,
one set of limits and every one of chat's 400s serve both APIs; a chat 400 is re-labelled with
the Responses field it came from (:meth:`Translated.relabel`).

Item → message (OpenAI's documented correspondence between the two APIs):

* ``instructions`` → a ``system`` message first;
* ``message`` → a message of its role (``developer`` is chat's ``developer``), its
  ``input_text`` / ``output_text`` parts joined by newlines, as chat joins text parts;
* ``function_call`` → a call in an ``assistant`` message's ``tool_calls`` (calls in a row, and
  a call right after an assistant message, join that message, as chat carries them);
* ``function_call_output`` → a ``tool`` message answering ``call_id``;
* ``reasoning`` → the ``reasoning_content`` of the assistant message after it (its
  ``reasoning_text`` parts joined by newlines): the chat template decides whether the model
  sees it again (Qwen 3's shows it inside a tool loop only; templates of models that do not
  think never read it).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from hearth.api import openai_types as ot
from hearth.api import responses_types as rt
from hearth.scheduler.errors import HearthError, InvalidRequest

ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text")

# A new item id: prefix + 24 hex digits (OpenAI's ids are opaque strings with such prefixes).
NewId = Callable[[str], str]


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _text(parts: str | list[rt.ContentPartIn] | None, where: str) -> str:
    """The text of an item's ``content`` or ``output``: a string, or text parts joined by
    newlines (InvalidRequest naming a part of another kind)."""
    if parts is None:
        return ""
    if isinstance(parts, str):
        return parts
    texts = []
    for j, part in enumerate(parts):
        if part.type not in TEXT_PARTS:
            raise InvalidRequest(f"Content parts of type '{part.type}' are not supported by this "
                                 f"server ({where}[{j}]); send input_text parts.",
                                 param=f"{where}[{j}].type")
        if part.text is None:
            raise InvalidRequest(f"{where}[{j}] has no 'text'.", param=f"{where}[{j}].text")
        texts.append(part.text)
    return "\n".join(texts)


def _required(value: str | None, where: str) -> str:
    if value is None:
        raise InvalidRequest(f"'{where}' is required.", param=where)
    return value


def input_items(req: rt.ResponsesRequest, make_id: NewId = new_id) -> list[rt.Item]:
    """The request's ``input`` as items, each with an id (its own, else a new one), as a stored
    response lists them (InvalidRequest naming ``input[i]…`` for a kind hearth does not serve).
    A string is one user message."""
    if req.input is None:
        return []
    if isinstance(req.input, str):
        return [rt.MessageItem(make_id("msg"), "user", [rt.InputTextPart(req.input)])]
    out: list[rt.Item] = []
    for i, item in enumerate(req.input):
        where = f"input[{i}]"
        if item.type == "message":
            role = _required(item.role, f"{where}.role")
            if role not in ROLES:
                raise InvalidRequest(f"Invalid role '{role}' in {where}; expected one of "
                                     f"{', '.join(ROLES)}.", param=f"{where}.role")
            text = _text(item.content, f"{where}.content")
            part: rt.InputTextPart | rt.OutputTextPart = (
                rt.OutputTextPart(text) if role == "assistant" else rt.InputTextPart(text))
            out.append(rt.MessageItem(item.id or make_id("msg"), role,  # type: ignore[arg-type]
                                      [part]))
        elif item.type == "function_call":
            out.append(rt.FunctionCallItem(
                item.id or make_id("fc"), _required(item.call_id, f"{where}.call_id"),
                _required(item.name, f"{where}.name"),
                _required(item.arguments, f"{where}.arguments")))
        elif item.type == "function_call_output":
            out.append(rt.FunctionCallOutputItem(
                item.id or make_id("fco"), _required(item.call_id, f"{where}.call_id"),
                _text(item.output, f"{where}.output")))
        elif item.type == "reasoning":
            texts = item.content if isinstance(item.content, list) else []
            out.append(rt.ReasoningItem(item.id or make_id("rs"), [], [
                rt.ReasoningTextPart(p.text or "") for p in texts]))
        else:
            raise InvalidRequest(f"Input items of type '{item.type}' are not supported by this "
                                 f"server ({where}); send message, function_call or "
                                 "function_call_output items.", param=f"{where}.type")
    return out


@dataclass
class _Origin:
    """Where one chat message came from: the item's field path, and its calls' paths."""

    where: str
    calls: list[str] = field(default_factory=list)
    output: bool = False  # a tool message: chat's ``content`` is the item's ``output``


def _messages(items: list[tuple[rt.Item, str]]) -> tuple[list[ot.Message], list[_Origin]]:
    messages: list[ot.Message] = []
    origins: list[_Origin] = []
    joinable = False  # the last message is an assistant's that a function_call may join
    thinking: str | None = None  # a reasoning item's text, for the assistant message after it
    for item, where in items:
        if isinstance(item, rt.MessageItem):
            text = "\n".join(p.text for p in item.content)
            messages.append(ot.Message(item.role, text))
            origins.append(_Origin(where))
            joinable = item.role == "assistant"
            if joinable:
                messages[-1].reasoning_content, thinking = thinking, None
        elif isinstance(item, rt.FunctionCallItem):
            call = ot.ToolCallIn(item.call_id, ot.FunctionCall(item.name, item.arguments))
            if joinable:
                last = messages[-1]
                last.tool_calls = [*(last.tool_calls or []), call]
                origins[-1].calls.append(where)
            else:
                messages.append(ot.Message("assistant", None, tool_calls=[call],
                                           reasoning_content=thinking))
                origins.append(_Origin(where, [where]))
                joinable, thinking = True, None
        elif isinstance(item, rt.FunctionCallOutputItem):
            messages.append(ot.Message("tool", item.output, tool_call_id=item.call_id))
            origins.append(_Origin(where, output=True))
            joinable = False
        elif isinstance(item, rt.ReasoningItem):
            text = "\n".join(p.text for p in item.content)
            thinking = text if thinking is None else f"{thinking}\n{text}"
            joinable = False  # a call after it starts the turn it thought about
    return messages, origins


def _tools(req: rt.ResponsesRequest) -> list[ot.Tool] | None:
    if req.tools is None:
        return None
    out = []
    for i, tool in enumerate(req.tools):
        if tool.type != "function":
            raise InvalidRequest(f"Tools of type '{tool.type}' are not supported by this server "
                                 f"(tools[{i}]); send function tools.", param=f"tools[{i}].type")
        for name, asked in (("defer_loading", tool.defer_loading),
                            ("allowed_callers", tool.allowed_callers),
                            ("output_schema", tool.output_schema)):
            if asked not in (None, False):  # (these change which tools the model sees, or how)
                raise InvalidRequest(f"tools[{i}].{name} is not supported by this server.",
                                     param=f"tools[{i}].{name}")
        out.append(ot.Tool("function", ot.FunctionDefinition(
            _required(tool.name, f"tools[{i}].name"), tool.description, tool.parameters,
            tool.strict)))
    return out


def _tool_choice(choice: rt.ToolChoiceIn | None) -> ot.ToolChoice | None:
    if not isinstance(choice, rt.NamedFunctionChoice):
        return choice
    if choice.type != "function":
        raise InvalidRequest(f"tool_choice of type '{choice.type}' is not supported by this "
                             "server: send none, auto, required or a function.",
                             param="tool_choice")
    name = _required(choice.name, "tool_choice.name")
    return ot.NamedToolChoice("function", ot.NamedFunction(name))


def _response_format(text: rt.TextConfig | None) -> ot.ResponseFormat | None:
    if text is None:
        return None
    if text.verbosity not in (None, "medium"):
        raise InvalidRequest("'text.verbosity' is not supported by this server.",
                             param="text.verbosity")
    fmt = text.format
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ot.ResponseFormatJSONObject()
    name = _required(fmt.name, "text.format.name")
    # required by the Responses API (the SDK's ResponseFormatTextJSONSchemaConfig), unlike
    # chat's json_schema, where a missing schema allows any JSON object
    if fmt.schema is None:
        raise InvalidRequest("'text.format.schema' is required.", param="text.format.schema")
    return ot.ResponseFormatJSONSchema(ot.JSONSchemaFormat(name, fmt.schema, fmt.strict,
                                                           fmt.description))


@dataclass
class Translated:
    """A Responses request as chat: the chat request, and where each of its messages came from
    (to name the Responses field in a 400 that chat raises)."""

    chat: ot.ChatCompletionRequest
    origins: list[_Origin]

    _TOP = {"response_format": "text.format", "max_completion_tokens": "max_output_tokens",
            "max_tokens": "max_output_tokens", "messages": "input"}

    def param(self, param: str | None) -> str | None:
        """Chat's ``param`` as the Responses field it came from: ``messages[2].content`` →
        ``input[1].content``, ``tools[0].function.parameters`` → ``tools[0].parameters``,
        ``response_format`` → ``text.format``."""
        if param is None:
            return None
        if param in self._TOP:
            return self._TOP[param]
        m = re.fullmatch(r"tools\[(\d+)\]\.function(.*)", param)
        if m:
            return f"tools[{m.group(1)}]{m.group(2)}"
        m = re.fullmatch(r"messages\[(\d+)\](.*)", param)
        if not m or int(m.group(1)) >= len(self.origins):
            return param
        origin, rest = self.origins[int(m.group(1))], m.group(2)
        if origin.where in ("instructions", "previous_response_id", "input"):
            return origin.where
        calls = re.fullmatch(r"\.tool_calls\[(\d+)\].*", rest)
        if calls and int(calls.group(1)) < len(origin.calls):
            return origin.calls[int(calls.group(1))]
        if rest == ".tool_call_id":
            return f"{origin.where}.call_id"
        if rest.startswith(".content") and origin.output:
            return f"{origin.where}.output{rest.removeprefix('.content')}"
        if rest.startswith((".content", ".role")):
            return f"{origin.where}{rest}"
        return origin.where

    def relabel(self, exc: HearthError) -> HearthError:
        """``exc`` (chat's) naming the Responses field, in ``param`` and in its message."""
        new = self.param(exc.param)
        if exc.param is not None and new != exc.param:
            exc.message = exc.message.replace(exc.param, str(new))
            exc.args = (exc.message,)
            exc.param = new
        return exc


def to_chat(req: rt.ResponsesRequest, items: list[rt.Item],
            history: list[rt.Item]) -> Translated:
    """The chat request for ``req`` whose input is ``items`` (:func:`input_items`), after the
    stored conversation ``history`` (a previous response's input and output; [] without
    ``previous_response_id``). InvalidRequest for what chat has no field for (other tool
    types, ``truncation: auto``…)."""
    if req.truncation == "auto":
        raise InvalidRequest("'truncation: auto' is not supported by this server: an input "
                             "that does not fit the context is a 400.", param="truncation")
    tagged: list[tuple[rt.Item, str]] = [(h, "previous_response_id") for h in history]
    whole = isinstance(req.input, str)  # one user message: its faults are the input's
    tagged += [(item, "input" if whole else f"input[{i}]") for i, item in enumerate(items)]
    messages, origins = _messages(tagged)
    if req.instructions is not None:
        messages.insert(0, ot.Message("system", req.instructions))
        origins.insert(0, _Origin("instructions"))
    chat = ot.ChatCompletionRequest(
        model=req.model, messages=messages, max_completion_tokens=req.max_output_tokens,
        temperature=req.temperature, top_p=req.top_p, tools=_tools(req),
        tool_choice=_tool_choice(req.tool_choice), parallel_tool_calls=req.parallel_tool_calls,
        response_format=_response_format(req.text), user=req.user)
    return Translated(chat, origins)
