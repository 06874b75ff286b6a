"""The scheduler's admission, fairness, routing and crash handling, with fake workers.

The Scheduler runs in this thread over inproc ZeroMQ sockets; a "worker" is a DEALER socket the
test drives by hand, and the worker factory hands back a fake process object.
"""

from __future__ import annotations

import itertools
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import zmq
from hearth.scheduler.messages import (
    STATUS_TOPIC,
    Assign,
    Codec,
    Embed,
    EngineTimes,
    EventBatch,
    Failed,
    SamplingParams,
    Shutdown,
    SlotFreed,
    Submit,
    WorkerReady,
    WorkerSpec,
    WorkerStats,
)
from hearth.scheduler.server import Scheduler, SchedulerSpec
from hearth.tools.model_config import ModelConfig
from hearth.tools.settings import Settings

_ids = itertools.count()
# a GGUF header with no metadata and no tensors: readable, so the scheduler accepts the file
EMPTY_GGUF = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)


class FakeProc:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.exitcode: int | None = None

    def join(self, timeout: float | None = None) -> None:
        if self.exitcode is None:
            self.exitcode = 0

    def kill(self) -> None:
        self.exitcode = -9

    def terminate(self) -> None:
        self.exitcode = -15


class Rig:
    def __init__(self, tmp: Path, **settings: object) -> None:
        (tmp / "m.gguf").write_bytes(EMPTY_GGUF)
        n = next(_ids)
        self.zctx = zmq.Context()
        self.events = self.zctx.socket(zmq.SUB)
        self.events.bind(f"inproc://events-{n}")
        self.events.setsockopt(zmq.SUBSCRIBE, b"fe")
        self.spec = SchedulerSpec(
            settings=Settings(models_dir=str(tmp), model="m", **settings),  # type: ignore[arg-type]
            intake_endpoint=f"inproc://intake-{n}", control_endpoint=f"inproc://control-{n}",
            events_endpoint=f"inproc://events-{n}")
        self.procs: list[FakeProc] = []
        self.sched = Scheduler(self.spec, self.zctx, spawn=self._spawn)
        self.codec = Codec()
        self.workers: dict[str, zmq.Socket] = {}

    def _spawn(self, spec_bytes: bytes) -> FakeProc:
        proc = FakeProc(msgspec.msgpack.decode(spec_bytes, type=WorkerSpec))
        self.procs.append(proc)
        return proc

    def ready(self, proc: FakeProc, slots: int) -> zmq.Socket:
        sock = self.zctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.IDENTITY, proc.spec.worker_id.encode())
        sock.connect(self.spec.control_endpoint)
        sock.send(self.codec.encode(WorkerReady(proc.spec.worker_id, "m", slots)))
        self.workers[proc.spec.worker_id] = sock
        assert self.sched.control.poll(2000), "the worker's hello never arrived"
        self.tick()
        return sock

    def tick(self) -> None:
        self.sched.publisher.pump_subscriptions()
        self.sched._drain_control()
        self.sched.reap()
        self.sched.dispatch()

    def submit(self, rid: str, key: str = "A", model: str = "m") -> None:
        self.sched.on_submit(Submit(rid, "fe", key, model, [], SamplingParams()))
        self.tick()

    def assigned(self, sock: zmq.Socket) -> list[str]:
        out = []
        while sock.poll(50):
            msg = self.codec.to_worker.decode(sock.recv())
            assert isinstance(msg, Assign)
            out.append(msg.request.request_id)
        return out

    def free(self, sock: zmq.Socket, worker_id: str, rid: str) -> None:
        sock.send(self.codec.encode(SlotFreed(worker_id, rid)))
        assert self.sched.control.poll(2000), "the worker's message never arrived"
        self.tick()

    def failures(self) -> list[Failed]:
        out: list[Failed] = []
        self.sched.publisher.pump_subscriptions()
        while self.events.poll(100):
            topic, raw = self.events.recv_multipart()
            if topic == STATUS_TOPIC:
                continue
            batch = msgspec.msgpack.decode(raw, type=EventBatch)
            out.extend(e for e in batch.events if isinstance(e, Failed))
        return out

    def close(self) -> None:
        for sock in self.workers.values():
            sock.close(0)
        self.events.close(0)
        self.sched.intake.close(0)
        self.sched.control.close(0)
        self.sched.publisher.sock.close(0)
        self.zctx.term()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def _wait_subscribed(rig: Rig) -> None:
    # The SUB's subscription reaches the scheduler's XPUB asynchronously, and only once the SUB
    # socket processes its commands (any poll does; in the api its reader is always polling).
    for _ in range(100):
        rig.events.poll(0)
        rig.sched.publisher.pump_subscriptions()
        if rig.sched.publisher._subscribed:
            return
        rig.sched.publisher.sock.poll(10)


def test_requests_wait_for_the_worker_then_run(rig: Rig) -> None:
    rig.sched._ensure_workers("m")
    rig.submit("r1")
    (proc,) = rig.procs
    assert proc.spec.model == "m"
    sock = rig.ready(proc, slots=2)
    assert rig.assigned(sock) == ["r1"]


def test_keys_take_turns(rig: Rig) -> None:
    rig.sched._ensure_workers("m")
    sock = rig.ready(rig.procs[0], slots=1)
    wid = rig.procs[0].spec.worker_id
    for i in range(10):
        rig.submit(f"a{i}", key="flood")
    rig.submit("b0", key="other")
    order = rig.assigned(sock)
    for _ in range(3):
        rig.free(sock, wid, order[-1])
        order += rig.assigned(sock)
    assert order == ["a0", "b0", "a1", "a2"]


def test_per_key_cap(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_per_key=1)
    try:
        rig.sched._ensure_workers("m")
        sock = rig.ready(rig.procs[0], slots=4)
        wid = rig.procs[0].spec.worker_id
        rig.submit("a0", key="A")
        rig.submit("a1", key="A")
        rig.submit("b0", key="B")
        assert rig.assigned(sock) == ["a0", "b0"]
        rig.free(sock, wid, "a0")
        assert rig.assigned(sock) == ["a1"]
    finally:
        rig.close()


def test_full_queue_fails_with_overloaded(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_queue=2)
    try:
        _wait_subscribed(rig)
        for i in range(3):
            rig.submit(f"r{i}")
        (fail,) = rig.failures()
        assert (fail.request_id, fail.kind) == ("r2", "Overloaded")
    finally:
        rig.close()


def test_unknown_model_fails(rig: Rig) -> None:
    _wait_subscribed(rig)
    rig.submit("r1", model="nope")
    (fail,) = rig.failures()
    assert fail.kind == "ModelNotFound" and fail.param == "model"


def test_cancel_of_queued_request_drops_it(rig: Rig) -> None:
    rig.sched._ensure_workers("m")
    rig.submit("r1")
    rig.sched.on_cancel("r1")
    sock = rig.ready(rig.procs[0], slots=1)
    assert rig.assigned(sock) == []
    assert len(rig.sched.queue) == 0


def test_worker_death_fails_its_requests_and_restarts(rig: Rig) -> None:
    _wait_subscribed(rig)
    rig.sched._ensure_workers("m")
    sock = rig.ready(rig.procs[0], slots=2)
    rig.submit("r1")
    rig.submit("r2")
    assert rig.assigned(sock) == ["r1", "r2"]
    rig.procs[0].exitcode = -9
    rig.submit("r3")  # waits for the replacement
    fails = rig.failures()
    assert sorted(f.request_id for f in fails) == ["r1", "r2"]
    assert all(f.kind == "WorkerDied" for f in fails)
    assert len(rig.procs) == 2  # restarted because r3 waits for the model
    sock2 = rig.ready(rig.procs[1], slots=2)
    assert rig.assigned(sock2) == ["r3"]


def test_engine_times_add_up_across_worker_restarts(rig: Rig) -> None:
    rig.sched._ensure_workers("m")
    sock = rig.ready(rig.procs[0], slots=2)
    wid = rig.procs[0].spec.worker_id
    sock.send(rig.codec.encode(WorkerStats(wid, EngineTimes(2.0, 1.5, 0.25, 10, 40))))
    assert rig.sched.control.poll(2000)
    rig.tick()
    (state,) = rig.sched.status().models
    assert state.engine == EngineTimes(2.0, 1.5, 0.25, 10, 40)
    assert state.engine.overhead_s == pytest.approx(0.25)
    rig.procs[0].exitcode = -9  # the counters stay: Prometheus counters never go back
    rig.tick()
    rig.sched._ensure_workers("m")
    sock2 = rig.ready(rig.procs[1], slots=2)
    wid2 = rig.procs[1].spec.worker_id
    sock2.send(rig.codec.encode(WorkerStats(wid2, EngineTimes(1.0, 0.5, 0.25, 5, 5))))
    assert rig.sched.control.poll(2000)
    rig.tick()
    (state,) = rig.sched.status().models
    assert state.engine == EngineTimes(3.0, 2.0, 0.5, 15, 45)


def test_max_loaded_models_swaps_idle_models(tmp_path: Path) -> None:
    (tmp_path / "other.gguf").write_bytes(EMPTY_GGUF)
    rig = Rig(tmp_path, max_loaded_models=1)
    try:
        rig.sched._ensure_workers("m")
        sock_m = rig.ready(rig.procs[0], slots=1)
        rig.submit("r1", model="other")
        assert rig.sched.workers[rig.procs[0].spec.worker_id].state == "stopping"
        assert isinstance(rig.codec.to_worker.decode(sock_m.recv()), Shutdown)
        assert len(rig.procs) == 1  # "other" waits until m's worker has exited
        rig.procs[0].exitcode = 0
        rig.tick()
        assert [p.spec.model for p in rig.procs] == ["m", "other"]
        sock_o = rig.ready(rig.procs[1], slots=1)
        assert rig.assigned(sock_o) == ["r1"]
        assert rig.assigned(sock_m) == []
    finally:
        rig.close()


def test_a_busy_model_is_not_unloaded(tmp_path: Path) -> None:
    (tmp_path / "other.gguf").write_bytes(EMPTY_GGUF)
    rig = Rig(tmp_path, max_loaded_models=1)
    try:
        rig.sched._ensure_workers("m")
        sock_m = rig.ready(rig.procs[0], slots=1)
        rig.submit("r0", model="m")
        assert rig.assigned(sock_m) == ["r0"]
        rig.submit("r1", model="other")
        assert len(rig.procs) == 1  # waits: m is busy
        rig.free(sock_m, rig.procs[0].spec.worker_id, "r0")
        assert rig.sched.workers[rig.procs[0].spec.worker_id].state == "stopping"
    finally:
        rig.close()


def test_keep_alive_unloads_idle_models_but_not_the_default(tmp_path: Path) -> None:
    (tmp_path / "other.gguf").write_bytes(EMPTY_GGUF)
    rig = Rig(tmp_path, keep_alive=0.2)
    try:
        rig.sched._ensure_workers("m")
        rig.ready(rig.procs[0], slots=1)
        rig.submit("r1", model="other")
        sock_o = rig.ready(rig.procs[1], slots=1)
        assert rig.assigned(sock_o) == ["r1"]
        rig.free(sock_o, rig.procs[1].spec.worker_id, "r1")
        time.sleep(0.3)
        rig.tick()
        states = {h.model: h.state for h in rig.sched.workers.values()}
        assert states == {"m": "ready", "other": "stopping"}
    finally:
        rig.close()


def test_replicas_share_the_requests(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models={"m": ModelConfig(replicas=2)})
    try:
        rig.sched._ensure_workers("m")
        assert len(rig.procs) == 2
        socks = [rig.ready(p, slots=2) for p in rig.procs]
        for i in range(4):
            rig.submit(f"r{i}")
        got = [rig.assigned(s) for s in socks]
        assert sorted(len(g) for g in got) == [2, 2]
        assert sorted(sum(got, [])) == ["r0", "r1", "r2", "r3"]
    finally:
        rig.close()


def test_embeddings_can_be_turned_off_per_model(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models={"m": ModelConfig(embeddings=False)})
    try:
        _wait_subscribed(rig)
        rig.sched.on_submit(Embed("e1", "fe", "A", "m", texts=["x"]))
        (fail,) = rig.failures()
        assert fail.kind == "InvalidRequest" and fail.param == "model"
    finally:
        rig.close()
