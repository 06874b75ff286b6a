"""The batching policy: what goes into the next decode step. Pure Python, no model.

The worker describes its slots as :class:`SlotView`s; :func:`plan_step` answers with the work of
one step, which the worker packs into a single ``llama_batch``:

* every generating slot gets exactly one decode token (streams already running never stall);
* the rest of the token budget goes to prompt prefill, oldest admission first, in chunks, so a
  long prompt is spread over several steps instead of blocking everyone (chunked prefill).

:func:`plan_admission` picks the free slot for a new prompt: the one whose cached tokens share
the longest prefix with it (when that is worth having), so that only the rest has to be
evaluated, else a free slot next to the busy ones whose cache is worth least
(:func:`pick_free_slot`) — or, when another slot (busy or not) shares a much longer prefix, a
free slot into which that slot's cache is copied first (apps that share a system prompt, or a
chat continued while its old slot is taken).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from hearth.scheduler.draft_budget import share_drafts


class Phase(Enum):
    """Where a slot's request is. The engine stores it on the request and moves it forward at
    each transition (admit, copy resolved, prefill done, finished); only PREFILL and DECODE
    slots get work in a step."""

    IDLE = "idle"  # no request
    WAIT_COPY = "wait_copy"  # admitted; waits for a donor slot to evaluate the shared prefix
    PREFILL = "prefill"  # its prompt is being evaluated, chunk by chunk
    DECODE = "decode"  # prompt evaluated: one token per step
    FINISHED = "finished"  # its final event is out (or it was cancelled); the slot is freed


@dataclass(frozen=True, slots=True)
class SlotView:
    slot_id: int
    phase: Phase
    pending_prompt: int = 0  # prompt tokens still to evaluate (PREFILL only)
    admitted_at: int = 0  # admission order, smaller = older
    draft_wanted: int = 0  # DECODE only: speculative draft tokens it would feed beside its token


@dataclass(frozen=True, slots=True)
class Work:
    slot_id: int
    n_tokens: int
    prefill: bool
    wants_logits: bool  # sample after this step (decode, or the last chunk of a prefill)
    n_draft: int = 0  # decode only: draft tokens fed after the decode token (n_tokens counts them)


# A prompt's last token is evaluated in a step after the rest of its prompt, as a work item of
# its own (plan_step's ``final_alone``): then a request's first logits do not depend on what the
# slot's cache held. llama.cpp's CPU kernels give a token's row different rounding in a
# many-token batch than in a one-token one, so a whole prompt in one batch (cold cache) and only
# its last token after a cached prefix (warm cache) sampled from logits up to 1.0 apart on
# gemma-3-270m and could pick different greedy tokens. With the last token alone both paths
# compute it the same way: bit-identical logits (tests/integration/test_prefix_determinism.py).
# Cost: one extra one-token step per prompt that is not served from the cache
# (bench/final_token.py measures it).


def plan_step(slots: Sequence[SlotView], token_budget: int, *,
              final_alone: bool = True, max_draft: int | None = None) -> list[Work]:
    """The work of one step. Decode tokens first, then prefill chunks within ``token_budget``.

    If there are more generating slots than budget, every one of them still gets its token (the
    worker sizes the batch for ``budget + slots``): decode is never starved by prefill. Slots
    in any other phase (idle, waiting for a copy, finished) get nothing. A prefill chunk never
    holds the prompt's last token together with others: that token is the slot's whole work in a
    later step, the only item with ``wants_logits`` (unless ``final_alone`` is False: only the
    benchmark of its cost asks for the old way).

    Speculative drafts (a DECODE slot's ``draft_wanted``) come last, in what is left of the
    budget after decode tokens and prefill chunks, shared by :func:`share_drafts` (at most
    ``max_draft`` in all): they never take a position a prompt or another slot could use.
    """
    if token_budget < 1:
        raise ValueError("token_budget must be at least 1")
    work = [Work(s.slot_id, 1, False, True) for s in slots if s.phase is Phase.DECODE]
    left = token_budget - len(work)
    waiting = sorted((s for s in slots if s.phase is Phase.PREFILL and s.pending_prompt > 0),
                     key=lambda s: (s.admitted_at, s.slot_id))
    for slot in waiting:
        if left < 1:
            break
        pending = slot.pending_prompt
        if pending == 1 or not final_alone:
            n = min(pending, left)
            work.append(Work(slot.slot_id, n, True, n == pending))
        else:  # all but the last token: it gets a step of its own (see above)
            n = min(pending - 1, left)
            work.append(Work(slot.slot_id, n, True, False))
        left -= n
    wanted = [(s.slot_id, s.draft_wanted) for s in slots
              if s.phase is Phase.DECODE and s.draft_wanted > 0]
    if wanted and left > 0:
        grant = share_drafts(wanted, left, max_draft)
        work = [Work(w.slot_id, 1 + grant[w.slot_id], False, True, grant[w.slot_id])
                if not w.prefill and grant.get(w.slot_id) else w for w in work]
    return work


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


REUSE_MIN = 32  # a cached prefix shorter than this is not worth a slot far from the others

Cached = Sequence[tuple[int, Sequence[int]]]  # (slot_id, the tokens its cache holds)


def pick_free_slot(free: Cached, busy: Sequence[int] = (),
                   last_used: Mapping[int, int] | None = None, exclude: int | None = None) -> int:
    """The free slot for a prompt that brings no cached prefix along (or for a copy of one).

    Busy slots are kept together: llama.cpp attends over every slot's KV stream between the
    lowest and the highest slot in a batch, idle ones included (4 streams decoded as slots 0,
    5, 10, 15 took 63 ms per step, as slots 0-3 35 ms, on gemma-3-270m). So the slot is a gap
    between busy slots, else one next to them; with nothing busy, any. Among those, the one
    whose cache is worth least: an empty one, else the least recently used (``last_used``:
    slot_id -> a stamp that grows with time), so that a conversation's cache survives other
    apps' requests until it is the oldest. Ties go to the lowest slot id."""
    slots = [(slot_id, cached) for slot_id, cached in free if slot_id != exclude]
    if not slots:
        raise ValueError("no free slot")
    lo, hi = (min(busy), max(busy)) if busy else (-1, -1)

    def away(slot_id: int) -> int:  # how far it widens the busy span: 0 in a gap, 1 beside
        return 0 if not busy or lo < slot_id < hi else min(abs(slot_id - lo), abs(slot_id - hi))

    stamps = last_used or {}
    return min(slots, key=lambda s: (away(s[0]), len(s[1]) > 0, stamps.get(s[0], 0), s[0]))[0]


def shared_prefixes(slots: Cached, prompt: Sequence[int]) -> dict[int, int]:
    """slot_id -> how many of ``prompt``'s tokens its cache can serve: the common prefix, at
    most all but the last prompt token (its logits are needed to sample from)."""
    cap = max(len(prompt) - 1, 0)
    return {slot_id: min(common_prefix(cached, prompt), cap) for slot_id, cached in slots}


def choose_slot(free: Cached, prompt: Sequence[int], min_reuse: int = REUSE_MIN,
                busy: Sequence[int] = (), last_used: Mapping[int, int] | None = None,
                shared: Mapping[int, int] | None = None) -> tuple[int, int]:
    """Pick from ``free`` the slot for ``prompt``. Returns (slot_id, reusable_tokens), the
    reuse as :func:`shared_prefixes` counts it (``shared``: those counts, if already made).

    The slot sharing the longest prefix wins when that prefix is at least ``min_reuse`` tokens,
    or is all of the prompt but its last token (ties: the lowest slot id); otherwise
    :func:`pick_free_slot` chooses, next to the ``busy`` slots, and nothing is reused: the prompt
    is evaluated as if the cache were empty. Evaluating a few shared tokens again costs little,
    and it keeps a nearly-cold request (one that shares only a template's first tokens with an
    earlier one) on the exact path of a cold one, so its greedy output is the same (README:
    "Determinism"); a whole prompt found again is exact too (its last token is evaluated alone).
    """
    if not free:
        raise ValueError("no free slot")
    if shared is None:
        shared = shared_prefixes(free, prompt)
    slot_id = min((s for s, _ in free), key=lambda s: (-shared[s], s))
    if shared[slot_id] < min(min_reuse, max(len(prompt) - 1, 1)):
        return pick_free_slot(free, busy, last_used), 0
    return slot_id, shared[slot_id]


@dataclass(frozen=True, slots=True)
class Admission:
    slot_id: int
    reuse: int  # prompt tokens whose KV is kept (or copied) instead of evaluated
    donor: int | None = None  # copy this slot's cache into slot_id first
    wait: bool = False  # the donor is still evaluating that prefix: copy once it has


COPY_MIN_GAIN = 32  # copying a slot's cache pays once it saves this many prompt tokens


def plan_admission(free: Cached, others: Cached, prompt: Sequence[int],
                   min_gain: int = COPY_MIN_GAIN, prefilling: Cached = (),
                   last_used: Mapping[int, int] | None = None) -> Admission:
    """``free``: (slot_id, cached tokens) of free slots; ``others``: the same for busy slots;
    ``prefilling``: (slot_id, whole prompt) of slots still evaluating their prompt — when many
    requests with one system prompt arrive together, one evaluates it and the rest wait to copy
    it; ``last_used``: see :func:`pick_free_slot`. Reuse always leaves at least one prompt token to
    evaluate (its logits are sampled)."""
    busy = [slot_id for slot_id, _ in others]
    shared = shared_prefixes([*free, *others], prompt)
    slot_id, reuse = choose_slot(free, prompt, busy=busy, last_used=last_used, shared=shared)
    best_donor, best = None, reuse
    for donor, n in shared.items():
        if donor != slot_id and n > best:
            best_donor, best = donor, n
    wait_donor, wait_best = None, max(best, reuse)
    for donor, n in shared_prefixes(prefilling, prompt).items():
        if n - wait_best >= min_gain:
            wait_donor, wait_best = donor, n
    if wait_donor is not None:
        best_donor, best = wait_donor, wait_best
    elif best_donor is None or best - reuse < min_gain:
        return Admission(slot_id, reuse)
    # The copy overwrites the target's cache: placed as a new prompt would be.
    if not any(s[0] != best_donor for s in free):
        return Admission(slot_id, reuse)
    target = pick_free_slot(free, busy, last_used, exclude=best_donor)
    return Admission(target, best, best_donor, wait=wait_donor is not None)


def plan_choices(free: Cached, busy: Sequence[int], first: Admission, n: int,
                 last_used: Mapping[int, int] | None = None) -> list[int]:
    """The slots of choices 1..n-1 of a request whose choice 0 is placed by ``first`` (see
    :func:`plan_admission`; ``free`` and ``busy`` as it was given them). Each is a free slot
    as :func:`pick_free_slot` picks one for a prompt that brings no cache along, beside the
    busy slots and the ones just taken; the slot whose cache choice 0 copies only when no
    other is left (it is safe: choice 0 has its copy before any choice copies from choice 0).
    Those choices keep none of their slot's cache: they wait for choice 0 to evaluate all but
    the prompt's last token and copy its KV cache (one prefill for the n of them), then
    evaluate the last token each, in one step beside choice 0's. Raises ValueError when
    fewer than n slots are free."""
    taken = [first.slot_id]
    pool = [(slot_id, cached) for slot_id, cached in free if slot_id != first.slot_id]
    if len(pool) < n - 1:
        raise ValueError(f"{n} choices need {n} free slots")
    for _ in range(n - 1):
        others = [s for s in pool if s[0] != first.donor]
        slot_id = pick_free_slot(others or pool, [*busy, *taken], last_used)
        taken.append(slot_id)
        pool = [s for s in pool if s[0] != slot_id]
    return taken[1:]
