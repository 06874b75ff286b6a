"""``hearth status``: a terminal view of a running server, read from its /health and /metrics.

Shows the server's health, each model the scheduler has started (loaded or not, where it runs:
cpu or gpu with its layers on the GPU, slots busy/total,
tokens generated per second now, file size, worker starts and crashes), each worker process
(local or on a remote box: its host, state, slots, tokens/s, when it was last heard), the
remote boxes (link round trip, heartbeat) and the queue per API key.
"Tokens/s now" is the rise of ``hearth_completion_tokens_total`` between two scrapes one second
apart (with ``--watch N``: between one redraw and the next).

The URL and key are resolved like ``hearth models list``: ``--url`` or the settings' host, port
and prefix; ``--api-key``, else the configured key, else the saved generated key if its file
exists (none is created). /health and /metrics live at the server's root, so the API prefix is
dropped from the URL. Exit codes: 0 shown, 1 the server could not be read, 2 a usage error,
130 interrupted (but 0 after Ctrl-C in ``--watch``, the way to stop it).
"""

from __future__ import annotations

import argparse
import json
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from hearth.tools.cli.formatting import format_size, table
from hearth.tools.cli.server_client import (
    SERVER_CLIENT_HELPS,
    TIMEOUT_S,
    Unreachable,
    http_get,
    server_key,
    server_tls,
)
from hearth.tools.cli.setting_flags import add_setting_flags
from hearth.tools.settings import Settings, SettingsError, resolve
from hearth.tools.tls import TlsError

_RATE_WINDOW_S = 1.0
_CLEAR = "\x1b[H\x1b[2J"


@dataclass
class ModelView:
    """One model as /metrics reports it."""

    loaded: bool = False
    busy: int = 0
    slots: int = 0
    size_bytes: int = 0
    starts: int = 0
    crashes: int = 0
    completion_tokens: float = 0.0
    gpu_layers: int | None = None  # of its layers on a GPU (0: the CPU); None: not reported
    layers: int = 0


@dataclass
class RemoteView:
    """One remote worker box as /metrics reports it (``hearth_remote_worker_*``)."""

    host: str = ""
    slots: int = 0
    busy: int = 0
    tokens_per_s: float = 0.0
    rtt_s: float = 0.0
    heartbeat_age_s: float = 0.0
    memory_budget: int = 0  # bytes


# metric sample name -> RemoteView field it fills (per ``worker`` label)
_REMOTE_FIELDS: dict[str, str] = {
    "hearth_remote_worker_slots": "slots",
    "hearth_remote_worker_slots_busy": "busy",
    "hearth_remote_worker_tokens_per_second": "tokens_per_s",
    "hearth_remote_worker_rtt_seconds": "rtt_s",
    "hearth_remote_worker_heartbeat_age_seconds": "heartbeat_age_s",
    "hearth_remote_worker_memory_budget_bytes": "memory_budget",
}


@dataclass
class WorkerView:
    """One worker process, local or on a box, as /metrics reports it (``hearth_worker_*``)."""

    model: str = ""
    place: str = ""
    host: str = ""
    up: bool = False
    slots: int = 0
    busy: int = 0
    tokens_per_s: float = 0.0
    heard_age_s: float = 0.0


# metric sample name -> WorkerView field it fills (per ``worker`` label)
_WORKER_FIELDS: dict[str, str] = {
    "hearth_worker_up": "up",
    "hearth_worker_slots": "slots",
    "hearth_worker_slots_busy": "busy",
    "hearth_worker_tokens_per_second": "tokens_per_s",
    "hearth_worker_heard_age_seconds": "heard_age_s",
}


@dataclass
class Scrape:
    """What one read of /metrics says (the parts ``hearth status`` shows)."""

    scheduler_up: bool = False
    models: dict[str, ModelView] = field(default_factory=dict)
    queue: dict[str, int] = field(default_factory=dict)  # key name -> requests waiting
    taken_at: float = 0.0  # time.monotonic() when it was read
    remotes: dict[str, RemoteView] = field(default_factory=dict)  # by worker (key) name
    workers: dict[str, WorkerView] = field(default_factory=dict)  # by worker id


# metric sample name -> ModelView field it fills (per ``model`` label)
_MODEL_FIELDS: dict[str, str] = {
    "hearth_model_loaded": "loaded",
    "hearth_slots_busy": "busy",
    "hearth_slots_total": "slots",
    "hearth_model_size_bytes": "size_bytes",
    "hearth_worker_starts_total": "starts",
    "hearth_worker_crashes_total": "crashes",
    "hearth_completion_tokens_total": "completion_tokens",
    "hearth_model_gpu_layers": "gpu_layers",
    "hearth_model_layers": "layers",
}


def parse_metrics(text: str, taken_at: float = 0.0) -> Scrape:
    """Read the series ``hearth status`` shows from Prometheus text exposition.
    Raises ValueError if ``text`` is not Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    scrape = Scrape(taken_at=taken_at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "hearth_scheduler_up":
                scrape.scheduler_up = value >= 1
            elif name == "hearth_queue_depth" and "key" in labels:
                scrape.queue[labels["key"]] = int(value)
            elif name in _REMOTE_FIELDS and "worker" in labels:
                remote = scrape.remotes.setdefault(labels["worker"], RemoteView())
                remote.host = labels.get("host", "")
                attr = _REMOTE_FIELDS[name]
                setattr(remote, attr,
                        int(value) if attr in ("slots", "busy", "memory_budget") else value)
            elif name in _WORKER_FIELDS and "worker" in labels:
                worker = scrape.workers.setdefault(labels["worker"], WorkerView())
                worker.model = labels.get("model", "")
                worker.place = labels.get("place", "")
                worker.host = labels.get("host", "")
                attr = _WORKER_FIELDS[name]
                if attr == "up":
                    worker.up = value >= 1
                else:
                    setattr(worker, attr, int(value) if attr in ("slots", "busy") else value)
            elif name in _MODEL_FIELDS and "model" in labels:
                view = scrape.models.setdefault(labels["model"], ModelView())
                attr = _MODEL_FIELDS[name]
                if attr == "loaded":
                    view.loaded = value >= 1
                elif attr == "completion_tokens":
                    view.completion_tokens = value
                else:
                    setattr(view, attr, int(value))
    return scrape


def tokens_per_second(before: Scrape, after: Scrape) -> dict[str, float]:
    """Completion tokens per second for each model, between two scrapes. A counter that went
    down (the server restarted) counts from zero."""
    seconds = after.taken_at - before.taken_at
    if seconds <= 0:
        return {}
    rates: dict[str, float] = {}
    for model, view in after.models.items():
        prev = before.models.get(model)
        start = prev.completion_tokens if prev is not None else 0.0
        done = view.completion_tokens - start
        if done < 0:
            done = view.completion_tokens
        rates[model] = done / seconds
    return rates


def _device(m: ModelView) -> str:
    """Where a loaded model runs: "cpu", or "gpu 30/30" (layers on the GPU / all)."""
    if not m.loaded or m.gpu_layers is None:
        return "-"
    return "cpu" if m.gpu_layers == 0 else f"gpu {m.gpu_layers}/{m.layers}"


def render(root: str, health: dict[str, Any] | None, scrape: Scrape | None,
           rates: dict[str, float] | None, note: str = "") -> str:
    """The text ``hearth status`` prints. ``health`` is /health's JSON body (None when the
    server did not answer), ``scrape`` the parsed /metrics (None when unreadable), ``rates``
    tokens/s per model (None when not measured)."""
    lines: list[str] = []
    if health is None:
        lines.append(f"server   {root}  not reachable")
    else:
        state = str(health.get("status", "?"))
        reason = health.get("reason")
        lines.append(f"server   {root}  {state}" + (f" ({reason})" if reason else ""))
        if health.get("model"):
            lines.append(f"default  {health['model']}")
    if scrape is not None:
        if not scrape.scheduler_up:
            lines.append("scheduler  not reporting (stopped or starting)")
        busy = sum(m.busy for m in scrape.models.values())
        total = sum(m.slots for m in scrape.models.values())
        queued = sum(scrape.queue.values())
        summary = f"slots    {busy}/{total} busy   queued {queued}"
        if rates is not None:
            summary += f"   tokens/s {sum(rates.values()):.1f}"
        lines.append(summary)
        lines.append("")
        if scrape.models:
            rows = []
            for model, m in sorted(scrape.models.items()):
                rate = "-" if rates is None else f"{rates.get(model, 0.0):.1f}"
                rows.append([model, "yes" if m.loaded else "no", _device(m),
                             f"{m.busy}/{m.slots}", rate,
                             format_size(m.size_bytes) if m.size_bytes else "-",
                             str(m.starts), str(m.crashes)])
            lines.append(table(("MODEL", "LOADED", "DEVICE", "SLOTS", "TOKENS/S", "SIZE",
                                 "STARTS", "CRASHES"), rows))
        else:
            lines.append("no model started yet")
        if scrape.workers:
            lines.append("")
            lines.append(table(
                ("WORKER", "MODEL", "WHERE", "HOST", "STATE", "SLOTS", "TOKENS/S",
                 "LAST HEARD"),
                [[wid, w.model, w.place or "-", w.host or "-", "ready" if w.up else "starting",
                  f"{w.busy}/{w.slots}", f"{w.tokens_per_s:.1f}", f"{w.heard_age_s:.1f} s ago"]
                 for wid, w in sorted(scrape.workers.items(),
                                      key=lambda kv: (kv[1].model, kv[1].place != "local",
                                                      kv[1].place, kv[0]))]))
        if scrape.remotes:
            lines.append("")
            lines.append(table(
                ("REMOTE WORKER", "HOST", "SLOTS", "TOKENS/S", "RTT", "LAST HEARD", "MEMORY"),
                [[name, r.host or "-", f"{r.busy}/{r.slots}", f"{r.tokens_per_s:.1f}",
                  f"{r.rtt_s * 1000:.1f} ms", f"{r.heartbeat_age_s:.1f} s ago",
                  format_size(r.memory_budget) if r.memory_budget else "-"]
                 for name, r in sorted(scrape.remotes.items())]))
        if scrape.queue:
            lines.append("")
            lines.append(table(("KEY", "QUEUED"),
                                [[k, str(n)] for k, n in sorted(scrape.queue.items())]))
    if note:
        lines.append("")
        lines.append(note)
    return "\n".join(lines) + "\n"


# ---- reading the server -------------------------------------------------------------------


class ServerError(Exception):
    """The server could not be read; the message says why, for the user."""


def server_root(url: str, api_prefix: str) -> str:
    """The server's root URL (where /health and /metrics are) from a base URL that may end in
    the API prefix, as ``hearth serve`` prints it."""
    url = url.rstrip("/")
    if api_prefix and url.endswith(api_prefix):
        url = url[: -len(api_prefix)]
    return url


def _get(url: str, key: str | None, timeout: float,
         tls: ssl.SSLContext | None) -> tuple[int, bytes]:
    """GET ``url``; (status, body) for any HTTP answer, ServerError when there is none."""
    try:
        return http_get(url, key=key, accept="text/plain, application/json", timeout=timeout,
                        tls=tls)
    except Unreachable as exc:
        raise ServerError(f"nothing answers at {url.rsplit('/', 1)[0]}: is `hearth serve` "
                          f"running there?") from exc


def read_health(root: str, timeout: float = TIMEOUT_S,
                tls: ssl.SSLContext | None = None) -> dict[str, Any]:
    status, body = _get(root + "/health", None, timeout, tls)
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ServerError(f"{root}/health answered HTTP {status} without hearth's JSON: is this "
                          f"a hearth server?")
    return doc


def read_metrics(root: str, key: str | None, timeout: float = TIMEOUT_S,
                 tls: ssl.SSLContext | None = None) -> Scrape:
    status, body = _get(root + "/metrics", key, timeout, tls)
    if status == 401:
        raise ServerError("the server refused the API key for /metrics: pass --api-key (or "
                          "start the server with --metrics-public)")
    if status != 200:
        raise ServerError(f"{root}/metrics answered HTTP {status}")
    try:
        return parse_metrics(body.decode("utf-8"), time.monotonic())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServerError(f"{root}/metrics is not Prometheus text: {exc}") from None


# ---- the command --------------------------------------------------------------------------


# argparse's subparsers action has no public name; typeshed calls it _SubParsersAction
def add_status_parser(
        sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``status`` on the top-level subparsers object ``sub``."""
    parser = sub.add_parser(
        "status", help="show what a running server is doing (models, slots, queue, tokens/s)",
        description="Show a running server's health, its models (loaded, slots busy/total, "
                    "tokens/s now, size, worker starts and crashes) and the queue per API key, "
                    "read from its /health and /metrics.")
    add_setting_flags(parser, ("host", "port", "api_prefix", "api_key", "tls_cert"), {
        **SERVER_CLIENT_HELPS,
        "api_prefix": "the server's API prefix (dropped from --url: /metrics is at the root)",
    })
    parser.add_argument("--url", default=None,
                        help="the server's URL, e.g. http://127.0.0.1:1337/v1 (default: "
                             "http://HOST:PORT from the settings)")
    parser.add_argument("--watch", metavar="SECONDS", type=_interval, default=None,
                        help="redraw every SECONDS until Ctrl-C")
    return parser


def _interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _snapshot(root: str, key: str | None, previous: Scrape | None,
              sleep: Callable[[float], None],
              tls: ssl.SSLContext | None) -> tuple[str, Scrape | None, bool]:
    """Read the server once (twice, a second apart, without ``previous``) and render it.
    Returns the text, the scrape to compare the next one with, and whether all was read."""
    try:
        health = read_health(root, tls=tls)
    except ServerError as exc:
        return render(root, None, None, None, str(exc)), None, False
    try:
        if previous is None:
            previous = read_metrics(root, key, tls=tls)
            sleep(_RATE_WINDOW_S)
        scrape = read_metrics(root, key, tls=tls)
    except ServerError as exc:
        return render(root, health, None, None, str(exc)), None, False
    return render(root, health, scrape, tokens_per_second(previous, scrape)), scrape, True


def run_status(args: argparse.Namespace, out: TextIO | None = None,
               sleep: Callable[[float], None] = time.sleep) -> int:
    """Run a parsed ``hearth status`` command; returns the exit status."""
    stream = sys.stdout if out is None else out
    try:
        settings: Settings = resolve(args)
        tls = server_tls(settings, url_given=bool(args.url))
    except (SettingsError, TlsError) as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return 2
    root = server_root(args.url or settings.base_url, settings.api_prefix)
    key = server_key(settings)
    if args.watch is None:
        try:
            text, _, ok = _snapshot(root, key, None, sleep, tls)
        except KeyboardInterrupt:
            return 130
        stream.write(text)
        return 0 if ok else 1
    clear = _CLEAR if stream.isatty() else "\n"
    previous: Scrape | None = None
    try:
        while True:
            text, previous, _ = _snapshot(root, key, previous, sleep, tls)
            stream.write(clear + time.strftime("%H:%M:%S  ") + f"every {args.watch:g} s, "
                         "Ctrl-C to stop\n" + text)
            stream.flush()
            sleep(args.watch)
    except KeyboardInterrupt:
        stream.write("\n")
        return 0
