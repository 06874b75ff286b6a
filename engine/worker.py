"""The engine worker process: one per loaded model.

Talks to the scheduler over a DEALER socket (Assign / Cancel / Shutdown in; WorkerReady,
WorkerFailed, SlotFreed out) and publishes token events straight to the api (XPUB, topic =
frontend id). Its only thread runs the loop: read control messages, run one batched step, publish
that step's events — one message per frontend per step.
"""

from __future__ import annotations

import os
import signal
import traceback

import msgspec
import zmq
from hearth.engine.runner import LlamaRunner, RunnerConfig, Segment
from hearth.engine.slots import SlotEngine
from hearth.engine.templates import ChatTemplate, TemplateError, template_for
from hearth.scheduler import errors
from hearth.scheduler.gguf_header import read_gguf_metadata
from hearth.scheduler.messages import (
    Assign,
    Cancel,
    Codec,
    Shutdown,
    SlotFreed,
    Submit,
    WorkerFailed,
    WorkerReady,
    WorkerSpec,
)
from hearth.scheduler.publisher import EventPublisher
from hearth.tools.proc import child_setup, parent_alive


def make_renderer(template: ChatTemplate, bos_text: str):  # type: ignore[no-untyped-def]
    """Submit -> prompt text. The tokenizer adds BOS itself, so a template's own leading BOS is
    dropped rather than doubled."""

    def render(submit: Submit) -> str:
        try:
            text = template.render(submit.messages, add_generation_prompt=True)
        except TemplateError as exc:
            raise errors.InvalidRequest(f"could not apply the chat template: {exc}",
                                        param="messages") from None
        if bos_text and text.startswith(bos_text):
            text = text[len(bos_text):]
        return text

    return render


def worker_main(spec_bytes: bytes) -> None:
    """Process entry point (spawned by the scheduler)."""
    spec = msgspec.msgpack.decode(spec_bytes, type=WorkerSpec)
    ppid = os.getppid()
    child_setup(f"hearth-w-{spec.model}"[:15])
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    codec = Codec()
    zctx = zmq.Context()
    control = zctx.socket(zmq.DEALER)
    control.setsockopt(zmq.IDENTITY, spec.worker_id.encode())
    control.setsockopt(zmq.LINGER, 2000)
    control.connect(spec.control_endpoint)
    publisher = EventPublisher(zctx, spec.events_endpoint, codec)
    try:
        runner = LlamaRunner(RunnerConfig(
            path=spec.path, n_slots=spec.n_slots, n_ctx_slot=spec.n_ctx_slot,
            n_threads=spec.n_threads, n_batch=spec.n_batch, verbose=spec.verbose))
        info = read_gguf_metadata(spec.path)
        template = template_for(info.architecture or "", info.chat_template, spec.chat_template,
                                bos_token=runner.token_text(runner.bos_id),
                                eos_token=runner.token_text(runner.eos_id))
    except Exception as exc:
        message = (exc.message if isinstance(exc, errors.HearthError)
                   else f"{type(exc).__name__}: {exc}")
        control.send(codec.encode(WorkerFailed(spec.worker_id, spec.model, message)))
        control.close()
        publisher.close()
        zctx.term()
        return
    bos_text = runner.token_text(runner.bos_id) if runner.add_bos else ""
    engine = SlotEngine(
        runner, render=make_renderer(template, bos_text),
        n_slots=spec.n_slots, n_ctx_slot=spec.n_ctx_slot, token_budget=spec.n_batch,
        make_segment=Segment)
    control.send(codec.encode(WorkerReady(spec.worker_id, spec.model, spec.n_slots,
                                          spec.n_ctx_slot)))
    try:
        _loop(spec, engine, control, publisher, codec, stop, ppid)
    except Exception:
        traceback.print_exc()
        for frontend, events in engine.fail_all("WorkerDied", "the model worker failed").items():
            publisher.publish(frontend, events)
    finally:
        runner.close()
        control.close()
        publisher.close()
        zctx.term()


def _loop(spec: WorkerSpec, engine: SlotEngine, control: zmq.Socket, publisher: EventPublisher,
          codec: Codec, stop: dict[str, bool], ppid: int) -> None:
    poller = zmq.Poller()
    poller.register(control, zmq.POLLIN)
    poller.register(publisher.sock, zmq.POLLIN)
    while not stop["now"]:
        poller.poll(0 if engine.has_work() else 500)
        publisher.pump_subscriptions()
        while True:
            try:
                raw = control.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            msg = codec.to_worker.decode(raw)
            if isinstance(msg, Assign):
                events, admitted = engine.admit(msg.request)
                publisher.publish(msg.request.frontend, events)
                if not admitted:
                    control.send(codec.encode(SlotFreed(spec.worker_id, msg.request.request_id)))
            elif isinstance(msg, Cancel):
                if engine.cancel(msg.request_id):
                    control.send(codec.encode(SlotFreed(spec.worker_id, msg.request_id)))
            elif isinstance(msg, Shutdown):
                stop["now"] = True
        if stop["now"]:
            break
        if engine.has_work():
            by_frontend, ended = engine.step()
            for frontend, events in by_frontend.items():
                publisher.publish(frontend, events)
            for rid in ended:
                control.send(codec.encode(SlotFreed(spec.worker_id, rid)))
        elif not parent_alive(ppid):
            break
    for frontend, events in engine.fail_all(
            "ShuttingDown", "the server is shutting down").items():
        publisher.publish(frontend, events)
