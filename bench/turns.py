"""Apps taking turns: does each one's conversation stay cached while the others talk?

    .venv/bin/python bench/turns.py [--apps 2] [--turns 4] [--parallel 16] [--threads T]

Several apps hold one conversation each and speak one request at a time, in turn (a chat window
and an editor assistant sharing a local server). From the second turn on, a turn's prompt is
the app's previous prompt plus the answer and a new question, so all but the last few tokens
could come from the prefix cache. For every such turn the same messages are also sent once
"cold" (a first word of its own added, so nothing is cached) in the same run; the ratio of the two
latencies is the point. Reported: latency per turn warm and cold, the share of prompt tokens
reused (``usage.prompt_tokens_details.cached_tokens``) and the median warm/cold ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_model, hearth_server, post
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID

SYSTEMS = [
    "You help with {}. Answer in plain words, keep to the point, and say so when unsure. " * 12,
    "You are a terse assistant inside a code editor, working on {}. Reply briefly. " * 12,
]
TOPICS = ["gardening", "a Python project", "travel plans", "a novel", "a budget", "music"]


def chat(port: int, messages: list[dict[str, str]], max_tokens: int) -> tuple[float, dict]:
    body = {"model": BENCH_MODEL_ID, "messages": messages, "temperature": 0,
            "max_tokens": max_tokens}
    t0 = time.perf_counter()
    doc = post(port, "/v1/chat/completions", body)
    return time.perf_counter() - t0, doc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--apps", type=int, default=2)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--parallel", type=int, default=16)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18780)
    args = ap.parse_args()
    path = bench_model()
    convs = [[{"role": "system", "content": SYSTEMS[a % 2].replace("{}", TOPICS[a % len(TOPICS)])},
              {"role": "user", "content": f"Where do I start with {TOPICS[a % len(TOPICS)]}?"}]
             for a in range(args.apps)]
    rows = []
    with hearth_server(path.parent, args.port, "--parallel", str(args.parallel), "--threads",
                       str(args.threads), "--ctx-size", "2048"):
        chat(args.port, [{"role": "user", "content": "hi"}], 2)  # warm-up
        for turn in range(args.turns):
            for app, conv in enumerate(convs):
                warm_s, doc = chat(args.port, conv, args.max_tokens)
                usage = doc["usage"]
                cold_s = float("nan")
                if turn:
                    # the same messages, with a first word of their own: nothing is cached
                    first = f"Note {turn}.{app}: " + conv[0]["content"]
                    cold = [dict(conv[0], content=first), *conv[1:]]
                    cold_s, _ = chat(args.port, cold, args.max_tokens)
                rows.append((app, turn, warm_s, cold_s, usage["prompt_tokens"],
                             usage["prompt_tokens_details"]["cached_tokens"]))
                answer = doc["choices"][0]["message"]["content"]
                conv += [{"role": "assistant", "content": answer},
                         {"role": "user", "content": f"Thanks. And after that, step {turn + 2}?"}]
    print(f"\nmodel {BENCH_MODEL_ID}, {args.apps} apps taking turns, one request at a time, "
          f"{args.max_tokens} tokens per answer, hearth --parallel {args.parallel}")
    print(f"{'app':>3}{'turn':>5}{'prompt':>8}{'cached':>8}{'warm':>9}{'cold':>9}{'warm/cold':>10}")
    for app, turn, warm_s, cold_s, prompt, cached in rows:
        print(f"{app:>3}{turn:>5}{prompt:>8}{cached:>8}{warm_s * 1000:>7.0f}ms"
              f"{cold_s * 1000:>7.0f}ms{warm_s / cold_s:>10.2f}")
    later = [r for r in rows if r[1] > 0]
    print(f"turns after the first: {sum(r[5] for r in later)} of {sum(r[4] for r in later)} "
          f"prompt tokens cached; median warm/cold latency "
          f"{statistics.median(r[2] / r[3] for r in later):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
