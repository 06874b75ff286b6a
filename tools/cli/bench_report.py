"""``hearth bench`` results: per-request records, per-level statistics, the table, JSON and PNG.

The load generator (``hearth.tools.cli.bench``) produces one :class:`RequestResult` per
request; :func:`summarize` turns the results of one concurrency level on one server into the
level's statistics (a plain dict, exactly what goes into the JSON report); :func:`format_table`,
:func:`write_json` and :func:`write_png` present them. Everything here is pure and runs on
finished data, so it is unit-tested without a server.

Units: every duration in the JSON is in seconds (``*_s``); the printed table shows milliseconds.
Percentiles interpolate linearly between the two nearest samples (numpy's default method), and
are ``null`` where there is no sample (no successful request, or no inter-token gap).

``bench.json``::

    schema          1 (bumped when a field changes meaning or goes away)
    created         ISO time the run started; duration_s: how long it took
    endpoint        "chat", "responses" or "embeddings"
    settings        concurrency [levels], requests, max_tokens (chat), prompt_tokens, prompt_mode,
                    rounds, timeout_s, extra_body
    prompt_note     how prompts were sized (4 characters per token) and what the servers counted
    servers[]       name ("A", "B" for --compare), url, model, levels[] — one per concurrency:
      concurrency, requests (sent), ok, errors, errors_by_kind {"503 server_overloaded": 2, …}
      wall_s          first request sent to last response done (summed over rounds)
      requests_per_s  successful requests / wall_s
      tokens          completion tokens (chat) or input tokens (embeddings) of ok requests
      tokens_per_s    tokens / wall_s: the aggregate over all concurrent requests
      tokens_estimated  true if a server sent no usage, so tokens were counted as content
                      chunks (chat) or 4 characters per token (embeddings)
      prompt_tokens_mean, cached_prompt_tokens   from the server's usage; null if not sent
      latency_s       {p50, p90, p99, mean}: request sent to response complete
      chat only: completion_tokens_mean, ttft_s {p50, p90, p99, mean} (to the first content
                      chunk), itl_s {p50, p99, mean} (gaps between content chunks)
    comparison[]    with --compare, per level: concurrency, tokens_per_s_ratio,
                    requests_per_s_ratio, ttft_p50_ratio (chat) or latency_p50_ratio — all B / A

``bench.png``: two panels against concurrency (log2 axis), one line per server: left the
aggregate tokens/s, right TTFT (chat) or request latency (embeddings) in ms, p50 solid and p90
dashed.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = 1  # bumped when a field of the JSON report changes meaning or goes away


@dataclass
class RequestResult:
    """One request as the client saw it. ``error`` is "" on success, else its kind, e.g.
    "503 server_overloaded", "timeout", "connection ConnectionRefusedError", "stream
    server_error" (an error event in the middle of a stream)."""

    error: str = ""
    latency: float = 0.0  # request sent -> response complete
    ttft: float | None = None  # request sent -> first content (streaming chat only)
    gaps: list[float] = field(default_factory=list)  # between consecutive content chunks
    tokens: int = 0  # completion tokens (chat) or input tokens (embeddings)
    estimated: bool = False  # ``tokens`` is an estimate: the server sent no usage
    prompt_tokens: int | None = None  # the server's usage.prompt_tokens, when it sent one
    cached_tokens: int | None = None  # usage.prompt_tokens_details.cached_tokens, when sent

    @property
    def ok(self) -> bool:
        return not self.error


def percentile(values: Iterable[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) by linear interpolation; None for no values."""
    data = sorted(values)
    if not data:
        return None
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in [0, 100], not {p}")
    pos = (len(data) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def distribution(values: Sequence[float], points: Sequence[int]) -> dict[str, float | None]:
    """``{"p50": …, "p90": …, "mean": …}`` for the given percentile points."""
    out: dict[str, float | None] = {f"p{p}": percentile(values, p) for p in points}
    out["mean"] = mean(values)
    return out


def streamed(endpoint: str) -> bool:
    """Whether ``endpoint``'s answers are streamed and timed token by token (TTFT, gaps)."""
    return endpoint in ("chat", "responses", "messages")


def summarize(results: Sequence[RequestResult], wall_s: float, concurrency: int,
              endpoint: str) -> dict[str, Any]:
    """Statistics of one level on one server (pooled over rounds: pass every result and the
    summed wall time). Throughput counts successful requests only, over the level's wall time
    (first request sent to last response done)."""
    ok = [r for r in results if r.ok]
    tokens = sum(r.tokens for r in ok)
    prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    cached = [r.cached_tokens for r in ok if r.cached_tokens is not None]
    level: dict[str, Any] = {
        "concurrency": concurrency,
        "requests": len(results),
        "ok": len(ok),
        "errors": len(results) - len(ok),
        "errors_by_kind": dict(sorted(Counter(r.error for r in results if r.error).items())),
        "wall_s": wall_s,
        "requests_per_s": len(ok) / wall_s if wall_s > 0 else None,
        "tokens": tokens,
        "tokens_per_s": tokens / wall_s if wall_s > 0 else None,
        "tokens_estimated": any(r.estimated for r in ok),
        "prompt_tokens_mean": mean(prompts),
        "cached_prompt_tokens": sum(cached) if cached else None,
        "latency_s": distribution([r.latency for r in ok], (50, 90, 99)),
    }
    if streamed(endpoint):
        level["completion_tokens_mean"] = tokens / len(ok) if ok else None
        level["ttft_s"] = distribution([r.ttft for r in ok if r.ttft is not None], (50, 90, 99))
        level["itl_s"] = distribution([g for r in ok for g in r.gaps], (50, 99))
    return level


def comparison(servers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level, the second server's tokens/s, requests/s and TTFT p50 over the first's."""
    if len(servers) < 2:
        return []
    a, b = servers[0], servers[1]
    out = []
    for la, lb in zip(a["levels"], b["levels"], strict=True):
        row: dict[str, Any] = {"concurrency": la["concurrency"]}
        row["tokens_per_s_ratio"] = _ratio(lb["tokens_per_s"], la["tokens_per_s"])
        row["requests_per_s_ratio"] = _ratio(lb["requests_per_s"], la["requests_per_s"])
        key = "ttft_s" if "ttft_s" in la else "latency_s"
        row[key.removesuffix("_s") + "_p50_ratio"] = _ratio(lb[key]["p50"], la[key]["p50"])
        out.append(row)
    return out


def _ratio(x: float | None, y: float | None) -> float | None:
    return x / y if x is not None and y else None


# ---- presentation ---------------------------------------------------------------------------


def _ms(v: float | None) -> str:
    if v is None:
        return "-"
    ms = v * 1000
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}" if v < 100 else f"{v:.0f}"


def format_table(report: dict[str, Any]) -> str:
    """The human summary: one row per server and level, then errors by kind, estimate notes
    and (with two servers) the ratios."""
    chat = streamed(report["endpoint"])
    s = report["settings"]
    lines = [f"hearth bench · {report['endpoint']} · prompt ~{s['prompt_tokens']} tokens "
             f"({s['prompt_mode']})" + (f" · max_tokens {s['max_tokens']}" if chat else "")
             + f" · {s['requests']} requests per level"
             + (f" × {s['rounds']} rounds" if s["rounds"] > 1 else "")]
    for srv in report["servers"]:
        lines.append(f"  {srv['name']}: {srv['url']}  model {srv['model']}")
    tok = "tok/s" if chat else "in tok/s"
    head = f"{'server':<7}{'conc':>5}{'ok/req':>9}{'req/s':>8}{tok:>10}"
    if chat:
        head += (f"{'TTFT p50':>10}{'p90':>8}{'p99':>8}{'ITL p50':>9}{'p99':>8}"
                 f"{'tok/req':>8}")
    else:
        head += f"{'lat p50':>9}{'p90':>8}{'p99':>8}"
    head += f"{'errors':>8}"
    lines += ["", head + "   (latencies in ms)", "-" * len(head)]
    notes: list[str] = []
    estimated = False
    for srv in report["servers"]:
        for lv in srv["levels"]:
            star = "*" if lv["tokens_estimated"] else ""
            estimated |= bool(star)
            row = (f"{srv['name']:<7}{lv['concurrency']:>5}"
                   f"{str(lv['ok']) + '/' + str(lv['requests']):>9}"
                   f"{_num(lv['requests_per_s']):>8}{_num(lv['tokens_per_s']) + star:>10}")
            if chat:
                t, i = lv["ttft_s"], lv["itl_s"]
                row += (f"{_ms(t['p50']):>10}{_ms(t['p90']):>8}{_ms(t['p99']):>8}"
                        f"{_ms(i['p50']):>9}{_ms(i['p99']):>8}"
                        f"{_num(lv['completion_tokens_mean']):>8}")
            else:
                lat = lv["latency_s"]
                row += f"{_ms(lat['p50']):>9}{_ms(lat['p90']):>8}{_ms(lat['p99']):>8}"
            lines.append(row + f"{lv['errors']:>8}")
            for kind, n in lv["errors_by_kind"].items():
                notes.append(f"  {srv['name']} at concurrency {lv['concurrency']}: "
                             f"{n} × {kind}")
    if notes:
        lines += ["", "errors by kind:", *notes]
    if estimated:
        lines += ["", "* estimated: the server sent no usage, so tokens were counted "
                  + ("as content chunks" if chat else "as 4 characters per token")]
    for row in report.get("comparison", []):
        key = "ttft_p50_ratio" if chat else "latency_p50_ratio"
        label = "TTFT p50" if chat else "latency p50"
        if row is report["comparison"][0]:
            lines += ["", "B / A:"]
        lines.append(f"  concurrency {row['concurrency']:>3}: tokens/s "
                     f"{_num(row['tokens_per_s_ratio'])}, {label} {_num(row[key])}")
    lines += ["", f"prompt length: {report['prompt_note']}"]
    return "\n".join(lines)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")


def write_png(report: dict[str, Any], path: Path) -> None:
    """Two panels against concurrency, one line per server: tokens/s, and TTFT (chat) or
    request latency (embeddings) — p50 solid, p90 dashed."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot's import
    import matplotlib.pyplot as plt

    chat = streamed(report["endpoint"])
    fig, (ax_tps, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
    levels = report["settings"]["concurrency"]
    key, what = ("ttft_s", "TTFT") if chat else ("latency_s", "request latency")
    for i, srv in enumerate(report["servers"]):
        color = f"C{i}"
        xs = [lv["concurrency"] for lv in srv["levels"]]
        est = any(lv["tokens_estimated"] for lv in srv["levels"])
        label = f"{srv['name']}: {srv['url']} ({srv['model']})" + (" *est." if est else "")
        ax_tps.plot(xs, [_nan(lv["tokens_per_s"]) for lv in srv["levels"]], "o-",
                    color=color, label=label)
        ax_lat.plot(xs, [_nan(lv[key]["p50"], 1000) for lv in srv["levels"]], "o-",
                    color=color, label=f"{srv['name']} p50")
        ax_lat.plot(xs, [_nan(lv[key]["p90"], 1000) for lv in srv["levels"]], "s--",
                    color=color, alpha=0.6, label=f"{srv['name']} p90")
    for ax in (ax_tps, ax_lat):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(n) for n in levels])
        ax.minorticks_off()
        ax.set_xlabel("concurrent requests")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    ax_tps.set_ylabel("completion tokens/s (all requests)" if chat else "input tokens/s")
    ax_tps.set_title("throughput")
    ax_lat.set_ylabel(f"{what} (ms)")
    ax_lat.set_title(what)
    ax_tps.legend(fontsize=8, loc="best")
    ax_lat.legend(fontsize=8, loc="best")
    s = report["settings"]
    fig.suptitle(f"hearth bench · {report['endpoint']} · prompt ~{s['prompt_tokens']} tokens "
                 f"({s['prompt_mode']})" + (f" · max_tokens {s['max_tokens']}" if chat else ""))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _nan(v: float | None, scale: float = 1.0) -> float:
    return float("nan") if v is None else v * scale
