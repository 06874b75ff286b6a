"""api.bridge.Bridge with real ZeroMQ sockets in this process: events reach a request's queue
until a handler attaches a sink, then the sink, in order, with nothing lost or repeated; a
cancel tells the scheduler and ends the sink; a sink that raises is cancelled without stopping
the other requests' events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import get_args

import msgspec
import pytest
import zmq
from hearth.api.bridge import Bridge, RequestIdPrefix
from hearth.scheduler import errors
from hearth.scheduler.messages import (
    Cancel,
    ChatJob,
    ChatMessage,
    Codec,
    Event,
    EventBatch,
    Failed,
    Finished,
    RequestedSampling,
    Started,
    TextDelta,
)

Events = list[Event | None]


class Wire:
    """The scheduler's intake (PULL) and a worker's event socket (PUB) around one Bridge."""

    def __init__(self, tmp_path: Path) -> None:
        self.codec = Codec()
        self.zctx = zmq.Context()
        self.intake = self.zctx.socket(zmq.PULL)
        self.intake.bind(f"ipc://{tmp_path}/intake")
        self.bridge = Bridge(f"ipc://{tmp_path}/intake", f"ipc://{tmp_path}/events")
        self.pub = self.zctx.socket(zmq.PUB)
        self.pub.connect(f"ipc://{tmp_path}/events")

    def publish(self, *events: Event) -> None:
        self.pub.send_multipart([self.bridge.frontend.encode(),
                                 self.codec.encode(EventBatch(list(events)))])

    async def joined(self) -> None:
        """PUB drops everything until the SUB's subscription arrives: probe until it has."""
        probe = self.submit("probe")
        for _ in range(500):
            self.publish(Started("probe", 1, 0))
            await asyncio.sleep(0.01)
            if not probe.empty():
                break
        else:
            raise AssertionError("the bridge never received an event")
        self.bridge.done("probe")

    def submit(self, rid: str) -> asyncio.Queue[Event | None]:
        """A request in flight (its ChatJob, pushed to the intake, is read and dropped)."""
        queue = self.bridge.submit(ChatJob(rid, self.bridge.frontend, "k", "m",
                                           [ChatMessage("user", "hi")], RequestedSampling()))
        assert isinstance(self.codec.to_scheduler.decode(self.intake.recv()), ChatJob)
        return queue

    def close(self) -> None:
        self.bridge.close()
        self.intake.close(0)
        self.pub.close(0)
        self.zctx.term()


def run(tmp_path: Path, body: Callable[[Wire], Awaitable[None]]) -> None:
    async def main() -> None:
        wire = Wire(tmp_path)
        try:
            wire.bridge.start()
            await wire.joined()
            await asyncio.wait_for(body(wire), 10)
        finally:
            wire.close()

    asyncio.run(main())


async def settle(until: Callable[[], bool]) -> None:
    for _ in range(500):
        if until():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def test_attach_hands_queued_events_then_later_ones_to_the_sink(tmp_path: Path) -> None:
    async def body(w: Wire) -> None:
        queue = w.submit("r")
        w.publish(Started("r", 5, 0), TextDelta("r", "a", 1))
        await settle(lambda: queue.qsize() == 2)
        got: Events = []
        w.bridge.attach("r", got.append)
        assert [type(e) for e in got] == [Started, TextDelta] and queue.empty()
        w.publish(TextDelta("r", "b", 1), TextDelta("r", "c", 1), Finished("r", "stop", 5, 3, 0))
        await settle(lambda: len(got) == 5)
        assert "".join(e.text for e in got if isinstance(e, TextDelta)) == "abc"
        assert queue.empty()  # nothing went to the queue once the sink was there

    run(tmp_path, body)


def test_cancel_tells_the_scheduler_and_ends_the_sink(tmp_path: Path) -> None:
    async def body(w: Wire) -> None:
        w.submit("r")
        got: Events = []
        w.bridge.attach("r", got.append)
        w.bridge.cancel("r")
        assert got == [None]
        assert w.intake.poll(2000)
        assert w.codec.to_scheduler.decode(w.intake.recv()) == Cancel("r")
        w.publish(TextDelta("r", "late", 1))
        await asyncio.sleep(0.1)
        assert got == [None]  # events after the cancel go nowhere
        late: Events = []
        w.bridge.attach("r", late.append)  # attaching to a request already given up
        assert late == [None]

    run(tmp_path, body)


def test_a_sink_that_raises_is_cancelled_and_the_others_go_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def body(w: Wire) -> None:
        for rid in ("bad", "good"):
            w.submit(rid)
        seen: Events = []

        def bad(ev: Event | None) -> None:
            seen.append(ev)
            if ev is not None:
                raise RuntimeError("handler bug")

        good: Events = []
        w.bridge.attach("bad", bad)
        w.bridge.attach("good", good.append)
        w.publish(TextDelta("bad", "x", 1), TextDelta("good", "y", 1), TextDelta("bad", "z", 1))
        await settle(lambda: len(good) == 1)
        await asyncio.sleep(0.05)
        assert [type(e) for e in good] == [TextDelta]
        assert [type(e).__name__ for e in seen] == ["TextDelta", "NoneType"]  # then nothing
        assert w.intake.poll(2000)
        assert w.codec.to_scheduler.decode(w.intake.recv()) == Cancel("bad")

    with caplog.at_level(logging.ERROR, logger="hearth.api"):
        run(tmp_path, body)
    assert any("bad" in r.getMessage() for r in caplog.records)


def test_fail_in_flight_reaches_queues_and_sinks(tmp_path: Path) -> None:
    async def body(w: Wire) -> None:
        queue = w.submit("q")
        w.submit("s")
        got: Events = []
        w.bridge.attach("s", got.append)
        w.bridge.fail_in_flight(errors.ShuttingDown("bye"))
        failed = queue.get_nowait()
        assert failed is not None and failed.kind == "ShuttingDown"  # type: ignore[union-attr]
        assert len(got) == 1 and got[0].kind == "ShuttingDown"  # type: ignore[union-attr]

    run(tmp_path, body)


def test_an_unknown_error_kind_ends_its_request_as_internal_error(tmp_path: Path) -> None:
    # a peer (a newer worker) sends a kind this api does not know, in a batch with another
    # request's event: the reader keeps going, that request ends, the other one is served
    async def body(w: Wire) -> None:
        failing, other = w.submit("f"), w.submit("o")
        w.pub.send_multipart([w.bridge.frontend.encode(), msgspec.msgpack.encode({"events": [
            {"type": "error", "request_id": "f", "kind": "FromTheFuture", "message": "odd",
             "param": "x"},
            {"type": "started", "request_id": "o", "prompt_tokens": 3}]})])
        failed = await failing.get()
        assert isinstance(failed, Failed) and failed.kind is errors.ErrorKind.INTERNAL_ERROR
        exc = errors.rebuild(failed.kind, failed.message, failed.param)
        assert type(exc) is errors.InternalError
        assert (exc.message, exc.param) == ("odd", "x")
        assert await other.get() == Started("o", 3)
        w.publish(Finished("o", "stop", 3, 1))
        assert isinstance(await other.get(), Finished)

    run(tmp_path, body)


@pytest.mark.parametrize("prefix", list(get_args(RequestIdPrefix)))
def test_request_ids_carry_their_kinds_prefix(prefix: RequestIdPrefix) -> None:
    a, b = Bridge.new_request_id(prefix), Bridge.new_request_id(prefix)
    assert a.startswith(prefix) and b.startswith(prefix) and a != b
    tail = a[len(prefix):]
    assert len(tail) == 32 and int(tail, 16) >= 0


def test_in_flight_by_key_counts_requests_until_done_or_cancelled(tmp_path: Path) -> None:
    async def body(w: Wire) -> None:
        assert w.bridge.in_flight_by_key() == {}
        w.submit("a")
        w.submit("b")
        assert w.bridge.in_flight_by_key() == {"k": 2}  # Wire's jobs come from key name "k"
        w.bridge.done("a")
        assert w.bridge.in_flight_by_key() == {"k": 1}
        w.bridge.cancel("b")
        assert w.bridge.in_flight_by_key() == {}

    run(tmp_path, body)
