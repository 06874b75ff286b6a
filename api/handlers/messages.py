"""POST {prefix}/messages and POST {prefix}/messages/count_tokens — Anthropic's Messages API.

A Messages request is translated into a chat request (:mod:`..messages_translate`) and runs the
chat road (:class:`.chat_jobs.ChatJobHandler`): one queue, one set of limits, every 400 chat's
with ``param`` re-labelled to the Messages field. Its answer's pieces become Anthropic content
blocks and stream events (:mod:`..messages_events`). Every error on these routes, those found
before the handler runs included (401, 403, 413, 503), is in Anthropic's envelope
(``{"type": "error", "error": {"type", "message"}}``, :func:`..errors.anthropic_envelope`)
with the status the rest of the API gives it; an error after a stream has started is an
``event: error`` frame, and the stream ends.

count_tokens renders the prompt the same way (the same translation, tools included) and has a
worker of the model count its tokens (a ``TokenizeJob``: no slot, no queue behind generations).
"""

from __future__ import annotations

import msgspec
from hearth.api import anthropic_types as at
from hearth.api import errors as mapper
from hearth.api.handlers.chat_jobs import ChatJobHandler
from hearth.api.handlers.jobs import error_of
from hearth.api.messages_events import MessageBuilder, frame
from hearth.api.messages_translate import Translated, to_chat
from hearth.api.openai_types import response_grammar
from hearth.api.tool_families import Thinking
from hearth.api.tool_parsers import Out, Text
from hearth.scheduler import errors
from hearth.scheduler.messages import (
    Event,
    Failed,
    Finished,
    Started,
    TextDelta,
    Tokenized,
    TokenizeJob,
)


class AnthropicHandler(ChatJobHandler):
    """Errors in Anthropic's envelope; a 400 raised on the translated chat request names the
    Messages field."""

    def error_body(self, exc: errors.HearthError) -> msgspec.Struct:
        return mapper.anthropic_envelope(exc)

    @staticmethod
    def relabel(exc: errors.HearthError, translated: Translated) -> None:
        exc.param = translated.param(exc.param)


class MessagesHandler(AnthropicHandler):
    endpoint = "messages"
    id_prefix = "msg_"

    async def post(self) -> None:
        req = at.parse_messages_request(self.body)
        self.log_model = req.model
        translated = to_chat(req)
        try:
            await self._answer(req, translated)
        except errors.HearthError as exc:
            self.relabel(exc, translated)
            raise

    async def _answer(self, req: at.MessagesRequest, translated: Translated) -> None:
        turn = self.chat_turn(translated.chat)
        at.check_thinking(req.thinking, req.max_tokens, turn.plan.thinking is not Thinking.NONE)
        answer = turn.answer
        builder = MessageBuilder(turn.job.request_id, req.model)

        def pieces(delta: TextDelta) -> list[Out]:
            return answer.feed(delta) if answer is not None else [Text(delta.text)]

        def last_pieces() -> list[Out]:
            return answer.parser.finish() if answer is not None else []

        async with self.submitted(turn.job) as first:
            if first is None:
                return
            assert isinstance(first, Started)
            if not req.stream:
                def collect(delta: TextDelta) -> None:
                    builder.feed(pieces(delta))

                fin = await self.gather(collect)
                if fin is None:
                    return
                builder.feed(last_pieces())
                builder.finish(fin)
                self.write_json(builder.message(fin))
                return
            head = b"".join(frame(e) for e in builder.start(first.prompt_tokens,
                                                             first.cached_tokens))
            if not await self.open_stream(head):
                return

            def render(ev: Event) -> bytes:
                if isinstance(ev, TextDelta):
                    return b"".join(frame(e) for e in builder.feed(pieces(ev)))
                if isinstance(ev, Finished):
                    events = builder.feed(last_pieces()) + builder.finish(ev)
                    return b"".join(frame(e) for e in events)
                if isinstance(ev, Failed):
                    return frame(mapper.anthropic_envelope(error_of(ev)))
                return b""

            await self.stream(render)


class CountTokensHandler(AnthropicHandler):
    endpoint = "messages.count_tokens"
    id_prefix = "tok-"

    async def post(self) -> None:
        req = at.parse_count_tokens_request(self.body)
        self.log_model = req.model
        translated = to_chat(req)
        try:
            await self._count(req, translated)
        except errors.HearthError as exc:
            self.relabel(exc, translated)
            raise

    async def _count(self, req: at.CountTokensRequest, translated: Translated) -> None:
        response_grammar(translated.chat)  # a schema create would refuse is refused here too
        model, messages, plan = self.chat_prompt(translated.chat)
        at.check_thinking(req.thinking, None, plan.thinking is not Thinking.NONE)
        frontend, key_name = self.job_owner()
        # add_special: BOS as the chat prompt has it, so the count is a create's input tokens
        job = TokenizeJob(self.new_request_id(), frontend, key_name, model, messages=messages,
                          tools=plan.job_tools(), add_special=True)
        async with self.submitted(job) as event:
            if event is None:
                return
            assert isinstance(event, Tokenized)
        self.write_json(at.CountTokensResponse(len(event.tokens)))
