"""POST {prefix}/chat/completions — streaming (SSE) and not.

The handler waits for the request's first event before committing to a status: ``Started``
means 200 (and, for a stream, the SSE headers); ``Failed`` means the mapped error status. After
that, a failure is a ``data: {"error": …}`` event followed by ``data: [DONE]``. The road from
request to events (model, id, submit, cancel on disconnect, usage) is :mod:`.jobs`'.

With tools (or a template that thinks in ``<think>`` tags) the worker's text goes through the
answer's parser (:mod:`..tool_parsers`, chosen by :mod:`..tool_calling`) on its way out: content,
``reasoning_content`` and ``tool_calls`` deltas, the same for a stream and a whole answer.
"""

from __future__ import annotations

import time

from hearth.api import errors as mapper
from hearth.api import openai_types, sse
from hearth.api.handlers.jobs import JobHandler, error_of
from hearth.api.tool_calling import ToolPlan, generic_messages, plan_tools
from hearth.api.tool_families import Family, Thinking
from hearth.api.tool_parsers import (
    CallArguments,
    CallStart,
    Out,
    Parser,
    Reasoning,
    ReasoningSplitter,
    Text,
)
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import ChatJob, Event, Failed, Finished, Started, TextDelta


def _usage(fin: Finished, reasoning: int | None = None) -> openai_types.Usage:
    details = None if reasoning is None else openai_types.CompletionTokensDetails(reasoning)
    return openai_types.Usage(fin.prompt_tokens, fin.completion_tokens,
                              fin.prompt_tokens + fin.completion_tokens,
                              openai_types.PromptTokensDetails(fin.cached_tokens), details)


class _Answer:
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
        return "tool_calls" if reason == "stop" and self.parser.call_count else reason

    def usage(self, fin: Finished) -> openai_types.Usage:
        return _usage(fin, self.reasoning_tokens if self.thinks else None)


class ChatCompletionsHandler(JobHandler):
    endpoint = "chat.completions"
    id_prefix = "chatcmpl-"

    async def post(self) -> None:
        req = openai_types.parse_chat_request(self.body)
        self.log_model = req.model
        messages = openai_types.chat_messages(req)
        params = openai_types.requested_sampling(req)
        grammar = openai_types.response_grammar(req)
        entry = self.resolve_model(req.model)
        template = self.state.settings.model_config(entry.id).chat_template or (
            entry.info.chat_template if entry.info is not None else None)
        plan = plan_tools(req, messages, template)
        if grammar is not None and plan.active:
            raise InvalidRequest("'response_format' together with 'tools' is not supported "
                                 "by this server: send one of them, or tool_choice 'none'.",
                                 param="response_format")
        grammar = grammar or plan.grammar
        if grammar is not None and params.stop:
            # a stop string matched inside the JSON or a call would cut it: with a grammar the
            # only incomplete answer is one that ran out of tokens (finish_reason "length")
            raise InvalidRequest("'stop' together with 'response_format' JSON or 'tools' is not "
                                 "supported by this server: a stop string would cut the JSON.",
                                 param="stop")
        if plan.family is Family.GENERIC:
            messages = generic_messages(plan, messages, req)
        answer = _Answer(plan) if plan.active or plan.thinking is not Thinking.NONE else None
        rid = self.new_request_id()
        frontend, key_name = self.job_owner()
        job = ChatJob(rid, frontend, key_name, entry.id, messages, params,
                      grammar=grammar, tools=plan.job_tools())
        async with self.submitted(job) as first:
            if first is None:
                return
            assert isinstance(first, Started)
            created = int(time.time())
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                if answer is None:
                    await self._stream(rid, created, req.model, include_usage)
                else:
                    await self._stream_parsed(rid, created, req.model, include_usage, answer)
            elif answer is None:
                await self._collect(rid, created, req.model)
            else:
                await self._collect_parsed(rid, created, req.model, answer)

    async def _collect(self, rid: str, created: int, model: str) -> None:
        parts: list[str] = []
        event = await self.gather(lambda delta: parts.append(delta.text))
        if event is None:
            return
        self.write_json(openai_types.ChatCompletion(
            id=rid, created=created, model=model,
            choices=[openai_types.Choice(
                0, openai_types.ResponseMessage("assistant", "".join(parts)),
                event.finish_reason)],
            usage=_usage(event)))

    async def _collect_parsed(self, rid: str, created: int, model: str, answer: _Answer) -> None:
        outs: list[Out] = []
        event = await self.gather(lambda delta: outs.extend(answer.feed(delta)))
        if event is None:
            return
        outs.extend(answer.parser.finish())
        content = "".join(o.text for o in outs if isinstance(o, Text))
        reasoning = "".join(o.text for o in outs if isinstance(o, Reasoning))
        calls: dict[int, openai_types.ToolCallOut] = {}
        for o in outs:
            if isinstance(o, CallStart):
                calls[o.index] = openai_types.ToolCallOut(
                    o.id, openai_types.FunctionCallOut(o.name, ""))
            elif isinstance(o, CallArguments):
                calls[o.index].function.arguments += o.text
        message = openai_types.ResponseMessage(
            "assistant", content if content or not calls else None,
            [calls[i] for i in sorted(calls)] or None, reasoning or None)
        self.write_json(openai_types.ChatCompletion(
            id=rid, created=created, model=model,
            choices=[openai_types.Choice(0, message, answer.finish_reason(event.finish_reason))],
            usage=answer.usage(event)))

    async def _stream(self, rid: str, created: int, model: str, include_usage: bool) -> None:
        """The role chunk, then one content chunk per delta with text, then the finish chunk
        (and the usage chunk if asked) or an error event, and ``[DONE]``."""
        chunks = sse.ChunkEncoder(rid, created, model)
        if not await self.open_stream(chunks.role()):
            return

        def render(ev: Event) -> bytes:
            if isinstance(ev, TextDelta):
                return chunks.content(ev.text) if ev.text else b""
            if isinstance(ev, Finished):
                out = chunks.finish(ev.finish_reason)
                if include_usage:
                    out += chunks.usage(_usage(ev))
                return out + sse.DONE
            if isinstance(ev, Failed):
                return sse.event(mapper.envelope(error_of(ev))) + sse.DONE
            return b""

        await self.stream(render)

    async def _stream_parsed(self, rid: str, created: int, model: str, include_usage: bool,
                             answer: _Answer) -> None:
        """As :meth:`_stream`, with each delta's text through the answer's parser: content,
        reasoning and tool-call chunks, and ``finish_reason: "tool_calls"`` after calls."""
        chunks = sse.ChunkEncoder(rid, created, model)
        if not await self.open_stream(chunks.role(None if answer.tools_on else "")):
            return

        def encode(outs: list[Out]) -> bytes:
            out = b""
            for o in outs:
                if isinstance(o, Text):
                    out += chunks.content(o.text) if o.text else b""
                elif isinstance(o, Reasoning):
                    out += chunks.reasoning(o.text) if o.text else b""
                elif isinstance(o, CallStart):
                    out += chunks.call_start(o.index, o.id, o.name)
                else:
                    out += chunks.call_arguments(o.index, o.text)
            return out

        def render(ev: Event) -> bytes:
            if isinstance(ev, TextDelta):
                return encode(answer.feed(ev))
            if isinstance(ev, Finished):
                out = encode(answer.parser.finish())
                out += chunks.finish(answer.finish_reason(ev.finish_reason))
                if include_usage:
                    out += chunks.usage(answer.usage(ev))
                return out + sse.DONE
            if isinstance(ev, Failed):
                return sse.event(mapper.envelope(error_of(ev))) + sse.DONE
            return b""

        await self.stream(render)
