"""``hearth bench``: load-test any OpenAI-compatible server (hearth, llama.cpp's llama-server,
Ollama, vLLM, …) the same way, and optionally a second one in the same run.

    hearth bench --url http://127.0.0.1:1337/v1 --api-key "$(hearth key)" \\
        --model gemma-3-270m-q4_k_m --concurrency 1,2,4,8,16 --requests 32 \\
        --max-tokens 128 --prompt-tokens 128 [--prompt-mode unique|shared-prefix] \\
        [--endpoint|--api chat|responses|messages|embeddings] \\
        [--compare URL [--compare-api-key K] [--compare-model M]] \\
        [--rounds R] [--timeout S] [--extra-body JSON] [--out DIR] [--no-progress] \\
        [--response-format json_object|FILE] \\
        [--tools weather|JSON|@FILE [--tool-choice auto|required|none|NAME]]

For each concurrency level N, N client threads send requests back to back until ``--requests``
requests (at least N) have completed; each request gets a fresh connection. ``chat`` streams
``POST {url}/chat/completions`` with ``stream_options.include_usage`` and times the first
content chunk (TTFT) and the gaps between content chunks (inter-token latency); ``responses``
(``--api responses``) streams ``POST {url}/responses`` (the Responses API, ``store: false``) and
times its output deltas the same way; ``embeddings``
sends ``POST {url}/embeddings`` with ``{"model", "input": [text]}`` and times the whole request.
``--api messages`` sends the chat requests through Anthropic's Messages API instead (a streamed
``POST {url}/messages``, timed the same way: first ``content_block_delta``, then the gaps).
Tokens are the server's ``usage`` (completion_tokens for chat, prompt_tokens for embeddings);
where a server sends no usage they are estimated (content chunks, or 4 characters per token)
and the level says so (``tokens_estimated`` in the JSON, ``*`` in the table).

Prompts are about ``--prompt-tokens`` long, sized at an estimated 4 characters per token (the
server's own count is in the JSON as ``prompt_tokens_mean``). ``unique``: every request's text
differs from its first word, so no server can reuse a cached prefix. ``shared-prefix``: one long
system prompt common to every request of the run, then a short unique question — what a
prefix cache is for.

``--compare URL`` measures a second server in the same run: for each level (and each of
``--rounds`` rounds, in A B, B A, A B … order) server A then server B, so both see the same
machine state; the report gives B / A ratios. Both servers get the same prompts.

Writes ``bench.json`` and ``bench.png`` to ``--out`` (default ``./hearth-bench-<timestamp>``) and
prints a table; see ``hearth.tools.cli.bench_report`` for the fields.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from hearth.tools.cli.bench_report import (
    SCHEMA,
    RequestResult,
    comparison,
    format_table,
    streamed,
    summarize,
    write_json,
    write_png,
)
from hearth.tools.cli.bench_requests import (
    CHARS_PER_TOKEN,
    Target,
    chat_request,
    embeddings_request,
    list_models,
    messages_request,
    responses_extra,
    responses_request,
)
from hearth.tools.cli.progress import RequestProgress

WORDS = ("the", "river", "light", "stone", "quiet", "market", "over", "winter", "garden", "a",
         "slowly", "bridge", "of", "window", "north", "and", "lantern", "harbor", "small",
         "paper", "under", "bright", "forest", "morning", "clock", "with", "valley", "old",
         "road", "song", "between", "salt", "tower", "green", "letter", "across", "field")
TOPICS = ("a lighthouse", "a city garden", "the sea", "a mountain pass", "a violin maker",
          "a night train", "an old library", "a desert well", "a bakery", "a glacier")


# ---- prompts --------------------------------------------------------------------------------


def _filler(seed: str, chars: int) -> str:
    rng = random.Random(seed)
    words: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


class Prompts:
    """Request ``i``'s prompt. ``tag`` is random per run, so a server's cache from an earlier
    run never helps; indices are shared by every server of a run (same prompts for A and B)."""

    def __init__(self, mode: str, prompt_tokens: int, tag: str) -> None:
        self.mode = mode
        self.chars = prompt_tokens * CHARS_PER_TOKEN
        self.tag = tag
        self.shared = ("You are a careful assistant. Background notes follow. "
                       + _filler(f"{tag}-shared", self.chars))

    def _word(self, i: int) -> str:
        """A word no other request of the run starts with (hex digest of tag and index)."""
        return hashlib.sha256(f"{self.tag}-{i}".encode()).hexdigest()[:10]

    def _question(self, i: int) -> str:
        return f"{self._word(i)}: tell me a story about {TOPICS[i % len(TOPICS)]}."

    def chat(self, i: int) -> list[dict[str, str]]:
        if self.mode == "shared-prefix":
            return [{"role": "system", "content": self.shared},
                    {"role": "user", "content": self._question(i)}]
        return [{"role": "user", "content": f"{self._word(i)} "
                 + _filler(f"{self.tag}-{i}", self.chars - 40) + ". Continue this text."}]

    def text(self, i: int) -> str:
        if self.mode == "shared-prefix":
            return self.shared + " " + self._question(i)
        return f"{self._word(i)} " + _filler(f"{self.tag}-{i}", self.chars - 11)


# ---- a level --------------------------------------------------------------------------------


def run_level(concurrency: int, n_requests: int, send: Callable[[int], RequestResult],
              progress: RequestProgress) -> tuple[float, list[RequestResult]]:
    """``concurrency`` threads send requests ``send(0)`` … ``send(n_requests - 1)`` back to
    back; returns the wall time (first sent to last done) and every result."""
    results: list[RequestResult] = []
    lock = threading.Lock()
    next_index = 0

    def client() -> None:
        nonlocal next_index
        while True:
            with lock:
                i = next_index
                next_index += 1
            if i >= n_requests:
                return
            res = send(i)
            with lock:
                results.append(res)
            progress.advance(res)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, results


# ---- the command ----------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:1337/v1",
                   help="API base URL of the server to measure (default: %(default)s)")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"),
                   help="bearer key (default: $OPENAI_API_KEY; for hearth: $(hearth key))")
    p.add_argument("--model", help="model id (default: the server's only model)")
    p.add_argument("--concurrency", default="1,2,4,8,16",
                   help="comma-separated concurrency levels (default: %(default)s)")
    p.add_argument("--requests", type=int, default=32,
                   help="requests per level and server, at least the level (default: 32)")
    p.add_argument("--max-tokens", type=int, default=128, help="max_tokens per chat request")
    p.add_argument("--prompt-tokens", type=int, default=128,
                   help="prompt length, estimated at 4 characters per token (default: 128)")
    p.add_argument("--prompt-mode", choices=("unique", "shared-prefix"), default="unique")
    p.add_argument("--endpoint", "--api", choices=("chat", "responses", "messages", "embeddings"),
                   default="chat", help="what to measure: chat completions, the Responses API, "
                   "Anthropic's Messages (POST {url}/messages) or embeddings "
                   "(default: %(default)s)")
    p.add_argument("--compare", metavar="URL", help="a second server, measured alternately")
    p.add_argument("--compare-api-key", help="its key (default: --api-key)")
    p.add_argument("--compare-model", help="its model id (default: --model)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat each level this many times, alternating server order")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument("--extra-body", default="{}", metavar="JSON",
                   help='fields merged into every request, e.g. \'{"temperature": 0}\'')
    p.add_argument("--response-format", metavar="FILE|json_object",
                   help="send every chat request with response_format: json_object, or a "
                        "json_schema whose schema is the JSON file FILE")
    p.add_argument("--tools", metavar="JSON|@FILE",
                   help="a JSON list of OpenAI tools (or @file holding one) sent with every "
                        "chat request; 'weather' for a built-in one-function list")
    p.add_argument("--tool-choice", default="auto",
                   help="tool_choice with --tools: auto, required, none or a function's name")
    p.add_argument("--out", type=Path, help="output folder (default: ./hearth-bench-<time>)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}


def tools_body(spec: str, choice: str) -> dict[str, object]:
    """The request fields of ``--tools``/``--tool-choice``: ``weather``, a JSON list, or
    ``@path`` to a file holding one; a choice other than auto/required/none names a function."""
    if spec == "weather":
        tools: object = [WEATHER_TOOL]
    elif spec.startswith("@"):
        tools = json.loads(Path(spec[1:]).read_text())
    else:
        tools = json.loads(spec)
    if not isinstance(tools, list) or not tools:
        raise ValueError("--tools must be a non-empty JSON list of tools")
    tool_choice: object = choice if choice in ("auto", "required", "none") else {
        "type": "function", "function": {"name": choice}}
    return {"tools": tools, "tool_choice": tool_choice}


def _levels(spec: str) -> list[int]:
    try:
        levels = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        levels = []
    if not levels or levels[0] < 1:
        raise ValueError(f"--concurrency takes positive integers like 1,2,4, not {spec!r}")
    return levels


def _response_format(spec: str) -> dict[str, Any]:
    """``json_object``, or a json_schema response_format whose schema is the file ``spec``."""
    if spec == "json_object":
        return {"type": "json_object"}
    path = Path(spec)
    schema = json.loads(path.read_text())
    if not isinstance(schema, dict):
        raise ValueError(f"--response-format {spec}: the file must hold a JSON Schema object")
    return {"type": "json_schema", "json_schema": {"name": path.stem[:64] or "schema",
                                                   "schema": schema, "strict": True}}


def _target(name: str, url: str, key: str | None, model: str | None,
            timeout: float) -> Target:
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"{url!r} is not an http(s) URL")
    url = url.rstrip("/")
    if not model:
        ids = list_models(Target(name, url, key, ""), timeout)
        if len(ids) != 1:
            raise ValueError(f"{url} serves {len(ids)} models ({', '.join(ids) or 'none'}); "
                             "pick one with --model / --compare-model")
        model = ids[0]
    return Target(name, url, key, model)


def main(args: argparse.Namespace, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr) -> int:
    try:
        levels = _levels(args.concurrency)
        if min(args.requests, args.max_tokens, args.prompt_tokens, args.rounds) < 1:
            raise ValueError("--requests, --max-tokens, --prompt-tokens and --rounds must be "
                             "at least 1")
        extra = json.loads(args.extra_body)
        if not isinstance(extra, dict):
            raise ValueError("--extra-body must be a JSON object")
        if args.response_format:
            extra["response_format"] = _response_format(args.response_format)
        if args.tools:
            extra.update(tools_body(args.tools, args.tool_choice))
        if args.endpoint == "responses":
            extra = responses_extra(extra)
        if args.endpoint == "messages" and (args.tools or args.response_format):
            raise ValueError("--api messages measures chat requests, without --tools or "
                             "--response-format (send Anthropic's fields with --extra-body)")
        targets = [_target("A", args.url, args.api_key, args.model, args.timeout)]
        if args.compare:
            targets.append(_target("B", args.compare, args.compare_api_key or args.api_key,
                                   args.compare_model or args.model, args.timeout))
    except (ValueError, RuntimeError, OSError, http.client.HTTPException) as exc:
        print(f"hearth bench: {exc}", file=stderr)
        return 2

    prompts = Prompts(args.prompt_mode, args.prompt_tokens, os.urandom(4).hex())

    def sender(target: Target, base: int, max_tokens: int) -> Callable[[int], RequestResult]:
        if args.endpoint == "embeddings":
            return lambda i: embeddings_request(target, prompts.text(base + i), extra,
                                                args.timeout)
        if args.endpoint == "responses":
            return lambda i: responses_request(target, prompts.chat(base + i), max_tokens,
                                               extra, args.timeout)
        request = messages_request if args.endpoint == "messages" else chat_request
        return lambda i: request(target, prompts.chat(base + i), max_tokens, extra,
                                 args.timeout)

    # Warm-up (not measured): loads the model on servers that load lazily, fills a
    # shared-prefix cache on every server alike, and fails fast on a wrong URL, key or model.
    for t in targets:
        res = sender(t, -1, min(4, args.max_tokens))(0)
        if not res.ok:
            print(f"hearth bench: warm-up request to {t.url} (model {t.model}) failed: "
                  f"{res.error}", file=stderr)
            return 1

    counts = [max(args.requests, n) for n in levels]
    progress = RequestProgress(sum(counts) * args.rounds * len(targets), stderr,
                               not args.no_progress)
    pooled: dict[tuple[str, int], tuple[float, list[RequestResult]]] = {}
    started = datetime.now().astimezone()
    base = 0
    try:
        for n, count in zip(levels, counts, strict=True):
            for r in range(args.rounds):
                for t in targets if r % 2 == 0 else targets[::-1]:
                    progress.phase(f"{t.name} concurrency {n}")
                    wall, results = run_level(n, count, sender(t, base, args.max_tokens),
                                              progress)
                    progress.end_phase()
                    w, prev = pooled.get((t.name, n), (0.0, []))
                    pooled[(t.name, n)] = (w + wall, prev + results)
                base += count
    except KeyboardInterrupt:
        print("\nhearth bench: interrupted", file=stderr)
        return 130

    # the report's JSON shape, as summarize and comparison take it
    servers: list[dict[str, Any]] = [
        {"name": t.name, "url": t.url, "model": t.model,
         "levels": [summarize(pooled[(t.name, n)][1], pooled[(t.name, n)][0], n, args.endpoint)
                    for n in levels]} for t in targets]
    counted = [f"{s['name']} {lv['prompt_tokens_mean']:.0f}" for s in servers
               for lv in s["levels"][:1] if lv["prompt_tokens_mean"] is not None]
    note = (f"~{args.prompt_tokens} tokens asked for, sized as {prompts.chars} characters at an "
            f"estimated {CHARS_PER_TOKEN} characters per token; "
            + (f"the servers counted (mean prompt_tokens): {', '.join(counted)}" if counted
               else "no server reported prompt_tokens"))
    settings: dict[str, Any] = {
        "concurrency": levels, "requests": args.requests, "prompt_tokens": args.prompt_tokens,
        "prompt_mode": args.prompt_mode, "rounds": args.rounds, "timeout_s": args.timeout,
        "extra_body": extra}
    if streamed(args.endpoint):
        settings["max_tokens"] = args.max_tokens
    report: dict[str, Any] = {
        "schema": SCHEMA, "created": started.isoformat(timespec="seconds"),
        "duration_s": (datetime.now().astimezone() - started).total_seconds(),
        "endpoint": args.endpoint, "settings": settings, "prompt_note": note,
        "servers": servers, "comparison": comparison(servers)}

    out: Path = args.out or Path(f"hearth-bench-{started:%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(report, out / "bench.json")
    write_png(report, out / "bench.png")
    print(format_table(report), file=stdout)
    print(f"\nwrote {out / 'bench.json'} and {out / 'bench.png'}", file=stdout)
    return 0 if any(lv["ok"] for s in servers for lv in s["levels"]) else 1
