"""KV cache types: memory and throughput of a quantised KV cache against f16, in the same run.

    .venv/bin/python bench/kv_types.py [--types f16,q8_0,q4_0] [--streams 16] [--repeat 3]

Memory: llama.cpp's own count of one sequence's state (``llama_state_seq_get_size``: the K and V
rows of every cached token, at the type's real row size) after a prefill of ``--kv-tokens``
tokens, in this process, beside hearth's estimate (scheduler.placement.kv_bytes_per_slot).
Throughput: ``hearth serve`` with ``--cache-type-k/-v`` set to each type (flash attention on for
all, so the type is the only difference), ``--streams`` concurrent greedy streams of
``--tokens`` tokens each (end-of-generation tokens biased away so every stream makes them all);
tokens/s = completion tokens / wall time. Types alternate within each repeat; the table shows
medians and ratios to the first type (issue 21's targets: q8_0 KV bytes about 0.53x f16, tokens/s
at 16 streams at least 0.95x f16).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from common import all_at_once, bench_model, eog_tokens, hearth_server, post
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID

TOPICS = ("a lighthouse", "a river", "a market", "the moon", "a library", "a storm", "a garden",
          "a train", "a mountain", "a bakery", "a harbour", "a forest", "a desert", "a violin",
          "a clock", "a bridge")


def state_bytes(path: Path, cache_type: str, n_tokens: int, threads: int) -> tuple[int, int]:
    """(llama.cpp's size of one sequence's state after ``n_tokens`` are cached, hearth's
    estimate for those tokens)."""
    import llama_cpp as ll
    from hearth.engine.runner import LlamaRunner, Segment
    from hearth.scheduler.placement import kv_bytes_per_slot
    from hearth.tools.gguf_header import read_gguf_metadata
    from hearth.tools.model_config import WorkerConfig

    runner = LlamaRunner(WorkerConfig(path=str(path), n_slots=1, n_ctx_slot=n_tokens + 64,
                                      n_threads=threads, cache_type_k=cache_type,  # type: ignore[arg-type]
                                      cache_type_v=cache_type,  # type: ignore[arg-type]
                                      flash_attn=True))
    try:
        text = " ".join(f"{TOPICS[i % len(TOPICS)]} {i}" for i in range(n_tokens))
        tokens = runner.tokenize(text)[:n_tokens]
        for start in range(0, len(tokens), 256):
            runner.decode([Segment(0, tokens[start:start + 256], start, False)])
        measured = int(ll.llama_state_seq_get_size(runner._ctx, 0))
    finally:
        runner.close()
    estimate = kv_bytes_per_slot(read_gguf_metadata(path), n_tokens, cache_type, cache_type)
    return measured, estimate


def stream_tokens(port: int, i: int, n_tokens: int, banned: list[int]) -> int:
    body = {"model": BENCH_MODEL_ID, "temperature": 0, "max_tokens": n_tokens,
            "messages": [{"role": "user", "content":
                          f"Story {i}: write a long story about {TOPICS[i % len(TOPICS)]}."}],
            "logit_bias": {str(t): -100 for t in banned}}
    return int(post(port, "/v1/chat/completions", body)["usage"]["completion_tokens"])


def throughput(port: int, streams: int, n_tokens: int, banned: list[int], base: int) -> float:
    done = [0] * streams

    def client(c: int) -> None:
        done[c] = stream_tokens(port, base + c, n_tokens, banned)

    seconds = all_at_once(streams, client)
    return sum(done) / seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", default="f16,q8_0", help="comma list; the first is the baseline")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=128, help="completion tokens per stream")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ctx-size", type=int, default=1024)
    ap.add_argument("--kv-tokens", type=int, default=1024, help="tokens cached for the memory "
                    "measurement")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18796)
    args = ap.parse_args()
    types = [t for t in args.types.split(",") if t]
    path = bench_model()
    banned = eog_tokens(path)

    memory = {t: state_bytes(path, t, args.kv_tokens, args.threads) for t in types}
    for t in types:
        print(f"  {t}: {memory[t][0]:,} bytes of state for {args.kv_tokens} tokens",
              file=sys.stderr, flush=True)
    rates: dict[str, list[float]] = {t: [] for t in types}
    base = 0
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "hearth.toml"
        config.write_text(f'[models."{BENCH_MODEL_ID}"]\nflash_attn = true\n')
        for _ in range(args.repeat):
            for t in types:
                with hearth_server(path.parent, args.port, "--config", str(config),
                                   "--parallel", str(args.streams), "--ctx-size",
                                   str(args.ctx_size), "--threads", str(args.threads),
                                   "--cache-type-k", t, "--cache-type-v", t):
                    stream_tokens(args.port, 10_000, 4, banned)  # warm-up
                    rates[t].append(throughput(args.port, args.streams, args.tokens, banned,
                                               base))
                    base += args.streams
                print(f"  {t}: {rates[t][-1]:.1f} tok/s", file=sys.stderr, flush=True)

    first = types[0]
    print(f"model {path.name}, {args.streams} streams x {args.tokens} tokens, ctx {args.ctx_size}"
          f" per slot, {args.threads} threads, medians of {args.repeat}")
    print(f"{'type':6} {'KV bytes (llama.cpp)':>21} {'ratio':>6} {'estimate':>10} "
          f"{'tok/s':>7} {'ratio':>6}  runs")
    base_mem, base_rate = memory[first][0], statistics.median(rates[first])
    for t in types:
        measured, estimate = memory[t]
        rate = statistics.median(rates[t])
        runs = " ".join(f"{r:.1f}" for r in rates[t])
        print(f"{t:6} {measured:>21,} {measured / base_mem:>6.3f} {estimate:>10,} "
              f"{rate:>7.1f} {rate / base_rate:>6.3f}  {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
