"""llama.cpp's GBNF grammar sampler for one slot, as engine.grammar's ``GrammarLike``.

``llama_sampler_init_grammar`` parses the grammar; its ``apply`` sets the logit of each
candidate the grammar cannot take to -inf, and ``accept`` advances the parse. Checking one
token is an ``apply`` on a one-candidate array; masking the row is an ``apply`` on the whole
vocabulary (the slow path: llama.cpp matches every token's text against the parse stacks).

Owned by the worker process's only thread (or a sample thread, one slot at a time).
"""

from __future__ import annotations

import ctypes

import llama_cpp as ll
import numpy as np
from hearth.scheduler.errors import InvalidRequest

# llama_token_data as numpy sees it: {int32 id; float logit; float p}
_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
assert _TOKEN_DATA.itemsize == ctypes.sizeof(ll.llama_token_data)


def parse(vocab: ll.llama_vocab_p, gbnf: str, n_vocab: int, *,
          param: str | None = None) -> LlamaGrammar:
    """A grammar sampler for ``gbnf`` (root rule ``root``). Raises InvalidRequest (with
    ``param``) when llama.cpp cannot parse it (it then logs why on stderr)."""
    sampler = ll.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    if not sampler:
        raise InvalidRequest("the grammar could not be parsed by llama.cpp (GBNF syntax, an "
                             "undefined rule, or left recursion)", param=param)
    return LlamaGrammar(sampler, n_vocab)


class LlamaGrammar:
    def __init__(self, sampler: ll.llama_sampler_p, n_vocab: int) -> None:
        self._sampler: ll.llama_sampler_p | None = sampler
        self._n_vocab = n_vocab
        self._one = (ll.llama_token_data * 1)()
        self._one_array = ll.llama_token_data_array(self._one, 1, -1, False)
        self._one_p = ctypes.byref(self._one_array)
        self._all: np.ndarray | None = None  # the whole vocabulary's candidates, on first mask
        self._all_array: ll.llama_token_data_array | None = None

    def allows(self, token: int) -> bool:
        one = self._one[0]
        one.id = token  # type: ignore[assignment]  # (ctypes converts the int)
        one.logit, one.p = 0.0, 0.0
        self._one_array.size, self._one_array.selected = 1, -1
        ll.llama_sampler_apply(self._sampler, self._one_p)
        return bool(one.logit != -np.inf)

    def mask(self, row: np.ndarray) -> int:
        if self._all is None:
            buf = (ll.llama_token_data * self._n_vocab)()
            self._all = np.frombuffer(memoryview(buf), dtype=_TOKEN_DATA)
            self._all_array = ll.llama_token_data_array(buf, self._n_vocab, -1, False)
            self._all["id"] = np.arange(self._n_vocab, dtype=np.int32)
        assert self._all_array is not None
        self._all["logit"] = 0.0
        self._all_array.size, self._all_array.selected, self._all_array.sorted = \
            self._n_vocab, -1, False
        ll.llama_sampler_apply(self._sampler, ctypes.byref(self._all_array))
        # llama.cpp keeps the array's order when it only sets logits (the ids are checked, as a
        # reordering would mask the wrong tokens)
        rejected = self._all["logit"] == -np.inf
        allowed = self._n_vocab - int(np.count_nonzero(rejected))
        row[self._all["id"][rejected]] = -np.inf
        return allowed

    def accept(self, token: int) -> None:
        ll.llama_sampler_accept(self._sampler, token)

    def fresh(self) -> LlamaGrammar:
        # llama_sampler_reset puts a grammar back at its start; a clone of this one, reset
        clone = ll.llama_sampler_clone(self._sampler)
        ll.llama_sampler_reset(clone)
        return LlamaGrammar(clone, self._n_vocab)

    def free(self) -> None:
        if self._sampler is not None:
            ll.llama_sampler_free(self._sampler)
            self._sampler = None
