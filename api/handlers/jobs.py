"""The one road of every job endpoint: chat completions, completions, embeddings and tokenize /
detokenize today; the Responses API and Anthropic Messages next.

A job endpoint translates one HTTP request into one job message for the scheduler (``ChatJob``,
``EmbedJob``) and that job's events back into its API's wire shape. Everything in between is the
same for each of them and lives here, on :class:`JobHandler`:

1. :meth:`~JobHandler.resolve_model` — the registry's entry for the request's ``model`` (a file
   stem, or an alias of one), or the one model-not-found error (404, ``param: "model"``). The
   scheduler checks the id again only because the file may go away in between.
2. :meth:`~JobHandler.new_request_id` — the id the client sees, with the prefix of its API's own
   ids (``id_prefix``: ``chatcmpl-``, ``embd-``; ``cmpl-``, ``resp_`` and ``msg_`` are ready).
   From then on a client that disconnects cancels the job (queued: dropped; running: its slot is
   freed at the next step).
3. :meth:`~JobHandler.submitted` — an ``async with`` block: submit through the bridge and wait
   for the job's first event. A ``Failed`` first event raises its error there, so the status is
   chosen before anything is written; None means the client left. The bridge forgets the job
   when the block ends.
4. Then one of :meth:`~JobHandler.gather` (the whole answer in one body) or
   :meth:`~JobHandler.open_stream` and :meth:`~JobHandler.stream` (server-sent events). Both count
   the tokens (metrics' time to first token and between tokens, the request log's usage) and
   the final usage; after the first event, a failure is the endpoint's own error event.

A request answered by several jobs (a completions request with a list of prompts) takes one
``new_request_id()`` per job, submits them with :meth:`~JobHandler.submitted_all` and reads
them with :meth:`~JobHandler.gather_all` or ``stream(render, ids)``: usage is summed, a
disconnect cancels every job, and the first failure cancels the others.

A new endpoint subclasses :class:`JobHandler`, sets ``endpoint`` and ``id_prefix``, and writes
``post``: parse the body (``self.log_model = req.model`` first, so the log names it even when
the body is refused), ``resolve_model``, build the job with ``new_request_id()`` and
``job_owner()``, then ``async with self.submitted(job) as first`` and answer. Only the wire
shape is its own: the chunks it renders in ``stream`` and the body it writes after ``gather``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import ClassVar

import msgspec
from hearth.api import errors as mapper
from hearth.api.bridge import RequestIdPrefix
from hearth.api.handlers.base import AppState, BaseHandler
from hearth.api.metrics import TokenTimer
from hearth.scheduler import errors
from hearth.scheduler.messages import Event, Failed, Finished, Job, Started, TextDelta
from hearth.tools.registry import ModelEntry
from tornado.iostream import StreamClosedError

# Turns one event of a stream into the bytes to write for it (b"": nothing). Called in the
# bridge's reader callback: it must not block.
Render = Callable[[Event], bytes]


class StreamSummary:
    """What a stream said, for the --verbose log: its text joined, not every chunk."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.error: object = None  # the error's OpenAI envelope, whatever the stream's API

    def encode(self) -> bytes:
        doc: dict[str, object] = {"stream": True, "content": "".join(self.parts),
                                  "finish_reason": self.finish_reason}
        if self.error is not None:
            doc["error"] = self.error
        return msgspec.json.encode(doc)


class Finishes:
    """The ``Finished`` events of a request's jobs: a job of n choices (``ChatJob.n``) ends
    after n of them, one per choice ``index``. Usage counts each job's prompt once (every
    choice's event repeats it: the prompt was evaluated once) and every choice's tokens, as
    OpenAI counts a request with ``n``."""

    def __init__(self, request_ids: list[str], choices: int = 1) -> None:
        self.request_ids, self.choices = request_ids, choices
        self.by_job: dict[str, list[Finished]] = {rid: [] for rid in request_ids}
        self.count = 0

    def add(self, ev: Finished) -> bool:
        """Record one; True when it was the last of every job."""
        self.by_job[ev.request_id].append(ev)
        self.count += 1
        return self.done

    @property
    def done(self) -> bool:
        return self.count >= len(self.request_ids) * self.choices

    def ordered(self) -> list[Finished]:
        """Every choice's event: by job (in ``request_ids`` order), then by choice index."""
        return [ev for rid in self.request_ids
                for ev in sorted(self.by_job[rid], key=lambda e: e.index)]

    def totals(self) -> tuple[int, int, int]:
        """(prompt, completion, cached) tokens of the whole request."""
        firsts = [evs[0] for evs in self.by_job.values() if evs]
        return (sum(ev.prompt_tokens for ev in firsts),
                sum(ev.completion_tokens for evs in self.by_job.values() for ev in evs),
                sum(ev.cached_tokens for ev in firsts))


def error_of(event: Failed) -> errors.HearthError:
    """The exception a job's ``Failed`` event stands for."""
    return errors.rebuild(event.kind, event.message, event.param)


class JobHandler(BaseHandler):
    """Base of the handlers that run a job on a model's worker (see the module docstring).

    One instance serves one request, on the api's event loop; nothing here blocks it."""

    id_prefix: ClassVar[RequestIdPrefix]

    def initialize(self, state: AppState) -> None:
        super().initialize(state)
        self.request_ids: list[str] = []  # from new_request_id; all cancelled on disconnect
        self._summary: StreamSummary | None = None  # a stream's, kept with --verbose only

    @property
    def request_id(self) -> str | None:
        """The request's (first) job id: the id the client sees."""
        return self.request_ids[0] if self.request_ids else None

    def on_connection_close(self) -> None:
        super().on_connection_close()
        for rid in self.request_ids:
            self.state.bridge.cancel(rid)

    def resolve_model(self, name: str) -> ModelEntry:
        """The model ``name`` (a request's ``model``) stands for, resolved once per request."""
        entry = self.state.registry.resolve(name)
        if entry is None:
            entry = self._remote_entry(name)
        if entry is None:
            raise errors.ModelNotFound.named(name)
        self.model_label = entry.id
        return entry

    def _remote_entry(self, name: str) -> ModelEntry | None:
        """A model with no file here that a remote worker serves (``hearth worker --join``):
        an entry without header facts (``info`` None, as for a file whose header cannot be
        read), so requests go to the scheduler, which routes them to that worker."""
        status = self.state.bridge.fresh_status()
        if status is None or not any(m.model == name and m.state == "ready" and
                                     any(w != "local" for w in m.workers)
                                     for m in status.models):
            return None
        return ModelEntry(id=name, path=Path(name), size=0, created=0, info=None)

    def new_request_id(self) -> str:
        """A job id, prefixed for its API (the first one is the id the client sees; a request
        that runs several jobs, such as a completions request with several prompts, asks for
        one per job); a disconnect from now on cancels the job."""
        rid = self.state.bridge.new_request_id(self.id_prefix)
        self.request_ids.append(rid)
        return rid

    def choices(self, n: int | None) -> int:
        """A request's ``n`` (None: 1), or InvalidRequest (``param: "n"``) above --max-n.
        (``n`` < 1 is refused by the request's type; more than the model's slots or than
        --max-per-key, by the scheduler, which knows the model's slots.)"""
        most = self.state.settings.max_n
        if n is None:
            return 1
        if n > most:
            raise errors.InvalidRequest(f"'n' is {n}; this server gives at most {most} choices "
                                        "per request (--max-n).", param="n")
        return n

    def job_owner(self) -> tuple[str, str]:
        """(frontend, key name) for a job message: where its events go, whose queue it is in."""
        assert self.key_name is not None  # job endpoints are never public
        return self.state.bridge.frontend, self.key_name

    @contextlib.asynccontextmanager
    async def submitted(self, job: Job) -> AsyncIterator[Event | None]:
        """Submit ``job`` and give its first event (``Started`` for a generation, the result
        for a one-event job such as ``Embedded``), or None when the client has left. A
        ``Failed`` first event is raised as its error."""
        async with self.submitted_all([job]) as firsts:
            yield None if firsts is None else firsts[0]

    @contextlib.asynccontextmanager
    async def submitted_all(self, jobs: list[Job]) -> AsyncIterator[list[Event] | None]:
        """Submit ``jobs`` together (they queue and run side by side) and give each one's first
        event, in order, or None when the client has left. If any job's first event is
        ``Failed``, the others are cancelled and that error is raised."""
        bridge = self.state.bridge
        try:
            firsts: list[Event] | None = None
            if not self.client_gone:  # it may have left while the body was being read
                got = [first for _, first in
                       await asyncio.gather(*(bridge.run(job) for job in jobs))]
                failed = next((ev for ev in got if isinstance(ev, Failed)), None)
                if failed is not None:
                    for job in jobs:
                        bridge.cancel(job.request_id)
                    raise error_of(failed)
                if all(ev is not None for ev in got):
                    firsts = [ev for ev in got if ev is not None]
            if firsts and all(isinstance(ev, Started) for ev in firsts):
                # logged as such if the client leaves mid-answer
                self.prompt_tokens = sum(ev.prompt_tokens for ev in firsts
                                         if isinstance(ev, Started))
                self.completion_tokens = 0
            yield firsts
        finally:
            for job in jobs:
                bridge.done(job.request_id)

    def count_usage(self, prompt: int, completion: int, cached: int = 0) -> None:
        """A job's final usage, for the request log and the metrics."""
        self.prompt_tokens, self.completion_tokens = prompt, completion
        self.state.metrics.usage(self.model_label, prompt, completion, cached)

    def _token_timer(self) -> TokenTimer:
        # Timed from the request's arrival, whenever it is made.
        return self.state.metrics.token_timer(self.model_label, self.request.request_time())

    def _count_tokens(self, delta: TextDelta, timer: TokenTimer) -> None:
        if delta.tokens:
            timer.token((delta.request_id, delta.index))
            self.completion_tokens = (self.completion_tokens or 0) + delta.tokens

    async def gather(self, on_delta: Callable[[TextDelta], None]) -> Finished | None:
        """Hand each of the job's deltas to ``on_delta`` in the bridge's reader and wake this
        handler once, at the job's last event, instead of once per token. Returns the
        ``Finished`` event (its usage counted), or None when the client has left; raises a
        ``Failed`` event's error (nothing has been written yet)."""
        assert self.request_id is not None
        done = await self.gather_all(on_delta, [self.request_id])
        return None if done is None else done[0]

    async def gather_all(self, on_delta: Callable[[TextDelta], None],
                         request_ids: list[str], choices: int = 1) -> list[Finished] | None:
        """:meth:`gather` for several jobs at once, each of ``choices`` choices: every
        choice's ``Finished``, in the order of ``request_ids`` then of choice index, their
        usage counted (see :class:`Finishes`); None when the client has left. The first
        ``Failed`` cancels the others and is raised."""
        timer = self._token_timer()
        finished = Finishes(request_ids, choices)
        # True: every job finished; a Failed: that one failed; None: the client has left
        outcome: asyncio.Future[Failed | bool | None] = \
            asyncio.get_running_loop().create_future()

        def sink_for(rid: str) -> Callable[[Event | None], None]:
            def sink(ev: Event | None) -> None:
                if outcome.done():
                    return
                if isinstance(ev, TextDelta):
                    on_delta(ev)
                    self._count_tokens(ev, timer)
                elif isinstance(ev, Finished):
                    if finished.add(ev):
                        outcome.set_result(True)
                elif ev is None or isinstance(ev, Failed):
                    outcome.set_result(ev)
            return sink

        for rid in request_ids:
            self.state.bridge.attach(rid, sink_for(rid))
        result = await outcome
        if result is not True:
            for rid in request_ids:  # the others' work is of no use now
                self.state.bridge.cancel(rid)
            if isinstance(result, Failed):
                raise error_of(result)
            return None
        self.count_usage(*finished.totals())
        return finished.ordered()

    async def open_stream(self, head: bytes) -> bool:
        """Send a stream's headers and its first bytes (``head``). False: the client has left
        (the job is cancelled)."""
        self.set_header("Content-Type", "text/event-stream; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")
        if self.state.settings.verbose:
            self._summary = StreamSummary()
        self.write(head)
        try:
            await self.flush()  # the headers, through Tornado's handler
        except StreamClosedError:
            self.on_connection_close()
            return False
        return True

    async def stream(self, render: Render, request_ids: list[str] | None = None,
                     choices: int = 1) -> None:
        """Write each of the jobs' events as ``render`` turns it into bytes, straight from the
        bridge's reader: one socket write per step's delta, with no queue or task wake-up
        between ZeroMQ and the client. ``request_ids``: the jobs of a request that runs
        several (default: the one), each of ``choices`` choices. The stream ends when every
        choice of every job has sent ``Finished`` (usage counted as :class:`Finishes` does)
        or at the first ``Failed`` (``render`` writes the
        API's error event; the other jobs are cancelled). A slow client's bytes pile up in
        Tornado's write buffer; one that leaves is cancelled by ``on_connection_close``."""
        if request_ids is None:
            assert self.request_id is not None
            request_ids = [self.request_id]
        connection = self.request.connection
        assert connection is not None
        timer = self._token_timer()
        summary = self._summary
        ended: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        finished = Finishes(request_ids, choices)

        def deliver(ev: Event | None) -> None:
            if ended.done():
                return
            if ev is None:  # given up: the client is gone
                ended.set_result(False)
                return
            if isinstance(ev, TextDelta):
                self._count_tokens(ev, timer)
                if summary is not None and ev.text:
                    summary.parts.append(ev.text)
            elif isinstance(ev, Finished):
                if finished.add(ev):
                    self.count_usage(*finished.totals())
                if summary is not None:
                    summary.finish_reason = ev.finish_reason
            elif isinstance(ev, Failed):
                self.stream_error = error_of(ev)
                if summary is not None:
                    summary.error = mapper.envelope(self.stream_error)
            out = render(ev)
            if out:
                connection.write(out)
            if isinstance(ev, Failed) or finished.done:
                ended.set_result(True)

        for rid in request_ids:
            self.state.bridge.attach(rid, deliver)
        if await ended:
            if not finished.done:  # a Failed: the others' work is of no use
                for rid in request_ids:
                    self.state.bridge.cancel(rid)
            self.finish()

    def response_body_for_log(self) -> bytes | None:
        if self._summary is not None:
            return self._summary.encode()
        return super().response_body_for_log()
