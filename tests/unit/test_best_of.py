"""best_of's ranking (api/handlers/completions.py): each prompt's best_of choices, the n with the
highest mean token log-probability, best first, re-indexed."""

from __future__ import annotations

import math

from hearth.api import completion_types as ct
from hearth.api.handlers.completions import best_choices, mean_logprob
from hearth.api.logprobs import CompletionLogprobs


def choice(index: int, *logprobs: float) -> ct.CompletionChoice:
    lp = CompletionLogprobs(["t"] * len(logprobs), list(logprobs), [{} for _ in logprobs],
                            list(range(len(logprobs))))
    return ct.CompletionChoice(f"c{index}", index, "length", lp)


def test_mean_logprob_is_per_token_and_a_choice_without_tokens_ranks_last() -> None:
    assert mean_logprob(choice(0, -1.0, -3.0)) == -2.0
    assert mean_logprob(choice(0)) == -math.inf
    assert mean_logprob(ct.CompletionChoice("x", 0, "stop")) == -math.inf


def test_the_best_per_prompt_best_first_reindexed() -> None:
    # two prompts, best_of 3, n 2: prompt 0's choices rank 2, 0, 1; prompt 1's 3 and 5 (means
    # -1.0 each: the earlier first), then 4 (no tokens)
    choices = [choice(0, -2.0), choice(1, -3.0, -5.0), choice(2, -0.5),
               choice(3, -1.0), choice(4), choice(5, -0.1, -1.9)]
    best = best_choices(choices, 3, 2)
    assert [c.text for c in best] == ["c2", "c0", "c3", "c5"]  # (5 is -1.0 too)
    assert [c.index for c in best] == [0, 1, 2, 3]


def test_a_length_tie_keeps_the_earlier_choice() -> None:
    best = best_choices([choice(0, -1.0), choice(1, -1.0)], 2, 1)
    assert [c.text for c in best] == ["c0"]


def test_an_echoed_prompt_s_entries_do_not_count() -> None:
    """With echo + logprobs the prompt's entries come first (the first null): only each
    choice's generated tokens are averaged."""
    a = choice(0, -0.1, -0.1, -3.0)  # prompt -0.1, -0.1; generated -3.0
    b = choice(1, -0.1, -0.1, -2.0, -2.0)  # generated -2.0, -2.0
    assert a.logprobs is not None
    a.logprobs.token_logprobs[0] = None  # type: ignore[call-overload]
    assert [c.text for c in best_choices([a, b], 2, 1, {0: 1, 1: 2})] == ["c1"]
    assert mean_logprob(a, 0) == -math.inf
