"""The per-token cost of the remote-worker hop (tcp + CURVE), measured in one run.

    .venv/bin/python bench/remote_hop.py [--tiny] [--tokens 128] [--runs 5] [--threads 1]

One ``hearth serve --worker-listen tcp://127.0.0.1:PORT`` and one ``hearth worker --join`` on
this same machine, with the same model file, slots and threads: the server's own worker serves
it as ``<id>``, the joined worker as ``remote-<id>`` (a link to the same file). Single greedy
streams, end-of-generation tokens biased away so each makes exactly --tokens tokens, alternate
between the two so machine noise hits both alike. Prints the median over runs of each stream's
mean gap between tokens as the client sees them, and of the time to first token, and the
differences: what the hop adds (the worker's events relayed over ipc to its box's link
process, across the CURVE connection, decoded and republished by the scheduler). Over
loopback: a real network adds its own latency once per event (tokens stream; they are not
acknowledged one by one).
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

sys.path.insert(0, str(Path(__file__).parent))
from common import KEY, bench_model, eog_tokens

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]


def stream(port: int, model: str, n_tokens: int, banned: list[int],
           prompt: list[dict[str, str]] = PROMPT) -> tuple[float, list[float]]:
    """(time to first token, gaps between the next ones), seconds."""
    body = {"model": model, "messages": prompt, "stream": True, "temperature": 0,
            "max_tokens": n_tokens, "logit_bias": {str(t): -100 for t in banned}}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    first, last, gaps = 0.0, 0.0, []
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body),
                     {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        while line := resp.readline():
            if b'"content":"' in line and b'"content":""' not in line:
                now = time.perf_counter()
                if not first:
                    first = now - t0
                else:
                    gaps.append(now - last)
                last = now
            assert b'"error"' not in line, line
    finally:
        conn.close()
    return first, gaps


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny model, not gemma")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--port", type=int, default=18775)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
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
        (tmp / "server" / f"{model}.gguf").symlink_to(path)
        (tmp / "box" / f"remote-{model}.gguf").symlink_to(path)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        box_env = {**env, "XDG_CONFIG_HOME": str(tmp / "box-config")}
        srv_env = {**env, "XDG_CONFIG_HOME": str(tmp / "server-config")}
        cli = [sys.executable, "-m", "hearth.tools.cli"]
        box_key = subprocess.run([*cli, "worker", "--print-key"], env=box_env, check=True,
                                 capture_output=True, text=True).stdout.strip()
        (tmp / "hearth.toml").write_text(f'[workers]\nbox = "{box_key}"\n')
        listen = f"tcp://127.0.0.1:{args.port + 1}"
        same = ("--parallel", "4", "--ctx-size", "1024", "--threads", str(args.threads))
        srv = subprocess.Popen(
            [*cli, "serve", "--models-dir", str(tmp / "server"), "--model", model, "--port",
             str(args.port), "--api-key", KEY, "--config", str(tmp / "hearth.toml"),
             "--worker-listen", listen, *same],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=srv_env)
        box = None
        try:
            assert srv.stdout is not None
            server_key = ""
            for line in srv.stdout:
                if "--server-key '" in line:
                    server_key = line.split("--server-key '", 1)[1].split("'", 1)[0]
                    break
            box = subprocess.Popen(
                [*cli, "worker", "--join", listen, "--server-key", server_key, "--models-dir",
                 str(tmp / "box"), "--model", f"remote-{model}", *same],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=box_env)
            deadline = time.monotonic() + 120
            while True:  # until the box's model serves
                try:
                    stream(args.port, f"remote-{model}", 4, banned)
                    break
                except (AssertionError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            stream(args.port, model, 4, banned)  # warm-up
            ttft: dict[str, list[float]] = {"local": [], "remote": []}
            gap: dict[str, list[float]] = {"local": [], "remote": []}
            for _ in range(args.runs):
                for where, name in (("local", model), ("remote", f"remote-{model}")):
                    first, gaps = stream(args.port, name, args.tokens, banned)
                    assert len(gaps) >= args.tokens // 2, f"{where}: {len(gaps)} tokens"
                    ttft[where].append(first)
                    gap[where].append(sum(gaps) / len(gaps))  # the stream's mean
        finally:
            for proc in (box, srv):
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
            if srv.stdout is not None:
                srv.stdout.close()
    med = {w: (statistics.median(ttft[w]) * 1000, statistics.median(gap[w]) * 1000)
           for w in ttft}
    print(f"model {model}, {args.tokens} tokens, greedy, {args.threads} thread(s), "
          f"median of {args.runs} runs each, loopback")
    print(f"{'':<24}{'TTFT ms':>10}{'per-token gap ms':>18}")
    for where in ("local", "remote"):
        label = "local worker" if where == "local" else "joined worker (tcp+CURVE)"
        print(f"{label:<24}{med[where][0]:>10.2f}{med[where][1]:>18.3f}")
    print(f"{'added by the hop':<24}{med['remote'][0] - med['local'][0]:>10.2f}"
          f"{med['remote'][1] - med['local'][1]:>18.3f}   "
          f"gap ratio {med['remote'][1] / med['local'][1]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
