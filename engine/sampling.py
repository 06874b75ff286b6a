"""Samplers that read a step's logits row with numpy instead of llama.cpp's sampler chain.

llama.cpp's chain first copies the whole vocabulary into a candidates array and, for plain
temperature sampling or ``top_p``, works over all of it: 2.2 to 2.7 ms per token and slot for
gemma-3's 262k tokens on this project's machine, most of a 16 ms decode step. These do the same
filters in the same order on the row in place:

    logit_bias -> penalties -> top_p -> min_p -> temperature -> draw

``top_k`` is not here: llama.cpp's partial sort already makes it cheap, and the runner keeps its
chain for requests that set it. Each sampler gets ``row_of(index)``, a float32 view of the
logits row the runner's last decode wrote at ``index``; ``logit_bias`` and the penalties are
written into that row for the draw, and the row is restored before ``pick`` returns. Nothing
here touches llama.cpp.

The draw from a set of more than ``FULL_DRAW`` tokens (gemma-3's whole vocabulary at OpenAI's
default: temperature 1, no ``top_p``) is :func:`draw_softmax`: exact, with ``exp`` computed
only for a few thousand tokens near the best rather than for the whole vocabulary.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

RowOf = Callable[[int], np.ndarray]

PENALTY_LAST_N = 64  # tokens the penalties look back over (llama.cpp's default, which we used)
SMALL_DRAW = 4096  # candidate sets up to this size are drawn from by a plain cumulative sum
BLOCK = 1024  # larger ones up to FULL_DRAW: exp of each, the block first, then the token in it
FULL_DRAW = 65_536  # larger still: draw_softmax (its fixed costs pay off past this size:
# measured 0.80x the block draw's speed at SmolLM2's 49k tokens, 1.2-1.6x at gemma-3's 262k)
# draw_softmax's cut (see there): the tail's proposal mass as a multiple of the guess of Z,
# the largest head it computes, how far the proposal may outweigh the head before the cut is
# moved down, the cuts it tries, and the trials per round (a round of 32 fails with
# probability about (8/9)^32 = 2 %)
TAIL_PROPOSAL = 8.0
HEAD_MAX = 4096
RETRY_RATIO = 64.0
CUTS = 4
TRIALS = 32
NUCLEUS_NEAR = 4.0  # nats below the best: where top_p looks first, and mostly finds its tokens
NUCLEUS_SORT_MAX = 4096  # tokens top_p sorts at most
NUCLEUS_BUCKETS = 2048  # top_p sorts one bucket: tokens within 1/64 nat of each other
NUCLEUS_RANGE = 32.0  # nats below the best that the buckets cover; the rest share the last


def _bias_arrays(bias: dict[int, float], n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    ids = sorted(t for t in bias if 0 <= t < n_vocab)
    return np.array(ids, dtype=np.intp), np.array([bias[t] for t in ids], dtype=np.float32)


def draw_softmax(x: np.ndarray, temperature: float, rng: np.random.Generator,
                 z_hint: float = 1.0) -> tuple[int, float]:
    """An index into the float32 array ``x`` (n = ``len(x)`` logits) drawn with probability
    exactly softmax(x / T)[i] (T = ``temperature`` > 0), with ``exp`` computed for a few
    hundred to a few thousand tokens near the best instead of all n. Returns (index, Z_H),
    Z_H (defined below) being the ``z_hint`` for the next row of the same sequence: a guess
    of Z that sets the cut, which changes the cost, never the distribution. Reproducible: the
    same ``x``, hint and generator state give the same index.

    Rejection sampling under an envelope. Let m = max(x), w_i = exp((x_i - m) / T) (the best
    token weighs 1) and Z = sum(w). For a cut c <= m (rounded to float32, as the comparison
    rounds it), the *head* is the tokens with x_i >= c; every *tail* token has
    w_i < e := exp((c - m) / T). Only the head's weights are computed: their sum Z_H and
    running sum. A trial draws u uniform on [0, Z_H + n e):
      - u < Z_H: the head token where the running sum passes u, accepted:
        P(i) = w_i / (Z_H + n e);
      - else a token j uniform over all n, accepted iff j is in the tail and a uniform
        v < w_j / e (< 1): P(j) = (n e / (Z_H + n e)) (1 / n) (w_j / e) = w_j / (Z_H + n e).
    Every token comes out of a trial with probability proportional to its w_i, so the first
    accepted one is distributed exactly as softmax(x / T), whatever the cut: nothing is
    truncated. (A truncation would not be negligible: on gemma-3-270m's rows at T = 1 the tokens
    more than 11 nats below the best hold 1.7 % of the mass in the median row and 9.6 % at
    most, and a cut whose dropped mass is provably below 1e-7 must keep every token within
    ln(n) + ln(1e7) = 28.6 nats of the best for n = 262,144, which is nearly all of gemma-3's
    tokens in the 40 rows measured.)

    The cut only sets the cost: a trial succeeds with probability Z / (Z_H + n e), and the head
    costs its size. It is placed where n e = ``TAIL_PROPOSAL`` * the guess of Z (the hint, at
    least 1, as Z >= w_best = 1), so a trial succeeds with probability about
    1 / (1 + TAIL_PROPOSAL); if the head then holds more than ``HEAD_MAX`` tokens the cut moves
    up 2 nats, and if n e exceeds ``RETRY_RATIO`` * Z_H it moves down to n e = TAIL_PROPOSAL * Z_H
    (Z_H <= Z), at most ``CUTS`` times. Trials are drawn ``TRIALS`` at a time. Measured on
    gemma-3-270m's and SmolLM2's rows at T = 1, the cut with n e = 16 Z keeps 76 to 2,221
    tokens (gemma-3, 262k) where a fixed 11-nat cut keeps up to 59,354."""
    n = len(x)
    best = float(x.max())
    deepest = math.log(n / TAIL_PROPOSAL)  # n e = TAIL_PROPOSAL: the guess Z = 1
    lift = min(deepest, max(0.0, math.log(n / (TAIL_PROPOSAL * max(1.0, z_hint)))))
    for attempt in range(CUTS):
        cut = float(np.float32(best - temperature * lift))
        mask = x >= cut
        last = attempt == CUTS - 1
        if not last and lift > 2.0 and np.count_nonzero(mask) > HEAD_MAX:
            lift -= 2.0
            continue
        head = np.flatnonzero(mask)
        # float32 exp (SIMD: ~25x quicker than float64's here); the sums in float64
        w = np.exp((x[head] - best) * np.float32(1.0 / temperature))
        z_head = float(w.sum(dtype=np.float64))
        lift = (best - cut) / temperature  # e = exp(-lift), for the cut as rounded
        if last or lift >= deepest or n * math.exp(-lift) <= RETRY_RATIO * z_head:
            break
        lift = min(deepest, math.log(n / (TAIL_PROPOSAL * z_head)))
    tail = n * math.exp(-lift)
    total = z_head + tail
    cum: np.ndarray | None = None
    while True:
        us = rng.random(TRIALS) * total
        js = rng.integers(0, n, TRIALS)
        xs = x[js].astype(np.float64)
        tail_ok = (xs < cut) & (rng.random(TRIALS) < np.exp((xs - best) / temperature + lift))
        ok = (us < z_head) | tail_ok
        if ok.any():
            t = int(ok.argmax())
            if us[t] >= z_head:
                return int(js[t]), z_head
            cum = np.cumsum(w, dtype=np.float64)
            i = min(int(np.searchsorted(cum, us[t], side="right")), len(head) - 1)
            return int(head[i]), z_head


class GreedySampler:
    """Greedy decoding (with an optional ``logit_bias``) straight from the logits row: the
    highest biased logit, the lowest id among equals, as llama.cpp's greedy sampler picks."""

    threaded = False  # tens of microseconds: quicker inline than handed to a thread

    def __init__(self, row_of: RowOf, n_vocab: int, bias: dict[int, float]) -> None:
        self._row_of = row_of
        self._ids, self._bias = _bias_arrays(bias, n_vocab)

    def sample(self, logits_index: int) -> int:
        return self.pick(logits_index)

    def pick(self, logits_index: int) -> int:
        row = self._row_of(logits_index)
        if not len(self._ids):
            return int(row.argmax())
        # the biased logits go into this step's output buffer for one argmax (a float32 add, as
        # llama.cpp's logit_bias does), and the row is restored before returning
        saved = row[self._ids]
        row[self._ids] = saved + self._bias
        best = int(row.argmax())
        row[self._ids] = saved
        return best

    def remember(self, token: int) -> None:
        pass  # greedy decoding has no history

    def free(self) -> None:
        pass


class LogitsSampler:
    """Penalties, ``top_p``, ``min_p`` and temperature, then a seeded draw (``temperature`` 0:
    the best token after the penalties). ``sample`` also remembers the token for the
    penalties, as llama.cpp's chain does when it samples."""

    # tenths of a millisecond (more with top_p), much of it small numpy calls that hold the
    # GIL: spread over the sample threads, 4 and 16 slots stepped no faster than inline
    # (measured before draw_softmax), so inline
    threaded = False

    def __init__(self, row_of: RowOf, n_vocab: int, *, temperature: float, top_p: float = 1.0,
                 min_p: float = 0.0, frequency_penalty: float = 0.0,
                 presence_penalty: float = 0.0, logit_bias: dict[int, float] | None = None,
                 seed: int = 0) -> None:
        self._row_of = row_of
        self._n_vocab = n_vocab
        self.temperature = temperature
        self.top_p = top_p
        self.min_p = min_p
        self._freq, self._presence = frequency_penalty, presence_penalty
        self._bias_ids, self._bias = _bias_arrays(logit_bias or {}, n_vocab)
        self._recent: deque[int] = deque(maxlen=PENALTY_LAST_N)
        self._counts: Counter[int] = Counter()
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._exp = np.empty(n_vocab, dtype=np.float32)  # top_p's probabilities
        self._z_hint = 1.0  # draw_softmax's guess of the next row's normaliser
        self._work = np.empty(min(n_vocab, FULL_DRAW), dtype=np.float32)  # the block draw's
        self._starts = np.arange(0, len(self._work), BLOCK)

    # ---- the filters, each on (logits, ids); ids None means the whole vocabulary in order ----

    @contextmanager
    def _applied(self, row: np.ndarray) -> Iterator[np.ndarray]:
        """The row with logit_bias and then the penalties added in place (float32, in
        llama.cpp's order) for the block; the changed entries are put back after it. (A copy
        of the row would cost a pass over the vocabulary for a few changed tokens.)"""
        penalise = bool((self._freq or self._presence) and self._counts)
        if not len(self._bias_ids) and not penalise:
            yield row
            return
        toks = (np.fromiter(self._counts.keys(), dtype=np.intp, count=len(self._counts))
                if penalise else self._bias_ids[:0])
        changed = np.concatenate([self._bias_ids, toks])
        saved = row[changed]  # (a copy: fancy indexing)
        try:
            if len(self._bias_ids):
                row[self._bias_ids] += self._bias
            if penalise:
                counts = np.fromiter(self._counts.values(), dtype=np.float32, count=len(toks))
                row[toks] -= counts * self._freq + self._presence
            yield row
        finally:
            row[changed] = saved

    def _nucleus(self, x: np.ndarray) -> np.ndarray:
        """The ids of the fewest most likely tokens whose probabilities add up to ``top_p``
        (the one that reaches it included). Sorting the vocabulary would take milliseconds.
        Mostly a few tokens near the best hold the nucleus, and only they are sorted; else the
        tokens are put in buckets by how far below the best they are, the buckets wholly inside
        the nucleus are taken as they are, and only the bucket where it ends is sorted."""
        best = float(x.max())
        e = self._exp
        np.subtract(x, best, out=e)
        np.exp(e, out=e)
        need = self.top_p * float(e.sum(dtype=np.float64))
        near = np.flatnonzero(x >= best - NUCLEUS_NEAR)
        if len(near) <= NUCLEUS_SORT_MAX and float(e[near].sum(dtype=np.float64)) >= need:
            return self._cut(near, x, e, 0.0, need)
        far = np.subtract(best, x)  # a new array: x may be the row
        np.multiply(far, NUCLEUS_BUCKETS / NUCLEUS_RANGE, out=far)
        np.minimum(far, NUCLEUS_BUCKETS - 1, out=far)
        bucket = far.astype(np.intp)  # rounding keeps the order: a lower bucket, a higher logit
        cum = np.cumsum(np.bincount(bucket, weights=e, minlength=NUCLEUS_BUCKETS))
        edge = min(int(np.searchsorted(cum, need)), NUCLEUS_BUCKETS - 1)
        inside = np.flatnonzero(bucket < edge)
        before = float(cum[edge - 1]) if edge else 0.0
        return np.concatenate([inside, self._cut(np.flatnonzero(bucket == edge), x, e, before,
                                                 need)])

    @staticmethod
    def _cut(ids: np.ndarray, x: np.ndarray, e: np.ndarray, before: float,
             need: float) -> np.ndarray:
        """The most likely of ``ids`` up to the first that brings the mass (``before`` plus
        theirs) to ``need``."""
        ids = ids[np.argsort(-x[ids], kind="stable")]
        running = before + np.cumsum(e[ids], dtype=np.float64)
        return ids[:min(int(np.searchsorted(running, need)) + 1, len(ids))]

    def _candidates(self, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        ids: np.ndarray | None = None
        if self.top_p < 1.0:
            ids = self._nucleus(x)
            x = x[ids]
        if self.min_p > 0.0:
            keep = np.flatnonzero(x >= float(x.max()) + np.log(self.min_p))
            ids = keep if ids is None else ids[keep]
            x = x[keep]
        return ids, x

    def _draw(self, x: np.ndarray) -> int:
        """An index into ``x`` drawn with probability softmax(x / temperature)."""
        if len(x) > FULL_DRAW:  # a large vocabulary, or much of it
            i, self._z_hint = draw_softmax(x, self.temperature, self._rng, self._z_hint)
            return i
        if len(x) > SMALL_DRAW:  # by blocks, in the work buffer
            e = self._work[:len(x)]
            np.subtract(x, x.max(), out=e)
            if self.temperature != 1.0:
                np.multiply(e, 1.0 / self.temperature, out=e)
            np.exp(e, out=e)
            starts = self._starts if len(x) == len(self._work) else np.arange(0, len(x), BLOCK)
            blocks = np.cumsum(np.add.reduceat(e, starts), dtype=np.float64)
            u = self._rng.random() * blocks[-1]
            b = min(int(np.searchsorted(blocks, u, side="right")), len(blocks) - 1)
            before = blocks[b - 1] if b else 0.0
            inner = np.cumsum(e[starts[b]:starts[b] + BLOCK], dtype=np.float64) + before
            return int(starts[b]) + min(int(np.searchsorted(inner, u, side="right")),
                                        len(inner) - 1)
        e = np.exp((x - x.max()) / self.temperature, dtype=np.float64)
        cum = np.cumsum(e)
        u = self._rng.random() * cum[-1]
        return min(int(np.searchsorted(cum, u, side="right")), len(cum) - 1)

    def sample(self, logits_index: int) -> int:
        token = self.pick(logits_index)
        self.remember(token)
        return token

    def pick(self, logits_index: int) -> int:
        """The token ``sample`` would draw, not remembered (a grammar may refuse it)."""
        row = self._row_of(logits_index)
        if not len(self._bias_ids) and not ((self._freq or self._presence) and self._counts):
            return self._pick_from(row)  # (no context manager: its cost shows at 49k tokens)
        with self._applied(row) as x:
            return self._pick_from(x)

    def _pick_from(self, x: np.ndarray) -> int:
        if self.temperature <= 0:
            return int(x.argmax())
        ids, x = self._candidates(x)
        i = self._draw(x)
        return i if ids is None else int(ids[i])

    def remember(self, token: int) -> None:
        if not (self._freq or self._presence):
            return
        if len(self._recent) == self._recent.maxlen:
            old = self._recent[0]
            self._counts[old] -= 1
            if not self._counts[old]:
                del self._counts[old]
        self._recent.append(token)
        self._counts[token] += 1

    def free(self) -> None:
        pass
