"""Tokens/s of chat requests offering tools against the same requests without them.

The worker's SlotEngine over a LlamaRunner in this process (bench/structured_outputs.py's
harness), on both default models at 1 and 8 streams: each round runs the same user message
once plain (no tools, no grammar) and once offering a weather tool as the server does it —
hearth's tool plan for the model's template (both default models' templates have no tool
support: the generic family, tools described in the system message, the answer held to the
JSON envelope by a grammar), ``tool_choice`` as given — alternating; tokens/s is completion
tokens over the requests' wall time (prefill of the longer prompt included), the ratio of the
medians, and ``cpu`` the same ratio per CPU second of this process. Also: completion tokens
per round each way, and the grammar's time per token (sampling time per token with tools
minus without). Run from the checkout:

    .venv/bin/python bench/tool_calls.py [--rounds 3] [--max-tokens 128] [--threads N]
        [--tool-choice auto|required]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from hearth.api import openai_types
from hearth.api.tool_calling import generic_messages, plan_tools
from hearth.api.tool_families import Family
from hearth.engine.templates import template_for
from hearth.scheduler.messages import Grammar
from hearth.tools.cli.bootstrap import ensure_default_models
from hearth.tools.gguf_header import read_gguf_metadata
from hearth.tools.model_config import WorkerConfig
from structured_outputs import Runner, run

PROMPT = "What is the weather like in Paris, Rome and Oslo today?"
WEATHER: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}


def prompts(path: Path, choice: str) -> tuple[str, str, Grammar | None]:
    """(the plain prompt, the prompt with tools, the tools' grammar) as the server makes them
    for this model (api/tool_calling.py: the family from its template)."""
    info = read_gguf_metadata(path)
    template = template_for(info.architecture or "", info.chat_template)
    body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}],
            "tools": [WEATHER], "tool_choice": choice}
    req = openai_types.parse_chat_request(json.dumps(body).encode())
    messages = openai_types.chat_messages(req)
    plan = plan_tools(req, messages, info.chat_template)
    if plan.family is not Family.GENERIC:
        raise SystemExit(f"{path.stem}: this bench renders the generic family only "
                         f"({plan.family.value})")
    return (template.render(messages), template.render(generic_messages(plan, messages, req)),
            plan.grammar)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--streams", default="1,8")
    ap.add_argument("--tool-choice", default="auto", choices=("auto", "required"))
    args = ap.parse_args()
    cache = Path(os.environ.get("HEARTH_TEST_CACHE") or Path(__file__).parents[1] / ".cache")
    (cache / "models").mkdir(parents=True, exist_ok=True)
    models = ensure_default_models(cache / "models", progress=False)
    levels = [int(s) for s in args.streams.split(",")]
    print(f"{args.rounds} rounds, greedy, max_tokens {args.max_tokens}, {args.threads} threads, "
          f"tool_choice {args.tool_choice}; tokens/s: median of rounds")
    print(f"{'model':<24}{'streams':>8}{'plain tok/s':>12}{'tools tok/s':>13}{'ratio':>7}"
          f"{'cpu':>6}{'tokens plain/tools':>20}{'grammar ms/token':>18}")
    for path in models:
        plain_text, tools_text, grammar = prompts(path, args.tool_choice)
        runner = Runner(WorkerConfig(path=str(path), n_slots=max(levels), n_ctx_slot=1024,
                                     n_batch=512, n_threads=args.threads))
        runner.made = []
        try:
            for streams in levels:
                run(runner, tools_text, streams, grammar, 8, 512)  # warm-up (the byte table)
                rate: dict[bool, list[float]] = {False: [], True: []}
                cpu_rate: dict[bool, list[float]] = {False: [], True: []}
                toks = {False: 0, True: 0}
                samp = {False: 0.0, True: 0.0}
                for _ in range(args.rounds):
                    for tools in (False, True):
                        secs, cpu, n, sample_s = run(
                            runner, tools_text if tools else plain_text, streams,
                            grammar if tools else None, args.max_tokens, 512)
                        rate[tools].append(n / secs)
                        cpu_rate[tools].append(n / cpu)
                        toks[tools] += n
                        samp[tools] += sample_s
                plain, with_tools = (statistics.median(rate[t]) for t in (False, True))
                cpu_ratio = statistics.median(cpu_rate[True]) / statistics.median(cpu_rate[False])
                per_token = (samp[True] / max(toks[True], 1)
                             - samp[False] / max(toks[False], 1)) * 1000
                print(f"{path.stem:<24}{streams:>8}{plain:>12.1f}{with_tools:>13.1f}"
                      f"{with_tools / plain:>7.2f}{cpu_ratio:>6.2f}"
                      f"{toks[False] // args.rounds:>11}/{toks[True] // args.rounds:<8}"
                      f"{per_token:>18.3f}", flush=True)
        finally:
            runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
