"""The scheduler process: admission, fairness, model routing and worker lifecycle.

Sockets (all owned by this process's only thread):
* ``intake`` PULL (bound): Submit / Cancel from api frontends;
* ``control`` ROUTER (bound): workers' DEALERs — Assign / Cancel / Shutdown out, WorkerReady /
  WorkerFailed / SlotFreed in;
* ``publisher`` XPUB (connected to the api's SUB): errors the scheduler itself ends a request
  with (queue full, model failed to load, worker died) and the periodic SchedulerStatus.

Every accepted request ends with an event: a worker's Finished/Failed, or a Failed from here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq
from hearth.scheduler import errors
from hearth.scheduler.fair_queue import FairQueue
from hearth.scheduler.messages import (
    STATUS_TOPIC,
    Assign,
    Cancel,
    Codec,
    Embed,
    EngineTimes,
    Failed,
    Job,
    ModelState,
    SchedulerStatus,
    Shutdown,
    SlotFreed,
    Submit,
    WorkerFailed,
    WorkerReady,
    WorkerSpec,
    WorkerStats,
)
from hearth.scheduler.placement import Loaded, estimate_bytes, expired, plan_room
from hearth.scheduler.publisher import EventPublisher
from hearth.tools import logs
from hearth.tools.proc import child_setup, parent_alive, spawn_process
from hearth.tools.registry import ModelRegistry
from hearth.tools.settings import Settings

RETRY_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
SHUTDOWN_GRACE_S = 10.0


class SchedulerSpec(msgspec.Struct, frozen=True, kw_only=True):
    settings: Settings
    intake_endpoint: str
    control_endpoint: str
    events_endpoint: str


EMBED_JOBS_PER_WORKER = 16  # embedding requests a worker batches together (beside its slots)


@dataclass
class WorkerHandle:
    worker_id: str
    model: str
    proc: Any  # multiprocessing Process
    state: str = "loading"  # loading | ready | stopping
    slots: int = 0
    running: dict[str, Job] = field(default_factory=dict)
    bytes: int = 0  # estimated memory (placement.estimate_bytes)
    times: EngineTimes = field(default_factory=EngineTimes)  # its last WorkerStats

    def free(self, kind: type[Submit] | type[Embed]) -> int:
        """How many more requests of this kind the worker can take now."""
        if self.state != "ready":
            return 0
        capacity = self.slots if kind is Submit else EMBED_JOBS_PER_WORKER
        return capacity - sum(1 for r in self.running.values() if isinstance(r, kind))

    @property
    def busy_slots(self) -> int:
        return sum(1 for r in self.running.values() if isinstance(r, Submit))


@dataclass
class ModelHealth:
    failures: int = 0
    retry_at: float = 0.0
    message: str = ""


@dataclass
class ModelCounters:
    starts: int = 0
    crashes: int = 0
    size_bytes: int = 0
    retired: EngineTimes = field(default_factory=EngineTimes)  # of workers that have exited


WorkerFactory = Callable[[bytes], Any]


def _spawn_worker(spec_bytes: bytes) -> Any:
    # By name: only the worker process imports the engine (and llama.cpp).
    return spawn_process("hearth.engine.worker:worker_main", spec_bytes, name="hearth-worker")


class Scheduler:
    def __init__(self, spec: SchedulerSpec, zctx: zmq.Context,
                 spawn: WorkerFactory = _spawn_worker) -> None:
        self.spec = spec
        self.settings = spec.settings
        self._spawn = spawn
        self.codec = Codec()
        self.registry = ModelRegistry(self.settings.models_dir, self.settings.aliases())
        self.queue = FairQueue(self.settings.max_queue)
        self.intake = zctx.socket(zmq.PULL)
        self.intake.setsockopt(zmq.RCVHWM, 0)
        self.intake.bind(spec.intake_endpoint)
        self.control = zctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.control.setsockopt(zmq.LINGER, 1000)
        self.control.bind(spec.control_endpoint)
        self.publisher = EventPublisher(zctx, spec.events_endpoint, self.codec)
        self.workers: dict[str, WorkerHandle] = {}  # by worker id
        self.health: dict[str, ModelHealth] = {}  # by model
        self.counters: dict[str, ModelCounters] = {}  # by model, for status and metrics
        self.owner: dict[str, WorkerHandle] = {}  # request id -> worker running it
        self.running_by_key: dict[str, int] = {}  # key name -> requests running on workers
        self.last_used: dict[str, float] = {}  # model -> when a request last came or went
        self.unloaded: set[str] = set()  # models stopped on purpose (idle, or to make room)
        self._status_dirty = True
        self._status_at = 0.0

    # ---- requests ---------------------------------------------------------------------------

    def on_submit(self, req: Job) -> None:
        try:
            entry = self.registry.get(req.model)
            if entry is None:
                raise errors.ModelNotFound(f"The model '{req.model}' does not exist",
                                           param="model")
            if entry.error:
                raise errors.ModelLoadFailed(f"The model '{req.model}' cannot be loaded: "
                                             f"{entry.error}")
            if isinstance(req, Embed) and not self.settings.model_config(req.model).embeddings:
                raise errors.InvalidRequest(f"The model '{req.model}' does not serve embeddings "
                                            "on this server.", param="model")
            health = self.health.get(req.model)
            if health and health.message and time.monotonic() < health.retry_at \
                    and not self._live(req.model):
                raise errors.ModelLoadFailed(f"model '{req.model}' failed to load: "
                                             f"{health.message}")
            self.queue.push(req)
        except errors.HearthError as exc:
            self._fail(req, exc)
            return
        self.unloaded.discard(req.model)
        self.last_used[req.model] = time.monotonic()
        self._ensure_workers(req.model)
        self._status_dirty = True

    def on_cancel(self, request_id: str) -> None:
        if self.queue.remove(request_id) is not None:
            self._status_dirty = True
            return
        handle = self.owner.get(request_id)
        if handle is not None:
            self._send(handle, Cancel(request_id))

    def _left(self, req: Job) -> None:
        """A running request left its worker."""
        self.owner.pop(req.request_id, None)
        left = self.running_by_key.get(req.key_name, 0) - 1
        if left > 0:
            self.running_by_key[req.key_name] = left
        else:
            self.running_by_key.pop(req.key_name, None)

    def _fail(self, req: Job, exc: errors.HearthError) -> None:
        self.publisher.publish(req.frontend, [
            Failed(req.request_id, errors.kind_of(exc), exc.message, exc.param)])

    def _key_may_run(self, key: str) -> bool:
        return self.running_by_key.get(key, 0) < self.settings.max_per_key

    def dispatch(self) -> None:
        """Hand waiting requests to workers with room; a model's replicas are filled evenly
        (each request goes to the replica with the most free capacity)."""
        capped = self._key_may_run if self.settings.max_per_key > 0 else None
        by_model: dict[str, list[WorkerHandle]] = {}
        for handle in self.workers.values():
            by_model.setdefault(handle.model, []).append(handle)
        for model, handles in by_model.items():
            for kind in (Submit, Embed):
                while True:
                    handle = max(handles, key=lambda h: h.free(kind))
                    if handle.free(kind) <= 0:
                        break
                    req = self.queue.pop_for(model, capped, kind)
                    if req is None:
                        break
                    handle.running[req.request_id] = req
                    self.owner[req.request_id] = handle
                    self.running_by_key[req.key_name] = \
                        self.running_by_key.get(req.key_name, 0) + 1
                    self.last_used[model] = time.monotonic()
                    self._status_dirty = True
                    if not self._send(handle, Assign(req)):
                        break

    # ---- workers ----------------------------------------------------------------------------

    def _live(self, model: str) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if h.model == model and h.state != "stopping"]

    def _spec(self, model: str, path: str) -> WorkerSpec:
        return WorkerSpec(
            worker_id=f"{model}-{uuid.uuid4().hex[:8]}", model=model,
            control_endpoint=self.spec.control_endpoint,
            events_endpoint=self.spec.events_endpoint,
            config=self.settings.worker_config(model, path))

    def _loaded(self) -> list[Loaded]:
        """Models with worker processes, for the placement rules. Workers still stopping count
        (their memory is not free yet) and cannot be stopped again."""
        out: dict[str, Loaded] = {}
        for h in self.workers.values():
            prev = out.get(h.model)
            busy = bool(h.running) or h.state == "stopping"
            out[h.model] = Loaded(
                h.model, (prev.bytes if prev else 0) + h.bytes,
                self.last_used.get(h.model, 0.0), busy or bool(prev and prev.busy),
                pinned=h.model == self.settings.model)
        for model in self.queue.models_waiting():  # a model with waiting requests is in use
            if model in out:
                m = out[model]
                out[model] = Loaded(m.model, m.bytes, m.last_used, True, m.pinned)
        return list(out.values())

    def _ensure_workers(self, model: str) -> None:
        """Start the model's workers (``replicas`` of them) if it has none, first unloading the
        least recently used idle models when --max-loaded-models or --memory-budget need it;
        when nothing can be unloaded yet, do nothing (requests wait; reap() tries again)."""
        cfg = self.settings.model_config(model)
        live = self._live(model)
        if len(live) >= cfg.replicas:
            return
        entry = self.registry.get(model)
        if entry is None:
            return
        spec = self._spec(model, str(entry.path))
        cost = estimate_bytes(entry.size, entry.info, spec.config.n_slots * spec.config.n_ctx_slot,
                              spec.config.cache_type_k, spec.config.cache_type_v)
        if not live:
            victims = plan_room([m for m in self._loaded() if m.model != model], cost,
                                self.settings.max_loaded_models,
                                self.settings.effective_memory_budget())
            if victims is None:
                return
            if victims:  # start once their memory is free: reap() comes back when they exit
                for victim in victims:
                    self._unload(victim)
                return
        for _ in range(cfg.replicas - len(live)):
            spec = msgspec.structs.replace(spec, worker_id=f"{model}-{uuid.uuid4().hex[:8]}")
            proc = self._spawn(msgspec.msgpack.encode(spec))
            self.workers[spec.worker_id] = WorkerHandle(spec.worker_id, model, proc, bytes=cost)
            counters = self.counters.setdefault(model, ModelCounters())
            counters.starts += 1
            counters.size_bytes = entry.size
        self.last_used.setdefault(model, time.monotonic())
        self._status_dirty = True

    def _unload(self, model: str) -> None:
        """Stop every worker of ``model`` (they are idle); it loads again on demand."""
        for handle in self._live(model):
            handle.state = "stopping"
            self._send(handle, Shutdown())
        self.unloaded.add(model)
        self._status_dirty = True

    def _keep_alive(self, model: str) -> float:
        cfg = self.settings.model_config(model)
        return cfg.keep_alive if cfg.keep_alive is not None else self.settings.keep_alive

    def on_worker_message(self, msg: WorkerReady | WorkerFailed | SlotFreed | WorkerStats) -> None:
        handle = self.workers.get(msg.worker_id)
        if handle is None:
            return
        if isinstance(msg, WorkerStats):
            handle.times = msg.times
            return  # counters only: not worth a status message of its own
        if isinstance(msg, SlotFreed):
            req = handle.running.pop(msg.request_id, None)
            if req is not None:
                self._left(req)
                self.last_used[handle.model] = time.monotonic()
        elif isinstance(msg, WorkerReady):
            handle.state = "ready"
            handle.slots = msg.slots
            self.health.pop(handle.model, None)
        elif isinstance(msg, WorkerFailed):
            self._model_failed(handle, msg.message)
        self._status_dirty = True

    def _model_failed(self, handle: WorkerHandle, message: str) -> None:
        handle.state = "stopping"
        self.counters.setdefault(handle.model, ModelCounters()).crashes += 1
        health = self.health.setdefault(handle.model, ModelHealth())
        health.failures += 1
        health.message = message
        health.retry_at = time.monotonic() + self._backoff(health.failures)
        exc = errors.ModelLoadFailed(f"model '{handle.model}' failed to load: {message}")
        for req in self.queue.drain(handle.model):
            self._fail(req, exc)

    def reap(self) -> None:
        """Notice workers that exited; fail what they were running; restart on demand."""
        for handle in list(self.workers.values()):
            if handle.proc.exitcode is None:
                continue
            del self.workers[handle.worker_id]
            self._status_dirty = True
            counters = self.counters.setdefault(handle.model, ModelCounters())
            counters.retired = counters.retired.plus(handle.times)
            died = errors.WorkerDied(
                f"the worker for model '{handle.model}' stopped unexpectedly "
                f"(exit code {handle.proc.exitcode}); retry the request")
            for req in handle.running.values():
                self._left(req)
                self._fail(req, died)
            handle.running.clear()
            if handle.state == "loading":
                self._model_failed(handle, f"the worker exited while loading (exit code "
                                           f"{handle.proc.exitcode})")
            elif handle.state == "ready":
                # Crashed while serving: restart on demand, backing off if it keeps crashing.
                self.counters.setdefault(handle.model, ModelCounters()).crashes += 1
                crashes = self.health.setdefault(handle.model, ModelHealth())
                crashes.failures += 1
                crashes.retry_at = time.monotonic() + self._backoff(crashes.failures - 1)
        now = time.monotonic()
        for model in expired(self._loaded(), now, self._keep_alive):
            self._unload(model)
        wanted = self.queue.models_waiting()
        if self.settings.model not in self.unloaded:
            wanted.add(self.settings.model)  # the default model is kept loaded, or restarted
        for model in wanted:
            health = self.health.get(model)
            if health is None or now >= health.retry_at:
                self._ensure_workers(model)

    @staticmethod
    def _backoff(failures: int) -> float:
        """Seconds to wait before starting a model again after ``failures`` failures (0: none)."""
        if failures <= 0:
            return 0.0
        return RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S)) - 1]

    def _send(self, handle: WorkerHandle, msg: msgspec.Struct) -> bool:
        try:
            self.control.send_multipart([handle.worker_id.encode(), self.codec.encode(msg)])
            return True
        except zmq.ZMQError:  # worker not connected (yet, or any more): reap() handles it
            return False

    # ---- status -----------------------------------------------------------------------------

    def status(self) -> SchedulerStatus:
        states: dict[str, ModelState] = {}
        for model, c in self.counters.items():
            health = self.health.get(model)
            failed = health is not None and bool(health.message)
            states[model] = ModelState(model, "failed" if failed else "stopped",
                                       message=health.message if health else "",
                                       size_bytes=c.size_bytes, starts=c.starts,
                                       crashes=c.crashes)
        for handle in self.workers.values():  # replicas of one model add up
            if handle.state == "stopping":
                continue
            c = self.counters.get(handle.model, ModelCounters())
            prev = states.get(handle.model)
            if prev is None or prev.state not in ("loading", "ready"):
                prev = ModelState(handle.model, "loading")
            state = "ready" if "ready" in (handle.state, prev.state) else "loading"
            states[handle.model] = ModelState(
                handle.model, state, handle.slots + prev.slots,
                handle.busy_slots + prev.busy,
                size_bytes=c.size_bytes, starts=c.starts, crashes=c.crashes)
        engine = {model: c.retired for model, c in self.counters.items()}
        for handle in self.workers.values():
            engine[handle.model] = engine.get(handle.model, EngineTimes()).plus(handle.times)
        for model, times in engine.items():
            if model in states:
                states[model] = msgspec.structs.replace(states[model], engine=times)
        return SchedulerStatus(self.settings.model, sorted(states.values(), key=lambda m: m.model),
                               len(self.queue), self.queue.depth_by_key())

    def publish_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or self._status_dirty or now - self._status_at >= 1.0:
            self.publisher.publish_raw(STATUS_TOPIC, self.status())
            self._status_dirty = False
            self._status_at = now

    # ---- loop -------------------------------------------------------------------------------

    def _wait_ms(self) -> int:
        """How long the loop may sleep when nothing arrives: until the next status heartbeat
        or model restart, at most a second (keep-alive expiry and the parent's health are
        checked that often). Workers' exits wake it through their sentinels."""
        now = time.monotonic()
        due = [self._status_at + 1.0] + [h.retry_at for h in self.health.values()
                                         if h.retry_at > now]
        return max(1, min(1000, int((min(due) - now) * 1000) + 1))

    def _watch_workers(self, poller: zmq.Poller, watched: set[int]) -> None:
        """Keep the poller watching exactly the live workers' sentinels (readable once the
        process has exited)."""
        now = {h.proc.sentinel for h in self.workers.values()}
        for fd in watched - now:
            poller.unregister(fd)
        for fd in now - watched:
            poller.register(fd, zmq.POLLIN)
        watched.clear()
        watched.update(now)

    def run(self, should_stop: Callable[[], bool], wake_fd: int | None = None) -> None:
        """The loop, until ``should_stop()``. It sleeps in one poll until a message, a worker's
        exit, a byte on ``wake_fd`` (a signal's wake-up pipe) or the next timer."""
        poller = zmq.Poller()
        poller.register(self.intake, zmq.POLLIN)
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.publisher.sock, zmq.POLLIN)
        if wake_fd is not None:
            poller.register(wake_fd, zmq.POLLIN)
        watched: set[int] = set()
        self._ensure_workers(self.settings.model)
        while not should_stop():
            self._watch_workers(poller, watched)
            ready = dict(poller.poll(self._wait_ms()))
            if wake_fd is not None and wake_fd in ready:
                with contextlib.suppress(OSError):
                    os.read(wake_fd, 512)
            self.publisher.pump_subscriptions()
            self._drain_control()
            while True:
                try:
                    raw = self.intake.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                try:
                    msg = self.codec.to_scheduler.decode(raw)
                except msgspec.DecodeError:
                    continue  # not ours; never crash on a bad message
                if isinstance(msg, Cancel):
                    self.on_cancel(msg.request_id)
                else:
                    self.on_submit(msg)
            self.reap()
            # Model states go out before the work they make possible: the answers come back
            # from the worker over another connection, and a client that has its answer should
            # find the model loaded in /v1/models and /metrics.
            self.publish_status()
            self.dispatch()
            self.publish_status()

    def _drain_control(self) -> None:
        while True:
            try:
                _ident, raw = self.control.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue
            try:
                msg = self.codec.from_worker.decode(raw)
            except msgspec.DecodeError:
                continue
            self.on_worker_message(msg)

    def shutdown(self) -> None:
        """Stop every worker (they fail their in-flight requests), fail what still waits."""
        for req in self.queue.drain():
            self._fail(req, errors.ShuttingDown("the server is shutting down"))
        for handle in self.workers.values():
            handle.state = "stopping"
            if not self._send(handle, Shutdown()):
                # not connected yet (still loading): the message cannot reach it; SIGTERM does
                # (the worker stops at its next loop turn, after the load)
                handle.proc.terminate()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        for handle in self.workers.values():
            handle.proc.join(max(0.0, deadline - time.monotonic()))
            if handle.proc.exitcode is None:
                handle.proc.kill()
                handle.proc.join(2)
        self._drain_control()
        self.publish_status(force=True)


def scheduler_main(spec_bytes: bytes) -> None:
    """Process entry point (spawned by ``hearth serve``)."""
    spec = msgspec.msgpack.decode(spec_bytes, type=SchedulerSpec)
    ppid = os.getppid()
    child_setup("hearth-sched")
    logs.configure(spec.settings.log_format)  # it logs nothing today; anything later follows
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    wake_r, wake_w = os.pipe()  # a signal writes a byte here, so the loop's poll returns
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    zctx = zmq.Context()
    sched = Scheduler(spec, zctx)
    try:
        sched.run(lambda: stop["now"] or not parent_alive(ppid), wake_fd=wake_r)
    finally:
        sched.shutdown()
        zctx.destroy(linger=1000)
