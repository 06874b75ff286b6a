"""How many speculative draft tokens each decoding slot may put into the next step. Pure Python.

A drafting slot (see engine/speculation.py) asks for up to K draft tokens beside its decode
token; each one costs a batch position like a prefill token does. Drafts only ever get what is
left of the step's token budget once every generating slot has its decode token and the waiting
prompts have their prefill chunks (:func:`scheduler.policy.plan_step` calls this last), so
speculation never slows a prompt's prefill or another slot's decode. What is left is shared
fairly: each slot gets an equal share, and what a slot that wants less leaves over goes to the
others (water-filling), ties broken by slot id.

Whether a slot asks at all, and for how many, weighs what a draft token is worth against what
it costs (:func:`worth_drafting`): the slot's recent acceptance (:class:`Acceptance`) against
the extra time of the step relative to a token's share of it at the current number of
generating slots (:class:`StepCost`, from the measured decode times; beside other slots a draft
is a pass of the model of its own, see :meth:`StepCost.draft_costs`). So drafting turns itself
down where it would lose: beside other slots, or where drafts keep failing.
"""

from __future__ import annotations

from collections.abc import Sequence


def share_drafts(wanted: Sequence[tuple[int, int]], left: int,
                 max_per_step: int | None = None) -> dict[int, int]:
    """``wanted``: (slot_id, draft tokens it would like); ``left``: batch positions free in
    this step; ``max_per_step``: a cap on all slots' drafts together (None: ``left``). Returns
    slot_id -> draft tokens granted (0 for a slot that gets none), summing to at most both
    caps and never more than a slot asked for."""
    room = max(0, left if max_per_step is None else min(left, max_per_step))
    grant = {slot_id: 0 for slot_id, _ in wanted}
    asks = sorted(((n, slot_id) for slot_id, n in wanted if n > 0))
    for i, (n, slot_id) in enumerate(asks):
        share = room // (len(asks) - i)  # the fewest-wanting first: their leftover is shared
        got = min(n, share)
        grant[slot_id] = got
        room -= got
    return grant


# ---- what a draft is worth: acceptance against cost ----------------------------------------
#
# A step of s one-token slots takes T(s) seconds; a token is worth T(s) / s (what the step spends
# per token it yields), and a draft of k tokens costs T(s + k) - T(s). Its i-th token is accepted
# with probability about a**i (a: the slot's per-token acceptance), so the draft is worth
# a + a**2 + ... + a**k tokens against (T(s + k) - T(s)) * s / T(s) (StepCost.draft_costs).
# T is the measured mean time of steps of each size: on a CPU it is far from a straight line
# (bench/draft_step_cost.py, gemma-3-270m, 1 thread: 4 x 1 tokens 90 ms, one slot drafting 2
# beside them 157 ms, drafting 8 240 ms; alone 50 ms, with 8 drafts 194 ms): at 4 slots no draft
# pays, alone a long one does. Sizes not measured yet come from a straight line fitted to the
# steps, which first took this shape:
#
# A step with s generating slots takes T = fixed + s * per_position seconds (every decode token
# and every draft token is a batch position with a logits row). One more draft position costs
# per_position; a token is worth T / s (what the step spends per token it yields). The i-th
# token of a draft is accepted with probability about a**i (a: the slot's per-token acceptance),
# so it pays when a**i * T / s > per_position, i.e. a**i > ratio(s) = s * per_position / T.
# Measured on CPU with gemma-3-270m (issue 21's first round): a decoded token 163 ms alone and
# 73 ms per token at 4 slots, so fixed : per_position is about 120 : 43 ms, and ratio(1) = 0.26,
# ratio(4) = 0.59, ratio(16) = 0.85: drafts pay alone above ~0.3 acceptance, at 4 slots only
# above ~0.6 (4 streams lost with every draft granted: 0.87x). On a GPU the fixed part dominates
# and ratio stays near 0: drafts almost always pay.

PRIOR_FIXED_PER_POSITION = 2.8  # fixed / per_position before any measurement (CPU, above)
COST_DECAY = 0.98  # each measured step's weight shrinks by this per later step (~50 steps)
COST_PRIOR_WEIGHT = 2.0  # the prior counts as this many steps, in relative terms
SIZE_MEMORY = 16  # a step size's mean time follows roughly its last this many steps


class StepCost:
    """The decode time of a step as ``fixed + per_position * positions``, fitted by
    exponentially weighted least squares over the steps measured (decode-only steps: a prefill
    chunk's positions have no logits rows and cost less). Until the steps vary enough in size to
    tell the two apart (one stream that never drafts: every step is one position), the fit
    keeps the prior's proportion (``prior`` = fixed / per_position), scaled to the measured
    times. Pure: the engine calls :meth:`observe` after each decode."""

    def __init__(self, prior: float = PRIOR_FIXED_PER_POSITION, decay: float = COST_DECAY,
                 prior_weight: float = COST_PRIOR_WEIGHT) -> None:
        if prior < 0 or not 0 < decay <= 1:
            raise ValueError("prior >= 0 and 0 < decay <= 1")
        self.prior, self.decay, self.prior_weight = prior, decay, prior_weight
        # weighted sums over observations of (x = positions, t = seconds)
        self._w = self._x = self._xx = self._t = self._xt = 0.0
        # positions -> (recent mean seconds, steps seen) of the steps of exactly that size: the
        # time is not a straight line of the positions on a CPU (bench/draft_step_cost.py)
        self._by_size: dict[int, tuple[float, int]] = {}

    def observe(self, positions: int, seconds: float) -> None:
        """One decode-only step of ``positions`` batch positions took ``seconds``."""
        if positions < 1 or seconds < 0:
            return
        mean, seen = self._by_size.get(positions, (seconds, 0))
        seen += 1
        self._by_size[positions] = (mean + (seconds - mean) / min(seen, SIZE_MEMORY), seen)
        d = self.decay
        self._w = self._w * d + 1.0
        self._x = self._x * d + positions
        self._xx = self._xx * d + positions * positions
        self._t = self._t * d + seconds
        self._xt = self._xt * d + positions * seconds

    def fit(self) -> tuple[float, float]:
        """(fixed, per_position) in seconds; (prior, 1.0) before any step is measured."""
        if self._w <= 0:
            return self.prior, 1.0
        # the prior as pseudo-steps of the prior's shape, scaled to the measured mean time:
        # kappa * (prior + x) seconds at the measured mean size x
        mean_x, mean_t = self._x / self._w, self._t / self._w
        kappa = mean_t / (self.prior + mean_x)
        w = self.prior_weight
        # pseudo-observations at 1 and at 1 + 2 * mean_x positions: they pin the slope to the
        # prior's only where the measured steps do not
        p1, p2 = 1.0, 1.0 + 2.0 * mean_x
        n = self._w + 2 * w
        sx = self._x + w * (p1 + p2)
        sxx = self._xx + w * (p1 * p1 + p2 * p2)
        st = self._t + w * kappa * (2 * self.prior + p1 + p2)
        sxt = self._xt + w * kappa * ((self.prior + p1) * p1 + (self.prior + p2) * p2)
        den = n * sxx - sx * sx
        slope = (n * sxt - sx * st) / den if den > 0 else kappa
        slope = max(slope, 0.0)
        fixed = max((st - slope * sx) / n, 0.0)
        return fixed, slope

    def time(self, positions: int) -> float:
        """The expected seconds of a decode-only step of ``positions``: the recent mean of the
        steps of that size if there were some; else between the nearest sizes measured on
        either side; else the nearest measured size moved along the fitted line (the line
        alone before any step)."""
        fixed, per = self.fit()
        sizes = self._by_size
        if positions in sizes:
            return sizes[positions][0]
        below = max((n for n in sizes if n < positions), default=None)
        above = min((n for n in sizes if n > positions), default=None)
        if below is not None and above is not None:
            lo, hi = sizes[below][0], sizes[above][0]
            return lo + (hi - lo) * (positions - below) / (above - below)
        if below is not None:
            return sizes[below][0] + per * (positions - below)
        if above is not None:
            return max(sizes[above][0] - per * (above - positions), 0.0)
        return fixed + per * positions

    def draft_costs(self, generating: int, k_max: int) -> list[float]:
        """What k draft tokens (k = 0..k_max) added to a step of ``generating`` one-token
        slots cost, in tokens: the step's extra time over the time it spends per token it
        yields (``time(s)`` / s). A draft of k tokens pays when the tokens it is expected to
        yield, a + a**2 + ... + a**k, exceed this.

        The extra time depends on how llama.cpp cuts the batch into ubatches (the passes of
        the model over the batch). Each slot has a KV stream of its own (``kv_unified`` off,
        engine/runner.py), and llama.cpp then cuts a batch with ``split_equal``: a ubatch takes
        the *same* number of tokens from each of a run of consecutive sequences
        (llama.cpp src/llama-batch.cpp, ``llama_batch_allocr::split_equal``, called by the KV
        caches' ``init_batch``). A slot alone puts its decode token and draft in one ubatch:
        the draft costs ``time(1 + k) - time(1)``. Beside other one-token slots, the draft's k
        tokens are left over after the first ubatch and make one of their own: the draft costs
        a whole pass of k positions, ``time(k)`` — on this CPU with gemma-3-270m, 4 slots
        took 90 ms a step, 157 ms with one slot drafting 2 (bench/draft_step_cost.py): the
        drafts' ubatch. So beside many slots no draft pays (at 16, a draft of k costs at least
        16 x time(k) / time(16) tokens: ~5 for k = 3 here, and more on a GPU, where a pass costs
        nearly a whole step whatever its size). Each drafting slot is priced with a pass of its
        own: where several slots' drafts of one length are neighbours they share one, so this
        errs towards not drafting."""
        s = max(generating, 1)
        base = self.time(s)
        if base <= 0:
            return [0.0] * (k_max + 1)
        if s == 1:
            return [0.0] + [max(self.time(1 + k) - base, 0.0) / base
                            for k in range(1, k_max + 1)]
        return [0.0] + [self.time(k) * s / base for k in range(1, k_max + 1)]

    def ratio(self, generating: int) -> float:
        """``ratio(s)`` above for ``generating`` slots: the acceptance a draft token needs to
        pay for its position (0: drafts cost nothing measurable; 1: they never pay)."""
        fixed, per = self.fit()
        s = max(generating, 1)
        if per <= 0:
            return 0.0
        return s * per / (fixed + s * per)


class FreeSteps(StepCost):
    """``--draft-policy always``: every draft position counts as free (ratio 0), so a slot
    drafts its adaptive length whatever the step costs (a GPU, where the fit would say the
    same, or a benchmark of the drafting itself)."""

    def ratio(self, generating: int) -> float:
        return 0.0

    def draft_costs(self, generating: int, k_max: int) -> list[float]:
        return [0.0] * (k_max + 1)


ACCEPT_PRIOR = 0.8  # a slot's per-token acceptance before its first draft is verified
ACCEPT_PRIOR_WEIGHT = 2.0  # ... counted as this many draft tokens tried
ACCEPT_DECAY = 0.9  # each verified draft's weight shrinks by this per later draft


class Acceptance:
    """A slot's recent per-token draft acceptance: the chance that a draft token is accepted
    given that the ones before it were (the geometric model's estimate, accepted tokens over
    tokens tried, where a draft of k with m accepted tried m + 1 tokens, or k if m = k),
    over recent drafts (exponentially weighted) and a fixed prior."""

    def __init__(self) -> None:
        self._accepted = self._tried = 0.0

    def record(self, proposed: int, accepted: int) -> None:
        if proposed < 1:
            return
        self._accepted = self._accepted * ACCEPT_DECAY + accepted
        self._tried = self._tried * ACCEPT_DECAY + min(proposed, accepted + 1)

    @property
    def rate(self) -> float:
        return ((ACCEPT_PRIOR * ACCEPT_PRIOR_WEIGHT + self._accepted)
                / (ACCEPT_PRIOR_WEIGHT + self._tried))


def worth_drafting(want: int, acceptance: float, costs: Sequence[float]) -> int:
    """How many of ``want`` draft tokens to ask for: the k <= want (and < len(costs)) with the
    most expected tokens over cost, a + a**2 + ... + a**k - costs[k] (``acceptance`` a: the
    chance of each further token being accepted; ``costs`` from
    :meth:`StepCost.draft_costs`, in tokens); 0 when no draft gains."""
    best_k, best, gain, chance = 0, 0.0, 0.0, 1.0
    if acceptance <= 0:
        return 0
    for k in range(1, min(want, len(costs) - 1) + 1):
        chance *= min(acceptance, 1.0)
        gain += chance
        if gain - costs[k] > best:
            best_k, best = k, gain - costs[k]
    return best_k
