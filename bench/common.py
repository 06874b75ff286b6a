"""Shared by the benchmarks: start hearth as a subprocess, and the raw-engine baseline.

Benchmarks are scripts, run from the checkout (`.venv/bin/python bench/<name>.py`); they always
measure hearth against a baseline in the same run and print the ratio.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from hearth.tools.cli.bootstrap import BENCH_MODEL_ID, ensure_bench_model

KEY = "bench-key"


def bench_model() -> Path:
    cache = Path(os.environ.get("HEARTH_TEST_CACHE") or Path(__file__).parents[1] / ".cache")
    models = cache / "models"
    models.mkdir(parents=True, exist_ok=True)
    return ensure_bench_model(models, progress=False)


@contextlib.contextmanager
def hearth_server(models_dir: Path, port: int, *args: str,
                  model: str = BENCH_MODEL_ID) -> Iterator[subprocess.Popen[str]]:
    """Run ``hearth serve`` until the block ends; yields its process."""
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        env["XDG_CONFIG_HOME"] = home
        proc = subprocess.Popen(
            [sys.executable, "-m", "hearth.tools.cli", "serve", "--models-dir", str(models_dir),
             "--model", model, "--port", str(port), "--api-key", KEY, *args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("hearth is ready"):
                    break
            else:
                raise RuntimeError("hearth did not start")
            yield proc
        finally:
            proc.terminate()
            proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()


@contextlib.contextmanager
def llama_server(binary: str, model: Path, port: int, threads: int, parallel: int,
                 ctx_slot: int, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run llama.cpp's own ``llama-server`` (``scripts/build-llama-server`` builds the one of
    the llama.cpp hearth vendors) with hearth's settings: ``parallel`` slots of ``ctx_slot``
    tokens, ``threads`` threads, and ``extra`` flags (``--spec-type ngram-mod``). Ready when
    /health answers 200."""
    proc = subprocess.Popen(
        [binary, "-m", str(model), "-t", str(threads), "-tb", str(threads),
         "-np", str(parallel), "-c", str(parallel * ctx_slot), "--port", str(port), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{binary} exited with status {proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{binary} did not get ready in 120 s")
            time.sleep(0.25)
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def process_tree_cpu(root: int) -> dict[str, float]:
    """CPU seconds used so far by ``root``'s descendants, by process name (hearth-api,
    hearth-sched, hearth-w-<model>), every thread included. Read from /proc/*/task/*/schedstat,
    which counts nanoseconds on the CPU (utime/stime are sampled at the clock tick: badly wrong
    for processes that wake for a few microseconds per token)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    out: dict[str, float] = {}
    for pid in tree - {root}:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            ns = sum(int(Path(f"/proc/{pid}/task/{t}/schedstat").read_text().split()[0])
                     for t in os.listdir(f"/proc/{pid}/task"))
        except OSError:
            continue
        out[name] = out.get(name, 0.0) + ns / 1e9
    return out


def engine_times(port: int, model: str = BENCH_MODEL_ID) -> dict[str, float]:
    """The step loops' accounting from hearth's /metrics: seconds in decode, sample and
    overhead, and tokens generated, for ``model``."""
    from prometheus_client.parser import text_string_to_metric_families

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {KEY}"})
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    out = {"decode": 0.0, "sample": 0.0, "overhead": 0.0, "tokens": 0.0, "steps": 0.0}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            if s.labels.get("model") != model:
                continue
            if s.name == "hearth_engine_seconds_total":
                out[s.labels["part"]] = s.value
            elif s.name == "hearth_engine_tokens_total":
                out["tokens"] = s.value
            elif s.name == "hearth_engine_steps_total":
                out["steps"] = s.value
    return out


def eog_tokens(path: Path) -> list[int]:
    """The model's end-of-generation tokens, to bias away so every run makes N tokens."""
    from hearth.engine.runner import LlamaRunner
    from hearth.tools.model_config import WorkerConfig

    probe = LlamaRunner(WorkerConfig(path=str(path), n_slots=1, n_ctx_slot=256, n_threads=1))
    try:
        return [t for t in range(probe.n_vocab) if probe.is_eog(t)]
    finally:
        probe.close()


def render(path: Path, messages: Sequence[dict[str, str]]) -> str:
    from hearth.engine.templates import template_for
    from hearth.scheduler.messages import ChatMessage
    from hearth.tools.gguf_header import read_gguf_metadata

    info = read_gguf_metadata(path)
    return template_for(info.architecture or "", info.chat_template).render(
        [ChatMessage(m["role"], m["content"]) for m in messages])


def raw_engine(path: Path, prompts: Sequence[str], n_tokens: int, threads: int,
               banned: Sequence[int], n_ctx: int = 2048, batch: int = 512,
               sampling: dict[str, float] | None = None) -> tuple[float, float]:
    """The bare engine, in this process: prefill every prompt, then decode ``n_tokens`` for all
    of them with one batched ``llama_decode`` per step, sampling with hearth's own samplers
    (greedy unless ``sampling`` says otherwise). Returns (seconds in total, seconds to the
    first token of every sequence)."""
    from hearth.engine.runner import LlamaRunner, Segment
    from hearth.scheduler.messages import ResolvedSampling
    from hearth.tools.model_config import WorkerConfig

    runner = LlamaRunner(WorkerConfig(path=str(path), n_slots=len(prompts), n_ctx_slot=n_ctx,
                                      n_threads=threads, n_batch=batch))
    try:
        params = ResolvedSampling(**{"temperature": 0.0, **(sampling or {})},  # type: ignore[arg-type]
                                  logit_bias={t: -100.0 for t in banned})
        toks = [runner.tokenize(p) for p in prompts]
        samplers = [runner.sampler(params, i) for i in range(len(prompts))]
        t0 = time.perf_counter()
        nxt: dict[int, int] = {}
        # prefill: chunks of at most `batch` tokens, several prompts per decode when they fit
        chunks = [Segment(i, t[j:j + batch], j, j + batch >= len(t))
                  for i, t in enumerate(toks) for j in range(0, len(t), batch)]
        while chunks:
            take, size = [], 0
            while chunks and size + len(chunks[0].tokens) <= batch:
                size += len(chunks[0].tokens)
                take.append(chunks.pop(0))
            rows = runner.decode(take)
            for seg in take:
                if seg.wants_logits:
                    nxt[seg.seq] = samplers[seg.seq].sample(rows[seg.seq])
        ttft = time.perf_counter() - t0
        pos = [len(t) for t in toks]
        for _ in range(n_tokens - 1):
            rows = runner.decode([Segment(i, [nxt[i]], pos[i], True) for i in range(len(toks))])
            for i in range(len(toks)):
                pos[i] += 1
                nxt[i] = samplers[i].sample(rows[i])
        total = time.perf_counter() - t0
        for s in samplers:
            s.free()
        return total, ttft
    finally:
        runner.close()


def stream_chat(port: int, model: str, messages: list[dict[str, str]],
                max_tokens: int) -> tuple[float, str, dict[str, object]]:
    """One streamed greedy chat with usage: (seconds to the first chunk with text — to the end
    for an empty answer —, the answer, usage). Used by the multi-turn benchmarks."""
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens,
            "stream": True, "stream_options": {"include_usage": True}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    ttft = float("nan")
    answer: list[str] = []
    usage: dict[str, object] = {}
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read()!r}")
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices", []):
                text = choice.get("delta", {}).get("content")
                if text:  # (not the role chunk, whose content is "": it comes at admission)
                    if ttft != ttft:
                        ttft = time.perf_counter() - t0
                    answer.append(text)
    finally:
        conn.close()
    if ttft != ttft:  # an empty answer: its first (and only) event is the end
        ttft = time.perf_counter() - t0
    return ttft, "".join(answer), usage


def post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """One non-streamed request to hearth's API (``path``: e.g. ``/v1/chat/completions``); its
    JSON answer. RuntimeError for any status but 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request("POST", path, json.dumps(body),
                     {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        doc: dict[str, Any] = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {doc}")
        return doc
    finally:
        conn.close()


def all_at_once(n: int, client: Callable[[int], object]) -> float:
    """Run ``client(0)`` .. ``client(n - 1)`` on n threads started together; the wall seconds
    until the last returns."""
    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0
