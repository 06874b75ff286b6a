"""Speculative sampling at temperature > 0 (engine.speculation.verify_draft with hearth's numpy
sampler): the tokens a draft's verification keeps are distributed exactly as plain sampling's
(a chi-square test over many seeded requests on a small fake vocabulary, against the
distribution computed here from the filters' documented order), a draft token is accepted with
its probability p(x), a token the filters cut is never accepted, and a seeded request draws the
same tokens with a draft as without one."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import pytest
from hearth.engine.sampling import LogitsSampler
from hearth.engine.speculation import verify_draft

# three logits rows over a 6-token vocabulary: row 0 follows the decode token, row j the j-th
# draft token (a fake model whose rows do not depend on the tokens: only the sampler's
# penalties carry earlier tokens into a row's distribution)
ROWS = np.array([[2.0, 1.5, 0.3, -0.5, 1.0, -3.0],
                 [0.2, 1.8, 1.7, -1.0, 0.0, -2.0],
                 [1.0, 0.9, -0.4, 1.1, 0.3, 0.0]], dtype=np.float32)
N = 4000  # seeded requests per case

CASES = {
    "temperature": {"temperature": 0.7},
    "top_p": {"temperature": 1.3, "top_p": 0.8},
    "min_p and bias": {"temperature": 0.9, "min_p": 0.1, "logit_bias": {3: 2.0}},
    "penalties": {"temperature": 1.0, "frequency_penalty": 0.8, "presence_penalty": 0.4},
}


def sampler(seed: int, **params: object) -> LogitsSampler:
    rows = ROWS.copy()
    return LogitsSampler(lambda i: rows[i], rows.shape[1], seed=seed, **params)  # type: ignore[arg-type]


def distribution(row: np.ndarray, before: Sequence[int], *, temperature: float,
                 top_p: float = 1.0, min_p: float = 0.0, frequency_penalty: float = 0.0,
                 presence_penalty: float = 0.0,
                 logit_bias: dict[int, float] | None = None) -> np.ndarray:
    """p over the vocabulary after logit_bias -> penalties (over ``before``) -> top_p ->
    min_p -> temperature, the order engine/sampling.py documents, written out plainly."""
    x = row.astype(np.float64)
    for t, b in (logit_bias or {}).items():
        x[t] += b
    for t, c in Counter(before).items():
        x[t] -= c * frequency_penalty + presence_penalty
    keep = np.ones(len(x), dtype=bool)
    if top_p < 1.0:
        order = np.argsort(-x, kind="stable")
        p1 = np.exp(x - x.max())
        p1 /= p1.sum()
        cum = np.cumsum(p1[order])
        n = int(np.searchsorted(cum, top_p)) + 1
        keep[:] = False
        keep[order[:n]] = True
    if min_p > 0.0:
        keep &= x >= x[keep].max() + math.log(min_p)
    e = np.where(keep, np.exp((x - x[keep].max()) / temperature), 0.0)
    p: np.ndarray = e / e.sum()
    return p


def chi_square_ok(counts: Counter[tuple[int, ...]], expected: dict[tuple[int, ...], float],
                  n: int) -> tuple[float, float]:
    """(chi-square statistic, its 1e-4 critical value by Wilson-Hilferty) over the cells
    with an expected count of at least 5; no count may fall in a cell of probability 0."""
    assert all(expected.get(cell, 0.0) > 0 for cell in counts), "a token p gives 0 was drawn"
    cells = [c for c, p in expected.items() if p * n >= 5]
    stat = sum((counts[c] - expected[c] * n) ** 2 / (expected[c] * n) for c in cells)
    df = len(cells) - 1
    z = 3.719  # the standard normal's 1 - 1e-4 quantile
    critical = df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3
    return stat, critical


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("draft", [(0, 1), (2, 2)])
def test_kept_tokens_are_distributed_as_plain_sampling(case: str, draft: tuple[int, int]) -> None:
    params = CASES[case]
    p0 = distribution(ROWS[0], [], **params)  # type: ignore[arg-type]
    expected: dict[tuple[int, ...], float] = {}
    for a in range(6):
        p1 = distribution(ROWS[1], [a], **params)  # type: ignore[arg-type]
        for b in range(6):
            p2 = distribution(ROWS[2], [a, b], **params)  # type: ignore[arg-type]
            for c in range(6):
                expected[a, b, c] = float(p0[a] * p1[b] * p2[c])
    counts: Counter[tuple[int, ...]] = Counter()
    accepted_first = 0
    for seed in range(N):
        s = sampler(seed, **params)
        kept = verify_draft(draft, s.sample)
        accepted_first += kept[0] == draft[0]
        while len(kept) < 3:  # after a rejection the next steps sample the next rows plainly
            kept.append(s.sample(len(kept)))
        counts[tuple(kept)] += 1
    stat, critical = chi_square_ok(counts, expected, N)
    assert stat < critical, (case, draft, stat, critical)
    # the first draft token is accepted with its probability under the slot's distribution
    sd = math.sqrt(p0[draft[0]] * (1 - p0[draft[0]]) / N)
    assert abs(accepted_first / N - p0[draft[0]]) <= 4 * sd + 1e-12


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_seeded_request_draws_the_same_tokens_with_and_without_a_draft(case: str) -> None:
    params = CASES[case]
    for seed in range(200):
        plain = sampler(seed, **params)
        expect = [plain.sample(0), plain.sample(1), plain.sample(2)]
        for draft in ((0, 1), (1, 2), (expect[0], expect[1]), (expect[0], 5)):
            s = sampler(seed, **params)
            kept = verify_draft(draft, s.sample)
            while len(kept) < 3:
                kept.append(s.sample(len(kept)))
            assert kept == expect, (case, seed, draft)


def test_a_token_the_filters_cut_is_never_accepted() -> None:
    # top_p 0.5 at temperature 1 keeps token 0 alone in row 0 (p = 0.38 + 0.23 ... > 0.5 with
    # token 1): token 5 is far outside
    p0 = distribution(ROWS[0], [], temperature=1.0, top_p=0.5)
    assert p0[5] == 0.0
    for seed in range(2000):
        s = sampler(seed, temperature=1.0, top_p=0.5)
        kept = verify_draft([5, 5], s.sample)
        assert kept[0] != 5 and len(kept) == 1
