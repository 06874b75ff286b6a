"""Anthropic's Messages request translated into a chat request, so that it runs the one chat road
(api/handlers/chat_jobs.py): the same queue, limits, tools, grammars and 400s.

What becomes what (source of the Messages side: the official ``anthropic`` SDK's types):

* ``system`` (a string or text blocks, joined by newlines) → a first ``system`` message;
* a message's ``content`` string or ``text`` blocks → its text (blocks joined by newlines);
* an assistant's ``tool_use`` blocks → its ``tool_calls`` (``input`` → the arguments' JSON);
* a user's ``tool_result`` blocks → ``tool`` messages answering ``tool_use_id``, in order, with
  the text before, between or after them as user messages; ``is_error: true`` prefixes the
  result with ``Error: `` (chat has no such flag, and the model should know);
* an assistant's ``thinking`` blocks → its ``reasoning_content`` (joined by newlines; the chat
  template decides whether the model sees it again — Qwen 3's does inside a tool loop, where
  Anthropic's SDKs send them back); ``redacted_thinking`` → dropped (nothing to read);
* any other block (``image``, ``document``, ``search_result``…) → a 400 naming it;
* ``tools`` ``{name, description, input_schema}`` → functions; ``tool_choice`` ``auto`` /
  ``any`` / ``tool`` / ``none`` → ``auto`` / ``required`` / the named function / ``none``;
  ``disable_parallel_tool_use`` → ``parallel_tool_calls: false``;
* ``stop_sequences`` → ``stop``; ``max_tokens``, ``temperature``, ``top_p``, ``top_k`` as they
  are; ``metadata.user_id`` → ``user``; ``output_config.format`` → ``response_format``.

A 400 raised on the chat request names a chat field; :meth:`Translated.param` says which field
of the Messages request it came from (``messages[3].tool_call_id`` →
``messages[1].content[0].tool_use_id``), and the rules whose chat wording would mislead (tool
names and schemas, tool_choice, a tool_result's call, stop sequences or an output format with
tools) are checked here first, in Messages' terms.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from hearth.api import openai_types as oa
from hearth.api.anthropic_types import (
    BLOCK_KINDS,
    MAX_STOP_SEQUENCES,
    Block,
    CountTokensRequest,
    MessagesRequest,
    SystemBlock,
    ToolChoiceParam,
    ToolParam,
)
from hearth.scheduler.errors import InvalidRequest

_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # chat's rule for a function name
_CHAT_MESSAGE = re.compile(r"^messages\[(\d+)\](.*)$")
_CHAT_CALL = re.compile(r"^\.tool_calls\[(\d+)\](.*)$")
_CHAT_TOOL = re.compile(r"^tools\[(\d+)\](?:\.function)?(\.name|\.parameters|\.type)?(.*)$")
_PLAIN = {"stop": "stop_sequences", "response_format": "output_config.format",
          "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
          "tools": "tools", "tool_choice": "tool_choice", "tool_choice.type": "tool_choice.type",
          "messages": "messages", "max_tokens": "max_tokens", "temperature": "temperature",
          "top_p": "top_p", "top_k": "top_k", "model": "model"}


@dataclass
class Source:
    """Where one chat message came from in the Messages request: ``path`` (``system``,
    ``messages[2]``, ``messages[2].content[1]``) and, for an assistant's calls, each call's
    block path."""

    path: str
    calls: list[str] = field(default_factory=list)
    tool_result: bool = False


@dataclass
class Translated:
    chat: oa.ChatCompletionRequest
    sources: list[Source]

    def param(self, chat_param: str | None) -> str | None:
        """The Messages field a chat request's ``param`` stands for (unchanged when unknown)."""
        if chat_param is None:
            return None
        m = _CHAT_MESSAGE.match(chat_param)
        if m and int(m.group(1)) < len(self.sources):
            src, rest = self.sources[int(m.group(1))], m.group(2)
            call = _CHAT_CALL.match(rest)
            if call and int(call.group(1)) < len(src.calls):
                return src.calls[int(call.group(1))] + _call_field(call.group(2))
            if src.tool_result and rest.startswith(".tool_call_id"):
                return src.path + ".tool_use_id"
            if rest.startswith(".content") or not rest or src.path == "system":
                return src.path
            return src.path + rest
        m = _CHAT_TOOL.match(chat_param)
        if m:
            name = {".name": ".name", ".parameters": ".input_schema", ".type": ".type",
                    None: ""}[m.group(2)]
            return f"tools[{m.group(1)}]{name}{m.group(3)}"
        return _PLAIN.get(chat_param, chat_param)


def _call_field(rest: str) -> str:
    return {".function.name": ".name", ".function.arguments": ".input", ".id": ".id"}.get(
        rest, rest)


def _text_of(blocks: str | list[SystemBlock] | None, where: str) -> str:
    if blocks is None or isinstance(blocks, str):
        return blocks or ""
    for j, b in enumerate(blocks):
        if b.type != "text":
            raise InvalidRequest(f"{where}[{j}] is a '{b.type}' block; {where} takes text "
                                 "blocks.", param=f"{where}[{j}].type")
    return "\n".join(b.text for b in blocks)


def _unsupported(kind: str, path: str) -> InvalidRequest:
    return InvalidRequest(f"Content blocks of type '{kind}' are not supported by this server "
                          f"({path}); send text, tool_use and tool_result blocks.",
                          param=f"{path}.type")


def _result_text(block: Block, path: str) -> str:
    content = block.content
    if content is None or isinstance(content, str):
        text = content or ""
    else:
        parts = []
        for k, part in enumerate(content):
            if part.type != "text" or part.text is None:
                raise _unsupported(part.type, f"{path}.content[{k}]")
            parts.append(part.text)
        text = "\n".join(parts)
    return "Error: " + text if block.is_error else text


def _required(value: object, path: str, name: str, kind: str) -> None:
    if value is None:
        raise InvalidRequest(f"{path} is a {kind} block without '{name}'.",
                             param=f"{path}.{name}")


class _Conversation:
    """Builds the chat messages, and where each came from."""

    def __init__(self) -> None:
        self.messages: list[oa.Message] = []
        self.sources: list[Source] = []
        self.call_ids: set[str] = set()

    def add(self, message: oa.Message, source: Source) -> None:
        self.messages.append(message)
        self.sources.append(source)

    def user(self, i: int, blocks: list[Block]) -> None:
        texts: list[str] = []
        first_text = 0

        def flush() -> None:
            if texts:
                self.add(oa.Message("user", "\n".join(texts)),
                         Source(f"messages[{i}].content[{first_text}]"))
                texts.clear()

        for j, b in enumerate(blocks):
            path = f"messages[{i}].content[{j}]"
            if b.type == "text":
                _required(b.text, path, "text", "text")
                _non_empty(b.text, path)
                if not texts:
                    first_text = j
                texts.append(b.text or "")
            elif b.type == "tool_result":
                _required(b.tool_use_id, path, "tool_use_id", "tool_result")
                if b.tool_use_id not in self.call_ids:
                    raise InvalidRequest(f"{path}.tool_use_id '{b.tool_use_id}' answers no "
                                         "tool_use block of an earlier assistant message.",
                                         param=f"{path}.tool_use_id")
                flush()
                self.add(oa.Message("tool", _result_text(b, path), tool_call_id=b.tool_use_id),
                         Source(path, tool_result=True))
            elif b.type in BLOCK_KINDS:
                raise InvalidRequest(f"{path} is a '{b.type}' block in a user message; only an "
                                     "assistant's message may hold it.", param=f"{path}.type")
            else:
                raise _unsupported(b.type, path)
        flush()

    def assistant(self, i: int, blocks: list[Block]) -> None:
        texts: list[str] = []
        thoughts: list[str] = []
        calls: list[oa.ToolCallIn] = []
        source = Source(f"messages[{i}]")
        for j, b in enumerate(blocks):
            path = f"messages[{i}].content[{j}]"
            if b.type == "text":
                _required(b.text, path, "text", "text")
                _non_empty(b.text, path)
                texts.append(b.text or "")
            elif b.type == "tool_use":
                _required(b.id, path, "id", "tool_use")
                _required(b.name, path, "name", "tool_use")
                assert b.id is not None and b.name is not None
                arguments = json.dumps(b.input or {}, ensure_ascii=False)
                calls.append(oa.ToolCallIn(b.id, oa.FunctionCall(b.name, arguments)))
                source.calls.append(path)
                self.call_ids.add(b.id)
            elif b.type == "thinking":
                if b.thinking:
                    thoughts.append(b.thinking)
            elif b.type == "redacted_thinking":
                continue
            elif b.type == "tool_result":
                raise InvalidRequest(f"{path} is a 'tool_result' block in an assistant message; "
                                     "tool results go in a user message.", param=f"{path}.type")
            else:
                raise _unsupported(b.type, path)
        self.add(oa.Message("assistant", "\n".join(texts), tool_calls=calls or None,
                            reasoning_content="\n".join(thoughts) or None), source)


def _non_empty(text: str | None, path: str) -> None:
    if text == "":
        raise InvalidRequest(f"{path} is a text block with empty text; send some text or leave "
                             "the block out.", param=f"{path}.text")


def _tools(tools: list[ToolParam] | None) -> list[oa.Tool] | None:
    if tools is None:
        return None
    out: list[oa.Tool] = []
    seen: set[str] = set()
    for i, t in enumerate(tools):
        if t.type not in (None, "custom"):
            raise InvalidRequest(f"tools[{i}].type '{t.type}' is a server tool, which this "
                                 "server does not run; send client tools (name, description, "
                                 "input_schema).", param=f"tools[{i}].type")
        if not _TOOL_NAME.match(t.name):
            raise InvalidRequest(f"tools[{i}].name must be 1 to 64 letters, digits, underscores "
                                 "or dashes.", param=f"tools[{i}].name")
        if t.name in seen:
            raise InvalidRequest(f"Two tools are named '{t.name}'; tool names must be unique.",
                                 param=f"tools[{i}].name")
        seen.add(t.name)
        if t.input_schema is None:
            raise InvalidRequest(f"tools[{i}] has no 'input_schema'.",
                                 param=f"tools[{i}].input_schema")
        if t.input_schema.get("type") != "object":
            raise InvalidRequest(f"tools[{i}].input_schema must be a JSON Schema of type "
                                 "'object'.", param=f"tools[{i}].input_schema.type")
        out.append(oa.Tool("function", oa.FunctionDefinition(t.name, t.description,
                                                             t.input_schema)))
    return out


def _tool_choice(choice: ToolChoiceParam | None,
                 tools: list[oa.Tool] | None) -> oa.ToolChoice | None:
    if choice is None:
        return None
    if choice.type in ("any", "tool") and not tools:
        raise InvalidRequest(f"tool_choice '{choice.type}' needs at least one tool in 'tools'.",
                             param="tool_choice")
    if choice.type == "auto":
        return "auto"
    if choice.type == "any":
        return "required"
    if choice.type == "none":
        return "none"
    if choice.type == "tool":
        if choice.name is None:
            raise InvalidRequest("tool_choice of type 'tool' needs the tool's 'name'.",
                                 param="tool_choice.name")
        if choice.name not in {t.function.name for t in tools or []}:
            raise InvalidRequest(f"tool_choice names the tool '{choice.name}', which is not in "
                                 "'tools'.", param="tool_choice.name")
        return oa.NamedToolChoice("function", oa.NamedFunction(choice.name))
    raise InvalidRequest(f"tool_choice.type must be 'auto', 'any', 'tool' or 'none', not "
                         f"'{choice.type}'.", param="tool_choice.type")


def to_chat(req: MessagesRequest | CountTokensRequest) -> Translated:
    """The chat request ``req`` stands for, or InvalidRequest naming the Messages field."""
    if not req.messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    conv = _Conversation()
    system = _text_of(req.system, "system")
    if system:
        conv.add(oa.Message("system", system), Source("system"))
    for i, msg in enumerate(req.messages):
        final_assistant = msg.role == "assistant" and i == len(req.messages) - 1
        if not final_assistant and (msg.content == "" or msg.content == []):
            # only the last message may be an empty assistant turn (a prefill to continue)
            raise InvalidRequest(f"messages[{i}] has empty content; every message but a final "
                                 "assistant one needs some.", param=f"messages[{i}].content")
        if isinstance(msg.content, str):
            conv.add(oa.Message(msg.role, msg.content), Source(f"messages[{i}]"))
        elif msg.role == "user":
            conv.user(i, msg.content)
        else:
            conv.assistant(i, msg.content)
    tools = _tools(req.tools)
    choice = _tool_choice(req.tool_choice, tools)
    fmt: oa.ResponseFormat | None = None
    config = req.output_config
    if config is not None:
        if config.effort is not None:
            raise InvalidRequest("'output_config.effort' is not supported by this server.",
                                 param="output_config.effort")
        if config.format is not None:
            if config.format.type != "json_schema":
                raise InvalidRequest("output_config.format.type must be 'json_schema'.",
                                     param="output_config.format.type")
            fmt = oa.ResponseFormatJSONSchema(oa.JSONSchemaFormat("output",
                                                                  config.format.schema))
    tools_on = bool(tools) and choice != "none"
    chat = oa.ChatCompletionRequest(model=req.model, messages=conv.messages, tools=tools,
                                    tool_choice=choice, response_format=fmt)
    if isinstance(req, MessagesRequest):
        stops = req.stop_sequences or []
        if any(stop == "" for stop in stops):
            raise InvalidRequest("'stop_sequences' holds an empty string, which would stop "
                                 "before the first token.", param="stop_sequences")
        if len(stops) > MAX_STOP_SEQUENCES:
            raise InvalidRequest(f"'stop_sequences' may hold at most {MAX_STOP_SEQUENCES} "
                                 "strings.", param="stop_sequences")
        if any(stops) and (tools_on or fmt is not None):
            raise InvalidRequest("'stop_sequences' together with 'tools' or "
                                 "'output_config.format' is not supported by this server: a "
                                 "stop sequence would cut the JSON.", param="stop_sequences")
        chat.max_tokens = req.max_tokens
        chat.temperature = req.temperature
        chat.top_p = req.top_p
        chat.top_k = req.top_k
        chat.stop = stops or None
        chat.stream = bool(req.stream)
        chat.user = req.metadata.user_id if req.metadata else None
        if req.tool_choice is not None and req.tool_choice.disable_parallel_tool_use:
            chat.parallel_tool_calls = False
    return Translated(chat, conv.sources)
