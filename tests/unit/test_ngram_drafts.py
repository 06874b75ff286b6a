"""engine/speculation.py: the n-gram draft finder, the adaptive draft length, greedy verification
and the rollback position."""

from __future__ import annotations

import pytest
from hearth.engine.speculation import (
    MISS_LIMIT,
    PAUSE_MAX,
    PAUSE_MIN,
    DraftLength,
    NgramDrafter,
    Speculation,
    drafts,
    kept_positions,
    verify_greedy,
)


def test_draft_is_what_followed_the_last_ngram_before() -> None:
    d = NgramDrafter([1, 2, 3, 4, 5, 6, 1, 2], n=2)
    assert d.propose(3) == [3, 4, 5]
    assert d.propose(10) == [3, 4, 5, 6, 1, 2]  # up to the end of the sequence


def test_no_draft_without_an_earlier_occurrence() -> None:
    assert NgramDrafter([1, 2, 3, 4], n=2).propose(4) == []
    assert NgramDrafter([1, 2], n=2).propose(4) == []  # the n-gram itself is not "earlier"
    assert NgramDrafter([], n=1).propose(4) == []
    assert NgramDrafter([1, 2, 1, 2], n=2).propose(0) == []


def test_the_most_recent_occurrence_wins() -> None:
    d = NgramDrafter([7, 8, 1, 7, 8, 2, 7, 8], n=2)
    assert d.propose(1) == [2]


def test_a_run_drafts_from_its_first_occurrence() -> None:
    # the latest "7 7" is followed by one token only; the first by the rest of the run
    assert NgramDrafter([7] * 8, n=2).propose(4) == [7, 7, 7, 7]
    seq = [1, 2, 3, 1, 2, 4, 1, 2]
    assert NgramDrafter(seq, n=2).propose(3) == [4, 1, 2]  # the latest has enough after it
    assert NgramDrafter(seq, n=2).propose(6) == [3, 1, 2, 4, 1, 2]  # it has not: the first


def test_a_copy_in_progress_keeps_its_source() -> None:
    # "1 2" occurs twice in the source; the sequence is copying the first part
    source = [1, 2, 3, 4, 5, 6, 1, 2, 9, 9]
    d = NgramDrafter([*source, 0, 1, 2, 3], n=2)
    assert d.propose(2) == [4, 5]
    for t in (4, 5, 6, 1, 2):  # the copy of the source goes on, up to its second "1 2"
        d.push(t)
    assert d.propose(2) == [9, 9]  # the source's next tokens, not [3, 4] (the latest "1 2")
    d.push(7)  # the sequence leaves the copy: the index again
    assert d.propose(2) == []
    d.push(5)
    d.push(6)
    assert d.propose(3) == [1, 2, 7]  # the latest "5 6"


def test_pushed_tokens_are_found_and_indexed_incrementally() -> None:
    d = NgramDrafter([5, 6, 7, 9], n=2)
    assert d.propose(2) == []
    d.push(5)
    assert d.propose(2) == []
    d.push(6)
    assert d.propose(2) == [7, 9]
    d.push(8)  # 6 8 has not been seen
    assert d.propose(2) == []
    for t in (5, 6):
        d.push(t)
    assert d.propose(3) == [8, 5, 6]  # the latest "5 6" now is the one before 8


def test_ngram_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        NgramDrafter([1], n=0)


def test_length_follows_acceptance() -> None:
    length = DraftLength(8)
    assert length.want() == 8
    length.record(8, 1)
    assert length.want() == 2
    length.record(2, 2)
    assert length.want() == 4
    length.record(4, 4)
    length.record(8, 8)
    assert length.want() == 8  # never above k_max
    assert (length.proposed, length.accepted) == (22, 15)


def test_misses_pause_drafting_and_the_pause_grows() -> None:
    length = DraftLength(4)
    for _ in range(MISS_LIMIT - 1):
        length.record(4, 0)
        assert length.want() > 0
    length.record(2, 0)
    assert length.want() == 0 and length.paused == PAUSE_MIN
    length.generated(PAUSE_MIN - 1)
    assert length.want() == 0
    length.generated(1)
    assert length.want() > 0
    for _ in range(MISS_LIMIT):  # a second run of misses pauses twice as long
        length.record(2, 0)
    assert length.paused == 2 * PAUSE_MIN
    for _ in range(20):
        length.generated(10_000)
        for _ in range(MISS_LIMIT):
            length.record(2, 0)
    assert length.paused == PAUSE_MAX


def test_an_accepted_token_ends_a_run_of_misses_and_resets_the_pause() -> None:
    length = DraftLength(4)
    for _ in range(MISS_LIMIT):
        length.record(2, 0)
    length.generated(PAUSE_MIN)
    length.record(2, 0)
    length.record(2, 1)  # the run is broken: two more misses do not pause
    length.record(2, 0)
    length.record(2, 0)
    assert length.want() > 0
    length.record(2, 0)
    assert length.paused == PAUSE_MIN  # the pause started over


def test_an_empty_draft_is_not_an_outcome() -> None:
    length = DraftLength(4)
    for _ in range(10):
        length.record(0, 0)
    assert length.want() == 4 and length.proposed == 0


def test_verify_keeps_the_agreeing_prefix_and_the_next_pick() -> None:
    model = [10, 11, 12, 99, 14]  # the greedy pick at each row
    read: list[int] = []

    def pick(j: int) -> int:
        read.append(j)
        return model[j]

    assert verify_greedy([10, 11, 12, 13], pick) == [10, 11, 12, 99]
    assert read == [0, 1, 2, 3]  # the row after the disagreement is never read


def test_verify_whole_draft_gives_a_bonus_token() -> None:
    assert verify_greedy([1, 2], lambda j: [1, 2, 3][j]) == [1, 2, 3]


def test_verify_rejecting_the_first_draft_token_still_yields_one() -> None:
    assert verify_greedy([5, 6, 7], lambda j: [4, 6, 7, 8][j]) == [4]
    assert verify_greedy([], lambda j: [4][j]) == [4]


def test_rollback_position() -> None:
    # decode token at 20, draft at 21..24; two draft tokens kept: 21, 22 stay, 23 on go
    assert kept_positions(20, 2) == 23
    assert kept_positions(20, 0) == 21  # only the decode token stays


def test_speculation_proposes_within_the_limit_and_learns_outputs() -> None:
    spec = Speculation([1, 2, 3, 4, 5, 1, 2], n=2, k_max=3)
    assert spec.propose(10) == [3, 4, 5]
    assert spec.propose(2) == [3, 4]
    assert spec.propose(0) == []
    spec.accepted_token(3)
    assert spec.propose(10) == [4, 5, 1]


def test_who_drafts() -> None:
    from hearth.scheduler.messages import ResolvedSampling

    greedy = ResolvedSampling(temperature=0.0)
    assert drafts(greedy, setting=True, constrained=False)
    assert not drafts(greedy, setting=False, constrained=False)
    assert not drafts(greedy, setting=True, constrained=True)
    assert drafts(ResolvedSampling(temperature=0.0, logit_bias={1: 5.0}), setting=True,
                  constrained=False)
    assert not drafts(ResolvedSampling(temperature=0.7), setting=True, constrained=False)
    assert not drafts(ResolvedSampling(temperature=0.0, presence_penalty=0.5), setting=True,
                      constrained=False)
    on = ResolvedSampling(temperature=0.0, speculative_decoding=True)
    off = ResolvedSampling(temperature=0.0, speculative_decoding=False)
    assert drafts(on, setting=False, constrained=False)
    assert not drafts(off, setting=True, constrained=False)
    assert not drafts(ResolvedSampling(temperature=0.5, speculative_decoding=True),
                      setting=True, constrained=False)


def test_verify_records_the_outcome() -> None:
    spec = Speculation([1, 2, 3], n=1, k_max=8)
    assert spec.verify([5, 6, 7], lambda j: [5, 9, 0, 0][j]) == [5, 9]
    assert (spec.length.proposed, spec.length.accepted, spec.length.want()) == (3, 1, 2)
