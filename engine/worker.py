"""The engine worker process: one per loaded model.

Talks to the scheduler over a DEALER socket (Assign / Cancel / Shutdown in; WorkerReady,
WorkerFailed, SlotFreed out) and publishes token events straight to the api (XPUB, topic =
frontend id). Its only thread runs the loop: read control messages, run one batched step, publish
that step's events — one message per frontend per step. A big prompt is rendered and tokenized
on a thread of its own meanwhile (engine/prepare.py), so it does not hold up the others' steps.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from collections.abc import Callable

import msgspec
import zmq
from hearth.engine.chat_inputs import template_inputs
from hearth.engine.embeddings import EmbeddingBatcher
from hearth.engine.prepare import Preparer
from hearth.engine.prompts import PromptMaker, run_tokenize
from hearth.engine.ram_cache import RamCache
from hearth.engine.runner import LlamaRunner, Segment
from hearth.engine.slots import PreparedPrompt, SlotEngine
from hearth.engine.templates import ChatTemplate, TemplateError, template_for
from hearth.scheduler import errors
from hearth.scheduler.draft_budget import FreeSteps, StepCost
from hearth.scheduler.messages import (
    Assign,
    Cancel,
    ChatJob,
    Codec,
    EmbedJob,
    Event,
    Failed,
    Job,
    Shutdown,
    SlotFreed,
    TokenizeJob,
    WorkerFailed,
    WorkerReady,
    WorkerSpec,
    WorkerStats,
)
from hearth.scheduler.publisher import EventPublisher
from hearth.tools.gguf_header import read_gguf_metadata
from hearth.tools.proc import child_setup, parent_alive

# what a job's preparation gives: a chat's prompt tokens, embeddings' inputs, a tokenize answer
Prepared = PreparedPrompt | list[list[int]] | Event


def make_renderer(template: ChatTemplate) -> Callable[[ChatJob], str]:
    """A chat job -> its prompt text; template errors are the request's fault (400 on messages).
    A last message of role ``assistant`` is continued, not answered (see ChatTemplate.render)."""

    def render(job: ChatJob) -> str:
        try:
            # a last assistant message is a prefill: the model continues it
            messages, tools = template_inputs(job)
            return template.render(messages, add_generation_prompt=True, tools=tools,
                                   continue_assistant=True)
        except TemplateError as exc:
            raise errors.InvalidRequest(f"could not apply the chat template: {exc}",
                                        param="messages") from None

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
    # ZeroMQ's I/O thread wakes at every publish. As SCHED_BATCH it does not preempt the step
    # loop on waking (it runs when the loop's thread next yields or its time slice ends), so a
    # step's events do not cost the next llama_decode a context switch in the middle of it.
    if hasattr(os, "SCHED_BATCH"):
        zctx.set(zmq.THREAD_SCHED_POLICY, os.SCHED_BATCH)
    control = zctx.socket(zmq.DEALER)
    control.setsockopt(zmq.IDENTITY, spec.worker_id.encode())
    control.setsockopt(zmq.LINGER, 2000)
    control.connect(spec.control_endpoint)
    publisher = EventPublisher(zctx, spec.events_endpoint, codec)
    cfg = spec.config
    try:
        runner = LlamaRunner(cfg)
        info = read_gguf_metadata(cfg.path)
        template = template_for(info.architecture or "", info.chat_template, cfg.chat_template,
                                bos_token=runner.token_text(runner.bos_id),
                                eos_token=runner.token_text(runner.eos_id),
                                # the tokenizer adds BOS: a template's own one is dropped
                                tokenizer_adds_bos=runner.add_bos)
    except Exception as exc:
        message = (exc.message if isinstance(exc, errors.HearthError)
                   else f"{type(exc).__name__}: {exc}")
        control.send(codec.encode(WorkerFailed(spec.worker_id, spec.model, message)))
        control.close()
        publisher.close()
        zctx.term()
        return
    render = make_renderer(template)
    fim = info.fim_tokens  # ids a broken header declares outside the vocabulary: no FIM
    if fim is not None and not all(0 <= t < runner.n_vocab for t in (fim.pre, fim.suf, fim.mid)):
        fim = None
    engine = SlotEngine(
        runner, render=render, prompts=PromptMaker(runner, fim),
        n_slots=cfg.n_slots, n_ctx_slot=cfg.n_ctx_slot, token_budget=cfg.n_batch,
        make_segment=Segment, sampling_defaults=cfg.sampling_defaults,
        sample_threads=cfg.n_threads, n_vocab=runner.n_vocab,
        speculative=cfg.speculative, draft_max=cfg.draft_max, draft_ngram=cfg.draft_ngram,
        ram_cache=RamCache(cfg.cache_ram),
        step_cost=FreeSteps() if cfg.draft_policy == "always" else StepCost())
    pool_mean = info.arch_value("pooling_type") is None
    embeds = EmbeddingBatcher(
        runner.tokenize, runner.n_vocab, runner.n_embd,
        lambda: runner.embedding_context(cfg.n_ctx_slot, pool_mean=pool_mean),
        cfg.n_ctx_slot)
    control.send(codec.encode(WorkerReady(spec.worker_id, spec.model, cfg.n_slots,
                                             runner.placement)))
    loop = WorkerLoop(spec, engine, embeds, control, publisher, codec,
                      tokenize=lambda job: run_tokenize(job, runner, render, runner.n_vocab))
    try:
        loop.run(lambda: stop["now"] or not parent_alive(ppid))
    except Exception:
        traceback.print_exc()
        loop.fail_everything(errors.WorkerDied("the model worker failed"))
    finally:
        engine.close()
        runner.close()
        control.close()
        publisher.close()
        zctx.term()


class WorkerLoop:
    """Read control messages, run one chat step and one embedding batch, publish the events."""

    def __init__(self, spec: WorkerSpec, engine: SlotEngine[Segment], embeds: EmbeddingBatcher,
                 control: zmq.SyncSocket, publisher: EventPublisher, codec: Codec,
                 tokenize: Callable[[TokenizeJob], Event]) -> None:
        self.spec, self.engine, self.embeds = spec, engine, embeds
        self.tokenize = tokenize  # answers a TokenizeJob (no slot)
        # every job's tokens: small jobs' at once, big ones' off the loop
        self.preparer: Preparer[Job, Prepared] = Preparer(self._prepare,
                                                          lambda job: job.request_id)
        self.control, self.publisher, self.codec = control, publisher, codec
        self.shutdown = False
        self.busy_s = 0.0  # loop time while chat requests ran (EngineTimes.busy_s)
        self._stats_at = 0.0
        self._cache_sent = b""  # the last SlotFreed.cache sent

    def _send_stats(self, now: float) -> None:
        self._stats_at = now
        self.control.send(self.codec.encode(
            WorkerStats(self.spec.worker_id, self.engine.times(self.busy_s),
                        self.engine.ram_stats())))

    def _freed(self, request_id: str) -> None:
        # what the slots hold rides along when it changed (SlotFreed.cache: for routing)
        now = self.engine.cache_summary()
        cache = None if now == self._cache_sent else now
        self._cache_sent = now
        self.control.send(self.codec.encode(SlotFreed(self.spec.worker_id, request_id, cache)))

    def _prepare(self, job: Job) -> Prepared:
        """A chat's prompt tokens, an embeddings request's inputs or a tokenize job's answer
        (may run on the prepare thread)."""
        if isinstance(job, TokenizeJob):
            return self.tokenize(job)
        if isinstance(job, EmbedJob):
            return self.embeds.inputs(job)
        return self.engine.prompt_tokens(job)

    def _prepared(self, job: Job, result: Prepared | errors.HearthError) -> None:
        if isinstance(job, TokenizeJob):
            if isinstance(result, errors.HearthError):
                result = Failed.of(job.request_id, result)
            assert not isinstance(result, (tuple, list))
            self.publisher.publish(job.frontend, [result])
            self._freed(job.request_id)
        elif isinstance(job, EmbedJob):
            assert isinstance(result, (list, errors.HearthError))
            failed = self.embeds.admit(job, result)
            if failed is not None:
                self.publisher.publish(job.frontend, [failed])
                self._freed(job.request_id)
        else:
            assert isinstance(result, (tuple, errors.HearthError))
            events, admitted = self.engine.admit(job, result)
            self.publisher.publish(job.frontend, events)
            if not admitted:
                self._freed(job.request_id)

    def _handle(self, msg: Assign | Cancel | Shutdown, raw_bytes: int = 0) -> None:
        """One control message; ``raw_bytes``: its encoded size (a job's, to judge whether its
        prompt is prepared at once or off the loop)."""
        if isinstance(msg, Assign):
            req = msg.request
            result = self.preparer.submit(req, raw_bytes)
            if result is not None:
                self._prepared(req, result)
        elif isinstance(msg, Cancel):
            if (self.engine.cancel(msg.request_id) or self.embeds.cancel(msg.request_id)
                    or self.preparer.cancel(msg.request_id)):
                self._freed(msg.request_id)
        elif isinstance(msg, Shutdown):
            self.shutdown = True

    def run(self, should_stop: Callable[[], bool]) -> None:
        poller = zmq.Poller()
        poller.register(self.control, zmq.POLLIN)
        poller.register(self.publisher.sock, zmq.POLLIN)
        while not self.shutdown:
            generating = self.engine.has_work()
            busy = generating or self.embeds.has_work()
            t0 = time.perf_counter()
            # (a prompt being prepared off the loop is looked for every 2 ms while idle)
            ready = dict(poller.poll(0 if busy else 2 if self.preparer.pending else 500))
            if not generating:
                t0 = time.perf_counter()  # the time spent idle in poll is not busy time
            # (a socket that poll did not report is not read: most steps have nothing to read)
            if self.publisher.sock in ready:
                self.publisher.pump_subscriptions()
            while self.control in ready and not self.shutdown:
                try:
                    raw = self.control.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._handle(self.codec.to_worker.decode(raw), len(raw))
            for done in self.preparer.ready():
                self._prepared(done.job, done.result)
            if self.shutdown or should_stop():
                break
            if self.engine.has_work():
                by_frontend, ended = self.engine.step()
                for frontend, events in by_frontend.items():
                    self.publisher.publish(frontend, events)
                now = time.perf_counter()
                self.busy_s += now - t0
                if not self.engine.has_work() or now - self._stats_at >= 1.0:
                    self._send_stats(now)  # before SlotFreed: its status update includes them
                for rid in ended:
                    self._freed(rid)
            for frontend, events, rid in self.embeds.step():
                self.publisher.publish(frontend, events)
                self._freed(rid)
        self.fail_everything(errors.ShuttingDown("the server is shutting down"))

    def fail_everything(self, exc: errors.HearthError) -> None:
        for job in self.preparer.drain():
            self.publisher.publish(job.frontend, [Failed.of(job.request_id, exc)])
        self.preparer.close()
        for frontend, events in self.engine.fail_all(exc).items():
            self.publisher.publish(frontend, events)
        for frontend, event in self.embeds.fail_all(exc):
            self.publisher.publish(frontend, [event])
