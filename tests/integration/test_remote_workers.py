"""Remote workers across network namespaces: ``hearth serve --worker-listen`` in this
namespace, ``hearth worker --join`` in a namespace the test makes (``ip netns add`` and a veth
pair of its own, deleted at the end), on the tiny model.

What must hold: a model only the remote box has is listed and served through it; an unlisted
key, a plaintext peer and a wrong server key are refused and logged, and never join; cutting
the box's link (``ip link set … down``) mid-stream ends that stream with a ``worker_died``
error event while a local request goes on; the box joins again once the link is back, and
again by itself when the server restarts; a worker of the box that crashes ends its streams
with ``worker_died`` and is started again by the box; embeddings of the box's model are
computed there.
Timings are printed (``-s``), never asserted.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import Server, descendants, free_port, wait_until
from netns import Box, Worker, ip, models, print_key, server_key, two_boxes

WORKER_ARGS = ("--parallel", "2", "--ctx-size", "4096", "--threads", "1")


@pytest.fixture(scope="module")
def boxes() -> Iterator[list[Box]]:
    yield from two_boxes("")


@pytest.fixture(scope="module")
def box(boxes: list[Box]) -> Box:
    return boxes[0]


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {name: tmp_path_factory.mktemp(name)
            for name in ("server", "box1", "box2", "stranger")}


@pytest.fixture(scope="module")
def box_models(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The box's models: only it has ``faraway`` (the tiny model under another name)."""
    d = tmp_path_factory.mktemp("box-models")
    (d / "faraway.gguf").write_bytes(tiny_model_path.read_bytes())
    return d


@pytest.fixture(scope="module")
def server(box: Box, homes: dict[str, Path], tiny_models_dir: Path) -> Iterator[Server]:
    config = homes["server"] / "hearth.toml"
    config.write_text(f'[workers]\nbox1 = "{print_key(homes["box1"])}"\n')
    (homes["server"] / "worker-keys").write_text("# more boxes: name = public key\n")
    listen = f"tcp://{box.host_ip}:{free_port()}"
    srv = Server(tiny_models_dir, "tiny", homes["server"],
                 args=("--parallel", "2", "--ctx-size", "256", "--threads", "1",
                       "--config", str(config), "--worker-listen", listen,
                       "--worker-keys-file", str(homes["server"] / "worker-keys")))
    srv.start()
    srv.listen = listen  # type: ignore[attr-defined]
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


@pytest.fixture(scope="module")
def worker(server: Server, box: Box, homes: dict[str, Path], box_models: Path) -> Iterator[Worker]:
    w = Worker(box, homes["box1"], box_models, "--join", server.listen,  # type: ignore[attr-defined]
               "--server-key", server_key(server), "--model", "faraway", *WORKER_ARGS)
    try:
        wait_until(lambda: models(server).get("faraway") == ["box1"],
                   lambda: w.text() + "".join(server.stderr), timeout=60)
        yield w
    finally:
        assert w.stop() == 0, w.text()


def test_a_model_only_the_box_has_is_listed_and_served_through_it(
        server: Server, worker: Worker) -> None:
    listed = models(server)
    assert listed["faraway"] == ["box1"] and listed["tiny"] == ["local"]
    one = server.request("GET", "/v1/models/faraway")
    assert one.status == 200 and one.json()["hearth"]["workers"] == ["box1"]
    resp = server.chat({"model": "faraway", "max_tokens": 8,
                        "messages": [{"role": "user", "content": "hello"}]})
    assert resp.status == 200, resp.body
    body = resp.json()
    assert body["model"] == "faraway" and body["usage"]["completion_tokens"] == 8
    payloads = server.stream_payloads("/v1/chat/completions", {
        "model": "faraway", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
        "stream_options": {"include_usage": True}})
    assert payloads[-1] == "[DONE]" and payloads[-2]["usage"]["completion_tokens"] == 5
    assert "joined" in "".join(server.stderr) and "'box1'" in "".join(server.stderr)
    metrics = server.request("GET", "/metrics").body.decode()
    assert 'hearth_remote_worker_up{host=' in metrics and 'worker="box1"} 1.0' in metrics
    assert 'hearth_remote_worker_memory_budget_bytes{host=' in metrics
    assert 'model="faraway",place="box1",' in metrics  # the box's worker, in hearth_worker_*
    status = subprocess.run([sys.executable, "-m", "hearth.tools.cli", "status", "--url",
                             server.base_url, "--api-key", server.api_key or ""],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    assert "REMOTE WORKER" in status.stdout and "box1" in status.stdout
    assert any(line.split()[1:3] == ["faraway", "box1"] for line in status.stdout.splitlines())


def test_embeddings_of_a_model_only_the_box_has_are_computed_there(
        server: Server, worker: Worker) -> None:
    here = server.request("POST", "/v1/embeddings", {"model": "tiny", "input": ["a", "bb"]})
    there = server.request("POST", "/v1/embeddings", {"model": "faraway", "input": ["a", "bb"]})
    assert here.status == 200 and there.status == 200, there.body
    body = there.json()
    assert body["model"] == "faraway" and [d["index"] for d in body["data"]] == [0, 1]
    # the same weights under another name: the same vectors (to float rounding)
    for mine, theirs in zip(here.json()["data"], body["data"], strict=True):
        assert mine["embedding"] == pytest.approx(theirs["embedding"], abs=1e-4)
    assert body["usage"] == here.json()["usage"]
    wrong = server.request("POST", "/v1/embeddings",
                           {"model": "faraway", "input": "a", "dimensions": 3})
    assert wrong.status == 400 and wrong.json()["error"]["param"] == "dimensions", wrong.body


def remote_tokens(srv: Server) -> dict[str, float]:
    """worker name -> hearth_remote_worker_tokens_total."""
    out = {}
    for line in srv.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith("hearth_remote_worker_tokens_total{"):
            name = line.split('worker="', 1)[1].split('"', 1)[0]
            out[name] = float(line.rsplit(" ", 1)[1])
    return out


def test_a_box_added_to_the_key_file_joins_and_requests_spread_over_both(
        server: Server, worker: Worker, boxes: list[Box], homes: dict[str, Path],
        box_models: Path) -> None:
    keys = homes["server"] / "worker-keys"
    keys.write_text(keys.read_text() + f"box2 = {print_key(homes['box2'])}\n")  # no restart
    box2 = Worker(boxes[1], homes["box2"], box_models, "--join",
                  server.listen, "--server-key", server_key(server),  # type: ignore[attr-defined]
                  "--model", "faraway", *WORKER_ARGS)
    try:
        wait_until(lambda: models(server).get("faraway") == ["box1", "box2"],
                   lambda: box2.text() + "".join(server.stderr), timeout=60)
        before = remote_tokens(server)
        with ThreadPoolExecutor(4) as pool:  # 4 at once: more than one box's 2 slots
            answers = list(pool.map(lambda i: server.chat({
                "model": "faraway", "max_tokens": 300,
                "messages": [{"role": "user", "content": f"request {i}"}]}), range(4)))
        assert [a.status for a in answers] == [200] * 4
        wait_until(lambda: all(remote_tokens(server).get(b, 0) > before.get(b, 0)
                               for b in ("box1", "box2")),
                   lambda: (before, remote_tokens(server)))
    finally:
        assert box2.stop() == 0, box2.text()
    wait_until(lambda: models(server).get("faraway") == ["box1"], lambda: models(server))


def test_unlisted_key_plaintext_peer_and_wrong_server_key_are_refused(
        server: Server, worker: Worker, box: Box, homes: dict[str, Path],
        box_models: Path) -> None:
    listen = server.listen  # type: ignore[attr-defined]
    stranger_key = print_key(homes["stranger"])
    stranger = Worker(box, homes["stranger"], box_models, "--join", listen,
                      "--server-key", server_key(server), "--model", "faraway", *WORKER_ARGS)
    wrong_server = Worker(box, homes["box1"], box_models, "--join", listen,
                          "--server-key", stranger_key, "--model", "faraway", *WORKER_ARGS)
    # a plaintext peer: a DEALER with no CURVE at all, sending what a worker would
    plain = subprocess.run(
        ["ip", "netns", "exec", box.ns, sys.executable, "-c",
         "import zmq, time\n"
         "s = zmq.Context().socket(zmq.DEALER); s.connect(" + repr(listen) + ")\n"
         "s.send_multipart([b'L', b'\\x81\\xa4type\\xa4join']); time.sleep(2)\n"
         "print('answered' if s.poll(500) else 'silent')\n"],
        capture_output=True, text=True, timeout=60)
    assert plain.stdout.strip() == "silent", plain.stderr
    log = lambda: "".join(server.stderr)  # noqa: E731
    try:
        wait_until(lambda: stranger_key in log() and "not listed" in log(), log, timeout=30)
        wait_until(lambda: "CURVE handshake failed" in log(), log, timeout=30)
        wait_until(lambda: "handshake" in wrong_server.text(), wrong_server.text, timeout=30)
    finally:
        assert stranger.stop() == 0
        assert wrong_server.stop() == 0
    assert "joined" not in stranger.text() and "joined" not in wrong_server.text()
    assert models(server)["faraway"] == ["box1"]  # only the listed box serves it


def test_a_cut_link_ends_its_streams_with_worker_died_and_the_box_joins_again(
        server: Server, worker: Worker, box: Box) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps({
        "model": "faraway", "max_tokens": 100000, "stream": True,
        "messages": [{"role": "user", "content": "go"}]}).encode(), server.headers())
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(3):
        assert resp.readline()
    ip("link", "set", box.host_if, "down")
    cut_at = time.monotonic()
    try:
        # a request on this machine's own worker goes on meanwhile
        local = server.chat({"model": "tiny", "max_tokens": 4,
                             "messages": [{"role": "user", "content": "hi"}]})
        assert local.status == 200, local.body
        lines = []
        while line := resp.readline():
            lines.append(line.strip())
        failed_after = time.monotonic() - cut_at
        conn.close()
        data = [ln[6:] for ln in lines if ln.startswith(b"data: ")]
        assert data[-1] == b"[DONE]"
        err = json.loads(data[-2])["error"]
        assert err["code"] == "worker_died" and "box1" in err["message"]
        wait_until(lambda: "faraway" not in models(server),  # dropped with its box
                   lambda: models(server))
    finally:
        ip("link", "set", box.host_if, "up")
    up_at = time.monotonic()
    wait_until(lambda: models(server).get("faraway") == ["box1"],
               lambda: worker.text() + "".join(server.stderr), timeout=60)
    rejoined_after = time.monotonic() - up_at
    print(f"\nworker_died {failed_after:.2f} s after the cut; joined again "
          f"{rejoined_after:.2f} s after the link came back")
    resp2 = server.chat({"model": "faraway", "max_tokens": 4,
                         "messages": [{"role": "user", "content": "again"}]})
    assert resp2.status == 200, resp2.body
    assert "lost the scheduler" in worker.text()


def test_a_worker_that_crashes_on_the_box_is_started_again_by_the_box(
        server: Server, worker: Worker) -> None:
    engine = [pid for pid in descendants(worker.proc.pid)
              if Path(f"/proc/{pid}/comm").read_text().startswith("hearth-w-")]
    assert len(engine) == 1, engine
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", json.dumps({
        "model": "faraway", "max_tokens": 100000, "stream": True,
        "messages": [{"role": "user", "content": "go"}]}).encode(), server.headers())
    resp = conn.getresponse()
    assert resp.status == 200
    for _ in range(3):
        assert resp.readline()
    os.kill(engine[0], signal.SIGKILL)
    data = [ln.strip()[6:] for ln in resp.readlines() if ln.startswith(b"data: ")]
    conn.close()
    assert data[-1] == b"[DONE]" and json.loads(data[-2])["error"]["code"] == "worker_died"
    wait_until(lambda: "restarting the worker for model 'faraway'" in worker.text(),
               worker.text, timeout=30)
    wait_until(lambda: models(server).get("faraway") == ["box1"],
               lambda: worker.text() + "".join(server.stderr), timeout=60)
    again = server.chat({"model": "faraway", "max_tokens": 4,
                         "messages": [{"role": "user", "content": "again"}]})
    assert again.status == 200, again.body
    assert worker.proc.poll() is None  # the box itself never stopped


def test_the_box_joins_a_restarted_server_by_itself(
        server: Server, worker: Worker, homes: dict[str, Path], tiny_models_dir: Path) -> None:
    """Runs last: it replaces the module's server with a new one (same config dir, so the
    same key pair, and the same --worker-listen address)."""
    assert server.stop() == 0, "".join(server.stderr)
    again = Server(tiny_models_dir, "tiny", homes["server"], args=server.args)
    again.start()
    try:
        wait_until(lambda: models(again).get("faraway") == ["box1"],
                   lambda: worker.text() + "".join(again.stderr), timeout=60)
        resp = again.chat({"model": "faraway", "max_tokens": 3,
                           "messages": [{"role": "user", "content": "back"}]})
        assert resp.status == 200, resp.body
    finally:
        assert again.stop() == 0, "".join(again.stderr)
    assert again.orphans() == []
