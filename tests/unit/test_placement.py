"""Placement rules (scheduler/placement.py): memory estimates, room for one more model,
keep-alive expiry."""

from __future__ import annotations

from pathlib import Path

from hearth.scheduler.placement import (
    Loaded,
    estimate_bytes,
    expired,
    kv_bytes_per_slot,
    kv_bytes_per_token,
    layers_that_fit,
    plan_room,
)
from hearth.tools.cli import tiny_model
from hearth.tools.gguf_header import read_gguf_metadata

GB = 1024**3


def test_kv_bytes_per_token_of_the_tiny_model(tiny_model_path: Path) -> None:
    info = read_gguf_metadata(tiny_model_path)
    # layers x kv heads x (key + value head size) x 2 bytes (f16)
    head = tiny_model.N_EMBD // tiny_model.N_HEAD
    expected = tiny_model.N_LAYER * tiny_model.N_HEAD_KV * (head + head) * 2
    assert kv_bytes_per_token(info) == expected
    assert kv_bytes_per_token(info, "q8_0", "q8_0") < expected
    assert estimate_bytes(1000, info, 10) == 1000 + 10 * expected
    assert kv_bytes_per_token(None) == 0


def test_kv_bytes_per_slot_follows_the_cache_types(tiny_model_path: Path) -> None:
    info = read_gguf_metadata(tiny_model_path)
    f16 = kv_bytes_per_slot(info, 1024)
    assert f16 == kv_bytes_per_token(info) * 1024
    # ggml's blocks: q8_0 34 bytes and q4_0 18 bytes per 32 values, against 64 for f16
    assert kv_bytes_per_slot(info, 1024, "q8_0", "q8_0") == f16 * 34 // 64
    assert kv_bytes_per_slot(info, 1024, "q4_0", "q4_0") == f16 * 18 // 64
    assert kv_bytes_per_slot(info, 1024, "q8_0", "f16") == f16 * (34 + 64) // 128
    assert kv_bytes_per_slot(info, 1024, "f32", "f32") == 2 * f16
    assert kv_bytes_per_slot(None, 1024) == 0


def test_layers_that_fit_the_free_memory() -> None:
    # 30 layers + the output layer, 31 shares of (3.0 GB file + 0.1 GB KV) = 100 MB each
    share = 100 * 10**6
    file, kv, reserve = 3 * 10**9, 10**8, 10**9
    assert layers_that_fit(reserve + 31 * share, file, 30, kv, reserve) == -1  # all of it
    assert layers_that_fit(reserve + 30 * share, file, 30, kv, reserve) == 30  # not the output
    assert layers_that_fit(reserve + 12 * share + 5, file, 30, kv, reserve) == 12
    assert layers_that_fit(reserve + share - 1, file, 30, kv, reserve) == 0
    assert layers_that_fit(reserve // 2, file, 30, kv, reserve) == 0  # less than the reserve
    assert layers_that_fit(10 * GB, file, 0, kv, reserve) == 0  # a header without layers


def test_fits_without_unloading() -> None:
    assert plan_room([Loaded("a", GB, 1.0, False)], GB, max_models=2, budget=4 * GB) == []


def test_count_limit_unloads_least_recently_used_idle() -> None:
    loaded = [Loaded("old", GB, 1.0, False), Loaded("new", GB, 5.0, False)]
    assert plan_room(loaded, GB, max_models=2, budget=100 * GB) == ["old"]


def test_busy_models_are_never_unloaded() -> None:
    loaded = [Loaded("old", GB, 1.0, True), Loaded("new", GB, 5.0, False)]
    assert plan_room(loaded, GB, max_models=2, budget=100 * GB) == ["new"]
    assert plan_room([Loaded("a", GB, 1.0, True)], GB, max_models=1, budget=100 * GB) is None


def test_memory_budget_unloads_as_many_as_needed() -> None:
    loaded = [Loaded("a", 3 * GB, 1.0, False), Loaded("b", 3 * GB, 2.0, False),
              Loaded("c", 1 * GB, 3.0, False)]
    assert plan_room(loaded, 5 * GB, max_models=9, budget=8 * GB) == ["a", "b"]


def test_a_model_bigger_than_the_budget_loads_alone() -> None:
    assert plan_room([Loaded("a", GB, 1.0, False)], 20 * GB, max_models=2, budget=8 * GB) == [
        "a"]
    assert plan_room([], 20 * GB, max_models=2, budget=8 * GB) == []


def test_keep_alive() -> None:
    loaded = [Loaded("idle", 1, 10.0, False), Loaded("busy", 1, 10.0, True),
              Loaded("default", 1, 10.0, False, pinned=True), Loaded("fresh", 1, 95.0, False),
              Loaded("forever", 1, 0.0, False)]
    limits = {"forever": 0.0}
    assert expired(loaded, 100.0, lambda m: limits.get(m, 60.0)) == ["idle"]
