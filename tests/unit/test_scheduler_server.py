"""scheduler/server.py: the scheduler's sockets carry messages to and from its logic.

Real ZeroMQ sockets over inproc: the test plays the api (a PUSH into the intake, a SUB for the
events) and one worker (a DEALER); the worker factory hands back a fake process. The decisions
themselves are tested in test_scheduler_core.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import zmq
from fake_workers import EMPTY_GGUF, FakeProc
from hearth.scheduler.messages import (
    STATUS_TOPIC,
    Assign,
    Cancel,
    ChatJob,
    Codec,
    EventBatch,
    Failed,
    RequestedSampling,
    SchedulerStatus,
    Shutdown,
    WorkerReady,
)
from hearth.scheduler.server import SchedulerServer, SchedulerSpec
from hearth.tools.settings import Settings

_ids = itertools.count()
class Wire:
    def __init__(self, tmp: Path) -> None:
        (tmp / "m.gguf").write_bytes(EMPTY_GGUF)
        n = next(_ids)
        self.zctx = zmq.Context()
        self.codec = Codec()
        self.events = self.zctx.socket(zmq.SUB)
        self.events.bind(f"inproc://events-{n}")
        self.events.setsockopt(zmq.SUBSCRIBE, b"fe")
        self.events.setsockopt(zmq.SUBSCRIBE, STATUS_TOPIC)
        self.spec = SchedulerSpec(
            settings=Settings(models_dir=str(tmp), model="m"),
            intake_endpoint=f"inproc://intake-{n}", control_endpoint=f"inproc://control-{n}",
            events_endpoint=f"inproc://events-{n}")
        self.procs: list[FakeProc] = []
        self.server = SchedulerServer(self.spec, self.zctx, spawn=self._spawn)
        self.api = self.zctx.socket(zmq.PUSH)
        self.api.connect(self.spec.intake_endpoint)
        self.workers: list[zmq.Socket] = []

    def _spawn(self, spec_bytes: bytes) -> FakeProc:
        proc = FakeProc(spec_bytes)
        self.procs.append(proc)
        return proc

    def worker(self, proc: FakeProc, slots: int) -> zmq.Socket:
        sock = self.zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, proc.spec.worker_id.encode())
        sock.connect(self.spec.control_endpoint)
        sock.send(self.codec.encode(WorkerReady(proc.spec.worker_id, "m", slots)))
        self.workers.append(sock)
        assert self.server.control.poll(2000), "the worker's hello never arrived"
        self.server.turn()
        return sock

    def push(self, raw: bytes) -> None:
        self.api.send(raw)
        assert self.server.intake.poll(2000), "the api's message never arrived"
        self.server.turn()

    def received(self) -> tuple[list[Failed], list[SchedulerStatus]]:
        fails: list[Failed] = []
        statuses: list[SchedulerStatus] = []
        self.server.publisher.pump_subscriptions()
        while self.events.poll(100):
            topic, raw = self.events.recv_multipart()
            if topic == STATUS_TOPIC:
                statuses.append(msgspec.msgpack.decode(raw, type=SchedulerStatus))
            else:
                batch = msgspec.msgpack.decode(raw, type=EventBatch)
                fails.extend(e for e in batch.events if isinstance(e, Failed))
        return fails, statuses

    def close(self) -> None:
        for sock in (*self.workers, self.api, self.events, self.server.intake,
                     self.server.control, self.server.publisher.sock):
            sock.close(0)
        self.zctx.term()


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[Wire]:
    w = Wire(tmp_path)
    yield w
    w.close()


def _subscribed(wire: Wire) -> None:
    # The SUB's subscription reaches the XPUB asynchronously, once the SUB processes its
    # commands (any poll does); until then the publisher holds events, and drops status.
    for _ in range(100):
        wire.events.poll(0)
        wire.server.publisher.pump_subscriptions()
        if {b"fe", STATUS_TOPIC} <= wire.server.publisher._subscribed:
            return
        wire.server.publisher.sock.poll(10)
    raise AssertionError("the subscription never arrived")


def test_a_submit_reaches_the_worker_and_a_cancel_follows_it(wire: Wire) -> None:
    wire.server.sched.start()
    sock = wire.worker(wire.procs[0], slots=1)
    wire.push(b"not a message")  # skipped: a bad message never stops the loop
    wire.push(wire.codec.encode(ChatJob("r1", "fe", "A", "m", [], RequestedSampling())))
    assert sock.poll(2000)
    msg = wire.codec.to_worker.decode(sock.recv())
    assert isinstance(msg, Assign) and msg.request.request_id == "r1"
    wire.push(wire.codec.encode(Cancel("r1")))
    assert sock.poll(2000)
    assert wire.codec.to_worker.decode(sock.recv()) == Cancel("r1")


def test_the_scheduler_s_own_errors_and_status_are_published(wire: Wire) -> None:
    _subscribed(wire)
    wire.push(wire.codec.encode(ChatJob("r1", "fe", "A", "nope", [], RequestedSampling())))
    fails, statuses = wire.received()
    assert [(f.request_id, f.kind) for f in fails] == [("r1", "ModelNotFound")]
    assert statuses and statuses[-1].default_model == "m"
    assert [m.model for m in statuses[-1].models] == ["m"]  # the default model is starting


def test_shutdown_stops_the_workers_and_announces_it(wire: Wire) -> None:
    wire.server.sched.start()
    sock = wire.worker(wire.procs[0], slots=1)
    _subscribed(wire)
    wire.server.shutdown()
    assert sock.poll(2000)
    assert isinstance(wire.codec.to_worker.decode(sock.recv()), Shutdown)
    assert wire.procs[0].exitcode == 0
    _, statuses = wire.received()
    assert statuses and statuses[-1].models[0].state == "stopped"
