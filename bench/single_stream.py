"""One streamed request, 128 tokens, greedy: hearth vs the raw engine, measured in the same run.

    .venv/bin/python bench/single_stream.py [--tokens 128] [--runs 3] [--threads N]

Baseline: the same model, prompt, thread count and greedy sampling decoded in-process with
llama-cpp-python's low-level API (one sequence, no server). hearth: ``hearth serve`` started as
a subprocess, one streaming request at a time over HTTP. EOS is biased away (logit_bias -100) in
both so every run makes exactly --tokens tokens. Prints tokens/s of each and the ratio.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hearth.tools.bootstrap import DEFAULT_MODEL_ID, ensure_default_model

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
KEY = "bench-key"


def raw_engine(path: Path, prompt_text: str, n_tokens: int, threads: int,
               banned: list[int]) -> float:
    """Decode tokens/s of the bare engine (prompt eval excluded)."""
    from hearth.engine.runner import LlamaRunner, RunnerConfig, Segment
    from hearth.scheduler.messages import SamplingParams

    runner = LlamaRunner(RunnerConfig(str(path), 1, 2048, threads))
    try:
        toks = runner.tokenize(prompt_text)
        sampler = runner.sampler(SamplingParams(temperature=0,
                                                logit_bias={t: -100.0 for t in banned}), 0)
        rows = runner.decode([Segment(0, toks, 0, True)])
        tok = sampler.sample(rows[0])
        pos = len(toks)
        t0 = time.perf_counter()
        for _ in range(n_tokens - 1):
            rows = runner.decode([Segment(0, [tok], pos, True)])
            pos += 1
            tok = sampler.sample(rows[0])
        elapsed = time.perf_counter() - t0
        sampler.free()
        runner.forget(0)
        return (n_tokens - 1) / elapsed
    finally:
        runner.close()


def hearth_stream(port: int, n_tokens: int, banned: list[int]) -> tuple[float, float, int]:
    """(decode tokens/s after the first token, time to first token, completion tokens)."""
    body = {"model": DEFAULT_MODEL_ID, "messages": PROMPT, "stream": True, "temperature": 0,
            "max_tokens": n_tokens, "logit_bias": {str(t): -100 for t in banned},
            "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    resp = conn.getresponse()
    first = last = 0.0
    completion = 0
    while True:
        line = resp.readline()
        if not line:
            break
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        now = time.perf_counter()
        if chunk.get("usage"):
            completion = chunk["usage"]["completion_tokens"]
        elif chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
            first = first or now
            last = now
    conn.close()
    return (completion - 1) / (last - first), first - t0, completion


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18765)
    args = ap.parse_args()

    cache = Path(os.environ.get("HEARTH_TEST_CACHE") or Path(__file__).parents[1] / ".cache")
    models = cache / "models"
    models.mkdir(parents=True, exist_ok=True)
    path = ensure_default_model(models, progress=False)
    banned = [1, 106]  # <eos>, <end_of_turn> of gemma-3

    from hearth.engine.runner import LlamaRunner, RunnerConfig
    from hearth.engine.templates import template_for
    from hearth.scheduler.gguf_header import read_gguf_metadata
    from hearth.scheduler.messages import ChatMessage

    info = read_gguf_metadata(path)
    probe = LlamaRunner(RunnerConfig(str(path), 1, 256, 1))
    banned = [t for t in range(probe.n_vocab) if probe.is_eog(t)] or banned
    probe.close()
    prompt_text = template_for(info.architecture or "", info.chat_template).render(
        [ChatMessage(m["role"], m["content"]) for m in PROMPT])

    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        env["XDG_CONFIG_HOME"] = home
        proc = subprocess.Popen(
            [sys.executable, "-m", "hearth.tools.cli", "serve", "--models-dir", str(models),
             "--port", str(args.port), "--api-key", KEY, "--threads", str(args.threads)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("hearth is ready"):
                    break
            else:
                print("hearth did not start", file=sys.stderr)
                return 1
            hearth_stream(args.port, 8, banned)  # warm-up
            raw, served, ttfts = [], [], []
            for _ in range(args.runs):  # alternate so machine noise hits both alike
                raw.append(raw_engine(path, prompt_text, args.tokens, args.threads, banned))
                tps, ttft, n = hearth_stream(args.port, args.tokens, banned)
                assert n == args.tokens, f"hearth made {n} tokens, wanted {args.tokens}"
                served.append(tps)
                ttfts.append(ttft)
        finally:
            proc.terminate()
            proc.wait(30)
    r, h = statistics.median(raw), statistics.median(served)
    print(f"model {DEFAULT_MODEL_ID}, {args.tokens} tokens, greedy, {args.threads} threads, "
          f"median of {args.runs}")
    print(f"{'':<22}{'decode tok/s':>14}")
    print(f"{'raw engine (baseline)':<22}{r:>14.1f}")
    print(f"{'hearth, 1 stream':<22}{h:>14.1f}   ratio {h / r:.3f}   "
          f"TTFT {statistics.median(ttfts) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
