"""Read a GGUF file's metadata and tensor table without loading any weights.

Pure Python (``struct`` over a buffered file): no ``llama_cpp``, no ``gguf`` package. Used by
the model registry (tools/registry.py: the api and the scheduler list models, learn a model's
context length, size and embedding width, and reject a broken file before a worker process is
spawned for it), by the worker for the facts llama.cpp does not expose, and by the CLI.

Format (little-endian; big-endian files are detected by their version field)::

    magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count x   (string key, u32 value_type, value)
    tensor_count x (string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset)
    padding to general.alignment (default 32) | tensor data

How values are read (strings, arrays, the bounds that make a garbage file fail fast) is
:mod:`hearth.tools.gguf_reader`; this module walks the header and keeps the facts. Large arrays
(more than ``max_array_items`` elements, e.g. ``tokenizer.ggml.tokens``) are skipped and stored
as :class:`ArrayInfo` (element type, length, file offset).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

from hearth.tools.gguf_reader import VALUE_TYPE_NAMES, ArrayInfo, GGUFError, ValueReader

__all__ = [
    "FILE_TYPE_NAMES",
    "GGML_TYPE_NAMES",
    "VALUE_TYPE_NAMES",
    "ArrayInfo",
    "GGUFError",
    "GGUFInfo",
    "TensorInfo",
    "read_gguf_metadata",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
DEFAULT_MAX_ARRAY_ITEMS = 64


# --- ggml tensor types: name, (elements per block, bytes per block) ------------------------

GGML_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K",
    16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S",
    22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
    29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}  # fmt: skip

_GGML_BLOCK: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 36), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176),
    14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98),
    19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1),
    25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17),
}  # fmt: skip

# --- general.file_type (llama_ftype) -------------------------------------------------------

FILE_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1",
    10: "Q2_K", 11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M",
    16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S",
    22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M",
    28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0",
    37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip
_FILE_TYPE_GUESSED = 1024  # LLAMA_FTYPE_GUESSED flag


# --- result types --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # ggml order: shape[0] is the contiguous (row) dimension
    ggml_type: int
    offset: int  # relative to GGUFInfo.data_offset

    @property
    def type_name(self) -> str:
        return GGML_TYPE_NAMES.get(self.ggml_type, f"type{self.ggml_type}")

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def n_bytes(self) -> int | None:
        """Size of the tensor's data, or None for a ggml type this module does not know."""
        block = _GGML_BLOCK.get(self.ggml_type)
        if block is None:
            return None
        per_block, block_bytes = block
        return self.n_elements // per_block * block_bytes


@dataclass(frozen=True, slots=True)
class FimTokens:
    """A model's fill-in-the-middle token ids: before the prefix, the suffix, and the middle
    (where generation starts)."""

    pre: int
    suf: int
    mid: int


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    path: str
    version: int
    byte_order: str  # "little" or "big"
    file_size: int
    metadata: dict[str, object]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int  # file offset where tensor data starts
    _value_types: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    # -- general ---------------------------------------------------------------------------

    def _str(self, key: str) -> str | None:
        v = self.metadata.get(key)
        return v if isinstance(v, str) else None

    def _int(self, key: str) -> int | None:
        v = self.metadata.get(key)
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    @property
    def architecture(self) -> str | None:
        return self._str("general.architecture")

    @property
    def name(self) -> str | None:
        return self._str("general.name")

    def arch_value(self, suffix: str) -> object | None:
        """``{architecture}.{suffix}``, e.g. ``arch_value("block_count")``."""
        arch = self.architecture
        return None if arch is None else self.metadata.get(f"{arch}.{suffix}")

    @property
    def context_length(self) -> int | None:
        """The context length the model was trained with (``{arch}.context_length``)."""
        v = self.arch_value("context_length")
        return v if isinstance(v, int) and not isinstance(v, bool) else None

    @property
    def chat_template(self) -> str | None:
        return self._str("tokenizer.chat_template")

    @property
    def tensor_count(self) -> int:
        return len(self.tensors)

    @property
    def parameter_count(self) -> int:
        """Total number of weights (sum of every tensor's element count)."""
        return sum(t.n_elements for t in self.tensors)

    @property
    def file_type(self) -> int | None:
        """``general.file_type`` (a llama_ftype number), without the 'guessed' flag."""
        v = self._int("general.file_type")
        return None if v is None else v & ~_FILE_TYPE_GUESSED

    @property
    def file_type_name(self) -> str | None:
        """Quantisation name such as ``Q4_K_M``, ``Q8_0``, ``F16``.

        From ``general.file_type`` when present; otherwise the ggml type holding the most
        elements among the matrices (an approximation, like llama.cpp's own guess).
        """
        ft = self.file_type
        if ft is not None:
            return FILE_TYPE_NAMES.get(ft, f"ftype{ft}")
        counts: dict[int, int] = {}
        for t in self.tensors:
            if len(t.shape) >= 2:
                counts[t.ggml_type] = counts.get(t.ggml_type, 0) + t.n_elements
        if not counts:
            return None
        dominant = max(counts, key=lambda k: counts[k])
        return GGML_TYPE_NAMES.get(dominant, f"type{dominant}")

    quantization = file_type_name

    def value_type(self, key: str) -> str | None:
        """The GGUF value type of a metadata key (``"uint32"``, ``"string"``, ``"array"`` ...)."""
        t = self._value_types.get(key)
        return None if t is None else VALUE_TYPE_NAMES[t]

    # -- tokenizer ---------------------------------------------------------------------------

    @property
    def tokenizer_model(self) -> str | None:
        return self._str("tokenizer.ggml.model")

    @property
    def vocab_size(self) -> int | None:
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, (ArrayInfo, list)):
            return len(tokens)
        return None

    @property
    def bos_token_id(self) -> int | None:
        return self._int("tokenizer.ggml.bos_token_id")

    @property
    def eos_token_id(self) -> int | None:
        return self._int("tokenizer.ggml.eos_token_id")

    @property
    def eot_token_id(self) -> int | None:
        return self._int("tokenizer.ggml.eot_token_id")

    @property
    def fim_tokens(self) -> FimTokens | None:
        """The model's fill-in-the-middle token ids, or None when its header lacks any of the
        three. Two key conventions exist: ``tokenizer.ggml.fim_pre_token_id`` / ``fim_suf`` /
        ``fim_mid`` (llama.cpp's gguf-py since 2024) and the older ``prefix_token_id`` /
        ``suffix_token_id`` / ``middle_token_id`` (CodeLlama-era converters); the newer wins.
        (llama.cpp also guesses FIM tokens from token texts such as ``<|fim_prefix|>``; hearth
        uses only ids the header declares.)"""
        for pre, suf, mid in (("fim_pre", "fim_suf", "fim_mid"), ("prefix", "suffix", "middle")):
            ids = [self._int(f"tokenizer.ggml.{name}_token_id") for name in (pre, suf, mid)]
            if all(i is not None and i >= 0 for i in ids):
                return FimTokens(*(i for i in ids if i is not None))
        return None

    def token_strings(self, ids: Iterable[int]) -> dict[int, str]:
        """The text of the given token ids, read from ``tokenizer.ggml.tokens`` (re-opens the
        file; ids out of range are left out)."""
        wanted = {i for i in ids if isinstance(i, int) and i >= 0}
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        if isinstance(tokens, list):
            return {i: tokens[i] for i in wanted if i < len(tokens)}
        if not isinstance(tokens, ArrayInfo) or tokens.item_type != "string" or not wanted:
            return {}
        last = max(wanted)
        out: dict[int, str] = {}
        with open(self.path, "rb") as f:
            r = ValueReader(f, self.file_size, self.byte_order, start=tokens.offset)
            for i in range(min(last + 1, tokens.length)):
                if i in wanted:
                    out[i] = r.string("token string")
                else:
                    r.skip(r.length(1, "token string"))
        return out


def read_gguf_metadata(
    path: str | os.PathLike[str],
    *,
    max_array_items: int = DEFAULT_MAX_ARRAY_ITEMS,
) -> GGUFInfo:
    """Read the header, metadata and tensor table of a GGUF file (never the weights).

    Arrays with more than ``max_array_items`` elements are stored as :class:`ArrayInfo`.
    Raises :class:`GGUFError` when the file is not GGUF, is truncated, has an unsupported
    version or contains impossible lengths; ``OSError`` when it cannot be opened.

    Every call reads the file (a large vocabulary takes tens of milliseconds): a process that
    looks models up again and again does it through its one
    :class:`~hearth.tools.registry.ModelRegistry`, which keeps what it read.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        try:
            return _read(f, path, st.st_size, max_array_items)
        except GGUFError as exc:
            raise GGUFError(f"{path}: {exc}") from None


def _read(f: BinaryIO, path: str, file_size: int, max_array_items: int) -> GGUFInfo:
    head = f.read(8)
    if len(head) < 4 or head[:4] != GGUF_MAGIC:
        raise GGUFError(f"not a GGUF file: it starts with {head[:4]!r}, not {GGUF_MAGIC!r}")
    if len(head) < 8:
        raise GGUFError(f"truncated GGUF file: it ends inside the header ({file_size} bytes)")
    (version,) = struct.unpack_from("<I", head, 4)
    byte_order = "little"
    if version not in SUPPORTED_VERSIONS:
        (swapped,) = struct.unpack_from(">I", head, 4)
        if swapped in SUPPORTED_VERSIONS:
            version, byte_order = swapped, "big"
        else:
            raise GGUFError(
                f"unsupported GGUF version {version} "
                f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})"
            )
    r = ValueReader(f, file_size, byte_order, start=8)
    # a tensor info is at least 8 (name) + 4 + 4 + 8 bytes; a kv at least 8 + 4 + 1
    n_tensors = r.length(24, "tensor count")
    n_kv = r.length(13, "metadata count")

    metadata: dict[str, object] = {}
    value_types: dict[str, int] = {}
    for k in range(n_kv):
        key = r.string(f"metadata key #{k}")
        vtype = r.uint32(f"value type of {key!r}")
        metadata[key] = r.value(vtype, repr(key), max_array_items)
        value_types[key] = vtype

    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
    ):
        raise GGUFError(f"corrupt GGUF file: general.alignment {alignment!r} is invalid")

    tensors: list[TensorInfo] = []
    for k in range(n_tensors):
        name = r.string(f"name of tensor #{k}")
        n_dims = r.uint32(f"n_dims of tensor {name!r}")
        if n_dims > MAX_DIMS:
            raise GGUFError(
                f"corrupt GGUF file: tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})"
            )
        shape = tuple(r.uint64(f"shape of tensor {name!r}") for _ in range(n_dims))
        ggml_type = r.uint32(f"type of tensor {name!r}")
        offset = r.uint64(f"offset of tensor {name!r}")
        tensors.append(TensorInfo(name, shape, ggml_type, offset))

    pos = r.pos
    data_offset = pos + (-pos) % alignment
    for t in tensors:
        nbytes = t.n_bytes
        if nbytes is None:
            continue
        end = data_offset + t.offset + nbytes
        if end > file_size:
            raise GGUFError(
                f"truncated GGUF file: data of tensor {t.name!r} ends at byte {end} "
                f"but the file has {file_size} bytes"
            )

    return GGUFInfo(
        path=path,
        version=version,
        byte_order=byte_order,
        file_size=file_size,
        metadata=metadata,
        tensors=tuple(tensors),
        alignment=alignment,
        data_offset=data_offset,
        _value_types=value_types,
    )


def header_sha256(path: str | os.PathLike[str], data_offset: int) -> str:
    """The sha256 (hex) of a GGUF file's first ``data_offset`` bytes (``GGUFInfo.data_offset``):
    its header, metadata and tensor table — everything but the weights. Two files with the same
    header hash hold the same tensors of the same types at the same offsets, with the same
    vocabulary and chat template; remote workers send it so that one model id names one file
    on every box (scheduler/remote_links.py). Reads at most ``data_offset`` bytes."""
    digest = hashlib.sha256()
    left = data_offset
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()
