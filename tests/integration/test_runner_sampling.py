"""The runner's samplers on a real model in this process (the tiny GGUF): the greedy fast path
picks exactly what llama.cpp's own greedy chain picks, with and without logit_bias, and each
request gets the sampler meant for it. (tests/unit/test_sampling.py holds the numpy filters
to llama.cpp's on gemma-sized rows.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hearth.engine.runner import LlamaRunner, Sampler, Segment
from hearth.engine.sampling import GreedySampler, LogitsSampler
from hearth.scheduler.messages import ResolvedSampling
from hearth.tools.model_config import WorkerConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runner(tiny_model_path: Path) -> LlamaRunner:
    r = LlamaRunner(WorkerConfig(path=str(tiny_model_path), n_slots=1, n_ctx_slot=256,
                                 n_threads=1))
    yield r  # type: ignore[misc]
    r.close()


def _logits(runner: LlamaRunner, row: int) -> np.ndarray:
    import llama_cpp as ll

    ptr = ll.llama_get_logits_ith(runner._ctx, row)
    return np.ctypeslib.as_array(ptr, shape=(runner.n_vocab,)).copy()


def test_greedy_fast_path_matches_llama_cpp(runner: LlamaRunner) -> None:
    prompt = runner.tokenize("Once upon a time there was a")
    runner.forget(0)
    rows = runner.decode([Segment(0, prompt, 0, True)])
    pos = len(prompt)
    checked = 0
    for step in range(12):
        row = rows[0]
        logits = _logits(runner, row)
        order = np.argsort(-logits, kind="stable")
        top, second, low = int(order[0]), int(order[1]), int(order[-1])
        cases: list[dict[int, float]] = [
            {},
            {top: -100.0},  # the favourite banned: the runner-up wins
            {low: 100.0},  # the least likely boosted past everything
            {top: -100.0, second: -100.0, 7: 0.5},
            {t: -100.0 for t in order[:20].tolist()},
        ]
        for bias in cases:
            params = ResolvedSampling(temperature=0, logit_bias=bias)
            fast = runner.sampler(params, seed=0)
            assert isinstance(fast, GreedySampler)
            chain = runner.chain_sampler(params, seed=0)
            assert fast.sample(row) == chain.sample(row), (step, bias)
            chain.free()
            checked += 1
        assert np.array_equal(_logits(runner, row), logits)  # the row is left as it was
        rows = runner.decode([Segment(0, [top], pos, True)])
        pos += 1
    assert checked == 60


def test_each_request_gets_its_sampler(runner: LlamaRunner) -> None:
    def kind(**kw: object) -> type:
        return type(runner.sampler(ResolvedSampling(**kw), 0))  # type: ignore[arg-type]

    assert kind(temperature=0) is GreedySampler
    assert kind(temperature=0, logit_bias={3: 5.0}) is GreedySampler
    assert kind(temperature=0, presence_penalty=1.0) is LogitsSampler
    assert kind(temperature=0.7) is LogitsSampler
    assert kind(temperature=0.7, top_p=0.9, min_p=0.05, frequency_penalty=0.2) is LogitsSampler
    assert kind(temperature=0.7, top_k=40) is Sampler  # llama.cpp's partial sort is quick
    assert kind(temperature=0.7, top_k=2**40) is LogitsSampler  # beyond the vocabulary: none


def test_a_seed_gives_the_same_tokens_from_real_logits(runner: LlamaRunner) -> None:
    prompt = runner.tokenize("Once upon a time")
    runner.forget(0)
    row = runner.decode([Segment(0, prompt, 0, True)])[0]
    params = ResolvedSampling(temperature=1.5, top_p=0.95, presence_penalty=0.3)

    def draws(seed: int) -> list[int]:
        s = runner.sampler(params, seed)
        return [s.sample(row) for _ in range(20)]

    assert draws(5) == draws(5)
    assert len(set(draws(5)) | set(draws(6))) > 1


def test_a_huge_top_k_keeps_every_token(runner: LlamaRunner) -> None:
    """top_k may be any int64 on the wire; llama.cpp takes a C int. 2**32 + 1 must not turn
    into top_k=1 (greedy): beyond the vocabulary it is no filter at all."""
    prompt = runner.tokenize("Once upon a time")
    runner.forget(0)
    row = runner.decode([Segment(0, prompt, 0, True)])[0]
    huge_k = ResolvedSampling(temperature=5.0, top_k=2**32 + 1)
    huge = {runner.chain_sampler(huge_k, seed=s).sample(row) for s in range(40)}
    assert len(huge) > 1  # a top_k of 1 would give one token whatever the seed


def test_logits_row_follows_llama_cpp_across_batch_shapes(tiny_model_path: Path) -> None:
    """logits_row keeps a numpy view of llama.cpp's logits buffer between decodes. Batches with
    one, then many, then one row again (llama.cpp may grow and move its output buffer) must
    each read exactly the rows llama_get_logits_ith points at."""
    r = LlamaRunner(WorkerConfig(path=str(tiny_model_path), n_slots=8, n_ctx_slot=64,
                                 n_threads=1))
    try:
        prompt = r.tokenize("Once upon a time")
        for width in (1, 8, 3, 1, 8):
            for seq in range(8):
                r.forget(seq)
            segments = [Segment(seq, prompt, 0, True) for seq in range(width)]
            rows = r.decode(segments)
            assert len(rows) == width
            for seq, index in rows.items():
                view = r.logits_row(index)
                assert view.shape == (r.n_vocab,) and view.dtype == np.float32
                assert np.array_equal(view, _logits(r, index)), (width, seq)
    finally:
        r.close()
