"""Prompts that skip the chat template (completions, fill-in-the-middle) and the tokenize /
detokenize jobs: the worker's tokenizer work that is not a chat's.

Fill-in-the-middle layout, as llama.cpp's server lays out an ``/infill`` prompt (prefix-suffix-
middle, tools/server/utils.hpp ``format_prompt_infill``, read for the layout; no extra context
files): ``[BOS] <FIM_PRE> prefix <FIM_SUF> suffix <FIM_MID>``, BOS only when the model's
``add_bos_token`` says so; the model writes the middle after ``<FIM_MID>``. The prefix (the
prompt) and the suffix are tokenized without BOS and, as llama.cpp's server does for them,
without parsing special-token text: they are code, where ``<|endoftext|>`` is just text.
(llama.cpp also puts repository and file-separator tokens before ``<FIM_PRE>`` for models that
have them, such as Qwen2.5-Coder's ``<|repo_name|>`` and ``<|file_sep|>``; hearth does not.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from hearth.scheduler import errors
from hearth.scheduler.messages import (
    ChatJob,
    RawPrompt,
    RequestedSampling,
    Tokenized,
    TokenizeJob,
)
from hearth.tools.gguf_header import FimTokens


class Tokenizer(Protocol):
    """What prompts need of the runner (engine.runner.LlamaRunner, or a test's fake)."""

    add_bos: bool

    def tokenize(self, text: str, *, add_bos: bool | None = None,
                 parse_special: bool = True) -> list[int]: ...
    def special_piece(self, token: int) -> bytes: ...
    def detokenize(self, tokens: Sequence[int]) -> bytes: ...
    @property
    def bos_id(self) -> int: ...


def fim_layout(prefix: Sequence[int], suffix: Sequence[int], fim: FimTokens,
               bos: int | None) -> list[int]:
    """The fill-in-the-middle prompt: ``[bos] pre prefix… suf suffix… mid`` (bos None: none)."""
    head = [] if bos is None else [bos]
    return [*head, fim.pre, *prefix, fim.suf, *suffix, fim.mid]


def detokenize(tok: Tokenizer, tokens: Sequence[int]) -> str:
    """The text of ``tokens`` (llama.cpp's detokenizer), special tokens rendered as their text
    (``<|im_end|>``), so that tokenizing it gives the ids back; bytes that are not UTF-8
    become U+FFFD."""
    return tok.detokenize(tokens).decode("utf-8", "replace")


class PromptMaker:
    """Turns a completion's RawPrompt into token ids, and says what ``echo`` gives back.

    ``fim``: the model's FIM tokens from its GGUF header (None: it has none, and a ``suffix``
    is a 400 naming it — the scheduler refuses it first, from the same header)."""

    def __init__(self, tok: Tokenizer, fim: FimTokens | None) -> None:
        self._tok = tok
        self._fim = fim

    def tokens(self, prompt: RawPrompt) -> list[int]:
        if prompt.suffix is not None:
            if self._fim is None:
                raise errors.InvalidRequest("This model has no fill-in-the-middle tokens, so it "
                                            "cannot complete with a 'suffix'.", param="suffix")
            prefix = (list(prompt.tokens) if prompt.tokens
                      else self._tok.tokenize(prompt.text, add_bos=False, parse_special=False))
            suffix = self._tok.tokenize(prompt.suffix, add_bos=False, parse_special=False)
            return fim_layout(prefix, suffix, self._fim,
                              self._tok.bos_id if self._tok.add_bos else None)
        if prompt.tokens:
            return list(prompt.tokens)
        return self._tok.tokenize(prompt.text)

    def echo(self, prompt: RawPrompt) -> str:
        """The prompt as ``echo`` returns it: the text as sent, or the ids' text."""
        return prompt.text if not prompt.tokens else detokenize(self._tok, prompt.tokens)

    def pieces(self, prompt: RawPrompt, tokens: Sequence[int]) -> list[bytes]:
        """Each of the prompt's ``tokens``' text as the echo shows it, for its logprobs
        entries: special tokens as their text (``<|im_start|>``), except a BOS the tokenizer
        added to a text prompt, which is not in the echoed text (its piece is empty)."""
        out = [self._tok.special_piece(t) for t in tokens]
        if (not prompt.tokens and self._tok.add_bos and tokens and tokens[0] == self._tok.bos_id
                and not prompt.text.encode().startswith(out[0])):
            out[0] = b""
        return out


def run_tokenize(job: TokenizeJob, tok: Tokenizer, render: Callable[[ChatJob], str],
                 n_vocab: int) -> Tokenized:
    """Answer a TokenizeJob (raises InvalidRequest for ids outside the vocabulary, or a chat
    template that fails on the messages)."""
    if job.detokenize:
        bad = next((t for t in job.tokens if not 0 <= t < n_vocab), None)
        if bad is not None:
            raise errors.InvalidRequest.token_outside_vocab("tokens", bad, n_vocab,
                                                            param="tokens")
        return Tokenized(job.request_id, text=detokenize(tok, job.tokens))
    if job.messages:
        text = render(ChatJob(job.request_id, job.frontend, job.key_name, job.model,
                              job.messages, RequestedSampling(), tools=job.tools))
    else:
        text = job.text
    tokens = tok.tokenize(text, add_bos=tok.add_bos and job.add_special)
    pieces = [tok.special_piece(t) for t in tokens] if job.with_pieces else []
    return Tokenized(job.request_id, tokens=tokens, pieces=pieces)
