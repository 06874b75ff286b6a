"""scheduler/remote_link.py's WorkerListener with real ZeroMQ sockets over loopback tcp and
CURVE, around the scheduler of test_scheduler_core.py's rig: a listed box joins and its
workers become the scheduler's; its events are republished; an unlisted key never gets a
link; removing its line from the workers' key file drops it."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
import zmq
from harness import free_port
from hearth.scheduler.messages import (
    Codec,
    Event,
    EventBatch,
    Join,
    RemoteModel,
    RemoteWorker,
    TextDelta,
    Welcome,
)
from hearth.scheduler.remote_link import KEYS_CHECK_S, WorkerListener
from test_scheduler_core import Rig


class Published:
    def __init__(self) -> None:
        self.events: list[tuple[str, Event]] = []

    def publish(self, frontend: str, events: list[Event]) -> None:
        self.events.extend((frontend, e) for e in events)


def dealer(ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, server_public: bytes
           ) -> tuple[zmq.Socket[bytes], str]:
    """A CURVE DEALER with a fresh key pair, connected; and its public key."""
    public, secret = zmq.curve_keypair()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.CURVE_SERVERKEY, server_public)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, secret)
    sock.connect(endpoint)
    return sock, public.decode()


def test_join_events_unlisted_and_revocation(tmp_path: Path) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    server_public, server_secret = zmq.curve_keypair()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    box, box_public = dealer(ctx, endpoint, server_public)
    stranger, _ = dealer(ctx, endpoint, server_public)
    keys = tmp_path / "worker-keys"
    keys.write_text(f"box1 = {box_public}\n")
    rig = Rig(tmp_path)
    now = [100.0]
    settings = msgspec.structs.replace(rig.spec.settings, worker_listen=endpoint,
                                       worker_keys_file=str(keys))
    published = Published()
    listener = WorkerListener(settings, rig.sched, published,  # type: ignore[arg-type]
                              server_secret.decode(), clock=lambda: now[0])
    codec = Codec()
    try:
        # "n": a model this server has no file of; "m" (which it has) with another file
        join = Join("boxhost", [RemoteModel("n", 10, "0" * 64), RemoteModel("m", 10, "0" * 64)],
                    [RemoteWorker("w1", "n", 3), RemoteWorker("w2", "m", 3)], memory_budget=1)
        box.send_multipart([b"L", codec.encode(join)])
        stranger.send_multipart([b"L", codec.encode(join)])

        def turn_until(ok: object, what: str) -> None:
            deadline = time.monotonic() + 10
            while not ok():  # type: ignore[operator]
                assert time.monotonic() < deadline, what
                listener.turn()
                time.sleep(0.01)

        turn_until(lambda: "w1" in rig.sched.workers, "the listed box never joined")
        handle = rig.sched.workers["w1"]
        assert handle.remote == "box1" and handle.slots == 3 and handle.state == "ready"
        assert box.poll(5000)
        frames = box.recv_multipart()
        assert frames[0] == b"L"
        welcome = codec.link_down.decode(frames[1])
        assert isinstance(welcome, Welcome) and welcome.name == "box1"
        assert list(welcome.refused) == ["m"] and "w2" not in rig.sched.workers
        # events come back over the link and are republished
        box.send_multipart([b"E", b"fe", codec.encode(EventBatch([TextDelta("r1", "hi", 1)]))])
        turn_until(lambda: published.events, "the box's events were not republished")
        assert published.events == [("fe", TextDelta("r1", "hi", 1))]
        assert [r.name for r in rig.sched.status().remotes] == ["box1"]
        # the stranger's Join never made a link, and it was never answered
        assert {link.name for link in listener.links.links.values()} == {"box1"}
        assert not stranger.poll(200)
        # the key's line is removed: the box is dropped at the next look at the file
        keys.write_text("# nobody\n")
        now[0] += KEYS_CHECK_S
        turn_until(lambda: "w1" not in rig.sched.workers, "the revoked box was not dropped")
        assert listener.links.links == {}
    finally:
        listener.close()
        box.close()
        stranger.close()
        ctx.term()


def test_a_bad_key_file_keeps_the_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                       ) -> None:
    public = zmq.curve_keypair()[0].decode()
    keys = tmp_path / "worker-keys"
    keys.write_text(f"box1 = {public}\n")
    rig = Rig(tmp_path)
    now = [0.0]
    settings = msgspec.structs.replace(rig.spec.settings,
                                       worker_listen=f"tcp://127.0.0.1:{free_port()}",
                                       worker_keys_file=str(keys))
    listener = WorkerListener(settings, rig.sched, Published(),  # type: ignore[arg-type]
                              zmq.curve_keypair()[1].decode(), clock=lambda: now[0])
    try:
        assert listener.allowed() == {public: "box1"}
        keys.write_text("box1 = not-a-key\n")
        now[0] += KEYS_CHECK_S
        listener.turn()
        assert listener.allowed() == {public: "box1"}
        assert "40 Z85 characters" in caplog.text
    finally:
        listener.close()
