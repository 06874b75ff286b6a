"""Load harness: N concurrent streaming clients against hearth, vs the raw engine, same run.

    .venv/bin/python bench/load.py [--concurrency 1,4,16] [--tokens 128] [--rounds 1]
            [--repeat 3] [--mode unique,shared,unique-long,chat,edit,switch]
            [--temperature 0,0.7] [--top-p P] [--parallel P] [--threads T]
            [--hearth-args [LABEL=]ARGS ...] [--llama-server PATH]
            [--llama-spec off,ngram-simple,ngram-mod] [--no-raw]

For each workload, temperature and concurrency level N, N client threads each stream
``--rounds`` requests of exactly ``--tokens`` tokens (end-of-generation biased away) against
every *column*, one after the other on the same prompts:

- hearth, once per ``--hearth-args`` (repeatable; ``LABEL=ARGS`` names the column, e.g.
  ``--hearth-args "spec=--speculative on" --hearth-args "nospec=--speculative off"``: each is a
  ``hearth serve`` of its own with those extra flags; none given: one plain hearth);
- llama.cpp's own server (``--llama-server PATH``; ``scripts/build-llama-server`` prints one),
  with the same slots, context and threads, once per ``--llama-spec`` mode (``off`` or a
  ``--spec-type`` value of that build, e.g. ``ngram-simple``, ``ngram-mod``);
- the raw engine (one process, batched llama_decode over N sequences, hearth's samplers, same
  model and threads, no server), unless ``--no-raw``.

Workloads (``--mode``): ``unique`` (alias ``chat``; short, unique), ``shared`` (a ~500-token
system prompt common to all, then a unique question), ``unique-long`` (as long as shared,
unique from the first word), ``edit`` (a ~420-token source file and a request for it back with
one small change: the reply repeats the prompt, what n-gram speculation drafts from), and
``switch`` (8 conversations taking turns over 4 slots, each turn adding one user message to the
conversation's history, one request at a time: a conversation's cached prefix has been
evicted by the time it comes back, unless a server keeps it elsewhere; reported: the later
turns' TTFT p50 against the cold first turns'). ``--temperature`` takes a comma list (0:
greedy).

Reported per row: each column's aggregate completion tokens/s over the wall time, its ratio to
the *baseline* (the first column: the first hearth variant) and TTFT p50; for hearth columns
also TTFT p90/p99, inter-token latency, the worker's step-loop time outside llama_decode and
sampling per generated token (``hearth_engine_seconds_total``) and the CPU time the api and
scheduler processes used per token (from /proc). Each row runs ``--repeat`` times, the
columns back to back in every run; tokens/s are medians over the runs and each ratio is the
median of the per-run ratios: on a small machine a single run swings by more than the
differences being measured.
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
    all_at_once,
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
from load_workloads import MODES, SWITCH, Message, messages, switch_turn

CTX_SLOT = 1024  # context per slot, for hearth and llama-server
SWITCH_SLOTS, SWITCH_CONVERSATIONS = 4, 8
SWITCH_TURNS = int(os.environ.get("HEARTH_BENCH_SWITCH_TURNS", "4"))  # (fewer: a smoke run)
SWITCH_TOKENS = 48  # reply tokens per switch turn at most (4 turns fit in CTX_SLOT)


@dataclass
class Result:
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)
    tokens: int = 0
    error: str = ""
    text: str = ""


def stream_one(port: int, msgs: list[Message], n_tokens: int,
               banned: list[int], sampling: dict[str, float] | None = None) -> Result:
    """One streamed chat; ``sampling`` adds request fields (greedy when not given)."""
    body = {"model": BENCH_MODEL_ID, "messages": msgs, "stream": True, "temperature": 0,
            "max_tokens": n_tokens, "logit_bias": {str(t): -100 for t in banned},
            "stream_options": {"include_usage": True}, **(sampling or {})}
    res = Result()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    last = 0.0
    parts: list[str] = []
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
                for choice in json.loads(line[6:]).get("choices", ()):
                    parts.append(choice.get("delta", {}).get("content") or "")
            elif b'"error"' in line:
                res.error = json.loads(line[6:])["error"]["code"] or "error"
    finally:
        conn.close()
    res.text = "".join(parts)
    return res


def pct(values: list[float], p: float) -> float:
    """hearth bench's percentile, NaN for no values (printable in the table)."""
    value = percentile(values, p)
    return float("nan") if value is None else value


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


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

    return all_at_once(n, client), results


def run_switch(port: int, base: int, banned: list[int], sampling: dict[str, float],
               n_tokens: int = SWITCH_TOKENS) -> tuple[list[Result], list[Result]]:
    """The switch workload on one server: SWITCH_CONVERSATIONS conversations (numbered from
    ``base``) take turns, one request at a time, each turn adding the reply and one user
    message. Returns (first turns, later turns)."""
    history: list[list[Message]] = [[] for _ in range(SWITCH_CONVERSATIONS)]
    cold: list[Result] = []
    later: list[Result] = []
    for turn in range(SWITCH_TURNS):
        for c in range(SWITCH_CONVERSATIONS):
            history[c].append(switch_turn(base + c, turn))
            res = stream_one(port, history[c], n_tokens, banned, sampling)
            history[c].append({"role": "assistant", "content": res.text})
            (cold if turn == 0 else later).append(res)
    return cold, later


@dataclass
class Column:
    """One server (or the raw engine) measured in every run."""

    label: str
    kind: str  # "hearth", "llama-server" or "raw"
    port: int = 0
    args: list[str] = field(default_factory=list)  # hearth's extra flags / the spec type
    pid: int = 0
    body: dict[str, float] = field(default_factory=dict)  # request fields of its own


@dataclass
class Cell:
    """One column's measurements in one row, over the runs."""

    tps: list[float] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)
    later: list[Result] = field(default_factory=list)  # switch: the later turns
    overhead_s: float = 0.0  # hearth: step-loop time outside decode and sampling
    step_tokens: float = 0.0  # tokens those step loops made
    rest_cpu_s: float = 0.0  # hearth: CPU of the api and scheduler processes
    tokens: int = 0


@dataclass
class Row:
    mode: str
    temperature: float
    n: int
    cells: dict[str, Cell] = field(default_factory=dict)


def wait_engine(port: int, before: dict[str, float], tokens: int) -> dict[str, float]:
    """/metrics' step-loop accounting once it includes this level's tokens (workers report
    when they go idle; the api sees it with the scheduler's next status)."""
    deadline = time.monotonic() + 10
    while True:
        now = engine_times(port)
        if now["tokens"] - before["tokens"] >= tokens or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def parse_variants(values: list[str]) -> list[tuple[str, list[str]]]:
    """``--hearth-args`` values as (label, flags): ``LABEL=ARGS``, or ARGS alone (starting
    with ``-``, or empty) labelled ``hearth``, ``hearth2``, ..."""
    out: list[tuple[str, list[str]]] = []
    for i, value in enumerate(values or [""]):
        label, sep, rest = value.partition("=")
        if not sep or value.lstrip().startswith("-") or " " in label:
            label, rest = ("hearth" if i == 0 else f"hearth{i + 1}"), value
        out.append((label.strip(), rest.split()))
    return out


def measure(col: Column, row: Row, n: int, rounds: int, n_tokens: int, banned: list[int],
            base: int, sampling: dict[str, float], prompts: list[str], path: Path,
            threads: int) -> None:
    """One run of ``row`` on ``col``, added to its cell."""
    cell = row.cells.setdefault(col.label, Cell())
    sampling = {**sampling, **col.body}
    if col.kind == "raw":
        raw_s, _ = raw_engine(path, prompts, n_tokens, threads, banned, sampling=sampling)
        cell.tps.append(n * n_tokens / raw_s)
        return
    if row.mode == SWITCH:
        cold, later = run_switch(col.port, base, banned, sampling,
                                 min(n_tokens, SWITCH_TOKENS))
        cell.results += cold
        cell.later += later
        return
    if col.kind == "hearth":
        eng0, cpu0 = engine_times(col.port), process_tree_cpu(col.pid)
    wall, results = run_level(col.port, n, rounds, n_tokens, row.mode, banned, base, sampling)
    made = sum(r.tokens for r in results)
    cell.tps.append(made / wall)
    cell.results += results
    cell.tokens += made
    if col.kind == "hearth":
        eng1 = wait_engine(col.port, eng0, made)
        cpu1 = process_tree_cpu(col.pid)
        cell.overhead_s += eng1["overhead"] - eng0["overhead"]
        cell.step_tokens += eng1["tokens"] - eng0["tokens"]
        cell.rest_cpu_s += sum(cpu1[name] - cpu0.get(name, 0.0) for name in cpu1
                               if name in ("hearth-api", "hearth-sched"))


def start_servers(stack: contextlib.ExitStack, args: argparse.Namespace, path: Path,
                  parallel: int, banned: list[int]) -> list[Column]:
    cols: list[Column] = []
    port = args.port
    for label, flags in parse_variants(args.hearth_args):
        proc = stack.enter_context(hearth_server(
            path.parent, port, "--parallel", str(parallel), "--threads", str(args.threads),
            "--ctx-size", str(CTX_SLOT), *flags))
        cols.append(Column(label, "hearth", port, flags, proc.pid))
        port += 1
    if args.llama_server:
        for spec in [s for s in args.llama_spec.split(",") if s]:
            extra = [] if spec == "off" else ["--spec-type", spec]
            stack.enter_context(llama_server(args.llama_server, path, port, args.threads,
                                             parallel, CTX_SLOT, *extra))
            cols.append(Column("llama-server" + ("" if spec == "off" else f" {spec}"),
                               "llama-server", port, extra, body=json.loads(args.llama_body)))
            port += 1
    for col in cols:
        stream_one(col.port, messages(999_999, "unique"), 4, banned)  # warm-up
    return cols


def print_rows(rows: list[Row], cols: list[Column]) -> None:
    base = cols[0].label
    head = f"{'mode':<12}{'temp':>5}{'N':>3}"
    for col in cols:
        head += f"  {col.label[:22]:>22} {'ratio':>6} {'TTFT':>6}"
    print(head)
    for row in rows:
        line = f"{row.mode:<12}{row.temperature:>5g}{row.n:>3}"
        ref = row.cells.get(base)
        for col in cols:
            cell = row.cells.get(col.label)
            if cell is None or not cell.tps:
                line += f"  {'-':>22} {'-':>6} {'-':>6}"
                continue
            ratios = [a / b for a, b in zip(cell.tps, ref.tps if ref else [], strict=False)]
            ttft = pct([r.ttft for r in cell.results if not r.error], 50)
            shown = "-" if col.kind == "raw" else f"{ttft:.2f}s"  # (the raw engine: no TTFT)
            line += f"  {median(cell.tps):>16.1f} tok/s {median(ratios):>6.3f} {shown:>6}"
        print(line)
    print(f"tok/s: median over the runs; ratio: median over the runs of each run's tok/s / "
          f"{base}'s in the same run; TTFT: p50 over every request of the row.")


def print_hearth_detail(rows: list[Row], cols: list[Column]) -> None:
    print(f"\n{'hearth':<14}{'mode':<12}{'temp':>5}{'N':>3}{'TTFT p50':>9}{'p90':>7}{'p99':>7}"
          f"{'ITL p50':>9}{'p99':>6}{'err':>4}{'overhead':>10}{'api CPU':>9}")
    for col in [c for c in cols if c.kind == "hearth"]:
        for row in rows:
            cell = row.cells.get(col.label)
            if cell is None or row.mode == SWITCH:
                continue
            ttfts = [r.ttft for r in cell.results if not r.error]
            gaps = [g for r in cell.results for g in r.gaps]
            errs = sum(1 for r in cell.results if r.error)
            ovh = cell.overhead_s / cell.step_tokens * 1000 if cell.step_tokens else float("nan")
            rest = cell.rest_cpu_s / cell.tokens * 1000 if cell.tokens else float("nan")
            print(f"{col.label[:13]:<14}{row.mode:<12}{row.temperature:>5g}{row.n:>3}"
                  f"{pct(ttfts, 50):>8.2f}s{pct(ttfts, 90):>6.2f}s{pct(ttfts, 99):>6.2f}s"
                  f"{pct(gaps, 50) * 1000:>7.1f}ms{pct(gaps, 99) * 1000:>4.0f}ms{errs:>4}"
                  f"{ovh:>8.3f}ms{rest:>7.3f}ms")
    print("overhead: the worker's step-loop time outside llama_decode and sampling, per "
          "generated token (from /metrics).\napi CPU: CPU time of the api and scheduler "
          "processes per generated token (from /proc; on 2 cores it is taken from llama.cpp).")


def print_switch(rows: list[Row], cols: list[Column]) -> None:
    switch = [r for r in rows if r.mode == SWITCH]
    if not switch:
        return
    print(f"\nswitch: {SWITCH_CONVERSATIONS} conversations taking turns over "
          f"{SWITCH_SLOTS} slots, {SWITCH_TURNS} turns, up to {SWITCH_TOKENS} tokens per "
          "reply")
    print(f"{'column':<24}{'temp':>5}{'cold TTFT p50':>15}{'later p50':>11}{'later/cold':>11}"
          f"{'err':>5}")
    for row in switch:
        for col in cols:
            cell = row.cells.get(col.label)
            if cell is None or not cell.results:
                continue
            cold = pct([r.ttft for r in cell.results if not r.error], 50)
            later = pct([r.ttft for r in cell.later if not r.error], 50)
            errs = sum(1 for r in cell.results + cell.later if r.error)
            print(f"{col.label[:23]:<24}{row.temperature:>5g}{cold:>14.3f}s{later:>10.3f}s"
                  f"{later / cold:>11.2f}{errs:>5}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3,
                    help="runs of each row, the columns back to back in each; medians shown")
    ap.add_argument("--mode", default="unique,shared,unique-long",
                    help=f"comma list of {', '.join((*MODES, SWITCH))}")
    ap.add_argument("--parallel", type=int, default=0, help="hearth slots (0: max concurrency)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--port", type=int, default=18766)
    ap.add_argument("--no-raw", action="store_true", help="skip the raw-engine baseline")
    ap.add_argument("--hearth-args", action="append", default=[],
                    help="[LABEL=]extra `hearth serve` flags: one hearth column each "
                    "(repeatable)")
    ap.add_argument("--temperature", default="0", help="comma list; 0: greedy")
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--llama-server", metavar="PATH",
                    help="also measure llama.cpp's llama-server binary, same settings and run")
    ap.add_argument("--llama-body", default="{}", metavar="JSON",
                    help='request fields for llama-server only, e.g. \'{"top_k": 0, "min_p": 0}\' '
                    "(its own chain then matches hearth's temperature-only sampling)")
    ap.add_argument("--llama-spec", default="off",
                    help="comma list of llama-server columns: off, or a --spec-type value "
                    "(ngram-simple, ngram-mod, ...)")
    args = ap.parse_args()
    temps = [float(t) for t in args.temperature.split(",") if t]
    levels = [int(x) for x in args.concurrency.split(",")]
    modes = [m for m in args.mode.split(",") if m]
    if any(m not in (*MODES, SWITCH) for m in modes):
        ap.error(f"--mode takes {', '.join((*MODES, SWITCH))}")
    if SWITCH in modes and len(modes) > 1:
        ap.error("--mode switch runs on its own (its servers have 4 slots)")
    labels = [label for label, _ in parse_variants(args.hearth_args)]
    if len(set(labels)) < len(labels):
        ap.error(f"--hearth-args labels must differ: {', '.join(labels)}")
    parallel = SWITCH_SLOTS if SWITCH in modes else args.parallel or max(levels)
    path = bench_model()
    banned = eog_tokens(path)

    rows: list[Row] = []
    next_base = 0  # every request of the whole run gets its own prompt number
    with contextlib.ExitStack() as stack:
        cols = start_servers(stack, args, path, parallel, banned)
        if not args.no_raw and SWITCH not in modes:
            cols.append(Column("raw engine", "raw"))
        for mode in modes:
            for temp in temps:
                sampling = {"temperature": temp, "top_p": args.top_p}
                for n in ([1] if mode == SWITCH else levels):
                    row = Row(mode, temp, n)
                    for _ in range(args.repeat):
                        base = next_base
                        next_base += max(n * args.rounds, SWITCH_CONVERSATIONS)
                        prompts = [render(path, messages(base + i, mode if mode != SWITCH
                                                         else "unique")) for i in range(n)]
                        for col in cols:
                            measure(col, row, n, args.rounds, args.tokens, banned, base,
                                    sampling, prompts, path, args.threads)
                    rows.append(row)

    how = ", ".join("greedy" if t <= 0 else f"temperature {t:g}" for t in temps)
    print(f"\nmodel {BENCH_MODEL_ID}, {args.tokens} tokens/request, {how}, top_p "
          f"{args.top_p:g}, {args.threads} threads, --parallel {parallel}, {args.rounds} "
          f"round(s) per client, median of {args.repeat} runs (columns back to back)")
    for col in cols:
        if col.kind != "raw":
            what = " ".join(col.args) or "(defaults)"
            what += f", request fields {json.dumps(col.body)}" if col.body else ""
            print(f"  {col.label}: {col.kind} {what}")
    if any(r.mode != SWITCH for r in rows):
        print_rows([r for r in rows if r.mode != SWITCH], cols)
        print_hearth_detail(rows, cols)
    print_switch(rows, cols)
    raw = next((c for c in cols if c.kind == "raw"), None)
    for row in rows:
        h, r = row.cells.get(cols[0].label), row.cells.get(raw.label) if raw else None
        if row.n == 1 and h and r and h.tps and r.tps:
            print(f"{row.mode} T={row.temperature:g}: N=1 end-to-end cost per token "
                  f"(1/{cols[0].label} - 1/raw): "
                  f"{(1 / median(h.tps) - 1 / median(r.tps)) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
