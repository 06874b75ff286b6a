"""One streamed request, 128 tokens, greedy: hearth vs the raw engine, measured in the same run.

    .venv/bin/python bench/single_stream.py [--tokens 128] [--runs 3] [--threads N]

Baseline: the same model, prompt, thread count and greedy sampling decoded in-process with
llama-cpp-python's low-level API (one sequence, no server). hearth: ``hearth serve`` started as
a subprocess, one streaming request at a time over HTTP. End-of-generation tokens are biased
away in both so every run makes exactly --tokens tokens. Prints decode tokens/s (after the
first token) of each and the ratio, alternating runs so machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_model, eog_tokens, hearth_server, raw_engine, render
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID
from load import stream_one

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18765)
    args = ap.parse_args()
    path = bench_model()
    banned = eog_tokens(path)
    prompt = render(path, PROMPT)
    raw, served, ttfts = [], [], []
    with hearth_server(path.parent, args.port, "--threads", str(args.threads)):
        stream_one(args.port, PROMPT, 8, banned)  # warm-up
        for _ in range(args.runs):
            total, first = raw_engine(path, [prompt], args.tokens, args.threads, banned)
            raw.append((args.tokens - 1) / (total - first))
            res = stream_one(args.port, PROMPT, args.tokens, banned)
            assert res.tokens == args.tokens, f"hearth made {res.tokens} tokens"
            served.append((args.tokens - 1) / sum(res.gaps))
            ttfts.append(res.ttft)
    r, h = statistics.median(raw), statistics.median(served)
    print(f"model {BENCH_MODEL_ID}, {args.tokens} tokens, greedy, {args.threads} threads, "
          f"median of {args.runs}")
    print(f"{'':<22}{'decode tok/s':>14}")
    print(f"{'raw engine (baseline)':<22}{r:>14.1f}")
    print(f"{'hearth, 1 stream':<22}{h:>14.1f}   ratio {h / r:.3f}   "
          f"TTFT {statistics.median(ttfts) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
