"""The cost of scoring a prompt (completions ``echo`` with ``logprobs``) against evaluating it
plainly.

The worker's SlotEngine over a LlamaRunner in this process, on both default models
(smollm2-135m-instruct, 49k tokens; gemma-3-270m, 262k tokens): each round evaluates the same
prompt of about ``--prompt-tokens`` tokens, with an empty cache, once as a plain completion
(``max_tokens`` 1, no logprobs) and once scored (``echo``, ``logprobs`` 5, ``max_tokens`` 1:
a logits row per prompt position, in prefill chunks of at most engine.slots.SCORING_CHUNK
tokens, each row's log-softmax and top 5), alternating so machine noise hits both alike.
Reported: the median wall milliseconds of each, their ratio, and the ratio in CPU time of this
process (which a busy machine disturbs less). Run from the checkout:

    .venv/bin/python bench/echo_logprobs.py [--rounds 5] [--prompt-tokens 500] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from hearth.engine.prompts import PromptMaker
from hearth.engine.runner import LlamaRunner, Segment
from hearth.engine.slots import SlotEngine
from hearth.scheduler.messages import ChatJob, RawPrompt, RequestedSampling
from hearth.tools.cli.bootstrap import ensure_default_models
from hearth.tools.model_config import WorkerConfig

TOP = 5


def run(runner: LlamaRunner, tokens: list[int], scored: bool) -> tuple[float, float]:
    """(seconds, CPU seconds of this process) to evaluate the prompt and sample one token."""
    eng = SlotEngine(runner, render=lambda job: "", n_slots=1, n_ctx_slot=2048,
                     token_budget=512, make_segment=Segment, n_vocab=runner.n_vocab,
                     prompts=PromptMaker(runner, None))
    runner.forget(0, 0)  # an empty cache for both
    t0, c0 = time.perf_counter(), time.process_time()
    eng.admit(ChatJob("r", "fe", "k", "m", [], RequestedSampling(temperature=0.0, max_tokens=1),
                      prompt=RawPrompt(tokens=tokens, echo=scored),
                      logprobs=TOP if scored else None))
    while eng.has_work():
        eng.step()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=500)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    cache = Path(os.environ.get("HEARTH_TEST_CACHE") or Path(__file__).parents[1] / ".cache")
    (cache / "models").mkdir(parents=True, exist_ok=True)
    models = ensure_default_models(cache / "models", progress=False)
    print(f"{args.rounds} rounds, a {args.prompt_tokens}-token prompt, empty cache, "
          f"{args.threads} threads; ms: median of rounds")
    print(f"{'model':<24}{'plain ms':>10}{'scored ms':>11}{'ratio':>7}{'cpu':>7}")
    for path in models:
        runner = LlamaRunner(WorkerConfig(path=str(path), n_slots=1, n_ctx_slot=2048,
                                          n_batch=512, n_threads=args.threads))
        try:
            words = runner.tokenize("The keeper climbed the stairs of the lighthouse. " * 100)
            tokens = words[:args.prompt_tokens]
            run(runner, tokens, True)  # warm-up
            wall: dict[bool, list[float]] = {False: [], True: []}
            cpu: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for scored in (False, True):
                    secs, c = run(runner, tokens, scored)
                    wall[scored].append(secs * 1000)
                    cpu[scored].append(c)
            plain, scored_ms = (statistics.median(wall[s]) for s in (False, True))
            cpu_ratio = statistics.median(cpu[True]) / statistics.median(cpu[False])
            print(f"{path.stem:<24}{plain:>10.1f}{scored_ms:>11.1f}{scored_ms / plain:>7.2f}"
                  f"{cpu_ratio:>7.2f}")
        finally:
            runner.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
