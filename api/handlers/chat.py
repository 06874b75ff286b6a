"""POST {prefix}/chat/completions — streaming (SSE) and not.

The handler waits for the request's first event before committing to a status: ``Started``
means 200 (and, for a stream, the SSE headers); ``Failed`` means the mapped error status. After
that, a failure is a ``data: {"error": …}`` event followed by ``data: [DONE]``. The road from
request to events (model, id, submit, cancel on disconnect, usage) is :mod:`.jobs`'.
"""

from __future__ import annotations

import time

from hearth.api import errors as mapper
from hearth.api import openai_types, sse
from hearth.api.handlers.jobs import JobHandler, error_of
from hearth.scheduler.messages import ChatJob, Event, Failed, Finished, Started, TextDelta


def _usage(fin: Finished) -> openai_types.Usage:
    return openai_types.Usage(fin.prompt_tokens, fin.completion_tokens,
                              fin.prompt_tokens + fin.completion_tokens,
                              openai_types.PromptTokensDetails(fin.cached_tokens))


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
        rid = self.new_request_id()
        frontend, key_name = self.job_owner()
        async with self.submitted(
                ChatJob(rid, frontend, key_name, entry.id, messages, params,
                        grammar)) as first:
            if first is None:
                return
            assert isinstance(first, Started)
            created = int(time.time())
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                await self._stream(rid, created, req.model, include_usage)
            else:
                await self._collect(rid, created, req.model)

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
