"""Load harness: N concurrent streaming clients against hearth, vs the raw engine, same run.

    .venv/bin/python bench/load.py [--concurrency 1,4,16] [--tokens 128] [--rounds 1]
            [--mode unique,shared,unique-long] [--parallel P] [--threads T] [--hearth-args ..]

For each concurrency level N, N client threads each stream ``--rounds`` requests of exactly
``--tokens`` tokens (greedy; end-of-generation biased away). Prompt modes: ``unique`` (short,
unique), ``shared`` (a ~500-token system prompt common to all, then a unique question),
``unique-long`` (as long as shared, unique from the first word). Reported per level: aggregate
completion tokens/s over the wall time, TTFT p50/p90/p99, inter-token latency p50/p99 — and the
raw engine (one process, batched llama_decode over N sequences, same model and threads, no
server) on the same prompts, with the ratio hearth / raw.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import KEY, default_model, eog_tokens, hearth_server, raw_engine, render
from hearth.tools.bootstrap import DEFAULT_MODEL_ID

TOPICS = ["a lighthouse", "a city garden", "the sea", "a mountain pass", "a violin maker",
          "a night train", "an old library", "a desert well", "a bakery", "a glacier",
          "a chess club", "a lost key", "a clockmaker", "a river ferry", "a comet", "a market"]
SYSTEM = " ".join(
    f"Rule {i}: answer in plain words, stay kind, cite no sources, and keep every reply focused "
    f"on the question about item {i}." for i in range(20))


@dataclass
class Result:
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str = ""


MODES = ("unique", "shared", "unique-long")


def messages(i: int, mode: str) -> list[dict[str, str]]:
    """unique: a short unique prompt. shared: a ~500-token system prompt common to every
    request, then a unique question. unique-long: the same length as shared, but unique from
    the first word (the baseline the shared-prefix TTFT is compared with)."""
    user = f"Story {i}: write a long story about {TOPICS[i % len(TOPICS)]} (variant {i})."
    if mode == "shared":
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    if mode == "unique-long":
        return [{"role": "system", "content": f"Session {i} of {TOPICS[i % len(TOPICS)]}. "
                 + SYSTEM}, {"role": "user", "content": user}]
    return [{"role": "user", "content": user}]


def stream_one(port: int, msgs: list[dict[str, str]], n_tokens: int,
               banned: list[int]) -> Result:
    body = {"model": DEFAULT_MODEL_ID, "messages": msgs, "stream": True, "temperature": 0,
            "max_tokens": n_tokens, "logit_bias": {str(t): -100 for t in banned},
            "stream_options": {"include_usage": True}}
    res = Result()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    last = 0.0
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            res.error = f"HTTP {resp.status}"
            return res
        while True:
            line = resp.readline()
            if not line:
                break
            if not line.startswith(b"data: {"):
                continue
            now = time.perf_counter()
            if b'"usage":{' in line:
                res.tokens = json.loads(line[6:])["usage"]["completion_tokens"]
            elif b'"content":"' in line:
                if not res.ttft:
                    res.ttft = now - t0
                else:
                    res.gaps.append(now - last)
                last = now
            elif b'"error"' in line:
                res.error = json.loads(line[6:])["error"]["code"] or "error"
    finally:
        conn.close()
    return res


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_level(port: int, n: int, rounds: int, n_tokens: int, mode: str,
              banned: list[int]) -> tuple[float, list[Result]]:
    results: list[Result] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(rounds):
            res = stream_one(port, messages(c + n * r, mode), n_tokens, banned)
            with lock:
                results.append(res)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, results


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--mode", default="unique,shared,unique-long",
                    help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--parallel", type=int, default=0, help="hearth slots (0: max concurrency)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18766)
    ap.add_argument("--no-raw", action="store_true", help="skip the raw-engine baseline")
    ap.add_argument("--hearth-args", default="", help="extra `hearth serve` flags")
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    parallel = args.parallel or max(levels)
    path = default_model()
    banned = eog_tokens(path)
    modes = [m for m in args.mode.split(",") if m]
    if any(m not in MODES for m in modes):
        ap.error(f"--mode takes {', '.join(MODES)}")

    rows = []
    with hearth_server(path.parent, args.port, "--parallel", str(parallel), "--threads",
                       str(args.threads), "--ctx-size", "1024", *args.hearth_args.split()):
        stream_one(args.port, messages(999, "unique"), 4, banned)  # warm-up
        for mode in modes:
            for n in levels:
                wall, results = run_level(args.port, n, args.rounds, args.tokens, mode, banned)
                errors = [r.error for r in results if r.error]
                tokens = sum(r.tokens for r in results)
                raw_tps = float("nan")
                if not args.no_raw:
                    prompts = [render(path, messages(i, mode)) for i in range(n)]
                    raw_s, _ = raw_engine(path, prompts, args.tokens, args.threads, banned)
                    raw_tps = n * args.tokens / raw_s
                ttfts = [r.ttft for r in results if not r.error]
                gaps = [g for r in results for g in r.gaps]
                rows.append((mode, n, tokens / wall, raw_tps, pct(ttfts, 50), pct(ttfts, 90),
                             pct(ttfts, 99), pct(gaps, 50), pct(gaps, 99), len(errors)))

    print(f"\nmodel {DEFAULT_MODEL_ID}, {args.tokens} tokens/request, greedy, {args.threads} "
          f"threads, hearth --parallel {parallel}, {args.rounds} round(s) per client")
    head = (f"{'mode':<7}{'N':>4}{'hearth tok/s':>14}{'raw tok/s':>11}{'ratio':>7}"
            f"{'TTFT p50':>10}{'p90':>7}{'p99':>7}{'ITL p50':>9}{'p99':>7}{'errors':>8}")
    print(head)
    for mode, n, tps, raw, t50, t90, t99, i50, i99, errs in rows:
        print(f"{mode:<7}{n:>4}{tps:>14.1f}{raw:>11.1f}{tps / raw:>7.3f}{t50:>9.2f}s"
              f"{t90:>6.2f}s{t99:>6.2f}s{i50 * 1000:>7.1f}ms{i99 * 1000:>5.0f}ms{errs:>8}")
    for n in levels:
        u = next((r for r in rows if r[0] == "unique-long" and r[1] == n), None)
        s = next((r for r in rows if r[0] == "shared" and r[1] == n), None)
        if u and s:
            print(f"N={n}: TTFT p50 shared 500-token prefix / unique same length: "
                  f"{s[4] / u[4]:.2f}")
    for mode, n, tps, raw, *_ in rows:
        if n == 1 and raw == raw:  # not NaN
            print(f"{mode}: per-token server overhead at N=1 (1/hearth - 1/raw): "
                  f"{(1 / tps - 1 / raw) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
