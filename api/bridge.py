"""The api's side of ZeroMQ: requests out to the scheduler, events back to waiting handlers.

One Bridge per api process, living on its asyncio loop. ``submit`` pushes a job (ChatJob, EmbedJob)
and returns the asyncio.Queue that the request's events (Started, TextDelta, Finished, Failed,
Embedded) will arrive on.
A streaming handler then ``attach``es a sink: a function called with each later event as it is
read, so a token reaches the client's socket in the same callback that read it from ZeroMQ, not
through a queue and a task wake-up.
The SUB socket is bound here with an unbounded high-water mark, so no event is dropped while a
handler is slow; events for a request nobody waits for any more are discarded.

The sockets are plain (not ``zmq.asyncio``): the SUB socket's file descriptor is watched with the
loop's ``add_reader`` and every waiting message is read in one callback. This is the hot path of
streaming (one message per step per api process), and zmq.asyncio's futures per ``recv`` cost
more CPU than the rest of a token's trip through the api — CPU taken from llama.cpp's threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Literal

import msgspec
import zmq
from hearth.scheduler.errors import ErrorKind, HearthError
from hearth.scheduler.messages import (
    STATUS_TOPIC,
    Cancel,
    Codec,
    Event,
    Failed,
    Job,
    SchedulerStatus,
)

STATUS_STALE_S = 5.0
log = logging.getLogger("hearth.api")

# Called with each event of one request, then None if the request is given up (client gone).
# It runs inside the bridge's reader callback: it must not block, and should not raise.
Sink = Callable[[Event | None], None]

# What a request's id starts with, per kind of job (the ids the OpenAI and Anthropic APIs give):
# chat completions, embeddings, completions, Responses, Anthropic Messages; tokenize and
# detokenize (hearth's own: their ids are never shown).
RequestIdPrefix = Literal["chatcmpl-", "embd-", "cmpl-", "resp_", "msg_", "tok-"]


class Bridge:
    def __init__(self, intake_endpoint: str, events_endpoint: str) -> None:
        self.frontend = uuid.uuid4().hex
        self._codec = Codec()
        self._zctx = zmq.Context()
        self._push = self._zctx.socket(zmq.PUSH)
        self._push.setsockopt(zmq.SNDHWM, 0)
        self._push.setsockopt(zmq.LINGER, 0)
        self._push.connect(intake_endpoint)
        self._sub = self._zctx.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, 0)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.bind(events_endpoint)
        self._sub.setsockopt(zmq.SUBSCRIBE, self.frontend.encode())
        self._sub.setsockopt(zmq.SUBSCRIBE, STATUS_TOPIC)
        self._waiting: dict[str, asyncio.Queue[Event | None]] = {}
        self._sinks: dict[str, Sink] = {}  # requests whose events go straight to a handler
        self._key_of: dict[str, str] = {}  # request id -> key name, while it is in flight
        self.status: SchedulerStatus | None = None
        self._status_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = int(self._sub.getsockopt(zmq.FD))

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._receive)
        self._loop.call_soon(self._receive)  # anything that arrived before the reader was set

    def _receive(self) -> None:
        """Read every message waiting on the SUB socket. ZeroMQ's descriptor only signals that
        its state changed (edge-triggered), so read until EVENTS says nothing is left."""
        sub, events = self._sub, self._codec.events
        while int(sub.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            try:
                topic, raw = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                if topic == STATUS_TOPIC:
                    self.status = self._codec.status.decode(raw)
                    self._status_at = time.monotonic()
                    continue
                batch = events.decode(raw)
            except (msgspec.DecodeError, ValueError):
                continue
            for event in batch.events:
                sink = self._sinks.get(event.request_id)
                if sink is not None:
                    self._deliver(event.request_id, sink, event)
                    continue
                queue = self._waiting.get(event.request_id)
                if queue is not None:
                    queue.put_nowait(event)

    def _deliver(self, request_id: str, sink: Sink, event: Event | None) -> None:
        try:
            sink(event)
        except Exception:  # one handler's bug must not stop the events of the others
            log.exception("delivering an event of %s failed; the request is cancelled",
                          request_id)
            self.cancel(request_id)

    def fresh_status(self) -> SchedulerStatus | None:
        """The scheduler's last status, or None if it has gone quiet (dead or not started)."""
        if self.status is None or time.monotonic() - self._status_at > STATUS_STALE_S:
            return None
        return self.status

    @staticmethod
    def new_request_id(prefix: RequestIdPrefix) -> str:
        """A fresh request id: ``prefix`` and 32 random hex digits. It is also the id the
        client sees in the answer, so it carries the prefix of its API's own ids."""
        return f"{prefix}{uuid.uuid4().hex}"

    def submit(self, req: Job) -> asyncio.Queue[Event | None]:
        data = self._codec.encode(req)
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._waiting[req.request_id] = queue
        self._key_of[req.request_id] = req.key_name
        self._push.send(data)
        return queue

    async def run(self, req: Job, retries: int = 1) -> tuple[asyncio.Queue[Event | None],
                                                             Event | None]:
        """Submit ``req`` and wait for its first event. A request whose worker died before it
        produced anything is submitted again (``retries`` times): nothing has reached the
        client yet, so the retry is invisible to it."""
        queue = self.submit(req)
        while True:
            first = await queue.get()
            if isinstance(first, Failed) and first.kind is ErrorKind.WORKER_DIED and retries > 0 \
                    and req.request_id in self._waiting:
                retries -= 1
                self._push.send(self._codec.encode(req))
                continue
            return queue, first

    def attach(self, request_id: str, sink: Sink) -> None:
        """From now on hand ``request_id``'s events to ``sink`` as they are read (those already
        queued first). A request given up already gets None at once."""
        queue = self._waiting.get(request_id)
        if queue is None:
            sink(None)
            return
        self._sinks[request_id] = sink
        while not queue.empty() and request_id in self._sinks:
            self._deliver(request_id, sink, queue.get_nowait())

    def cancel(self, request_id: str) -> None:
        """The client went away: stop waiting, and tell the scheduler to free the work."""
        queue = self._waiting.pop(request_id, None)
        sink = self._sinks.pop(request_id, None)
        self._key_of.pop(request_id, None)
        if queue is not None:
            self._push.send(self._codec.encode(Cancel(request_id)))
            queue.put_nowait(None)  # wake the handler
            if sink is not None:
                self._deliver(request_id, sink, None)  # (a raise there cancels nothing more)

    def in_flight(self) -> int:
        """Requests submitted and not yet done (their handlers still wait on them)."""
        return len(self._waiting)

    def in_flight_by_key(self) -> dict[str, int]:
        """Requests in flight (as :meth:`in_flight` counts them) by API key *name*."""
        counts: dict[str, int] = {}
        for request_id in self._waiting:
            name = self._key_of.get(request_id, "-")
            counts[name] = counts.get(name, 0) + 1
        return counts

    def fail_in_flight(self, exc: HearthError) -> None:
        """End every request in flight with ``exc`` as a Failed event (the api is going away):
        each handler answers it as it would a worker's error, instead of being cut off."""
        for request_id, queue in list(self._waiting.items()):
            sink = self._sinks.get(request_id)
            if sink is not None:
                self._deliver(request_id, sink, Failed.of(request_id, exc))
            else:
                queue.put_nowait(Failed.of(request_id, exc))

    def done(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)
        self._sinks.pop(request_id, None)
        self._key_of.pop(request_id, None)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
            self._loop = None
        self._push.close()
        self._sub.close()
        self._zctx.term()
