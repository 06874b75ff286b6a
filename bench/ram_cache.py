"""More conversations than slots, taking turns: what the host-RAM prompt cache saves.

    .venv/bin/python bench/ram_cache.py [--conversations 8] [--parallel 4] [--turns 3]
                                        [--repeat 3] [--threads T] [--cache-ram 512]

``--conversations`` apps each hold one conversation (its own ~300-token system prompt) and speak
one request at a time, in turn, over ``--parallel`` slots: every turn finds its conversation
pushed out of its slot by the ones in between. Each turn adds the answer and one new user
message. The same run serves the same turns with ``--cache-ram`` on and with it off (0), each
in a fresh server, ``--repeat`` times in alternation. Reported per mode: time to first token
(TTFT, streamed) of the first turns (cold: nothing cached anywhere) and of the later turns,
medians over every turn and repeat, the later/cold ratio, and the share of the later turns'
prompt tokens that was cached (``usage.prompt_tokens_details.cached_tokens``). The issue's
target (issue 21): later/cold ≤ 0.3 with the cache, ≥ 0.8 without it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_model, hearth_server, stream_chat
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID

TOPICS = ["gardening", "a Python project", "travel plans", "a novel", "a budget", "music",
          "cooking", "running", "chess", "a bicycle", "taxes", "a wedding"]
SYSTEM = ("You are app {n}, and you help with {topic}. Answer in plain words, keep to the "
          "point, and say so when unsure about {topic}. ") * 8


def run_turns(port: int, conversations: int, turns: int,
              max_tokens: int) -> list[tuple[int, float, int, int]]:
    """Every conversation's turns, round robin, one request at a time. Returns (turn, TTFT,
    prompt tokens, cached tokens) per request."""
    convs = [[{"role": "system", "content": SYSTEM.format(n=n, topic=TOPICS[n % len(TOPICS)])},
              {"role": "user", "content": f"Where do I start with {TOPICS[n % len(TOPICS)]}?"}]
             for n in range(conversations)]
    rows = []
    for turn in range(turns):
        for conv in convs:
            ttft, answer, usage = stream_chat(port, BENCH_MODEL_ID, conv, max_tokens)
            rows.append((turn, ttft, usage["prompt_tokens"],
                         usage["prompt_tokens_details"]["cached_tokens"]))
            conv += [{"role": "assistant", "content": answer},
                     {"role": "user", "content": f"Thanks. And then, step {turn + 2}?"}]
    return rows


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--conversations", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--turns", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--cache-ram", default="512", help="MiB for the 'on' mode")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18790)
    args = ap.parse_args()
    path = bench_model()
    rows: dict[str, list[tuple[int, float, int, int]]] = {"on": [], "off": []}
    for rep in range(args.repeat):
        for mode, cache_ram in (("on", args.cache_ram), ("off", "0")):
            with hearth_server(path.parent, args.port, "--parallel", str(args.parallel),
                               "--threads", str(args.threads), "--ctx-size", "2048",
                               "--cache-ram", cache_ram):
                hi = [{"role": "user", "content": "hi"}]
                stream_chat(args.port, BENCH_MODEL_ID, hi, 2)  # warm-up
                got = run_turns(args.port, args.conversations, args.turns, args.max_tokens)
            rows[mode] += got
            later = [r for r in got if r[0] > 0]
            print(f"repeat {rep + 1} cache {mode:>3}: cold TTFT p50 "
                  f"{statistics.median(r[1] for r in got if r[0] == 0) * 1000:.0f} ms, later "
                  f"{statistics.median(r[1] for r in later) * 1000:.0f} ms", flush=True)
    print(f"\nmodel {BENCH_MODEL_ID}, {args.conversations} conversations taking turns over "
          f"{args.parallel} slots, one request at a time, {args.turns} turns, "
          f"{args.max_tokens} tokens per answer, {args.repeat} repeats, --threads {args.threads}")
    print(f"{'cache':<10}{'cold TTFT p50':>15}{'later TTFT p50':>16}{'later/cold':>12}"
          f"{'later cached':>14}")
    p50 = {}
    for mode, label in (("on", f"{args.cache_ram} MiB"), ("off", "off")):
        cold = statistics.median(r[1] for r in rows[mode] if r[0] == 0)
        later_rows = [r for r in rows[mode] if r[0] > 0]
        later = statistics.median(r[1] for r in later_rows)
        share = sum(r[3] for r in later_rows) / sum(r[2] for r in later_rows)
        p50[mode] = later
        print(f"{label:<10}{cold * 1000:>12.0f} ms{later * 1000:>13.0f} ms{later / cold:>12.2f}"
              f"{share:>13.0%}")
    print(f"later turns, cache on / off: {p50['on'] / p50['off']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
