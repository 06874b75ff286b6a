"""The numpy samplers against llama.cpp's own sampler chain.

The filters (logit_bias, penalties, top_p, min_p) must leave exactly the tokens llama.cpp's
chain leaves, on vocabularies as large as gemma-3's; the draw must follow softmax(x / T) and
repeat itself for a seed. llama.cpp's samplers run here on plain arrays: no model is loaded.
"""

from __future__ import annotations

import ctypes

import llama_cpp as ll
import numpy as np
import pytest
from hearth.engine.sampling import PENALTY_LAST_N, GreedySampler, LogitsSampler, draw_softmax

N_VOCAB = 262_144  # gemma-3's vocabulary


def _rows() -> dict[str, np.ndarray]:
    """Logit rows shaped like a real model's: flat ones (every token within a few nats, as
    gemma-3's are), peaked ones, and one where a single token holds nearly everything."""
    rng = np.random.default_rng(7)
    flat = rng.normal(0, 1.0, N_VOCAB).astype(np.float32)
    peaked = rng.normal(0, 2.0, N_VOCAB).astype(np.float32)
    peaked[rng.choice(N_VOCAB, 30, replace=False)] += rng.uniform(8, 16, 30).astype(np.float32)
    medium = rng.normal(0, 1.0, N_VOCAB).astype(np.float32)  # sets of tens to hundreds
    medium[rng.choice(N_VOCAB, 400, replace=False)] += rng.uniform(6, 11, 400).astype(np.float32)
    sure = rng.normal(0, 1.0, N_VOCAB).astype(np.float32)
    sure[1234] = 40.0
    return {"flat": flat, "peaked": peaked, "medium": medium, "sure": sure}


ROWS = _rows()


def _llama_filtered(row: np.ndarray, *, bias: dict[int, float] | None = None,
                    top_p: float = 1.0, min_p: float = 0.0, history: tuple[int, ...] = (),
                    freq: float = 0.0, presence: float = 0.0) -> list[int]:
    """The token ids llama.cpp's chain keeps (bias, penalties, top_p, min_p), as a sorted list."""
    chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
    try:
        if bias:
            arr = (ll.llama_logit_bias * len(bias))(
                *[ll.llama_logit_bias(t, b) for t, b in bias.items()])
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_logit_bias(
                len(row), len(bias), arr))
        if freq or presence:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_penalties(
                len(row), PENALTY_LAST_N, 1.0, freq, presence))
        if top_p < 1.0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(top_p, 1))
        if min_p > 0.0:
            ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(min_p, 1))
        for tok in history:
            ll.llama_sampler_accept(chain, tok)
        data = np.zeros(len(row), dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        data["id"] = np.arange(len(row))
        data["logit"] = row
        cur = ll.llama_token_data_array(
            data=ctypes.cast(data.ctypes.data, ctypes.POINTER(ll.llama_token_data)),
            size=len(row), selected=-1, sorted=False)
        ll.llama_sampler_apply(chain, ctypes.byref(cur))
        raw = (ctypes.c_char * (cur.size * data.itemsize)).from_address(
            ctypes.addressof(cur.data.contents))  # the samplers may have moved the data
        kept = np.frombuffer(raw, dtype=data.dtype)
        if freq or presence or bias:  # the biased/penalised logits must agree too
            return sorted(zip(kept["id"].tolist(),  # type: ignore[return-value]
                              np.round(kept["logit"].astype(float), 3).tolist(), strict=True))
        return sorted(kept["id"].tolist())
    finally:
        ll.llama_sampler_free(chain)


def _ours(row: np.ndarray, **kw: object) -> tuple[LogitsSampler, np.ndarray | None, np.ndarray]:
    history = kw.pop("history", ())
    s = LogitsSampler(lambda _i: row, len(row), temperature=1.0, **kw)  # type: ignore[arg-type]
    for tok in history:  # type: ignore[attr-defined]
        s.remember(tok)
    with s._applied(row) as x:
        ids, kept = s._candidates(x)
        return s, ids, kept.copy()  # (kept may be the row, which the block restores)


def _exact_top_p(row: np.ndarray, top_p: float) -> list[int]:
    """top_p by its definition, in float64: the fewest most likely tokens whose probabilities
    add up to top_p."""
    p = np.exp(row.astype(np.float64) - row.max())
    p /= p.sum()
    order = np.argsort(-row, kind="stable")
    return sorted(order[:int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1].tolist())


def _assert_same_tokens(ours: np.ndarray | None, theirs: list[int]) -> None:
    """The same set as llama.cpp's, where that set is small. Where it holds thousands of
    tokens of the long tail, llama.cpp's float32 running sum drifts by more than a tail
    token's probability and its edge moves (by 11,000 tokens of 30,000 for top_p 0.999 on the
    "peaked" row): there :func:`_exact_top_p` is the reference."""
    assert ours is not None
    if len(theirs) <= 1000:
        assert sorted(ours.tolist()) == theirs


@pytest.mark.parametrize("name", sorted(ROWS))
@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9, 0.95, 0.99, 0.999])
def test_top_p_keeps_the_nucleus(name: str, top_p: float) -> None:
    row = ROWS[name]
    _, ids, _ = _ours(row, top_p=top_p)
    assert ids is not None
    assert sorted(ids.tolist()) == _exact_top_p(row, top_p)
    _assert_same_tokens(ids, _llama_filtered(row, top_p=top_p))


@pytest.mark.parametrize("name", sorted(ROWS))
@pytest.mark.parametrize("min_p", [0.01, 0.05, 0.2, 0.9])
def test_min_p_alone_and_after_top_p(name: str, min_p: float) -> None:
    row = ROWS[name]
    _, ids, _ = _ours(row, min_p=min_p)
    _assert_same_tokens(ids, _llama_filtered(row, min_p=min_p))
    _, ids, _ = _ours(row, top_p=0.95, min_p=min_p)
    _assert_same_tokens(ids, _llama_filtered(row, top_p=0.95, min_p=min_p))


def test_bias_and_penalties_change_the_logits_as_llama_cpp_does() -> None:
    row = ROWS["peaked"]
    top = np.argsort(-row)[:10].tolist()
    bias = {top[0]: -100.0, top[1]: 3.5, 17: 50.0}
    history = (top[2], top[2], top[3], 17, 99) * 20  # longer than the look-back window
    kw = dict(bias=bias, history=history, freq=0.7, presence=0.4, top_p=0.9)
    expected = _llama_filtered(row, **kw)  # type: ignore[arg-type]
    _, ids, kept = _ours(row, logit_bias=bias, frequency_penalty=0.7, presence_penalty=0.4,
                         top_p=0.9, history=history)
    assert ids is not None
    got = zip(ids.tolist(), np.round(kept.astype(float), 3).tolist(), strict=True)
    assert sorted(got) == expected
    assert 17 in ids.tolist()  # +50 made it the favourite, penalties or not
    assert row[top[0]] == ROWS["peaked"][top[0]]  # the row itself is never written


def _frequencies(sampler: LogitsSampler, n: int) -> np.ndarray:
    counts = np.zeros(sampler._n_vocab)
    for _ in range(n):
        counts[sampler.sample(0)] += 1
    return counts / n


@pytest.mark.parametrize("vocab", [6, 49_152, N_VOCAB])  # small, by blocks, draw_softmax
def test_draws_follow_softmax_over_temperature(vocab: int) -> None:
    logits = np.full(vocab, -30.0, dtype=np.float32)
    logits[[0, 3, vocab - 1]] = [1.0, 2.0, 0.5]  # three tokens hold the mass; one last
    temperature = 0.7
    z = np.exp((logits - logits.max()) / temperature)
    expected = z / z.sum()
    got = _frequencies(LogitsSampler(lambda _i: logits, vocab, temperature=temperature,
                                     seed=3), 6000)
    for tok in (0, 3, vocab - 1):
        assert abs(got[tok] - expected[tok]) < 0.02, (tok, got[tok], expected[tok])
    assert got.sum() == pytest.approx(1.0)


def test_a_seed_repeats_its_draws_and_another_seed_does_not() -> None:
    row = ROWS["flat"]

    def run(seed: int) -> list[int]:
        s = LogitsSampler(lambda _i: row, N_VOCAB, temperature=1.0, top_p=0.99, seed=seed)
        return [s.sample(0) for _ in range(30)]

    assert run(11) == run(11)
    assert run(11) != run(12)


def test_zero_temperature_with_penalties_is_greedy_after_them() -> None:
    row = ROWS["peaked"]
    best, second = np.argsort(-row)[:2].tolist()
    gap = float(row[best] - row[second])
    s = LogitsSampler(lambda _i: row, N_VOCAB, temperature=0.0, presence_penalty=gap + 1.0)
    assert s.sample(0) == best
    assert s.sample(0) == second  # the favourite is now penalised below the runner-up


def test_greedy_sampler_restores_the_row() -> None:
    row = ROWS["peaked"].copy()
    best = int(row.argmax())
    g = GreedySampler(lambda _i: row, N_VOCAB, {best: -100.0})
    assert g.sample(0) != best
    assert np.array_equal(row, ROWS["peaked"])



def test_the_medium_row_makes_sets_worth_comparing() -> None:
    """The comparisons with llama.cpp above are not all of single tokens."""
    sizes = [len(_llama_filtered(ROWS["medium"], top_p=p)) for p in (0.5, 0.9)]
    sizes += [len(_llama_filtered(ROWS["medium"], min_p=m)) for m in (0.01, 0.05, 0.2)]
    assert all(10 <= n <= 1000 for n in sizes), sizes


# ---- draw_softmax: exact draws from the whole vocabulary, exp only near the best ----

def _real_looking(vocab: int, seed: int) -> np.ndarray:
    """Shaped like gemma-3-270m's rows at T = 1 (measured: logits spread with a standard
    deviation of about 3.3, a few dozen tokens within 4 nats of the best), so the tokens more
    than 11 nats below the best hold a few percent of the mass: a truncating draw would show."""
    rng = np.random.default_rng(seed)
    row = rng.normal(0, 3.3, vocab).astype(np.float32)
    row[rng.choice(vocab, 20, replace=False)] += rng.uniform(4, 9, 20).astype(np.float32)
    return row


def _groups(row: np.ndarray, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """Each token's group by how far below the best it is (in units of T: the best token, then
    [0, 2), [2, 5), [5, 9), [9, 12), [12, 16) and 16 nats or more), and each group's exact
    probability under softmax(row / T), in float64."""
    d = (float(row.max()) - row.astype(np.float64)) / temperature
    group = np.digitize(d, [1e-12, 2, 5, 9, 12, 16])
    group[int(row.argmax())] = 0
    p = np.exp(-d)
    p /= p.sum()
    return group, np.bincount(group, weights=p, minlength=7)


@pytest.mark.parametrize("vocab", [49_152, N_VOCAB])  # SmolLM2's and gemma-3's
@pytest.mark.parametrize("shape", ["real-looking", "flat", "peaked", "tail-heavy"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_draw_softmax_follows_the_exact_distribution(vocab: int, shape: str,
                                                     temperature: float) -> None:
    """The draws' total-variation distance from softmax(x / T), over groups of tokens by how
    far below the best they lie, is within sampling noise (seeded: the same every run); and
    the far tail, which a truncation to the head would drop, gets its share."""
    if shape == "real-looking":
        row = _real_looking(vocab, seed=vocab)
    elif shape == "tail-heavy":  # one best token; the rest 11.5 T below it, past any cut
        row = np.full(vocab, -11.5 * temperature, dtype=np.float32)
        row[vocab // 3] = 0.0
    else:
        src = ROWS[shape]
        row = np.resize(src, vocab).astype(np.float32)
    group, expected = _groups(row, temperature)
    rng = np.random.Generator(np.random.PCG64(5))
    n, hint = 2500, 1.0
    counts = np.zeros(7)
    for _ in range(n):
        token, hint = draw_softmax(row, temperature, rng, hint)
        counts[group[token]] += 1
    got = counts / n
    tv = 0.5 * float(np.abs(got - expected).sum())
    # E[TV] of n draws over k groups is at most sum(sqrt(p (1 - p) / n)) / 2; allow 3x that
    noise = 0.5 * float(np.sqrt(expected * (1 - expected) / n).sum())
    assert tv <= 3 * noise + 1e-9, (tv, noise, got.round(4), expected.round(4))
    far = expected[4:].sum()  # 9 nats or more below the best
    if far > 0.01:
        assert got[4:].sum() > far / 2  # the tail is drawn from, not cut off


def test_draw_softmax_is_exact_whatever_the_hint() -> None:
    """The hint moves the cut (the cost), never the distribution: a hint far too small (a cut
    deep in the vocabulary) and one far too large (a cut above most of the mass) give draws
    with the same distribution as the exact one."""
    row = _real_looking(N_VOCAB, seed=3)
    group, expected = _groups(row, 1.0)
    for hint in (1.0, 1e4):
        rng = np.random.Generator(np.random.PCG64(9))
        counts = np.zeros(7)
        for _ in range(2000):
            token, _ = draw_softmax(row, 1.0, rng, hint)
            counts[group[token]] += 1
        noise = 0.5 * float(np.sqrt(expected * (1 - expected) / 2000).sum())
        assert 0.5 * np.abs(counts / 2000 - expected).sum() <= 3 * noise, hint


def test_draw_softmax_repeats_itself_for_a_seed() -> None:
    row = _real_looking(N_VOCAB, seed=1)

    def run(seed: int) -> list[int]:
        s = LogitsSampler(lambda _i: row, N_VOCAB, temperature=1.0, seed=seed)
        return [s.sample(0) for _ in range(40)]

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_bias_and_penalties_leave_the_row_as_it_was() -> None:
    """logit_bias and the penalties are written into the logits row for the draw and put
    back: the row is llama.cpp's buffer, which logprobs and other readers see."""
    row = ROWS["peaked"].copy()
    best = int(row.argmax())
    s = LogitsSampler(lambda _i: row, N_VOCAB, temperature=1.0, presence_penalty=1.5,
                      logit_bias={best: -100.0, 5: 2.0})
    drawn = [s.sample(0) for _ in range(50)]
    assert best not in drawn  # banned, in every draw
    assert np.array_equal(row, ROWS["peaked"])
