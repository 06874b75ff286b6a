"""The worker's step loop body: slots, admission, one batched decode per step, sampling, events.

:class:`SlotEngine` owns the slots of one worker and drives a runner (``engine.runner``'s
LlamaRunner, or a fake in unit tests) through the batching policy of ``scheduler.policy``. It knows
nothing of ZeroMQ: :meth:`admit`, :meth:`cancel` and :meth:`step` return the events to publish
and the request ids whose slots were freed. Single-threaded; owned by the worker loop.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import msgspec
import numpy as np
from hearth.engine.logprobs import StepLogprobs
from hearth.engine.prompts import PromptMaker
from hearth.engine.ram_cache import RamCache
from hearth.engine.speculation import Speculation, drafts, kept_positions
from hearth.engine.text import StopFilter, Utf8Stream
from hearth.scheduler import errors
from hearth.scheduler.draft_budget import StepCost
from hearth.scheduler.messages import (
    COMPLETION_MAX_TOKENS,
    ChatJob,
    EngineTimes,
    Event,
    Failed,
    Finished,
    FinishReason,
    Grammar,
    RamCacheStats,
    ResolvedSampling,
    Started,
    TextDelta,
    TokenLogprob,
    TopLogprob,
    resolve_sampling,
)
from hearth.scheduler.policy import (
    COPY_MIN_GAIN,
    Phase,
    SlotView,
    common_prefix,
    plan_admission,
    plan_choices,
    plan_step,
    worth_saving,
)
from hearth.scheduler.prefix_blocks import HASH_BYTES, prefix_blocks
from hearth.scheduler.token_ids import check_token_ids
from hearth.tools.model_config import SamplingDefaults


class SamplerLike(Protocol):
    # worth a sampling thread: slow, and releases the GIL (llama.cpp's chains); a quick one is
    # run inline, as waking a thread costs more than it saves
    threaded: bool

    def sample(self, logits_index: int) -> int: ...
    def free(self) -> None: ...


class InnerSamplerLike(SamplerLike, Protocol):
    def pick(self, logits_index: int) -> int: ...
    def remember(self, token: int) -> None: ...


# The runner's own segment type (engine.runner.Segment, or a fake's): SlotEngine only builds
# segments with make_segment and hands them back to the same runner's decode, so it is generic
# in that type rather than importing the llama.cpp runner.
SegmentT = TypeVar("SegmentT")
SegmentT_contra = TypeVar("SegmentT_contra", contravariant=True)


class RunnerLike(Protocol[SegmentT_contra]):
    """What SlotEngine needs from llama.cpp (see engine.runner.LlamaRunner)."""

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]: ...
    def piece(self, token: int) -> bytes: ...
    def is_eog(self, token: int) -> bool: ...
    def forget(self, seq: int, from_pos: int = 0) -> None: ...
    def copy(self, src: int, dst: int) -> None: ...
    def save_state(self, seq: int) -> bytes | bytearray: ...
    def restore_state(self, seq: int, data: bytes | bytearray) -> bool: ...
    def decode(self, segments: Sequence[SegmentT_contra]) -> dict[int, int]: ...
    def logits_row(self, index: int) -> np.ndarray: ...
    def sampler(self, params: ResolvedSampling, seed: int) -> InnerSamplerLike: ...
    def grammar_sampler(self, inner: InnerSamplerLike, grammar: Grammar,
                        param: str | None = None) -> SamplerLike: ...


@dataclass
class _Request:
    job: ChatJob
    prompt: list[int]
    n_past: int  # prompt tokens already in the KV cache
    cached_tokens: int  # of which reused from the slot's previous contents
    max_tokens: int
    sampler: SamplerLike
    admitted_at: int
    phase: Phase  # WAIT_COPY or PREFILL at admission, then DECODE, FINISHED once it leaves
    utf8: Utf8Stream = field(default_factory=Utf8Stream)
    stops: StopFilter = field(default_factory=lambda: StopFilter(()))
    completion_tokens: int = 0
    next_token: int | None = None  # sampled, to be fed at the next decode
    wait_for: tuple[int, int] | None = None  # WAIT_COPY: (donor slot, tokens) to copy
    shown: dict[int, bytes] = field(default_factory=dict)  # token -> text (job.shown_tokens)
    logprobs: StepLogprobs | None = None  # the job asked for log-probabilities
    copy_min: int = COPY_MIN_GAIN  # WAIT_COPY: copy only if the donor has this many tokens
    index: int = 0  # the choice of the job (ChatJob.n)
    # echo with logprobs (choice 0 only): the prompt tokens' entries, filled as the prefill
    # reads each position's logits row; emitted with the echo, then None
    scoring: list[TokenLogprob] | None = None
    first: _Request | None = None  # choice 0's, for choices 1..n-1: its cached tokens are the job's
    pieces: list[bytes] = field(default_factory=list)  # scoring: each prompt token's text
    spec: Speculation | None = None  # it drafts (engine/speculation.py); None: it never does

    @property
    def rid(self) -> str:
        return self.job.request_id


@dataclass
class _Slot:
    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV the sequence holds
    req: _Request | None = None
    used_at: int = 0  # when a request last took or left it (SlotEngine._clock): for LRU
    # prefix-block hashes (scheduler/prefix_blocks.py) of the job whose tokens ``cached`` holds
    blocks: bytes = b""


def _sample_one(sampler: SamplerLike, row: int) -> int | errors.HearthError:
    try:
        return sampler.sample(row)
    except errors.HearthError as exc:
        return exc


Render = Callable[[ChatJob], str]
PreparedPrompt = tuple[list[int], str]  # a job's prompt tokens, and the field they came from
# (seq, tokens, pos, wants_logits, all_logits): see engine.runner.Segment
MakeSegment = Callable[[int, Sequence[int], int, bool, bool], SegmentT]

# An echo-with-logprobs prompt's prefill chunks are at most this many tokens: each token gets
# a logits row (n_vocab floats: 64 rows of gemma-3's 262k vocabulary are 64 MiB)
SCORING_CHUNK = 64

class SlotEngine(Generic[SegmentT]):
    def __init__(self, runner: RunnerLike[SegmentT], *, render: Render, n_slots: int,
                 n_ctx_slot: int, token_budget: int,
                 make_segment: MakeSegment[SegmentT],
                 sampling_defaults: SamplingDefaults | None = None,
                 sample_threads: int = 1, n_vocab: int | None = None,
                 final_token_alone: bool = True, prompts: PromptMaker | None = None,
                 speculative: bool = False, draft_max: int = 8, draft_ngram: int = 3,
                 ram_cache: RamCache | None = None, step_cost: StepCost | None = None,
                 ) -> None:
        """``n_vocab`` checks token ids (None: unchecked, as in fakes). ``prompts`` makes the
        tokens of completions' prompts (ChatJob.prompt); None: only chats are served.
        ``ram_cache``: where a slot's conversation is saved before another prompt overwrites
        it, and restored from when a later prompt shares more with it than with any slot
        (engine/ram_cache.py; None or a cap of 0: off).
        ``final_token_alone``: evaluate each prompt's last token in a step of its own, so a
        request's greedy output does not depend on what the slot's cache held (see
        scheduler.policy.plan_step; only bench/final_token.py turns it off, to measure it).
        ``speculative``: requests (greedy or sampled) draft up to ``draft_max`` (at least 1)
        tokens per step by n-gram lookup (``draft_ngram`` tokens matched; see engine/speculation.py)
        unless they turn it off (a request may also turn it on), as many as pay for their
        batch positions by ``step_cost`` (scheduler/draft_budget.py; None: a new StepCost
        fitted to this engine's measured decode steps)."""
        self._runner = runner
        self._n_vocab = n_vocab
        self._final_alone = final_token_alone
        self._render = render
        self._prompts = prompts
        self._defaults = sampling_defaults
        self._pool = (ThreadPoolExecutor(sample_threads, thread_name_prefix="hearth-sample")
                      if sample_threads > 1 else None)
        self._make_segment = make_segment
        self.n_ctx_slot = n_ctx_slot
        self._budget = token_budget
        self._slots = [_Slot(i) for i in range(n_slots)]
        self._by_id: dict[str, list[_Slot]] = {}  # request id -> its choices' slots
        self._clock = 0  # ticks at every admission and release: admitted_at and used_at
        self._ram = ram_cache if ram_cache is not None and ram_cache.enabled else None
        # slots a KV copy went into or out of since the last decode: llama.cpp copies the rows
        # at the next decode, so their state is neither saved nor restored over until then
        self._copying: set[int] = set()
        # where the steps' time went (see EngineTimes); the worker loop adds its busy time
        self.decode_s = self.sample_s = 0.0
        self.steps = self.tokens = 0
        self._speculative, self._draft_max, self._draft_ngram = \
            speculative, draft_max, draft_ngram
        self.draft_proposed = self.draft_accepted = 0  # draft tokens fed, and kept
        self.step_cost = StepCost() if step_cost is None else step_cost

    # ---- introspection ----------------------------------------------------------------------

    @property
    def busy(self) -> int:
        return len(self._by_id)

    def has_work(self) -> bool:
        return bool(self._by_id)

    def phases(self) -> dict[str, Phase]:
        """Request id -> phase (of its first choice still running), for every request here."""
        return {rid: slots[0].req.phase for rid, slots in self._by_id.items()
                if slots[0].req is not None}

    def choice_phases(self, request_id: str) -> dict[int, Phase]:
        """Choice index -> phase, for each of the request's choices still running."""
        return {slot.req.index: slot.req.phase for slot in self._by_id.get(request_id, [])
                if slot.req is not None}

    def cache_summary(self) -> bytes:
        """What the slots hold, for routing (SlotFreed.cache): the prefix-block hashes of the
        jobs whose KV cache they keep, each hash once, sorted. Empty slots add nothing."""
        held = {slot.blocks[i:i + HASH_BYTES] for slot in self._slots if slot.cached
                for i in range(0, len(slot.blocks), HASH_BYTES)}
        return b"".join(sorted(held))

    def times(self, busy_s: float) -> EngineTimes:
        return EngineTimes(busy_s, self.decode_s, self.sample_s, self.steps, self.tokens,
                           self.draft_proposed, self.draft_accepted)

    def ram_stats(self) -> RamCacheStats:
        return RamCacheStats() if self._ram is None else self._ram.stats()

    # ---- admission and cancellation ---------------------------------------------------------

    def admit(self, job: ChatJob, prepared: PreparedPrompt | errors.HearthError | None = None,
              ) -> tuple[list[Event], bool]:
        """Place a request in free slots, one per choice (``job.n``). Returns (events,
        admitted); when not admitted the events hold its Failed event and the request is over.
        ``prepared``: what :meth:`prompt_tokens` gave for this job, when the worker ran it off
        the loop (engine/prepare.py); None: tokenize now.
        A completion with ``echo`` gets its prompt's text as a first delta of 0 tokens in
        each choice, after Started; with ``logprobs`` too, that delta carries the prompt
        tokens' entries and comes once the prefill has scored them (:meth:`_score_prompt`)."""
        try:
            if isinstance(prepared, errors.HearthError):
                raise prepared
            started = self._admit(job, prepared)
        except errors.HearthError as exc:
            return [Failed.of(job.request_id, exc)], False
        first = self._by_id[job.request_id][0].req
        if first is not None and first.scoring is not None:
            return [started, *self._echo_scored(first)], True
        if job.prompt is not None and job.prompt.echo and self._prompts is not None:
            echo = self._prompts.echo(job.prompt)
            echoes = [TextDelta(job.request_id, echo, 0, index=i) for i in range(job.n)]
            return [started, *echoes], True
        return [started], True

    def prompt_tokens(self, job: ChatJob) -> PreparedPrompt:
        """The job's prompt tokens, and the request field they come from (for errors). Raises
        InvalidRequest (a template that fails on the messages). Touches no slot: the worker
        may call it on another thread while steps run."""
        if job.prompt is None:
            text = self._render(job)  # may raise InvalidRequest (template errors)
            return self._runner.tokenize(text), "messages"
        if self._prompts is None:
            raise errors.InvalidRequest("This worker serves no completions.", param="prompt")
        return self._prompts.tokens(job.prompt), "prompt"

    def _admit(self, job: ChatJob, prepared: PreparedPrompt | None) -> Started:
        check_token_ids(job, self._n_vocab)  # the scheduler checked the GGUF header's count
        free = [s for s in self._slots if s.req is None]
        if len(free) < max(job.n, 1):
            raise errors.Overloaded(f"{job.n} choices need {job.n} free slots on this worker, "
                                    f"and {len(free)} are free")
        prompt, field_name = self.prompt_tokens(job) if prepared is None else prepared
        if not prompt:
            raise errors.InvalidRequest("the prompt is empty", param=field_name)
        if len(prompt) > self.n_ctx_slot:
            raise errors.ContextLengthExceeded(
                f"This model's context length is {self.n_ctx_slot} tokens per request, but the "
                f"{field_name} came to {len(prompt)} tokens. Shorten the {field_name}.",
                param=field_name)
        params = resolve_sampling(job.params, self._defaults)
        samplers = self._make_samplers(job, params)  # before any slot changes: may raise
        busy = [s for s in self._slots if s.req is not None]
        prefilling = [(s.seq, s.req.prompt) for s in busy
                      if s.req is not None and s.req.phase is Phase.PREFILL]
        last_used = {s.seq: s.used_at for s in free}
        # echo with logprobs scores every prompt token: each needs the logits row of the
        # position before it, so none of the prompt may come from a cache
        scoring = (job.prompt is not None and job.prompt.echo and job.logprobs is not None
                   and self._prompts is not None)
        saved_id, saved = (None, 0) if self._ram is None or scoring else self._ram.best(prompt)
        plan = plan_admission([(s.seq, s.cached) for s in free],
                              [(s.seq, s.cached) for s in busy], prompt, prefilling=prefilling,
                              last_used=last_used, saved=saved,
                              no_restore=sorted(self._copying))
        more = plan_choices([(s.seq, s.cached) for s in free], [s.seq for s in busy], plan,
                            job.n, last_used) if job.n > 1 else []
        slot = self._slots[plan.slot_id]
        reuse = plan.reuse
        wait_for = None
        if self._ram is not None and not scoring and not plan.restore:
            self._ram.misses += 1
        if scoring:
            self._save_slot(slot, 0)
            reuse = 0
            del slot.cached[:]
        elif plan.restore:
            assert saved_id is not None
            reuse = self._restore(slot, saved_id, reuse)
        elif plan.wait:
            assert plan.donor is not None
            self._save_slot(slot, 0)
            wait_for, reuse = (plan.donor, plan.reuse), 0
            del slot.cached[:]
        elif plan.donor is not None:
            self._save_slot(slot, 0)
            donor = self._slots[plan.donor]
            self._copy(donor.seq, slot.seq)
            slot.cached = donor.cached[:reuse]
        else:
            self._save_slot(slot, reuse)
            del slot.cached[reuse:]
        self._runner.forget(slot.seq, reuse)
        room = self.n_ctx_slot - len(prompt)
        limit = params.max_tokens
        if limit is None and job.prompt is not None:
            limit = COMPLETION_MAX_TOKENS
        max_tokens = room if limit is None else min(limit, room)
        self._clock += 1
        slot.used_at = self._clock
        slot.blocks = prefix_blocks(job)
        slot.req = _Request(
            job=job, prompt=prompt, n_past=reuse, cached_tokens=reuse,
            max_tokens=max_tokens, sampler=samplers[0],
            admitted_at=self._clock, stops=StopFilter(params.stop),
            phase=Phase.PREFILL if wait_for is None else Phase.WAIT_COPY, wait_for=wait_for,
            logprobs=None if job.logprobs is None else StepLogprobs(job.logprobs),
            shown=self._shown(job), spec=self._speculation(job, params, prompt, scoring))
        if scoring and job.prompt is not None and self._prompts is not None:
            pieces = self._prompts.pieces(job.prompt, prompt)
            # nothing predicts the first token: its entry has no log-probability
            slot.req.scoring = [TokenLogprob(prompt[0], pieces[0], None)]
            slot.req.pieces = pieces
        slots = [slot]
        for index, slot_id in enumerate(more, start=1):
            # every other choice copies choice 0's cache of all but the prompt's last token
            # once it has it (_resolve_waits), then evaluates that last token itself
            other = self._slots[slot_id]
            self._save_slot(other, 0)
            del other.cached[:]
            self._runner.forget(other.seq, 0)
            other.used_at = self._clock
            other.blocks = slot.blocks
            other.req = _Request(
                job=job, prompt=prompt, n_past=0, cached_tokens=0, max_tokens=max_tokens,
                sampler=samplers[index], admitted_at=self._clock,
                stops=StopFilter(params.stop), phase=Phase.WAIT_COPY,
                wait_for=(slot.seq, len(prompt) - 1), copy_min=1, index=index,
                first=slot.req,
                logprobs=None if job.logprobs is None else StepLogprobs(job.logprobs),
                shown=slot.req.shown, spec=self._speculation(job, params, prompt, scoring))
            slots.append(other)
        self._by_id[job.request_id] = slots
        return Started(job.request_id, len(prompt), reuse)

    def _speculation(self, job: ChatJob, params: ResolvedSampling, prompt: list[int],
                     scoring: bool) -> Speculation | None:
        """A new request's drafting state, or None (see engine.speculation.drafts)."""
        constrained = job.grammar is not None or job.logprobs is not None or scoring
        if not drafts(params, setting=self._speculative, constrained=constrained):
            return None
        return Speculation(prompt, n=self._draft_ngram, k_max=self._draft_max)

    # ---- the host-RAM cache ---------------------------------------------------------------

    def _copy(self, src: int, dst: int) -> None:
        self._runner.copy(src, dst)
        self._copying.update((src, dst))

    def _save_slot(self, slot: _Slot, keep: int) -> None:
        """Before ``slot``'s cache is cut to its first ``keep`` tokens (or replaced): save its
        state to the RAM cache when what goes is worth a restore later (policy.worth_saving).
        Not while a copy into or out of it is pending (its rows are not written yet)."""
        if (self._ram is None or slot.seq in self._copying
                or not worth_saving(len(slot.cached), keep)):
            return
        try:
            data = self._runner.save_state(slot.seq)
        except RuntimeError:
            return  # nothing saved: the conversation is evaluated again if it comes back
        self._ram.put(slot.cached, data)

    def _restore(self, slot: _Slot, entry_id: int, shared: int) -> int:
        """Restore the saved state ``entry_id`` into ``slot`` (saving the slot's own
        conversation first) and keep its first ``shared`` tokens. Returns the prompt tokens
        reused: ``shared``, or 0 when llama.cpp refused the state (then the slot is empty and
        the prompt is evaluated cold; the state is dropped)."""
        assert self._ram is not None
        entry = self._ram.get(entry_id)  # held: saving the slot below may evict it
        self._save_slot(slot, 0)
        t0 = time.perf_counter()
        ok = self._runner.restore_state(slot.seq, entry.data)
        self._ram.restore_s += time.perf_counter() - t0
        if not ok:
            self._ram.failures += 1
            self._ram.remove(entry_id)
            slot.cached = []
            return 0
        self._ram.hits += 1
        if shared >= len(entry.tokens):  # the slot now holds all of it: saved again later
            self._ram.remove(entry_id)
        slot.cached = list(entry.tokens[:shared])  # the rest is forgotten by the caller
        return shared

    def _shown(self, job: ChatJob) -> dict[int, bytes]:
        """The job's ``shown_tokens`` that are one special token each in this vocabulary, by
        id (a text the vocabulary has no single token for is written in ordinary tokens, as
        text, anyway)."""
        shown: dict[int, bytes] = {}
        for text in job.shown_tokens:
            ids = self._runner.tokenize(text, add_bos=False)
            if len(ids) == 1:
                shown[ids[0]] = text.encode()
        return shown

    def _make_samplers(self, job: ChatJob, params: ResolvedSampling) -> list[SamplerLike]:
        """One sampler per choice. With a seed, choice i's is seeded ``seed + i`` (so each
        choice is reproducible on its own); without, each gets a random one."""
        made: list[SamplerLike] = []
        try:
            for i in range(max(job.n, 1)):
                seed = (params.seed + i if params.seed is not None
                        else int.from_bytes(os.urandom(4), "little"))
                choice = params if params.seed is None or i == 0 else \
                    msgspec.structs.replace(params, seed=seed)
                made.append(self._make_sampler(job, choice, seed))
        except BaseException:
            for sampler in made:
                sampler.free()
            raise
        return made

    def _make_sampler(self, job: ChatJob, params: ResolvedSampling, seed: int) -> SamplerLike:
        """A choice's sampler; with its grammar, if it has one (raises InvalidRequest when
        llama.cpp cannot parse that)."""
        inner = self._runner.sampler(params, seed)
        if job.grammar is None:
            return inner
        try:
            return self._runner.grammar_sampler(inner, job.grammar, job.grammar.param)
        except BaseException:
            inner.free()
            raise

    def cancel(self, request_id: str) -> bool:
        """Free the slots of a running request, every choice's (its client is gone). True if it
        was here."""
        slots = self._by_id.get(request_id)
        if slots is None:
            return False
        for slot in list(slots):
            self._release(slot)
        return True

    def _fail_job(self, slot: _Slot, exc: errors.HearthError,
                  events: dict[str, list[Event]], keep_cache: bool = True) -> str:
        """End the request running in ``slot`` with ``exc``: one Failed event, and every one of
        its choices' slots freed. Returns its id."""
        req = slot.req
        assert req is not None
        events[req.job.frontend].append(Failed.of(req.rid, exc))
        for other in list(self._by_id.get(req.rid, [])):
            self._release(other, keep_cache=keep_cache)
        return req.rid

    def fail_all(self, exc: errors.HearthError) -> dict[str, list[Event]]:
        """End every running request with ``exc`` (the worker is going away)."""
        out: dict[str, list[Event]] = defaultdict(list)
        for slots in list(self._by_id.values()):
            self._fail_job(slots[0], exc, out)
        return out

    # ---- one step ---------------------------------------------------------------------------

    def _resolve_waits(self) -> None:
        """Requests waiting for another slot to evaluate their shared prefix: copy it once that
        slot has it; stop waiting (and evaluate it themselves) if that slot moved on."""
        for slot in self._slots:
            req = slot.req
            if req is None or req.phase is not Phase.WAIT_COPY:
                continue
            assert req.wait_for is not None
            donor_id, want = req.wait_for
            donor = self._slots[donor_id]
            have = min(common_prefix(donor.cached, req.prompt), want)
            # whoever holds the donor slot and has not started decoding may still evaluate it
            still_coming = (donor.req is not None and donor.req.phase is not Phase.DECODE
                            and donor.req.n_past < want)
            if have < want and still_coming:
                continue
            req.wait_for = None
            req.phase = Phase.PREFILL
            if have >= req.copy_min:
                self._copy(donor.seq, slot.seq)
                self._runner.forget(slot.seq, have)
                slot.cached = donor.cached[:have]
                req.n_past = req.cached_tokens = have

    def step(self) -> tuple[dict[str, list[Event]], list[str]]:
        """Run one batched decode. Returns (events by frontend, request ids that ended)."""
        self._resolve_waits()
        views = []  # plan_step gives work to PREFILL and DECODE slots only
        costs: list[float] | None = None  # a draft's, in tokens: only when a slot may draft
        generating = 0
        for slot in self._slots:
            req = slot.req
            if req is None:
                continue
            pending = len(req.prompt) - req.n_past if req.phase is Phase.PREFILL else 0
            drafts = 0
            if req.spec is not None and req.phase is Phase.DECODE:
                # every draft token, and the one picked after it, must fit max_tokens and
                # the slot's context
                limit = min(req.max_tokens - req.completion_tokens,
                            self.n_ctx_slot - len(slot.cached) - 1) - 1
                if costs is None:
                    generating = sum(1 for s in self._slots
                                     if s.req is not None and s.req.phase is Phase.DECODE)
                    costs = self.step_cost.draft_costs(generating, self._draft_max)
                drafts = len(req.spec.propose(limit, costs, probe=generating == 1))
            views.append(SlotView(slot.seq, req.phase, pending, req.admitted_at, drafts))
        plan = plan_step(views, self._budget, final_alone=self._final_alone)
        if not plan:
            return {}, []
        # per work item: its slot, the tokens fed and whether it samples after this step
        fed: list[tuple[_Slot, list[int], bool]] = []
        segments: list[SegmentT] = []
        for work in plan:
            slot = self._slots[work.slot_id]
            req = slot.req
            assert req is not None
            wants = work.wants_logits
            if work.prefill:
                n = work.n_tokens if req.scoring is None else min(work.n_tokens, SCORING_CHUNK)
                toks = req.prompt[req.n_past:req.n_past + n]
                # (a shortened chunk's prompt goes on in a later step: no sampling yet)
                wants = wants and req.n_past + len(toks) == len(req.prompt)
            else:
                assert req.next_token is not None
                toks = [req.next_token]
                if work.n_draft:
                    assert req.spec is not None
                    toks += req.spec.draft[:work.n_draft]
            fed.append((slot, toks, wants))
            # a prefill chunk continues the prompt; a decode token follows what is cached;
            # a draft needs a logits row at each of its positions
            segments.append(self._make_segment(
                slot.seq, toks, len(slot.cached), wants,
                (work.prefill and req.scoring is not None) or work.n_draft > 0))
        events: dict[str, list[Event]] = defaultdict(list)
        ended: list[str] = []
        self.steps += 1
        t0 = time.perf_counter()
        try:
            rows = self._runner.decode(segments)
            self._copying.clear()  # llama.cpp has written the pending copies' rows
        except RuntimeError as exc:
            # llama.cpp refused the batch: fail those requests, keep the worker.
            for work in plan:
                slot = self._slots[work.slot_id]
                if slot.req is not None:
                    ended.append(self._fail_job(
                        slot, errors.InternalError(f"decoding failed: {exc}"), events,
                        keep_cache=False))
            return events, ended
        finally:
            took = time.perf_counter() - t0
            self.decode_s += took
        # what StepCost models: one pass of the model over positions with logits rows — a
        # decode-only step without drafts, or one slot's token and draft (beside other slots
        # a draft is a ubatch of its own: see StepCost.draft_costs)
        if not any(work.prefill for work in plan) and \
                (len(plan) == 1 or not any(work.n_draft for work in plan)):
            self.step_cost.observe(sum(len(toks) for _, toks, _ in fed), took)
        sampling: list[tuple[_Slot, _Request]] = []
        scored_only: list[tuple[_Slot, _Request]] = []
        drafted: list[tuple[_Slot, _Request, list[int]]] = []  # (slot, request, its draft)
        for work, (slot, toks, wants) in zip(plan, fed, strict=True):
            req = slot.req
            assert req is not None
            if work.prefill:
                if req.scoring is not None:
                    events[req.job.frontend] += self._score_prompt(req, toks, rows[slot.seq])
                req.n_past += len(toks)
                if req.n_past == len(req.prompt):  # the last chunk: its first token comes now
                    req.phase = Phase.DECODE
            else:
                req.next_token = None
            slot.cached.extend(toks)
            if work.n_draft:
                drafted.append((slot, req, toks[1:]))
            elif wants and req.job.params.max_tokens == 0:  # echo only: the prompt scored
                scored_only.append((slot, req))
            elif wants:
                sampling.append((slot, req))
        for slot, req in scored_only:
            if slot.req is req:
                self._finish(req, "length", events[req.job.frontend])
                self._release(slot)
                if req.rid not in self._by_id:
                    ended.append(req.rid)
        t0 = time.perf_counter()
        for slot, req in sampling:  # before sampling: a grammar may change the row in place
            if req.logprobs is not None:
                req.logprobs.read(self._runner.logits_row(rows[slot.seq]))
        tokens = self._sample([(req.sampler, rows[slot.seq]) for slot, req in sampling])
        self.sample_s += time.perf_counter() - t0
        for (slot, req), token in zip(sampling, tokens, strict=True):
            if slot.req is not req:  # another choice of its request failed it in this step
                continue
            if isinstance(token, errors.HearthError):  # this request's grammar gave up
                ended.append(self._fail_job(slot, token, events))
            elif self._accept(req, token, events[req.job.frontend]):
                self._release(slot)
                if req.rid not in self._by_id:  # its last choice
                    ended.append(req.rid)
        for slot, req, draft in drafted:
            if slot.req is req and self._verify(slot, req, draft, rows[slot.seq],
                                                events[req.job.frontend]):
                self._release(slot)
                if req.rid not in self._by_id:
                    ended.append(req.rid)
        return events, ended

    def _verify(self, slot: _Slot, req: _Request, draft: list[int], last_row: int,
                out: list[Event]) -> bool:
        """A drafting slot after the decode: keep the draft's agreeing prefix and the pick
        after it (engine.speculation.verify_draft), remove the rejected draft positions from
        the slot's KV cache, and stream the kept tokens in order, each through :meth:`_accept`
        (stop strings, end of generation, max_tokens): the first that ends the request ends
        it, and nothing after it is streamed. True when the request is finished."""
        assert req.spec is not None
        first_row = last_row - len(draft)
        t0 = time.perf_counter()
        picks = req.spec.verify(draft, lambda j: req.sampler.sample(first_row + j))
        self.sample_s += time.perf_counter() - t0
        kept = len(picks) - 1  # draft tokens accepted: their KV stays
        self.draft_proposed += len(draft)
        self.draft_accepted += kept
        keep = kept_positions(len(slot.cached) - len(draft) - 1, kept)
        if keep < len(slot.cached):
            self._runner.forget(slot.seq, keep)
            del slot.cached[keep:]
        return any(self._accept(req, token, out) for token in picks)

    def _sample(self, jobs: list[tuple[SamplerLike, int]]) -> list[int | errors.HearthError]:
        """One token per (sampler, logits row), or the error that sampler raised (a grammar
        that allows no token: that request fails, the others go on). Several slow ones
        (llama.cpp's chains, which release the GIL) are spread over the sample threads while
        the decode threads sit idle; quick ones (hearth's numpy samplers) run here: handing
        them to a thread costs more than it saves."""
        if self._pool is None or sum(1 for sampler, _ in jobs if sampler.threaded) < 2:
            return [_sample_one(sampler, row) for sampler, row in jobs]
        pending = {i: self._pool.submit(_sample_one, sampler, row)
                   for i, (sampler, row) in enumerate(jobs) if sampler.threaded}
        quick = {i: _sample_one(sampler, row) for i, (sampler, row) in enumerate(jobs)
                 if i not in pending}  # meanwhile, here
        return [quick[i] if i in quick else pending[i].result() for i in range(len(jobs))]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _accept(self, req: _Request, token: int, out: list[Event]) -> bool:
        """Handle one sampled token; True when the request is finished."""
        if self._runner.is_eog(token):
            self._finish(req, "stop", out)
            return True
        req.completion_tokens += 1
        self.tokens += 1
        piece = req.shown.get(token)
        if piece is None:
            piece = self._runner.piece(token)
        if req.spec is not None:
            req.spec.accepted_token(token)
        text = req.stops.feed(req.utf8.feed(piece))
        entries = [] if req.logprobs is None else \
            [self._logprob_entry(req.logprobs, token, piece)]
        out.append(TextDelta(req.rid, text, 1, entries, req.index))
        if req.stops.stopped:
            self._finish(req, "stop", out, flush=False)
            return True
        if req.completion_tokens >= req.max_tokens:
            self._finish(req, "length", out)
            return True
        req.next_token = token
        return False

    def _score_prompt(self, req: _Request, toks: list[int], last_row: int) -> list[Event]:
        """Read the rows of a scored prefill chunk (``toks``, fed from ``req.n_past``, whose
        last token's logits row is ``last_row``): position p's row gives prompt token p + 1
        its entry. Returns the echo's deltas once every prompt token has one."""
        assert req.scoring is not None and req.logprobs is not None
        first_row = last_row - len(toks) + 1
        for j in range(len(toks)):
            nxt = req.n_past + j + 1
            if nxt >= len(req.prompt):  # the last token's row predicts the completion
                break
            req.logprobs.read(self._runner.logits_row(first_row + j))
            req.scoring.append(self._logprob_entry(req.logprobs, req.prompt[nxt],
                                                   req.pieces[nxt]))
        return self._echo_scored(req)

    def _echo_scored(self, req: _Request) -> list[Event]:
        """The echo's delta for every choice, with the prompt tokens' entries, once they are
        all read (else nothing yet); then the request scores no more."""
        if req.scoring is None or len(req.scoring) < len(req.prompt):
            return []
        assert self._prompts is not None and req.job.prompt is not None
        echo, entries = self._prompts.echo(req.job.prompt), req.scoring
        req.scoring = None
        return [TextDelta(req.rid, echo, 0, entries, index=i) for i in range(req.job.n)]

    def _logprob_entry(self, lp: StepLogprobs, token: int, piece: bytes) -> TokenLogprob:
        piece_of = self._runner.piece
        return TokenLogprob(token, piece, lp.chosen(token),
                            [TopLogprob(t, piece_of(t), v) for t, v in lp.top])

    def _finish(self, req: _Request, reason: FinishReason, out: list[Event],
                flush: bool = True) -> None:
        if flush:
            tail = req.stops.feed(req.utf8.flush())
            tail += req.stops.flush()
            if tail:
                out.append(TextDelta(req.rid, tail, 0, index=req.index))
            if req.stops.stopped:
                reason = "stop"
        # the job's prompt, evaluated once: every choice reports choice 0's cache reuse
        cached = (req.first or req).cached_tokens
        out.append(Finished(req.rid, reason, len(req.prompt), req.completion_tokens, cached,
                            index=req.index, stop_sequence=req.stops.matched))

    def _release(self, slot: _Slot, keep_cache: bool = True) -> None:
        req = slot.req
        assert req is not None
        req.phase = Phase.FINISHED
        req.sampler.free()
        slots = self._by_id.get(req.rid)
        if slots is not None:
            if slot in slots:
                slots.remove(slot)
            if not slots:
                del self._by_id[req.rid]
        slot.req = None
        self._clock += 1
        slot.used_at = self._clock
        if not keep_cache:
            self._runner.forget(slot.seq, 0)
            slot.cached.clear()
            slot.blocks = b""
