"""scheduler/core.py: admission, fairness, routing and crash handling, with fake workers.

The Scheduler runs with no sockets: what it sends to a worker lands in that worker's inbox here
(delivered only once the worker has said hello, as over the ROUTER), what it publishes is
recorded, its clock is a number the test moves, and the worker factory hands back a fake process.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_workers import EMPTY_GGUF, FakeProc, gguf_header
from hearth.scheduler.core import Scheduler, SchedulerSpec
from hearth.scheduler.messages import (
    Assign,
    Cancel,
    ChatJob,
    ChatMessage,
    EmbedJob,
    EngineTimes,
    Event,
    Failed,
    FromWorker,
    Placement,
    RamCacheStats,
    RawPrompt,
    RequestedSampling,
    SchedulerStatus,
    Shutdown,
    SlotFreed,
    TokenizeJob,
    ToWorker,
    WorkerReady,
    WorkerStats,
)
from hearth.scheduler.prefix_blocks import prefix_blocks
from hearth.tools.model_config import ModelConfig
from hearth.tools.settings import Settings


class Rig:
    def __init__(self, tmp: Path, **settings: object) -> None:
        (tmp / "m.gguf").write_bytes(EMPTY_GGUF)
        self.spec = SchedulerSpec(
            settings=Settings(models_dir=str(tmp), model="m", **settings),  # type: ignore[arg-type]
            intake_endpoint="inproc://intake", control_endpoint="inproc://control",
            events_endpoint="inproc://events")
        self.now = 1000.0
        self.procs: list[FakeProc] = []
        self.connected: set[str] = set()  # workers that said hello: sends reach them
        self.inbox: dict[str, list[ToWorker]] = defaultdict(list)
        self.published: list[tuple[str, Event]] = []
        self.statuses: list[SchedulerStatus] = []
        self.sched = Scheduler(self.spec, send=self._send, publish=self._publish,
                               publish_status=self.statuses.append, spawn=self._spawn,
                               clock=lambda: self.now)

    def _spawn(self, spec_bytes: bytes) -> FakeProc:
        proc = FakeProc(spec_bytes)
        self.procs.append(proc)
        return proc

    def _send(self, worker_id: str, msg: ToWorker) -> bool:
        if worker_id not in self.connected:
            return False
        self.inbox[worker_id].append(msg)
        return True

    def _publish(self, frontend: str, events: list[Event]) -> None:
        self.published.extend((frontend, e) for e in events)

    def ready(self, proc: FakeProc, slots: int) -> str:
        wid = proc.spec.worker_id
        self.connected.add(wid)
        self.says(WorkerReady(wid, "m", slots))
        return wid

    def says(self, msg: FromWorker) -> None:
        self.sched.on_worker_message(msg)
        self.tick()

    def tick(self) -> None:
        self.sched.reap()
        self.sched.dispatch()

    def submit(self, rid: str, key: str = "A", model: str = "m", n: int = 1) -> None:
        self.sched.on_submit(ChatJob(rid, "fe", key, model, [], RequestedSampling(), n=n))
        self.tick()

    def assigned(self, worker_id: str) -> list[str]:
        out = []
        for msg in self.inbox.pop(worker_id, []):
            assert isinstance(msg, Assign)
            out.append(msg.request.request_id)
        return out

    def free(self, worker_id: str, rid: str) -> None:
        self.says(SlotFreed(worker_id, rid))

    def failures(self) -> list[Failed]:
        out = [e for _, e in self.published if isinstance(e, Failed)]
        self.published.clear()
        return out


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield Rig(tmp_path)


def test_requests_wait_for_the_worker_then_run(rig: Rig) -> None:
    rig.sched.start()
    rig.submit("r1")
    (proc,) = rig.procs
    assert proc.spec.model == "m"
    wid = rig.ready(proc, slots=2)
    assert rig.assigned(wid) == ["r1"]


def test_keys_take_turns(rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=1)
    for i in range(10):
        rig.submit(f"a{i}", key="flood")
    rig.submit("b0", key="other")
    order = rig.assigned(wid)
    for _ in range(3):
        rig.free(wid, order[-1])
        order += rig.assigned(wid)
    assert order == ["a0", "b0", "a1", "a2"]


def test_per_key_cap(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_per_key=1)
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=4)
    rig.submit("a0", key="A")
    rig.submit("a1", key="A")
    rig.submit("b0", key="B")
    assert rig.assigned(wid) == ["a0", "b0"]
    rig.free(wid, "a0")
    assert rig.assigned(wid) == ["a1"]


def test_full_queue_fails_with_overloaded(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_queue=2)
    for i in range(3):
        rig.submit(f"r{i}")
    (fail,) = rig.failures()
    assert (fail.request_id, fail.kind) == ("r2", "Overloaded")


def test_unknown_model_fails(rig: Rig) -> None:
    rig.submit("r1", model="nope")
    (fail,) = rig.failures()
    assert fail.kind == "ModelNotFound" and fail.param == "model"


def test_cancel_of_queued_request_drops_it(rig: Rig) -> None:
    rig.sched.start()
    rig.submit("r1")
    rig.sched.on_cancel("r1")
    wid = rig.ready(rig.procs[0], slots=1)
    assert rig.assigned(wid) == []
    assert len(rig.sched.queue) == 0


def test_cancel_of_running_request_goes_to_its_worker(rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=1)
    rig.submit("r1")
    assert rig.assigned(wid) == ["r1"]
    rig.sched.on_cancel("r1")
    (msg,) = rig.inbox.pop(wid)
    assert msg == Cancel("r1")


def test_worker_death_fails_its_requests_and_restarts(rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=2)
    rig.submit("r1")
    rig.submit("r2")
    assert rig.assigned(wid) == ["r1", "r2"]
    rig.procs[0].exitcode = -9
    rig.submit("r3")  # waits for the replacement
    fails = rig.failures()
    assert sorted(f.request_id for f in fails) == ["r1", "r2"]
    assert all(f.kind == "WorkerDied" for f in fails)
    assert len(rig.procs) == 2  # restarted because r3 waits for the model
    wid2 = rig.ready(rig.procs[1], slots=2)
    assert rig.assigned(wid2) == ["r3"]


def test_a_model_that_fails_to_load_fails_its_queue_and_backs_off(rig: Rig) -> None:
    rig.sched.start()
    rig.submit("r1")
    rig.procs[0].exitcode = 1  # died while loading
    rig.tick()
    (fail,) = rig.failures()
    assert (fail.request_id, fail.kind) == ("r1", "ModelLoadFailed")
    rig.submit("r2")  # within the back-off: refused at once, nothing started
    (fail,) = rig.failures()
    assert (fail.request_id, fail.kind) == ("r2", "ModelLoadFailed")
    assert len(rig.procs) == 1
    (state,) = rig.sched.status().models
    assert (state.state, state.starts, state.crashes) == ("failed", 1, 1)
    rig.now += 1.0  # the first back-off step has passed: the default model starts again
    rig.tick()
    assert len(rig.procs) == 2
    (state,) = rig.sched.status().models
    assert (state.state, state.starts, state.crashes) == ("loading", 2, 1)


def test_engine_times_add_up_across_worker_restarts(rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=2)
    rig.says(WorkerStats(wid, EngineTimes(2.0, 1.5, 0.25, 10, 40)))
    (state,) = rig.sched.status().models
    assert state.engine == EngineTimes(2.0, 1.5, 0.25, 10, 40)
    assert state.engine.overhead_s == pytest.approx(0.25)
    rig.procs[0].exitcode = -9  # the counters stay: Prometheus counters never go back
    rig.tick()
    rig.sched.start()
    wid2 = rig.ready(rig.procs[1], slots=2)
    rig.says(WorkerStats(wid2, EngineTimes(1.0, 0.5, 0.25, 5, 5)))
    (state,) = rig.sched.status().models
    assert state.engine == EngineTimes(3.0, 2.0, 0.5, 15, 45)


def test_ram_cache_counters_add_up_across_restarts_and_its_bytes_leave_with_the_worker(
        rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=2)
    rig.says(WorkerStats(wid, EngineTimes(), RamCacheStats(1000, 2, 3, 4, 5, 1, 0, 0.5)))
    (state,) = rig.sched.status().models
    assert state.ram_cache == RamCacheStats(1000, 2, 3, 4, 5, 1, 0, 0.5)
    rig.procs[0].exitcode = -9
    rig.tick()
    rig.sched.start()
    wid2 = rig.ready(rig.procs[1], slots=2)
    rig.says(WorkerStats(wid2, EngineTimes(), RamCacheStats(300, 1, 1, 1, 1, 0, 1, 0.25)))
    (state,) = rig.sched.status().models
    # bytes and entries are the live worker's; the counters add the exited one's
    assert state.ram_cache == RamCacheStats(300, 1, 4, 5, 6, 1, 1, 0.75)


def test_max_loaded_models_swaps_idle_models(tmp_path: Path) -> None:
    (tmp_path / "other.gguf").write_bytes(EMPTY_GGUF)
    rig = Rig(tmp_path, max_loaded_models=1)
    rig.sched.start()
    wid_m = rig.ready(rig.procs[0], slots=1)
    rig.submit("r1", model="other")
    assert rig.sched.workers[wid_m].state == "stopping"
    assert isinstance(rig.inbox[wid_m].pop(0), Shutdown)
    assert len(rig.procs) == 1  # "other" waits until m's worker has exited
    rig.procs[0].exitcode = 0
    rig.tick()
    assert [p.spec.model for p in rig.procs] == ["m", "other"]
    wid_o = rig.ready(rig.procs[1], slots=1)
    assert rig.assigned(wid_o) == ["r1"]
    assert rig.assigned(wid_m) == []


def test_a_busy_model_is_not_unloaded(tmp_path: Path) -> None:
    (tmp_path / "other.gguf").write_bytes(EMPTY_GGUF)
    rig = Rig(tmp_path, max_loaded_models=1)
    rig.sched.start()
    wid_m = rig.ready(rig.procs[0], slots=1)
    rig.submit("r0", model="m")
    assert rig.assigned(wid_m) == ["r0"]
    rig.submit("r1", model="other")
    assert len(rig.procs) == 1  # waits: m is busy
    rig.free(wid_m, "r0")
    assert rig.sched.workers[wid_m].state == "stopping"


def test_keep_alive_unloads_idle_models_but_not_the_default(tmp_path: Path) -> None:
    (tmp_path / "other.gguf").write_bytes(EMPTY_GGUF)
    rig = Rig(tmp_path, keep_alive=0.2)
    rig.sched.start()
    rig.ready(rig.procs[0], slots=1)
    rig.submit("r1", model="other")
    wid_o = rig.ready(rig.procs[1], slots=1)
    assert rig.assigned(wid_o) == ["r1"]
    rig.free(wid_o, "r1")
    rig.now += 0.3
    rig.tick()
    states = {h.model: h.state for h in rig.sched.workers.values()}
    assert states == {"m": "ready", "other": "stopping"}


def test_replicas_share_the_requests(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models={"m": ModelConfig(replicas=2)})
    rig.sched.start()
    assert len(rig.procs) == 2
    wids = [rig.ready(p, slots=2) for p in rig.procs]
    for i in range(4):
        rig.submit(f"r{i}")
    got = [rig.assigned(w) for w in wids]
    assert sorted(len(g) for g in got) == [2, 2]
    assert sorted(sum(got, [])) == ["r0", "r1", "r2", "r3"]


def test_embeddings_can_be_turned_off_per_model(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models={"m": ModelConfig(embeddings=False)})
    rig.sched.on_submit(EmbedJob("e1", "fe", "A", "m", texts=["x"]))
    (fail,) = rig.failures()
    assert fail.kind == "InvalidRequest" and fail.param == "model"


def test_a_width_other_than_the_model_s_is_refused_before_it_queues(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (tmp_path / "m.gguf").write_bytes(gguf_header({"general.architecture": "llama",
                                                   "llama.embedding_length": 64}))
    rig.sched.on_submit(EmbedJob("e1", "fe", "A", "m", texts=["x"], dimensions=32))
    (fail,) = rig.failures()
    assert (fail.kind, fail.param) == ("InvalidRequest", "dimensions")
    assert fail.message == ("'m' does not support shortening its embeddings: its vectors have "
                            "64 dimensions.")
    assert rig.procs == [] and len(rig.sched.queue) == 0  # nothing loaded, nothing queued
    rig.sched.on_submit(EmbedJob("e2", "fe", "A", "m", texts=["x"], dimensions=64))
    rig.tick()
    assert rig.failures() == [] and len(rig.procs) == 1  # its own width: on its way


def test_a_suffix_for_a_model_without_fim_tokens_is_refused_before_it_queues(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    (tmp_path / "m.gguf").write_bytes(gguf_header({"general.architecture": "llama"}))
    rig.sched.on_submit(ChatJob("c1", "fe", "A", "m", [], RequestedSampling(),
                                prompt=RawPrompt(text="a", suffix="b")))
    (fail,) = rig.failures()
    assert (fail.kind, fail.param) == ("InvalidRequest", "suffix")
    assert rig.procs == [] and len(rig.sched.queue) == 0  # nothing loaded, nothing queued


def test_tokenize_jobs_take_no_slot(rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=1)
    rig.submit("r1")
    for i in range(3):
        rig.sched.on_submit(TokenizeJob(f"t{i}", "fe", "A", "m", text="x"))
    rig.tick()
    assert rig.assigned(wid) == ["r1", "t0", "t1", "t2"]


def test_status_goes_out_on_change_and_as_a_heartbeat(rig: Rig) -> None:
    rig.sched.publish_status()
    assert len(rig.statuses) == 1  # the first one
    rig.sched.publish_status()
    assert len(rig.statuses) == 1  # nothing changed
    rig.sched.start()
    rig.sched.publish_status()
    assert [m.state for m in rig.statuses[-1].models] == ["loading"]
    rig.now += 0.5
    assert rig.sched.wait_ms() == 501  # until the heartbeat
    rig.sched.publish_status()
    assert len(rig.statuses) == 2
    rig.now += 0.5
    rig.sched.publish_status()
    assert len(rig.statuses) == 3


def test_shutdown_fails_the_queue_and_stops_every_worker(rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=1)
    rig.submit("r2")
    rig.submit("r3")  # queued behind r2
    assert rig.assigned(wid) == ["r2"]
    rig.sched.shutdown()
    (fail,) = rig.failures()
    assert (fail.request_id, fail.kind) == ("r3", "ShuttingDown")
    assert rig.inbox[wid] == [Shutdown()]
    assert rig.procs[0].exitcode == 0  # joined


def test_shutdown_terminates_a_worker_that_never_connected(rig: Rig) -> None:
    rig.sched.start()
    rig.sched.shutdown()
    assert rig.procs[0].exitcode == -15


# ---- a model file replaced under the running server -------------------------------------------

NEW_GGUF = gguf_header({"general.name": "the new weights"})


def replace_file(path: Path, data: bytes) -> None:
    """What a pull or `models add --force` does: write beside it, then rename over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def states(rig: Rig) -> list[str]:
    return sorted(h.state for h in rig.sched.workers.values())


def test_a_replaced_file_restarts_an_idle_worker_at_the_heartbeat(rig: Rig, tmp_path: Path) -> None:
    rig.sched.start()
    old = rig.ready(rig.procs[0], slots=1)
    rig.tick()
    replace_file(tmp_path / "m.gguf", NEW_GGUF)
    rig.tick()
    assert states(rig) == ["ready"]  # looked at once a second, with the status heartbeat
    rig.now += 1.0
    rig.tick()
    assert rig.inbox[old] == [Shutdown()]
    assert len(rig.procs) == 2  # the fresh worker starts beside the old one while it exits
    new_handle = rig.sched.workers[rig.procs[1].spec.worker_id]
    assert new_handle.file is not None and new_handle.file.size == len(NEW_GGUF)
    assert [m.state for m in rig.sched.status().models] == ["loading"]  # not loaded: the new one
    rig.procs[0].exitcode = 0
    new = rig.ready(rig.procs[1], slots=1)
    assert states(rig) == ["ready"] and rig.failures() == []
    rig.submit("r1")
    assert rig.assigned(new) == ["r1"]


def test_a_busy_worker_finishes_its_request_first_then_is_replaced(rig: Rig,
                                                                  tmp_path: Path) -> None:
    rig.sched.start()
    old = rig.ready(rig.procs[0], slots=2)
    rig.submit("r1")
    assert rig.assigned(old) == ["r1"]
    replace_file(tmp_path / "m.gguf", NEW_GGUF)
    rig.submit("r2")  # a request is when the file is looked at
    assert rig.sched.workers[old].state == "draining"
    assert rig.assigned(old) == []  # it had a free slot, but it serves the old weights
    assert rig.inbox[old] == []  # and it is not told to stop: r1 runs on to its end
    rig.now += 5.0
    rig.tick()
    assert rig.inbox[old] == []
    rig.free(old, "r1")
    assert rig.inbox[old] == [Shutdown()]
    new = rig.ready(rig.procs[1], slots=2)
    assert rig.assigned(new) == ["r2"]
    assert rig.failures() == []


def test_a_request_during_the_swap_waits_for_the_new_worker(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_loaded_models=1)  # the old worker's memory counts until it exits
    rig.sched.start()
    old = rig.ready(rig.procs[0], slots=1)
    rig.submit("r1")
    assert rig.assigned(old) == ["r1"]
    replace_file(tmp_path / "m.gguf", NEW_GGUF)
    rig.submit("r2")
    assert len(rig.procs) == 1 and rig.sched.status().queued == 1
    assert [m.state for m in rig.sched.status().models] == ["stopped"]  # /v1/models: not loaded
    rig.free(old, "r1")
    assert rig.inbox[old] == [Shutdown()] and len(rig.procs) == 1
    rig.procs[0].exitcode = 0
    rig.tick()
    (_, fresh) = rig.procs
    assert rig.sched.workers.keys() == {fresh.spec.worker_id}
    new = rig.ready(fresh, slots=1)
    assert rig.assigned(new) == ["r2"]
    assert [m.state for m in rig.sched.status().models] == ["ready"]
    assert rig.failures() == []


def test_every_replica_is_replaced(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models={"m": ModelConfig(replicas=2)})
    rig.sched.start()
    wids = [rig.ready(p, slots=1) for p in rig.procs]
    rig.submit("r1")
    busy = next(w for w in wids if rig.assigned(w) == ["r1"])
    replace_file(tmp_path / "m.gguf", NEW_GGUF)
    rig.now += 1.0
    rig.tick()
    assert states(rig) == ["draining", "loading", "loading", "stopping"]
    rig.free(busy, "r1")
    assert states(rig) == ["loading", "loading", "stopping", "stopping"]


def test_a_worker_replaced_while_loading_is_stopped_once_it_connects(rig: Rig,
                                                                      tmp_path: Path) -> None:
    rig.sched.start()
    rig.tick()
    replace_file(tmp_path / "m.gguf", NEW_GGUF)
    rig.submit("r1")
    first, fresh = rig.procs
    wid = first.spec.worker_id
    assert rig.sched.workers[wid].state == "stopping"  # its Shutdown could not reach it yet
    rig.ready(first, slots=1)  # it finished loading the old file
    assert rig.sched.workers[wid].state == "stopping" and rig.inbox[wid] == [Shutdown()]
    new = rig.ready(fresh, slots=1)
    assert rig.assigned(new) == ["r1"]


def test_a_deleted_file_is_an_unknown_model_and_its_worker_stays_as_before(
        rig: Rig, tmp_path: Path) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=1)
    (tmp_path / "m.gguf").unlink()
    rig.now += 1.0
    rig.submit("r1")
    (fail,) = rig.failures()
    assert fail.kind == "ModelNotFound"
    assert states(rig) == ["ready"] and rig.inbox[wid] == [] and len(rig.procs) == 1


def test_the_same_file_touched_by_nothing_is_not_reloaded(rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=1)
    for _ in range(3):
        rig.now += 1.0
        rig.submit(f"r{_}")
        rig.free(wid, f"r{_}")
    assert len(rig.procs) == 1 and states(rig) == ["ready"]


def test_a_request_of_n_choices_takes_n_slots_at_once(rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=4)
    rig.submit("one", key="A")
    rig.submit("four", key="B", n=4)  # 3 slots free: it waits, and so do those behind it
    rig.submit("two", key="C")
    assert rig.assigned(wid) == ["one"]
    assert rig.sched.status().models[0].busy == 1
    rig.free(wid, "one")
    assert rig.assigned(wid) == ["four"]
    assert rig.sched.status().models[0].busy == 4
    rig.free(wid, "four")  # the worker frees a job's slots together, after its last choice
    assert rig.assigned(wid) == ["two"]
    assert rig.sched.status().models[0].busy == 1


def test_a_request_of_n_choices_counts_n_against_the_per_key_cap(tmp_path: Path) -> None:
    rig = Rig(tmp_path, max_per_key=3)
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=8)
    rig.submit("a0", key="A", n=2)
    rig.submit("a1", key="A", n=2)  # 4 > 3: waits
    rig.submit("b0", key="B", n=3)
    assert rig.assigned(wid) == ["a0", "b0"]
    assert rig.sched.running_by_key == {"A": 2, "B": 3}
    rig.free(wid, "a0")
    assert rig.assigned(wid) == ["a1"]
    rig.free(wid, "a1")
    rig.free(wid, "b0")
    assert rig.sched.running_by_key == {}


def test_n_beyond_the_model_s_slots_or_the_key_cap_is_refused(tmp_path: Path) -> None:
    rig = Rig(tmp_path, parallel=4, max_per_key=3)
    rig.sched.start()
    rig.ready(rig.procs[0], slots=4)
    rig.submit("big", n=5)
    rig.submit("capped", n=4)
    rig.submit("fits", n=3)
    failed = rig.failures()
    assert [(f.request_id, f.param) for f in failed] == [("big", "n"), ("capped", "n")]
    assert "--parallel" in failed[0].message and "--max-per-key" in failed[1].message


def test_cancel_of_a_running_request_of_n_choices_goes_to_its_worker_once(rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=4)
    rig.submit("r", n=3)
    assert rig.assigned(wid) == ["r"]
    rig.sched.on_cancel("r")
    assert rig.inbox[wid] == [Cancel("r")]
    rig.free(wid, "r")
    assert rig.sched.status().models[0].busy == 0


def conversation(rid: str, *texts: str) -> ChatJob:
    roles = ("user", "assistant")
    return ChatJob(rid, "fe", "A", "m", [ChatMessage(roles[i % 2], t) for i, t in enumerate(texts)],
                   RequestedSampling())


def test_a_conversation_s_next_turn_goes_to_the_worker_holding_it(tmp_path: Path) -> None:
    """Each worker reports what its slots hold when a slot frees; the next turn of a
    conversation goes there even when another worker is as free (even spreading would send
    every request to the first), and a new conversation goes where it evicts least."""
    rig = Rig(tmp_path, models={"m": ModelConfig(replicas=2)})
    rig.sched.start()
    w0, w1 = [rig.ready(p, slots=1) for p in rig.procs]
    one, two = "first conversation " * 20, "second conversation " * 20
    turns = {"a1": conversation("a1", one), "b1": conversation("b1", two),
             "a2": conversation("a2", one, "ok", "more"),
             "b2": conversation("b2", two, "ok", "more")}
    placed: dict[str, str] = {}
    for rid in ("a1", "b1", "a2", "b2"):
        rig.sched.on_submit(turns[rid])
        rig.tick()
        (wid,) = [w for w in (w0, w1) if rig.assigned(w) == [rid]]
        placed[rid] = wid
        # the worker's one slot now holds this conversation (what the engine would report)
        rig.says(SlotFreed(wid, rid, prefix_blocks(turns[rid])))
    assert placed["a1"] != placed["b1"]  # a new conversation: the worker holding nothing
    assert placed["a2"] == placed["a1"] and placed["b2"] == placed["b1"]
    (model,) = rig.sched.status().models
    assert (model.routed, model.routed_by_prefix) == (4, 2)


def test_a_running_conversation_counts_as_held(tmp_path: Path) -> None:
    """Blocks of a request still running are counted for its worker before it reports them."""
    rig = Rig(tmp_path, models={"m": ModelConfig(replicas=2)})
    rig.sched.start()
    w0, w1 = [rig.ready(p, slots=2) for p in rig.procs]
    text = "a long shared document " * 20
    rig.sched.on_submit(conversation("r1", text, "ok", "question one"))
    rig.tick()
    first = w0 if rig.assigned(w0) == ["r1"] else w1
    rig.sched.on_submit(conversation("r2", text, "ok", "question two"))
    rig.tick()
    assert rig.assigned(first) == ["r2"]  # the worker with 1 free slot, holding the document
    rig.free(first, "r1")
    rig.free(first, "r2")  # reports nothing: what it held is forgotten with its requests
    assert rig.sched.workers[first].held() == frozenset()


def test_routing_even_spreads_by_load_only(tmp_path: Path) -> None:
    rig = Rig(tmp_path, models={"m": ModelConfig(replicas=2)}, routing="even")
    rig.sched.start()
    w0, w1 = [rig.ready(p, slots=1) for p in rig.procs]
    text = "conversation " * 30
    rig.sched.on_submit(conversation("a1", text))
    rig.tick()
    assert rig.assigned(w0) == ["a1"]
    rig.says(SlotFreed(w0, "a1", prefix_blocks(conversation("x", text))))
    rig.sched.on_submit(conversation("x", "other " * 30))
    rig.tick()
    assert rig.assigned(w0) == ["x"]  # the first of two equally free workers, as before
    (model,) = rig.sched.status().models
    assert (model.routed, model.routed_by_prefix) == (2, 0)


def test_a_workers_memory_estimate_includes_its_ram_cache(tmp_path: Path) -> None:
    sizes = []
    for cache_ram in (0, 3 * 2**20):
        rig = Rig(tmp_path, cache_ram=cache_ram)
        rig.sched.start()
        (handle,) = rig.sched.workers.values()
        sizes.append(handle.bytes)
    assert sizes[1] - sizes[0] == 3 * 2**20


# ---- KV cache types and GPU placement (issue 21) ----------------------------------------------


def test_the_memory_estimate_counts_the_kv_cache_at_its_real_type(tmp_path: Path) -> None:
    header = gguf_header({"general.architecture": "llama", "llama.block_count": 4,
                          "llama.attention.head_count": 4, "llama.attention.head_count_kv": 2,
                          "llama.embedding_length": 256})
    kv: dict[str, int] = {}
    for cache_type in ("f16", "q8_0", "q4_0"):
        folder = tmp_path / cache_type
        folder.mkdir()
        rig = Rig(folder, parallel=2, ctx_size=1024, cache_type_k=cache_type,
                  cache_type_v=cache_type, cache_ram=0)  # (the RAM cache is counted on its own)
        (folder / "m.gguf").write_bytes(header)
        rig.sched.start()
        (handle,) = rig.sched.workers.values()
        kv[cache_type] = handle.bytes - len(header)
    # 4 layers x 2 KV heads x (64 + 64 values) x 2 bytes, for 2 slots x 1024 tokens
    assert kv["f16"] == 4 * 2 * 128 * 2 * 2048
    assert kv["q8_0"] == kv["f16"] * 34 // 64  # ggml's q8_0: 34 bytes per 32 values
    assert kv["q4_0"] == kv["f16"] * 18 // 64


def test_where_a_worker_runs_its_model_is_in_the_status_and_a_warning_is_logged(
        rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.sched.start()
    wid = rig.procs[0].spec.worker_id
    rig.connected.add(wid)
    with caplog.at_level("WARNING", logger="hearth.scheduler"):
        rig.says(WorkerReady(wid, "m", 2, Placement("cpu", 0, 30, "no GPU support here")))
    rig.sched.publish_status()
    (model,) = rig.statuses[-1].models
    assert model.placement == Placement("cpu", 0, 30, "no GPU support here")
    assert "model 'm': no GPU support here" in caplog.text


def test_each_worker_is_in_the_status_with_its_rate_and_when_it_was_last_heard(
        rig: Rig) -> None:
    rig.sched.start()
    wid = rig.ready(rig.procs[0], slots=2)
    rig.submit("r1")
    assert rig.assigned(wid) == ["r1"]
    for second, tokens in ((1, 0), (2, 30), (3, 60)):
        rig.now = 1000.0 + second
        rig.says(WorkerStats(wid, EngineTimes(tokens=tokens)))
    rig.now += 0.5
    (w,) = rig.sched.status().workers
    assert (w.worker_id, w.model, w.place, w.state, w.slots, w.busy, w.tokens) == (
        wid, "m", "local", "ready", 2, 1, 60)
    assert w.tokens_per_s == pytest.approx(30.0) and w.heard_age_s == pytest.approx(0.5)
    assert w.host  # this machine's name
    rig.now += 10  # nothing reported for a whole window: idle
    (w,) = rig.sched.status().workers
    assert w.tokens_per_s == 0.0 and w.heard_age_s == pytest.approx(10.5)
    rig.sched.add_remote("box-w1", "m", 4, "gpubox", host="gpu1")
    local, remote = rig.sched.status().workers
    assert local.worker_id == wid
    assert (remote.worker_id, remote.place, remote.host, remote.state, remote.heard_age_s) == (
        "box-w1", "gpubox", "gpu1", "ready", 0.0)
