"""``n`` choices in one request against n separate requests with the same prompt.

    .venv/bin/python bench/choices.py [--n 4] [--runs 5] [--max-tokens 64] [--threads T]

hearth on gemma-3-270m-q4_k_m with ``--parallel`` = n. Each run takes a prompt of about 500
tokens of its own (its first words are the run's, so nothing comes from the prefix cache) and
streams ``/v1/completions`` three ways, in an order that turns every run:

* ``n=1``: one request, one choice — the cost of one prefill and one stream, for reference;
* ``n=N one request``: one request with ``n`` = N, its prompt evaluated once and its KV cache
  copied into the other choices' slots;
* ``N separate``: N concurrent requests with that prompt, one choice each (hearth's admission
  already lets requests that arrive together with one long prefix wait for the first to
  evaluate it and copy it, so these should cost about the same; without that, N prefills).

Every choice samples (temperature 1, a seed per choice) ``--max-tokens`` tokens exactly: the
end-of-sequence tokens are biased away. Reported, medians over the runs: time to the first
token of the first choice and of the last choice to start (``TTFT first`` / ``TTFT all``), and
the total time; then the ratios of the one request to the separate requests and to ``n=1``.
Each run's line also gives the worker's own accounting for that request (from /metrics: steps,
seconds in decode, sampling and overhead), which tells the engine's cost from the server's.
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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import KEY, bench_model, engine_times, hearth_server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID

TEXT = ("The history of the river town begins with a ferry, a mill and a market that met every "
        "week under the old elm. Over the years the ferry became a bridge, the mill a school, "
        "and the market a square where the town still gathers on summer evenings. ")
HEADERS = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}


def post(port: int, path: str, body: dict) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", path, json.dumps(body), HEADERS)
        resp = conn.getresponse()
        doc: dict = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {doc}")
        return doc
    finally:
        conn.close()


def stream(port: int, body: dict, t0: float, first: dict[int, float], offset: int = 0) -> int:
    """Stream one completion; record each choice's first-token time (seconds after ``t0``,
    under key ``offset + index``). Returns the request's completion tokens (its usage)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/completions", json.dumps(
            {**body, "stream": True, "stream_options": {"include_usage": True}}), HEADERS)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()!r}")
        tokens = 0
        for line in resp:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                if choice["text"] and offset + choice["index"] not in first:
                    first[offset + choice["index"]] = time.perf_counter() - t0
        return tokens
    finally:
        conn.close()


Way = Callable[[int, dict, int], tuple[dict[int, float], float, int]]


def one_request(port: int, body: dict, n: int) -> tuple[dict[int, float], float, int]:
    first: dict[int, float] = {}
    t0 = time.perf_counter()
    tokens = stream(port, {**body, "n": n}, t0, first)
    return first, time.perf_counter() - t0, tokens


def separate(port: int, body: dict, n: int) -> tuple[dict[int, float], float, int]:
    first: dict[int, float] = {}
    counts: list[int] = []
    t0 = time.perf_counter()
    threads = [threading.Thread(target=lambda i=i: counts.append(stream(
        port, {**body, "seed": body["seed"] + i}, t0, first, offset=i))) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return first, time.perf_counter() - t0, sum(counts)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18782)
    args = ap.parse_args()
    path = bench_model()
    n = args.n
    ways: dict[str, tuple[Way, int]] = {"n=1": (one_request, 1),
                                        f"n={n} one request": (one_request, n),
                                        f"{n} separate": (separate, n)}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in ways}
    prompt_tokens = 0
    with hearth_server(path.parent, args.port, "--parallel", str(n), "--threads",
                       str(args.threads), "--ctx-size", str(1024)):
        ends = post(args.port, "/v1/tokenize", {"model": BENCH_MODEL_ID,
                                                "content": "<eos><end_of_turn>"})["tokens"]
        bias = {str(t): -100 for t in ends}
        post(args.port, "/v1/completions", {"model": BENCH_MODEL_ID, "prompt": "warm-up",
                                            "max_tokens": 2})
        names = list(ways)
        for run in range(args.runs):
            order = names[run % len(names):] + names[:run % len(names)]
            for name in order:
                fn, choices = ways[name]
                prompt = f"{name} run {run}: " + TEXT * 10
                body = {"model": BENCH_MODEL_ID, "prompt": prompt, "max_tokens": args.max_tokens,
                        "temperature": 1.0, "seed": 1000 * run, "logit_bias": bias}
                before = engine_times(args.port)
                first, total, tokens = fn(args.port, body, choices)
                time.sleep(1.5)  # the worker's stats reach /metrics through the scheduler
                after = engine_times(args.port)
                spent = {k: after[k] - before[k] for k in after}
                assert tokens == choices * args.max_tokens, (name, tokens)
                assert len(first) == choices, (name, first)
                results[name].append((min(first.values()), max(first.values()), total))
                print(f"run {run} {name:<20} TTFT first {min(first.values()) * 1000:.0f} ms, "
                      f"all {max(first.values()) * 1000:.0f} ms, total {total * 1000:.0f} ms; "
                      f"worker: {spent['steps']:.0f} steps, decode {spent['decode']:.1f} s, "
                      f"sample {spent['sample']:.1f} s, overhead {spent['overhead']:.1f} s",
                      flush=True)
        prompt_tokens = post(args.port, "/v1/tokenize", {"model": BENCH_MODEL_ID,
                                                         "content": TEXT * 10,
                                                         "add_special": True})["tokens"]
    print(f"\nmodel {BENCH_MODEL_ID}, a prompt of ~{len(prompt_tokens)} tokens, "
          f"{args.max_tokens} tokens per choice, temperature 1, --parallel {n}, "
          f"--threads {args.threads}, medians of {args.runs} runs")
    print(f"{'way':<20}{'TTFT first':>11}{'TTFT all':>10}{'total':>9}   fastest: "
          f"{'TTFT all':>8}{'total':>9}")
    med: dict[str, tuple[float, float, float]] = {}
    low: dict[str, tuple[float, float]] = {}  # the least disturbed run's (a shared machine)
    for name, rows in results.items():
        med[name] = (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows),
                     statistics.median(r[2] for r in rows))
        low[name] = (min(r[1] for r in rows), min(r[2] for r in rows))
        a, b, c = med[name]
        print(f"{name:<20}{a * 1000:>9.0f}ms{b * 1000:>8.0f}ms{c * 1000:>7.0f}ms"
              f"{low[name][0] * 1000:>17.0f}ms{low[name][1] * 1000:>7.0f}ms")
    for other in (f"{n} separate", "n=1"):
        one, base = med[f"n={n} one request"], med[other]
        fast, fast_base = low[f"n={n} one request"], low[other]
        print(f"one request / {other:<10}: medians TTFT all {one[1] / base[1]:.2f}, total "
              f"{one[2] / base[2]:.2f}; fastest TTFT all {fast[0] / fast_base[0]:.2f}, total "
              f"{fast[1] / fast_base[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
