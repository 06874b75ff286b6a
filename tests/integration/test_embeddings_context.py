"""The embeddings context on a real model in this process (the tiny GGUF): the chunked
mean-pooling path (engine.embeddings.CHUNK_TOKENS tokens per llama_decode, so that memory stays
at the KV cache plus one chunk) gives the vectors llama.cpp's own mean pooling gives when a
whole batch goes in one call, as the context was made before (float noise only)."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence
from pathlib import Path

import llama_cpp as ll
import numpy as np
import pytest
from hearth.engine.embeddings import EmbeddingContext
from hearth.engine.runner import LlamaRunner
from hearth.tools.model_config import WorkerConfig

pytestmark = pytest.mark.integration

N_CTX = 256


@pytest.fixture(scope="module")
def runner(tiny_model_path: Path) -> Iterator[LlamaRunner]:
    r = LlamaRunner(WorkerConfig(path=str(tiny_model_path), n_slots=1, n_ctx_slot=N_CTX,
                                 n_threads=1))
    yield r
    r.close()


def reference(runner: LlamaRunner, inputs: Sequence[Sequence[int]]) -> np.ndarray:
    """llama.cpp's mean pooling, every input in one llama_decode: the settings the embeddings
    context had before it was chunked."""
    params = ll.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = N_CTX
    params.n_seq_max = len(inputs)
    params.n_threads = params.n_threads_batch = 1
    params.embeddings = True
    params.kv_unified = True
    params.pooling_type = ll.LLAMA_POOLING_TYPE_MEAN
    ctx = ll.llama_init_from_model(runner._model, params)
    batch = ll.llama_batch_init(N_CTX, 0, 1)
    try:
        i = 0
        for seq, toks in enumerate(inputs):
            for pos, tok in enumerate(toks):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
                batch.seq_id[i][0], batch.logits[i] = seq, True
                i += 1
        batch.n_tokens = i
        assert ll.llama_decode(ctx, batch) == 0
        rows = []
        for seq in range(len(inputs)):
            ptr = ctypes.cast(ll.llama_get_embeddings_seq(ctx, seq),
                              ctypes.POINTER(ctypes.c_float))
            vec = np.ctypeslib.as_array(ptr, shape=(runner.n_embd,)).astype(np.float64)
            rows.append(vec / np.linalg.norm(vec))
        return np.array(rows)
    finally:
        ll.llama_batch_free(batch)
        ll.llama_free(ctx)


def vectors(ectx: EmbeddingContext, inputs: Sequence[Sequence[int]]) -> np.ndarray:
    return np.array([np.frombuffer(b, dtype="<f4") for b in ectx.embed(inputs)])


INPUTS = [
    "The quick brown fox jumps over the lazy dog.",
    "a",
    "Embeddings of several inputs share one chunk, and a long one runs across chunks: " * 3,
    "short again",
]


@pytest.mark.parametrize("chunk", [128, 7, 1])
def test_chunked_mean_pooling_matches_llama_cpp_pooling(runner: LlamaRunner, chunk: int) -> None:
    inputs = [runner.tokenize(t) for t in INPUTS]
    assert max(len(t) for t in inputs) > 7  # a sequence really crosses chunks
    ectx = EmbeddingContext(runner._model, n_ctx=N_CTX, n_seq_max=8, n_threads=1,
                            pool_mean=True, chunk_tokens=chunk)
    try:
        got = vectors(ectx, inputs)
        again = vectors(ectx, inputs)  # the cache is cleared between batches
    finally:
        ectx.close()
    want = reference(runner, inputs)
    assert got.shape == (len(INPUTS), runner.n_embd)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_array_equal(got, again)


def test_one_input_alone_equals_itself_in_a_batch(runner: LlamaRunner) -> None:
    inputs = [runner.tokenize(t) for t in INPUTS]
    ectx = EmbeddingContext(runner._model, n_ctx=N_CTX, n_seq_max=8, n_threads=1,
                            pool_mean=True)
    try:
        batched = vectors(ectx, inputs)
        alone = np.array([vectors(ectx, [t])[0] for t in inputs])
    finally:
        ectx.close()
    np.testing.assert_allclose(batched, alone, atol=1e-4)
