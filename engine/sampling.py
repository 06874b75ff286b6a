"""Samplers that read a step's logits row with numpy instead of llama.cpp's sampler chain.

llama.cpp's chain first copies the whole vocabulary into a candidates array and, for plain
temperature sampling or ``top_p``, works over all of it: 2.2 to 2.7 ms per token and slot for
gemma-3's 262k tokens on this project's machine, most of a 16 ms decode step. These do the same
filters in the same order on the row in place (a few hundred microseconds):

    logit_bias -> penalties -> top_p -> min_p -> temperature -> draw

``top_k`` is not here: llama.cpp's partial sort already makes it cheap, and the runner keeps its
chain for requests that set it. Each sampler gets ``row_of(index)``, a float32 view of the
logits row the runner's last decode wrote at ``index``; nothing here touches llama.cpp.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable

import numpy as np

RowOf = Callable[[int], np.ndarray]

PENALTY_LAST_N = 64  # tokens the penalties look back over (llama.cpp's default, which we used)
BLOCK = 1024  # the draw finds its block of the vocabulary first, then the token within it
NUCLEUS_NEAR = 4.0  # nats below the best: where top_p looks first, and mostly finds its tokens
NUCLEUS_SORT_MAX = 4096  # tokens top_p sorts at most
NUCLEUS_BUCKETS = 2048  # top_p sorts one bucket: tokens within 1/64 nat of each other
NUCLEUS_RANGE = 32.0  # nats below the best that the buckets cover; the rest share the last


def _bias_arrays(bias: dict[int, float], n_vocab: int) -> tuple[np.ndarray, np.ndarray]:
    ids = sorted(t for t in bias if 0 <= t < n_vocab)
    return np.array(ids, dtype=np.intp), np.array([bias[t] for t in ids], dtype=np.float32)


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

    # 0.3 to 1.5 ms, but much of it small numpy calls that hold the GIL: spread over the
    # sample threads, 4 and 16 slots stepped no faster than inline (measured), so inline
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
        self._work = np.empty(n_vocab, dtype=np.float32)  # the adjusted row; the draw's
        self._exp = np.empty(n_vocab, dtype=np.float32)  # top_p's probabilities
        self._starts = np.arange(0, n_vocab, BLOCK)

    # ---- the filters, each on (logits, ids); ids None means the whole vocabulary in order ----

    def _adjusted(self, row: np.ndarray) -> np.ndarray:
        """The row after logit_bias and the penalties (a copy when either applies)."""
        penalise = (self._freq or self._presence) and self._counts
        if not len(self._bias_ids) and not penalise:
            return row
        x = self._work
        np.copyto(x, row)
        if len(self._bias_ids):
            x[self._bias_ids] += self._bias
        if penalise:
            toks = np.fromiter(self._counts.keys(), dtype=np.intp, count=len(self._counts))
            counts = np.fromiter(self._counts.values(), dtype=np.float32, count=len(toks))
            x[toks] -= counts * self._freq + self._presence
        return x

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
        if len(x) > BLOCK * 4:  # the whole vocabulary: in place, by blocks
            e = x if x is self._work else self._work[:len(x)]  # never the row itself
            np.subtract(x, x.max(), out=e)
            if self.temperature != 1.0:
                np.multiply(e, 1.0 / self.temperature, out=e)
            np.exp(e, out=e)
            starts = self._starts if len(x) == self._n_vocab else np.arange(0, len(x), BLOCK)
            blocks = np.cumsum(np.add.reduceat(e, starts), dtype=np.float64)
            u = self._rng.random() * blocks[-1]
            b = min(int(np.searchsorted(blocks, u, side="right")), len(blocks) - 1)
            before = blocks[b - 1] if b else 0.0
            inner = np.cumsum(e[starts[b]:starts[b] + BLOCK], dtype=np.float64) + before
            i = min(int(np.searchsorted(inner, u, side="right")), len(inner) - 1)
            return int(starts[b]) + i
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
        x = self._adjusted(self._row_of(logits_index))
        if self.temperature <= 0:
            token = int(x.argmax())
        else:
            ids, x = self._candidates(x)
            i = self._draw(x)
            token = i if ids is None else int(ids[i])
        return token

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
