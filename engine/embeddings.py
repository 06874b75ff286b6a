"""Embeddings: a second llama.cpp context on the worker's model, and the jobs that use it.

Why a second context rather than the chat context: embeddings need a context created with
``embeddings=True`` and a pooling type, and their sequences must not touch the chat slots' KV
cache. A second context shares the model's weights (no extra copy) and costs only its own small
KV cache (``n_ctx`` tokens, cleared after every batch) and the buffers of one chunk of
``CHUNK_TOKENS`` tokens (see there for why not more), and chat streams and embedding requests
on the same model never see each other's state. Both contexts are driven from the worker's
only thread, one ``llama_decode`` at a time, so they never run concurrently.

Pooling comes from the GGUF (``{arch}.pooling_type``); decoder-only models without one are
mean-pooled over the input's tokens. Vectors are L2-normalised and travel as little-endian
float32 bytes (exactly what OpenAI's ``encoding_format: "base64"`` carries).
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import llama_cpp as ll
import numpy as np
from hearth.scheduler import errors
from hearth.scheduler.messages import Embedded, EmbedJob, Event, Failed

# Tokens per llama_decode call of a mean-pooled (decoder-only) model. llama.cpp computes the
# vocabulary-wide logits of every token of an embeddings batch (every token is an output) and
# keeps them in an output buffer sized for the whole call: on gemma-3-270m (262,144 tokens)
# that is 1 MiB per token, so a 512-token batch took the worker from 0.5 to 1.4 GB and one
# 2048-token input to 4.5 GB (bench/embeddings_memory.py). Chunks of this size bound it to
# about 2 x 128 MiB there; a sequence goes on across chunks through the KV cache. The chunk size
# does not show in throughput: 8 x 64 tokens on gemma-3-270m, 2 threads, medians of 5 runs
# alternating in one process on a quiet machine, 128-token and 256-token chunks took 0.89-1.05x
# the time of 512-token ones (bench/embeddings.py measures the end-to-end rate).
CHUNK_TOKENS = 128


class EmbeddingContext:
    """Owns a llama.cpp context with embeddings on. Owned by the worker thread.

    ``pool_mean`` (a decoder-only model whose GGUF names no pooling): llama.cpp returns each
    token's final hidden state and the mean is taken here, so inputs are evaluated in chunks of
    ``CHUNK_TOKENS`` and memory stays at the KV cache plus one chunk's buffers. Otherwise the
    model's own pooling (CLS, last, mean of a non-causal encoder) runs inside llama.cpp and an
    input must fit one micro-batch, so the context takes ``n_ctx`` tokens per call."""

    def __init__(self, model: ll.llama_model_p, *, n_ctx: int, n_seq_max: int, n_threads: int,
                 pool_mean: bool, chunk_tokens: int = CHUNK_TOKENS) -> None:
        self._encoder_only = bool(ll.llama_model_has_encoder(model)) and \
            not ll.llama_model_has_decoder(model)
        # chunks rely on causal attention over the cache, which an encoder does not have
        pool_mean = pool_mean and not self._encoder_only
        params = ll.llama_context_default_params()
        params.n_ctx = n_ctx
        # the chunked path needs no more per call; the pooled one needs a whole input per call
        self._chunk = min(chunk_tokens, n_ctx) if pool_mean else n_ctx
        # (llama.cpp reserves outputs for n_seq_max sequences and wants n_batch to cover them)
        params.n_batch = params.n_ubatch = max(self._chunk, n_seq_max)
        params.n_seq_max = n_seq_max
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.embeddings = True
        params.no_perf = True
        params.kv_unified = True  # any one input may use the whole n_ctx
        self._pool_here = pool_mean
        params.pooling_type = (ll.LLAMA_POOLING_TYPE_NONE if pool_mean
                               else ll.LLAMA_POOLING_TYPE_UNSPECIFIED)
        self._ctx = ll.llama_init_from_model(model, params)
        if not self._ctx:
            raise errors.ModelLoadFailed("llama.cpp could not create an embeddings context")
        self.n_ctx = n_ctx
        self.n_seq_max = n_seq_max
        self.dim = int(ll.llama_model_n_embd(model))
        self._mem = ll.llama_get_memory(self._ctx)
        self._batch = ll.llama_batch_init(params.n_batch, 0, 1)

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[bytes]:
        """One evaluation of up to ``n_seq_max`` inputs totalling at most ``n_ctx`` tokens:
        one L2-normalised little-endian float32 vector (``dim`` values) per input, in order.
        Raises RuntimeError if llama.cpp fails."""
        if len(inputs) > self.n_seq_max or sum(len(t) for t in inputs) > self.n_ctx:
            raise RuntimeError("embedding batch larger than the embeddings context")
        try:
            pooled = self._mean_pooled(inputs) if self._pool_here else self._pooled(inputs)
        finally:
            ll.llama_memory_clear(self._mem, True)
        out = []
        for vec in pooled:
            vec = vec.astype("<f4")
            norm = float(np.linalg.norm(vec))
            if norm > 0.0:
                vec /= norm
            out.append(vec.tobytes())
        return out

    def _tokens(self, inputs: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
        """(sequence, position, token) of every input token, inputs in order."""
        return [(seq, pos, tok) for seq, toks in enumerate(inputs)
                for pos, tok in enumerate(toks)]

    def _run(self, part: Sequence[tuple[int, int, int]]) -> None:
        b = self._batch
        for i, (seq, pos, tok) in enumerate(part):
            b.token[i] = tok
            b.pos[i] = pos
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = seq
            b.logits[i] = True
        b.n_tokens = len(part)
        run = ll.llama_encode if self._encoder_only else ll.llama_decode
        rc = run(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama.cpp failed to evaluate the inputs (status {rc})")

    def _row(self, ptr: ctypes.Array[ctypes.c_float]) -> np.ndarray:
        if not ptr:
            raise RuntimeError("llama.cpp returned no embedding")
        return np.ctypeslib.as_array(
            ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self.dim,))

    def _mean_pooled(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        # Sums in float64 over chunks; causal attention sees the earlier chunks in the cache.
        sums = np.zeros((len(inputs), self.dim), dtype=np.float64)
        flat = self._tokens(inputs)
        for at in range(0, len(flat), self._chunk):
            part = flat[at:at + self._chunk]
            self._run(part)
            # every token of the call is an output, in batch order: one view of all the rows
            # and one scatter-add, not a ctypes call and a numpy view per token
            rows = np.ctypeslib.as_array(
                ctypes.cast(ll.llama_get_embeddings(self._ctx), ctypes.POINTER(ctypes.c_float)),
                shape=(len(part), self.dim))
            np.add.at(sums, [seq for seq, _, _ in part], rows)
        return [sums[seq] / len(toks) for seq, toks in enumerate(inputs)]

    def _pooled(self, inputs: Sequence[Sequence[int]]) -> list[np.ndarray]:
        self._run(self._tokens(inputs))
        return [self._row(ll.llama_get_embeddings_seq(self._ctx, seq)).copy()
                for seq in range(len(inputs))]

    def close(self) -> None:
        free_context(self._batch, self._ctx)
        self._batch = self._ctx = None


def free_context(batch: ll.llama_batch | None, ctx: ll.llama_context_p | None) -> None:
    """Free a llama.cpp batch and context (either may already be gone)."""
    if batch is not None:
        ll.llama_batch_free(batch)
    if ctx:
        ll.llama_free(ctx)


class EmbedderLike(Protocol):
    n_ctx: int
    n_seq_max: int

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[bytes]: ...


@dataclass
class _Job:
    req: EmbedJob
    inputs: list[list[int]]
    vectors: list[bytes] = field(default_factory=list)
    queued: int = 0  # inputs in the batch being evaluated

    @property
    def prompt_tokens(self) -> int:
        return sum(len(t) for t in self.inputs)


class EmbeddingBatcher:
    """Embedding requests admitted to this worker, worked off one batch per :meth:`step` so that
    chat steps run in between; one batch may hold inputs of several requests. ``tokenize``,
    ``n_vocab`` and ``n_embd`` (the vectors' width) come from the chat runner (same model); the
    embedding context is made on first use."""

    def __init__(self, tokenize: Callable[[str], list[int]], n_vocab: int, n_embd: int,
                 make_embedder: Callable[[], EmbedderLike], n_ctx: int,
                 batch_tokens: int = 512) -> None:
        self._tokenize = tokenize
        self._n_vocab = n_vocab
        self.n_embd = n_embd
        self._make = make_embedder
        self._embedder: EmbedderLike | None = None
        self.n_ctx = n_ctx
        # Attention cost grows with the square of a batch's tokens (the sequences share one
        # micro-batch), so batches stay small unless one input is longer.
        self.batch_tokens = batch_tokens
        self._jobs: deque[_Job] = deque()

    def has_work(self) -> bool:
        return bool(self._jobs)

    def admit(self, req: EmbedJob,
              inputs: list[list[int]] | errors.HearthError | None = None) -> Failed | None:
        """Tokenize and check every input; a Failed event if the request is bad. ``inputs``:
        what :meth:`inputs` gave for it, when the worker ran that off the loop."""
        try:
            if isinstance(inputs, errors.HearthError):
                raise inputs
            self._jobs.append(_Job(req, self.inputs(req) if inputs is None else inputs))
        except errors.HearthError as exc:
            return Failed.of(req.request_id, exc)
        return None

    def inputs(self, req: EmbedJob) -> list[list[int]]:
        """Each input's tokens, checked (raises InvalidRequest). Touches no batch state: the
        worker may call it on its prepare thread."""
        # Vectors are never shortened: a width other than the model's own is refused, before
        # the inputs are looked at. (The scheduler refuses it first from the GGUF header; this
        # is the backstop for a header without embedding_length.)
        if req.dimensions is not None and req.dimensions != self.n_embd:
            raise errors.InvalidRequest.wrong_dimensions(req.model, self.n_embd)
        if req.texts:
            inputs = [self._tokenize(t) for t in req.texts]
        else:
            inputs = [list(t) for t in req.tokens]
            for i, toks in enumerate(inputs):
                bad = next((t for t in toks if not 0 <= t < self._n_vocab), None)
                if bad is not None:
                    raise errors.InvalidRequest.token_outside_vocab(
                        f"input[{i}]", bad, self._n_vocab, param="input")
        for i, toks in enumerate(inputs):
            if not toks:
                raise errors.InvalidRequest(f"input[{i}] is empty", param="input")
            if len(toks) > self.n_ctx:
                raise errors.InvalidRequest(
                    f"input[{i}] is {len(toks)} tokens long; this model embeds at most "
                    f"{self.n_ctx} tokens per input", param="input")
        return inputs

    def cancel(self, request_id: str) -> bool:
        for job in self._jobs:
            if job.req.request_id == request_id:
                self._jobs.remove(job)
                return True
        return False

    def step(self) -> list[tuple[str, list[Event], str]]:
        """Embed one batch: the next inputs of the waiting jobs, oldest job first, packed up to
        ``batch_tokens`` tokens and the context's sequence limit (a longer single input goes
        alone). Returns (frontend, final events, request id) for every job this finished."""
        if not self._jobs:
            return []
        if self._embedder is None:
            self._embedder = self._make()
        emb = self._embedder
        limit = min(self.batch_tokens, emb.n_ctx)
        taken: list[tuple[_Job, int]] = []  # (job, inputs taken from it)
        batch: list[list[int]] = []
        size = 0
        for job in self._jobs:
            n = 0
            nxt = len(job.vectors) + job.queued
            while nxt + n < len(job.inputs) and len(batch) < emb.n_seq_max:
                toks = job.inputs[nxt + n]
                if batch and size + len(toks) > limit:
                    break
                batch.append(toks)
                size += len(toks)
                n += 1
            if n:
                taken.append((job, n))
                job.queued += n
            if len(batch) >= emb.n_seq_max or size >= limit or \
                    nxt + n < len(job.inputs):
                break
        out: list[tuple[str, list[Event], str]] = []
        try:
            vectors = emb.embed(batch)
        except RuntimeError as exc:
            failure = errors.InternalError(str(exc))
            for job, _ in taken:
                self._jobs.remove(job)
                out.append((job.req.frontend, [Failed.of(job.req.request_id, failure)],
                            job.req.request_id))
            return out
        at = 0
        for job, n in taken:
            job.vectors.extend(vectors[at:at + n])
            job.queued -= n
            at += n
            if len(job.vectors) == len(job.inputs):
                self._jobs.remove(job)
                out.append((job.req.frontend, [Embedded(job.req.request_id, job.vectors,
                                                        job.prompt_tokens)], job.req.request_id))
        return out

    def fail_all(self, exc: errors.HearthError) -> list[tuple[str, Event]]:
        out: list[tuple[str, Event]] = [
            (job.req.frontend, Failed.of(job.req.request_id, exc)) for job in self._jobs]
        self._jobs.clear()
        return out
