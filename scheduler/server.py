"""The scheduler process: its ZeroMQ sockets, its one poll loop and its entry point.

Sockets (all owned by this process's only thread):
* ``intake`` PULL (bound): ChatJob / EmbedJob / Cancel from api frontends;
* ``control`` ROUTER (bound): workers' DEALERs — Assign / Cancel / Shutdown out, WorkerReady /
  WorkerFailed / SlotFreed in;
* ``publisher`` XPUB (connected to the api's SUB): errors the scheduler itself ends a request
  with (queue full, model failed to load, worker died) and the periodic SchedulerStatus; and
  the token events of remote workers, which come over their links;
* with ``--worker-listen``, the remote workers' sockets (scheduler/remote_link.py).

This module moves bytes and sleeps; every decision is scheduler.core's :class:`Scheduler`,
which this loop feeds with decoded messages and gives its ways out (send, publish).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path

import msgspec
import zmq
from hearth.scheduler.core import Scheduler, SchedulerSpec
from hearth.scheduler.messages import STATUS_TOPIC, Cancel, Codec, SchedulerStatus, ToWorker
from hearth.scheduler.publisher import EventPublisher
from hearth.scheduler.remote_link import WorkerListener
from hearth.scheduler.workers import WorkerFactory, spawn_worker
from hearth.tools import logs
from hearth.tools.curve_keys import load_or_create
from hearth.tools.proc import child_setup, parent_alive

__all__ = ["SchedulerServer", "scheduler_main"]


class SchedulerServer:
    """Binds the scheduler's sockets and runs its loop around a :class:`Scheduler`."""

    def __init__(self, spec: SchedulerSpec, zctx: zmq.SyncContext,
                 spawn: WorkerFactory = spawn_worker) -> None:
        self.codec = Codec()
        self.intake = zctx.socket(zmq.PULL)
        self.intake.setsockopt(zmq.RCVHWM, 0)
        self.intake.bind(spec.intake_endpoint)
        self.control = zctx.socket(zmq.ROUTER)
        self.control.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.control.setsockopt(zmq.LINGER, 1000)
        self.control.bind(spec.control_endpoint)
        self.publisher = EventPublisher(zctx, spec.events_endpoint, self.codec)
        self.sched = Scheduler(spec, send=self._send, publish=self.publisher.publish,
                               publish_status=self._publish_status, spawn=spawn)
        self.listener: WorkerListener | None = None
        if spec.settings.worker_listen:
            _public, secret = load_or_create(Path(spec.curve_key_file))
            self.listener = WorkerListener(spec.settings, self.sched, self.publisher, secret)

    def _send(self, worker_id: str, msg: ToWorker) -> bool:
        handle = self.sched.workers.get(worker_id)
        if handle is not None and handle.remote and self.listener is not None:
            return self.listener.send(worker_id, msg)
        try:
            self.control.send_multipart([worker_id.encode(), self.codec.encode(msg)])
            return True
        except zmq.ZMQError:  # worker not connected (yet, or any more): reap() handles it
            return False

    def _publish_status(self, status: SchedulerStatus) -> None:
        self.publisher.publish_raw(STATUS_TOPIC, status)

    def _watch_workers(self, poller: zmq.Poller, watched: set[int]) -> None:
        """Keep the poller watching exactly the live workers' sentinels (readable once the
        process has exited)."""
        now = {h.proc.sentinel for h in self.sched.workers.values() if h.proc.sentinel >= 0}
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
        for sock in self.listener.poll_sockets if self.listener else ():
            poller.register(sock, zmq.POLLIN)
        watched: set[int] = set()
        self.sched.start()
        while not should_stop():
            self._watch_workers(poller, watched)
            wait = self.sched.wait_ms()
            if self.listener is not None:
                wait = min(wait, max(1, int(self.listener.wait_s() * 1000) + 1))
            ready = dict(poller.poll(wait))
            if wake_fd is not None and wake_fd in ready:
                with contextlib.suppress(OSError):
                    os.read(wake_fd, 512)
            self.turn()

    def turn(self) -> None:
        """One pass: take in what arrived, then reap, publish and dispatch."""
        self.publisher.pump_subscriptions()
        self._drain_control()
        if self.listener is not None:
            self.listener.turn()
        self._drain_intake()
        self.sched.reap()
        # Model states go out before the work they make possible: the answers come back
        # from the worker over another connection, and a client that has its answer should
        # find the model loaded in /v1/models and /metrics.
        self.sched.publish_status()
        self.sched.dispatch()
        self.sched.publish_status()

    def _drain_intake(self) -> None:
        while True:
            try:
                raw = self.intake.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = self.codec.to_scheduler.decode(raw)
            except msgspec.DecodeError:
                continue  # not ours; never crash on a bad message
            if isinstance(msg, Cancel):
                self.sched.on_cancel(msg.request_id)
            else:
                self.sched.on_submit(msg)

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
            self.sched.on_worker_message(msg)

    def shutdown(self) -> None:
        """Stop every worker and fail what still waits (Scheduler.shutdown), then take in the
        workers' last messages and announce the final status."""
        self.sched.shutdown()
        self._drain_control()
        self.sched.publish_status(force=True)
        if self.listener is not None:
            self.listener.close()


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
    server = SchedulerServer(spec, zctx)
    try:
        server.run(lambda: stop["now"] or not parent_alive(ppid), wake_fd=wake_r)
    finally:
        server.shutdown()
        zctx.destroy(linger=1000)
