"""hearth.tools.cli.tiny_model: the random-weight GGUF the test suite runs on.

Loaded through llama-cpp-python's low-level API, the way the engine uses it.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2.sandbox
import llama_cpp as L
import pytest
from hearth.tools.cli import tiny_model
from hearth.tools.cli.tiny_model import TINY_CHAT_TEMPLATE, build_tiny_model


@L.llama_log_callback
def _quiet(level: int, text: bytes, user_data: Any) -> None:
    pass


class Tiny:
    """The tiny model loaded with llama.cpp's C API, plus small helpers."""

    def __init__(self, path: Path) -> None:
        L.llama_log_set(_quiet, None)
        L.llama_backend_init()
        self.model = L.llama_model_load_from_file(
            str(path).encode(), L.llama_model_default_params()
        )
        assert self.model, "llama_model_load_from_file failed"
        self.vocab = L.llama_model_get_vocab(self.model)
        params = L.llama_context_default_params()
        params.n_ctx = 256
        params.n_batch = 256
        params.n_ubatch = 256
        params.n_seq_max = 1
        params.n_threads = 2
        params.n_threads_batch = 2
        self.ctx = L.llama_init_from_model(self.model, params)
        assert self.ctx, "llama_init_from_model failed"
        self.batch = L.llama_batch_init(256, 0, 1)

    def close(self) -> None:
        L.llama_batch_free(self.batch)
        L.llama_free(self.ctx)
        L.llama_model_free(self.model)

    def tokenize(
        self, text: str, *, add_special: bool = False, parse_special: bool = False
    ) -> list[int]:
        raw = text.encode()
        n_max = len(raw) + 8
        buf = (L.llama_token * n_max)()
        n = L.llama_tokenize(self.vocab, raw, len(raw), buf, n_max, add_special, parse_special)
        assert n >= 0
        return list(buf[:n])

    def detokenize(self, tokens: list[int]) -> str:
        arr = (L.llama_token * len(tokens))(*tokens)
        out = ctypes.create_string_buffer(8192)
        n = L.llama_detokenize(self.vocab, arr, len(tokens), out, len(out), False, False)
        assert n >= 0
        return out.raw[:n].decode()

    def piece(self, token: int, *, special: bool = False) -> bytes:
        out = ctypes.create_string_buffer(64)
        n = L.llama_token_to_piece(self.vocab, token, out, len(out), 0, special)
        assert n >= 0
        return out.raw[:n]

    def generate_greedy(self, prompt: list[int], n: int) -> list[int]:
        mem = L.llama_get_memory(self.ctx)
        L.llama_memory_clear(mem, True)
        sampler = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        L.llama_sampler_chain_add(sampler, L.llama_sampler_init_greedy())
        try:
            self._fill([(tok, pos, pos == len(prompt) - 1) for pos, tok in enumerate(prompt)])
            assert L.llama_decode(self.ctx, self.batch) == 0
            out: list[int] = []
            pos = len(prompt)
            for _ in range(n):
                tok = L.llama_sampler_sample(sampler, self.ctx, -1)
                out.append(tok)
                if L.llama_vocab_is_eog(self.vocab, tok):
                    break
                self._fill([(tok, pos, True)])
                pos += 1
                assert L.llama_decode(self.ctx, self.batch) == 0
            assert L.llama_memory_seq_pos_max(mem, 0) == pos - 1
            return out
        finally:
            L.llama_sampler_free(sampler)

    def _fill(self, items: list[tuple[int, int, bool]]) -> None:
        b = self.batch
        b.n_tokens = len(items)
        for i, (tok, pos, logits) in enumerate(items):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = logits


@pytest.fixture(scope="module")
def tiny(tiny_model_path: Path) -> Iterator[Tiny]:
    t = Tiny(tiny_model_path)
    yield t
    t.close()


def test_file_is_small(tiny_model_path: Path) -> None:
    assert tiny_model_path.read_bytes()[:4] == b"GGUF"
    assert tiny_model_path.stat().st_size < 5 * 1024 * 1024


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    a = build_tiny_model(tmp_path / "a.gguf", seed=0)
    b = build_tiny_model(tmp_path / "sub" / "b.gguf", seed=0)
    c = build_tiny_model(tmp_path / "c.gguf", seed=1)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_loads_with_expected_vocab(tiny: Tiny) -> None:
    v = tiny.vocab
    assert L.llama_vocab_type(v) == L.LLAMA_VOCAB_TYPE_SPM
    assert L.llama_vocab_bos(v) == tiny_model.BOS_ID
    assert L.llama_vocab_eos(v) == tiny_model.EOS_ID
    assert L.llama_vocab_eot(v) == tiny_model.IM_END_ID
    assert L.llama_vocab_get_add_bos(v)
    assert L.llama_model_n_ctx_train(tiny.model) == 4096
    assert L.llama_vocab_n_tokens(v) > 1000
    template = L.llama_model_chat_template(tiny.model, None)
    assert template is not None and template.decode() == TINY_CHAT_TEMPLATE


@pytest.mark.parametrize(
    "text",
    [
        "Hello world, the quick brown fox!",
        "The answer is 42; it was found (again) by people who think.",
        "naïve café — 日本語 🙂",
        "two  spaces\nnew line\ttab",
        " leading space",
    ],
)
def test_tokenize_round_trip(tiny: Tiny, text: str) -> None:
    tokens = tiny.tokenize(text)
    assert len(tokens) >= 3
    assert tiny.detokenize(tokens) == text


def test_english_uses_word_pieces(tiny: Tiny) -> None:
    tokens = tiny.tokenize("the quick brown fox")
    assert len(tokens) == 4
    assert [tiny.piece(t) for t in tokens] == [b" the", b" quick", b" brown", b" fox"]


def test_add_special_prepends_bos(tiny: Tiny) -> None:
    tokens = tiny.tokenize("Hi", add_special=True)
    assert tokens[0] == tiny_model.BOS_ID


def test_im_end_is_one_eog_token(tiny: Tiny) -> None:
    assert tiny.tokenize("<|im_end|>", parse_special=True) == [tiny_model.IM_END_ID]
    assert tiny.tokenize("<|im_start|>", parse_special=True) == [tiny_model.IM_START_ID]
    assert len(tiny.tokenize("<|im_end|>", parse_special=False)) > 1
    assert L.llama_vocab_is_eog(tiny.vocab, tiny_model.IM_END_ID)
    assert L.llama_vocab_is_eog(tiny.vocab, tiny_model.EOS_ID)
    assert not L.llama_vocab_is_eog(tiny.vocab, tiny_model.IM_START_ID)
    assert not L.llama_vocab_is_eog(tiny.vocab, tiny_model.BOS_ID)
    assert L.llama_vocab_is_control(tiny.vocab, tiny_model.IM_END_ID)
    assert tiny.piece(tiny_model.IM_END_ID) == b""
    assert tiny.piece(tiny_model.IM_END_ID, special=True) == b"<|im_end|>"


def test_greedy_generation_runs_to_the_limit(tiny: Tiny) -> None:
    prompt = tiny.tokenize("Hello world, the quick brown fox!", add_special=True)
    out = tiny.generate_greedy(prompt, 64)
    assert len(out) == 64
    specials = {tiny_model.UNK_ID, tiny_model.BOS_ID, tiny_model.EOS_ID}
    specials |= {tiny_model.IM_START_ID, tiny_model.IM_END_ID}
    assert not specials & set(out)
    assert tiny.generate_greedy(prompt, 64) == out  # greedy, same batches: same tokens


def test_chat_prompt_tokenizes(tiny: Tiny) -> None:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment()
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hello"}]},
    ]
    text = env.from_string(TINY_CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_prompt = env.from_string(TINY_CHAT_TEMPLATE).render(messages=messages[:1])
    assert no_prompt == "<|im_start|>system\nBe brief.<|im_end|>\n"
    tokens = tiny.tokenize(text, parse_special=True)
    assert tokens.count(tiny_model.IM_START_ID) == 3
    assert tokens.count(tiny_model.IM_END_ID) == 2


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli.gguf"
    proc = subprocess.run(
        [sys.executable, "-m", "hearth.tools.cli.tiny_model", str(out), "--seed", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == build_tiny_model(tmp_path / "api.gguf", seed=3).read_bytes()


@pytest.mark.parametrize("convention", ["fim", "legacy"])
def test_fim_tokens_are_declared_and_known_to_llama_cpp(tmp_path: Path, convention: str) -> None:
    """With ``fim``, three control tokens close the vocabulary and the header declares them
    under the chosen keys; llama.cpp reads both conventions into its FIM token ids."""
    from hearth.tools.gguf_header import read_gguf_metadata

    path = build_tiny_model(tmp_path / "fim.gguf", fim=convention)  # type: ignore[arg-type]
    info = read_gguf_metadata(path)
    plain = read_gguf_metadata(build_tiny_model(tmp_path / "plain.gguf"))
    assert plain.fim_tokens is None and plain.vocab_size is not None
    fim = info.fim_tokens
    assert fim is not None and info.vocab_size == plain.vocab_size + 3
    assert (fim.pre, fim.suf, fim.mid) == (plain.vocab_size, plain.vocab_size + 1,
                                           plain.vocab_size + 2)
    assert info.token_strings([fim.pre, fim.suf, fim.mid]) == dict(
        zip((fim.pre, fim.suf, fim.mid), tiny_model.FIM_TOKENS, strict=True))
    params = L.llama_model_default_params()
    model = L.llama_model_load_from_file(str(path).encode(), params)
    try:
        vocab = L.llama_model_get_vocab(model)
        assert (L.llama_vocab_fim_pre(vocab), L.llama_vocab_fim_suf(vocab),
                L.llama_vocab_fim_mid(vocab)) == (fim.pre, fim.suf, fim.mid)
    finally:
        L.llama_model_free(model)
