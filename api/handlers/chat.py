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
from hearth.api.chat_answer import Answer, collate, usage
from hearth.api.handlers.chat_jobs import ChatJobHandler
from hearth.api.handlers.jobs import error_of
from hearth.api.logprobs import ChoiceLogprobs, TokenLogprobOut, chat_entries
from hearth.api.tool_parsers import CallStart, Out, Reasoning, Text
from hearth.scheduler.messages import Event, Failed, Finished, Started, TextDelta


class ChatCompletionsHandler(ChatJobHandler):
    endpoint = "chat.completions"
    id_prefix = "chatcmpl-"

    async def post(self) -> None:
        req = openai_types.parse_chat_request(self.body)
        self.log_model = req.model
        turn = self.chat_turn(req)
        rid, answer = turn.job.request_id, turn.answer
        async with self.submitted(turn.job) as first:
            if first is None:
                return
            assert isinstance(first, Started)
            created = int(time.time())
            logprobs = turn.job.logprobs is not None  # (never with an answer's parser)
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                if answer is None:
                    await self._stream(rid, created, req.model, include_usage, logprobs)
                else:
                    await self._stream_parsed(rid, created, req.model, include_usage, answer)
            elif answer is None:
                await self._collect(rid, created, req.model, logprobs)
            else:
                await self._collect_parsed(rid, created, req.model, answer)

    async def _collect(self, rid: str, created: int, model: str, logprobs: bool) -> None:
        parts: list[str] = []
        entries: list[TokenLogprobOut] = []

        def on_delta(delta: TextDelta) -> None:
            parts.append(delta.text)
            if delta.logprobs:
                entries.extend(chat_entries(delta.logprobs))

        event = await self.gather(on_delta)
        if event is None:
            return
        self.write_json(openai_types.ChatCompletion(
            id=rid, created=created, model=model,
            choices=[openai_types.Choice(
                0, openai_types.ResponseMessage("assistant", "".join(parts)),
                event.finish_reason, ChoiceLogprobs(entries) if logprobs else None)],
            usage=usage(event)))

    async def _collect_parsed(self, rid: str, created: int, model: str, answer: Answer) -> None:
        outs: list[Out] = []
        event = await self.gather(lambda delta: outs.extend(answer.feed(delta)))
        if event is None:
            return
        outs.extend(answer.parser.finish())
        whole = collate(outs)
        calls = [openai_types.ToolCallOut(c.id, openai_types.FunctionCallOut(c.name, c.arguments))
                 for c in whole.calls]
        message = openai_types.ResponseMessage(
            "assistant", whole.content if whole.content or not calls else None,
            calls or None, whole.reasoning or None)
        self.write_json(openai_types.ChatCompletion(
            id=rid, created=created, model=model,
            choices=[openai_types.Choice(0, message, answer.finish_reason(event.finish_reason))],
            usage=answer.usage(event)))

    async def _stream(self, rid: str, created: int, model: str, include_usage: bool,
                      logprobs: bool = False) -> None:
        """The role chunk, then one content chunk per delta with text, then the finish chunk
        (and the usage chunk if asked) or an error event, and ``[DONE]``. With ``logprobs``,
        a delta's chunk carries its tokens' entries, and a delta of tokens whose text is not
        out yet (an unfinished character, a possible stop string) is a chunk with empty
        content and those entries."""
        chunks = sse.ChunkEncoder(rid, created, model)
        if not await self.open_stream(chunks.role()):
            return

        def render(ev: Event) -> bytes:
            if isinstance(ev, TextDelta):
                if logprobs and ev.logprobs:
                    return chunks.content_logprobs(ev.text, chat_entries(ev.logprobs))
                return chunks.content(ev.text) if ev.text else b""
            if isinstance(ev, Finished):
                out = chunks.finish(ev.finish_reason)
                if include_usage:
                    out += chunks.usage(usage(ev))
                return out + sse.DONE
            if isinstance(ev, Failed):
                return sse.event(mapper.envelope(error_of(ev))) + sse.DONE
            return b""

        await self.stream(render)

    async def _stream_parsed(self, rid: str, created: int, model: str, include_usage: bool,
                             answer: Answer) -> None:
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
