"""llama.cpp for the chat slots: model, context, batch, vocab and samplers. (The embeddings
context, which shares this model's weights, is engine/embeddings.py's; nothing outside engine/
imports llama.cpp.)

Owned by the worker process's only thread. Every pointer made here is freed in :meth:`close`.
The worker talks to it through the small surface below, so tests can swap in a fake runner.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import llama_cpp as ll
import numpy as np
from hearth.engine import devices, gbnf
from hearth.engine.embeddings import EmbeddingContext, free_context
from hearth.engine.grammar import GrammarSampler, InnerSampler
from hearth.engine.sampling import PENALTY_LAST_N, GreedySampler, LogitsSampler
from hearth.scheduler.errors import ModelLoadFailed
from hearth.scheduler.messages import Grammar, Placement, ResolvedSampling
from hearth.scheduler.placement import kv_bytes_per_slot
from hearth.tools.gguf_header import read_gguf_metadata
from hearth.tools.model_config import WorkerConfig

_backend_ready = False


def _init_backend(verbose: bool) -> None:
    global _backend_ready  # per-process, once: llama.cpp's own global init
    if _backend_ready:
        return
    if not verbose:
        _silence_llama_logs()
    ll.llama_backend_init()
    _backend_ready = True


_LOG_CB: object = None  # only held, never called from Python


def _silence_llama_logs() -> None:
    global _LOG_CB  # must outlive the process's use of llama.cpp (ctypes callback)

    def _quiet(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == 4:  # GGML_LOG_LEVEL_ERROR: keep errors visible, drop the chatter
            os.write(2, text)

    # wrapped by a call, not as a decorator: the ctypes function type is an untyped decorator
    _LOG_CB = ll.llama_log_callback(_quiet)
    ll.llama_log_set(_LOG_CB, ctypes.c_void_p(0))


def _address_fn(name: str, *args: type) -> Callable[..., int | None]:
    """llama.cpp's ``name(ctx, *args) -> float*`` returning the address as an int (the
    binding's own returns a ctypes pointer, slower to turn into a numpy view)."""
    proto = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, *args)
    return proto((name, ll.llama_cpp._lib))


# ggml's type numbers (ggml.h enum ggml_type) for the KV cache types a config may ask for
GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8}


@dataclass(frozen=True)
class Segment:
    """Tokens of one slot's sequence to evaluate in this step, starting at position ``pos``.
    ``wants_logits``: a logits row for the last token; ``all_logits``: one for every token
    (a prompt scored for ``echo`` with ``logprobs``), at consecutive batch positions."""

    seq: int
    tokens: Sequence[int]
    pos: int
    wants_logits: bool
    all_logits: bool = False


class Sampler:
    """A llama.cpp sampler chain for one request. ``sample`` also accepts the token (penalties).
    Used for requests that set ``top_k`` (whose partial sort makes the rest cheap); the others
    get the numpy samplers of engine.sampling."""

    threaded = True  # up to milliseconds over a large vocabulary, with the GIL released

    def __init__(self, chain: ll.llama_sampler_p, ctx: ll.llama_context_p) -> None:
        self._chain: ll.llama_sampler_p | None = chain
        self._ctx = ctx

    def sample(self, logits_index: int) -> int:
        return int(ll.llama_sampler_sample(self._chain, self._ctx, logits_index))

    # As a grammar's inner sampler: llama_sampler_sample accepts the token into the chain as it
    # samples, so a token the grammar then refuses stays in the penalties' history too.
    pick = sample

    def remember(self, token: int) -> None:
        pass

    def free(self) -> None:
        if self._chain is not None:
            ll.llama_sampler_free(self._chain)
            self._chain = None


class LlamaRunner:
    def __init__(self, cfg: WorkerConfig) -> None:
        _init_backend(cfg.verbose)
        self.cfg = cfg
        mparams = ll.llama_model_default_params()
        offload = self._offload(cfg)
        mparams.n_gpu_layers = offload.n_gpu_layers
        self._model = ll.llama_model_load_from_file(cfg.path.encode(), mparams)
        if not self._model:
            raise ModelLoadFailed(f"llama.cpp could not load the model file {cfg.path}")
        n_layer = int(ll.llama_model_n_layer(self._model))
        placed = offload.placement
        # reported in WorkerReady; the layer count from the model llama.cpp loaded
        self.placement: Placement = Placement(
            placed.device, n_layer if placed.device == "gpu" and placed.gpu_layers >= n_layer
            else placed.gpu_layers, n_layer, placed.warning)
        self._vocab = ll.llama_model_get_vocab(self._model)
        self.n_vocab = int(ll.llama_vocab_n_tokens(self._vocab))
        self.n_embd = int(ll.llama_model_n_embd(self._model))  # an embedding vector's width
        self.add_bos = bool(ll.llama_vocab_get_add_bos(self._vocab))
        cparams = ll.llama_context_default_params()
        cparams.n_seq_max = cfg.n_slots
        cparams.n_ctx = cfg.n_ctx_slot * cfg.n_slots
        # Each slot may add one decode token on top of a full prefill chunk in the same step.
        cparams.n_batch = cfg.n_batch + cfg.n_slots
        cparams.n_ubatch = cparams.n_batch
        cparams.n_threads = cfg.n_threads
        cparams.n_threads_batch = cfg.n_threads
        cparams.no_perf = True
        if cfg.flash_attn is not None:
            cparams.flash_attn_type = 1 if cfg.flash_attn else 0
        if cfg.cache_type_k:
            cparams.type_k = GGML_TYPES[cfg.cache_type_k]
        if cfg.cache_type_v:
            cparams.type_v = GGML_TYPES[cfg.cache_type_v]
        if hasattr(cparams, "kv_unified"):
            cparams.kv_unified = False  # every slot gets its own n_ctx_slot of KV cache
        self._ctx = ll.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            ll.llama_model_free(self._model)
            raise ModelLoadFailed(
                f"llama.cpp could not create a context of {cparams.n_ctx} tokens for {cfg.path}: "
                "not enough memory, or settings the model cannot take (a quantised KV cache "
                "type, flash attention); run with --verbose for llama.cpp's reason")
        self._mem = ll.llama_get_memory(self._ctx)
        self._batch_cap = cparams.n_batch
        self._batch = ll.llama_batch_init(self._batch_cap, 0, 1)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._local = threading.local()  # special_piece's buffer, one per thread
        # a generated token's bytes and end-of-generation flag, looked up once per token id:
        # the vocabulary never changes, and a ctypes call per sampled token costs more
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._byte_token: dict[int, int] | None = None  # byte -> a token of that one byte
        # the logits buffer as rows of a numpy array, made again only when llama.cpp moves it
        self._row_addr = _address_fn("llama_get_logits_ith", ctypes.c_int32)
        self._logits_addr = _address_fn("llama_get_logits")
        self._logits_base = 0
        self._logits_rows = np.empty((0, self.n_vocab), dtype=np.float32)
        self._extra: list[EmbeddingContext] = []

    @staticmethod
    def _offload(cfg: WorkerConfig) -> devices.Offload:
        if not devices.supports_gpu_offload() and cfg.n_gpu_layers in (None, "auto", 0):
            return devices.gpu_layers_for(0, supports_offload=False, n_layer=0,
                                          free_bytes=lambda: None, file_bytes=0, kv_bytes=0)
        info = read_gguf_metadata(cfg.path)  # the header only: layers and KV shape
        layers = info.arch_value("block_count")
        return devices.gpu_layers_for(
            cfg.n_gpu_layers, supports_offload=devices.supports_gpu_offload(),
            n_layer=layers if isinstance(layers, int) else 0,
            free_bytes=devices.gpu_free_bytes, file_bytes=os.path.getsize(cfg.path),
            kv_bytes=kv_bytes_per_slot(info, cfg.n_ctx_slot, cfg.cache_type_k,
                                       cfg.cache_type_v) * cfg.n_slots)

    # ---- vocabulary -------------------------------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool | None = None,
                 parse_special: bool = True) -> list[int]:
        """``text``'s token ids; BOS as the model says unless ``add_bos``; special-token text
        (``<|im_end|>``) becomes the special token unless ``parse_special`` is False."""
        add = self.add_bos if add_bos is None else add_bos
        return self.tokenize_bytes(text.encode("utf-8"), add_bos=add, special=parse_special)

    def tokenize_bytes(self, data: bytes, *, add_bos: bool = False,
                       special: bool = False) -> list[int]:
        """``data`` as tokens; ``special``: control-token texts become those tokens."""
        cap = len(data) + 8
        while True:
            buf = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, special)
            if n >= 0:
                return list(buf[:n])
            cap = -n

    def piece(self, token: int) -> bytes:
        """The bytes of one token as generated text (control tokens render as nothing)."""
        known = self._pieces.get(token)
        if known is None:
            known = self._pieces[token] = self._piece(token)
        return known

    def _piece(self, token: int) -> bytes:
        n = ll.llama_token_to_piece(self._vocab, token, self._piece_buf, 256, 0, False)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self._vocab, token, big, -n, 0, False)
            return big.raw[:n]
        return self._piece_buf.raw[:n]

    def special_piece(self, token: int) -> bytes:
        """The bytes of one token with special tokens rendered as their text (detokenize,
        echo, tokenize's pieces; not the generation path). Safe on the prepare thread: its
        buffer is the calling thread's own."""
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = ctypes.create_string_buffer(256)
        n = ll.llama_token_to_piece(self._vocab, token, buf, 256, 0, True)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self._vocab, token, big, -n, 0, True)
            return big.raw[:n]
        return buf.raw[:n]

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        """llama.cpp's own inverse of :meth:`tokenize`: special tokens rendered as their text,
        BOS/EOS kept, and the leading space of a SentencePiece model's first word dropped (so
        that a text's tokens give the text back)."""
        arr = (ll.llama_token * len(tokens))(*tokens)
        cap = len(tokens) * 8 + 16
        while True:
            buf = ctypes.create_string_buffer(cap)
            n = ll.llama_detokenize(self._vocab, arr, len(tokens), buf, cap, False, True)
            if n >= 0:
                return buf.raw[:n]
            cap = -n

    def token_text(self, token: int) -> str:
        """A token's own text, specials included (for bos/eos strings in templates)."""
        if token < 0 or token >= self.n_vocab:
            return ""
        return (ll.llama_vocab_get_text(self._vocab, token) or b"").decode("utf-8", "replace")

    @property
    def bos_id(self) -> int:
        return int(ll.llama_vocab_bos(self._vocab))

    @property
    def eos_id(self) -> int:
        return int(ll.llama_vocab_eos(self._vocab))

    def is_eog(self, token: int) -> bool:
        known = self._eog.get(token)
        if known is None:
            known = self._eog[token] = bool(ll.llama_vocab_is_eog(self._vocab, token))
        return known

    # ---- sequences and decoding -------------------------------------------------------------

    def forget(self, seq: int, from_pos: int = 0) -> None:
        """Drop slot ``seq``'s cached tokens from ``from_pos`` on."""
        ll.llama_memory_seq_rm(self._mem, seq, from_pos, -1)

    def copy(self, src: int, dst: int) -> None:
        """Make slot ``dst``'s cache a copy of slot ``src``'s (the whole sequence; trim the copy
        with :meth:`forget`). With per-slot KV streams the data is copied at the next decode."""
        ll.llama_memory_seq_rm(self._mem, dst, -1, -1)
        ll.llama_memory_seq_cp(self._mem, src, dst, -1, -1)

    def save_state(self, seq: int) -> bytearray:
        """Slot ``seq``'s KV state as llama.cpp serialises one sequence
        (``llama_state_seq_get_data``): its cells' positions and K/V rows, about
        ``kv_bytes_per_token`` bytes per cached token (tools/cli's placement estimate). Not
        while a copy into or out of ``seq`` waits for the next decode (the copied rows are
        written then). Raises RuntimeError when llama.cpp writes nothing."""
        size = int(ll.llama_state_seq_get_size(self._ctx, seq))
        buf = bytearray(size)
        if size:
            arr = (ctypes.c_uint8 * size).from_buffer(buf)
            n = int(ll.llama_state_seq_get_data(self._ctx, arr, size, seq))
            del arr  # (releases the buffer, so it may shrink)
            if n == 0:
                raise RuntimeError(f"llama.cpp saved no state for sequence {seq}")
            del buf[n:]
        return buf

    def restore_state(self, seq: int, data: bytes | bytearray) -> bool:
        """Make slot ``seq``'s cache the state :meth:`save_state` gave (of any slot of a context
        with the same model and settings). False when llama.cpp refuses it (another model, KV
        type or context size; no room): the sequence is then empty."""
        self.forget(seq, 0)
        if not data:
            return False
        src = data if isinstance(data, bytearray) else bytearray(data)
        arr = (ctypes.c_uint8 * len(src)).from_buffer(src)
        ok = int(ll.llama_state_seq_set_data(self._ctx, arr, len(src), seq)) > 0
        del arr
        if not ok:
            self.forget(seq, 0)
        return ok

    def decode(self, segments: Sequence[Segment]) -> dict[int, int]:
        """Evaluate every segment in one ``llama_decode``. Returns seq -> the batch position of
        its last token, for the segments that asked for logits (``wants_logits`` or
        ``all_logits``; the latter's token j is at that position - len(tokens) + 1 + j).
        Raises RuntimeError if llama.cpp refuses."""
        b = self._batch
        i = 0
        rows: dict[int, int] = {}
        for seg in segments:
            last = len(seg.tokens) - 1
            for j, tok in enumerate(seg.tokens):
                b.token[i] = tok
                b.pos[i] = seg.pos + j
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seg.seq
                b.logits[i] = seg.all_logits or (seg.wants_logits and j == last)
                if j == last and (seg.wants_logits or seg.all_logits):
                    rows[seg.seq] = i
                i += 1
        if i > self._batch_cap:
            raise RuntimeError(f"batch of {i} tokens exceeds capacity {self._batch_cap}")
        b.n_tokens = i
        rc = ll.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed with status {rc}")
        return rows

    def logits_row(self, index: int) -> np.ndarray:
        """The float32 logits the last decode wrote for batch position ``index`` (a view of
        llama.cpp's buffer, valid until the next decode)."""
        addr = self._row_addr(self._ctx, index)
        base = self._logits_addr(self._ctx)  # the buffer's start (llama.cpp may move it)
        if not addr or not base:
            raise RuntimeError(f"llama.cpp has no logits for batch position {index}")
        row = (addr - base) // (self.n_vocab * 4)
        if base != self._logits_base or row >= len(self._logits_rows):
            floats = (ctypes.c_float * ((row + 1) * self.n_vocab)).from_address(base)
            self._logits_rows = np.frombuffer(memoryview(floats), dtype=np.float32).reshape(
                row + 1, self.n_vocab)
            self._logits_base = base
        # numpy types an integer index as Any (it could be a scalar); of a 2-D array it is a row
        logits: np.ndarray = self._logits_rows[row]
        return logits

    def sampler(self, params: ResolvedSampling,
                seed: int) -> Sampler | GreedySampler | LogitsSampler:
        """The quickest sampler that samples as ``chain_sampler(params, seed)`` does."""
        penalties = bool(params.frequency_penalty or params.presence_penalty)
        if params.temperature <= 0 and not penalties:
            return GreedySampler(self.logits_row, self.n_vocab, params.logit_bias or {})
        if params.temperature > 0 and 0 < params.top_k < self.n_vocab:
            return self.chain_sampler(params, seed)
        return LogitsSampler(self.logits_row, self.n_vocab, temperature=params.temperature,
                             top_p=params.top_p, min_p=params.min_p,
                             frequency_penalty=params.frequency_penalty,
                             presence_penalty=params.presence_penalty,
                             logit_bias=params.logit_bias, seed=seed & 0xFFFFFFFFFFFFFFFF)

    def grammar_sampler(self, inner: InnerSampler, grammar: Grammar,
                        param: str | None = None) -> GrammarSampler:
        """``inner`` constrained by ``grammar`` (see engine.grammar). Raises InvalidRequest
        (``param``) when llama.cpp cannot parse the grammar."""
        return GrammarSampler(
            inner, gbnf.parse(self._vocab, grammar.gbnf, self.n_vocab, param=param),
            self.logits_row, triggers=[t.encode("utf-8") for t in grammar.triggers],
            # triggers are found in the text llama.cpp's grammar matches: special tokens as
            # their text (a trigger such as Mistral's "[TOOL_CALLS]" is one)
            piece=self.special_piece, tokenize=self.byte_tokens, is_eog=self.is_eog,
            eog_ids=self.eog_ids)

    @property
    def eog_ids(self) -> list[int]:
        """The end-of-sequence and end-of-turn tokens (those the vocabulary names)."""
        ids = {int(ll.llama_vocab_eos(self._vocab)), int(ll.llama_vocab_eot(self._vocab))}
        return sorted(t for t in ids if 0 <= t < self.n_vocab and self.is_eog(t))

    def byte_tokens(self, data: bytes) -> list[int]:
        """``data`` as one token per byte (tokens whose text is that one byte: byte-level BPE
        and SentencePiece's byte fallback have one for every byte), to feed a grammar exact
        text: a tokenizer may change it (SentencePiece puts a space before the first word).
        A byte with no such token goes through the tokenizer."""
        if self._byte_token is None:
            found: dict[int, int] = {}
            for token in range(self.n_vocab):
                piece = self.piece(token)
                if len(piece) == 1 and piece[0] not in found and not self.is_eog(token):
                    found[piece[0]] = token
            self._byte_token = found
        out: list[int] = []
        for i, byte in enumerate(data):
            known = self._byte_token.get(byte)
            if known is None:
                return out + self.tokenize_bytes(data[i:])
            out.append(known)
        return out

    def chain_sampler(self, params: ResolvedSampling, seed: int) -> Sampler:
        """llama.cpp's own sampler chain for ``params`` (every case; ``sampler`` uses it when
        ``top_k`` is set, and tests hold the numpy samplers to it)."""
        sparams = ll.llama_sampler_chain_default_params()
        sparams.no_perf = True
        chain = ll.llama_sampler_chain_init(sparams)
        add = ll.llama_sampler_chain_add
        if params.logit_bias:
            items = [(t, b) for t, b in params.logit_bias.items() if 0 <= t < self.n_vocab]
            arr = (ll.llama_logit_bias * len(items))(*[ll.llama_logit_bias(t, b) for t, b in items])
            add(chain, ll.llama_sampler_init_logit_bias(self.n_vocab, len(items), arr))
        if params.frequency_penalty or params.presence_penalty:
            add(chain, ll.llama_sampler_init_penalties(self.n_vocab, PENALTY_LAST_N, 1.0,
                                                       params.frequency_penalty,
                                                       params.presence_penalty))
        if params.temperature <= 0:
            add(chain, ll.llama_sampler_init_greedy())
        else:
            if 0 < params.top_k < self.n_vocab:  # (larger keeps every token; and a C int)
                add(chain, ll.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(chain, ll.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0.0:
                add(chain, ll.llama_sampler_init_min_p(params.min_p, 1))
            add(chain, ll.llama_sampler_init_temp(params.temperature))
            add(chain, ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return Sampler(chain, self._ctx)

    def embedding_context(self, n_ctx: int, *, pool_mean: bool,
                          n_seq_max: int = 64) -> EmbeddingContext:
        """A second context on this model for embeddings (see engine.embeddings); the caller
        keeps it, and it is closed with this runner."""
        ectx = EmbeddingContext(self._model, n_ctx=n_ctx, n_seq_max=n_seq_max,
                                n_threads=self.cfg.n_threads, pool_mean=pool_mean)
        self._extra.append(ectx)
        return ectx

    def close(self) -> None:
        for extra in self._extra:
            extra.close()
        self._extra.clear()
        self._logits_rows = self._logits_rows[:0]  # (a view of the context's memory)
        free_context(self._batch, self._ctx)
        self._batch = self._ctx = None
        if self._model:
            ll.llama_model_free(self._model)
            self._model = None
