"""A chat job's messages and tools in the shape Hugging Face's ``apply_chat_template`` passes them
to a chat template, so that a GGUF's own Jinja renders tool calls as its model was trained on.

The convention (transformers' chat-template docs, and what real templates read):

* ``tools``: ``[{"type": "function", "function": {"name", "description", "parameters"}}]``,
  parameters as a dict (templates ``tojson`` them);
* an assistant's ``tool_calls``: ``[{"id", "type": "function", "function": {"name",
  "arguments"}}]`` with ``arguments`` a **dict**: Qwen 2.5's, Hermes', Llama 3.1's and Mistral's
  templates write ``arguments | tojson``, which would quote a string a second time. Arguments that
  are not a JSON object stay the string they were (Qwen 3's template accepts either);
* a ``tool`` message's ``tool_call_id``; an assistant message with calls and no text has
  ``content: null``;
* a message's ``name`` (OpenAI's participant name) when it has one;
* an assistant's ``reasoning_content`` (its earlier thinking) when it has some: templates of
  thinking models (Qwen 3, DeepSeek-R1) decide where to show it again; others never read it.
"""

from __future__ import annotations

import json
from typing import Any

from hearth.scheduler.messages import ChatJob, ChatMessage, ToolCall, ToolSpec


def _arguments(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, dict) else text


def _call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function",
            "function": {"name": call.name, "arguments": _arguments(call.arguments)}}


def template_message(message: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [_call(c) for c in message.tool_calls]
        if not message.content:
            out["content"] = None
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    if message.reasoning_content:
        out["reasoning_content"] = message.reasoning_content
    return out


def template_tool(tool: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = _arguments(tool.parameters) if tool.parameters else {}
    return {"type": "function", "function": function}


def template_inputs(job: ChatJob) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools) for ``ChatTemplate.render``; tools None when the job has none (templates
    test ``tools is not none``)."""
    messages = [template_message(m) for m in job.messages]
    tools = [template_tool(t) for t in job.tools] if job.tools else None
    return messages, tools
