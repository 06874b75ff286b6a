"""Start a real ``hearth serve`` in a subprocess for integration and e2e tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

API_KEY = "test-key-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def named_pids(srv: Server, prefix: str) -> list[int]:
    """The live processes below ``srv``'s ``hearth serve`` whose name starts with ``prefix``
    (hearth-api, hearth-sched, hearth-w-<model>)."""
    assert srv.proc is not None
    out = []
    for pid in descendants(srv.proc.pid):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text()
        except OSError:
            continue
        if comm.startswith(prefix):
            out.append(pid)
    return sorted(out)


def worker_pids(srv: Server) -> list[int]:
    """The live worker processes below ``srv``'s ``hearth serve``."""
    return named_pids(srv, "hearth-w-")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class Server:
    def __init__(self, models_dir: Path, model: str, home: Path, *, args: tuple[str, ...] = (),
                 api_key: str | None = API_KEY, ready_timeout: float = 120.0) -> None:
        self.models_dir = models_dir
        self.model = model
        self.port = free_port()
        self.api_key = api_key
        self.home = home
        self.args = args
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.children: set[int] = set()
        self._pumps: list[threading.Thread] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Server:
        cmd = [sys.executable, "-m", "hearth.tools.cli", "serve", "--models-dir",
               str(self.models_dir), "--model", self.model, "--port", str(self.port), *self.args]
        if self.api_key:
            cmd += ["--api-key", self.api_key]
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        env["XDG_CONFIG_HOME"] = str(self.home / "config")
        env["XDG_DATA_HOME"] = str(self.home / "data")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        ready = threading.Event()

        def pump(stream: Any, sink: list[str], watch: bool) -> None:
            for line in stream:
                sink.append(line)
                if watch and line.startswith("hearth is ready"):
                    ready.set()

        self._pumps = [
            threading.Thread(target=pump, args=(self.proc.stdout, self.stdout, True), daemon=True),
            threading.Thread(target=pump, args=(self.proc.stderr, self.stderr, False), daemon=True),
        ]
        for t in self._pumps:
            t.start()
        deadline = time.monotonic() + self.ready_timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                out = "".join(self.stdout) + "".join(self.stderr)
                self.stop()
                raise RuntimeError(f"hearth did not become ready:\n{out}")
        self.children = descendants(self.proc.pid)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        self.children |= descendants(self.proc.pid)
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        finally:
            for t in self._pumps:
                t.join(5)
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()

    def wait_for_stdout(self, text: str, timeout: float = 10.0) -> str:
        """The whole stdout so far, once it contains ``text`` (lines arrive asynchronously)."""
        deadline = time.monotonic() + timeout
        while True:
            out = "".join(self.stdout)
            if text in out or time.monotonic() > deadline:
                return out
            time.sleep(0.02)

    def orphans(self) -> list[int]:
        return [pid for pid in self.children if alive(pid)]

    # ---- plain HTTP -------------------------------------------------------------------------

    def headers(self, **extra: str) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.api_key:
            h["Authorization"] = f"Bearer {self.api_key}"
        h.update(extra)
        return h

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, timeout: float = 120.0) -> Response:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            conn.request(method, path, body=data,
                         headers=self.headers() if headers is None else headers)
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                            resp.read())
        finally:
            conn.close()

    def chat(self, body: dict[str, Any], **kw: Any) -> Response:
        return self.request("POST", "/v1/chat/completions", body, **kw)

    def stream(self, body: dict[str, Any]) -> Iterator[bytes]:
        """Yield each SSE ``data:`` payload of a streamed chat completion (raw bytes)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                         headers=self.headers())
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            assert resp.getheader("Content-Type", "").startswith("text/event-stream")
            buf = b""
            while True:
                line = resp.readline()
                if not line:
                    break
                buf += line
                if buf.endswith(b"\n\n"):
                    for part in buf.strip().split(b"\n"):
                        assert part.startswith(b"data: "), part
                        yield part[len(b"data: "):]
                    buf = b""
        finally:
            conn.close()

    def health(self) -> Response:
        return self.request("GET", "/health", headers={})

    def stream_payloads(self, path: str, body: dict[str, Any]) -> list[Any]:
        """POST ``body`` with ``stream: true`` (200 and ``text/event-stream`` asserted) and
        return every ``data:`` payload, JSON-decoded ("[DONE]" as is)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request("POST", path, headers=self.headers(),
                         body=json.dumps({"stream": True, **body}).encode())
            resp = conn.getresponse()
            assert resp.status == 200, resp.read()
            assert resp.getheader("Content-Type", "").startswith("text/event-stream")
            out: list[Any] = []
            for line in resp.read().split(b"\n"):
                if line.startswith(b"data: "):
                    data = line[len(b"data: "):]
                    out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
            return out
        finally:
            conn.close()

    def busy_slots(self) -> int:
        """Slots running a request now, all models together (``/health``)."""
        return int(self.health().json()["slots"]["busy"])


def wait_until(ok: Callable[[], bool], what: Callable[[], object], timeout: float = 10.0) -> None:
    """Poll ``ok`` every 20 ms until it holds; after ``timeout`` seconds, fail showing
    ``what()``."""
    deadline = time.monotonic() + timeout
    while not ok() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ok(), what()


def api_accepts(endpoint: str, body: Any) -> bool:
    """Whether the api's own validation of a request body — what the ``chat``, ``completions``,
    ``embeddings``, ``tokenize`` or ``detokenize`` handler runs before anything reaches a model
    — accepts ``body``."""
    from hearth.api import completion_types, openai_types
    from hearth.scheduler.errors import InvalidRequest
    from msgspec import UnsetType

    raw = json.dumps(body).encode()
    try:
        if endpoint == "chat":
            req = openai_types.parse_chat_request(raw)
            openai_types.chat_messages(req)
            openai_types.requested_sampling(req)
        elif endpoint == "completions":
            creq = completion_types.parse_completion_request(raw)
            completion_types.raw_prompts(creq)
            openai_types.sampling_of(creq, creq.max_tokens)
        elif endpoint == "tokenize":
            treq = completion_types.parse_tokenize_request(raw)
            if not isinstance(treq.messages, UnsetType):
                openai_types.messages_of(treq.messages)
        elif endpoint == "detokenize":
            completion_types.parse_detokenize_request(raw)
        else:
            openai_types.embedding_inputs(openai_types.parse_embedding_request(raw))
    except InvalidRequest:
        return False
    return True
