"""Per-model settings: the ``[models."<id>"]`` tables of the TOML config (:class:`ModelConfig`),
and what a model's worker runs with once they meet the global settings (:class:`WorkerConfig`).

```toml
[models."gemma-3-270m-q4_k_m"]
aliases = ["gpt-4o-mini"]      # other ids that name this model
ctx_size = 8192                # overrides --ctx-size for this model
parallel = 4                   # overrides --parallel
threads = 2                    # overrides --threads
replicas = 2                   # worker processes of this model; requests go where slots are free
keep_alive = "10m"             # overrides --keep-alive ("0" = never unload)
n_gpu_layers = "auto"          # layers offloaded to a GPU ("auto": all that fit, 0: CPU, -1: all)
flash_attn = true              # flash attention on/off (default: llama.cpp decides)
cache_type_k = "q8_0"          # KV cache types: f16, q8_0, q4_0 (and f32); overrides --cache-type-k
cache_type_v = "q8_0"          # a quantised V cache needs flash attention (turned on if unset)
speculative = true             # n-gram speculative decoding (--speculative)
draft_max = 8                  # most draft tokens per slot and step (--draft-max)
draft_ngram = 3                # tokens matched to find a draft (--draft-ngram)
draft_policy = "cost"          # "cost" or "always" (--draft-policy)
cache_ram = 1024               # host-RAM prompt cache of this model's worker, MiB (or "1G")
chat_template = "..."          # a jinja chat template replacing the GGUF's
embeddings = true              # serve POST /embeddings for it
temperature = 0.7              # default sampling values; a request's own values win
top_p = 0.9
```
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

DraftPolicy = Literal["cost", "always"]  # scheduler/draft_budget.py
# The KV cache types hearth offers (issue 21: f16, q8_0, q4_0; f32 too, which the tiny test model
# needs: a quantised block holds 32 values, wider than its heads). llama.cpp takes more, untested
# here, so not offered.
CacheType = Literal["f32", "f16", "q8_0", "q4_0"]
CACHE_TYPES: tuple[CacheType, ...] = ("f16", "q8_0", "q4_0", "f32")
QUANTISED_CACHE_TYPES = frozenset({"q8_0", "q4_0"})
# Layers offloaded to a GPU: "auto" (every layer that fits the device's free memory), 0 (CPU),
# -1 (all) or a count. A CPU build of llama.cpp runs on the CPU whatever this says.
GpuLayers = int | Literal["auto"]


def parse_cache_type(text: str) -> CacheType:
    """A KV cache type from a flag or env var ("q8_0"). Raises ValueError naming the choices."""
    value = text.strip().lower()
    for known in CACHE_TYPES:
        if value == known:
            return known
    raise ValueError(f"must be one of {', '.join(CACHE_TYPES)}, got {text!r}")


def parse_gpu_layers(text: str) -> GpuLayers:
    """``--n-gpu-layers``: "auto", or an integer from -1 up (-1: all, 0: none)."""
    value = text.strip().lower()
    if value == "auto":
        return "auto"
    try:
        layers = int(value)
    except ValueError:
        raise ValueError(f"must be auto or a number of layers (0 = CPU, -1 = all), "
                         f"got {text!r}") from None
    if layers < -1:
        raise ValueError(f"must be auto, -1 (all), 0 (CPU) or a layer count, got {layers}")
    return layers


def kv_flash_attn(cache_type_v: str, flash_attn: bool | None, where: str) -> bool | None:
    """The flash attention setting a worker runs with: llama.cpp refuses a quantised V cache
    without flash attention ("V cache quantization requires flash_attn", llama-context.cpp),
    so one turns it on when the config leaves it unset. Raises ValueError (naming ``where``)
    when the config turns it off."""
    if cache_type_v not in QUANTISED_CACHE_TYPES:
        return flash_attn
    if flash_attn is False:
        raise ValueError(f"{where}: a quantised V cache (cache_type_v {cache_type_v}) needs "
                         "flash attention, but flash_attn = false: remove flash_attn = false "
                         "(hearth then turns it on), or use cache_type_v = \"f16\"")
    return True


class SamplingDefaults(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A model's default sampling values from its config (None: the built-in default), bounded
    like a request's own values (api/openai_types.py)."""

    temperature: Annotated[float, Meta(ge=0, le=2)] | None = None
    top_p: Annotated[float, Meta(gt=0, le=1)] | None = None
    top_k: Annotated[int, Meta(ge=0)] | None = None
    min_p: Annotated[float, Meta(ge=0, le=1)] | None = None
    frequency_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Meta(ge=-2, le=2)] | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None


class ModelConfig(SamplingDefaults, frozen=True, forbid_unknown_fields=True):
    """One ``[models."<id>"]`` table: its sampling defaults (inherited fields, so each is
    declared once) and the worker settings it overrides (None: the global setting applies)."""

    aliases: list[str] = []
    ctx_size: Annotated[int, Meta(ge=1)] | None = None
    parallel: Annotated[int, Meta(ge=1)] | None = None
    threads: Annotated[int, Meta(ge=0)] | None = None
    replicas: Annotated[int, Meta(ge=1, le=64)] = 1
    keep_alive: float | None = None  # seconds; 0 = never unload
    n_gpu_layers: Annotated[int, Meta(ge=-1)] | Literal["auto"] | None = None
    flash_attn: bool | None = None
    cache_type_k: CacheType | None = None
    cache_type_v: CacheType | None = None
    speculative: bool | None = None
    draft_max: Annotated[int, Meta(ge=1, le=64)] | None = None
    draft_ngram: Annotated[int, Meta(ge=1, le=16)] | None = None
    draft_policy: DraftPolicy | None = None
    cache_ram: Annotated[int, Meta(ge=0)] | None = None  # bytes (parse_mib); overrides --cache-ram
    chat_template: str | None = None
    embeddings: bool = True

    def sampling_defaults(self) -> SamplingDefaults:
        # only the SamplingDefaults fields: a WorkerSpec decoder forbids the others
        return msgspec.convert(self, SamplingDefaults, from_attributes=True)


class WorkerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one model's worker runs with, resolved from the global settings and the
    model's table by ``Settings.worker_config``. Built once in the scheduler, carried in
    WorkerSpec, and used as is by the worker, its runner and its slot engine."""

    path: str  # the GGUF file
    n_slots: int
    n_ctx_slot: int
    n_threads: int
    n_batch: int = 512  # tokens per decode step (--batch-tokens; 512 is llama.cpp's own default)
    chat_template: str | None = None  # override of the GGUF's
    n_gpu_layers: GpuLayers | None = None  # None: llama.cpp's default
    flash_attn: bool | None = None  # None: llama.cpp decides
    cache_type_k: CacheType | None = None  # None: llama.cpp's default, f16
    cache_type_v: CacheType | None = None
    sampling_defaults: SamplingDefaults = SamplingDefaults()
    verbose: bool = False  # llama.cpp's own log
    # n-gram speculative decoding (engine/speculation.py): on for every request that can, at most
    # draft_max draft tokens per slot and step, found by matching draft_ngram tokens
    speculative: bool = False
    draft_max: int = 16
    draft_ngram: int = 3
    draft_policy: DraftPolicy = "cost"  # cost: drafts only where they pay (StepCost); always
    cache_ram: int = 0  # bytes of the host-RAM prompt cache (engine/ram_cache.py); 0 = off


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_duration(text: str | float | int) -> float:
    """Seconds from 300, "300", "30s", "5m", "1h", "250ms"."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"must be 0 or more, got {text}")
        return float(text)
    m = _DURATION.match(str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r} (try 300, 30s, 5m or 1h)")
    value = float(m.group(1))
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def parse_size(text: str | int) -> int:
    """Bytes from 1073741824, "1G", "512MiB", "2GB" (K/M/G/T are powers of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"must be 0 or more, got {text}")
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (try 8G or 512M)")
    unit = (m.group(2) or "b").lower()[0]
    return int(float(m.group(1)) * 1024 ** "bkmgt".index(unit))


def parse_mib(text: str | int) -> int:
    """Bytes from a size in MiB: 512 or "512" is 512 MiB (llama-server's ``--cache-ram``
    unit); a unit says otherwise ("2G", "256MiB", "1048576b")."""
    if isinstance(text, int) and not isinstance(text, bool):
        return parse_size(text) * 1024 * 1024
    if re.match(r"^\s*\d+(?:\.\d+)?\s*$", str(text)):
        return int(float(text) * 1024 * 1024)
    return parse_size(text)


def parse_models_table(table: Any, source: str) -> dict[str, ModelConfig]:
    """The ``models`` table of a config file → model id -> ModelConfig. Raises ValueError with
    the file, the model and the key at fault."""
    if not isinstance(table, dict):
        raise ValueError(f"{source}: 'models' must be a table of [models.\"<id>\"] tables")
    out: dict[str, ModelConfig] = {}
    for model_id, raw in table.items():
        if not isinstance(raw, dict):
            raise ValueError(f"{source}: [models.\"{model_id}\"] must be a table")
        values = dict(raw)
        if "keep_alive" in values:
            try:
                values["keep_alive"] = parse_duration(values["keep_alive"])
            except ValueError as exc:
                raise ValueError(f"{source}: [models.\"{model_id}\"] keep_alive: {exc}") from None
        if "cache_ram" in values:
            try:
                values["cache_ram"] = parse_mib(values["cache_ram"])
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{source}: [models.\"{model_id}\"] cache_ram: {exc}") from None
        try:
            out[model_id] = msgspec.convert(values, ModelConfig)
        except msgspec.ValidationError as exc:
            raise ValueError(f"{source}: [models.\"{model_id}\"]: {exc}") from None
    return out
