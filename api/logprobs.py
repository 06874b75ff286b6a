"""Log-probabilities in OpenAI's two wire shapes, from the engine's per-token entries
(``scheduler.messages.TokenLogprob``; what the numbers are: engine/logprobs.py).

* Chat (``logprobs: true``, ``top_logprobs`` 0–20): ``choices[].logprobs.content[]``, each
  ``{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}`` (OpenAI's API reference,
  "The chat completion object").
* Completions (``logprobs`` 0–5), the legacy shape: ``{tokens, token_logprobs, top_logprobs,
  text_offset}``, four lists with one item per token; ``top_logprobs[i]`` a dict of token text
  to logprob holding the k most likely tokens and the chosen one ("up to logprobs+1 elements",
  as OpenAI's reference says); ``text_offset[i]`` the character offset in the choice's text
  where token i's text starts. With ``echo``, the prompt's tokens come first: the first one's
  ``token_logprobs`` and ``top_logprobs`` items are null (nothing predicts it), and
  ``text_offset`` runs on from the prompt's tokens into the completion's (OpenAI's legacy
  shape with ``echo``).

A token's ``bytes`` may be part of a multi-byte character (a byte-level BPE vocabulary splits
some characters over several tokens). Its ``token`` text is then not UTF-8: it is written
``bytes:\\xe2\\x80`` — the convention OpenAI's legacy completions use for such tokens — and the
``bytes`` list gives the exact values.
"""

from __future__ import annotations

import codecs

import msgspec
from hearth.scheduler.messages import TokenLogprob


def token_text(piece: bytes) -> str:
    """A token's text: its bytes as UTF-8, or ``bytes:\\xNN…`` when they are not valid UTF-8
    on their own."""
    try:
        return piece.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in piece)


# ---- chat ------------------------------------------------------------------------------------


class TopLogprobOut(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(msgspec.Struct):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprobOut]


class ChoiceLogprobs(msgspec.Struct):
    """A chat choice's (or a stream chunk's) ``logprobs``: one item per generated token."""

    content: list[TokenLogprobOut] | None
    refusal: None = None


def chat_entries(entries: list[TokenLogprob]) -> list[TokenLogprobOut]:
    # (a chat's tokens are all generated, so each has a log-probability; only an echoed
    # prompt's first token has none, and chat has no echo)
    return [TokenLogprobOut(token_text(e.piece), -9999.0 if e.logprob is None else e.logprob,
                            list(e.piece),
                            [TopLogprobOut(token_text(t.piece), t.logprob, list(t.piece))
                             for t in e.top])
            for e in entries]


# ---- completions (the legacy shape) ------------------------------------------------------------


class CompletionLogprobs(msgspec.Struct):
    """A completion choice's (or a stream chunk's) ``logprobs`` in the legacy shape: one item
    per token in each list; ``top_logprobs[i]``: token text -> logprob of the most likely
    tokens and the chosen one; ``text_offset[i]``: where token i's text starts in the choice's
    text, in characters. An echoed prompt's first token has null in ``token_logprobs`` and
    ``top_logprobs``."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None
    text_offset: list[int]


class LegacyLogprobs:
    """One completion choice's log-probabilities in the legacy shape, built as its tokens
    arrive, an echoed prompt's first. ``text_offset`` counts the characters of the choice's
    text before each token (``start``: the characters already in it): the characters the
    token stream has completed so far, decoded as the engine decodes it (UTF-8, a character
    counted once its last byte has come). A token that ends a character an earlier token began
    gets that character's offset, as the earlier token does."""

    def __init__(self, start: int = 0) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._offset = start
        self.whole = CompletionLogprobs([], [], [], [])

    def add(self, entries: list[TokenLogprob]) -> CompletionLogprobs:
        """The legacy shape of ``entries`` (a stream chunk's), also appended to :attr:`whole`."""
        part = CompletionLogprobs([], [], [], [])
        top = part.top_logprobs
        assert top is not None
        for e in entries:
            part.tokens.append(token_text(e.piece))
            part.token_logprobs.append(e.logprob)
            part.text_offset.append(self._offset)
            self._offset += len(self._utf8.decode(e.piece))
            if e.logprob is None:  # an echoed prompt's first token
                top.append(None)
                continue
            alternatives: dict[str, float] = {}
            for t in e.top:  # (two tokens of one text: the more likely one's)
                alternatives.setdefault(token_text(t.piece), t.logprob)
            alternatives.setdefault(token_text(e.piece), e.logprob)
            top.append(alternatives)
        whole_top = self.whole.top_logprobs
        assert whole_top is not None
        self.whole.tokens += part.tokens
        self.whole.token_logprobs += part.token_logprobs
        whole_top += top
        self.whole.text_offset += part.text_offset
        return part
