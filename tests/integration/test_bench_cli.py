"""`hearth bench` as a real subprocess against real hearth servers on the tiny model (and
against a small fake server that sends no usage and sheds load)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from harness import API_KEY, Server

pytestmark = pytest.mark.integration

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LEVEL_FIELDS = {"concurrency", "requests", "ok", "errors", "errors_by_kind", "wall_s",
                "requests_per_s", "tokens", "tokens_per_s", "tokens_estimated",
                "prompt_tokens_mean", "cached_prompt_tokens", "latency_s"}
CHAT_FIELDS = LEVEL_FIELDS | {"completion_tokens_mean", "ttft_s", "itl_s"}


def bench(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HEARTH_") and k != "OPENAI_API_KEY"}
    return subprocess.run([sys.executable, "-m", "hearth.tools.cli", "bench", "--out", str(out),
                           *args], capture_output=True, text=True, env=env, timeout=240,
                          cwd=out.parent)


def table_rows(stdout: str) -> list[tuple[str, int]]:
    return [(m[1], int(m[2])) for m in re.finditer(r"^([AB]) +(\d+) ", stdout, re.M)]


def check_chat_levels(server: dict[str, Any], levels: list[int], requests: int,
                      max_tokens: int) -> None:
    assert [lv["concurrency"] for lv in server["levels"]] == levels
    for lv in server["levels"]:
        assert set(lv) == CHAT_FIELDS
        assert lv["requests"] == lv["ok"] == max(requests, lv["concurrency"])
        assert lv["errors"] == 0 and lv["errors_by_kind"] == {}
        assert lv["tokens_estimated"] is False  # hearth sends usage; nothing estimated
        assert 0 < lv["tokens"] <= lv["ok"] * max_tokens
        assert lv["tokens_per_s"] > 0 and lv["requests_per_s"] > 0 and lv["wall_s"] > 0
        assert lv["prompt_tokens_mean"] > 0
        for key in ("ttft_s", "latency_s"):
            assert set(lv[key]) == {"p50", "p90", "p99", "mean"}
            assert 0 < lv[key]["p50"] <= lv[key]["p90"] <= lv[key]["p99"]
        assert lv["ttft_s"]["p50"] <= lv["latency_s"]["p99"]
        assert set(lv["itl_s"]) == {"p50", "p99", "mean"}
        if lv["tokens"] > lv["ok"]:  # some request made 2+ content chunks
            assert lv["itl_s"]["p50"] is not None


def test_bench_chat_writes_json_png_and_table(server: Server, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = bench(out, "--url", server.base_url, "--api-key", API_KEY, "--model", "tiny",
                 "--concurrency", "1,2", "--requests", "3", "--max-tokens", "8",
                 "--prompt-tokens", "24")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["schema"] == 1 and report["endpoint"] == "chat"
    assert report["settings"]["concurrency"] == [1, 2]
    assert report["settings"]["max_tokens"] == 8
    assert report["settings"]["prompt_mode"] == "unique"
    assert "4 characters per token" in report["prompt_note"]
    assert report["comparison"] == []
    (srv,) = report["servers"]
    assert (srv["name"], srv["url"], srv["model"]) == ("A", server.base_url, "tiny")
    check_chat_levels(srv, [1, 2], 3, 8)
    assert (out / "bench.png").read_bytes()[:8] == PNG_MAGIC
    assert table_rows(proc.stdout) == [("A", 1), ("A", 2)]
    assert "estimated:" not in proc.stdout
    assert "A concurrency 2: 3/3 ok" in proc.stderr  # the progress (one line per level off a tty)


@pytest.mark.parametrize("kind", ["json_object", "file"])
def test_bench_response_format(server: Server, tmp_path: Path, kind: str) -> None:
    """--response-format sends every request with a json_object or json_schema format (the
    report's settings say which); a schema the server refuses fails the warm-up."""
    spec = kind
    if kind == "file":
        spec = str(tmp_path / "person.json")
        Path(spec).write_text(json.dumps({"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 4}}, "required": ["name"]}))
    out = tmp_path / "run"
    proc = bench(out, "--url", server.base_url, "--api-key", API_KEY, "--model", "tiny",
                 "--concurrency", "2", "--requests", "2", "--max-tokens", "8",
                 "--prompt-tokens", "24", "--response-format", spec)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fmt = json.loads((out / "bench.json").read_text())["settings"]["extra_body"][
        "response_format"]
    assert fmt["type"] == ("json_object" if kind == "json_object" else "json_schema")
    if kind == "file":
        assert fmt["json_schema"]["name"] == "person"
        Path(spec).write_text(json.dumps({"type": "integer", "minimum": 1}))
        refused = bench(tmp_path / "refused", "--url", server.base_url, "--api-key", API_KEY,
                        "--model", "tiny", "--requests", "1", "--response-format", spec)
        assert refused.returncode == 1 and "failed: 400" in refused.stderr


def test_bench_shared_prefix_reuses_the_cache(server: Server, tmp_path: Path) -> None:
    proc = bench(tmp_path / "run", "--url", server.base_url, "--api-key", API_KEY, "--model",
                 "tiny", "--concurrency", "1", "--requests", "3", "--max-tokens", "4",
                 "--prompt-tokens", "24", "--prompt-mode", "shared-prefix", "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (lv,) = json.loads((tmp_path / "run" / "bench.json").read_text())["servers"][0]["levels"]
    assert lv["errors"] == 0 and lv["cached_prompt_tokens"] > 0
    assert "concurrency 1:" not in proc.stderr  # --no-progress


def test_bench_compare_two_hearths(server: Server, tiny_models_dir: Path,
                                   tmp_path_factory: pytest.TempPathFactory,
                                   tmp_path: Path) -> None:
    other = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home-b"),
                   args=server.args).start()  # the same settings (TINY_ARGS)
    try:
        out = tmp_path / "cmp"
        proc = bench(out, "--url", server.base_url, "--api-key", API_KEY, "--model", "tiny",
                     "--compare", other.base_url, "--concurrency", "1,2", "--requests", "2",
                     "--max-tokens", "8", "--prompt-tokens", "24", "--rounds", "2")
    finally:
        assert other.stop() == 0, "".join(other.stderr)
    assert other.orphans() == []
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "bench.json").read_text())
    a, b = report["servers"]
    assert (a["name"], a["url"]) == ("A", server.base_url)
    assert (b["name"], b["url"], b["model"]) == ("B", other.base_url, "tiny")
    for srv in (a, b):
        check_chat_levels(srv, [1, 2], 4, 8)  # 2 requests per level x 2 rounds, pooled
    assert [c["concurrency"] for c in report["comparison"]] == [1, 2]
    for c in report["comparison"]:
        assert c["tokens_per_s_ratio"] > 0 and c["ttft_p50_ratio"] > 0
    assert (out / "bench.png").read_bytes()[:8] == PNG_MAGIC
    assert table_rows(proc.stdout) == [("A", 1), ("A", 2), ("B", 1), ("B", 2)]
    assert "B / A" in proc.stdout
    # alternating: per level A B then B A, so both servers see the same machine state
    order = re.findall(r"^([AB]) concurrency (\d+):", proc.stderr, re.M)
    assert order == [("A", "1"), ("B", "1"), ("B", "1"), ("A", "1"),
                     ("A", "2"), ("B", "2"), ("B", "2"), ("A", "2")]


def test_bench_embeddings(server: Server, tmp_path: Path) -> None:
    probe = server.request("POST", "/v1/embeddings", {"model": "tiny", "input": ["probe"]})
    if probe.status == 404:
        pytest.skip(f"this hearth has no POST /v1/embeddings (404: {probe.body[:120]!r})")
    assert probe.status == 200, probe.body
    out = tmp_path / "emb"
    proc = bench(out, "--url", server.base_url, "--api-key", API_KEY, "--model", "tiny",
                 "--endpoint", "embeddings", "--concurrency", "1,2", "--requests", "3",
                 "--prompt-tokens", "24")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["endpoint"] == "embeddings" and "max_tokens" not in report["settings"]
    for lv in report["servers"][0]["levels"]:
        assert set(lv) == LEVEL_FIELDS
        assert lv["errors"] == 0 and lv["tokens_estimated"] is False
        assert lv["tokens"] == lv["ok"] * lv["prompt_tokens_mean"] > 0
    assert (out / "bench.png").read_bytes()[:8] == PNG_MAGIC
    assert table_rows(proc.stdout) == [("A", 1), ("A", 2)]


def test_bench_responses(server: Server, tmp_path: Path) -> None:
    """``--api responses`` streams POST /v1/responses and times its output deltas: the same
    level fields as chat, the tokens from each final response's usage; ``--tools`` goes in the
    Responses API's flat shape (a refused one would fail the warm-up)."""
    out = tmp_path / "resp"
    proc = bench(out, "--url", server.base_url, "--api-key", API_KEY, "--model", "tiny",
                 "--api", "responses", "--concurrency", "1,2", "--requests", "3",
                 "--max-tokens", "8", "--prompt-tokens", "24")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["endpoint"] == "responses" and report["settings"]["max_tokens"] == 8
    check_chat_levels(report["servers"][0], [1, 2], 3, 8)
    assert table_rows(proc.stdout) == [("A", 1), ("A", 2)]
    tools = bench(tmp_path / "tools", "--url", server.base_url, "--api-key", API_KEY,
                  "--model", "tiny", "--api", "responses", "--concurrency", "1",
                  "--requests", "1", "--max-tokens", "8", "--prompt-tokens", "24",
                  "--tools", "weather", "--tool-choice", "none")
    assert tools.returncode == 0, tools.stdout + tools.stderr


def test_bench_wrong_key_fails_fast(server: Server, tmp_path: Path) -> None:
    proc = bench(tmp_path / "run", "--url", server.base_url, "--api-key", "wrong", "--model",
                 "tiny", "--concurrency", "1", "--requests", "1")
    assert proc.returncode == 1
    assert "warm-up" in proc.stderr and "401" in proc.stderr
    assert not (tmp_path / "run").exists()


# ---- a server that sends no usage and answers every third request with a 503 --------------


class _NoUsageHandler(BaseHTTPRequestHandler):
    count = 0
    lock = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            type(self).count += 1
            n = self.count
        if n % 3 == 0:
            self._send(503, {"error": {"message": "busy", "type": "server_error",
                                       "param": None, "code": "server_overloaded"}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for text in ("one", " two", " three"):
            chunk = {"object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"content": text}}]}
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture
def no_usage_server() -> Iterator[str]:
    _NoUsageHandler.count = 0
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _NoUsageHandler)
    # server_close() then waits for the handler threads, which close their connections; as
    # daemons they could outlive the fixture and leave a socket for the garbage collector to
    # find in a later test (a ResourceWarning, an error under -W error)
    httpd.daemon_threads = False
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_bench_estimates_without_usage_and_counts_errors_by_kind(no_usage_server: str,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "fake"
    # no --model: the server lists exactly one; concurrency 1 makes the 503s deterministic
    proc = bench(out, "--url", no_usage_server, "--concurrency", "1", "--requests", "6",
                 "--max-tokens", "3", "--prompt-tokens", "8", "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "bench.json").read_text())
    (lv,) = report["servers"][0]["levels"]
    assert report["servers"][0]["model"] == "fake"
    assert lv["errors_by_kind"] == {"503 server_overloaded": 2}  # requests 3 and 6 of 7
    assert (lv["ok"], lv["errors"]) == (4, 2)
    assert lv["tokens_estimated"] is True and lv["tokens"] == 4 * 3
    assert lv["prompt_tokens_mean"] is None
    assert "estimated: the server sent no usage" in proc.stdout
    assert "2 × 503 server_overloaded" in proc.stdout
    assert "no server reported prompt_tokens" in proc.stdout


@pytest.mark.parametrize("mode", ["unique", "shared-prefix"])
def test_bench_messages_api(server: Server, tmp_path: Path, mode: str) -> None:
    """--api messages streams Anthropic's POST /v1/messages (a shared prefix as its ``system``)
    and reports the same fields as chat, from the Messages events' usage."""
    out = tmp_path / "run"
    proc = bench(out, "--url", server.base_url, "--api-key", API_KEY, "--model", "tiny",
                 "--concurrency", "1,2", "--requests", "2", "--max-tokens", "6",
                 "--prompt-tokens", "24", "--api", "messages", "--prompt-mode", mode)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "bench.json").read_text())
    assert report["endpoint"] == "messages"
    check_chat_levels(report["servers"][0], [1, 2], 2, 6)
    refused = bench(tmp_path / "refused", "--url", server.base_url, "--api-key", API_KEY,
                    "--model", "tiny", "--api", "messages", "--tools", "weather")
    assert refused.returncode == 2 and "--api messages" in refused.stderr
