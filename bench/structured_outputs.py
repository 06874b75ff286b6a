"""Tokens/s with a JSON schema's grammar against the same requests without one.

The worker's SlotEngine over a LlamaRunner in this process, on both default models
(smollm2-135m-instruct, 49k tokens; gemma-3-270m, 262k tokens), at 1 and 8 streams: each
round runs the same prompts once free and once under ``response_format`` json_schema's grammar
(converted by api/json_schema.py, as the server does), alternating, and the ratio is of the
medians (``cpu``: the same ratio of tokens per CPU second of this process, which a busy
machine disturbs less than wall time). Also reported: the grammar's time per token (sampling
time per token with the grammar minus without), and per token how many of the sampler's picks
the grammar refused, how often the row was narrowed to the allowed top tokens, and how often
the whole vocabulary was masked. Run from the checkout:

    .venv/bin/python bench/structured_outputs.py [--rounds 3] [--max-tokens 128] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from common import render
from hearth.api.json_schema import schema_grammar
from hearth.engine.grammar import GrammarSampler, InnerSampler
from hearth.engine.runner import LlamaRunner, Segment
from hearth.engine.slots import SlotEngine
from hearth.scheduler.messages import ChatJob, ChatMessage, Grammar, RequestedSampling
from hearth.tools.cli.bootstrap import ensure_default_models
from hearth.tools.model_config import WorkerConfig

SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["people"], "properties": {"people": {
        "type": "array", "items": {
            "type": "object", "required": ["name", "city", "age"],
            "properties": {"name": {"type": "string"}, "city": {"type": "string"},
                           "age": {"type": "integer"}}}}}}
PROMPT = "List ten famous people with the city they lived in and their age, as JSON."


class Runner(LlamaRunner):
    """Keeps the grammar samplers it makes, for their counters."""

    made: list[GrammarSampler]
    repicks: int | None = None  # engine.grammar.REPICKS unless set

    def grammar_sampler(self, inner: InnerSampler, grammar: Grammar,
                        param: str | None = None) -> GrammarSampler:
        sampler = super().grammar_sampler(inner, grammar, param)
        if self.repicks is not None:
            sampler.repicks = self.repicks
        self.made.append(sampler)
        return sampler


def run(runner: Runner, text: str, streams: int, grammar: Grammar | None, max_tokens: int,
        budget: int) -> tuple[float, float, int, float]:
    """(seconds, CPU seconds of this process, completion tokens, sampling seconds) for
    ``streams`` requests at once."""
    eng = SlotEngine(runner, render=lambda job: text, n_slots=streams, n_ctx_slot=1024,
                     token_budget=budget, make_segment=Segment, n_vocab=runner.n_vocab)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(streams):
        eng.admit(ChatJob(f"r{i}", "fe", "k", "m", [ChatMessage("user", PROMPT)],
                          RequestedSampling(temperature=0.0, max_tokens=max_tokens, seed=i),
                          grammar))
    while eng.has_work():
        eng.step()
    return time.perf_counter() - t0, time.process_time() - c0, eng.tokens, eng.sample_s


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--repicks", type=int, help="refused picks before masking the vocabulary "
                    "(default: engine.grammar.REPICKS)")
    args = ap.parse_args()
    cache = Path(os.environ.get("HEARTH_TEST_CACHE") or Path(__file__).parents[1] / ".cache")
    (cache / "models").mkdir(parents=True, exist_ok=True)
    models = ensure_default_models(cache / "models", progress=False)
    grammar = schema_grammar(SCHEMA)
    levels = [int(s) for s in args.streams.split(",")]
    print(f"{args.rounds} rounds, greedy, max_tokens {args.max_tokens}, {args.threads} threads; "
          "tokens/s: median of rounds")
    print(f"{'model':<24}{'streams':>8}{'free tok/s':>12}{'schema tok/s':>14}{'ratio':>7}{'cpu':>6}"
          f"{'tokens free/schema':>20}{'grammar ms/token':>18}{'refused':>9}{'narrowed':>9}"
          f"{'masked':>8}")
    for path in models:
        runner = Runner(WorkerConfig(path=str(path), n_slots=max(levels), n_ctx_slot=1024,
                                     n_batch=512, n_threads=args.threads))
        runner.made = []
        runner.repicks = args.repicks
        text = render(path, [{"role": "user", "content": PROMPT}])
        try:
            for streams in levels:
                run(runner, text, streams, grammar, 8, 512)  # warm-up (and the byte table)
                rate: dict[bool, list[float]] = {False: [], True: []}
                cpu_rate: dict[bool, list[float]] = {False: [], True: []}
                toks: dict[bool, int] = {False: 0, True: 0}
                samp: dict[bool, float] = {False: 0.0, True: 0.0}
                runner.made = []
                for _ in range(args.rounds):
                    for constrained in (False, True):
                        secs, cpu, n, sample_s = run(runner, text, streams,
                                                     grammar if constrained else None,
                                                     args.max_tokens, 512)
                        rate[constrained].append(n / secs)
                        cpu_rate[constrained].append(n / cpu)
                        toks[constrained] += n
                        samp[constrained] += sample_s
                free, schema = (statistics.median(rate[c]) for c in (False, True))
                cpu_ratio = (statistics.median(cpu_rate[True])
                             / statistics.median(cpu_rate[False]))
                per_token = (samp[True] / max(toks[True], 1)
                             - samp[False] / max(toks[False], 1)) * 1000
                tokens = sum(s.tokens for s in runner.made)
                refused = sum(s.checks - s.tokens for s in runner.made)  # picks refused
                masks = sum(s.masks for s in runner.made)
                narrowed = sum(s.narrowed for s in runner.made)
                print(f"{path.stem:<24}{streams:>8}{free:>12.1f}{schema:>14.1f}"
                      f"{schema / free:>7.2f}{cpu_ratio:>6.2f}"
                      f"{toks[False] // args.rounds:>11}/{toks[True] // args.rounds:<8}"
                      f"{per_token:>18.3f}{refused / max(tokens, 1):>9.1%}"
                      f"{narrowed / max(tokens, 1):>9.1%}{masks / max(tokens, 1):>8.1%}",
                      flush=True)
        finally:
            runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
