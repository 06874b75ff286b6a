"""POST {prefix}/chat/completions — streaming (SSE) and not.

The handler waits for the request's first event before committing to a status: ``Started``
means 200 (and, for a stream, the SSE headers); ``Failed`` means the mapped error status. After
that, a failure is a ``data: {"error": …}`` event followed by ``data: [DONE]``. A client that
disconnects cancels its request (queued: dropped; running: the slot is freed at the next step).
"""

from __future__ import annotations

import asyncio
import time

import msgspec
from hearth.api import errors as mapper
from hearth.api import sse, wire
from hearth.api.handlers.base import AppState, BaseHandler
from hearth.api.metrics import TokenTimer
from hearth.scheduler import errors
from hearth.scheduler.messages import Delta, Event, Failed, Finished, Started, Submit
from tornado.iostream import StreamClosedError


def _usage(fin: Finished) -> wire.Usage:
    return wire.Usage(fin.prompt_tokens, fin.completion_tokens,
                      fin.prompt_tokens + fin.completion_tokens,
                      wire.PromptTokensDetails(fin.cached_tokens))


def _error(event: Failed) -> errors.HearthError:
    return errors.rebuild(event.kind, event.message, event.param)


class _StreamSummary:
    """What a stream said, for the --verbose log: its text joined, not every chunk."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.error: object = None

    def encode(self) -> bytes:
        doc: dict[str, object] = {"stream": True, "content": "".join(self.parts),
                                  "finish_reason": self.finish_reason}
        if self.error is not None:
            doc["error"] = self.error
        return msgspec.json.encode(doc)


class ChatCompletionsHandler(BaseHandler):
    endpoint = "chat.completions"

    def initialize(self, state: AppState) -> None:
        super().initialize(state)
        self._rid: str | None = None
        self._closed = False
        self._summary: _StreamSummary | None = None  # a stream's, kept with --verbose only

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._closed = True
        if self._rid is not None:
            self.state.bridge.cancel(self._rid)

    async def post(self) -> None:
        req = wire.parse_chat_request(self.body)
        self.log_model = req.model
        messages = wire.chat_messages(req)
        params = wire.sampling_params(req)
        entry = self.state.registry.resolve(req.model)  # a file stem, or an alias of one
        if entry is None:
            raise errors.ModelNotFound(
                f"The model '{req.model}' does not exist. GET {self.state.settings.api_prefix}"
                "/models lists the models this server has.", param="model")
        self.model_label = entry.id
        bridge = self.state.bridge
        rid = bridge.new_request_id()
        assert self.key_name is not None
        self._rid = rid
        if self._closed:  # the client left while the request was being read
            return
        timer = self.state.metrics.token_timer(self.model_label, self.request.request_time())
        try:
            _, first = await bridge.run(
                Submit(rid, bridge.frontend, self.key_name, entry.id, messages, params))
            if first is None:
                return
            if isinstance(first, Failed):
                raise _error(first)
            assert isinstance(first, Started)
            self.prompt_tokens, self.completion_tokens = first.prompt_tokens, 0
            created = int(time.time())
            if req.stream:
                include_usage = bool(req.stream_options and req.stream_options.include_usage)
                await self._stream(rid, created, req.model, include_usage, timer)
            else:
                await self._collect(rid, created, req.model, timer)
        finally:
            bridge.done(rid)

    def _add_tokens(self, n: int) -> None:
        self.completion_tokens = (self.completion_tokens or 0) + n

    def response_body_for_log(self) -> bytes | None:
        if self._summary is not None:
            return self._summary.encode()
        return super().response_body_for_log()

    def _count_usage(self, fin: Finished) -> None:
        self.prompt_tokens, self.completion_tokens = fin.prompt_tokens, fin.completion_tokens
        self.state.metrics.usage(self.model_label, fin.prompt_tokens, fin.completion_tokens,
                                 fin.cached_tokens)

    async def _collect(self, rid: str, created: int, model: str, timer: TokenTimer) -> None:
        """Gather the text in the bridge's reader (``gather``) and wake this handler once, at
        the request's last event, instead of once per token."""
        parts: list[str] = []
        last: asyncio.Future[Event | None] = asyncio.get_running_loop().create_future()

        def gather(ev: Event | None) -> None:
            if last.done():
                return
            if isinstance(ev, Delta):
                parts.append(ev.text)
                if ev.tokens:
                    timer.token()
                    self._add_tokens(ev.tokens)
            elif ev is None or isinstance(ev, (Finished, Failed)):
                last.set_result(ev)

        self.state.bridge.attach(rid, gather)
        event = await last
        if isinstance(event, Finished):
            self._count_usage(event)
            self.write_json(wire.ChatCompletion(
                id=rid, created=created, model=model,
                choices=[wire.Choice(0, wire.ResponseMessage("assistant", "".join(parts)),
                                     event.finish_reason)],
                usage=_usage(event)))
        elif isinstance(event, Failed):
            raise _error(event)

    async def _stream(self, rid: str, created: int, model: str, include_usage: bool,
                      timer: TokenTimer) -> None:
        """Send the headers and the role chunk, then write each event's chunk straight from the
        bridge's reader (``deliver``): one socket write per step's delta, with no queue or task
        wake-up between ZeroMQ and the client. A slow client's chunks pile up in Tornado's write
        buffer; one that leaves is cancelled by ``on_connection_close``."""
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        chunks = sse.ChunkEncoder(rid, created, model)
        summary = self._summary = _StreamSummary() if self.state.settings.verbose else None
        self.write(chunks.role())
        try:
            await self.flush()  # the headers, through Tornado's handler
        except StreamClosedError:
            self.on_connection_close()
            return
        connection = self.request.connection
        assert connection is not None
        ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def deliver(ev: Event | None) -> None:
            if ended.done():
                return
            if ev is None:  # given up: the client is gone
                ended.set_result(False)
                return
            if isinstance(ev, Delta):
                if ev.tokens:
                    timer.token()
                    self._add_tokens(ev.tokens)
                if ev.text:
                    connection.write(chunks.content(ev.text))
                    if summary is not None:
                        summary.parts.append(ev.text)
                return
            out = []
            if isinstance(ev, Finished):
                self._count_usage(ev)
                if summary is not None:
                    summary.finish_reason = ev.finish_reason
                out.append(chunks.finish(ev.finish_reason))
                if include_usage:
                    out.append(chunks.usage(_usage(ev)))
            elif isinstance(ev, Failed):
                envelope = mapper.envelope(_error(ev))
                out.append(sse.event(envelope))
                if summary is not None:
                    summary.error = envelope
            else:
                return
            out.append(sse.DONE)
            connection.write(b"".join(out))
            ended.set_result(True)

        self.state.bridge.attach(rid, deliver)
        if await ended:
            self.finish()
