"""Which models stay loaded: memory estimates, the least-recently-used eviction plan, keep-alive.

Pure functions over plain data, so the rules are unit-tested without processes.

A loaded model costs roughly its GGUF file (the weights, memory-mapped) plus its KV cache:
``slots × ctx-size`` tokens × (layers × KV heads × (key + value head size)) × bytes per element.
That is an estimate — llama.cpp adds compute buffers, and replicas share the file's pages —
good enough to keep a machine from being over-committed.
The scheduler adds each worker's host-RAM prompt cache (``--cache-ram``, engine/ram_cache.py)
to that: a cap, held once conversations have been pushed out of their slots.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hearth.tools.gguf_header import GGUFInfo

# bytes per cached value of each KV cache type (tools/model_config.CacheType): ggml's block sizes,
# q8_0 = 32 int8 + one f16 scale (34 bytes per 32 values), q4_0 = 32 nibbles + one f16 scale (18)
BYTES_PER_KV_ELEMENT = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, list) and value:
        ints = [v for v in value if isinstance(v, int)]
        if len(ints) == len(value):
            return max(ints)  # per-layer arrays (some models vary KV heads by layer)
    return None


def kv_bytes_per_token(info: GGUFInfo | None, type_k: str | None = None,
                       type_v: str | None = None) -> int:
    """KV-cache bytes one token of context costs in this model (0 if the header can't say)."""
    if info is None:
        return 0
    layers = _int(info.arch_value("block_count"))
    heads = _int(info.arch_value("attention.head_count"))
    kv_heads = _int(info.arch_value("attention.head_count_kv")) or heads
    embd = _int(info.arch_value("embedding_length"))
    key = _int(info.arch_value("attention.key_length")) or (embd // heads if embd and heads
                                                               else None)
    value = _int(info.arch_value("attention.value_length")) or key
    if not (layers and kv_heads and key and value):
        return 0
    k = BYTES_PER_KV_ELEMENT.get(type_k or "f16", 2.0)
    v = BYTES_PER_KV_ELEMENT.get(type_v or "f16", 2.0)
    return int(layers * kv_heads * (key * k + value * v))


def kv_bytes_per_slot(info: GGUFInfo | None, n_ctx_slot: int, type_k: str | None = None,
                      type_v: str | None = None) -> int:
    """KV-cache bytes one slot of ``n_ctx_slot`` tokens takes with these cache types (0 if the
    header can't say). Every layer is counted at the full context: for a model with
    sliding-window layers (gemma-3) llama.cpp keeps only the window there, so this is an upper
    bound for those."""
    return kv_bytes_per_token(info, type_k, type_v) * n_ctx_slot


def layers_that_fit(free_bytes: int, file_bytes: int, n_layer: int, kv_bytes: int,
                    reserve_bytes: int) -> int:
    """``--n-gpu-layers auto``: how many of a model's ``n_layer`` repeating layers fit in a
    device's ``free_bytes`` (as the device reports it) after ``reserve_bytes`` for llama.cpp's
    compute buffers. Each layer costs an even share of the GGUF file and of its KV cache
    (``kv_bytes``, every slot together); the output layer (embeddings, lm head) is counted as
    one more share. Returns -1 (all, output layer included) when everything fits, else the
    count (0 = CPU)."""
    if n_layer <= 0 or free_bytes <= reserve_bytes:
        return 0
    per_layer = (file_bytes + kv_bytes) / (n_layer + 1)
    if per_layer <= 0:
        return -1
    fit = int((free_bytes - reserve_bytes) // per_layer)
    return -1 if fit >= n_layer + 1 else min(fit, n_layer)


def estimate_bytes(file_size: int, info: GGUFInfo | None, context_tokens: int,
                   type_k: str | None = None, type_v: str | None = None) -> int:
    return file_size + kv_bytes_per_token(info, type_k, type_v) * context_tokens


@dataclass(frozen=True, slots=True)
class Loaded:
    model: str
    bytes: int  # all its workers together
    last_used: float  # monotonic seconds: last request assigned or finished
    busy: bool  # some request is running on (or waiting for) one of its workers
    pinned: bool = False  # exempt from keep-alive (the default model); may still make room


def plan_room(loaded: Sequence[Loaded], need_bytes: int, max_models: int,
              budget: int) -> list[str] | None:
    """The models to unload, least recently used idle ones first, so that one more model
    needing ``need_bytes`` fits both ``max_models`` and ``budget``. [] if it fits already;
    None if it cannot fit until something becomes idle. A model too big for the budget even
    alone may still load when nothing else is loaded (the budget is an estimate)."""
    count = len(loaded)
    used = sum(m.bytes for m in loaded)
    out: list[str] = []
    candidates = sorted((m for m in loaded if not m.busy), key=lambda m: m.last_used)
    for victim in [None, *candidates]:
        if victim is not None:
            out.append(victim.model)
            count -= 1
            used -= victim.bytes
        fits_count = count + 1 <= max_models
        fits_memory = used + need_bytes <= budget or count == 0
        if fits_count and fits_memory:
            return out
    return None


def expired(loaded: Sequence[Loaded], now: float,
            keep_alive: Callable[[str], float]) -> list[str]:
    """Idle, unpinned models unused for longer than their keep-alive (0 = never expires)."""
    out = []
    for m in loaded:
        limit = keep_alive(m.model)
        if not m.busy and not m.pinned and limit > 0 and now - m.last_used >= limit:
            out.append(m.model)
    return out
