"""Two joined boxes against one local worker, in one run: throughput, the hop, affinity.

    sudo .venv/bin/python bench/scale_out.py [--tiny] [--runs 3] [--tokens 32]
                                             [--streams 16 32] [--no-affinity]

Needs root: each box is a network namespace of its own (``ip netns add``, a veth pair to this
one, deleted at the end), as tests/integration/test_remote_workers.py makes them, running
``hearth worker --join`` over tcp + CURVE to a ``hearth serve --worker-listen`` here. Every
process shares this machine's cores, so the numbers are ratios against a baseline measured in
the same run, never a speed-up.

* **Throughput.** Server P serves the model three ways: ``<id>``, its own worker with
  2 x ``--slots`` slots and ``--local-threads`` threads (the baseline: the same total slots);
  ``remote-<id>``, the same file on two boxes with ``--slots`` slots and one thread each.
  The baseline has one thread by default, as each box: with two, on a loaded 2-core machine,
  llama.cpp's two threads wait on each other and the baseline fell to a fifth (tiny model,
  16 streams: 255 tokens/s against 1,121 with one thread), which says nothing about boxes.
  N greedy streams at once (each its own prompt, so routing spreads them by load; end of
  generation biased away so each makes ``--tokens`` tokens), alternating between the two,
  ``--runs`` times: aggregate tokens per second (content chunks, one a token, over the wall
  time), medians, and two boxes / one.
* **The hop.** One stream at a time, alternating between ``hop-<id>`` (a local worker with a
  box's slots and one thread) and ``remote-<id>``: the median per-token gap and time to first
  token as the client sees them, and what the joined worker adds (its events relayed over ipc
  to its box's link process, across the veth pair with CURVE, decoded and republished).
* **Affinity.** Server E is server P with ``--routing even``, with two boxes of its own (two
  more namespaces). bench/affinity.py's multi-turn workload (``--conversations`` at once, each
  its own system prompt, ``--turns`` turns with pauses) runs on ``remote-<id>`` of each server
  in turn, alternating: the share of the later turns' prompt tokens found cached, and TTFT p50.
  Each box has ``--affinity-slots`` slots, no host-RAM prompt cache (``--cache-ram 0``: it
  would restore an evicted conversation on either rule).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))
from affinity import one_run, summary
from common import KEY, bench_model, eog_tokens, stream_chat
from remote_hop import PROMPT, stream

CLI = [sys.executable, "-m", "hearth.tools.cli"]
LOGS = Path(tempfile.gettempdir()) / "hearth-scale-out"  # each process's stderr, kept


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@contextmanager
def namespaces(count: int) -> Iterator[list[tuple[str, str]]]:
    """``count`` network namespaces, each joined to this one by a veth pair; yields (namespace,
    this end's address) for each. Every box reaches the first box's host address (where the
    servers listen) through its own link."""
    tag = os.getpid() % 10000
    made: list[tuple[str, str, str]] = []  # (namespace, host interface, host address)
    try:
        for i in range(count):
            net = f"10.{random.randint(100, 250)}.{random.randint(0, 250)}"
            ns, host_if, peer = f"hearth-b{tag}{i}", f"hb{tag}{i}a", f"hb{tag}{i}b"
            ip("netns", "add", ns)
            made.append((ns, host_if, f"{net}.1"))
            ip("link", "add", host_if, "type", "veth", "peer", "name", peer)
            ip("link", "set", peer, "netns", ns)
            ip("addr", "add", f"{net}.1/30", "dev", host_if)
            ip("link", "set", host_if, "up")
            ip("-n", ns, "addr", "add", f"{net}.2/30", "dev", peer)
            ip("-n", ns, "link", "set", peer, "up")
            ip("-n", ns, "link", "set", "lo", "up")
            if i:
                ip("-n", ns, "route", "add", f"{made[0][2]}/32", "via", f"{net}.1")
        yield [(ns, addr) for ns, _, addr in made]
    finally:
        for ns, host_if, _ in made:
            subprocess.run(["ip", "link", "del", host_if], capture_output=True, timeout=20)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env["XDG_CONFIG_HOME"] = str(home / "config")
    env["XDG_DATA_HOME"] = str(home / "data")
    return env


@contextmanager
def running(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[str]]:
    """``cmd`` running until the block ends; its stderr to ``log``."""
    with log.open("w") as sink:  # the child has its own copy of the descriptor
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=sink, text=True, env=env)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass(frozen=True)
class BoxSpec:
    """A box: its home (config dir: its key pair), its namespace and its ``hearth worker``
    arguments."""

    home: Path
    ns: str
    args: tuple[str, ...]


def server(stack: ExitStack, tmp: Path, name: str, models_dir: Path, model: str, port: int,
           listen: str, boxes: list[BoxSpec], tables: str, *args: str) -> None:
    """Start ``hearth serve`` (config: ``tables``, and the boxes' keys) listening for the
    boxes; start each box's ``hearth worker``; wait until the boxes' model answers."""
    home = tmp / name
    home.mkdir()
    keys = "".join(
        f'{b.home.name} = "' + subprocess.run([*CLI, "worker", "--print-key"],
                                              env=clean_env(b.home), check=True,
                                              capture_output=True, text=True).stdout.strip()
        + '"\n' for b in boxes)
    config = home / "hearth.toml"
    config.write_text(f"{tables}[workers]\n{keys}")
    proc = stack.enter_context(running(
        [*CLI, "serve", "--models-dir", str(models_dir), "--model", model, "--port", str(port),
         "--api-key", KEY, "--config", str(config), "--worker-listen", listen, *args],
        clean_env(home), LOGS / f"{name}.log"))
    out = proc.stdout
    assert out is not None
    key, ready = "", False
    for line in out:  # the key's line may come before or after the ready line
        if "--server-key '" in line:
            key = line.split("--server-key '", 1)[1].split("'", 1)[0]
        ready = ready or line.startswith("hearth is ready")
        if key and ready:
            break
    else:
        raise RuntimeError(f"{name} did not start")
    threading.Thread(target=out.read, daemon=True).start()  # never let its pipe fill
    for b in boxes:
        stack.enter_context(running(
            ["ip", "netns", "exec", b.ns, *CLI, "worker", "--join", listen, "--server-key", key,
             *b.args], clean_env(b.home), LOGS / f"{name}-{b.home.name}.log"))
    deadline = time.monotonic() + 120
    while True:
        try:
            stream_chat(port, f"remote-{model}", [{"role": "user", "content": "hi"}], 2)
            break
        except (RuntimeError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def aggregate(port: int, model: str, streams: int, tokens: int, banned: list[int]) -> float:
    """``streams`` streams at once, ``tokens`` tokens each: completion tokens per second over
    the wall time from the first request to the last token."""
    counts: list[int] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            _first, gaps = stream_with(port, model, tokens, banned, f"Stream {i}. ")
            counts.append(len(gaps) + 1)
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(counts) / (time.perf_counter() - t0)


def stream_with(port: int, model: str, tokens: int, banned: list[int],
                lead: str) -> tuple[float, list[float]]:
    """remote_hop's stream, its prompt led by ``lead`` (so streams differ from the start)."""
    return stream(port, model, tokens, banned,
                  [{"role": "user", "content": lead + PROMPT[0]["content"]}])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny random-weight model")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=32, help="tokens per throughput stream")
    ap.add_argument("--hop-tokens", type=int, default=64)
    ap.add_argument("--streams", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--slots", type=int, default=0,
                    help="slots per box (default: half the most streams)")
    ap.add_argument("--local-threads", type=int, default=1,
                    help="threads of the local baseline worker (the boxes have one each)")
    ap.add_argument("--no-affinity", action="store_true")
    ap.add_argument("--conversations", type=int, default=4)
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--affinity-slots", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=8, help="tokens per affinity answer")
    ap.add_argument("--think", type=float, default=0.5)
    ap.add_argument("--port", type=int, default=18795)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/scale_out.py needs root (ip netns add)", file=sys.stderr)
        return 2
    slots = args.slots or max(args.streams) // 2
    LOGS.mkdir(exist_ok=True)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        if args.tiny:
            from hearth.tools.cli.tiny_model import build_tiny_model

            path = build_tiny_model(tmp / "src" / "tiny.gguf")
            banned = [2]
        else:
            path = bench_model()
            banned = eog_tokens(path)
        model = path.stem
        (tmp / "server").mkdir()
        (tmp / "box").mkdir()
        for name in (model, f"hop-{model}"):
            (tmp / "server" / f"{name}.gguf").symlink_to(path)
        (tmp / "box" / f"remote-{model}.gguf").symlink_to(path)
        n_boxes = 2 if args.no_affinity else 4
        nets = stack.enter_context(namespaces(n_boxes))
        ctx = "1024"
        boxes = []
        for i, (ns, _addr) in enumerate(nets):
            h = tmp / f"box{i + 1}"
            h.mkdir()
            box_slots = slots if i < 2 else args.affinity_slots
            boxes.append(BoxSpec(h, ns, (
                "--models-dir", str(tmp / "box"), "--model", f"remote-{model}", "--parallel",
                str(box_slots), "--ctx-size", ctx, "--threads", "1", "--cache-ram", "0")))
        listen_host = nets[0][1]
        tables = (f'[models."hop-{model}"]\nparallel = {slots}\nthreads = 1\n'
                  f'[models."{model}"]\nthreads = {args.local_threads}\n')
        server(stack, tmp, "server-p", tmp / "server", model, args.port,
               f"tcp://{listen_host}:{args.port + 10}", boxes[:2], tables,
               "--parallel", str(2 * slots), "--ctx-size", ctx, "--cache-ram", "0")
        if not args.no_affinity:
            server(stack, tmp, "server-e", tmp / "server", model, args.port + 1,
                   f"tcp://{listen_host}:{args.port + 11}", boxes[2:],
                   f'[models."{model}"]\nthreads = 1\nparallel = 1\n', "--routing", "even",
                   "--ctx-size", ctx, "--cache-ram", "0")
        where = {"one": model, "two": f"remote-{model}"}
        for name in where.values():  # warm-up
            aggregate(args.port, name, 2, 4, banned)
        rate: dict[tuple[int, str], list[float]] = {}
        for run in range(args.runs):
            for n in args.streams:
                for label, name in where.items():
                    r = aggregate(args.port, name, n, args.tokens, banned)
                    rate.setdefault((n, label), []).append(r)
                    print(f"run {run} {n:>3} streams {label}: {r:8.1f} tokens/s", flush=True)
        hop = {"local": f"hop-{model}", "joined": f"remote-{model}"}
        stream_with(args.port, hop["local"], 4, banned, "")  # loads it
        ttft: dict[str, list[float]] = {k: [] for k in hop}
        gap: dict[str, list[float]] = {k: [] for k in hop}
        for _ in range(args.runs):
            for label, name in hop.items():
                first, gaps = stream_with(args.port, name, args.hop_tokens, banned, "")
                ttft[label].append(first)
                gap[label].append(sum(gaps) / len(gaps))
        aff: dict[str, list[tuple[float, float]]] = {"prefix": [], "even": []}
        if not args.no_affinity:
            ports = {"prefix": args.port, "even": args.port + 1}
            opts = SimpleNamespace(conversations=args.conversations, turns=args.turns,
                                   think=args.think, max_tokens=args.max_tokens)
            for run in range(args.runs):
                for routing, port in ports.items():
                    aff[routing].append(summary(one_run(port, f"remote-{model}", run, opts)))
                    hit, t = aff[routing][-1]
                    print(f"run {run} affinity {routing:>6}: {hit * 100:5.1f} % cached, "
                          f"TTFT p50 {t * 1000:7.1f} ms", flush=True)
    med = statistics.median
    print(f"\nmodel {model}, medians of {args.runs} runs; boxes in network namespaces on this "
          f"machine (veth, tcp + CURVE), all sharing its cores")
    print(f"throughput: one local worker ({2 * slots} slots, {args.local_threads} threads) "
          f"against two joined boxes "
          f"({slots} slots, 1 thread each); {args.tokens} tokens per stream")
    print(f"{'streams':>8}{'one, tok/s':>12}{'two, tok/s':>12}{'two/one':>9}")
    for n in args.streams:
        one, two = med(rate[n, "one"]), med(rate[n, "two"])
        print(f"{n:>8}{one:>12.1f}{two:>12.1f}{two / one:>9.2f}")
    g = {k: med(v) * 1000 for k, v in gap.items()}
    f = {k: med(v) * 1000 for k, v in ttft.items()}
    print(f"hop: one stream, {args.hop_tokens} tokens, {slots}-slot worker with 1 thread, local "
          f"against joined")
    print(f"{'':>8}{'gap ms':>10}{'TTFT ms':>10}")
    for k in hop:
        print(f"{k:>8}{g[k]:>10.3f}{f[k]:>10.1f}")
    print(f"{'added':>8}{g['joined'] - g['local']:>+10.3f}{f['joined'] - f['local']:>+10.1f}"
          f"   gap ratio {g['joined'] / g['local']:.3f}")
    if not args.no_affinity:
        print(f"affinity: 2 boxes x {args.affinity_slots} slots, {args.conversations} "
              f"conversations x {args.turns} turns, {args.max_tokens} tokens per answer; "
              f"turns after the first")
        print(f"{'routing':>8}{'cached':>9}{'TTFT p50':>11}")
        for routing, vals in aff.items():
            print(f"{routing:>8}{med(v[0] for v in vals) * 100:>8.1f}%"
                  f"{med(v[1] for v in vals) * 1000:>8.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
