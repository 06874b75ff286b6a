"""The remote box's agent (tools/cli/worker_link.py, ``hearth worker --join``) on its own: real
ZeroMQ sockets — a CURVE ROUTER standing in for the scheduler's ``--worker-listen``, and per
worker a DEALER and a PUB standing in for engine/worker.py's sockets — with fake worker
processes and a clock the test moves. What a real scheduler and real workers do with the same
messages is tests/integration/test_remote_workers.py's (network namespaces)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq
from fake_workers import EMPTY_GGUF, FakeProc
from hearth.scheduler.messages import (
    Assign,
    Cancel,
    ChatJob,
    Codec,
    EventBatch,
    Join,
    Ping,
    Pong,
    RemoteWorker,
    RequestedSampling,
    Shutdown,
    SlotFreed,
    TextDelta,
    ToWorker,
    Welcome,
    WorkerReady,
)
from hearth.scheduler.remote_links import DEAD_AFTER_S
from hearth.tools.cli.worker_link import LinkKeys, WorkerAgent
from hearth.tools.settings import Settings

WAIT_S = 5.0  # how long a message may take on loopback before the test gives up


class FakeWorker:
    """A worker process's sockets, as engine/worker.py opens them: a DEALER to the agent's
    control ROUTER (its id the routing id) and a PUB to the agent's events SUB."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], agent: WorkerAgent,
                 worker_id: str) -> None:
        self.worker_id = worker_id
        self.codec = Codec()
        self.control = ctx.socket(zmq.DEALER)
        self.control.setsockopt(zmq.ROUTING_ID, worker_id.encode())
        self.control.setsockopt(zmq.LINGER, 0)
        self.control.connect(f"ipc://{agent.runtime_dir / 'control'}")
        self.events = ctx.socket(zmq.PUB)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events.connect(f"ipc://{agent.runtime_dir / 'events'}")

    def say(self, msg: object) -> None:
        self.control.send(self.codec.encode(msg))  # type: ignore[arg-type]

    def inbox(self, wait_s: float) -> list[ToWorker]:
        """What the agent sent this worker within ``wait_s`` seconds."""
        out = []
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            if self.control.poll(int(left * 1000)):
                out.append(self.codec.to_worker.decode(self.control.recv()))
        return out

    def close(self) -> None:
        self.control.close()
        self.events.close()


class Rig:
    def __init__(self, tmp: Path) -> None:
        (tmp / "m.gguf").write_bytes(EMPTY_GGUF)
        self.settings = Settings(models_dir=str(tmp), model="m")
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        server_public, server_secret = zmq.curve_keypair()
        self.sched = self.ctx.socket(zmq.ROUTER)
        self.sched.setsockopt(zmq.LINGER, 0)
        self.sched.curve_server = True
        self.sched.curve_secretkey = server_secret
        self.sched.bind("tcp://127.0.0.1:*")
        endpoint = self.sched.getsockopt(zmq.LAST_ENDPOINT).decode()
        public, secret = zmq.curve_keypair()
        self.now = 100.0
        self.procs: list[FakeProc] = []
        self.said: list[str] = []
        self.codec = Codec()
        self.agent = WorkerAgent(self.settings, endpoint,
                                 LinkKeys(public.decode(), secret.decode(),
                                          server_public.decode()),
                                 ["m"], say=self.said.append, spawn=self._spawn,
                                 clock=lambda: self.now)
        self.workers: list[FakeWorker] = []

    def _spawn(self, spec_bytes: bytes) -> FakeProc:
        proc = FakeProc(spec_bytes)
        self.procs.append(proc)
        return proc

    def worker(self, proc: FakeProc) -> FakeWorker:
        w = FakeWorker(self.ctx, self.agent, proc.spec.worker_id)
        self.workers.append(w)
        return w

    def turn(self, until: Callable[[], bool] = lambda: False, wait_s: float = WAIT_S) -> bool:
        """Turn the agent's loop until ``until()`` (or ``wait_s``); the last step's result."""
        deadline = time.monotonic() + wait_s
        alive = True
        while time.monotonic() < deadline:
            alive = self.agent.step(20)
            if until() or not alive:
                break
        return alive

    def up(self, wait_s: float = WAIT_S) -> tuple[bytes, list[bytes]]:
        """The next frames the box sent the scheduler: (its connection's routing id, frames),
        the agent's loop turning meanwhile."""
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.sched.poll(0):
                ident, *frames = self.sched.recv_multipart()
                return ident, frames
            self.agent.step(20)
        raise AssertionError("the box sent the scheduler nothing")

    def up_link(self, kind: type, wait_s: float = WAIT_S) -> tuple[bytes, object]:
        """The next link message of type ``kind`` (a Join or a Pong) the box sent; what else
        it sent meanwhile is skipped."""
        deadline = time.monotonic() + wait_s
        while True:
            ident, frames = self.up(max(0.1, deadline - time.monotonic()))
            if frames[0] == b"L":
                msg = self.codec.link_up.decode(frames[1])
                if isinstance(msg, kind):
                    return ident, msg

    def down(self, ident: bytes, *frames: bytes) -> None:
        self.sched.send_multipart([ident, *frames])

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.agent.close()
        self.sched.close()
        self.ctx.term()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def job(rid: str, frontend: str = "fe-1") -> ChatJob:
    return ChatJob(rid, frontend, "key", "m", [], RequestedSampling())


def ready_box(rig: Rig, slots: int = 4) -> tuple[bytes, FakeWorker]:
    """Connect, make the one worker ready, and return the connection's id once the box's Join
    lists it."""
    rig.agent.connect()
    (proc,) = rig.procs
    w = rig.worker(proc)
    w.say(WorkerReady(proc.spec.worker_id, "m", slots))
    while True:
        ident, join = rig.up_link(Join)
        assert isinstance(join, Join)
        if join.workers:
            return ident, w


def test_a_box_joins_and_lists_a_worker_once_it_is_ready(rig: Rig) -> None:
    rig.agent.connect()
    ident, first = rig.up_link(Join)
    assert isinstance(first, Join)
    assert first.workers == [] and first.models == []  # nothing loaded yet
    assert first.host and first.memory_budget == rig.settings.effective_memory_budget()
    (proc,) = rig.procs
    assert proc.spec.model == "m"
    w = rig.worker(proc)
    w.say(WorkerReady(proc.spec.worker_id, "m", 4))
    again, join = rig.up_link(Join)
    assert again == ident  # the same connection
    assert isinstance(join, Join)
    assert join.workers == [RemoteWorker(proc.spec.worker_id, "m", 4, b"", True)]
    (model,) = join.models
    assert (model.id, model.size) == ("m", len(EMPTY_GGUF)) and len(model.header_sha256) == 64
    assert "hearth worker: model 'm' loaded (4 slots)" in rig.said
    rig.down(ident, b"L", rig.codec.encode(Welcome("gpubox", {})))
    rig.turn(lambda: any("joined" in line for line in rig.said))
    assert any("as 'gpubox'" in line for line in rig.said)


def test_a_ping_is_answered_with_its_own_time(rig: Rig) -> None:
    ident, _ = ready_box(rig)
    rig.down(ident, b"L", rig.codec.encode(Ping(12.5)))
    _, pong = rig.up_link(Pong)
    assert pong == Pong(12.5)


def test_jobs_go_to_their_worker_and_its_events_come_back(rig: Rig) -> None:
    ident, w = ready_box(rig)
    wid = w.worker_id.encode()
    rig.down(ident, b"W", wid, rig.codec.encode(Assign(job("r1"))))
    rig.turn(lambda: "fe-1" in rig.agent.subscribed)
    (assign,) = w.inbox(1.0)
    assert assign == Assign(job("r1"))
    # the box subscribed to the job's frontend: the worker's events for it go up (a PUB
    # drops what it sends before the subscription reaches it, so it sends until one arrives)
    batch = rig.codec.encode(EventBatch([TextDelta("r1", "Hi", 1)]))
    deadline = time.monotonic() + WAIT_S
    got: list[bytes] = []
    while not got and time.monotonic() < deadline:
        w.events.send_multipart([b"fe-1", batch])
        rig.turn(lambda: bool(rig.sched.poll(0)), wait_s=0.1)
        while rig.sched.poll(0):
            _, *frames = rig.sched.recv_multipart()
            if frames[0] == b"E":
                got = frames
    assert got == [b"E", b"fe-1", batch]
    # a scheduler's Shutdown is not for a box's workers (they stop with the box); Cancel is
    rig.down(ident, b"W", wid, rig.codec.encode(Shutdown()))
    rig.down(ident, b"W", wid, rig.codec.encode(Cancel("r1")))
    rig.turn(wait_s=0.3)
    assert w.inbox(0.5) == [Cancel("r1")]
    # and what the worker says about its requests goes up as it is
    freed = rig.codec.encode(SlotFreed(w.worker_id, "r1", b"12345678"))
    w.say(SlotFreed(w.worker_id, "r1", b"12345678"))
    _, frames = rig.up()
    while frames[0] != b"W":
        _, frames = rig.up()
    assert frames == [b"W", freed]
    assert rig.agent.workers[w.worker_id].running == set()


def test_silence_cancels_what_runs_and_joins_again_on_a_new_connection(rig: Rig) -> None:
    ident, w = ready_box(rig)
    rig.down(ident, b"W", w.worker_id.encode(), rig.codec.encode(Assign(job("r1"))))
    rig.turn(lambda: bool(rig.agent.workers[w.worker_id].running))
    assert w.inbox(1.0) == [Assign(job("r1"))]
    rig.now += DEAD_AFTER_S  # the scheduler is silent for the heartbeat window
    new_ident, join = rig.up_link(Join)
    assert new_ident != ident and isinstance(join, Join) and join.workers  # a fresh link
    assert any("lost the scheduler" in line and "cancelling 1 request" in line
               for line in rig.said)
    assert w.inbox(1.0) == [Cancel("r1")]
    # the cancelled request is the box's own business now: its late events are dropped, and
    # its SlotFreed goes up only for the cache summary it carries
    w.say(SlotFreed(w.worker_id, "r1"))
    w.events.send_multipart([b"fe-1", rig.codec.encode(EventBatch([TextDelta("r1", "x", 1)]))])
    rig.turn(wait_s=0.5)
    sent = []
    while rig.sched.poll(0):
        sent.append(rig.sched.recv_multipart()[1])
    assert b"E" not in sent and b"W" not in sent
    assert rig.agent.orphans["r1"] is not None
    rig.now += 10  # long after: forgotten
    rig.turn(wait_s=0.1)
    assert "r1" not in rig.agent.orphans


def test_a_crashed_worker_is_started_again_after_the_backoff(rig: Rig) -> None:
    ident, w = ready_box(rig)
    (proc,) = rig.procs
    proc.exitcode = -9  # killed while serving
    _, join = rig.up_link(Join)
    assert isinstance(join, Join) and join.workers == []  # the scheduler drops it
    assert any("exited (exit code -9); starting it again in 1 s" in line for line in rig.said)
    assert len(rig.procs) == 1 and rig.turn(wait_s=0.1)  # waiting for the backoff
    rig.now += 1.0
    rig.turn(lambda: len(rig.procs) == 2)
    assert len(rig.procs) == 2 and rig.procs[1].spec.model == "m"
    assert rig.procs[1].spec.worker_id != proc.spec.worker_id
    assert "hearth worker: restarting the worker for model 'm'" in rig.said


def test_a_worker_that_never_loaded_is_not_restarted_and_the_box_stops(rig: Rig) -> None:
    rig.agent.connect()
    (proc,) = rig.procs
    proc.exitcode = 1  # failed to load: no WorkerReady
    assert rig.turn(wait_s=1.0) is False
    assert len(rig.procs) == 1
    assert "hearth worker: no worker is running any more; stopping" in rig.said


def test_closing_says_so_to_the_scheduler_and_stops_the_workers(rig: Rig) -> None:
    ident, w = ready_box(rig)
    (proc,) = rig.procs
    rig.agent.close()
    rig.agent.close = lambda: None  # type: ignore[method-assign]  # done: the fixture skips it
    last: Join | None = None
    while rig.sched.poll(1000):
        _, kind, raw = rig.sched.recv_multipart()[:3]
        if kind == b"L":
            msg = rig.codec.link_up.decode(raw)
            if isinstance(msg, Join):
                last = msg
    assert last is not None and last.workers == [] and last.models == []
    assert w.inbox(1.0) == [Shutdown()]
    assert proc.exitcode == 0  # joined
