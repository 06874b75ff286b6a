"""The host-RAM prompt cache's store (engine/ram_cache.py): byte cap, LRU order, prefix choice."""

from __future__ import annotations

from hearth.engine.ram_cache import RamCache


def test_off_when_the_cap_is_zero() -> None:
    cache = RamCache(0)
    assert not cache.enabled
    assert cache.put([1, 2, 3], b"abc") is None
    assert len(cache) == 0 and cache.nbytes == 0


def test_best_is_the_longest_shared_prefix_capped_before_the_last_prompt_token() -> None:
    cache = RamCache(1000)
    a = cache.put([1, 2, 3, 4, 5], b"a" * 10)
    b = cache.put([1, 2, 9, 9], b"b" * 10)
    assert cache.best([1, 2, 3, 4, 5, 6]) == (a, 5)
    assert cache.best([1, 2, 9, 9, 7]) == (b, 4)
    # the prompt's last token is always evaluated (its logits are sampled)
    assert cache.best([1, 2, 3, 4, 5]) == (a, 4)
    assert cache.best([7, 1, 2]) == (None, 0)
    assert cache.best([]) == (None, 0)


def test_ties_go_to_the_most_recently_used() -> None:
    cache = RamCache(1000)
    a = cache.put([1, 2, 3, 7], b"a")
    b = cache.put([1, 2, 3, 8], b"b")
    assert cache.best([1, 2, 3, 9, 9]) == (b, 3)
    cache.get(a)  # used: now the most recent
    assert cache.best([1, 2, 3, 9, 9]) == (a, 3)


def test_evicts_least_recently_used_within_the_byte_cap() -> None:
    cache = RamCache(30)
    a = cache.put([1], b"x" * 10)
    b = cache.put([2], b"x" * 10)
    c = cache.put([3], b"x" * 10)
    assert cache.nbytes == 30 and cache.evictions == 0
    cache.get(a)  # a is used again: b is now the oldest
    d = cache.put([4], b"x" * 15)  # needs 15 bytes: b and c go, oldest first
    assert [entry_id for entry_id, _ in cache.entries()] == [a, d]
    assert b not in dict(cache.entries()) and c not in dict(cache.entries())
    assert cache.nbytes == 25 <= cache.cap_bytes
    assert (cache.evictions, cache.saves) == (2, 4)


def test_a_state_larger_than_the_cap_is_not_kept_and_evicts_nothing() -> None:
    cache = RamCache(30)
    a = cache.put([1], b"x" * 10)
    assert cache.put([2], b"x" * 31) is None
    assert [entry_id for entry_id, _ in cache.entries()] == [a]


def test_a_longer_state_supersedes_its_prefixes_and_a_shorter_one_is_not_kept() -> None:
    cache = RamCache(1000)
    short = cache.put([1, 2, 3], b"s" * 3)
    other = cache.put([1, 9], b"o" * 2)
    long = cache.put([1, 2, 3, 4, 5], b"l" * 5)
    ids = [entry_id for entry_id, _ in cache.entries()]
    assert short not in ids and ids == [other, long]
    assert cache.nbytes == 7
    # the same tokens again, or a prefix of a kept state: nothing new is kept
    assert cache.put([1, 2, 3, 4], b"p" * 4) is None
    assert cache.put([1, 2, 3, 4, 5], b"l" * 5) is None
    assert cache.nbytes == 7 and len(cache) == 2
    # ... and the longer state it found counts as used
    assert [entry_id for entry_id, _ in cache.entries()][-1] == long


def test_stats_report_bytes_entries_and_counters() -> None:
    cache = RamCache(100)
    cache.put([1, 2], b"x" * 40)
    cache.hits, cache.misses, cache.failures, cache.restore_s = 2, 3, 1, 0.5
    stats = cache.stats()
    assert (stats.bytes, stats.entries, stats.hits, stats.misses, stats.saves,
            stats.failures, stats.restore_s) == (40, 1, 2, 3, 1, 1, 0.5)
    assert stats.counters().bytes == 0 and stats.counters().hits == 2
