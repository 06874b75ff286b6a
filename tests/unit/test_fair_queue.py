"""scheduler/fair_queue.py: bounded admission, keys take turns, per-model pops."""

from __future__ import annotations

import itertools

import pytest
from hearth.scheduler.errors import Overloaded
from hearth.scheduler.fair_queue import FairQueue
from hearth.scheduler.messages import ChatJob, ChatMessage, RequestedSampling

_ids = itertools.count()


def submit(key: str, model: str = "tiny", rid: str | None = None) -> ChatJob:
    return ChatJob(rid or f"{key}-{next(_ids)}", "frontend-1", key, model,
                   [ChatMessage("user", "hi")], RequestedSampling())


def pop_keys(q: FairQueue, model: str = "tiny", n: int | None = None) -> list[str]:
    out = []
    while n is None or len(out) < n:
        req = q.pop_for(model)
        if req is None:
            break
        out.append(req.key_name)
    return out


def test_empty() -> None:
    q = FairQueue(4)
    assert len(q) == 0
    assert q.pop_for("tiny") is None
    assert q.drain() == []
    assert q.models_waiting() == set()


def test_bounded_queue_is_overloaded() -> None:
    q = FairQueue(2)
    q.push(submit("a"))
    q.push(submit("b"))
    with pytest.raises(Overloaded):
        q.push(submit("c"))
    assert len(q) == 2
    assert q.pop_for("tiny") is not None
    q.push(submit("c"))  # room again
    assert len(q) == 2


def test_bound_is_across_keys_and_models() -> None:
    q = FairQueue(3)
    q.push(submit("a", "m1"))
    q.push(submit("b", "m2"))
    q.push(submit("c", "m3"))
    with pytest.raises(Overloaded):
        q.push(submit("d", "m4"))


def test_fifo_within_a_key() -> None:
    q = FairQueue(10)
    reqs = [submit("a") for _ in range(5)]
    for r in reqs:
        q.push(r)
    assert [q.pop_for("tiny") for _ in range(5)] == reqs


def test_flooding_key_does_not_starve_another() -> None:
    q = FairQueue(1000)
    for _ in range(100):
        q.push(submit("A"))
    q.push(submit("B"))
    order = pop_keys(q)
    assert order[1] == "B"
    assert order.count("A") == 100 and len(order) == 101
    assert len(q) == 0


def test_keys_take_turns() -> None:
    q = FairQueue(100)
    for key in "ABC":
        for _ in range(3):
            q.push(submit(key))
    assert "".join(pop_keys(q)) == "ABCABCABC"


def test_late_key_goes_before_keys_already_served() -> None:
    q = FairQueue(100)
    for _ in range(10):
        q.push(submit("A"))
        q.push(submit("B"))
    assert pop_keys(q, n=4) == ["A", "B", "A", "B"]
    q.push(submit("C"))
    assert pop_keys(q, n=3) == ["C", "A", "B"]


def test_pop_is_per_model() -> None:
    q = FairQueue(100)
    a1 = submit("A", "m1")
    a2 = submit("A", "m2")
    b2 = submit("B", "m2")
    for r in (a1, a2, b2):
        q.push(r)
    assert q.models_waiting() == {"m1", "m2"}
    assert q.pop_for("m3") is None
    assert q.pop_for("m2") is a2  # A's m1 request does not block its m2 request
    assert q.pop_for("m2") is b2
    assert q.pop_for("m2") is None
    assert q.models_waiting() == {"m1"}
    assert q.pop_for("m1") is a1
    assert len(q) == 0


def test_remove() -> None:
    q = FairQueue(10)
    keep = submit("A", rid="r1")
    gone = submit("A", rid="r2")
    other = submit("B", rid="r3")
    for r in (keep, gone, other):
        q.push(r)
    assert q.remove("r2") is gone
    assert q.remove("r2") is None
    assert q.remove("nope") is None
    assert len(q) == 2
    assert q.remove("r3") is other
    assert q.models_waiting() == {"tiny"}
    assert q.pop_for("tiny") is keep
    assert q.pop_for("tiny") is None


def test_remove_frees_room() -> None:
    q = FairQueue(1)
    q.push(submit("A", rid="r1"))
    q.remove("r1")
    q.push(submit("A", rid="r2"))
    assert len(q) == 1


def test_drain_one_model() -> None:
    q = FairQueue(10)
    m1 = [submit("A", "m1"), submit("B", "m1")]
    m2 = [submit("A", "m2"), submit("B", "m2")]
    for r in (m1[0], m2[0], m1[1], m2[1]):
        q.push(r)
    assert sorted(r.request_id for r in q.drain("m1")) == sorted(r.request_id for r in m1)
    assert len(q) == 2
    assert q.models_waiting() == {"m2"}
    assert q.pop_for("m1") is None
    assert q.drain("nope") == []
    assert sorted(r.request_id for r in q.drain()) == sorted(r.request_id for r in m2)
    assert len(q) == 0
    assert q.pop_for("m2") is None


def test_drain_everything_then_reuse() -> None:
    q = FairQueue(3)
    for key in "ABC":
        q.push(submit(key))
    assert len(q.drain()) == 3
    assert len(q) == 0
    for key in "XYZ":
        q.push(submit(key))  # the bound counts what waits now
    assert sorted(pop_keys(q)) == ["X", "Y", "Z"]


def choices(key: str, n: int, rid: str) -> ChatJob:
    return ChatJob(rid, "frontend-1", key, "tiny", [ChatMessage("user", "hi")],
                   RequestedSampling(), n=n)


def test_a_request_of_n_choices_waits_for_n_slots_and_keeps_its_turn() -> None:
    """An n-unit that does not fit the free slots is not passed by smaller requests behind it
    (or it could wait for ever under a steady stream of them): nothing is popped until it fits."""
    q = FairQueue(10)
    q.push(choices("a", 3, "a-big"))
    q.push(submit("b", rid="b-small"))
    assert q.pop_for("tiny", room=2) is None
    assert len(q) == 2
    assert q.pop_for("tiny", room=3).request_id == "a-big"  # type: ignore[union-attr]
    assert q.pop_for("tiny", room=1).request_id == "b-small"  # type: ignore[union-attr]


def test_a_key_s_cap_counts_a_request_s_choices() -> None:
    q = FairQueue(10)
    q.push(choices("a", 3, "a-big"))
    q.push(submit("b", rid="b-small"))
    asked: list[tuple[str, int]] = []

    def may_run(key: str, slots: int) -> bool:
        asked.append((key, slots))
        return slots <= 2

    assert q.pop_for("tiny", may_run).request_id == "b-small"  # type: ignore[union-attr]
    assert ("a", 3) in asked and ("b", 1) in asked
