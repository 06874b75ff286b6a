"""Several models through real processes: listing, load on demand, swapping under
--max-loaded-models, keep-alive, broken files, a worker killed mid-stream, replicas."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from harness import Server, worker_pids
from hearth.scheduler.placement import kv_bytes_per_token
from hearth.tools.cli.tiny_model import build_tiny_model
from hearth.tools.gguf_header import read_gguf_metadata

pytestmark = pytest.mark.integration

ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    d = tmp_path_factory.mktemp("many-models")
    (d / "alpha.gguf").write_bytes(tiny_model_path.read_bytes())
    build_tiny_model(d / "beta.gguf", seed=1)
    whole = tiny_model_path.read_bytes()
    (d / "truncated.gguf").write_bytes(whole[: len(whole) // 2])
    (d / "garbage.gguf").write_bytes(os.urandom(4096))
    return d


@pytest.fixture(scope="module")
def swapping(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(models_dir, "alpha", tmp_path_factory.mktemp("home"),
                 args=(*ARGS, "--max-loaded-models", "1", "--keep-alive", "2"))
    srv.start()
    yield srv
    assert srv.stop() == 0
    assert srv.orphans() == []


def chat(server: Server, model: str, max_tokens: int = 4) -> tuple[int, dict[str, object]]:
    r = server.chat({"model": model, "max_tokens": max_tokens,
                     "messages": [{"role": "user", "content": "hello"}]})
    return r.status, r.json()


def loaded(server: Server) -> dict[str, bool]:
    data = server.request("GET", "/v1/models").json()["data"]
    return {m["id"]: m["hearth"]["loaded"] for m in data}


def settled(server: Server, check: Callable[[dict[str, bool]], bool]) -> dict[str, bool]:
    """``loaded`` once ``check`` holds (or after 10 s). /v1/models reads the scheduler's status,
    which travels beside the answers (another ZeroMQ connection) and may arrive a moment after
    them."""
    deadline = time.monotonic() + 10
    state = loaded(server)
    while not check(state) and time.monotonic() < deadline:
        time.sleep(0.05)
        state = loaded(server)
    return state


def test_every_file_is_listed(swapping: Server) -> None:
    data = swapping.request("GET", "/v1/models").json()["data"]
    by_id = {m["id"]: m for m in data}
    assert set(by_id) == {"alpha", "beta", "truncated", "garbage"}
    assert by_id["alpha"]["hearth"]["architecture"] == "llama"
    assert by_id["garbage"]["hearth"]["error"]


def test_max_loaded_models_swaps_and_both_answer(swapping: Server) -> None:
    for model in ("alpha", "beta", "alpha", "beta"):
        status, body = chat(swapping, model)
        assert status == 200, body
        assert body["model"] == model
        state = settled(swapping, lambda s, m=model: bool(s[m]) and sum(s.values()) == 1)
        assert state[model] is True
        assert sum(state.values()) == 1


def test_broken_files_fail_clearly_and_the_server_lives(swapping: Server) -> None:
    for model in ("truncated", "garbage"):
        status, body = chat(swapping, model)
        assert status == 500, body
        err = body["error"]
        assert isinstance(err, dict) and err["code"] == "model_load_failed"
        assert model in str(err["message"])
    status, body = chat(swapping, "alpha")
    assert status == 200, body


def test_keep_alive_unloads_an_idle_model(swapping: Server) -> None:
    status, _ = chat(swapping, "beta")
    assert status == 200
    assert settled(swapping, lambda s: s["beta"] is True)["beta"] is True
    deadline = time.monotonic() + 15
    while loaded(swapping)["beta"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert loaded(swapping)["beta"] is False
    while worker_pids(swapping) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert worker_pids(swapping) == []  # beta's worker exited; alpha had been swapped out before


def test_killed_worker_ends_the_stream_with_an_error_then_recovers(
        models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    srv = Server(models_dir, "alpha", tmp_path_factory.mktemp("home"), args=ARGS).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        conn.request("POST", "/v1/chat/completions", json.dumps({
            "model": "alpha", "max_tokens": 100000, "stream": True,
            "messages": [{"role": "user", "content": "go"}]}).encode(), srv.headers())
        resp = conn.getresponse()
        assert resp.status == 200
        for _ in range(3):
            assert resp.readline()
        (pid,) = worker_pids(srv)
        killed_at = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        lines = []
        while True:
            line = resp.readline()
            if not line:
                break
            lines.append(line.strip())
        elapsed = time.monotonic() - killed_at
        conn.close()
        data = [ln[6:] for ln in lines if ln.startswith(b"data: ")]
        assert data[-1] == b"[DONE]"
        err = json.loads(data[-2])["error"]
        assert err["code"] == "worker_died"
        assert elapsed < 5
        status, body = chat(srv, "alpha")
        assert status == 200, body
    finally:
        assert srv.stop() == 0
    assert srv.orphans() == []


def test_replicas_spread_requests(models_dir: Path,
                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    home = tmp_path_factory.mktemp("home")
    config = home / "hearth.toml"
    config.write_text('[models.alpha]\nreplicas = 2\nthreads = 1\nparallel = 1\n'
                      'aliases = ["gpt-4o-mini"]\n')
    srv = Server(models_dir, "alpha", home, args=(*ARGS, "--config", str(config))).start()
    try:
        # both replicas start together; a process shows its hearth name once it has imported
        deadline = time.monotonic() + 30
        while len(pids := worker_pids(srv)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pids) == 2

        def cpu(pid: int) -> int:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks

        before = {pid: cpu(pid) for pid in pids}
        results: list[int] = []

        def one() -> None:
            status, _ = chat(srv, "alpha", max_tokens=200)
            results.append(status)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert results == [200] * 6
        used = {pid: cpu(pid) - before[pid] for pid in pids}
        assert all(ticks > 0 for ticks in used.values()), used
        # an alias from the config names the same model
        status, body = chat(srv, "gpt-4o-mini")
        assert status == 200 and body["model"] == "gpt-4o-mini", body
        listed = {m["id"]: m["hearth"] for m in srv.request("GET", "/v1/models").json()["data"]}
        assert listed["gpt-4o-mini"]["alias_of"] == "alpha"
        one = srv.request("GET", "/v1/models/gpt-4o-mini").json()
        assert one["id"] == "gpt-4o-mini" and one["hearth"]["alias_of"] == "alpha"
    finally:
        assert srv.stop() == 0
    assert srv.orphans() == []


def test_a_model_dropped_in_appears_without_a_restart(swapping: Server, models_dir: Path,
                                                     tiny_model_path: Path) -> None:
    (models_dir / "gamma.gguf").write_bytes(tiny_model_path.read_bytes())
    try:
        assert "gamma" in loaded(swapping)
        status, body = chat(swapping, "gamma")
        assert status == 200, body
    finally:
        (models_dir / "gamma.gguf").unlink()
    assert "gamma" not in loaded(swapping)
    assert swapping.health().status == 200  # the default model was swapped out: still healthy


def test_per_model_settings_apply(models_dir: Path,
                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    """A model's table changes its worker: KV cache types and flash attention load and serve
    (the tiny model's 16-wide heads cannot hold quantised blocks of 32, hence f32),
    the chat template override renders the prompt, and default sampling values fill what a
    request leaves unset (a request's own value wins)."""
    home = tmp_path_factory.mktemp("home")
    config = home / "hearth.toml"
    config.write_text(
        '[models.beta]\ncache_type_k = "f32"\ncache_type_v = "f32"\nflash_attn = true\n'
        'chat_template = "{% for m in messages %}{{ m.content }}{% endfor %}"\n'
        'max_tokens = 3\nctx_size = 128\n')
    srv = Server(models_dir, "alpha", home, args=(*ARGS, "--config", str(config))).start()
    try:
        r = srv.chat({"model": "beta", "messages": [{"role": "user", "content": "hello"}]})
        assert r.status == 200, r.body
        usage = r.json()["usage"]
        assert usage["completion_tokens"] == 3  # the model's max_tokens default
        assert usage["prompt_tokens"] <= 4  # "hello" alone: the ChatML template is not used
        r = srv.chat({"model": "beta", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "hello"}]})
        assert r.json()["usage"]["completion_tokens"] == 5
        r = srv.chat({"model": "beta", "messages": [{"role": "user", "content": "word " * 200}]})
        assert r.status == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        # /v1/models reports each model's KV cache: its types and one slot's bytes at its
        # context size (beta: f32, twice f16's 2 bytes a value; alpha: the f16 default)
        listed = {m["id"]: m["hearth"] for m in srv.request("GET", "/v1/models").json()["data"]}
        info = read_gguf_metadata(models_dir / "beta.gguf")
        assert (listed["beta"]["kv_cache_type_k"], listed["beta"]["kv_cache_type_v"]) == (
            "f32", "f32")
        assert listed["beta"]["kv_bytes_per_slot"] == kv_bytes_per_token(info) * 2 * 128
        assert listed["alpha"]["kv_bytes_per_slot"] == kv_bytes_per_token(info) * 256
        assert listed["beta"]["device"] == "cpu"  # loaded, on this CPU build
    finally:
        assert srv.stop() == 0
    assert srv.orphans() == []
