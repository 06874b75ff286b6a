"""The low-level half of reading a GGUF file: its value types and a bounded sequential reader.

:mod:`hearth.tools.gguf_header` walks the header with it and turns what it reads into facts
(:class:`~hearth.tools.gguf_header.GGUFInfo`). This module holds only how bytes become values:
scalars, strings and arrays in the file's byte order, through a buffer that grows with the
reads. Every length read from the file is bounded by the bytes that remain, so a garbage file
fails fast with a :class:`GGUFError` instead of allocating gigabytes; an array longer than
``max_items`` is skipped and kept as an :class:`ArrayInfo` (element type, length, file offset).

    string = u64 length + UTF-8 bytes;  array = u32 element_type + u64 count + elements
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["VALUE_TYPE_NAMES", "ArrayInfo", "GGUFError", "ValueReader"]


class GGUFError(ValueError):
    """The file is not a GGUF file llama.cpp could load (the message says why)."""


# --- value types --------------------------------------------------------------------------

T_UINT8, T_INT8, T_UINT16, T_INT16, T_UINT32, T_INT32, T_FLOAT32 = range(7)
T_BOOL, T_STRING, T_ARRAY, T_UINT64, T_INT64, T_FLOAT64 = range(7, 13)

VALUE_TYPE_NAMES: dict[int, str] = {
    T_UINT8: "uint8",
    T_INT8: "int8",
    T_UINT16: "uint16",
    T_INT16: "int16",
    T_UINT32: "uint32",
    T_INT32: "int32",
    T_FLOAT32: "float32",
    T_BOOL: "bool",
    T_STRING: "string",
    T_ARRAY: "array",
    T_UINT64: "uint64",
    T_INT64: "int64",
    T_FLOAT64: "float64",
}

# struct format character and size of each fixed-size scalar type
_SCALAR_FMT: dict[int, tuple[str, int]] = {
    T_UINT8: ("B", 1),
    T_INT8: ("b", 1),
    T_UINT16: ("H", 2),
    T_INT16: ("h", 2),
    T_UINT32: ("I", 4),
    T_INT32: ("i", 4),
    T_FLOAT32: ("f", 4),
    T_BOOL: ("?", 1),
    T_UINT64: ("Q", 8),
    T_INT64: ("q", 8),
    T_FLOAT64: ("d", 8),
}


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """A metadata array too large to materialise: its element type, length and where it is.

    ``offset`` is the file offset of the first element; ``item_type`` is a name from
    :data:`VALUE_TYPE_NAMES` (``"string"``, ``"float32"``, ``"array"`` ...).
    """

    item_type: str
    length: int
    offset: int

    def __len__(self) -> int:
        return self.length


class ValueReader:
    """Sequential reads over a file through a growing window buffer."""

    def __init__(self, f: BinaryIO, file_size: int, byte_order: str, start: int = 0) -> None:
        self.f = f
        self.size = file_size
        self.bo = "<" if byte_order == "little" else ">"
        self.buf = b""
        self.base = start  # file offset of buf[0]
        self.i = 0  # index into buf
        self.chunk = 1 << 20
        self.u32 = struct.Struct(self.bo + "I").unpack_from
        self.u64 = struct.Struct(self.bo + "Q").unpack_from

    @property
    def pos(self) -> int:
        return self.base + self.i

    def remaining(self) -> int:
        return self.size - self.pos

    def need(self, n: int, what: str) -> None:
        if self.i + n <= len(self.buf):
            return
        pos = self.pos
        if pos + n > self.size:
            raise GGUFError(
                f"truncated GGUF file: {what} at byte {pos} needs {n} bytes "
                f"but the file ends at byte {self.size}"
            )
        self.f.seek(pos)
        want = max(n, self.chunk)
        self.chunk = min(self.chunk * 2, 64 << 20)
        data = self.f.read(want)
        if len(data) < n:
            raise GGUFError(f"truncated GGUF file: could not read {what} at byte {pos}")
        self.buf, self.base, self.i = data, pos, 0

    def skip(self, n: int) -> None:
        if self.i + n <= len(self.buf):
            self.i += n
        else:
            target = self.pos + n
            self.buf, self.base, self.i = b"", target, 0

    def unpack(self, fmt: str, n: int, what: str) -> object:
        self.need(n, what)
        (v,) = struct.unpack_from(self.bo + fmt, self.buf, self.i)
        self.i += n
        return v

    def uint32(self, what: str) -> int:
        self.need(4, what)
        v: int  # struct's unpack is typed tuple[Any, ...]; "I"/"Q" unpack an int
        (v,) = self.u32(self.buf, self.i)
        self.i += 4
        return v

    def uint64(self, what: str) -> int:
        self.need(8, what)
        v: int
        (v,) = self.u64(self.buf, self.i)
        self.i += 8
        return v

    def length(self, unit: int, what: str) -> int:
        """A u64 count of items of at least ``unit`` bytes each, bounded by the file's rest."""
        n = self.uint64(f"length of {what}")
        if n * unit > self.remaining():
            raise GGUFError(
                f"corrupt GGUF file: {what} at byte {self.pos - 8} claims length {n}, "
                f"more than the {self.remaining()} bytes left in the file"
            )
        return n

    def string(self, what: str) -> str:
        n = self.length(1, what)
        self.need(n, what)
        raw = self.buf[self.i : self.i + n]
        self.i += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        """Skip ``count`` consecutive strings (the hot loop for tokenizer vocabularies)."""
        u64 = self.u64
        buf, i, end = self.buf, self.i, len(self.buf)
        for k in range(count):
            if i + 8 > end:
                self.i = i
                self.need(8, what)
                buf, i, end = self.buf, self.i, len(self.buf)
            (n,) = u64(buf, i)
            i += 8 + n
            if i > end:
                self.i = i - n
                if n > self.remaining():
                    raise GGUFError(
                        f"corrupt GGUF file: {what} item {k} claims length {n}, more than "
                        f"the {self.remaining()} bytes left in the file"
                    )
                self.skip(n)
                buf, i, end = self.buf, self.i, len(self.buf)
        self.i = i

    def value(self, vtype: int, what: str, max_items: int) -> object:
        fmt = _SCALAR_FMT.get(vtype)
        if fmt is not None:
            return self.unpack(fmt[0], fmt[1], what)
        if vtype == T_STRING:
            return self.string(what)
        if vtype == T_ARRAY:
            return self.array(what, max_items)
        raise GGUFError(f"corrupt GGUF file: {what} has unknown value type {vtype}")

    def array(self, what: str, max_items: int) -> list[object] | ArrayInfo:
        itype = self.uint32(f"element type of {what}")
        fmt = _SCALAR_FMT.get(itype)
        if fmt is None and itype not in (T_STRING, T_ARRAY):
            raise GGUFError(f"corrupt GGUF file: array {what} has unknown element type {itype}")
        unit = fmt[1] if fmt is not None else 8
        count = self.length(unit, f"array {what}")
        offset = self.pos
        if count <= max_items:
            return [self.value(itype, f"{what}[{k}]", max_items) for k in range(count)]
        if fmt is not None:
            self.skip(count * unit)
        elif itype == T_STRING:
            self.skip_strings(count, f"array {what}")
        else:
            for k in range(count):
                self.array(f"{what}[{k}]", -1)
        return ArrayInfo(VALUE_TYPE_NAMES[itype], count, offset)
