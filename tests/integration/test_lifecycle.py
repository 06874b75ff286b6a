"""``hearth serve`` as a process: the generated key, signals, no orphans, a port in use."""

from __future__ import annotations

import signal
import socket
import stat
import time
from pathlib import Path

import pytest
from harness import Server, descendants, named_pids

pytestmark = pytest.mark.integration

TINY_ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home for the module: the second start must find the first start's key."""
    return tmp_path_factory.mktemp("home")


def key_file(home: Path) -> Path:
    return home / "config" / "hearth" / "api_key"


def printed_key(srv: Server) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in list(srv.stdout):
            if line.startswith("API key: "):
                return line[len("API key: "):].split()[0]
        time.sleep(0.05)
    raise AssertionError(f"no 'API key:' line in {srv.stdout!r}")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def no_orphans(srv: Server, grace: float = 3.0) -> list[int]:
    """Children still alive ``grace`` seconds after ``hearth serve`` exited.

    The grace is for multiprocessing's resource tracker: ``hearth serve`` does not wait for it, so
    it exits (on EOF) a moment *after* its parent, reparented to init. A real orphan - a worker,
    the api or the scheduler left running - is still there after the grace."""
    deadline = time.monotonic() + grace
    while srv.orphans() and time.monotonic() < deadline:
        time.sleep(0.05)
    return srv.orphans()


def start(models_dir: Path, home: Path) -> Server:
    return Server(models_dir, "tiny", home, args=TINY_ARGS, api_key=None).start()


def test_generated_key_then_sigint(tiny_models_dir: Path, home: Path) -> None:
    assert not key_file(home).exists()
    srv = start(tiny_models_dir, home)
    try:
        key = printed_key(srv)
        ready = [line for line in srv.stdout if line.startswith("hearth is ready")]
        assert ready and f"http://127.0.0.1:{srv.port}/v1" in ready[0]
        path = key_file(home)
        assert path.is_file()
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() == key
        assert str(path) in "".join(srv.stdout)  # says where the key is kept
        assert len(key) >= 32

        assert srv.request("GET", "/v1/models", headers=bearer(key)).status == 200
        assert srv.request("GET", "/v1/models", headers={}).status == 401
        assert srv.request("GET", "/v1/models", headers=bearer(key + "x")).status == 401
        r = srv.chat({"model": "tiny", "max_tokens": 2,
                      "messages": [{"role": "user", "content": "Hi"}]},
                     headers={**bearer(key), "Content-Type": "application/json"})
        assert r.status == 200, r.body
        assert srv.children, "hearth serve should run child processes"
    finally:
        code = srv.stop(signal.SIGINT)
    assert code == 0, "".join(srv.stderr)
    assert no_orphans(srv) == []


def test_restart_reuses_the_key_then_sigterm(tiny_models_dir: Path, home: Path) -> None:
    path = key_file(home)
    if not path.exists():
        pytest.skip("needs the key made by test_generated_key_then_sigint")
    saved = path.read_text().strip()
    srv = start(tiny_models_dir, home)
    try:
        assert printed_key(srv) == saved
        assert path.read_text().strip() == saved
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert srv.request("GET", "/v1/models", headers=bearer(saved)).status == 200
    finally:
        code = srv.stop(signal.SIGTERM)
    assert code == 0, "".join(srv.stderr)
    assert no_orphans(srv) == []


def test_configured_key_is_not_saved(tiny_models_dir: Path,
                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    fresh = tmp_path_factory.mktemp("home")
    srv = Server(tiny_models_dir, "tiny", fresh, args=TINY_ARGS).start()
    try:
        # a configured key is the user's own secret: it is named, never printed
        out = srv.wait_for_stdout("API keys:")
        assert "API keys: the configured ones (key1)" in out
        assert srv.api_key is not None and srv.api_key not in out
        assert not key_file(fresh).exists()
    finally:
        assert srv.stop() == 0, "".join(srv.stderr)
    assert no_orphans(srv) == []


def test_port_in_use(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home"), args=TINY_ARGS,
                     ready_timeout=60)
        srv.port = port
        with pytest.raises(RuntimeError) as info:
            srv.start()
    assert srv.proc is not None
    assert srv.proc.returncode not in (None, 0)
    output = str(info.value)
    assert "cannot listen" in output
    assert str(port) in output
    assert no_orphans(srv) == []


def test_port_taken_by_another_hearth(server: Server, tiny_models_dir: Path,
                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """The running hearth answers /health on that port; the second must not take that answer
    for its own and claim to be ready."""
    second = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("second"),
                    args=TINY_ARGS, ready_timeout=60)
    second.port = server.port
    with pytest.raises(RuntimeError, match="did not become ready"):
        second.start()
    assert second.proc is not None and second.proc.returncode not in (None, 0)
    assert not any(line.startswith("hearth is ready") for line in second.stdout)
    assert server.health().status == 200  # the first one is unharmed


def test_health_is_503_until_the_model_is_ready(tiny_models_dir: Path,
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """Poll /health from the moment the port opens: 503 (scheduler not heard from yet, or the
    model still loading) until the worker is ready, then 200 — and the ready line only after."""
    import http.client
    import json
    import subprocess
    import sys

    from harness import free_port

    port = free_port()
    home = tmp_path_factory.mktemp("health-home")
    env = {"XDG_CONFIG_HOME": str(home / "config"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hearth.tools.cli", "serve", "--models-dir", str(tiny_models_dir),
         "--model", "tiny", "--port", str(port), "--api-key", "k", *TINY_ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    seen: list[tuple[int, str]] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/health")
                resp = conn.getresponse()
                seen.append((resp.status, json.loads(resp.read())["status"]))
            except OSError:
                pass
            finally:
                conn.close()
            if seen and seen[-1][0] == 200:
                break
            time.sleep(0.01)
        assert seen and seen[-1] == (200, "ok")
        before = seen[:-1]
        assert before, "the model was ready before /health could be asked"
        assert all(s == 503 and state in ("unavailable", "loading") for s, state in before)
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("hearth is ready")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        if proc.stdout is not None:
            proc.stdout.close()


def test_sigterm_drains(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """SIGTERM: new requests get 503 shutting_down, a stream in flight still finishes, the
    server exits 0 and leaves no process behind."""
    import http.client
    import json

    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("drain"),
                 args=("--parallel", "2", "--ctx-size", "4096", "--threads", "1",
                       "--shutdown-grace", "30")).start()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps({
        "model": "tiny", "max_tokens": 3000, "stream": True,
        "messages": [{"role": "user", "content": "go"}]}).encode(), srv.headers())
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(3):
        assert resp.readline()
    assert srv.proc is not None
    srv.children |= descendants(srv.proc.pid)
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    late = srv.chat({"model": "tiny", "max_tokens": 2,
                     "messages": [{"role": "user", "content": "too late"}]})
    assert late.status == 503
    assert late.json()["error"]["code"] == "shutting_down"
    assert late.headers.get("retry-after")
    rest = resp.read().decode()
    conn.close()
    events = [line[6:] for line in rest.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    # "stop" too: the tiny model emits its end-of-turn token in about one 3000-token run in 16
    assert json.loads(events[-2])["choices"][0]["finish_reason"] in ("length", "stop")
    assert srv.stop() == 0
    assert no_orphans(srv) == []


def test_sigterm_after_the_grace_ends_requests_with_an_error(
        tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Requests still in flight when --shutdown-grace runs out are not cut off silently: a
    stream ends with a shutting_down error event and [DONE], a request still queued gets 503
    shutting_down; the server exits 0 and leaves no process behind."""
    import http.client
    import json
    import threading

    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("grace"),
                 args=("--parallel", "1", "--ctx-size", "32768", "--threads", "1",
                       "--shutdown-grace", "1")).start()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps({
        "model": "tiny", "stream": True,  # runs until the context is full: far past the grace
        "logit_bias": {"2": -100, "260": -100},  # no end-of-turn token (tiny_model: EOS, EOT)
        "messages": [{"role": "user", "content": "go"}]}).encode(), srv.headers())
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(3):
        assert resp.readline()
    queued: list[tuple[int, dict[str, object]]] = []  # waits for the only slot
    waiter = threading.Thread(target=lambda: queued.append(
        (lambda r: (r.status, r.json()))(srv.chat({"model": "tiny", "max_tokens": 2, "messages": [
            {"role": "user", "content": "after you"}]}))))
    waiter.start()
    deadline = time.monotonic() + 10
    while srv.health().json()["queued"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.health().json()["queued"] == 1
    assert srv.proc is not None
    srv.children |= descendants(srv.proc.pid)
    srv.proc.send_signal(signal.SIGTERM)
    rest = resp.read().decode()
    conn.close()
    waiter.join(30)
    events = [line[6:] for line in rest.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["code"] == "shutting_down"
    (status, body), = queued
    assert status == 503, body
    assert body["error"]["code"] == "shutting_down"  # type: ignore[index]
    assert srv.stop() == 0
    assert no_orphans(srv) == []


def _switches(pid: int) -> int:
    """How often the process's main thread has left the CPU: slept and woke, or was preempted."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if "ctxt_switches" in line)
    return sum(int(v) for v in fields.values())


def test_an_idle_scheduler_sleeps(server: Server) -> None:
    """With nothing to do the scheduler wakes for its status heartbeat, once a second, rather
    than polling for dead workers ten times a second: their exits wake it."""
    assert server.health().status == 200
    time.sleep(1.5)  # the worker's last report after loading has arrived
    (sched,) = named_pids(server, "hearth-sched")
    before = _switches(sched)
    time.sleep(5)
    woke = _switches(sched) - before
    assert woke < 25, f"the idle scheduler's main thread woke {woke} times in 5 s"


def test_sigterm_while_clients_keep_connecting_resets_none(
        tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """12 clients connect and send a request, one after another as fast as they can, across a
    SIGTERM of an idle server: each gets an answer (200, then 503 shutting_down) until its
    connection is refused because the port has closed. None is reset: a connection the kernel
    had accepted when the port closed gets its 503 too (before HttpServer, about one run in four had
    resets)."""
    import collections
    import threading

    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("hammer"),
                 args=("--parallel", "2", "--ctx-size", "256", "--threads", "1")).start()
    body = b'{"model": "tiny", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}'
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
               + b"".join(f"{k}: {v}\r\n".encode() for k, v in srv.headers().items())
               + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    outcomes: list[list[str]] = [[] for _ in range(12)]

    def client(got: list[str]) -> None:
        while True:
            try:
                sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            except ConnectionRefusedError:
                got.append("refused")
                return
            try:
                sock.sendall(request)
                reply = b""
                while chunk := sock.recv(65536):
                    reply += chunk
                status = reply.split(b" ", 2)[1].decode() if reply else "no answer"
                got.append(status + (" shutting_down" * (b'"shutting_down"' in reply)))
            except OSError as exc:
                got.append(type(exc).__name__)
            finally:
                sock.close()

    threads = [threading.Thread(target=client, args=(got,)) for got in outcomes]
    for t in threads:
        t.start()
    time.sleep(0.3)
    assert srv.proc is not None
    srv.children |= descendants(srv.proc.pid)
    srv.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(60)
    assert srv.stop() == 0
    counts = collections.Counter(o for got in outcomes for o in got)
    assert set(counts) == {"200", "503 shutting_down", "refused"}, counts
    assert all(got[-1] == "refused" and got.count("refused") == 1 for got in outcomes), counts
    assert no_orphans(srv) == []


def test_sigterm_stops_a_server_nobody_reads_any_more(
        tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """``hearth serve | head``, or a launcher that died: stdout and stderr are a pipe with no
    reader. SIGTERM must still stop everything (the "stopping" line failing with EPIPE used to
    skip stopping the children, and the supervisor then waited for them for ever)."""
    import os
    import subprocess
    import sys

    from harness import free_port

    port = free_port()
    home = tmp_path_factory.mktemp("no-reader-home")
    env = {"XDG_CONFIG_HOME": str(home / "config"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "hearth.tools.cli", "serve", "--models-dir", str(tiny_models_dir),
         "--model", "tiny", "--port", str(port), "--api-key", "k", *TINY_ARGS],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    out = b""
    deadline = time.monotonic() + 60
    while b"hearth is ready" not in out and time.monotonic() < deadline:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        out += chunk
    assert b"hearth is ready" in out, out
    children = descendants(proc.pid)
    assert children
    proc.stdout.close()  # the reader goes away
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 5
    while [pid for pid in children if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [pid for pid in children if _alive(pid)] == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return False


def test_pooled_connection_gets_503_shutting_down_without_resets(
        tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """While a SIGTERM'd server drains (a stream in flight keeps it up), a pooled client that
    POSTs bodies gets 503 shutting_down every time, with no transport error: the 503 is found
    before the body is read, so the body is read and dropped, and the answer says
    ``Connection: close`` (a draining server closes its connections), so the pool opens a new
    one rather than reusing a closed one (issue 15, kind 1)."""
    import http.client
    import json

    import httpx2 as httpx
    from hearth.tools.cli.tiny_model import EOS_ID, IM_END_ID

    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("drain-pool"),
                 args=("--parallel", "2", "--ctx-size", "4096", "--threads", "1",
                       "--shutdown-grace", "60")).start()
    stream = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    # the end-of-generation tokens banned, so the stream outlasts the rounds below
    stream.request("POST", "/v1/chat/completions", json.dumps({
        "model": "tiny", "max_tokens": 4000, "stream": True,
        "logit_bias": {str(EOS_ID): -100, str(IM_END_ID): -100},
        "messages": [{"role": "user", "content": "go"}]}).encode(), srv.headers())
    resp = stream.getresponse()
    assert resp.status == 200
    assert resp.readline()
    assert srv.proc is not None
    srv.children |= descendants(srv.proc.pid)
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=30,
                      limits=httpx.Limits(max_connections=1)) as client:
        assert client.get("/v1/models", headers=srv.headers()).status_code == 200
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        for i in range(30):
            r = client.post("/v1/chat/completions", headers=srv.headers(),
                            content=json.dumps({"x": "y" * 2000, "i": i}))
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "shutting_down"
        g = client.get("/v1/models", headers=srv.headers())
        assert g.status_code == 503
    stream.close()  # the disconnect cancels the stream; the drain ends
    assert srv.stop() == 0
    assert no_orphans(srv) == []
