"""scheduler/remote_links.py (the remote boxes' bookkeeping), the scheduler's decisions about
remote workers (scheduler/core.py's add_remote / drop_remote, with the fake rig of
test_scheduler_core.py) and the ZAP answer (scheduler/remote_link.py's zap_reply)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
import zmq
from hearth.scheduler.errors import ErrorKind
from hearth.scheduler.messages import (
    Assign,
    ChatJob,
    ChatMessage,
    EmbedJob,
    Failed,
    Join,
    RemoteModel,
    RemoteWorker,
    RequestedSampling,
    SlotFreed,
)
from hearth.scheduler.prefix_blocks import prefix_blocks
from hearth.scheduler.remote_link import zap_reply
from hearth.scheduler.remote_links import DEAD_AFTER_S, HEARTBEAT_S, RemoteLinks, refused_models
from hearth.tools.model_config import ModelConfig
from test_scheduler_core import Rig

SHA_A = "a" * 64
SHA_B = "b" * 64


def join(*workers: tuple[str, str, int], sha: str = SHA_A) -> Join:
    models = sorted({m for _, m, _ in workers})
    return Join("box-host", [RemoteModel(m, 100, sha) for m in models],
                [RemoteWorker(w, m, s) for w, m, s in workers], memory_budget=1 << 30)


def no_local(_model: str) -> str | None:
    return None


def test_join_adds_then_replaces_its_workers() -> None:
    links = RemoteLinks()
    link = links.heard(b"c1", "box1", "10.0.0.2", now=0.0)
    plan = links.join(link, join(("w1", "m", 2)), no_local)
    assert [w.worker_id for w in plan.add] == ["w1"] and plan.drop == [] and plan.replaces == []
    # a later Join is the whole list again: w1 stays, w2 is new
    plan = links.join(link, join(("w1", "m", 2), ("w2", "n", 4)), no_local)
    assert [w.worker_id for w in plan.add] == ["w2"] and plan.drop == []
    # w1 gone from the list: dropped
    plan = links.join(link, join(("w2", "n", 4)), no_local)
    assert plan.add == [] and plan.drop == ["w1"]
    assert links.owner_of("w2") is link and links.owner_of("w1") is None


def test_a_new_connection_of_the_same_name_replaces_the_old() -> None:
    links = RemoteLinks()
    old = links.heard(b"c1", "box1", "10.0.0.2", now=0.0)
    links.join(old, join(("w1", "m", 2)), no_local)
    new = links.heard(b"c2", "box1", "10.0.0.2", now=1.0)
    plan = links.join(new, join(("w1", "m", 2)), no_local)
    assert plan.replaces == [old]
    other = links.heard(b"c3", "box2", "10.0.0.3", now=1.0)
    assert links.join(other, join(("w9", "m", 2)), no_local).replaces == []


def test_a_model_whose_file_differs_from_ours_is_refused() -> None:
    msg = join(("w1", "m", 2), ("w2", "n", 2))
    refused = refused_models(msg, {"m": SHA_B, "n": SHA_A}.get)
    assert list(refused) == ["m"] and "header sha256" in refused["m"]
    links = RemoteLinks()
    link = links.heard(b"c1", "box1", "x", now=0.0)
    plan = links.join(link, msg, {"m": SHA_B}.get)
    assert [w.worker_id for w in plan.add] == ["w2"]  # only the model that matches (or is new)


def test_another_link_version_is_refused() -> None:
    links = RemoteLinks()
    link = links.heard(b"c1", "box1", "x", now=0.0)
    msg = Join("h", [RemoteModel("m", 1, SHA_A)], [RemoteWorker("w1", "m", 2)], 0, version=99)
    plan = links.join(link, msg, no_local)
    assert plan.add == [] and "version 99" in plan.refused["m"]


def test_heartbeats_pings_rtt_and_silence() -> None:
    links = RemoteLinks()
    link = links.heard(b"c1", "box1", "x", now=10.0)
    assert links.pings_due(10.0) == [link]
    assert links.pings_due(10.0 + HEARTBEAT_S / 2) == []  # at most one per HEARTBEAT_S
    assert links.pings_due(10.0 + HEARTBEAT_S) == [link]
    links.pong(link, sent_at=11.0, now=11.004)
    assert link.rtt_s == pytest.approx(0.004)
    assert links.silent(10.0 + DEAD_AFTER_S - 0.1) == []
    assert links.silent(10.0 + DEAD_AFTER_S) == [link]
    links.heard(b"c1", "box1", "x", now=13.0)  # anything heard resets it
    assert links.silent(10.0 + DEAD_AFTER_S) == []
    assert 0 <= links.next_due(13.0) <= HEARTBEAT_S
    assert links.drop(b"c1") is link and links.links == {}


def test_tokens_per_second_from_samples() -> None:
    links = RemoteLinks()
    link = links.heard(b"c1", "box1", "x", now=0.0)
    links.sample_tokens(link, 0, now=1.0)
    links.sample_tokens(link, 50, now=1.5)  # too soon: no new sample
    links.sample_tokens(link, 100, now=3.0)
    assert link.tokens_per_s == pytest.approx(50.0)
    links.sample_tokens(link, 100, now=4.0)  # no report this second: still the window's rate
    assert link.tokens_per_s == pytest.approx(100 / 3)
    for t in range(5, 12):
        links.sample_tokens(link, 100, now=float(t))
    assert link.tokens_per_s == 0.0  # nothing over the last window
    links.sample_tokens(link, 10, now=12.0)  # the count went down (its workers restarted)
    assert link.tokens_per_s == 0.0 and link.rate.samples == [(12.0, 10)]


# ---- the scheduler's side ------------------------------------------------------------------


def chat(rid: str, model: str = "m") -> ChatJob:
    return ChatJob(rid, "fe", "A", model, [], RequestedSampling())


def test_remote_workers_take_requests_and_their_loss_fails_only_theirs(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sched.start()
    local = rig.ready(rig.procs[0], slots=1)
    rig.sched.add_remote("r1", "m", 1, "box1")
    rig.connected.add("r1")
    for rid in ("a", "b", "c"):
        rig.sched.on_submit(chat(rid))
    rig.tick()
    ran = {wid: rig.assigned(wid) for wid in (local, "r1")}
    assert sorted(ran[local] + ran["r1"]) == ["a", "b"] and len(ran["r1"]) == 1
    rig.sched.drop_remote("r1", "nothing heard for 4.0 s")
    failed = rig.failures()
    assert [f.request_id for f in failed] == ran["r1"]
    assert failed[0].kind == ErrorKind.WORKER_DIED and "box1" in failed[0].message
    # the queued request goes to the local worker once it has room; the local one is untouched
    rig.free(local, ran[local][0])
    assert rig.assigned(local) == ["c"]
    assert rig.failures() == []


def test_a_model_only_a_remote_box_has_is_served_there(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sched.start()
    rig.sched.on_submit(chat("x", model="elsewhere"))
    assert [f.kind for f in rig.failures()] == [ErrorKind.MODEL_NOT_FOUND]
    rig.sched.add_remote("r1", "elsewhere", 2, "box1", size_bytes=123)
    rig.connected.add("r1")
    rig.sched.on_submit(chat("y", model="elsewhere"))
    rig.tick()
    assert rig.assigned("r1") == ["y"]
    assert len(rig.procs) == 1  # no local worker started for it
    state = {m.model: m for m in rig.sched.status().models}["elsewhere"]
    assert state.workers == ["box1"] and state.size_bytes == 123 and state.slots == 2
    rig.sched.on_worker_message(SlotFreed("r1", "y"))
    # its box going away does not unload or restart anything here
    rig.sched.drop_remote("r1", "gone")
    rig.tick()
    assert len(rig.procs) == 1 and "elsewhere" not in {m.model for m in rig.sched.status().models}


def test_keep_alive_and_shutdown_leave_remote_boxes_alone(tmp_path: Path) -> None:
    rig = Rig(tmp_path, keep_alive=1.0)
    rig.sched.start()
    rig.ready(rig.procs[0], slots=1)
    rig.sched.add_remote("r1", "m", 1, "box1")
    rig.connected.add("r1")
    rig.now += 100
    rig.tick()
    assert "r1" in rig.sched.workers and rig.inbox.get("r1", []) == []
    rig.sched.on_submit(chat("a"))
    rig.sched.on_submit(chat("b"))
    rig.tick()
    rig.sched.shutdown()
    # the remote box was not told to shut down: its running request was cancelled there
    sent = rig.inbox.get("r1", [])
    assert [type(m).__name__ for m in sent] == ["Assign", "Cancel"]
    assert isinstance(sent[0], Assign) and "r1" not in rig.sched.workers
    assert {f.kind for f in rig.failures() if isinstance(f, Failed)} == {ErrorKind.SHUTTING_DOWN}


# ---- ZAP ---------------------------------------------------------------------------------------


def zap_request(mechanism: bytes, *credentials: bytes) -> list[bytes]:
    return [b"1.0", b"id1", b"hearth-workers", b"10.0.0.9", b"", mechanism, *credentials]


def test_zap_accepts_listed_curve_keys_by_name(caplog: pytest.LogCaptureFixture) -> None:
    public, _secret = zmq.curve_keypair()
    raw = zmq.utils.z85.decode(public)
    reply, name = zap_reply(zap_request(b"CURVE", raw), {public.decode(): "box1"})
    assert name == "box1" and reply[2] == b"200" and reply[4] == b"box1"
    other, _ = zmq.curve_keypair()
    reply, name = zap_reply(zap_request(b"CURVE", zmq.utils.z85.decode(other)),
                            {public.decode(): "box1"})
    assert name is None and reply[2] == b"400"
    assert other.decode() in caplog.text and "not listed" in caplog.text
    reply, name = zap_reply(zap_request(b"NULL"), {public.decode(): "box1"})
    assert name is None and reply[2] == b"400" and "does not use CURVE" in caplog.text


def test_what_waits_for_a_model_only_a_lost_box_had_fails(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sched.start()
    rig.sched.add_remote("r1", "elsewhere", 1, "box1")
    rig.connected.add("r1")
    for rid in ("a", "b"):
        rig.sched.on_submit(chat(rid, model="elsewhere"))
    rig.tick()
    assert rig.assigned("r1") == ["a"]
    rig.sched.drop_remote("r1", "gone")
    failed = rig.failures()
    assert sorted(f.request_id for f in failed) == ["a", "b"]  # b waited: nothing would run it
    assert {f.kind for f in failed} == {ErrorKind.WORKER_DIED}
    assert len(rig.sched.queue) == 0


def test_a_box_that_joins_again_is_routed_to_by_what_its_slots_hold(tmp_path: Path) -> None:
    """The cache summary of a Join (RemoteWorker.cache): a box's new handles start knowing what
    its slots hold, so a conversation goes back to it before its next SlotFreed."""
    conversation = ChatJob("t2", "fe", "A", "m", [ChatMessage("system", "gardens " * 40),
                                                  ChatMessage("user", "and roses?")],
                           RequestedSampling())
    holds = prefix_blocks(msgspec.structs.replace(conversation, request_id="t1"))
    rig = Rig(tmp_path, models={"m": ModelConfig(parallel=1)})  # the local worker: 1 slot too
    rig.sched.start()
    rig.ready(rig.procs[0], slots=1)
    rig.sched.add_remote("r1", "m", 1, "box1")
    rig.sched.add_remote("r2", "m", 1, "box2", cache=holds)
    rig.connected.update({"r1", "r2"})
    rig.sched.on_submit(conversation)
    rig.tick()
    assert rig.assigned("r2") == ["t2"]
    state = rig.sched.counters["m"]
    assert state.routed_by_prefix == 1


def test_embeddings_of_a_model_whose_boxes_do_not_serve_them_are_refused(
        tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.sched.start()
    rig.sched.add_remote("r1", "elsewhere", 2, "box1", embeddings=False)
    rig.connected.add("r1")
    rig.sched.on_submit(EmbedJob("e1", "fe", "A", "elsewhere", ["hi"]))
    failed = rig.failures()
    assert [(f.kind, f.param) for f in failed] == [(ErrorKind.INVALID_REQUEST, "model")]
    rig.sched.add_remote("r2", "elsewhere", 2, "box2")  # another box serves them
    rig.connected.add("r2")
    for rid in ("e2", "e3", "e4"):  # all to it, though box1 is less loaded
        rig.sched.on_submit(EmbedJob(rid, "fe", "A", "elsewhere", ["hi"]))
    rig.tick()
    assert rig.failures() == [] and rig.assigned("r1") == []
    assert rig.assigned("r2") == ["e2", "e3", "e4"]
