"""A chat request's ``tools``, ``tool_choice`` and ``parallel_tool_calls``, checked and turned into
what the job carries (tools for the template, the grammar, the messages) and the parser of its
answer.

Refusals, each an ``InvalidRequest`` naming the field (the cross-field ones, which the served
OpenAPI document cannot state): ``tool_calls`` on a message that is not the assistant's; more
than 128 tools; a tool whose type is
not ``function``; two functions of one name; a parameters schema that is invalid, not an object
schema, or not enforceable (:mod:`.json_gbnf`); ``tool_choice`` naming a function not in
``tools``; ``tool_choice: required`` (or a named function) with no tools; a ``tool`` message
whose ``tool_call_id`` answers no earlier assistant call.

The deprecated ``functions`` / ``function_call`` stay refused (api/field_policy.py): every client
seen sends ``tools``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hearth.api import tool_parsers
from hearth.api.json_gbnf import SchemaError
from hearth.api.openai_types import (
    MAX_TOOLS,
    ChatCompletionRequest,
    NamedToolChoice,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
    check_tool_call_ids,
)
from hearth.api.tool_families import (
    Family,
    Thinking,
    ToolDef,
    build_rules,
    family_of,
    grammar_for,
    parser_for,
    thinking_of,
)
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import ChatMessage, Grammar, ToolSpec

_NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass
class ToolPlan:
    """What one chat request does about tools, for its job and its answer."""

    family: Family
    thinking: Thinking
    tools: list[ToolDef] = field(default_factory=list)
    active: bool = False  # tools offered and tool_choice is not none
    parallel: bool = True
    grammar: Grammar | None = None
    # response_format's schema beside active tools (tool_choice auto): the text answer's shape
    answer_schema: dict[str, Any] | None = None

    def job_tools(self) -> list[ToolSpec]:
        """Tools for the chat template: only a marker family's template renders them (the
        generic family gets them in the system prompt instead)."""
        if not self.active or self.family is Family.GENERIC:
            return []
        return [ToolSpec(t.name, t.description, json.dumps(t.parameters)) for t in self.tools]

    def shown_tokens(self) -> list[str]:
        """Special tokens the answer's parser reads, to be streamed as their text: a Mistral
        family's markers and Llama 3's ``<|python_tag|>`` (control tokens, otherwise streamed
        as nothing, so that a call after some text would not be read)."""
        if not self.active:
            return []
        if self.family is Family.LLAMA3:
            return list(tool_parsers.Llama3Parser.markers)
        if self.family is Family.MISTRAL_V11:
            p = tool_parsers.MistralArgsParser
            return [p.TOOL_CALLS, p.ARGS, p.CALL_ID]
        if self.family is Family.MISTRAL:
            return [tool_parsers.MistralArgsParser.TOOL_CALLS]
        return []

    def parser(self) -> tool_parsers.Parser:
        return parser_for(self.family, self.thinking, [t.name for t in self.tools],
                          self.parallel, self.active, self.answer_schema is not None)


def _tool_defs(req: ChatCompletionRequest) -> list[ToolDef]:
    tools = req.tools or []
    if len(tools) > MAX_TOOLS:
        raise InvalidRequest(f"'tools' may hold at most {MAX_TOOLS} tools, got {len(tools)}.",
                             param="tools")
    out: list[ToolDef] = []
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        if tool.type != "function":
            raise InvalidRequest(f"tools[{i}].type must be 'function', not '{tool.type}'.",
                                 param=f"tools[{i}].type")
        fn = tool.function
        if not (1 <= len(fn.name) <= 64 and fn.name.isascii()
                and all(c.isalnum() or c in "_-" for c in fn.name)):
            raise InvalidRequest(f"tools[{i}].function.name must be 1 to 64 letters, digits, "
                                 "underscores or dashes.", param=f"tools[{i}].function.name")
        if fn.name in seen:
            raise InvalidRequest(f"Two tools are named '{fn.name}'; function names must be "
                                 "unique.", param=f"tools[{i}].function.name")
        seen.add(fn.name)
        params = fn.parameters if fn.parameters is not None else _NO_ARGUMENTS
        kind = params.get("type")
        if kind not in (None, "object"):
            raise InvalidRequest(f"tools[{i}].function.parameters must be a schema of type "
                                 f"'object' (the arguments are an object), not {kind!r}.",
                                 param=f"tools[{i}].function.parameters")
        out.append(ToolDef(fn.name, fn.description, params))
    return out


def plan_tools(req: ChatCompletionRequest, messages: list[ChatMessage],
               template: str | None) -> ToolPlan:
    """Check the request's tool fields against each other and its messages, and plan the answer
    for a model whose chat template is ``template`` (None: hearth's fallback, generic)."""
    check_tool_call_ids(messages)
    tools = _tool_defs(req)
    plan = ToolPlan(family_of(template), thinking_of(template), tools,
                    parallel=req.parallel_tool_calls is not False)
    choice = req.tool_choice
    only: str | None = None
    if isinstance(choice, NamedToolChoice):
        if choice.type != "function":
            raise InvalidRequest("tool_choice.type must be 'function'.", param="tool_choice.type")
        only = choice.function.name
        if only not in {t.name for t in tools}:
            raise InvalidRequest(f"tool_choice names the function '{only}', which is not in "
                                 "'tools'.", param="tool_choice")
    elif choice == "required" and not tools:
        raise InvalidRequest("tool_choice 'required' needs at least one tool in 'tools'.",
                             param="tool_choice")
    if not tools or choice == "none":
        return plan
    try:
        rules, args = build_rules(tools)
    except SchemaError as exc:
        raise InvalidRequest(f"Unsupported tool schema: {exc}", param=exc.param) from None
    plan.active = True
    required = choice == "required" or only is not None
    answer = None
    if not required:  # with required or a named function the answer is calls only
        plan.answer_schema = answer_schema(req)
    if plan.answer_schema is not None:
        try:
            answer = rules.add(plan.answer_schema, "answer")
        except SchemaError as exc:
            raise InvalidRequest(f"response_format: {exc}", param="response_format") from None
    plan.grammar = grammar_for(plan.family, plan.thinking, tools, args, rules,
                               required=required, only=only, parallel=plan.parallel,
                               answer=answer)
    return plan


def answer_schema(req: ChatCompletionRequest) -> dict[str, Any] | None:
    """The JSON Schema ``response_format`` holds the answer to (None: free text)."""
    fmt = req.response_format
    if isinstance(fmt, ResponseFormatJSONObject):
        return {"type": "object"}
    if isinstance(fmt, ResponseFormatJSONSchema):
        schema = fmt.json_schema.schema
        return {} if schema is None else schema
    return None


# ---- the generic family: tools in the system prompt -------------------------------------------

def _tools_text(plan: ToolPlan, only: str | None, required: bool) -> str:
    listing = json.dumps([{"name": t.name, "description": t.description or "",
                           "parameters": t.parameters} for t in plan.tools], ensure_ascii=False)
    call = '{"tool_calls": [{"name": "<function name>", "arguments": {<its arguments>}}]}'
    lines = ["You can call these functions:", listing, ""]
    if only is not None:
        lines.append(f"Call the function {only}. Answer with this JSON and nothing else:")
        lines.append(call)
    elif required:
        lines.append("Call one or more of them. Answer with this JSON and nothing else:")
        lines.append(call)
    elif plan.answer_schema is not None:
        lines += ["Answer with one JSON object and nothing else. To call functions:", call,
                  "To answer the user directly, a JSON value valid against this JSON Schema:",
                  json.dumps(plan.answer_schema, ensure_ascii=False)]
    else:
        lines += ["Answer with one JSON object and nothing else. To call functions:", call,
                  "To answer the user directly:", '{"content": "..."}']
    if plan.parallel and only is None:
        lines.append("The list may hold several calls.")
    if not required and only is None:
        lines.append("When a function has returned its result, answer the user with it"
                     + (" (as that JSON)." if plan.answer_schema is not None
                        else ': {"content": "..."}'))
    return "\n".join(lines)


_RESULTS_END = "\nAnswer my question with this result."


def generic_messages(plan: ToolPlan, messages: list[ChatMessage],
                     req: ChatCompletionRequest) -> list[ChatMessage]:
    """The conversation for a template without tool support: the tools described in the system
    message (appended to the first one, or a new one first), each earlier assistant call told in
    words ("I called f with {...}."), and tool results as user turns (one turn for results in a
    row, so that templates requiring alternating roles accept them).

    Why words and not the envelope the model answered with: measured on smollm2-135m-instruct
    (greedy, a weather round trip), with its calls written back as envelopes the model called the
    function again instead of answering, and with ``tool_choice: none`` it answered with an
    envelope as text; told in words, it answered from the result both times."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[ChatMessage] = []
    for msg in messages:
        if msg.tool_calls:
            text = "\n".join(f"I called {c.name} with {c.arguments}." for c in msg.tool_calls)
            out.append(ChatMessage("assistant", (msg.content + "\n" if msg.content else "") + text))
        elif msg.role == "tool":
            name = names.get(msg.tool_call_id or "", "the function")
            text = f"{name} returned: {msg.content}"
            if out and out[-1].role == "user" and out[-1].content.endswith(_RESULTS_END):
                text = out[-1].content.removesuffix(_RESULTS_END) + "\n" + text
                out[-1] = ChatMessage("user", text + _RESULTS_END)
            else:
                out.append(ChatMessage("user", text + _RESULTS_END))
        else:
            out.append(msg)
    if plan.active:
        choice = req.tool_choice
        only = choice.function.name if isinstance(choice, NamedToolChoice) else None
        text = _tools_text(plan, only, choice == "required")
        if out and out[0].role == "system":
            out[0] = ChatMessage("system", out[0].content + "\n\n" + text)
        else:
            out.insert(0, ChatMessage("system", text))
    return out


