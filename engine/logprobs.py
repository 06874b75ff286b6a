"""Log-probabilities of generated tokens, for the requests that ask for them (chat ``logprobs`` /
``top_logprobs``, completions ``logprobs``).

What the numbers are: the log-softmax of the model's raw logits row for the step that produced
the token — before ``logit_bias``, the penalties, ``temperature``, ``top_p`` / ``top_k`` /
``min_p`` and any grammar: the model's distribution, not the sampler's (the reading of OpenAI's
``logprobs`` that issue 17 specifies; OpenAI's reference says only "the log probability of
this token"). So a token a grammar forced, or one drawn at a high temperature, shows the
probability the model itself gave it.

Cost: only slots that asked pay, once per generated token: one ``max``, one pass writing the
shifted row into the request's own buffer, one ``exp`` and sum (the log-sum-exp), and, for a
top-k, one comparison with a bar found from a sample of the row and an ``argpartition`` of the
few tokens above it — a few passes over the vocabulary in numpy, no Python loop over it. The
shifted row is kept so that the chosen token's value can be read after sampling even though a
grammar sets rejected logits to ``-inf`` in the row in place.

Owned by one slot's request; not thread-safe.
"""

from __future__ import annotations

import math

import numpy as np

SAMPLE_STRIDE = 64  # the top-k first finds a bar from every 64th token (see log_softmax_top)


def log_softmax_top(row: np.ndarray, k: int, shifted: np.ndarray,
                    scratch: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The log of the softmax's normaliser of ``row`` (float32 logits, shape (n_vocab,)) taken
    relative to its maximum, and its ``k`` most likely token ids with their log-probabilities
    (most likely first; equal values among them: the lower id first — which of several equal
    values at the k-th place makes the cut is not defined).

    ``shifted`` (float32, like ``row``) is left holding ``row - row.max()``: token t's
    log-probability is then ``shifted[t] - log_z``. ``scratch`` is overwritten. Returns
    ``(log_z, ids, logprobs)``; ``logprobs`` are float64."""
    np.subtract(row, row.max(), out=shifted)
    np.exp(shifted, out=scratch)
    # float32 is enough: numpy sums a contiguous array pairwise (relative error about 1e-7
    # times log2 of the length), and the terms are in (0, 1]; float64 would cost a conversion
    log_z = math.log(float(scratch.sum()))
    if k <= 0:
        return log_z, np.empty(0, dtype=np.intp), np.empty(0, dtype=np.float64)
    k = min(k, len(row))
    sample = shifted[::SAMPLE_STRIDE]
    if len(sample) >= k:
        # the k-th largest of every SAMPLE_STRIDE-th token is a value at least k tokens reach,
        # and no more than the row's own k-th largest: the row's top k are among the tokens at
        # or above it (about k * SAMPLE_STRIDE of them), so only those are partitioned
        bar = np.partition(sample, len(sample) - k)[len(sample) - k]
        near = np.flatnonzero(shifted >= bar)
        ids = near[np.argpartition(shifted[near], len(near) - k)[len(near) - k:]]
    else:
        ids = np.argpartition(shifted, len(row) - k)[len(row) - k:]
    # most likely first; among equals the lower id (a stable sort of ids in id order)
    ids = np.sort(ids)
    ids = ids[np.argsort(-shifted[ids], kind="stable")]
    return log_z, ids, shifted[ids].astype(np.float64) - log_z


class StepLogprobs:
    """One request's reader: :meth:`read` the step's logits row before sampling, then
    :meth:`chosen` gives the sampled token's log-probability and :attr:`top` the k most likely
    ``(token id, logprob)``."""

    def __init__(self, k: int) -> None:
        self.k = k
        self._shifted: np.ndarray | None = None
        self._scratch: np.ndarray | None = None
        self._log_z = 0.0
        self.top: list[tuple[int, float]] = []

    def read(self, row: np.ndarray) -> None:
        if self._shifted is None or len(self._shifted) != len(row):
            self._shifted = np.empty(len(row), dtype=np.float32)
            self._scratch = np.empty(len(row), dtype=np.float32)
        assert self._scratch is not None
        self._log_z, ids, lps = log_softmax_top(row, self.k, self._shifted, self._scratch)
        self.top = list(zip(ids.tolist(), lps.tolist(), strict=True))

    def chosen(self, token: int) -> float:
        assert self._shifted is not None, "read() a row first"
        return float(self._shifted[token]) - self._log_z
