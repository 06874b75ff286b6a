"""A worker killed under a stream is in the server log: the scheduler's line saying which
worker died and how (model, pid, signal), the restart's line, and the cut stream's request
line with the error's status and code (502 ... error=worker_died) instead of a plain 200."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest
from harness import Server, worker_pids

pytestmark = pytest.mark.integration

KEY = "k-crash-log-0123456789"
STREAM = {"model": "tiny", "max_tokens": 200, "stream": True,
          "messages": [{"role": "user", "content": "Tell me a long story"}]}
CUT_LINE = re.compile(r"502 POST /v1/chat/completions key=key1 model=tiny prompt_tokens=\S+ "
                      r"completion_tokens=\S+ [\d.]+ms error=worker_died$", re.M)


def kill_under_a_stream(srv: Server) -> tuple[int, list[bytes] | None]:
    """Start a stream, SIGKILL the worker once content has arrived, read the rest; the events
    after the kill (None if the stream finished first: the caller tries again) and the pid."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request("POST", "/v1/chat/completions", body=json.dumps(STREAM).encode(),
                     headers={"Authorization": f"Bearer {KEY}",
                              "Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 200
        while True:  # content, not just the role chunk: a request with none is retried
            line = resp.readline()
            assert line, "the stream ended before any content"
            if line.startswith(b"data: ") and b'"content":"' in line and \
                    b'"content":""' not in line:
                break
        [pid] = worker_pids(srv)
        os.kill(pid, signal.SIGKILL)
        rest = [ln[len(b"data: "):].strip() for ln in resp.read().split(b"\n")
                if ln.startswith(b"data: ")]
    finally:
        conn.close()
    if any(b'"finish_reason":"' in p for p in rest) and b"worker_died" not in b"".join(rest):
        return pid, None
    return pid, rest


def wait_for_text(srv: Server, pattern: re.Pattern[str]) -> re.Match[str]:
    deadline = time.monotonic() + 30
    while not (m := pattern.search("".join(srv.stderr))):
        assert time.monotonic() < deadline, "".join(srv.stderr)
        time.sleep(0.1)
    return m


def test_a_killed_worker_and_its_cut_stream_are_logged(tiny_models_dir: Path,
                                                       tmp_path: Path) -> None:
    srv = Server(tiny_models_dir, "tiny", tmp_path, api_key=KEY,
                 args=("--parallel", "1", "--ctx-size", "256", "--threads", "1")).start()
    try:
        for _ in range(5):
            pid, rest = kill_under_a_stream(srv)
            if rest is not None:
                break
        else:
            pytest.fail("every stream finished before its worker was killed")
        assert b"worker_died" in rest[-2] and rest[-1] == b"[DONE]"
        died = re.compile(
            r"worker for model 'tiny' \(pid (\d+)\) exited unexpectedly: killed by SIGKILL")
        wait_for_text(srv, died)
        assert str(pid) in died.findall("".join(srv.stderr))
        wait_for_text(srv, CUT_LINE)
        # the next request starts a new worker, which the log names too
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        conn.request("POST", "/v1/chat/completions",
                     body=json.dumps({**STREAM, "stream": False, "max_tokens": 2}).encode(),
                     headers={"Authorization": f"Bearer {KEY}"})
        assert conn.getresponse().status == 200
        conn.close()
        [new_pid] = worker_pids(srv)
        restarted = wait_for_text(srv, re.compile(
            r"worker for model 'tiny' restarted \(pid (\d+), start 2\)"))
        assert int(restarted.group(1)) == new_pid
    finally:
        assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []
