"""The remote box's end of a link (``hearth worker --join``): this box's worker processes and
their one CURVE connection to the scheduler.

The workers are the engine's own (engine/worker.py, started as ``hearth serve``'s scheduler
starts them); they talk to this process over ipc exactly as they talk to a local scheduler:

* ``control`` ROUTER (ipc, bound): the workers' DEALERs — Assign / Cancel / Shutdown out,
  WorkerReady / WorkerFailed / SlotFreed / WorkerStats in;
* ``events`` SUB (ipc, bound): the workers' XPUBs' token events, subscribed per frontend as
  Assigns name them (the worker holds a frontend's events until that subscription arrives);
* ``up`` DEALER (tcp, CURVE client): to the scheduler's ``--worker-listen``; frames as
  scheduler/messages.py describes. Everything crosses it: jobs, prompts, token events.

A worker that crashes while serving is started again here (``_reap``), so a box heals that too.

Heartbeats: the scheduler pings every second and this end answers; pinged by nobody for
``DEAD_AFTER_S``, this end cancels what its workers run (the scheduler has failed those
requests by then, or will when it hears nothing), closes the connection and opens a new one,
which joins again: so a link cut, or a scheduler restart, heals by itself.

Owned by the process's only thread.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import zmq
import zmq.utils.monitor
from hearth.scheduler.messages import (
    Assign,
    Cancel,
    Codec,
    EventBatch,
    Join,
    Ping,
    Pong,
    RemoteModel,
    RemoteWorker,
    Shutdown,
    SlotFreed,
    Welcome,
    WorkerFailed,
    WorkerReady,
    WorkerSpec,
    WorkerStats,
)
from hearth.scheduler.remote_links import DEAD_AFTER_S
from hearth.scheduler.workers import WorkerFactory, WorkerProcess, backoff, spawn_worker
from hearth.tools.gguf_header import header_sha256
from hearth.tools.registry import ModelRegistry
from hearth.tools.settings import Settings

STOP_WAIT_S = 10.0
ORPHAN_KEEP_S = 5.0  # a cancelled request's last events may come after its SlotFreed


@dataclass
class LocalWorker:
    worker_id: str
    model: str
    proc: WorkerProcess
    slots: int = 0  # 0 until its WorkerReady
    running: set[str] = field(default_factory=set)
    cache: bytes = b""  # its slots' prefix blocks, as its last SlotFreed.cache said (for Join)


@dataclass(frozen=True)
class LinkKeys:
    """This box's CURVE key pair and the scheduler's public key (all Z85)."""

    public: str
    secret: str
    server: str


class WorkerAgent:
    """This box's workers and its link. ``run`` is the process's loop; ``step`` one turn of it.
    ``spawn`` starts a worker process (the engine's; a test's fake) and ``clock`` is monotonic
    seconds, so the heartbeat and restart rules can be driven by tests."""

    def __init__(self, settings: Settings, join: str, keys: LinkKeys, models: list[str],
                 say: Callable[[str], None] = print, spawn: WorkerFactory = spawn_worker,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.join_endpoint = join
        self.keys = keys
        self.say = say
        self._spawn = spawn
        self._clock = clock
        self.host = socket.gethostname()
        self.codec = Codec()
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="hearth-worker-"))
        self.ctx = zmq.Context()
        self.control = self.ctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.control.setsockopt(zmq.LINGER, 1000)
        self.control.bind(f"ipc://{self.runtime_dir / 'control'}")
        self.events = self.ctx.socket(zmq.SUB)
        self.events.setsockopt(zmq.RCVHWM, 0)
        self.events.bind(f"ipc://{self.runtime_dir / 'events'}")
        self.subscribed: set[str] = set()
        self.workers: dict[str, LocalWorker] = {}
        self.registry = ModelRegistry(settings.models_dir, settings.aliases())
        self.models: dict[str, RemoteModel] = {}
        self.up: zmq.SyncSocket | None = None
        self.up_monitor: zmq.SyncSocket | None = None
        self.heard_at = 0.0  # when the scheduler was last heard
        self.welcomed = False
        # requests cancelled when a link was lost -> when their slot was freed (None: not
        # yet); their events are not sent on, and they are forgotten ORPHAN_KEEP_S later
        self.orphans: dict[str, float | None] = {}
        # models whose worker crashed while serving: how often, and when to start it again
        self.crashes: dict[str, int] = {}
        self.restart_at: dict[str, float] = {}
        self._poller = zmq.Poller()
        self._poller.register(self.control, zmq.POLLIN)
        self._poller.register(self.events, zmq.POLLIN)
        self._polled: tuple[zmq.SyncSocket | None, zmq.SyncSocket | None] = (None, None)
        for model in models:
            self._start(model)

    # ---- this box's workers -----------------------------------------------------------------

    def _start(self, model: str) -> None:
        entry = self.registry.get(model)
        if entry is None or entry.info is None:
            raise SystemExit(f"hearth worker: the model '{model}' is not in "
                             f"{self.settings.models_dir} ({entry.error if entry else 'no file'})")
        self.models[model] = RemoteModel(model, entry.size,
                                         header_sha256(entry.path, entry.info.data_offset))
        wid = f"{model}@{self.host}-{uuid.uuid4().hex[:8]}"
        spec = WorkerSpec(worker_id=wid, model=model,
                          control_endpoint=f"ipc://{self.runtime_dir / 'control'}",
                          events_endpoint=f"ipc://{self.runtime_dir / 'events'}",
                          config=self.settings.worker_config(model, str(entry.path)))
        self.workers[wid] = LocalWorker(wid, model, self._spawn(msgspec.msgpack.encode(spec)))

    def _join_msg(self) -> Join:
        ready = [w for w in self.workers.values() if w.slots > 0]
        return Join(self.host, [self.models[m] for m in sorted({w.model for w in ready})],
                    [RemoteWorker(w.worker_id, w.model, w.slots, w.cache,
                                  self.settings.model_config(w.model).embeddings)
                     for w in ready],
                    self.settings.effective_memory_budget())

    # ---- the link -----------------------------------------------------------------------------

    def connect(self) -> None:
        """A new connection (a fresh routing id), and a Join queued on it."""
        self._close_up()
        up = self.ctx.socket(zmq.DEALER)
        up.setsockopt(zmq.ROUTING_ID, f"{self.host}-{uuid.uuid4().hex[:12]}".encode())
        up.setsockopt(zmq.LINGER, 0)
        up.setsockopt(zmq.SNDHWM, 0)
        up.setsockopt(zmq.RCVHWM, 0)
        up.setsockopt(zmq.CURVE_SERVERKEY, self.keys.server.encode())
        up.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.public.encode())
        up.setsockopt(zmq.CURVE_SECRETKEY, self.keys.secret.encode())
        up.setsockopt(zmq.RECONNECT_IVL, 200)
        up.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        self.up_monitor = up.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        up.connect(self.join_endpoint)
        self.up = up
        self.heard_at = self._clock()
        self.welcomed = False
        self._send_up(b"L", self.codec.encode(self._join_msg()))

    def _close_up(self) -> None:
        if self.up is not None:
            self.up.disable_monitor()
            self.up.close()
            self.up = None
        if self.up_monitor is not None:
            self.up_monitor.close(linger=0)
            self.up_monitor = None

    def _send_up(self, *frames: bytes) -> None:
        if self.up is None:
            return
        try:
            self.up.send_multipart(list(frames), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass  # not connected: the heartbeat notices

    def _lost(self, why: str) -> None:
        """The scheduler is gone (silence): cancel what runs, connect afresh."""
        running = [(w, rid) for w in self.workers.values() for rid in w.running]
        self.say(f"hearth worker: lost the scheduler at {self.join_endpoint} ({why}); "
                 f"cancelling {len(running)} request(s), connecting again")
        for w, rid in running:
            self._to_worker(w.worker_id, self.codec.encode(Cancel(rid)))
            self.orphans[rid] = None
        for w in self.workers.values():
            w.running.clear()
        self.connect()

    def _to_worker(self, worker_id: str, raw: bytes) -> None:
        try:
            self.control.send_multipart([worker_id.encode(), raw])
        except zmq.ZMQError:
            pass  # it exited: the loop notices

    # ---- the loop -----------------------------------------------------------------------------

    def run(self, should_stop: Callable[[], bool]) -> int:
        """Connect, then turn the loop until ``should_stop``: 0; 1 when no worker is left."""
        self.connect()
        while not should_stop():
            if not self.step(200):
                return 1
        return 0

    def step(self, timeout_ms: int) -> bool:
        """One turn: wait up to ``timeout_ms`` for any socket, handle what came, reap and
        restart workers, and check the scheduler's silence. False when no worker is left
        (none running, none waiting to restart)."""
        if (self.up, self.up_monitor) != self._polled:
            for sock in self._polled:
                if sock is not None:
                    self._poller.unregister(sock)
            self._polled = (self.up, self.up_monitor)
            for sock in self._polled:
                if sock is not None:
                    self._poller.register(sock, zmq.POLLIN)
        ready = dict(self._poller.poll(timeout_ms))
        if self.control in ready:
            self._drain_control()
        if self.events in ready:
            self._drain_events()
        if self.up is not None and self.up in ready:
            self._drain_up()
        if self.up_monitor is not None and self.up_monitor in ready:
            self._drain_monitor()
        self._reap()
        self._restart_due()
        if self.orphans:
            old = self._clock() - ORPHAN_KEEP_S
            self.orphans = {r: t for r, t in self.orphans.items() if t is None or t > old}
        if not self.workers and not self.restart_at:
            self.say("hearth worker: no worker is running any more; stopping")
            return False
        silence = self._clock() - self.heard_at
        if silence >= DEAD_AFTER_S:
            self._lost(f"no heartbeat for {silence:.1f} s")
        return True

    def _drain_control(self) -> None:
        changed = False
        while True:
            try:
                _ident, raw = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            except ValueError:
                continue
            msg = self.codec.from_worker.decode(raw)
            w = self.workers.get(msg.worker_id)
            if w is None:
                continue
            if isinstance(msg, WorkerReady):
                w.slots = msg.slots
                changed = True
                self.say(f"hearth worker: model '{w.model}' loaded ({w.slots} slots)")
            elif isinstance(msg, WorkerFailed):
                self.say(f"hearth worker: model '{w.model}' failed to load: {msg.message}")
            elif isinstance(msg, SlotFreed):
                w.running.discard(msg.request_id)
                if msg.cache is not None:
                    w.cache = msg.cache
                if msg.request_id in self.orphans:
                    self.orphans[msg.request_id] = self._clock()
                    if msg.cache is not None:  # the scheduler knows no such request, but
                        self._send_up(b"W", raw)  # routes by what the slots hold now
                else:
                    self._send_up(b"W", raw)
            elif isinstance(msg, WorkerStats):
                self._send_up(b"W", raw)
        if changed:
            self._send_up(b"L", self.codec.encode(self._join_msg()))

    def _drain_events(self) -> None:
        while True:
            try:
                topic, raw = self.events.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            if self.orphans:
                batch = self.codec.events.decode(raw)
                kept = [e for e in batch.events if e.request_id not in self.orphans]
                if not kept:
                    continue
                if len(kept) != len(batch.events):
                    raw = self.codec.encode(EventBatch(kept))
            self._send_up(b"E", topic, raw)

    def _drain_up(self) -> None:
        assert self.up is not None
        while self.up is not None:
            try:
                frames = self.up.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.heard_at = self._clock()
            if frames[0] == b"L" and len(frames) == 2:
                msg = self.codec.link_down.decode(frames[1])
                if isinstance(msg, Ping):
                    self._send_up(b"L", self.codec.encode(Pong(msg.sent_at)))
                elif isinstance(msg, Welcome) and not self.welcomed:
                    self.welcomed = True
                    self.say(f"hearth worker: joined {self.join_endpoint} as '{msg.name}'")
                    for model, why in msg.refused.items():
                        self.say(f"hearth worker: the scheduler will not route '{model}' "
                                 f"here: {why}")
            elif frames[0] == b"W" and len(frames) == 3:
                wid = frames[1].decode(errors="replace")
                w = self.workers.get(wid)
                if w is None:
                    continue
                msg_w = self.codec.to_worker.decode(frames[2])
                if isinstance(msg_w, Assign):
                    frontend = msg_w.request.frontend
                    if frontend not in self.subscribed:
                        self.events.setsockopt(zmq.SUBSCRIBE, frontend.encode())
                        self.subscribed.add(frontend)
                    w.running.add(msg_w.request.request_id)
                elif isinstance(msg_w, Shutdown):
                    continue  # this box's workers stop with this box, not with a scheduler
                self._to_worker(wid, frames[2])

    def _drain_monitor(self) -> None:
        assert self.up_monitor is not None
        while True:
            try:
                event = zmq.utils.monitor.recv_monitor_message(self.up_monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            self.say(f"hearth worker: the CURVE handshake with {self.join_endpoint} failed: "
                     "is --server-key the scheduler's public key, and is this box's key "
                     f"listed there? (event {event['event']})")

    def _reap(self) -> None:
        """Workers that exited leave the Join (the scheduler fails what they ran with
        worker_died). One that crashed while serving is started again, after 1, 2, 5, 10, then
        30 s for each further crash since the box started (scheduler/workers.py's backoff, as
        the server restarts its own); one that never loaded is not (it would fail again)."""
        gone = [w for w in self.workers.values() if w.proc.exitcode is not None]
        for w in gone:
            del self.workers[w.worker_id]
            if w.slots > 0:
                crashes = self.crashes[w.model] = self.crashes.get(w.model, 0) + 1
                wait = backoff(crashes)
                self.restart_at[w.model] = self._clock() + wait
                self.say(f"hearth worker: the worker for model '{w.model}' exited (exit code "
                         f"{w.proc.exitcode}); starting it again in {wait:g} s")
            else:
                self.say(f"hearth worker: the worker for model '{w.model}' exited "
                         f"(exit code {w.proc.exitcode})")
        if gone:
            self._send_up(b"L", self.codec.encode(self._join_msg()))

    def _restart_due(self) -> None:
        now = self._clock()
        for model, at in list(self.restart_at.items()):
            if now >= at:
                del self.restart_at[model]
                self.say(f"hearth worker: restarting the worker for model '{model}'")
                try:
                    self._start(model)  # in the Join once it is ready (its WorkerReady)
                except SystemExit as exc:  # its file is gone or broken now
                    self.say(f"{exc}; not restarting it")

    def close(self) -> None:
        """Tell the scheduler this box serves nothing any more (a Join with no workers: it
        drops them now rather than after DEAD_AFTER_S of silence), stop the workers (they fail
        what they run) and close everything."""
        if self.up is not None:
            self._send_up(b"L", self.codec.encode(Join(self.host, [], [], 0)))
            self.up.setsockopt(zmq.LINGER, 500)  # time for that last message to leave
        for w in self.workers.values():
            self._to_worker(w.worker_id, self.codec.encode(Shutdown()))
        deadline = time.monotonic() + STOP_WAIT_S  # real time: the processes' exits
        for w in self.workers.values():
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.exitcode is None:
                w.proc.kill()
                w.proc.join(2)
        self._close_up()
        self.control.close(linger=0)
        self.events.close(linger=0)
        self.ctx.term()
        shutil.rmtree(self.runtime_dir, ignore_errors=True)

