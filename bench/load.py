"""Load harness: N concurrent streaming clients against hearth, vs the raw engine, same run.

    .venv/bin/python bench/load.py [--concurrency 1,4,16] [--tokens 128] [--rounds 1]
            [--repeat 3] [--mode unique,shared,unique-long] [--parallel P] [--threads T]
            [--hearth-args ..] [--llama-server PATH]

For each concurrency level N, N client threads each stream ``--rounds`` requests of exactly
``--tokens`` tokens (greedy; end-of-generation biased away). Prompt modes: ``unique`` (short,
unique), ``shared`` (a ~500-token system prompt common to all, then a unique question),
``unique-long`` (as long as shared, unique from the first word). Reported per level: aggregate
completion tokens/s over the wall time, TTFT p50/p90/p99, inter-token latency p50/p99 — and the
raw engine (one process, batched llama_decode over N sequences, same model and threads, no
server) on the same prompts, with the ratio hearth / raw. Each level runs ``--repeat`` times,
hearth then the raw engine back to back, and the medians are shown: on a small machine a
single run swings by more than the differences being measured.

With ``--llama-server PATH`` (``scripts/build-llama-server`` prints one), llama.cpp's own server
runs beside hearth with the same slots, context and threads, on the same prompts, between hearth
and the raw engine in every run: its tokens/s, its ratio to the raw engine and its TTFT are
added to the table.

Where the server's own time goes is reported too: the worker's step-loop time outside
llama_decode and sampling per generated token (hearth's ``hearth_engine_seconds_total``
counters), and the CPU time the api and scheduler processes used per token (read from /proc:
on a machine whose cores all run llama.cpp's threads, that CPU is taken from them).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import (
    KEY,
    bench_model,
    engine_times,
    eog_tokens,
    hearth_server,
    llama_server,
    process_tree_cpu,
    raw_engine,
    render,
)
from hearth.tools.cli.bench_report import percentile
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID

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
CTX_SLOT = 1024  # context per slot, for hearth and llama-server


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
               banned: list[int], sampling: dict[str, float] | None = None) -> Result:
    """One streamed chat; ``sampling`` adds request fields (greedy when not given)."""
    body = {"model": BENCH_MODEL_ID, "messages": msgs, "stream": True, "temperature": 0,
            "max_tokens": n_tokens, "logit_bias": {str(t): -100 for t in banned},
            "stream_options": {"include_usage": True}, **(sampling or {})}
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
            elif b'"content":"' in line and b'"content":""' not in line:  # (not the role chunk)
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
    """hearth bench's percentile, NaN for no values (printable in the table)."""
    value = percentile(values, p)
    return float("nan") if value is None else value


def run_level(port: int, n: int, rounds: int, n_tokens: int, mode: str,
              banned: list[int], base: int = 0,
              sampling: dict[str, float] | None = None) -> tuple[float, list[Result]]:
    """N clients, ``rounds`` requests each; prompt numbers start at ``base`` (a new base per
    run keeps earlier runs' prompts out of the prefix cache)."""
    results: list[Result] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for r in range(rounds):
            res = stream_one(port, messages(base + c + n * r, mode), n_tokens, banned,
                             sampling)
            with lock:
                results.append(res)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, results


@dataclass
class Row:
    mode: str
    n: int
    hearth_tps: list[float] = field(default_factory=list)
    raw_tps: list[float] = field(default_factory=list)
    ls_tps: list[float] = field(default_factory=list)  # llama-server's, when measured
    results: list[Result] = field(default_factory=list)
    ls_results: list[Result] = field(default_factory=list)
    overhead_s: float = 0.0  # step-loop time outside decode and sampling
    step_tokens: float = 0.0  # tokens those step loops made
    rest_cpu_s: float = 0.0  # CPU of the api and scheduler processes
    tokens: int = 0

    def ratios(self, tps: list[float] | None = None) -> list[float]:
        """Each run's tok/s (hearth's unless ``tps`` is given) over the raw engine's."""
        runs = self.hearth_tps if tps is None else tps
        return [h / r for h, r in zip(runs, self.raw_tps, strict=False)]


def wait_engine(port: int, before: dict[str, float], tokens: int) -> dict[str, float]:
    """/metrics' step-loop accounting once it includes this level's tokens (workers report
    when they go idle; the api sees it with the scheduler's next status)."""
    deadline = time.monotonic() + 10
    while True:
        now = engine_times(port)
        if now["tokens"] - before["tokens"] >= tokens or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each level, hearth and raw engine alternating; medians shown")
    ap.add_argument("--mode", default="unique,shared,unique-long",
                    help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--parallel", type=int, default=0, help="hearth slots (0: max concurrency)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18766)
    ap.add_argument("--no-raw", action="store_true", help="skip the raw-engine baseline")
    ap.add_argument("--hearth-args", default="", help="extra `hearth serve` flags")
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--llama-server", metavar="PATH",
                    help="also measure llama.cpp's llama-server binary, same settings and run")
    args = ap.parse_args()
    sampling = {"temperature": args.temperature, "top_p": args.top_p}
    levels = [int(x) for x in args.concurrency.split(",")]
    parallel = args.parallel or max(levels)
    path = bench_model()
    banned = eog_tokens(path)
    modes = [m for m in args.mode.split(",") if m]
    if any(m not in MODES for m in modes):
        ap.error(f"--mode takes {', '.join(MODES)}")

    rows: list[Row] = []
    next_base = 0  # every request of the whole run gets its own prompt number
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(hearth_server(
            path.parent, args.port, "--parallel", str(parallel), "--threads", str(args.threads),
            "--ctx-size", str(CTX_SLOT), *args.hearth_args.split()))
        ls_port = args.port + 1
        if args.llama_server:
            stack.enter_context(llama_server(args.llama_server, path, ls_port, args.threads,
                                             parallel, CTX_SLOT))
            stream_one(ls_port, messages(999, "unique"), 4, banned)  # warm-up
        stream_one(args.port, messages(999, "unique"), 4, banned)  # warm-up
        for mode in modes:
            for n in levels:
                row = Row(mode, n)
                for _ in range(args.repeat):
                    base = next_base
                    next_base += n * args.rounds
                    prompts = [render(path, messages(base + i, mode)) for i in range(n)]
                    eng0, cpu0 = engine_times(args.port), process_tree_cpu(server.pid)
                    wall, results = run_level(args.port, n, args.rounds, args.tokens, mode,
                                              banned, base, sampling)
                    made = sum(r.tokens for r in results)
                    eng1 = wait_engine(args.port, eng0, made)
                    cpu1 = process_tree_cpu(server.pid)
                    row.hearth_tps.append(made / wall)
                    row.results += results
                    row.tokens += made
                    row.overhead_s += eng1["overhead"] - eng0["overhead"]
                    row.step_tokens += eng1["tokens"] - eng0["tokens"]
                    row.rest_cpu_s += sum(cpu1[name] - cpu0.get(name, 0.0) for name in cpu1
                                          if name in ("hearth-api", "hearth-sched"))
                    if args.llama_server:  # the same prompts, on its own server
                        wall, results = run_level(ls_port, n, args.rounds, args.tokens, mode,
                                                  banned, base, sampling)
                        row.ls_tps.append(sum(r.tokens for r in results) / wall)
                        row.ls_results += results
                    if not args.no_raw:
                        raw_s, _ = raw_engine(path, prompts, args.tokens, args.threads, banned,
                                              sampling=sampling)
                        row.raw_tps.append(n * args.tokens / raw_s)
                rows.append(row)

    how = ("greedy" if args.temperature <= 0 else
           f"temperature {args.temperature:g}, top_p {args.top_p:g}")
    print(f"\nmodel {BENCH_MODEL_ID}, {args.tokens} tokens/request, {how}, {args.threads} "
          f"threads, hearth --parallel {parallel}, {args.rounds} round(s) per client, "
          f"median of {args.repeat} runs (hearth, {'llama-server, ' if args.llama_server else ''}"
          "raw engine alternating)")
    head = (f"{'mode':<12}{'N':>3}{'hearth tok/s':>13}{'raw tok/s':>10}{'ratio':>7}"
            f"{'TTFT p50':>9}{'p90':>7}{'p99':>7}{'ITL p50':>9}{'p99':>6}{'err':>4}"
            f"{'overhead':>10}{'api CPU':>9}")
    print(head)
    for row in rows:
        ttfts = [r.ttft for r in row.results if not r.error]
        gaps = [g for r in row.results for g in r.gaps]
        errs = sum(1 for r in row.results if r.error)
        ovh = row.overhead_s / row.step_tokens * 1000 if row.step_tokens else float("nan")
        rest = row.rest_cpu_s / row.tokens * 1000 if row.tokens else float("nan")
        print(f"{row.mode:<12}{row.n:>3}{median(row.hearth_tps):>13.1f}"
              f"{median(row.raw_tps):>10.1f}{median(row.ratios()):>7.3f}"
              f"{pct(ttfts, 50):>8.2f}s{pct(ttfts, 90):>6.2f}s{pct(ttfts, 99):>6.2f}s"
              f"{pct(gaps, 50) * 1000:>7.1f}ms{pct(gaps, 99) * 1000:>4.0f}ms{errs:>4}"
              f"{ovh:>8.3f}ms{rest:>7.3f}ms")
    print("ratio: median over the runs of hearth tok/s / raw tok/s (each pair run back to back)."
          "\noverhead: the worker's step-loop time outside llama_decode and sampling, per "
          "generated token (from /metrics).\napi CPU: CPU time of the api and scheduler "
          "processes per generated token (from /proc; on 2 cores it is taken from llama.cpp).")
    if args.llama_server:
        print(f"\nllama.cpp's llama-server ({args.llama_server}), -np {parallel}, -c "
              f"{parallel * CTX_SLOT}, -t {args.threads}, the same prompts in the same runs")
        print(f"{'mode':<12}{'N':>3}{'hearth tok/s':>13}{'llama-server':>13}{'hearth/ls':>10}"
              f"{'ls/raw':>7}{'hearth/raw':>11}{'TTFT p50 hearth':>16}{'ls':>6}{'ls err':>7}")
        for row in rows:
            per_run = [h / ls for h, ls in zip(row.hearth_tps, row.ls_tps, strict=False)]
            h_ttft = pct([r.ttft for r in row.results if not r.error], 50)
            ls_ttft = pct([r.ttft for r in row.ls_results if not r.error], 50)
            print(f"{row.mode:<12}{row.n:>3}{median(row.hearth_tps):>13.1f}"
                  f"{median(row.ls_tps):>13.1f}{median(per_run):>10.3f}"
                  f"{median(row.ratios(row.ls_tps)):>7.3f}{median(row.ratios()):>11.3f}"
                  f"{h_ttft:>15.2f}s{ls_ttft:>5.2f}s"
                  f"{sum(1 for r in row.ls_results if r.error):>7}")
        print("hearth/ls, ls/raw, hearth/raw: medians over the runs of each run's ratio.")
    for n in levels:
        u = next((r for r in rows if r.mode == "unique-long" and r.n == n), None)
        sh = next((r for r in rows if r.mode == "shared" and r.n == n), None)
        if u and sh:
            tu = pct([r.ttft for r in u.results if not r.error], 50)
            ts = pct([r.ttft for r in sh.results if not r.error], 50)
            print(f"N={n}: TTFT p50 shared 500-token prefix / unique same length: {ts / tu:.2f}")
    for row in rows:
        if row.n == 1 and row.raw_tps:
            h, r = median(row.hearth_tps), median(row.raw_tps)
            print(f"{row.mode}: N=1 end-to-end cost per token (1/hearth - 1/raw): "
                  f"{(1 / h - 1 / r) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
