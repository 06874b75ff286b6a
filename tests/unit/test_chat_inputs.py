"""A job's tool fields reach the chat template in Hugging Face's shape: ``tools`` with parameters
as dicts, an assistant's ``tool_calls`` with ``function.arguments`` a dict (templates ``tojson``
it), ``content`` null beside calls, and a tool message's ``tool_call_id``."""

from __future__ import annotations

from hearth.engine.chat_inputs import template_inputs
from hearth.engine.templates import ChatTemplate
from hearth.scheduler.messages import (
    ChatJob,
    ChatMessage,
    RequestedSampling,
    ToolCall,
    ToolSpec,
)

# In the manner of Qwen 2.5's template (its tool parts, written for this test).
TEMPLATE = (
    "{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>\n{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.tool_calls %}[{{ m.role }}|{{ m.content }}]"
    "{%- for c in m.tool_calls %}{%- set f = c.function %}<tool_call>"
    '{"name": "{{ f.name }}", "arguments": {{ f.arguments | tojson }}}</tool_call>'
    "{%- endfor %}\n"
    "{%- elif m.role == 'tool' %}[tool {{ m.tool_call_id }}|{{ m.content }}]\n"
    "{%- else %}[{{ m.role }}|{{ m.content }}]\n{%- endif %}{%- endfor %}"
)


def job(**kw: object) -> ChatJob:
    messages = [
        ChatMessage("user", "Weather in Paris?"),
        ChatMessage("assistant", "", [ToolCall("call_1", "get_weather", '{"city": "Paris"}'),
                                      ToolCall("call_2", "raw", "not json")]),
        ChatMessage("tool", "21 C", tool_call_id="call_1"),
    ]
    return ChatJob("r", "fe", "k", "m", messages, RequestedSampling(), **kw)  # type: ignore[arg-type]


def test_hf_shapes() -> None:
    messages, tools = template_inputs(job(tools=[ToolSpec(
        "get_weather", "Weather now", '{"type": "object", "properties": {}}')]))
    assert tools == [{"type": "function", "function": {
        "name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {}}}}]
    assert messages[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"id": "call_2", "type": "function", "function": {"name": "raw", "arguments": "not json"}},
    ]}
    assert messages[2] == {"role": "tool", "content": "21 C", "tool_call_id": "call_1"}
    assert template_inputs(job())[1] is None  # no tools: templates test `tools is not none`


def test_rendered_through_a_template() -> None:
    messages, tools = template_inputs(job(tools=[ToolSpec("get_weather")]))
    prompt = ChatTemplate(TEMPLATE).render(messages, tools=tools, add_generation_prompt=False)
    assert prompt.startswith('<tools>{"type": "function", "function": {"name": "get_weather", '
                             '"parameters": {}}}</tools>')
    assert ('[assistant|None]<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}'
            '</tool_call><tool_call>{"name": "raw", "arguments": "not json"}</tool_call>') in prompt
    assert prompt.endswith("[tool call_1|21 C]")


def test_a_message_name_reaches_the_template() -> None:
    """``messages[i].name`` (OpenAI's participant name) is applied: templates that read
    ``message.name`` get it; a message without one has no ``name`` key."""
    named = ChatJob("r", "fe", "k", "m", [ChatMessage("user", "hi", name="alice"),
                                          ChatMessage("user", "yo")], RequestedSampling())
    messages, _ = template_inputs(named)
    assert messages == [{"role": "user", "content": "hi", "name": "alice"},
                        {"role": "user", "content": "yo"}]
    prompt = ChatTemplate("{% for m in messages %}[{{ m.name or '-' }}:{{ m.content }}]"
                          "{% endfor %}").render(messages, add_generation_prompt=False)
    assert prompt == "[alice:hi][-:yo]"


def test_an_assistants_earlier_thinking_reaches_the_template() -> None:
    """An assistant's ``reasoning_content`` (chat's field, Responses' reasoning items,
    Messages' thinking blocks) is passed as Qwen 3's and DeepSeek-R1's templates read it; a
    template that shows it only after the last user message (Qwen 3's rule: inside a tool
    loop) decides where it appears."""
    thought = ChatJob("r", "fe", "k", "m", [
        ChatMessage("user", "old question"),
        ChatMessage("assistant", "old answer", reasoning_content="old thought"),
        ChatMessage("user", "weather?"),
        ChatMessage("assistant", "", [ToolCall("c1", "get_weather", "{}")],
                    reasoning_content="call the tool"),
        ChatMessage("tool", "sunny", tool_call_id="c1")], RequestedSampling())
    messages, _ = template_inputs(thought)
    assert messages[1]["reasoning_content"] == "old thought"
    assert "reasoning_content" not in messages[0] and "reasoning_content" not in messages[4]
    template = ("{% set ns = namespace(last=0) %}{% for m in messages %}"
                "{% if m.role == 'user' %}{% set ns.last = loop.index0 %}{% endif %}{% endfor %}"
                "{% for m in messages %}[{{ m.role }}:"
                "{% if m.reasoning_content and loop.index0 > ns.last %}<think>"
                "{{ m.reasoning_content }}</think>{% endif %}{{ m.content or '' }}]{% endfor %}")
    prompt = ChatTemplate(template).render(messages, add_generation_prompt=False)
    assert prompt == ("[user:old question][assistant:old answer][user:weather?]"
                      "[assistant:<think>call the tool</think>][tool:sunny]")
