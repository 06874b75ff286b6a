"""api/responses_store.py: the stored responses' caps (count, bytes), least-recently-used
eviction, and scoping to the API key's name."""

from __future__ import annotations

from hearth.api import responses_types as rt
from hearth.api.responses_store import ResponseStore


def response(rid: str, text: str = "hi") -> rt.Response:
    return rt.Response(id=rid, created_at=0, model="m", status="completed",
                       output=[rt.MessageItem("msg_" + rid, "assistant",
                                              [rt.OutputTextPart(text)])])


INPUT: list[rt.Item] = [rt.MessageItem("msg_in", "user", [rt.InputTextPart("q")])]


def test_put_get_delete_for_the_owner_only() -> None:
    store = ResponseStore(10, 1 << 20)
    assert store.put("alice", response("r1"), INPUT)
    got = store.get("alice", "r1")
    assert got is not None and got.response.id == "r1" and got.input_items == INPUT
    assert [i.id for i in got.conversation()] == ["msg_in", "msg_r1"]
    assert store.get("bob", "r1") is None  # as if absent
    assert not store.delete("bob", "r1")
    assert store.get("alice", "r1") is not None  # bob's delete did nothing
    assert store.delete("alice", "r1")
    assert store.get("alice", "r1") is None and not store.delete("alice", "r1")
    assert len(store) == 0 and store.bytes == 0


def test_the_count_cap_evicts_the_least_recently_used() -> None:
    store = ResponseStore(2, 1 << 20)
    store.put("a", response("r1"), INPUT)
    store.put("a", response("r2"), INPUT)
    assert store.get("a", "r1") is not None  # r1 is now the most recently used
    store.put("b", response("r3"), INPUT)
    assert store.get("a", "r2") is None
    assert store.get("a", "r1") is not None and store.get("b", "r3") is not None
    assert len(store) == 2


def test_the_byte_cap_evicts_until_it_fits() -> None:
    one = ResponseStore(100, 1 << 20)
    one.put("a", response("r1", "x" * 1000), INPUT)
    size = one.bytes
    store = ResponseStore(100, 2 * size + size // 2)
    for rid in ("r1", "r2", "r3"):
        assert store.put("a", response(rid, "x" * 1000), INPUT)
    assert store.get("a", "r1") is None
    assert store.get("a", "r2") is not None and store.get("a", "r3") is not None
    assert store.bytes == 2 * size <= store.max_bytes


def test_one_over_the_byte_cap_or_a_zero_count_is_not_kept() -> None:
    store = ResponseStore(10, 200)
    assert not store.put("a", response("r1", "x" * 500), INPUT)
    assert len(store) == 0
    none = ResponseStore(0, 1 << 20)
    assert not none.put("a", response("r1"), INPUT) and len(none) == 0


def test_the_same_id_again_replaces_it() -> None:
    store = ResponseStore(10, 1 << 20)
    store.put("a", response("r1", "one"), INPUT)
    store.put("a", response("r1", "two"), INPUT)
    got = store.get("a", "r1")
    assert len(store) == 1 and got is not None
    assert got.response.output[0].content[0].text == "two"  # type: ignore[union-attr]


def test_a_key_that_floods_the_store_evicts_its_own() -> None:
    """The heaviest key pays: a light key's responses outlive a heavy key's flood, by count
    and by bytes."""
    store = ResponseStore(4, 1 << 20)
    store.put("light", response("l1"), INPUT)
    for i in range(10):
        assert store.put("heavy", response(f"h{i}"), INPUT)
    assert store.get("light", "l1") is not None
    assert store.held("heavy") == (3, store.held("heavy")[1]) and len(store) == 4
    assert [store.get("heavy", f"h{i}") is not None for i in (6, 7, 8, 9)] == \
        [False, True, True, True]
    one = ResponseStore(100, 1 << 20)
    one.put("a", response("h0", "x" * 1000), INPUT)  # every id here is two characters
    size = one.bytes
    by_bytes = ResponseStore(100, 4 * size)
    by_bytes.put("light", response("l1", "x" * 1000), INPUT)
    for i in range(10):
        by_bytes.put("heavy", response(f"h{i}", "x" * 1000), INPUT)
    assert by_bytes.get("light", "l1") is not None
    assert by_bytes.held("heavy") == (3, 3 * size) and by_bytes.bytes <= by_bytes.max_bytes
    # when the light key then needs room, the heavy one still pays
    by_bytes.put("light", response("l2", "x" * 1000), INPUT)
    assert by_bytes.held("light")[0] == 2 and by_bytes.held("heavy")[0] == 2
