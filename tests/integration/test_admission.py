"""Admission through real processes: the bounded queue answers 503 with Retry-After."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server

pytestmark = pytest.mark.integration

LONG = {"model": "tiny", "max_tokens": 100000, "stream": True,
        "messages": [{"role": "user", "content": "go on forever"}]}


@pytest.fixture(scope="module")
def one_slot(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tiny_models_dir, "tiny", tmp_path_factory.mktemp("home"),
                 args=("--parallel", "1", "--max-queue", "1", "--ctx-size", "100000",
                       "--threads", "1"))
    srv.start()
    yield srv
    assert srv.stop() == 0
    assert srv.orphans() == []


def _open_stream(server: Server) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", json.dumps(LONG).encode(), server.headers())
    return conn


def _wait(server: Server, what: str, value: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        h = server.health().json()
        got = h["slots"]["busy"] if what == "busy" else h["queued"]
        if got == value:
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} never reached {value}: {server.health().json()}")


def test_full_queue_is_503_with_retry_after(one_slot: Server) -> None:
    running = _open_stream(one_slot)
    _wait(one_slot, "busy", 1)
    queued = _open_stream(one_slot)
    _wait(one_slot, "queued", 1)
    r = one_slot.chat({**LONG, "stream": False})
    assert r.status == 503
    assert r.headers["retry-after"] == "1"
    err = r.json()["error"]
    assert err["code"] == "server_overloaded" and err["type"] == "server_error"
    # the queued request is dropped when its client leaves; the running one frees its slot
    queued.close()
    _wait(one_slot, "queued", 0)
    running.close()
    _wait(one_slot, "busy", 0)
    ok = one_slot.chat({**LONG, "stream": False, "max_tokens": 3})
    assert ok.status == 200, ok.body
