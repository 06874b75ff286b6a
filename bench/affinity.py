"""Prefix-affinity routing against even spreading, over a model's two worker processes.

    .venv/bin/python bench/affinity.py [--conversations 4] [--turns 4] [--parallel 2]
                                       [--runs 3] [--max-tokens 8] [--think 0.5] [--tiny]

Two servers run side by side, each with ``replicas = 2`` for the model (two worker processes,
``--parallel`` slots and one thread each): one with ``--routing prefix`` (the default), one with
``--routing even`` (a request goes to the worker with the most free slots, the rule before). The
same multi-turn workload runs on each in turn, ``--runs`` times, alternating: ``--conversations``
clients at once, each holding one conversation (its own long system prompt, then a question, an
answer, the next question...) for ``--turns`` turns, pausing between turns as a person or an
agent loop does (a random time, ``--think`` seconds on average, the same in both servers' runs),
so the conversations do not move in step. By default 4 conversations share 4 slots (2 workers x
2): every conversation could stay cached, if each turn went to the right worker. Every run
starts new conversations (a run number in the system prompts), so nothing is cached from the
run before.

For the turns after the first, reported per run and as the median of the runs: the share of
prompt tokens served from a slot's cache (``usage.prompt_tokens_details.cached_tokens`` /
``prompt_tokens``) and the time to the first streamed token (p50); then prefix / even ratios.
The default model is the benchmarks' gemma-3-270m; ``--tiny`` builds the tests' tiny
random-weight model instead (seconds; cache hits mean the same, times mean little).
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import bench_model, hearth_server, stream_chat
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID

TOPICS = ["gardening", "a Python project", "travel plans", "a novel", "a budget", "music",
          "a kitchen", "a bicycle"]
SYSTEM = ("Run {run}, conversation {conv}. You help with {topic}. Answer in plain words, keep "
          "to the point, and say so when unsure. ") * 6


def free_port_pair() -> int:
    """A port free now, whose next one is free too."""
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = a.getsockname()[1]
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return int(port)
    raise RuntimeError("no two neighbouring free ports")


def one_run(port: int, model: str, run: int, args: argparse.Namespace,
            ) -> list[tuple[int, float, int, int]]:
    """Every conversation at once; (turn, ttft s, prompt tokens, cached tokens) per request."""
    rows: list[tuple[int, float, int, int]] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def converse(conv: int) -> None:
        # the same pauses for this run and conversation under either routing
        pauses = random.Random(run * 1000 + conv)
        time.sleep(pauses.uniform(0, args.think))  # people do not start at once
        topic = TOPICS[conv % len(TOPICS)]
        messages = [{"role": "system", "content": SYSTEM.format(run=run, conv=conv, topic=topic)},
                    {"role": "user", "content": f"Where do I start with {topic}?"}]
        try:
            for turn in range(args.turns):
                ttft, answer, usage = stream_chat(port, model, messages, args.max_tokens)
                details = usage.get("prompt_tokens_details") or {}
                assert isinstance(details, dict)
                with lock:
                    rows.append((turn, ttft, int(usage["prompt_tokens"]),  # type: ignore[call-overload]
                                 int(details.get("cached_tokens", 0))))
                messages += [{"role": "assistant", "content": answer or "ok"},
                             {"role": "user", "content": f"Thanks. And then, step {turn + 2}?"}]
                time.sleep(pauses.uniform(0, 2 * args.think))
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    threads = [threading.Thread(target=converse, args=(c,)) for c in range(args.conversations)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return rows


def summary(rows: list[tuple[int, float, int, int]]) -> tuple[float, float]:
    """(cache hit rate, TTFT p50 in s) of the turns after the first."""
    later = [r for r in rows if r[0] > 0]
    return (sum(r[3] for r in later) / sum(r[2] for r in later),
            statistics.median(r[1] for r in later))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conversations", type=int, default=4)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--parallel", type=int, default=2, help="slots per worker")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--think", type=float, default=0.5,
                    help="mean seconds between a client's turns (uniform from 0 to twice it)")
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny random-weight model")
    ap.add_argument("--port", type=int, default=0, help="the first server's (0: a free one; "
                    "the second's is one more)")
    args = ap.parse_args()
    with ExitStack() as stack:
        if args.tiny:
            from hearth.tools.cli.tiny_model import build_tiny_model
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            build_tiny_model(tmp / "tiny.gguf")
            models_dir, model = tmp, "tiny"
        else:
            models_dir, model = bench_model().parent, BENCH_MODEL_ID
        config = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "hearth.toml"
        config.write_text(f'[models."{model}"]\nreplicas = 2\nthreads = 1\n'
                          f"parallel = {args.parallel}\n")
        first = args.port or free_port_pair()
        ports = {"prefix": first, "even": first + 1}
        for routing, port in ports.items():
            stack.enter_context(hearth_server(
                models_dir, port, "--config", str(config), "--routing", routing,
                "--ctx-size", "2048", model=model))
            stream_chat(port, model, [{"role": "user", "content": "hi"}], 2)  # warm-up
        results: dict[str, list[tuple[float, float]]] = {"prefix": [], "even": []}
        for run in range(args.runs):
            for routing, port in ports.items():
                rows = one_run(port, model, run, args)
                results[routing].append(summary(rows))
                hit, ttft = results[routing][-1]
                print(f"run {run} {routing:>6}: later turns {hit * 100:5.1f} % of prompt tokens "
                      f"cached, TTFT p50 {ttft * 1000:7.1f} ms", flush=True)
    print(f"\nmodel {model}, 2 workers x {args.parallel} slots (1 thread each), "
          f"{args.conversations} conversations at once x {args.turns} turns, "
          f"{args.max_tokens} tokens per answer, {args.think} s between turns on average; "
          f"medians of {args.runs} runs, turns after the first")
    print(f"{'routing':>8}{'cached':>9}{'TTFT p50':>11}")
    med = {}
    for routing, vals in results.items():
        med[routing] = (statistics.median(v[0] for v in vals),
                        statistics.median(v[1] for v in vals))
        print(f"{routing:>8}{med[routing][0] * 100:>8.1f}%{med[routing][1] * 1000:>8.1f} ms")
    print(f"prefix/even: cached share x{med['prefix'][0] / max(med['even'][0], 1e-9):.2f}, "
          f"TTFT p50 x{med['prefix'][1] / med['even'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
