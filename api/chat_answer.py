"""One chat answer on its way out of the engine: the parser its text goes through, what it
counts (tool calls made, tokens spent thinking), and the whole answer collated from the parser's
pieces. Shared by every API that answers from a chat job: chat completions today, the Responses
API and Anthropic's Messages next — each renders the same pieces in its own wire shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hearth.api import openai_types
from hearth.api.tool_calling import ToolPlan
from hearth.api.tool_families import Thinking
from hearth.api.tool_parsers import (
    CallArguments,
    CallStart,
    Out,
    Parser,
    Reasoning,
    ReasoningSplitter,
    Text,
)
from hearth.scheduler.messages import Finished, TextDelta


def usage(fin: Finished, reasoning: int | None = None) -> openai_types.Usage:
    """OpenAI's usage object for a finished job; ``reasoning``: tokens spent thinking (None: the
    model does not think, and ``completion_tokens_details`` is left out)."""
    details = None if reasoning is None else openai_types.CompletionTokensDetails(reasoning)
    return openai_types.Usage(fin.prompt_tokens, fin.completion_tokens,
                              fin.prompt_tokens + fin.completion_tokens,
                              openai_types.PromptTokensDetails(fin.cached_tokens), details)


class Answer:
    """One answer's parser, and what it counts: calls made, tokens spent thinking."""

    def __init__(self, plan: ToolPlan) -> None:
        self.parser: Parser = plan.parser()
        self.thinks = plan.thinking is not Thinking.NONE
        self.tools_on = plan.active
        self.reasoning_tokens = 0

    def feed(self, delta: TextDelta) -> list[Out]:
        parser = self.parser
        was_thinking = isinstance(parser, ReasoningSplitter) and parser.thinking
        outs = parser.feed(delta.text)
        if was_thinking or any(isinstance(o, Reasoning) for o in outs):
            self.reasoning_tokens += delta.tokens
        return outs

    def finish_reason(self, reason: str) -> str:
        """The engine's ``stop`` / ``length`` as chat says it: ``tool_calls`` after calls."""
        return "tool_calls" if reason == "stop" and self.parser.call_count else reason

    def usage(self, fin: Finished) -> openai_types.Usage:
        return usage(fin, self.reasoning_tokens if self.thinks else None)


@dataclass
class Call:
    """One tool call of a whole answer; ``arguments`` is the JSON text of its arguments."""

    id: str
    name: str
    arguments: str = ""


@dataclass
class Collated:
    """A whole answer from its parser's pieces, in order of index for the calls."""

    content: str = ""
    reasoning: str = ""
    calls: list[Call] = field(default_factory=list)


def collate(outs: list[Out]) -> Collated:
    content = "".join(o.text for o in outs if isinstance(o, Text))
    reasoning = "".join(o.text for o in outs if isinstance(o, Reasoning))
    calls: dict[int, Call] = {}
    for o in outs:
        if isinstance(o, CallStart):
            calls[o.index] = Call(o.id, o.name)
        elif isinstance(o, CallArguments):
            calls[o.index].arguments += o.text
    return Collated(content, reasoning, [calls[i] for i in sorted(calls)])
