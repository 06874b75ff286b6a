"""What draft positions cost inside one ``llama_decode`` step, in-process (no server).

Four slots hold the same 400-token context; each case decodes one step and rolls it back, so
every case starts from the same cache. Cases: every slot one token; one slot drafting 2 or 8
tokens beside three one-token slots (and 2 extra tokens without logits rows, to tell positions
from rows); every slot drafting 2; one slot alone, without and with 8
drafts. Prints the median step time of ``--repeat`` runs and its ratio to the 4 x 1 step.
scheduler/draft_budget.py's StepCost prices a draft position as a straight line of the step's
positions; this shows where that line holds and where it does not.

    .venv/bin/python bench/draft_step_cost.py [--model gemma-3-270m-q4_k_m] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_model
from hearth.engine.runner import LlamaRunner, Segment
from hearth.tools.model_config import WorkerConfig

CASES: dict[str, list[int]] = {  # draft tokens per slot (the slot's one token comes on top)
    "4 x 1": [0, 0, 0, 0],
    "1 slot + 2 drafts, 3 x 1": [2, 0, 0, 0],
    "1 slot + 2 (no rows), 3 x 1": [-2, 0, 0, 0],
    "1 slot + 8 drafts, 3 x 1": [8, 0, 0, 0],
    "4 x (1 + 2 drafts)": [2, 2, 2, 2],
    "1 slot alone": [0],
    "1 slot alone + 8 drafts": [8],
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gemma-3-270m-q4_k_m")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    path = bench_model().parent / f"{args.model}.gguf"
    runner = LlamaRunner(WorkerConfig(path=str(path), n_slots=4, n_ctx_slot=2048,
                                      n_threads=args.threads))
    prompt = runner.tokenize("def f(x):\n    return x + 1\n" * 40)[:400]
    for seq in range(4):
        runner.decode([Segment(seq, prompt, 0, True)])
    token = prompt[5]
    base = 0.0
    print(f"model {args.model}, threads {args.threads}, medians of {args.repeat}")
    print("| step | positions | ms | / 4 x 1 |")
    print("|---|---|---|---|")
    for name, drafts in CASES.items():
        times = []
        for _ in range(args.repeat):
            # (a negative count: that many extra tokens with no logits rows, as a prefill's)
            segments = [Segment(seq, [token] * (1 + abs(d)), len(prompt), True, d > 0)
                        for seq, d in enumerate(drafts)]
            t0 = time.perf_counter()
            runner.decode(segments)
            times.append(time.perf_counter() - t0)
            for seq in range(len(drafts)):
                runner.forget(seq, len(prompt))  # roll the step back
        ms = statistics.median(times) * 1000
        base = base or ms
        positions = sum(abs(d) for d in drafts) + len(drafts)
        print(f"| {name} | {positions} | {ms:.1f} | {ms / base:.2f} |",
              flush=True)
    runner.close()


if __name__ == "__main__":
    main()
