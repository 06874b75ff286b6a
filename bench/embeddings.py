"""Embeddings per second: 256 short inputs in one request vs 256 single-input requests.

    .venv/bin/python bench/embeddings.py [--inputs 256] [--clients 1] [--threads N]

Both against the same ``hearth serve`` (the benchmarks' model, gemma-3-270m) in the same run;
the single-input requests are the baseline (sent one at a time, or from --clients threads).
Prints inputs/s of each and the ratio batched / single.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import KEY, bench_model, hearth_server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID

TOPICS = ["weather", "cooking", "music", "travel", "sports", "finance", "health", "science"]


def texts(n: int) -> list[str]:
    return [f"Note {i} about {TOPICS[i % len(TOPICS)]}: a short sentence to embed."
            for i in range(n)]


def post(port: int, inputs: list[str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", "/v1/embeddings",
                     json.dumps({"model": BENCH_MODEL_ID, "input": inputs}),
                     {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 200, body
        return len(body["data"])
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=256)
    ap.add_argument("--clients", type=int, default=1, help="threads sending single inputs")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18767)
    args = ap.parse_args()
    path = bench_model()
    items = texts(args.inputs)
    with hearth_server(path.parent, args.port, "--threads", str(args.threads)):
        post(args.port, items[:8])  # warm-up (creates the embeddings context)
        t0 = time.perf_counter()
        assert post(args.port, items) == len(items)
        batched = time.perf_counter() - t0

        todo = list(items)
        lock = threading.Lock()

        def client() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    one = todo.pop()
                assert post(args.port, [one]) == 1

        t0 = time.perf_counter()
        workers = [threading.Thread(target=client) for _ in range(args.clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        single = time.perf_counter() - t0
    n = len(items)
    print(f"model {BENCH_MODEL_ID}, {n} short inputs, {args.threads} threads")
    print(f"{'':<34}{'inputs/s':>10}{'seconds':>10}")
    print(f"{'single-input requests (baseline)':<34}{n / single:>10.1f}{single:>10.2f}"
          f"   ({args.clients} client{'s' if args.clients > 1 else ''})")
    print(f"{'one request with every input':<34}{n / batched:>10.1f}{batched:>10.2f}"
          f"   ratio {single / batched:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
