"""The OpenAI Responses API: ``POST {prefix}/responses`` (streamed or not) and the stored
responses' ``GET``/``DELETE {prefix}/responses/{id}`` and
``GET {prefix}/responses/{id}/input_items``.

A request is a translation into chat (:mod:`..responses_translate`): its job, tools, grammar and
every 400 are chat's (:meth:`ChatJobHandler.chat_turn`), re-labelled with the Responses field at
fault. The answer's text goes through chat's answer parser (:mod:`..chat_answer`) and its
pieces become output items and events (:mod:`..responses_events`), the same for a stream and a
whole answer. As for chat, the status is chosen at the job's first event; after that a failure
is an ``error`` event and ``response.failed``.

With ``store`` (the default) the final response and its input items are kept in the api's
:class:`~..responses_store.ResponseStore`, under the API key's name.
"""

from __future__ import annotations

import time

from hearth.api import errors as mapper
from hearth.api import responses_translate as translate
from hearth.api import responses_types as rt
from hearth.api.chat_answer import Answer, usage
from hearth.api.errors import ResponseNotFound
from hearth.api.handlers.base import BaseHandler
from hearth.api.handlers.chat_jobs import ChatJobHandler
from hearth.api.handlers.jobs import error_of
from hearth.api.responses_events import ResponseEvents, usage_of
from hearth.api.tool_parsers import Out, Text
from hearth.scheduler import errors
from hearth.scheduler.messages import Event, Failed, Finished, Started, TextDelta


def _response(rid: str, req: rt.ResponsesRequest) -> rt.Response:
    """The response object as it starts: the request's fields echoed, no output yet."""
    fmt = req.text.format if req.text is not None and req.text.format is not None \
        else rt.TextFormat("text")
    return rt.Response(
        id=rid, created_at=int(time.time()), model=req.model, status="in_progress", output=[],
        instructions=req.instructions, metadata=req.metadata or {},
        parallel_tool_calls=req.parallel_tool_calls is not False, temperature=req.temperature,
        top_p=req.top_p, tool_choice=req.tool_choice or "auto", tools=req.tools or [],
        max_output_tokens=req.max_output_tokens, previous_response_id=req.previous_response_id,
        store=req.store is not False, text=rt.TextConfig(fmt), user=req.user)


class _Pieces:
    """The answer's parser pieces, or its text as it comes when there is no parser (no tools
    offered and a model that does not think)."""

    def __init__(self, answer: Answer | None) -> None:
        self.answer = answer

    def feed(self, delta: TextDelta) -> list[Out]:
        if self.answer is None:
            return [Text(delta.text)]
        return self.answer.feed(delta)

    def finish(self) -> list[Out]:
        return [] if self.answer is None else self.answer.parser.finish()

    def usage(self, fin: Finished) -> rt.ResponseUsage:
        return usage_of(usage(fin) if self.answer is None else self.answer.usage(fin))


class ResponsesHandler(ChatJobHandler):
    endpoint = "responses"
    id_prefix = "resp_"

    def _owner(self) -> str:
        assert self.key_name is not None  # never a public endpoint
        return self.key_name

    async def post(self) -> None:
        req = rt.parse_request(self.body)
        self.log_model = req.model
        history: list[rt.Item] = []
        if req.previous_response_id is not None:
            previous = self.state.responses.get(self._owner(), req.previous_response_id)
            if previous is None:
                raise ResponseNotFound.with_id(req.previous_response_id, "previous_response_id")
            history = previous.conversation()
        items = translate.input_items(req)
        translated = translate.to_chat(req, items, history)
        try:
            await self._answer(req, translated, history + items)
        except errors.HearthError as exc:  # chat's: name the Responses field
            raise translated.relabel(exc) from None

    async def _answer(self, req: rt.ResponsesRequest, translated: translate.Translated,
                      input_items: list[rt.Item]) -> None:
        turn = self.chat_turn(translated.chat)
        pieces = _Pieces(turn.answer)
        builder = ResponseEvents(_response(turn.job.request_id, req))
        async with self.submitted(turn.job) as first:
            if first is None:
                return
            assert isinstance(first, Started)
            if req.stream:
                await self._stream(builder, pieces, input_items, translated)
            else:
                await self._collect(builder, pieces, input_items)

    def _keep(self, builder: ResponseEvents, input_items: list[rt.Item]) -> None:
        if builder.response.store:
            self.state.responses.put(self._owner(), builder.response, input_items)

    async def _collect(self, builder: ResponseEvents, pieces: _Pieces,
                       input_items: list[rt.Item]) -> None:
        outs: list[Out] = []
        event = await self.gather(lambda delta: outs.extend(pieces.feed(delta)))
        if event is None:
            return
        outs.extend(pieces.finish())
        builder.feed(outs)
        builder.finish(pieces.usage(event), event.finish_reason == "length")
        self._keep(builder, input_items)
        self.write_json(builder.response)

    async def _stream(self, builder: ResponseEvents, pieces: _Pieces,
                      input_items: list[rt.Item], translated: translate.Translated) -> None:
        if not await self.open_stream(b"".join(rt.sse(e) for e in builder.start())):
            return

        def render(ev: Event) -> bytes:
            if isinstance(ev, TextDelta):
                events = builder.feed(pieces.feed(ev))
            elif isinstance(ev, Finished):
                events = builder.feed(pieces.finish())
                events += builder.finish(pieces.usage(ev), ev.finish_reason == "length")
                self._keep(builder, input_items)
            elif isinstance(ev, Failed):
                body = mapper.envelope(translated.relabel(error_of(ev))).error
                events = builder.fail(body.code or body.type, body.message, body.param)
            else:
                return b""
            return b"".join(rt.sse(e) for e in events)

        await self.stream(render)


def refuse_query(handler: BaseHandler, **neutral: tuple[str, ...]) -> None:
    """A 400 naming the query argument ``include`` (any value but empty) or one of
    ``neutral``'s names with a value other than the ones given: what would change the answer
    and is not served. The SDKs send a list as ``include[]=…``."""
    rules = {"include": ("",), "include[]": ("",), **neutral}
    for name, passing in rules.items():
        value = handler.get_query_argument(name, None)
        if value is not None and value.lower() not in passing:
            param = name.removesuffix("[]")
            raise errors.InvalidRequest(f"'{param}' is not supported by this server.",
                                        param=param)


class StoredResponseHandler(BaseHandler):
    """``GET`` and ``DELETE {prefix}/responses/{id}``: the key's own stored responses only.
    OpenAI's ``GET`` query ``stream=true`` (replaying a background response's events) and
    ``include`` would change the answer: they are refused with a 400 naming them."""

    endpoint = "responses"

    def _found(self, response_id: str) -> rt.Response:
        assert self.key_name is not None
        refuse_query(self, stream=("false", ""))
        found = self.state.responses.get(self.key_name, response_id)
        if found is None:
            raise ResponseNotFound.with_id(response_id)
        return found.response

    def get(self, response_id: str) -> None:
        self.write_json(self._found(response_id))

    def delete(self, response_id: str) -> None:
        assert self.key_name is not None
        if not self.state.responses.delete(self.key_name, response_id):
            raise ResponseNotFound.with_id(response_id)
        self.write_json(rt.DeletedResponse(response_id))


MAX_PAGE = 100  # OpenAI's limit for list endpoints' ``limit``


class InputItemsHandler(BaseHandler):
    """``GET {prefix}/responses/{id}/input_items?limit=&order=&after=``: the input the model was
    given (the continued conversation, then the request's own input; not ``instructions``), a
    page at a time. ``order``: ``desc`` (OpenAI's default: newest first) or ``asc``; ``limit``
    1–100 (default 20); ``after``: an item id, the page starts after it. ``include`` is
    refused (400)."""

    endpoint = "responses"

    def get(self, response_id: str) -> None:
        assert self.key_name is not None
        found = self.state.responses.get(self.key_name, response_id)
        if found is None:
            raise ResponseNotFound.with_id(response_id)
        refuse_query(self)
        limit_text = self.get_query_argument("limit", "20")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_PAGE:
            raise errors.InvalidRequest(f"'limit' must be an integer from 1 to {MAX_PAGE}.",
                                        param="limit")
        order = self.get_query_argument("order", "desc")
        if order not in ("asc", "desc"):
            raise errors.InvalidRequest("'order' must be 'asc' or 'desc'.", param="order")
        items = list(found.input_items)
        if order == "desc":
            items.reverse()
        after = self.get_query_argument("after", None)
        if after is not None:
            ids = [item.id for item in items]
            if after not in ids:
                raise errors.InvalidRequest(f"'after' names no input item of response "
                                            f"'{response_id}'.", param="after")
            items = items[ids.index(after) + 1:]
        page = items[: int(limit_text)]
        self.write_json(rt.ItemList(page, page[0].id if page else None,
                                    page[-1].id if page else None, len(items) > len(page)))
