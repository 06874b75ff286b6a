"""The per-token cost of ``top_logprobs=5`` against the same requests without logprobs.

The worker's SlotEngine over a LlamaRunner in this process, on both default models
(smollm2-135m-instruct, 49k tokens; gemma-3-270m, 262k tokens), at 1 and 8 streams: each round
runs the same greedy requests once without logprobs and once with ``top_logprobs`` 5
(``ChatJob.logprobs``, what chat's ``top_logprobs`` and completions' ``logprobs`` become),
alternating so machine noise hits both alike. Reported: wall milliseconds per generated token
(the median of the rounds) of each and their ratio; ``cpu``: the same ratio in CPU time of this
process per token, which a busy machine disturbs less than wall time; and the logprobs' own time
per token (the step's sampling time per token with logprobs minus without: the log-softmax, the
top-k and the entries; wall time); ``own cpu``: the same work timed alone, in CPU time of the
thread that does it (``StepLogprobs.read`` and the entries), per token, and ``share``: that over
the CPU time per token without logprobs — the figure a busy machine disturbs least. Greedy
decoding makes both runs generate the same tokens. This is the engine's side; the api's
formatting of the entries into JSON is not in it. Run from the checkout:

    .venv/bin/python bench/logprobs.py [--rounds 5] [--max-tokens 64] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from collections.abc import Callable
from typing import Any

from common import render
from hearth.engine.logprobs import StepLogprobs
from hearth.engine.runner import LlamaRunner, Segment
from hearth.engine.slots import SlotEngine
from hearth.scheduler.messages import ChatJob, ChatMessage, RequestedSampling
from hearth.tools.cli.bootstrap import ensure_default_models
from hearth.tools.model_config import WorkerConfig

OWN_CPU = [0.0]  # thread CPU seconds spent in the logprobs' own work


def timed(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Any:
        t0 = time.thread_time()
        try:
            return fn(*args)
        finally:
            OWN_CPU[0] += time.thread_time() - t0
    return wrapper


StepLogprobs.read = timed(StepLogprobs.read)  # type: ignore[method-assign]
SlotEngine._logprob_entry = timed(SlotEngine._logprob_entry)  # type: ignore[method-assign]

PROMPT = "Write a short story about a lighthouse keeper and a storm."
TOP = 5


def run(runner: LlamaRunner, text: str, streams: int, logprobs: int | None,
        max_tokens: int) -> tuple[float, float, int, float]:
    """(seconds, CPU seconds of this process, completion tokens, sampling seconds) for
    ``streams`` requests at once."""
    eng = SlotEngine(runner, render=lambda job: text, n_slots=streams, n_ctx_slot=1024,
                     token_budget=512, make_segment=Segment, n_vocab=runner.n_vocab)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(streams):
        eng.admit(ChatJob(f"r{i}", "fe", "k", "m", [ChatMessage("user", PROMPT)],
                          RequestedSampling(temperature=0.0, max_tokens=max_tokens, seed=i),
                          logprobs=logprobs))
    while eng.has_work():
        eng.step()
    return time.perf_counter() - t0, time.process_time() - c0, eng.tokens, eng.sample_s


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--streams", default="1,8")
    args = ap.parse_args()
    cache = Path(os.environ.get("HEARTH_TEST_CACHE") or Path(__file__).parents[1] / ".cache")
    (cache / "models").mkdir(parents=True, exist_ok=True)
    models = ensure_default_models(cache / "models", progress=False)
    levels = [int(s) for s in args.streams.split(",")]
    print(f"{args.rounds} rounds, greedy, max_tokens {args.max_tokens}, {args.threads} threads; "
          "ms/token: median of rounds")
    print(f"{'model':<24}{'streams':>8}{'none ms/tok':>13}{'top5 ms/tok':>13}{'ratio':>7}"
          f"{'cpu':>7}{'logprobs ms/tok':>17}{'own cpu ms/tok':>16}{'share':>7}{'tokens':>8}")
    for path in models:
        runner = LlamaRunner(WorkerConfig(path=str(path), n_slots=max(levels), n_ctx_slot=1024,
                                          n_batch=512, n_threads=args.threads))
        text = render(path, [{"role": "user", "content": PROMPT}])
        try:
            for streams in levels:
                run(runner, text, streams, TOP, 8)  # warm-up
                per_token: dict[bool, list[float]] = {False: [], True: []}
                cpu_per_token: dict[bool, list[float]] = {False: [], True: []}
                samp: dict[bool, float] = {False: 0.0, True: 0.0}
                toks: dict[bool, int] = {False: 0, True: 0}
                OWN_CPU[0] = 0.0
                for _ in range(args.rounds):
                    for asked in (False, True):
                        secs, cpu, n, sample_s = run(runner, text, streams,
                                                     TOP if asked else None, args.max_tokens)
                        per_token[asked].append(secs / max(n, 1) * 1000)
                        cpu_per_token[asked].append(cpu / max(n, 1) * 1000)
                        samp[asked] += sample_s
                        toks[asked] += n
                none, top = (statistics.median(per_token[a]) for a in (False, True))
                cpu_ratio = (statistics.median(cpu_per_token[True])
                             / statistics.median(cpu_per_token[False]))
                own = (samp[True] / max(toks[True], 1) - samp[False] / max(toks[False], 1)) * 1000
                own_cpu = OWN_CPU[0] / max(toks[True], 1) * 1000
                share = own_cpu / statistics.median(cpu_per_token[False])
                print(f"{path.stem:<24}{streams:>8}{none:>13.3f}{top:>13.3f}{top / none:>7.3f}"
                      f"{cpu_ratio:>7.3f}{own:>17.3f}{own_cpu:>16.3f}{share:>7.2%}"
                      f"{toks[True] // args.rounds:>8}", flush=True)
        finally:
            runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
