"""engine/prepare.py: small jobs prepared at once, big ones on the background thread in order,
errors carried to the job, cancelled and drained jobs dropped."""

from __future__ import annotations

import threading

import pytest
from hearth.engine.prepare import Preparer
from hearth.scheduler import errors

from tests.harness import wait_until


class Gate:
    """prepare() that blocks on jobs named "hold" until opened, and records what it ran."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.ran: list[str] = []

    def __call__(self, job: str) -> str:
        if job.startswith("hold"):
            assert self.open.wait(10)
        if job.startswith("bad"):
            raise errors.InvalidRequest(f"{job} is bad", param="messages")
        if job.startswith("crash"):
            raise RuntimeError("a bug")
        self.ran.append(job)
        return job.upper()


def make(gate: Gate) -> Preparer[str, str]:
    return Preparer(gate, lambda job: job, inline_max_bytes=100)


def test_a_small_job_is_prepared_at_once() -> None:
    gate = Gate()
    p = make(gate)
    assert p.submit("a", 100) == "A"
    assert p.pending == 0
    bad = p.submit("bad1", 10)
    assert isinstance(bad, errors.InvalidRequest) and bad.param == "messages"


def test_big_jobs_run_off_the_caller_in_order() -> None:
    gate = Gate()
    p = make(gate)
    assert p.submit("hold1", 101) is None
    assert p.submit("b2", 101) is None
    assert p.pending == 2
    # a small job is not queued behind the big ones
    assert p.submit("c", 5) == "C"
    assert p.ready() == []
    gate.open.set()
    done: list[tuple[str, object]] = []
    wait_until(lambda: bool(done.extend((d.job, d.result) for d in p.ready())) or len(done) == 2,
               lambda: done)
    assert done == [("hold1", "HOLD1"), ("b2", "B2")]
    assert p.pending == 0
    p.close()


def test_an_error_in_preparation_is_the_jobs_and_a_bug_propagates() -> None:
    gate = Gate()
    p = make(gate)
    p.submit("bad2", 500)
    out: list[object] = []
    wait_until(lambda: bool(out.extend(d.result for d in p.ready())) or len(out) == 1,
               lambda: out)
    assert isinstance(out[0], errors.InvalidRequest)
    p.submit("crash", 500)
    with pytest.raises(RuntimeError, match="a bug"):
        wait_until(lambda: bool(p.ready()), lambda: "never")
    p.close()


def test_cancel_and_drain_forget_queued_jobs() -> None:
    gate = Gate()
    p = make(gate)
    p.submit("hold2", 500)
    p.submit("later", 500)
    p.submit("last", 500)
    assert p.cancel("later") and not p.cancel("later") and not p.cancel("unknown")
    assert p.pending == 2
    gate.open.set()
    got: list[str] = []
    wait_until(lambda: bool(got.extend(d.job for d in p.ready())) or len(got) == 2, lambda: got)
    assert got == ["hold2", "last"] and "later" not in gate.ran
    gate2 = Gate()
    q = make(gate2)
    q.submit("hold3", 500)
    q.submit("x", 500)
    assert q.drain() == ["hold3", "x"] and q.pending == 0
    gate2.open.set()
    q.close()
