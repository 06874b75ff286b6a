"""A completions request with a list of prompts against the same prompts sent as separate
concurrent requests.

    .venv/bin/python bench/completions_prompts.py [--prompts 4] [--runs 5] [--max-tokens 32]

hearth on gemma-3-270m-q4_k_m with ``--parallel`` = the number of prompts. Each run sends the
prompts (about 100 tokens each, greedy, ``max_tokens`` each) once as one ``/v1/completions``
request with ``prompt`` a list, and once as one request per prompt, all at once, alternating
which goes first. Every run's prompts start with a word of their own, so nothing comes from the
prefix cache. Reported: the median wall time of each way and their ratio (one request /
separate requests): a list of prompts runs as one job per prompt through the same queue and
batching, so the ratio should be about 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import KEY, bench_model, hearth_server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID

TEXT = ("The history of the river town begins with a ferry, a mill and a market that met every "
        "week under the old elm. Over the years the ferry became a bridge, the mill a school, ")


def complete(port: int, prompt: str | list[str], max_tokens: int) -> dict:
    body = {"model": BENCH_MODEL_ID, "prompt": prompt, "temperature": 0,
            "max_tokens": max_tokens}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/completions", json.dumps(body),
                     {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        doc: dict = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {doc}")
        return doc
    finally:
        conn.close()


def one_request(port: int, prompts: list[str], max_tokens: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    doc = complete(port, prompts, max_tokens)
    return time.perf_counter() - t0, doc["usage"]["completion_tokens"]


def separate(port: int, prompts: list[str], max_tokens: int) -> tuple[float, int]:
    docs: list[dict] = []
    threads = [threading.Thread(target=lambda p=p: docs.append(complete(port, p, max_tokens)))
               for p in prompts]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, sum(d["usage"]["completion_tokens"] for d in docs)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18781)
    args = ap.parse_args()
    path = bench_model()
    times: dict[str, list[float]] = {"one request": [], "separate": []}
    with hearth_server(path.parent, args.port, "--parallel", str(args.prompts), "--threads",
                       str(args.threads), "--ctx-size", "1024"):
        complete(args.port, "warm-up", 2)
        for run in range(args.runs):
            order = [("one request", one_request), ("separate", separate)]
            if run % 2:
                order.reverse()
            for name, fn in order:
                prompts = [f"{name} {run} {i}: {TEXT * 2}" for i in range(args.prompts)]
                wall, tokens = fn(args.port, prompts, args.max_tokens)
                assert tokens == args.prompts * args.max_tokens, tokens
                times[name].append(wall)
    one, sep = (statistics.median(times[k]) for k in ("one request", "separate"))
    print(f"model {BENCH_MODEL_ID}, {args.prompts} prompts of ~100 tokens, {args.max_tokens} "
          f"tokens each, greedy, --parallel {args.prompts}, medians of {args.runs}")
    print(f"one request with a list of prompts: {one * 1000:.0f} ms")
    print(f"separate concurrent requests:       {sep * 1000:.0f} ms")
    print(f"ratio one/separate: {one / sep:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
