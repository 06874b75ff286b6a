"""Faults under load, through real processes on the tiny model: a worker SIGKILLed while many
streams run, and ``hearth serve`` SIGTERMed while many streams run.

Sizes come from ``HEARTH_LOAD`` (see conftest.py); the same code runs at both sizes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from harness import API_KEY, Server, descendants, worker_pids
from load_client import (
    END_TOKENS,
    NOT_TEXT_TOKENS,
    StreamResult,
    check_stream,
    request_json,
    sample,
    scrape,
    settled,
    stream_chat,
    worker_died_error,
)
from load_support import LoadSizes, orphans_after

pytestmark = pytest.mark.load

PARALLEL = 4
LONG = 2  # long streams holding slots when the worker is killed
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PROBE_KEY = "probe-key-0123456789"  # a second key: the fair queue serves it before the crowd
REQUEST_TIMEOUT = 180.0


def body(n: int, max_tokens: int, stream: bool = True, *, to_the_end: bool = False
         ) -> dict[str, Any]:
    """Request ``n``; ``to_the_end``: it cannot stop before max_tokens (no end-of-turn)."""
    return {"model": "tiny", "max_tokens": max_tokens, "stream": stream,
            "stream_options": {"include_usage": True}, "temperature": 1.0, "seed": n,
            "logit_bias": {**NOT_TEXT_TOKENS, **(END_TOKENS if to_the_end else {})},
            "messages": [{"role": "user", "content": f"Stream {n}, please."}]}


def start(models_dir: Path, home: Path, *args: str) -> Server:
    return Server(models_dir, "tiny", home, args=(
        "--parallel", str(PARALLEL), "--threads", "1", "--max-queue", "1024", *args)).start()


def no_traceback(srv: Server) -> None:
    err = "".join(srv.stderr)
    assert "Traceback" not in err, err


@dataclass
class Timed:
    """One request of a churning client: when it was sent, when it ended, what it got."""

    sent: float
    out: StreamResult
    max_tokens: int
    ended: float = 0.0


def test_worker_killed_under_load(load_models_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                                  sizes: LoadSizes, report: Callable[[str], None]) -> None:
    """The worker is SIGKILLed while LONG streams hold half the slots and ``sizes.fault_clients``
    clients churn short streams back to back through the other half (queued, assigned, starting,
    streaming). Streams running at the kill end with a worker_died error event then [DONE];
    requests that had not started are served by the restarted worker (queued ones wait for it;
    one assigned to the dead worker is submitted again by the api); requests sent after the kill
    complete; no client hangs; service resumes, with every slot free afterwards."""
    long_tokens = 2000
    srv = start(load_models_dir, tmp_path_factory.mktemp("kill"), "--ctx-size", "2048",
                "--api-key", PROBE_KEY)
    try:
        (old_worker,) = worker_pids(srv)

        async def main() -> dict[str, Any]:
            longs = [StreamResult() for _ in range(LONG)]
            long_tasks = [asyncio.create_task(stream_chat(
                srv.port, body(i, long_tokens, to_the_end=True), AUTH, REQUEST_TIMEOUT, out))
                for i, out in enumerate(longs)]
            deadline = time.monotonic() + 60
            while not all(len(o.content_at) >= 3 for o in longs):
                assert time.monotonic() < deadline and not any(t.done() for t in long_tasks)
                await asyncio.sleep(0.002)
            killed_at = 0.0
            churned: list[list[Timed]] = [[] for _ in range(sizes.fault_clients)]

            async def churn(c: int) -> None:
                after_kill = 0
                while after_kill < 2:
                    n = 1000 + c * 1000 + len(churned[c])
                    req = Timed(time.monotonic(), StreamResult(), 1 + n % 8)
                    churned[c].append(req)
                    await stream_chat(srv.port, body(n, req.max_tokens), AUTH, REQUEST_TIMEOUT,
                                      req.out)
                    req.ended = time.monotonic()
                    if killed_at and req.sent > killed_at:
                        after_kill += 1

            churners = [asyncio.create_task(churn(c)) for c in range(sizes.fault_clients)]
            # churning: most clients have had a request answered
            while sum(len(c) >= 2 for c in churned) < len(churned) * 3 // 4:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.002)
            assert not any(t.done() for t in long_tasks), "the long streams ended too soon"
            killed_at = time.monotonic()
            os.kill(old_worker, signal.SIGKILL)
            probe_status, _, probe = await request_json(
                srv.port, "POST", "/v1/chat/completions", body(-1, 4, False, to_the_end=True),
                {"Authorization": f"Bearer {PROBE_KEY}"})
            probe_s = time.monotonic() - killed_at
            await asyncio.wait_for(asyncio.gather(*long_tasks, *churners), REQUEST_TIMEOUT + 10)
            after = await settled(srv.port, API_KEY)
            samples = await scrape(srv.port, API_KEY)
            fresh = await asyncio.gather(*(stream_chat(srv.port, body(10**6 + i, 16), AUTH,
                                                       REQUEST_TIMEOUT)
                                           for i in range(2 * PARALLEL)))
            return {"longs": longs, "churned": [r for c in churned for r in c],
                    "killed_at": killed_at, "probe": (probe_status, probe),
                    "probe_s": probe_s, "after": after, "samples": samples, "fresh": fresh}

        got = asyncio.run(main())
        killed_at = got["killed_at"]
        bad = [f"long stream {i}: {out.payloads[-2:]!r}" for i, out in enumerate(got["longs"])
               if worker_died_error(out) is None]
        churned: list[Timed] = got["churned"]
        died = completed = 0
        resumed_at = []  # first tokens of requests sent after the kill
        for req in churned:
            if req.sent < killed_at < req.ended and worker_died_error(req.out) is not None:
                died += 1
                continue
            try:
                check_stream(req.out, "tiny", req.max_tokens, every_token_is_text=True)
                completed += 1
            except AssertionError as exc:
                bad.append(f"request sent {req.sent - killed_at:+.3f}s from the kill: {exc}")
            if req.sent > killed_at and req.out.content_at:
                resumed_at.append(req.out.content_at[0])
        resumed_s = min(resumed_at, default=float("nan")) - killed_at
        report(f"worker SIGKILLed with {LONG} long streams and {sizes.fault_clients} clients "
               f"churning short ones over {PARALLEL} slots: {LONG} long + {died} short streams "
               f"ended with worker_died, {completed} of {len(churned)} short ones completed, "
               f"{len(bad)} otherwise; recovery: kill -> first token of a request sent after it "
               f"{resumed_s:.2f}s, kill -> such a request completed {got['probe_s']:.2f}s")
        assert bad == [], bad[:3]
        assert died <= PARALLEL - LONG
        status, probe = got["probe"]
        assert status == 200, probe
        assert probe["choices"][0]["finish_reason"] == "length"
        assert got["after"]["slots"] == {"busy": 0, "total": PARALLEL}
        samples = got["samples"]
        assert sample(samples, "hearth_worker_crashes_total", model="tiny") == 1
        assert sample(samples, "hearth_worker_restarts_total", model="tiny") == 1
        for out in got["fresh"]:
            check_stream(out, "tiny", 16, every_token_is_text=True)
        (new_worker,) = worker_pids(srv)
        assert new_worker != old_worker
    finally:
        code = srv.stop()
    assert code == 0, "".join(srv.stderr)
    assert orphans_after(srv) == []
    no_traceback(srv)


async def late_request(port: int, n: int) -> tuple[float, float, str]:
    """A request sent after SIGTERM (streamed if ``n`` is odd): (sent, answered, outcome), the
    outcome being "200" (a complete answer), "503 <code>", "refused" or what went wrong."""
    sent = time.monotonic()
    try:
        if n % 2:
            res = await stream_chat(port, body(-n, 8), AUTH, REQUEST_TIMEOUT)
            if res.broken.startswith("ConnectionRefusedError"):
                raise ConnectionRefusedError(res.broken)
            if res.broken:
                return sent, time.monotonic(), f"broken {res.broken}"
            if res.status == 200:
                check_stream(res, "tiny", 8, every_token_is_text=True)
            status, reply = res.status, res.body
        else:
            status, headers, reply = await request_json(
                port, "POST", "/v1/chat/completions", body(-n, 8, False), AUTH)
            assert status != 503 or headers.get("retry-after"), headers
            assert status != 200 or reply["choices"][0]["finish_reason"], reply
    except ConnectionRefusedError:
        return sent, time.monotonic(), "refused"  # the api has closed its port
    except AssertionError as exc:
        return sent, time.monotonic(), f"bad answer: {exc}"
    code = f" {reply['error']['code']}" if status != 200 else ""
    return sent, time.monotonic(), f"{status}{code}"


def test_sigterm_under_load(load_models_dir: Path, tmp_path_factory: pytest.TempPathFactory,
                            sizes: LoadSizes, report: Callable[[str], None]) -> None:
    """SIGTERM to ``hearth serve`` while ``sizes.fault_clients`` streams run or wait: new
    requests get 503 shutting_down (every 50 ms one is sent, until the port closes); every
    stream submitted before finishes with its finish_reason and [DONE] within
    --shutdown-grace; the server exits 0; nothing is left."""
    grace = 120
    max_tokens = 900
    parallel = 8
    srv = Server(load_models_dir, "tiny", tmp_path_factory.mktemp("term"), args=(
        "--parallel", str(parallel), "--ctx-size", "1024", "--threads", "1",
        "--max-queue", "1024", "--shutdown-grace", str(grace))).start()
    assert srv.proc is not None
    try:
        async def main() -> dict[str, Any]:
            tasks = [asyncio.create_task(stream_chat(srv.port,
                                                     body(i, max_tokens, to_the_end=True),
                                                     AUTH, REQUEST_TIMEOUT))
                     for i in range(sizes.fault_clients)]
            # every stream submitted (running or queued) before the signal, none finished
            deadline = time.monotonic() + 60
            while True:
                _, _, h = await request_json(srv.port, "GET", "/health")
                if h["slots"]["busy"] + h["queued"] == len(tasks):
                    break
                assert time.monotonic() < deadline, h
                await asyncio.sleep(0.02)
            assert not any(t.done() for t in tasks), "streams too short for this machine"
            srv.children |= descendants(srv.proc.pid)  # type: ignore[union-attr]
            term_at = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            late: list[asyncio.Task[tuple[float, float, str]]] = []
            drained_s = 0.0  # SIGTERM -> the last stream in flight done
            while time.monotonic() < term_at + grace + 30:  # until the api closes its port
                late.append(asyncio.create_task(late_request(srv.port, len(late))))
                await asyncio.sleep(0.05)
                if not drained_s and all(t.done() for t in tasks):
                    drained_s = time.monotonic() - term_at
                if any(t.done() and t.result()[2] == "refused" for t in late):
                    break
            outs = await asyncio.wait_for(asyncio.gather(*tasks), REQUEST_TIMEOUT)
            return {"outs": outs, "late": await asyncio.gather(*late), "term_at": term_at,
                    "drained_s": drained_s}

        got = asyncio.run(main())
        code = srv.proc.wait(grace + 30)
        exit_s = time.monotonic() - got["term_at"]
    finally:
        srv.stop()
    outs: list[StreamResult] = got["outs"]
    finished = []
    for i, out in enumerate(outs):
        try:
            finished.append(check_stream(out, "tiny", max_tokens, every_token_is_text=True))
        except AssertionError as exc:
            raise AssertionError(f"stream {i} in flight at SIGTERM: {exc}") from None
    late: list[tuple[float, float, str]] = got["late"]
    outcomes = [outcome for _, _, outcome in late]
    first_503 = min((answered for _, answered, o in late if o == "503 shutting_down"),
                    default=float("inf"))
    report(f"SIGTERM with {len(outs)} streams in flight ({parallel} slots): {len(finished)} "
           f"finished with finish_reason, all within {got['drained_s']:.1f}s "
           f"(--shutdown-grace {grace}); {len(late)} requests sent after it: "
           f"{outcomes.count('503 shutting_down')} got 503 shutting_down, "
           f"{outcomes.count('200')} were accepted before the api heard of the signal "
           f"(and completed), {outcomes.count('refused')} refused once the port closed; "
           f"exit code {code} after {exit_s:.1f}s")
    assert code == 0, "".join(srv.stderr)
    assert set(outcomes) <= {"200", "503 shutting_down", "refused"}, outcomes
    assert first_503 < float("inf"), outcomes
    # once one was refused for shutting down, every request sent after is refused too
    assert all(o != "200" for sent, _, o in late if sent > first_503), late
    assert outcomes[-1] == "refused"
    assert orphans_after(srv) == []
    no_traceback(srv)
