"""hearth.tools.gguf_reader: GGUF values read from bytes, with every length bounded by the file.

Whole files are tested in test_gguf_header.py; here the reader works on hand-packed values."""

from __future__ import annotations

import io
import struct

import pytest
from hearth.tools.gguf_reader import ArrayInfo, GGUFError, ValueReader

T_UINT32, T_FLOAT32, T_STRING, T_ARRAY, T_UINT64 = 4, 6, 8, 9, 10


def _s(text: str, bo: str = "<") -> bytes:
    raw = text.encode()
    return struct.pack(bo + "Q", len(raw)) + raw


def reader(data: bytes, byte_order: str = "little") -> ValueReader:
    return ValueReader(io.BytesIO(data), len(data), byte_order)


def test_scalars_and_strings_in_either_byte_order() -> None:
    for bo, name in (("<", "little"), (">", "big")):
        data = struct.pack(bo + "I", 7) + struct.pack(bo + "f", 0.5) + _s("héllo", bo)
        r = reader(data, name)
        assert r.value(T_UINT32, "n", 64) == 7
        assert r.value(T_FLOAT32, "x", 64) == 0.5
        assert r.value(T_STRING, "s", 64) == "héllo"
        assert r.remaining() == 0


def test_a_small_array_is_read_and_a_large_one_skipped() -> None:
    words = ["a", "bb", "ccc"]
    small = struct.pack("<IQ", T_STRING, 3) + b"".join(_s(w) for w in words)
    big = struct.pack("<IQ", T_UINT64, 5) + struct.pack("<5Q", *range(5))
    r = reader(small + big + struct.pack("<I", 42))
    assert r.value(T_ARRAY, "small", 3) == words
    start = r.pos
    info = r.value(T_ARRAY, "big", 3)
    assert info == ArrayInfo("uint64", 5, start + 12) and len(info) == 5
    assert r.uint32("after") == 42  # the skip landed on the next value


def test_skipping_a_long_string_array_crosses_buffer_refills() -> None:
    words = [f"token-{i}" for i in range(5000)]
    data = struct.pack("<IQ", T_STRING, len(words)) + b"".join(_s(w) for w in words)
    r = reader(data + struct.pack("<I", 9))
    r.chunk = 64  # force many refills
    info = r.value(T_ARRAY, "tokens", 64)
    assert isinstance(info, ArrayInfo) and info.item_type == "string" and info.length == 5000
    assert r.uint32("after") == 9


def test_a_length_longer_than_the_file_fails_fast() -> None:
    r = reader(struct.pack("<Q", 1 << 40) + b"abc")
    with pytest.raises(GGUFError, match="claims length 1099511627776"):
        r.string("name")


def test_truncated_and_unknown_values_are_errors() -> None:
    with pytest.raises(GGUFError, match="truncated"):
        reader(b"\x01\x02").uint32("count")
    with pytest.raises(GGUFError, match="unknown value type 99"):
        reader(b"").value(99, "key", 64)
    with pytest.raises(GGUFError, match="unknown element type 77"):
        reader(struct.pack("<IQ", 77, 1)).value(T_ARRAY, "arr", 64)


def test_invalid_utf8_is_replaced_not_raised() -> None:
    raw = b"ok\xff"
    assert reader(struct.pack("<Q", len(raw)) + raw).string("s") == "ok\ufffd"
