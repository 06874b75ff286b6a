"""The runner's greedy fast path picks exactly what llama.cpp's own greedy sampler chain picks,
on a real model in this process (the tiny GGUF), with and without logit_bias."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hearth.engine.runner import GreedySampler, LlamaRunner, RunnerConfig, Segment
from hearth.scheduler.messages import Sampling

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def runner(tiny_model_path: Path) -> LlamaRunner:
    r = LlamaRunner(RunnerConfig(str(tiny_model_path), n_slots=1, n_ctx_slot=256, n_threads=1))
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
            params = Sampling(temperature=0, logit_bias=bias)
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


def test_penalties_and_temperature_use_the_chain(runner: LlamaRunner) -> None:
    assert not isinstance(runner.sampler(Sampling(temperature=0, presence_penalty=1.0), 0),
                          GreedySampler)
    assert not isinstance(runner.sampler(Sampling(temperature=0.7), 0), GreedySampler)


def test_a_huge_top_k_keeps_every_token(runner: LlamaRunner) -> None:
    """top_k may be any int64 on the wire; llama.cpp takes a C int. 2**32 + 1 must not turn
    into top_k=1 (greedy): beyond the vocabulary it is no filter at all."""
    prompt = runner.tokenize("Once upon a time")
    runner.forget(0)
    row = runner.decode([Segment(0, prompt, 0, True)])[0]
    huge = {runner.chain_sampler(Sampling(temperature=5.0, top_k=2**32 + 1), seed=s).sample(row)
            for s in range(40)}
    assert len(huge) > 1  # a top_k of 1 would give one token whatever the seed
