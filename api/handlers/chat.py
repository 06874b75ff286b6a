"""POST {prefix}/chat/completions — streaming (SSE) and not.

The handler waits for the request's first event before committing to a status: ``Started``
means 200 (and, for a stream, the SSE headers); ``Failed`` means the mapped error status. After
that, a failure is a ``data: {"error": …}`` event followed by ``data: [DONE]``. The road from
request to events (model, id, submit, cancel on disconnect, usage) is :mod:`.jobs`'.

With tools (or a template that thinks in ``<think>`` tags) the worker's text goes through the
answer's parser (:mod:`..tool_parsers`, chosen by :mod:`..tool_calling`) on its way out: content,
``reasoning_content`` and ``tool_calls`` deltas, the same for a stream and a whole answer.

With ``n`` > 1 the job has n choices (one prompt evaluation, n slots; see
scheduler.messages.ChatJob): each choice has its own parser (and, in the worker, its own
grammar), every chunk of a stream carries its choice's ``index``, each choice's stream starts
with its role chunk and ends with its finish chunk, and usage counts the prompt once and every
choice's tokens (as OpenAI does).
"""

from __future__ import annotations

import time

from hearth.api import errors as mapper
from hearth.api import openai_types, sse
from hearth.api.chat_answer import Answer, collate, usage
from hearth.api.handlers.chat_jobs import ChatJobHandler
from hearth.api.handlers.jobs import Finishes, error_of
from hearth.api.logprobs import ChoiceLogprobs, TokenLogprobOut, chat_entries
from hearth.api.tool_parsers import CallStart, Out, Reasoning, Text
from hearth.scheduler.messages import Event, Failed, Finished, Started, TextDelta


def _whole(rid: str, done: list[Finished]) -> Finished:
    """The request's usage as one event: its prompt once, every choice's tokens."""
    tally = Finishes([rid], len(done))
    for fin in done:
        tally.add(fin)
    prompt, completion, cached = tally.totals()
    return Finished(rid, done[0].finish_reason, prompt, completion, cached)


class ChatCompletionsHandler(ChatJobHandler):
    endpoint = "chat.completions"
    id_prefix = "chatcmpl-"

    async def post(self) -> None:
        req = openai_types.parse_chat_request(self.body)
        self.log_model = req.model
        turn = self.chat_turn(req)
        rid, answers, n = turn.job.request_id, turn.answers(), turn.job.n
        async with self.submitted(turn.job) as first:
            if first is None:
                return
            assert isinstance(first, Started)
            created = int(time.time())
            logprobs = turn.job.logprobs is not None  # (never with an answer's parser)
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                if answers is None:
                    await self._stream(rid, n, created, req.model, include_usage, logprobs)
                else:
                    await self._stream_parsed(rid, created, req.model, include_usage, answers)
            elif answers is None:
                await self._collect(rid, n, created, req.model, logprobs)
            else:
                await self._collect_parsed(rid, created, req.model, answers)

    async def _collect(self, rid: str, n: int, created: int, model: str,
                       logprobs: bool) -> None:
        parts: list[list[str]] = [[] for _ in range(n)]
        entries: list[list[TokenLogprobOut]] = [[] for _ in range(n)]

        def on_delta(delta: TextDelta) -> None:
            parts[delta.index].append(delta.text)
            if delta.logprobs:
                entries[delta.index].extend(chat_entries(delta.logprobs))

        done = await self.gather_all(on_delta, [rid], n)
        if done is None:
            return
        self.write_json(openai_types.ChatCompletion(
            id=rid, created=created, model=model,
            choices=[openai_types.Choice(
                fin.index, openai_types.ResponseMessage("assistant", "".join(parts[fin.index])),
                fin.finish_reason, ChoiceLogprobs(entries[fin.index]) if logprobs else None)
                for fin in done],
            usage=usage(_whole(rid, done))))

    async def _collect_parsed(self, rid: str, created: int, model: str,
                              answers: list[Answer]) -> None:
        outs: list[list[Out]] = [[] for _ in answers]
        done = await self.gather_all(
            lambda delta: outs[delta.index].extend(answers[delta.index].feed(delta)),
            [rid], len(answers))
        if done is None:
            return
        choices = []
        for fin in done:
            answer = answers[fin.index]
            whole = collate([*outs[fin.index], *answer.parser.finish()])
            calls = [openai_types.ToolCallOut(c.id, openai_types.FunctionCallOut(c.name,
                                                                                c.arguments))
                     for c in whole.calls]
            message = openai_types.ResponseMessage(
                "assistant", whole.content if whole.content or not calls else None,
                calls or None, whole.reasoning or None)
            choices.append(openai_types.Choice(fin.index, message,
                                               answer.finish_reason(fin.finish_reason)))
        reasoning = sum(a.reasoning_tokens for a in answers)
        self.write_json(openai_types.ChatCompletion(
            id=rid, created=created, model=model, choices=choices,
            usage=usage(_whole(rid, done), reasoning if answers[0].thinks else None)))

    async def _stream(self, rid: str, n: int, created: int, model: str,
                      include_usage: bool, logprobs: bool = False) -> None:
        """Each choice's role chunk, then one content chunk per delta with text, then each
        choice's finish chunk, the usage chunk if asked (after the last) or an error event,
        and ``[DONE]``. With ``logprobs``, a delta's chunk carries its tokens' entries, and a
        delta of tokens whose text is not out yet (an unfinished character, a possible stop
        string) is a chunk with empty content and those entries."""
        chunks = [sse.ChunkEncoder(rid, created, model, i) for i in range(n)]
        if not await self.open_stream(b"".join(c.role() for c in chunks)):
            return
        finished = Finishes([rid], n)

        def render(ev: Event) -> bytes:
            if isinstance(ev, TextDelta):
                if logprobs and ev.logprobs:
                    return chunks[ev.index].content_logprobs(ev.text,
                                                             chat_entries(ev.logprobs))
                return chunks[ev.index].content(ev.text) if ev.text else b""
            if isinstance(ev, Finished):
                out = chunks[ev.index].finish(ev.finish_reason)
                if not finished.add(ev):
                    return out
                if include_usage:
                    out += chunks[0].usage(usage(_whole(rid, finished.ordered())))
                return out + sse.DONE
            if isinstance(ev, Failed):
                return sse.event(mapper.envelope(error_of(ev))) + sse.DONE
            return b""

        await self.stream(render, [rid], n)

    async def _stream_parsed(self, rid: str, created: int, model: str, include_usage: bool,
                             answers: list[Answer]) -> None:
        """As :meth:`_stream`, with each delta's text through its choice's parser: content,
        reasoning and tool-call chunks, and ``finish_reason: "tool_calls"`` after calls."""
        chunks = [sse.ChunkEncoder(rid, created, model, i) for i in range(len(answers))]
        if not await self.open_stream(b"".join(
                c.role(None if answers[0].tools_on else "") for c in chunks)):
            return
        finished = Finishes([rid], len(answers))

        def encode(index: int, outs: list[Out]) -> bytes:
            out = b""
            enc = chunks[index]
            for o in outs:
                if isinstance(o, Text):
                    out += enc.content(o.text) if o.text else b""
                elif isinstance(o, Reasoning):
                    out += enc.reasoning(o.text) if o.text else b""
                elif isinstance(o, CallStart):
                    out += enc.call_start(o.index, o.id, o.name)
                else:
                    out += enc.call_arguments(o.index, o.text)
            return out

        def render(ev: Event) -> bytes:
            if isinstance(ev, TextDelta):
                return encode(ev.index, answers[ev.index].feed(ev))
            if isinstance(ev, Finished):
                answer = answers[ev.index]
                out = encode(ev.index, answer.parser.finish())
                out += chunks[ev.index].finish(answer.finish_reason(ev.finish_reason))
                if not finished.add(ev):
                    return out
                if include_usage:
                    reasoning = sum(a.reasoning_tokens for a in answers)
                    out += chunks[0].usage(usage(_whole(rid, finished.ordered()),
                                                 reasoning if answer.thinks else None))
                return out + sse.DONE
            if isinstance(ev, Failed):
                return sse.event(mapper.envelope(error_of(ev))) + sse.DONE
            return b""

        await self.stream(render, [rid], len(answers))
