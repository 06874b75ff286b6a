"""engine/grammar.py's GrammarSampler against a fake logits row and a fake grammar: the slot's
sampler picks first, the grammar checks only that token, the row is masked only when it is
refused; end-of-generation only when the grammar is complete; lazy grammars start at their
trigger, which may span tokens, and a token that would start them wrongly is refused."""

from __future__ import annotations

import numpy as np
import pytest
from hearth.engine.grammar import GrammarSampler
from hearth.scheduler import errors

EOG = 0
PIECES = {EOG: b"", 1: b"a", 2: b"b", 3: b"ab", 4: b"x", 5: b"<t", 6: b"ool>", 7: b"<tool>",
          8: b"<tool>z", 9: b"y<to", 10: b"ol>a", 11: b"<", 12: b"t", 13: b"o", 14: b"l",
          15: b">", 16: b"z"}
N = len(PIECES)
SINGLE = {v: k for k, v in PIECES.items() if len(v) == 1}


class ExactText:
    """A grammar whose only sentence is ``target`` (a fake of llama.cpp's)."""

    def __init__(self, target: bytes, log: list[str]) -> None:
        self.target, self.done, self.log = target, b"", log
        self.freed = False

    def allows(self, token: int) -> bool:
        if token == EOG:
            return self.done == self.target
        text = self.done + PIECES[token]
        return PIECES[token] != b"" and self.target.startswith(text)

    def mask(self, row: np.ndarray) -> int:
        self.log.append("mask")
        ok = [t for t in range(N) if self.allows(t)]
        keep = row[ok].copy()
        row[:] = -np.inf
        row[ok] = keep
        return len(ok)

    def accept(self, token: int) -> None:
        assert self.allows(token), "accepted a token the grammar refuses"
        self.done += PIECES[token]

    def fresh(self) -> ExactText:
        return ExactText(self.target, self.log)

    def free(self) -> None:
        self.freed = True


class Greedy:
    """The slot's own sampler: the best logit of the row as it is now."""

    threaded = False

    def __init__(self, row: np.ndarray) -> None:
        self.row = row
        self.picks = 0
        self.remembered: list[int] = []

    def pick(self, logits_index: int) -> int:
        self.picks += 1
        return int(np.argmax(self.row))

    def remember(self, token: int) -> None:
        self.remembered.append(token)

    def free(self) -> None:
        pass


def _sampler(target: bytes, triggers: tuple[bytes, ...] = ()) -> tuple[
        GrammarSampler, Greedy, np.ndarray, list[str]]:
    row = np.zeros(N, dtype=np.float32)
    inner = Greedy(row)
    log: list[str] = []
    sampler = GrammarSampler(inner, ExactText(target, log), lambda i: row,
                             triggers=triggers, piece=PIECES.__getitem__,
                             tokenize=lambda data: [SINGLE[bytes([b])] for b in data],
                             is_eog=lambda t: t == EOG)
    return sampler, inner, row, log


def _logits(row: np.ndarray, best: list[int]) -> None:
    """Rank the tokens: ``best[0]`` highest, then the next..., the rest lowest."""
    row[:] = 0.0
    for rank, token in enumerate(best):
        row[token] = 10.0 - rank


def test_an_allowed_first_choice_costs_one_check_and_no_mask() -> None:
    sampler, inner, row, log = _sampler(b"ab")
    _logits(row, [3])
    assert sampler.sample(0) == 3
    assert (sampler.checks, sampler.masks, inner.picks, log) == (1, 0, 1, [])
    assert inner.remembered == [3]


def test_a_refused_choice_masks_the_row_and_samples_again() -> None:
    sampler, inner, row, log = _sampler(b"ab")
    _logits(row, [4, 2, 1])  # x and b are refused; a is the best the grammar allows
    assert sampler.sample(0) == 1
    assert log == ["mask"] and inner.picks == 2 and sampler.masks == 1
    assert inner.remembered == [1]  # only the token kept


def test_end_of_generation_only_when_complete_then_forced() -> None:
    sampler, _, row, _ = _sampler(b"ab")
    _logits(row, [EOG, 1])
    assert sampler.sample(0) == 1  # EOG refused: "a" is not the whole sentence
    _logits(row, [EOG, 2])
    assert sampler.sample(0) == 2
    _logits(row, [4, 1, 2])  # complete: nothing but EOG is allowed any more
    assert sampler.sample(0) == EOG


def test_a_grammar_that_allows_nothing_fails_the_request() -> None:
    sampler, _, row, _ = _sampler(b"q")  # no token spells "q"
    _logits(row, [1])
    with pytest.raises(errors.InternalError):
        sampler.sample(0)


def test_lazy_grammar_is_free_until_its_trigger_spans_two_tokens() -> None:
    sampler, _, row, log = _sampler(b"<tool>ab", triggers=(b"<tool>",))
    for token in (4, EOG):  # free text, EOG allowed too: no check beyond the trigger search
        _logits(row, [token])
        assert sampler.sample(0) == token and not sampler.triggered
    _logits(row, [5])
    assert sampler.sample(0) == 5 and not sampler.triggered  # "<t": not yet
    _logits(row, [6])
    assert sampler.sample(0) == 6 and sampler.triggered  # "<t" + "ool>": fed "<tool>"
    _logits(row, [EOG, 4, 3])  # now constrained: "ab" completes it
    assert sampler.sample(0) == 3
    assert log == ["mask"]
    _logits(row, [1])
    assert sampler.sample(0) == EOG


def test_lazy_trigger_inside_a_token_with_text_after_it() -> None:
    sampler, _, row, _ = _sampler(b"<tool>ab", triggers=(b"<tool>",))
    _logits(row, [9])  # "y<to": the trigger's start
    assert sampler.sample(0) == 9 and not sampler.triggered
    _logits(row, [10])  # "ol>a": completes it, and "a" must be where the grammar allows it
    assert sampler.sample(0) == 10 and sampler.triggered
    _logits(row, [2])
    assert sampler.sample(0) == 2


def test_a_token_that_would_start_the_grammar_wrongly_is_refused() -> None:
    sampler, inner, row, _ = _sampler(b"<tool>ab", triggers=(b"<tool>",))
    _logits(row, [8, 7])  # "<tool>z": the grammar refuses "z"; "<tool>" is next best
    assert sampler.sample(0) == 7 and sampler.triggered
    assert inner.remembered == [7]


def test_free_releases_every_grammar_state() -> None:
    sampler, _, row, _ = _sampler(b"<tool>ab", triggers=(b"<tool>",))
    template = sampler._template
    assert template is not None
    sampler.free()
    assert template.freed  # type: ignore[attr-defined]
