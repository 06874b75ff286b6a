"""Time per sampled token: hearth's samplers against llama.cpp's own sampler chain.

Both sample the same logits rows of the benchmarks' model (gemma-3-270m, 262k tokens), for the
sampling settings clients send most. Run from the checkout:

    .venv/bin/python bench/sampling.py [--rounds 60]

Prints milliseconds per token and slot for each, and the ratio (chain / hearth).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import bench_model, render
from hearth.scheduler.messages import ResolvedSampling

CASES: list[tuple[str, ResolvedSampling]] = [
    ("greedy", ResolvedSampling(temperature=0)),
    ("temperature 1 (OpenAI's default)", ResolvedSampling(temperature=1.0)),
    ("temperature 0.7, top_p 0.9", ResolvedSampling(temperature=0.7, top_p=0.9)),
    ("temp 0.8, top_p 0.95, min_p 0.05", ResolvedSampling(temperature=0.8, top_p=0.95, min_p=0.05)),
    ("temperature 1, min_p 0.05", ResolvedSampling(temperature=1.0, min_p=0.05)),
    ("temperature 1, presence 0.5", ResolvedSampling(temperature=1.0, presence_penalty=0.5)),
    ("greedy, frequency 0.5", ResolvedSampling(temperature=0, frequency_penalty=0.5)),
    ("temperature 1, top_k 40", ResolvedSampling(temperature=1.0, top_k=40)),
]

PROMPTS = [
    [{"role": "user", "content": "Write a short story about a lighthouse keeper."}],
    [{"role": "user", "content": "What is the capital of France? Answer in one word."}],
    [{"role": "user", "content": "def fibonacci(n):"}],
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=60, help="samples per row and sampler")
    args = ap.parse_args()
    from hearth.engine.runner import LlamaRunner, Segment
    from hearth.tools.model_config import WorkerConfig

    path = bench_model()
    runner = LlamaRunner(WorkerConfig(path=str(path), n_slots=len(PROMPTS), n_ctx_slot=512,
                                      n_threads=2))
    try:
        segs = [Segment(i, runner.tokenize(render(path, p)), 0, True)
                for i, p in enumerate(PROMPTS)]
        rows = list(runner.decode(segs).values())  # the first reply token's logits, 3 prompts

        def per_token(make: Callable[[], Any]) -> float:
            times = []
            for row in rows:
                sampler = make()
                for _ in range(3):
                    sampler.sample(row)
                t0 = time.perf_counter()
                for _ in range(args.rounds):
                    sampler.sample(row)
                times.append((time.perf_counter() - t0) / args.rounds)
                sampler.free()
            return statistics.mean(times) * 1000

        print(f"model {path.name}, vocabulary {runner.n_vocab}, {len(rows)} logits rows, "
              f"{args.rounds} samples each; ms per token and slot")
        print(f"{'sampling':<36}{'llama.cpp chain':>16}{'hearth':>9}{'ratio':>7}  hearth uses")
        for name, params in CASES:
            chain = per_token(lambda p=params: runner.chain_sampler(p, 1))
            ours = per_token(lambda p=params: runner.sampler(p, 1))
            kind = type(runner.sampler(params, 1)).__name__
            print(f"{name:<36}{chain:>16.3f}{ours:>9.3f}{chain / ours:>7.1f}  {kind}")
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
