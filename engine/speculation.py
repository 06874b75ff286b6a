"""N-gram (prompt-lookup) speculative decoding for one slot: the draft finder, the adaptive
draft length and the verification of a draft.

How a step drafts (engine/slots.py drives it): a slot looks up the last ``n`` tokens of its
sequence (prompt and output so far) at their most recent earlier occurrence and proposes the up
to K tokens that followed there (no second model: the text itself is the draft model, which
pays off when the answer repeats its context — code edits, quotes, rewrites). The draft tokens
go into the step's one ``llama_batch`` right after the slot's decode token, each with a logits
row. The rejected draft positions are removed from the slot's KV cache (``llama_memory_seq_rm``)
before the next step.

Verification (:func:`verify_draft`) samples each row with the slot's own sampler, in order, and
keeps the samples up to and including the first that differs from the draft. For a greedy slot
that is exact-match acceptance. For a sampled one (temperature > 0, with its top_p, top_k, min_p,
penalties, logit_bias) it is the speculative-sampling rule for a deterministic draft (q one-hot
at the draft token x; Leviathan et al. 2023, "Fast Inference from Transformers via Speculative
Decoding", and Chen et al. 2023): accept x with probability min(1, p(x)/q(x)) = p(x), else
draw from the residual max(0, p - q) renormalised, which is p with x removed and renormalised;
after a fully accepted draft the bonus token is drawn from p at the last row. Drawing y from p
and accepting x exactly when y == x realises that rule: P(accept) = P(y == x) = p(x), and given
y != x, y is distributed as p without x, renormalised. So each kept token is distributed as
plain sampling's, and as the sampler draws once per kept token as it does without drafts, a
seeded request draws the same random numbers either way: one at a time, its output with drafts
on is its output with them off (up to llama.cpp's batch-shape rounding, see README
"Determinism"). Rows after the first rejection are never sampled, so penalties and the RNG only
ever see kept tokens.

Requests with a grammar, logprobs or a scored echo do not draft (their per-row bookkeeping is
not built for several rows per step).

Adaptive: a slot whose drafts keep failing stops drafting for a while (:class:`DraftLength`),
and a draft is only as long as its tokens pay for their batch positions
(scheduler.draft_budget.worth_drafting: the slot's recent acceptance against the cost of a
position at the current number of generating slots). All state is per request, made at
admission (llama.cpp issue #27852: an n-gram cache kept across requests sank its acceptance from
86 % to 11 %). Nothing here touches llama.cpp.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hearth.scheduler.draft_budget import Acceptance, worth_drafting
from hearth.scheduler.messages import ResolvedSampling

# After this many drafts in a row of which no token was accepted, the slot stops drafting for
# a while: a failed draft costs its batch positions for nothing.
MISS_LIMIT = 3
PAUSE_MIN = 16  # tokens generated without drafting after the first run of misses
PAUSE_MAX = 256  # the pause doubles at each run of misses up to this; an accepted draft resets it
LENGTH_MIN = 2  # a slot's draft length never falls below this (while it drafts at all)
# a slot whose acceptance does not pay for a draft at the current cost still drafts after this
# many tokens without a draft, so its estimate can recover (a probe's miss counts toward the
# pause like any other) — but only a draft that would pay at PROBE_ACCEPTANCE: where even a
# verbatim copy would not pay for its positions (4 slots on a CPU), probing is a pure loss
# (bench/speculation.py: edit at 4 streams 0.84x with one-token probes and nothing else). Only a
# slot generating alone probes: beside others a draft is a pass of the model of its own
# (StepCost.draft_costs), and probes there cost more than they found (bench/load.py, gemma-3,
# 4 streams: on/off chat 0.94x, edit at temperature 0.7 0.91x with probes at any count)
PROBE_EVERY = 16
PROBE_ACCEPTANCE = 0.95


class NgramDrafter:
    """Finds drafts in one sequence: the tokens that followed the most recent earlier
    occurrence of its last ``n`` tokens — or, when fewer than the draft's length follow that
    one (inside a run that repeats itself, the latest occurrence ends just before the end),
    the first occurrence's. While the sequence goes on copying the place the last draft came
    from (its n tokens before the place the copy has reached agree with the sequence's last
    n), the draft continues from there: code repeats its n-grams, and the latest occurrence of
    one is often in another part of the file than the one being copied.

    The index maps each n-gram to the positions just after its first and its latest
    occurrence and is kept up to date incrementally (each token is indexed once), so a lookup
    costs O(n), not a scan of the sequence."""

    def __init__(self, tokens: Sequence[int], n: int) -> None:
        if n < 1:
            raise ValueError("the n-gram size must be at least 1")
        self.n = n
        self.tokens: list[int] = list(tokens)
        self._first: dict[tuple[int, ...], int] = {}
        self._last: dict[tuple[int, ...], int] = {}
        self._indexed = n  # n-grams ending before this position are in the index
        self._copying: tuple[int, int] | None = None  # (source start, sequence length) then

    def push(self, token: int) -> None:
        """Append a token of the sequence (an accepted output token)."""
        self.tokens.append(token)

    def propose(self, k: int) -> list[int]:
        """Up to ``k`` draft tokens to follow the sequence (empty: its last n-gram was not
        seen before, or ``k`` < 1)."""
        toks, n = self.tokens, self.n
        if k < 1 or len(toks) <= n:
            return []
        # index every n-gram that ends before the last position (not the last one itself,
        # which is what is looked up), later occurrences overwriting earlier ones
        for end in range(self._indexed, len(toks)):
            gram = tuple(toks[end - n:end])
            self._last[gram] = end
            self._first.setdefault(gram, end)
        self._indexed = max(self._indexed, len(toks))
        if self._copying is not None:  # the place the last draft came from, moved on since
            source, then = self._copying
            start = source + len(toks) - then
            if n <= start < len(toks) - 1 and toks[start - n:start] == toks[-n:]:
                self._copying = (start, len(toks))
                return toks[start:start + k]
        gram = tuple(toks[-n:])
        latest = self._last.get(gram)
        if latest is None:
            self._copying = None
            return []
        start = latest if len(toks) - latest >= k else self._first[gram]
        self._copying = (start, len(toks))
        return toks[start:start + k]


class DraftLength:
    """A slot's adaptive draft length and pause.

    ``want()`` is how many draft tokens the slot asks for next (0 while paused);
    :meth:`record` takes each verified draft's outcome: the length follows the acceptance
    (twice the tokens accepted, between ``LENGTH_MIN`` and ``k_max``), and after
    ``MISS_LIMIT`` drafts in a row that were wholly rejected the slot pauses for
    ``PAUSE_MIN`` generated tokens, doubling with every further run of misses up to
    ``PAUSE_MAX``; any accepted draft token ends a run and resets the pause."""

    def __init__(self, k_max: int) -> None:
        self.k_max = k_max
        self.length = k_max
        self.misses = 0  # drafts in a row of which nothing was accepted
        self.paused = 0  # generated tokens still to go without drafting
        self._pause = PAUSE_MIN
        self.proposed = self.accepted = 0  # draft tokens, over the request

    def want(self) -> int:
        return 0 if self.paused > 0 or self.k_max < 1 else self.length

    def generated(self, n_tokens: int) -> None:
        """``n_tokens`` more output tokens (a pause counts down in tokens)."""
        self.paused = max(0, self.paused - n_tokens)

    def record(self, proposed: int, accepted: int) -> None:
        """One verified draft: ``accepted`` of its ``proposed`` tokens were accepted."""
        if proposed < 1:
            return
        self.proposed += proposed
        self.accepted += accepted
        self.length = max(LENGTH_MIN, min(self.k_max, 2 * accepted))
        if accepted:
            self.misses = 0
            self._pause = PAUSE_MIN
            return
        self.misses += 1
        if self.misses >= MISS_LIMIT:
            self.paused = self._pause
            self._pause = min(PAUSE_MAX, self._pause * 2)
            self.misses = 0


def drafts(params: ResolvedSampling, *, setting: bool, constrained: bool) -> bool:
    """Whether a new request drafts: its ``speculative_decoding`` (None: the worker's
    ``setting``) says so, and it is not ``constrained`` (a grammar, logprobs or a scored echo).
    Greedy and sampled requests alike: verification keeps each one's output distribution (see
    :func:`verify_draft`)."""
    wanted = setting if params.speculative_decoding is None else params.speculative_decoding
    return wanted and not constrained


class Speculation:
    """One request's drafting state: its :class:`NgramDrafter` over prompt + output, its
    :class:`DraftLength` and its recent :class:`Acceptance`. Made at admission, dropped with
    the request."""

    def __init__(self, prompt: Sequence[int], *, n: int, k_max: int) -> None:
        self.drafter = NgramDrafter(prompt, n)
        self.length = DraftLength(k_max)
        self.acceptance = Acceptance()
        self.draft: list[int] = []  # proposed for the coming step (cut to what the plan grants)
        self.since_draft = 0  # tokens generated since the last draft was verified

    def propose(self, limit: int, costs: Sequence[float] | None = None,
                probe: bool = True) -> list[int]:
        """The draft to ask the step plan for: at most ``limit`` tokens (what max_tokens and
        the context leave), at most what the adaptive length wants now, and only as many as
        pay for their positions at ``costs`` (scheduler.draft_budget.StepCost.draft_costs;
        None: free) — or, where ``probe`` allows (the slot generates alone), as a probe after
        PROBE_EVERY tokens without a draft, as many as would pay at PROBE_ACCEPTANCE."""
        want = min(limit, self.length.want())
        k = want if costs is None else worth_drafting(want, self.acceptance.rate, costs)
        if k < 1 and probe and want > 0 and self.since_draft >= PROBE_EVERY:
            k = worth_drafting(want, PROBE_ACCEPTANCE, costs or [])
        self.draft = self.drafter.propose(k)
        return self.draft

    def verify(self, draft: Sequence[int], pick: Callable[[int], int]) -> list[int]:
        """:func:`verify_draft`, with the outcome recorded in the draft length and the
        acceptance."""
        picks = verify_draft(draft, pick)
        self.length.record(len(draft), len(picks) - 1)
        self.acceptance.record(len(draft), len(picks) - 1)
        self.since_draft = 0
        return picks

    def accepted_token(self, token: int) -> None:
        """An output token the request keeps (streamed, or ending it)."""
        self.drafter.push(token)
        self.length.generated(1)
        self.since_draft += 1


def verify_draft(draft: Sequence[int], sample: Callable[[int], int]) -> list[int]:
    """The tokens a slot keeps from a step that fed its decode token and ``draft``:
    ``sample(j)`` draws the slot's token at logits row j (row 0 follows the decode token, row j
    follows draft token j - 1) and takes it into the sampler's state (penalties, RNG), as
    plain decoding would. Returns the samples up to and including the first that differs from
    the draft (or the one after the whole draft): always 1 to len(draft) + 1 tokens, the first
    len(result) - 1 of which equal the draft's first ones. Rows after the first disagreement
    are never sampled. For a greedy sampler this is exact-match acceptance; for a sampled one
    it is speculative sampling's rule for a one-hot draft (see the module's docstring)."""
    out: list[int] = []
    for j in range(len(draft) + 1):
        token = sample(j)
        out.append(token)
        if j == len(draft) or token != draft[j]:
            break
    return out


def kept_positions(pos: int, n_accepted_draft: int) -> int:
    """A slot fed its decode token at ``pos`` and a draft after it; ``n_accepted_draft`` of the
    draft tokens were accepted. Returns the first cache position to remove (everything from it
    on holds rejected draft tokens): ``pos + 1 + n_accepted_draft``."""
    return pos + 1 + n_accepted_draft
