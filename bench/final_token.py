"""The cost and the gain of evaluating a prompt's last token in a step of its own.

    .venv/bin/python bench/final_token.py [--runs 7] [--threads N] [--budget 512]

In this process, the worker's own SlotEngine over a LlamaRunner on gemma-3-270m-q4_k_m, one slot,
one greedy request at a time, cold cache (a new engine each time: admission forgets the slot).
Two engines on the same runner, alternated so machine noise hits both alike:

* baseline: the whole prompt in one batch with the first token sampled from it (hearth before);
* final alone: all but the last token, then the last one in a step of its own (hearth now).

Prints, per prompt length, the fastest time to the first token of each (the least disturbed by
other work on a shared machine; the median beside it) and the ratio of the fastest, then the
largest difference between the first token's logits with a cold cache and with all but the last
prompt token reused from the cache (warm), for each way: the reason for the change.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_model
from hearth.engine.runner import LlamaRunner, Segment
from hearth.engine.slots import SlotEngine
from hearth.scheduler.messages import ChatJob, ChatMessage, RequestedSampling, ResolvedSampling
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID
from hearth.tools.model_config import WorkerConfig

# The prompt (Japanese place names and emoji), and longer ones made of it.
BASE = ("Kyoto 京都 🏯, Nara 奈良 🦌, Sapporo 札幌 ❄️, Fukuoka 福岡 🍜, Sendai 仙台 🌳: "
        "write one line about each.")
LENGTHS = {"short": BASE, "medium": " ".join([BASE] * 5), "long": " ".join([BASE] * 14)}


class FirstLogits:
    """A greedy sampler that records the first row it samples from and when."""

    threaded = False

    def __init__(self, runner: LlamaRunner) -> None:
        self._runner = runner
        self.first: np.ndarray | None = None
        self.at = 0.0

    def sample(self, logits_index: int) -> int:
        row = self._runner.logits_row(logits_index)
        if self.first is None:
            self.first, self.at = row.copy(), time.perf_counter()
        return int(np.argmax(row))

    def free(self) -> None:
        pass


class Runner(LlamaRunner):
    last: FirstLogits | None = None

    def sampler(self, params: ResolvedSampling, seed: int) -> FirstLogits:  # type: ignore[override]
        self.last = FirstLogits(self)
        return self.last


def first_token(engine: SlotEngine[Segment], runner: Runner, text: str) -> tuple[float, np.ndarray]:
    """(seconds from admission to the first sampled token, its logits)."""
    job = ChatJob("r", "fe", "k", "m", [ChatMessage("user", text)],
                  RequestedSampling(temperature=0, max_tokens=1))
    t0 = time.perf_counter()
    engine.admit(job)
    while engine.has_work():
        engine.step()
    assert runner.last is not None and runner.last.first is not None
    return runner.last.at - t0, runner.last.first


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--budget", type=int, default=512, help="prefill tokens per step")
    args = ap.parse_args()
    runner = Runner(WorkerConfig(path=str(bench_model()), n_slots=1, n_ctx_slot=2048,
                                 n_batch=args.budget, n_threads=args.threads))

    def engine(alone: bool) -> SlotEngine[Segment]:
        return SlotEngine(runner, render=lambda job: job.messages[0].content, n_slots=1,
                          n_ctx_slot=2048, token_budget=args.budget, make_segment=Segment,
                          final_token_alone=alone)

    print(f"model {BENCH_MODEL_ID}, one request at a time, cold cache, {args.threads} threads, "
          f"prefill budget {args.budget}, {args.runs} runs each; TTFT: fastest (median)")
    print(f"{'prompt':<8}{'tokens':>7}{'TTFT before':>22}{'TTFT now':>22}{'ratio':>8}"
          f"{'max |cold-warm| before':>24}{'now':>6}")
    try:
        for name, text in LENGTHS.items():
            first_token(engine(True), runner, text)  # warm-up
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.runs):
                for alone in (False, True):
                    times[alone].append(first_token(engine(alone), runner, text)[0])
            gap = {}
            for alone in (False, True):
                eng = engine(alone)
                cold = first_token(eng, runner, text)[1]
                warm = first_token(eng, runner, text)[1]  # the same engine: all but one cached
                gap[alone] = float(np.max(np.abs(cold - warm)))
            shown = {alone: f"{min(t) * 1000:.1f} ({statistics.median(t) * 1000:.1f}) ms"
                     for alone, t in times.items()}
            ratio = min(times[True]) / min(times[False])
            print(f"{name:<8}{len(runner.tokenize(text)):>7}{shown[False]:>22}{shown[True]:>22}"
                  f"{ratio:>8.3f}{gap[False]:>24.4f}{gap[True]:>6.1f}")
    finally:
        runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
