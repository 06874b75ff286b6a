"""The request log of a real server: one line per request with key name, model, tokens and
status; ``--log-format json``; ``--verbose`` bodies with every API key redacted."""

from __future__ import annotations

import http.client
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from harness import Server

pytestmark = pytest.mark.integration

TINY_ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")
ALICE, BOB = "k-alice-0123456789-secret", "k-bob-9876543210-secret"
KEYS = {"alice": ALICE, "bob": BOB}
# a client pasting keys into a prompt: once as written, once \u-escaped inside the JSON
LEAKY_CONTENT = f"my keys are {ALICE} and {BOB}, remember them"
CHAT = {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]}
REQUEST_LINE = re.compile(
    r"(?P<status>\d{3}) (?P<method>\S+) (?P<path>\S+) key=(?P<key>\S+) model=(?P<model>\S+) "
    r"prompt_tokens=(?P<prompt>\S+) completion_tokens=(?P<completion>\S+) [\d.]+ms$")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def start(home: Path, models_dir: Path, *extra: str) -> Server:
    config = home / "hearth.toml"
    config.write_text("[keys]\n" + "".join(f'{n} = "{k}"\n' for n, k in KEYS.items()))
    return Server(models_dir, "tiny", home, api_key=None,
                  args=(*TINY_ARGS, "--config", str(config), *extra)).start()


def stream_usage(srv: Server, key: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=120)
    try:
        conn.request("POST", "/v1/chat/completions", headers=auth(key), body=json.dumps(
            {**CHAT, "stream": True, "stream_options": {"include_usage": True}}).encode())
        resp = conn.getresponse()
        assert resp.status == 200
        payloads = [line[len(b"data: "):].strip() for line in resp.read().split(b"\n")
                    if line.startswith(b"data: ")]
    finally:
        conn.close()
    assert payloads[-1] == b"[DONE]"
    usage: dict[str, Any] = json.loads(payloads[-2])["usage"]
    return usage


def leave_a_stream(srv: Server, key: str) -> bool:
    """Start a long stream and close the connection after its first chunk; True once the log
    shows it as 499 (it may finish first on a fast machine: the caller tries again)."""
    before = "".join(srv.stderr).count(" 499 POST ")
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", headers=auth(key),
                 body=json.dumps({**CHAT, "max_tokens": 200, "stream": True}).encode())
    resp = conn.getresponse()
    assert resp.status == 200
    resp.readline()  # the role chunk: a slot has the request
    conn.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if "".join(srv.stderr).count(" 499 POST ") > before:
            return True
        time.sleep(0.05)
    return False


@dataclass
class Run:
    """What a server was asked, what it answered, and everything it wrote."""

    answers: dict[str, Any] = field(default_factory=dict)
    out: str = ""
    err: str = ""

    def request_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if REQUEST_LINE.search(line)]


@pytest.fixture(scope="module")
def text_run(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """--verbose, text: chat (keys in the prompt, both raw and \\u-escaped), a stream, an
    unknown model, a model list, embeddings and a client that leaves mid-stream."""
    srv = start(tmp_path_factory.mktemp("home"), tiny_models_dir, "--verbose")
    run = Run()
    try:
        escaped = "".join(f"\\u{ord(c):04x}" for c in ALICE)
        raw = json.dumps({**CHAT, "messages": [{"role": "user", "content": LEAKY_CONTENT}]})
        raw = raw.replace("remember", f"also {escaped}, remember")
        r = srv.request("POST", "/v1/chat/completions", raw.encode(), headers=auth(ALICE))
        assert r.status == 200, r.body
        run.answers["chat"] = r.json()
        run.answers["stream"] = stream_usage(srv, BOB)
        r = srv.chat({**CHAT, "model": "no-such-model"}, headers=auth(ALICE))
        assert r.status == 404
        assert srv.request("GET", "/v1/models", headers=auth(BOB)).status == 200
        r = srv.request("POST", "/v1/embeddings", {"model": "tiny", "input": "hello there"},
                        headers=auth(BOB))
        assert r.status == 200, r.body
        run.answers["embeddings"] = r.json()
        run.answers["left"] = any(leave_a_stream(srv, ALICE) for _ in range(5))
    finally:
        assert srv.stop() == 0
    run.out, run.err = "".join(srv.stdout), "".join(srv.stderr)
    return run


def test_one_line_per_request_with_key_model_tokens_status(text_run: Run) -> None:
    lines = text_run.request_lines()
    chat = [REQUEST_LINE.search(x) for x in lines if " /v1/chat/completions " in x]
    got = [(m["status"], m["key"], m["model"], m["prompt"], m["completion"])
           for m in chat if m]
    usage, streamed = text_run.answers["chat"]["usage"], text_run.answers["stream"]
    assert got[:3] == [
        ("200", "alice", "tiny", str(usage["prompt_tokens"]), "2"),
        ("200", "bob", "tiny", str(streamed["prompt_tokens"]), "2"),
        ("404", "alice", "no-such-model", "-", "-"),
    ], lines
    assert len(got) >= 4 and all(g[0] in ("200", "499") for g in got[3:])
    if text_run.answers["left"]:  # the client that left: what it had used until then
        left = [g for g in got if g[0] == "499"]
        assert len(left) == 1 and left[0][1:3] == ("alice", "tiny"), lines
        assert int(left[0][3]) > 0 and left[0][4] != "-"


def test_other_endpoints_have_a_line_too(text_run: Run) -> None:
    lines = text_run.request_lines()
    models = [x for x in lines if "200 GET /v1/models " in x]
    assert len(models) == 1 and "key=bob model=- prompt_tokens=- completion_tokens=-" in \
        models[0]
    prompt = text_run.answers["embeddings"]["usage"]["prompt_tokens"]
    embeds = [x for x in lines if "200 POST /v1/embeddings " in x]
    assert len(embeds) == 1
    assert f"key=bob model=tiny prompt_tokens={prompt} completion_tokens=0" in embeds[0]


def test_verbose_logs_bodies_without_any_key(text_run: Run) -> None:
    log = text_run.out + text_run.err
    for secret in KEYS.values():
        assert secret not in log
        assert secret[:12] not in log  # not cut in half either
    bodies = [x.strip() for x in text_run.err.splitlines() if x.startswith("    ")]
    requests = [b for b in bodies if b.startswith("request body: ")]
    answers = [b for b in bodies if b.startswith("response body: ")]
    leaky = [b for b in requests if "my keys are" in b]
    assert len(leaky) == 1
    # the \u-escaped key was decoded before redaction, so all three became [redacted]
    assert "my keys are [redacted] and [redacted], also [redacted], remember" in leaky[0]
    content = text_run.answers["chat"]["choices"][0]["message"]["content"]
    assert any('"object":"chat.completion"' in a and json.dumps(content) in a for a in answers)
    assert any(a.startswith('response body: {"stream":true,"content":') and
               '"finish_reason":"length"' in a for a in answers), answers
    assert any('"code":"model_not_found"' in a for a in answers)
    assert any(a.startswith("request body: ") and '"input":"hello there"' in a for a in requests)


@pytest.fixture(scope="module")
def json_run(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    srv = start(tmp_path_factory.mktemp("home"), tiny_models_dir, "--log-format", "json")
    run = Run()
    try:
        r = srv.chat({**CHAT, "messages": [{"role": "user", "content": LEAKY_CONTENT}]},
                     headers=auth(BOB))
        assert r.status == 200, r.body
        run.answers["chat"] = r.json()
        assert srv.request("GET", "/v1/models", headers=auth("wrong-key")).status == 401
    finally:
        assert srv.stop() == 0
    run.out, run.err = "".join(srv.stdout), "".join(srv.stderr)
    return run


def test_json_lines_parse_and_carry_the_fields(json_run: Run) -> None:
    docs = [json.loads(x) for x in json_run.err.splitlines() if x.startswith("{")]
    assert not [x for x in json_run.err.splitlines() if re.match(r"\d\d:\d\d:\d\d hearth", x)]
    for doc in docs:
        assert {"time", "level", "logger", "message"} <= set(doc), doc
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["time"])
    requests = [d for d in docs if d.get("event") == "request"]
    usage = json_run.answers["chat"]["usage"]
    fields = ("key", "method", "path", "status", "model", "prompt_tokens", "completion_tokens")
    assert [tuple(d[f] for f in fields) for d in requests] == [
        ("bob", "POST", "/v1/chat/completions", 200, "tiny", usage["prompt_tokens"], 2),
        (None, "GET", "/v1/models", 401, None, None, None),
    ]
    for d in requests:
        assert d["logger"] == "hearth.api" and d["level"] == "info"
        assert isinstance(d["latency_ms"], float) and d["latency_ms"] >= 0
        assert "request_body" not in d and "response_body" not in d  # only with --verbose
    assert ALICE not in json_run.err and BOB not in json_run.err
