"""The scheduler's decisions: admission, fairness, model routing and worker lifecycle.

:class:`Scheduler` knows no sockets. What it sends to a worker, publishes to a frontend or
announces as status goes through callables it is given, and it reads time from a given clock and
starts workers with a given factory, so every rule is unit-tested with fakes (see
scheduler.server for the process that wires it to ZeroMQ). Owned by one thread; not thread-safe.

Every accepted request ends with an event: a worker's Finished/Failed, or a Failed from here.

A model file replaced under a running server (a pull or ``models add --force``, an atomic rename)
is noticed when a request for the model arrives and at the status heartbeat: each worker keeps
the registry's stamp of the file it was started on, and workers whose stamp is not the file's
any more are retired (see _check_file).
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

import msgspec
from hearth.scheduler import errors
from hearth.scheduler.fair_queue import FairQueue, slots_of
from hearth.scheduler.messages import (
    Assign,
    Cancel,
    ChatJob,
    EmbedJob,
    Event,
    Failed,
    FromWorker,
    Job,
    RemoteStatus,
    SchedulerStatus,
    Shutdown,
    SlotFreed,
    TokenizeJob,
    ToWorker,
    WorkerFailed,
    WorkerReady,
    WorkerSpec,
    WorkerStats,
)
from hearth.scheduler.placement import Loaded, estimate_bytes, expired, plan_room
from hearth.scheduler.prefix_blocks import leading_blocks, split
from hearth.scheduler.routing import Candidate, pick
from hearth.scheduler.token_ids import check_fim, check_token_ids
from hearth.scheduler.workers import (
    ModelCounters,
    ModelHealth,
    RemoteProcess,
    WorkerFactory,
    WorkerHandle,
    backoff,
    describe_exit,
    model_states,
    spawn_worker,
    worker_statuses,
)
from hearth.tools.registry import ModelEntry, ModelRegistry
from hearth.tools.settings import Settings

# how long stopping workers may take to exit before they are killed (not --shutdown-grace, which
# is how long the api lets requests in flight finish before the scheduler is told to stop)
WORKER_EXIT_WAIT_S = 10.0
STATUS_EVERY_S = 1.0  # the status heartbeat, also sent on every change
_HOST = socket.gethostname()  # this machine's, for its local workers in the status

Send = Callable[[str, ToWorker], bool]  # (worker id, message) -> False if it is not connected
Publish = Callable[[str, list[Event]], None]  # (frontend, events): held until it subscribes
PublishStatus = Callable[[SchedulerStatus], None]  # best effort: lost if nobody listens
Clock = Callable[[], float]  # monotonic seconds

log = logging.getLogger("hearth.scheduler")


class SchedulerSpec(msgspec.Struct, frozen=True, kw_only=True):
    settings: Settings
    intake_endpoint: str
    control_endpoint: str
    events_endpoint: str
    # the scheduler's CURVE key pair file (tools/curve_keys.py), with --worker-listen
    curve_key_file: str = ""


class Scheduler:
    def __init__(self, spec: SchedulerSpec, *, send: Send, publish: Publish,
                 publish_status: PublishStatus, spawn: WorkerFactory = spawn_worker,
                 clock: Clock = time.monotonic) -> None:
        self.spec = spec
        self.settings = spec.settings
        self._spawn = spawn
        self._send_to = send
        self._publish = publish
        self._status_out = publish_status
        self._clock = clock
        self.registry = ModelRegistry(self.settings.models_dir, self.settings.aliases())
        self.queue = FairQueue(self.settings.max_queue)
        self.workers: dict[str, WorkerHandle] = {}  # by worker id
        self.health: dict[str, ModelHealth] = {}  # by model
        self.counters: dict[str, ModelCounters] = {}  # by model, for status and metrics
        self.owner: dict[str, WorkerHandle] = {}  # request id -> worker running it
        self.running_by_key: dict[str, int] = {}  # key name -> requests running on workers
        self.last_used: dict[str, float] = {}  # model -> when a request last came or went
        self.unloaded: set[str] = set()  # models stopped on purpose (idle, or to make room)
        self.reloading: set[str] = set()  # models whose file was replaced: start fresh workers
        self._status_dirty = True
        self._status_at = 0.0
        self._files_at = -STATUS_EVERY_S  # when loaded models' files were last compared
        # the remote boxes' status (set by the server when it listens for remote workers)
        self.remote_status: Callable[[], list[RemoteStatus]] = list

    def start(self) -> None:
        """Start the default model's workers: it is kept loaded from the start."""
        self._ensure_workers(self.settings.model)

    # ---- requests ---------------------------------------------------------------------------

    def on_submit(self, req: Job) -> None:
        try:
            entry = self.registry.get(req.model)
            if entry is None and not self._remote(req.model):
                raise errors.ModelNotFound.named(req.model)
            if entry is None:  # served by remote boxes only: they check the rest
                if isinstance(req, ChatJob) and req.n > self._remote_slots(req.model):
                    raise errors.InvalidRequest(
                        f"'n' is {req.n}, but the workers of the model '{req.model}' have at "
                        f"most {self._remote_slots(req.model)} slots each: each choice takes "
                        "one.", param="n")
                if isinstance(req, EmbedJob) and \
                        not any(h.embeddings for h in self._remote(req.model)):
                    raise errors.InvalidRequest(f"The model '{req.model}' does not serve "
                                                "embeddings on the boxes that have it.",
                                                param="model")
            elif entry.error:
                raise errors.ModelLoadFailed.named(req.model, entry.error)
            if isinstance(req, EmbedJob) and not self.settings.model_config(req.model).embeddings:
                raise errors.InvalidRequest(f"The model '{req.model}' does not serve embeddings "
                                            "on this server.", param="model")
            if isinstance(req, EmbedJob) and req.dimensions is not None:
                # refused here, from the header, so a wrong width never queues or loads a model
                info = entry.info if entry is not None else None
                width = info.arch_value("embedding_length") if info else None
                if isinstance(width, int) and width != req.dimensions:
                    raise errors.InvalidRequest.wrong_dimensions(req.model, width)
            if isinstance(req, ChatJob) and req.n > 1 and entry is not None:
                self._check_choices(req)
            if entry is not None and entry.info is not None:
                check_token_ids(req, entry.info.vocab_size)
                check_fim(req, entry.info)
            health = self.health.get(req.model)
            if health and health.message and self._clock() < health.retry_at \
                    and not self._live(req.model):
                raise errors.ModelLoadFailed.named(req.model, health.message)
            self.queue.push(req)
        except errors.HearthError as exc:
            self._fail(req, exc)
            return
        self.unloaded.discard(req.model)
        self.last_used[req.model] = self._clock()
        self._check_file(req.model, entry)
        self._ensure_workers(req.model)
        self._status_dirty = True

    def _check_choices(self, req: ChatJob) -> None:
        """A request of n choices takes n slots of one worker at once: refused (InvalidRequest,
        ``param: "n"``) when no worker of the model has that many, or when --max-per-key is
        lower, since it would wait for ever."""
        slots = self.settings.model_config(req.model).parallel or self.settings.parallel
        if req.n > slots:
            raise errors.InvalidRequest(
                f"'n' is {req.n}, but the model '{req.model}' has {slots} slots on this server "
                f"(--parallel): each choice takes one. Ask for at most {slots}.", param="n")
        cap = self.settings.max_per_key
        if cap and req.n > cap:
            raise errors.InvalidRequest(
                f"'n' is {req.n}, but one API key may run at most {cap} sequences at once on "
                f"this server (--max-per-key): each choice takes one. Ask for at most {cap}.",
                param="n")

    def on_cancel(self, request_id: str) -> None:
        if self.queue.remove(request_id) is not None:
            self._status_dirty = True
            return
        handle = self.owner.get(request_id)
        if handle is not None:
            self._send(handle, Cancel(request_id))

    def _left(self, req: Job) -> None:
        """A running request left its worker."""
        handle = self.owner.pop(req.request_id, None)
        if handle is not None:
            handle.routed_blocks.pop(req.request_id, None)
        left = self.running_by_key.get(req.key_name, 0) - slots_of(req)
        if left > 0:
            self.running_by_key[req.key_name] = left
        else:
            self.running_by_key.pop(req.key_name, None)

    def _fail(self, req: Job, exc: errors.HearthError) -> None:
        self._publish(req.frontend, [Failed.of(req.request_id, exc)])

    def _key_may_run(self, key: str, slots: int = 1) -> bool:
        """Whether ``key`` may start a request taking ``slots`` slots (one per choice: a
        request of n choices counts n against --max-per-key)."""
        return self.running_by_key.get(key, 0) + slots <= self.settings.max_per_key

    def dispatch(self) -> None:
        """Hand waiting requests to workers with room. The fair queue picks the next request
        for a model; routing (scheduler/routing.py, --routing) picks which of the model's
        workers runs it: the one whose slots hold the longest start of its prompt, then the
        one with the most free capacity."""
        capped = self._key_may_run if self.settings.max_per_key > 0 else None
        by_model: dict[str, list[WorkerHandle]] = {}
        for handle in self.workers.values():
            by_model.setdefault(handle.model, []).append(handle)
        for model, handles in by_model.items():
            for kind in (ChatJob, (EmbedJob, TokenizeJob)):  # slots; slotless jobs
                while True:
                    room = max(h.free(kind) for h in handles)
                    if room <= 0:
                        break
                    req = self.queue.pop_for(model, capped, kind, room=room)
                    if req is None:
                        break
                    handle = self._route(req, handles, kind)
                    handle.running[req.request_id] = req
                    self.owner[req.request_id] = handle
                    self.running_by_key[req.key_name] = \
                        self.running_by_key.get(req.key_name, 0) + slots_of(req)
                    self.last_used[model] = self._clock()
                    self._status_dirty = True
                    if not self._send(handle, Assign(req)):
                        break

    def _route(self, req: Job, handles: list[WorkerHandle],
               kind: type | tuple[type, ...]) -> WorkerHandle:
        """The worker of ``handles`` that runs ``req`` (one has room: the queue gave it)."""
        if isinstance(req, EmbedJob) and len(handles) > 1:
            # a box may not serve embeddings for the model (RemoteWorker.embeddings): the
            # workers that do first (on_submit made sure one does), then the least loaded
            return max(handles, key=lambda h: (h.embeddings, h.free(kind)))
        if not isinstance(req, ChatJob) or len(handles) == 1:
            return max(handles, key=lambda h: h.free(kind))
        prefix = self.settings.routing == "prefix"
        blocks = leading_blocks(req) if prefix else []
        chosen = pick(blocks, [Candidate(h.free(kind), h.held() if prefix else ())
                               for h in handles],
                      slots_of(req), "prefix" if prefix else "even")
        assert chosen is not None, "the queue gave a request no worker has room for"
        index, held = chosen
        handle = handles[index]
        counters = self.counters.setdefault(handle.model, ModelCounters())
        counters.routed += 1
        if held:
            counters.routed_by_prefix += 1
        if blocks:
            handle.routed_blocks[req.request_id] = [block.hash for block in blocks]
        return handle

    # ---- workers ----------------------------------------------------------------------------

    def _live(self, model: str) -> list[WorkerHandle]:
        return [h for h in self.workers.values() if h.model == model and not h.retired]

    def _local(self, model: str) -> list[WorkerHandle]:
        """The model's live worker processes on this machine (the ones this scheduler starts,
        stops, unloads and replaces; remote boxes manage their own)."""
        return [h for h in self._live(model) if not h.remote]

    def _remote(self, model: str) -> list[WorkerHandle]:
        return [h for h in self._live(model) if h.remote]

    def _remote_slots(self, model: str) -> int:
        return max((h.slots for h in self._remote(model)), default=0)

    # ---- remote workers (scheduler/remote_link.py owns the link; these are its decisions) --

    def add_remote(self, worker_id: str, model: str, slots: int, box: str,
                   size_bytes: int = 0, cache: bytes = b"", embeddings: bool = True,
                   host: str = "") -> None:
        """A worker of a remote box joined: it takes requests at once (it loaded its model
        before joining). Its memory is the box's, not counted against this machine's.
        ``cache``: what its slots hold (RemoteWorker.cache), for routing; ``embeddings``:
        whether the box serves embeddings for the model; ``host``: the box's host name."""
        self.workers[worker_id] = WorkerHandle(worker_id, model, RemoteProcess(), "ready",
                                               slots, bytes=size_bytes, remote=box,
                                               cache=frozenset(split(cache)),
                                               embeddings=embeddings, host=host or box,
                                               last_heard=self._clock())
        self.last_used.setdefault(model, self._clock())
        self._status_dirty = True

    def drop_remote(self, worker_id: str, why: str) -> None:
        """A remote worker is gone (its link fell silent or closed, or its box no longer lists
        it): what it was running ends with WorkerDied, as when a local worker crashes; what
        waits in the queue stays there for the model's other workers."""
        handle = self.workers.pop(worker_id, None)
        if handle is None:
            return
        self._status_dirty = True
        if handle.running:
            log.warning("remote worker '%s' for model '%s' lost (%s); %d request(s) it was "
                        "running failed", handle.remote, handle.model, why, len(handle.running))
        died = errors.WorkerDied(f"the remote worker '{handle.remote}' for model "
                                 f"'{handle.model}' was lost ({why}); retry the request")
        for req in handle.running.values():
            self._left(req)
            self._fail(req, died)
        handle.running.clear()
        if not self._live(handle.model) and self.registry.get(handle.model) is None:
            # no other worker serves it and it has no file here: nothing would ever run what
            # waits for it (its box, if it comes back, serves the next requests)
            for req in self.queue.drain(handle.model):
                self._fail(req, died)

    def _spec(self, model: str, path: str) -> WorkerSpec:
        return WorkerSpec(
            worker_id=f"{model}-{uuid.uuid4().hex[:8]}", model=model,
            control_endpoint=self.spec.control_endpoint,
            events_endpoint=self.spec.events_endpoint,
            config=self.settings.worker_config(model, path))

    def _loaded(self) -> list[Loaded]:
        """Models with worker processes, for the placement rules: per model, one entry for its
        live workers and one for its retired ones (draining or stopping), which count until
        they exit (their memory is not free yet) and are busy (they cannot be stopped again)."""
        out: dict[tuple[str, bool], Loaded] = {}
        for h in self.workers.values():
            if h.remote:  # its memory is its box's
                continue
            prev = out.get((h.model, h.retired))
            out[h.model, h.retired] = Loaded(
                h.model, (prev.bytes if prev else 0) + h.bytes,
                self.last_used.get(h.model, 0.0),
                h.retired or bool(h.running) or bool(prev and prev.busy),
                pinned=h.model == self.settings.model)
        waiting = self.queue.models_waiting()  # a model with waiting requests is in use
        return [replace(m, busy=True) if m.model in waiting else m for m in out.values()]

    def _ensure_workers(self, model: str) -> None:
        """Start the model's workers (``replicas`` of them) if it has none, first unloading the
        least recently used idle models when --max-loaded-models or --memory-budget need it;
        when nothing can be unloaded yet, do nothing (requests wait; reap() tries again)."""
        cfg = self.settings.model_config(model)
        live = self._local(model)
        if len(live) >= cfg.replicas:
            self.reloading.discard(model)  # started already (for a request)
            return
        entry = self.registry.get(model)
        if entry is None:
            self.reloading.discard(model)  # deleted meanwhile: nothing to reload
            return
        spec = self._spec(model, str(entry.path))
        knobs = spec.config
        cost = estimate_bytes(entry.size, entry.info, knobs.n_slots * knobs.n_ctx_slot,
                              knobs.cache_type_k, knobs.cache_type_v) + knobs.cache_ram
        if not live:
            loaded = self._loaded()  # with this model's retired workers, if it has any
            victims = plan_room(loaded, cost, self.settings.max_loaded_models,
                                self.settings.effective_memory_budget())
            if victims is None:
                return
            if victims and any(m.model == model for m in loaded):
                return  # its replaced workers are about to exit: wait, rather than unload others
            if victims:  # start once their memory is free: reap() comes back when they exit
                for victim in victims:
                    self._unload(victim)
                return
        for _ in range(cfg.replicas - len(live)):
            spec = msgspec.structs.replace(spec, worker_id=f"{model}-{uuid.uuid4().hex[:8]}")
            proc = self._spawn(msgspec.msgpack.encode(spec))
            self.workers[spec.worker_id] = WorkerHandle(spec.worker_id, model, proc, bytes=cost,
                                                        file=entry.stamp,
                                                        last_heard=self._clock())
            counters = self.counters.setdefault(model, ModelCounters())
            counters.starts += 1
            if counters.starts > 1:  # the first start is the server's own "starting" line
                log.info("worker for model '%s' restarted (pid %s, start %d)", model,
                         proc.pid, counters.starts)
            counters.size_bytes = entry.size
        self.last_used.setdefault(model, self._clock())
        self.reloading.discard(model)
        self._status_dirty = True

    def _unload(self, model: str) -> None:
        """Stop every worker of ``model`` (they are idle); it loads again on demand."""
        for handle in self._local(model):
            self._stop(handle)
        self.unloaded.add(model)
        self._status_dirty = True

    def _stop(self, handle: WorkerHandle) -> None:
        handle.state = "stopping"
        # a loading worker that has not connected yet misses this: it is sent again when its
        # WorkerReady arrives (on_worker_message)
        self._send(handle, Shutdown())

    def _check_file(self, model: str, entry: ModelEntry | None) -> None:
        """Retire the model's live workers that were started on another file than the one its
        path names now: each takes no new request and is stopped once idle, so what it runs
        finishes on the old weights; fresh workers start on the new file (_ensure_workers, for
        the requests waiting or, through ``reloading``, for a model that was loaded) and
        requests wait for them as during any load. A file that is gone changes nothing here:
        as for any deleted model, requests for it are refused as unknown, and its workers are
        unloaded by keep-alive or to make room."""
        if entry is None or entry.stamp is None:
            return
        stale = [h for h in self._local(model) if h.file != entry.stamp]
        for handle in stale:
            if handle.running:
                handle.state = "draining"  # stopped by reap() when its last request ends
            else:
                self._stop(handle)
        if stale and entry.error is None:  # a broken new file loads only when asked for
            self.reloading.add(model)
        if stale:
            self._status_dirty = True

    def _keep_alive(self, model: str) -> float:
        cfg = self.settings.model_config(model)
        return cfg.keep_alive if cfg.keep_alive is not None else self.settings.keep_alive

    def on_worker_message(self, msg: FromWorker) -> None:
        handle = self.workers.get(msg.worker_id)
        if handle is None:
            return
        handle.last_heard = self._clock()
        if isinstance(msg, WorkerStats):
            handle.times = msg.times
            handle.ram_cache = msg.ram_cache
            handle.rate.sample(msg.times.tokens, handle.last_heard)
            return  # counters only: not worth a status message of its own
        if isinstance(msg, SlotFreed):
            if msg.cache is not None:
                handle.cache = frozenset(split(msg.cache))
            req = handle.running.pop(msg.request_id, None)
            if req is not None:
                self._left(req)
                self.last_used[handle.model] = self._clock()
        elif isinstance(msg, WorkerReady):
            if handle.state == "stopping":  # retired while it loaded: now it can hear that
                self._send(handle, Shutdown())
                return
            handle.state = "ready"
            handle.slots = msg.slots
            handle.placement = msg.placement
            if msg.placement is not None and msg.placement.warning:
                log.warning("model '%s': %s", handle.model, msg.placement.warning)
            self.health.pop(handle.model, None)
        elif isinstance(msg, WorkerFailed):
            if handle.state == "loading":
                self._model_failed(handle, msg.message)
            else:  # retired while loading a file that is not the model's any more
                handle.state = "stopping"
        self._status_dirty = True

    def _model_failed(self, handle: WorkerHandle, message: str) -> None:
        handle.state = "stopping"
        self.counters.setdefault(handle.model, ModelCounters()).crashes += 1
        health = self.health.setdefault(handle.model, ModelHealth())
        health.failures += 1
        health.message = message
        health.retry_at = self._clock() + backoff(health.failures)
        exc = errors.ModelLoadFailed.named(handle.model, message)
        for req in self.queue.drain(handle.model):
            self._fail(req, exc)

    def reap(self) -> None:
        """Notice workers that exited; fail what they were running; restart on demand."""
        for handle in list(self.workers.values()):
            if handle.proc.exitcode is None:
                continue
            del self.workers[handle.worker_id]
            self._status_dirty = True
            if handle.state != "stopping":  # not told to stop: it crashed, was killed, or OOM
                log.warning("worker for model '%s' (pid %s) exited unexpectedly: %s; %d "
                            "request(s) it was running failed", handle.model, handle.proc.pid,
                            describe_exit(handle.proc.exitcode), len(handle.running))
            counters = self.counters.setdefault(handle.model, ModelCounters())
            counters.exited = counters.exited.plus(handle.times)
            counters.exited_cache = counters.exited_cache.plus(handle.ram_cache.counters())
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
                crashes.retry_at = self._clock() + backoff(crashes.failures - 1)
        now = self._clock()
        if now - self._files_at >= STATUS_EVERY_S:  # so an idle model is not stale for ever
            self._files_at = now
            for model in {h.model for h in self.workers.values() if not h.retired}:
                self._check_file(model, self.registry.get(model))
        for handle in self.workers.values():
            if handle.state == "draining" and not handle.running:
                self._stop(handle)
        for model in expired(self._loaded(), now, self._keep_alive):
            self._unload(model)
        wanted = self.queue.models_waiting() | self.reloading
        if self.settings.model not in self.unloaded:
            wanted.add(self.settings.model)  # the default model is kept loaded, or restarted
        for model in wanted:
            health = self.health.get(model)
            if health is None or now >= health.retry_at:
                self._ensure_workers(model)

    def _send(self, handle: WorkerHandle, msg: ToWorker) -> bool:
        # False: the worker is not connected (yet, or any more); reap() handles it
        return self._send_to(handle.worker_id, msg)

    def shutdown(self) -> None:
        """Stop every worker (they fail their in-flight requests), fail what still waits, and
        wait for the workers' processes (killed after WORKER_EXIT_WAIT_S)."""
        for req in self.queue.drain():
            self._fail(req, errors.ShuttingDown("the server is shutting down"))
        for handle in [h for h in self.workers.values() if h.remote]:
            # a remote box stays up and joins again when this server is back; what it runs
            # for us is cancelled there (sent while the handle still routes to its link)
            for req in handle.running.values():
                self._send(handle, Cancel(req.request_id))
                self._fail(req, errors.ShuttingDown("the server is shutting down"))
            handle.running.clear()
            del self.workers[handle.worker_id]
        for handle in self.workers.values():
            handle.state = "stopping"
            if not self._send(handle, Shutdown()):
                # not connected yet (still loading): the message cannot reach it; SIGTERM does
                # (the worker stops at its next loop turn, after the load)
                handle.proc.terminate()
        deadline = self._clock() + WORKER_EXIT_WAIT_S
        for handle in self.workers.values():
            handle.proc.join(max(0.0, deadline - self._clock()))
            if handle.proc.exitcode is None:
                handle.proc.kill()
                handle.proc.join(2)

    # ---- status and timers ------------------------------------------------------------------

    def status(self) -> SchedulerStatus:
        return SchedulerStatus(self.settings.model,
                               model_states(self.workers.values(), self.counters, self.health),
                               len(self.queue), self.queue.depth_by_key(),
                               self.remote_status(),
                               worker_statuses(self.workers.values(), self._clock(), _HOST))

    def publish_status(self, force: bool = False) -> None:
        """Announce the status if something changed, or as the heartbeat."""
        now = self._clock()
        if force or self._status_dirty or now - self._status_at >= STATUS_EVERY_S:
            self._status_out(self.status())
            self._status_dirty = False
            self._status_at = now

    def wait_ms(self) -> int:
        """How long the loop may sleep when nothing arrives: until the next status heartbeat
        or model restart, at most a second (keep-alive expiry and the parent's health are
        checked that often). Workers' exits wake it through their sentinels."""
        now = self._clock()
        due = [self._status_at + STATUS_EVERY_S] + [h.retry_at for h in self.health.values()
                                                    if h.retry_at > now]
        return max(1, min(1000, int((min(due) - now) * 1000) + 1))
