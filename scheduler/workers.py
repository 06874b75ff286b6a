"""What the scheduler keeps about its worker processes and their models, and the model states
(the status) built from it. Plain data and pure functions: no sockets, no clock.

Owned by the scheduler's only thread (see scheduler.core).
"""

from __future__ import annotations

import builtins
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

import msgspec
from hearth.scheduler.fair_queue import slots_of
from hearth.scheduler.messages import (
    ChatJob,
    EngineTimes,
    Job,
    ModelState,
    Placement,
    RamCacheStats,
    WorkerStatus,
)
from hearth.scheduler.token_rate import TokenRate
from hearth.tools.proc import spawn_process
from hearth.tools.registry import FileStamp

# loading: spawned, its WorkerReady not seen yet; ready: takes requests; draining: its model's
# file was replaced, so it takes nothing new and is told to stop once its running requests end;
# stopping: told to stop (or failed), its process not reaped yet. Draining and stopping workers
# still hold memory but are no longer the model's (see retired).
WorkerState = Literal["loading", "ready", "draining", "stopping"]

EMBED_JOBS_PER_WORKER = 16  # embedding requests a worker batches together (beside its slots)
RETRY_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)


@dataclass
class WorkerHandle:
    worker_id: str
    model: str
    proc: WorkerProcess
    state: WorkerState = "loading"
    slots: int = 0
    running: dict[str, Job] = field(default_factory=dict)
    bytes: int = 0  # estimated memory (placement.estimate_bytes)
    times: EngineTimes = field(default_factory=EngineTimes)  # its last WorkerStats
    ram_cache: RamCacheStats = field(default_factory=RamCacheStats)  # ditto
    file: FileStamp | None = None  # the model file it was started on (the registry's stamp)
    # prefix-block hashes its slots hold, as it last reported them (SlotFreed.cache), and those
    # of the chat jobs routed to it that still run (by request id): see scheduler/routing.py
    cache: frozenset[builtins.bytes] = frozenset()
    routed_blocks: dict[str, list[builtins.bytes]] = field(default_factory=dict)
    placement: Placement | None = None  # from its WorkerReady: CPU or GPU layers
    remote: str = ""  # the remote box it runs on (its key's name); "" for a local process
    embeddings: bool = True  # a remote box's word (RemoteWorker.embeddings); local: the config's
    host: str = ""  # the host it runs on: a remote box's reported name; "" for this machine
    last_heard: float = 0.0  # monotonic: when it last sent anything (set when it is made)
    rate: TokenRate = field(default_factory=TokenRate)  # from its WorkerStats' token counts

    def held(self) -> set[builtins.bytes] | frozenset[builtins.bytes]:
        """The prefix-block hashes routing counts this worker as holding."""
        if not self.routed_blocks:
            return self.cache
        out = set(self.cache)
        for blocks in self.routed_blocks.values():
            out.update(blocks)
        return out

    @property
    def place(self) -> str:
        """Where it runs, as status shows it: "local", or the remote box's name."""
        return self.remote or "local"

    @property
    def retired(self) -> bool:
        """Draining or stopping: it serves what it runs, but the model needs other workers."""
        return self.state in ("draining", "stopping")

    def free(self, kind: type | tuple[type, ...]) -> int:
        """How many more slots of this kind the worker has free now: ChatJob (a job takes one
        per choice), or the slotless jobs (EmbedJob, TokenizeJob: EMBED_JOBS_PER_WORKER of them)."""
        if self.state != "ready":
            return 0
        capacity = self.slots if kind is ChatJob else EMBED_JOBS_PER_WORKER
        return capacity - sum(slots_of(r) for r in self.running.values() if isinstance(r, kind))

    @property
    def busy_slots(self) -> int:
        """Slots taken: one per choice of each running chat job, until the job's last choice
        ends (the worker frees a job's slots together)."""
        return sum(r.n for r in self.running.values() if isinstance(r, ChatJob))


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
    routed: int = 0  # chat requests routed to one of its workers
    routed_by_prefix: int = 0  # of which to a worker that held the start of their prompt
    exited: EngineTimes = field(default_factory=EngineTimes)  # of workers that have exited
    exited_cache: RamCacheStats = field(default_factory=RamCacheStats)  # their counters


class WorkerProcess(Protocol):
    """What the scheduler uses of a worker's process: multiprocessing's Process, or a test's
    fake. ``sentinel`` joins the scheduler's poll and becomes ready when the process exits."""

    @property
    def exitcode(self) -> int | None: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def sentinel(self) -> int: ...
    def join(self, timeout: float | None = None) -> None: ...
    def terminate(self) -> None: ...
    def kill(self) -> None: ...


class RemoteProcess:
    """The stand-in process of a worker on a remote box (scheduler/remote_link.py): it never
    exits here — a lost link is dropped by ``Scheduler.drop_remote`` — and has nothing to wait
    on or signal (``sentinel`` -1: not polled)."""

    exitcode: int | None = None
    pid: int | None = None
    sentinel = -1

    def join(self, timeout: float | None = None) -> None:
        return None

    def terminate(self) -> None:
        return None

    def kill(self) -> None:
        return None


WorkerFactory = Callable[[bytes], WorkerProcess]  # encoded WorkerSpec -> a started process


def spawn_worker(spec_bytes: bytes) -> WorkerProcess:
    # By name: only the worker process imports the engine (and llama.cpp).
    return spawn_process("hearth.engine.worker:worker_main", spec_bytes, name="hearth-worker")


def backoff(failures: int) -> float:
    """Seconds to wait before starting a model again after ``failures`` failures (0: none)."""
    if failures <= 0:
        return 0.0
    return RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S)) - 1]


def model_states(workers: Iterable[WorkerHandle], counters: Mapping[str, ModelCounters],
                 health: Mapping[str, ModelHealth]) -> list[ModelState]:
    """One state per model that has had a worker, sorted by model: a model's replicas add up;
    a model with no live worker is failed (its health has a message) or stopped."""
    workers = list(workers)
    states: dict[str, ModelState] = {}
    for model, c in counters.items():
        h = health.get(model)
        failed = h is not None and bool(h.message)
        states[model] = ModelState(model, "failed" if failed else "stopped",
                                   message=h.message if h else "",
                                   size_bytes=c.size_bytes, starts=c.starts,
                                   crashes=c.crashes, routed_by_prefix=c.routed_by_prefix,
                                   routed=c.routed)
    for handle in workers:  # replicas of one model add up
        if handle.retired:  # a replaced file's draining worker is not the model loaded
            continue
        c = counters.get(handle.model, ModelCounters())
        prev = states.get(handle.model)
        if prev is None or prev.state not in ("loading", "ready"):
            prev = ModelState(handle.model, "loading")
        state: Literal["ready", "loading"] = (
            "ready" if "ready" in (handle.state, prev.state) else "loading")
        states[handle.model] = ModelState(
            handle.model, state, handle.slots + prev.slots,
            handle.busy_slots + prev.busy,
            size_bytes=c.size_bytes or (handle.bytes if handle.remote else 0),
            starts=c.starts, crashes=c.crashes,
            routed_by_prefix=c.routed_by_prefix, routed=c.routed,
            workers=sorted({*prev.workers, handle.place}),
            placement=prev.placement or handle.placement)
    engine = {model: c.exited for model, c in counters.items()}
    for handle in workers:
        engine[handle.model] = engine.get(handle.model, EngineTimes()).plus(handle.times)
    caches = {model: c.exited_cache for model, c in counters.items()}
    for handle in workers:
        caches[handle.model] = caches.get(handle.model, RamCacheStats()).plus(handle.ram_cache)
    for model, times in engine.items():
        if model in states:
            states[model] = msgspec.structs.replace(states[model], engine=times,
                                                    ram_cache=caches[model])
    return sorted(states.values(), key=lambda m: m.model)


def worker_statuses(workers: Iterable[WorkerHandle], now: float,
                    this_host: str) -> list[WorkerStatus]:
    """Each worker as status shows it, sorted by model, then where, then id. ``now``:
    monotonic seconds; ``this_host``: the host name of this machine (local workers')."""
    out = [WorkerStatus(h.worker_id, h.model, h.place, h.host or this_host, h.state, h.slots,
                        h.busy_slots, h.times.tokens, round(h.rate.now_per_s(now), 2),
                        round(max(0.0, now - h.last_heard), 3), h.proc.pid or 0)
           for h in workers]
    return sorted(out, key=lambda w: (w.model, w.place != "local", w.place, w.worker_id))


def describe_exit(exitcode: int | None) -> str:
    """How a worker's exit reads in the log: ``exit code 1``, or ``killed by SIGKILL`` for
    multiprocessing's negative exit codes (the signal that ended the process)."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit code {exitcode}"
