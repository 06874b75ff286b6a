"""scheduler/policy.py: what goes into one decode step, and which slot a new prompt gets."""

from __future__ import annotations

import pytest
from hearth.scheduler.policy import (
    COPY_MIN_GAIN,
    REUSE_MIN,
    Admission,
    Phase,
    SlotView,
    Work,
    choose_slot,
    common_prefix,
    pick_free_slot,
    plan_admission,
    plan_choices,
    plan_step,
    worth_saving,
)


def decode(slot_id: int) -> SlotView:
    return SlotView(slot_id, Phase.DECODE)


def prefill(slot_id: int, pending: int, admitted_at: int) -> SlotView:
    return SlotView(slot_id, Phase.PREFILL, pending_prompt=pending, admitted_at=admitted_at)


# ---- plan_step --------------------------------------------------------------------------------


def test_nothing_to_do() -> None:
    assert plan_step([], 64) == []
    assert plan_step([SlotView(0, Phase.IDLE), SlotView(1, Phase.IDLE)], 64) == []


def test_decode_tokens_come_first() -> None:
    work = plan_step([prefill(0, 10, admitted_at=1), decode(1), decode(2)], 64)
    assert work[:2] == [Work(1, 1, False, True), Work(2, 1, False, True)]
    assert work[2] == Work(0, 9, True, False)  # the last prompt token comes in its own step


def test_prefill_is_chunked_within_the_budget() -> None:
    work = plan_step([decode(0), prefill(1, 100, admitted_at=1)], 16)
    assert work == [Work(0, 1, False, True), Work(1, 15, True, False)]
    assert sum(w.n_tokens for w in work) == 16


def _chunks(pending: int, budget: int, final_alone: bool = True) -> list[Work]:
    chunks = []
    while pending:
        (w,) = plan_step([prefill(0, pending, admitted_at=1)], budget, final_alone=final_alone)
        chunks.append(w)
        pending -= w.n_tokens
    return chunks


def test_only_the_last_prompt_token_wants_logits_and_it_comes_alone() -> None:
    chunks = _chunks(40, 16)
    assert [w.n_tokens for w in chunks] == [16, 16, 7, 1]
    assert [w.wants_logits for w in chunks] == [False, False, False, True]
    assert all(w.prefill for w in chunks)


@pytest.mark.parametrize("pending", [1, 2, 3, 15, 16, 17, 31, 32, 33, 100])
@pytest.mark.parametrize("budget", [1, 2, 16])
def test_every_prompt_ends_with_its_last_token_alone(pending: int, budget: int) -> None:
    """Whatever the cache served (pending = what is left) and the budget: a cold prompt and a
    warm one (pending 1) both get their first logits from a one-token step."""
    chunks = _chunks(pending, budget)
    assert sum(w.n_tokens for w in chunks) == pending
    assert chunks[-1] == Work(0, 1, True, True)
    assert not any(w.wants_logits for w in chunks[:-1])
    assert all(1 <= w.n_tokens <= budget for w in chunks)


def test_the_last_token_alone_can_be_turned_off_for_the_benchmark() -> None:
    chunks = _chunks(40, 16, final_alone=False)
    assert [(w.n_tokens, w.wants_logits) for w in chunks] == [(16, False), (16, False), (8, True)]


def test_a_last_prompt_token_shares_a_step_with_other_slots_work() -> None:
    """Alone means: not in the same work item as the rest of its prompt. Other slots' decode
    tokens and chunks still share the step (batching is never held back for it)."""
    work = plan_step([decode(0), prefill(1, 1, admitted_at=1), prefill(2, 10, admitted_at=2)], 8)
    assert work == [Work(0, 1, False, True), Work(1, 1, True, True), Work(2, 6, True, False)]


def test_prefill_oldest_first() -> None:
    slots = [prefill(0, 10, admitted_at=3), prefill(1, 10, admitted_at=1),
             prefill(2, 10, admitted_at=2)]
    work = plan_step(slots, 25)
    assert [(w.slot_id, w.n_tokens, w.wants_logits) for w in work] == \
        [(1, 9, False), (2, 9, False), (0, 7, False)]


def test_prefill_ties_by_slot_id() -> None:
    work = plan_step([prefill(3, 4, admitted_at=1), prefill(1, 4, admitted_at=1)], 8)
    assert [w.slot_id for w in work] == [1, 3]


def test_prefill_with_nothing_pending_is_skipped() -> None:
    assert plan_step([prefill(0, 0, admitted_at=1)], 8) == []


def test_decode_never_starved_even_beyond_the_budget() -> None:
    slots = [decode(i) for i in range(10)] + [prefill(10, 50, admitted_at=1)]
    work = plan_step(slots, 4)
    assert sorted(w.slot_id for w in work) == list(range(10))
    assert all(w.n_tokens == 1 and not w.prefill and w.wants_logits for w in work)


def test_budget_exactly_used_by_decode_leaves_no_prefill() -> None:
    work = plan_step([decode(0), decode(1), prefill(2, 5, admitted_at=1)], 2)
    assert [w.slot_id for w in work] == [0, 1]


def test_every_slot_at_most_once_and_budget_respected() -> None:
    slots = [decode(0), prefill(1, 3, admitted_at=5), decode(2), prefill(3, 300, admitted_at=4),
             SlotView(4, Phase.IDLE), prefill(5, 7, admitted_at=6)]
    for budget in range(1, 40):
        work = plan_step(slots, budget)
        ids = [w.slot_id for w in work]
        assert len(ids) == len(set(ids))
        assert 4 not in ids
        assert {0, 2} <= set(ids)
        assert sum(w.n_tokens for w in work) <= max(budget, 2)


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError):
        plan_step([decode(0)], 0)


# ---- choose_slot ------------------------------------------------------------------------------


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([5], [6]) == 0


def test_longest_prefix_wins() -> None:
    prompt = [1, 2, 3, 4, 5, 6]
    free = [(0, [1, 2, 9]), (1, [1, 2, 3, 4, 9, 9, 9]), (2, []), (3, [7, 7])]
    assert choose_slot(free, prompt, min_reuse=0) == (1, 4)
    long = list(range(100))
    free = [(0, [5]), (3, long[:40] + [7]), (6, long[:60])]
    assert choose_slot(free, long) == (6, 60)


def test_a_short_shared_prefix_is_not_worth_keeping() -> None:
    """A few tokens in common (a chat template's opening) do not choose the slot: the request
    is placed as one with nothing in common would be (here: the empty slot)."""
    prompt = [1, 2, 3, 9, 9]
    free = [(4, [1, 2, 3, 4]), (2, [1, 2, 7]), (9, [])]
    assert choose_slot(free, prompt, min_reuse=32) == (9, 0)
    assert choose_slot(free, prompt, min_reuse=3) == (4, 3)


# ---- place: where a prompt with no cached prefix goes ---------------------------------------


def test_place_keeps_other_conversations_caches() -> None:
    """With nothing busy, an empty slot first, else the least recently used one: two apps
    taking turns do not evict each other's conversation."""
    free = [(0, [1] * 50), (1, [2] * 50), (2, []), (3, [])]
    assert pick_free_slot(free) == 2
    full = [(0, [1] * 50), (1, [2] * 50), (2, [3] * 9)]
    assert pick_free_slot(full, last_used={0: 7, 1: 3, 2: 5}) == 1
    assert pick_free_slot(full) == 0  # no stamps: the lowest id


def test_place_keeps_busy_slots_together() -> None:
    """Busy slots stay contiguous (llama.cpp attends over every stream between the lowest and
    the highest busy slot): a gap between them first, else a neighbour."""
    free = [(0, []), (3, [1] * 9), (5, []), (9, [])]
    assert pick_free_slot(free, busy=[2, 4]) == 3  # the gap, though its cache is not empty
    assert pick_free_slot(free, busy=[6, 7, 8]) == 5  # neighbours 5 and 9, both empty: the lower
    # the one left longer ago
    assert pick_free_slot(free, busy=[6, 7, 8], last_used={5: 4, 9: 2}) == 9
    assert pick_free_slot([(5, [1]), (9, [])], busy=[6, 7, 8], last_used={5: 1, 9: 2}) == 9  # empty
    assert pick_free_slot([(0, [1]), (3, [2])], busy=[1, 2], last_used={0: 9, 3: 1}) == 3
    assert pick_free_slot([(0, []), (15, [])], busy=[1]) == 0


def test_place_never_picks_the_excluded_slot() -> None:
    free = [(3, []), (9, [])]
    assert pick_free_slot(free, busy=[4], exclude=3) == 9  # the nearest one left
    with pytest.raises(ValueError):
        pick_free_slot([(3, [])], exclude=3)


def test_reuse_leaves_one_prompt_token_to_evaluate() -> None:
    prompt = [1, 2, 3, 4]
    assert choose_slot([(0, [1, 2, 3, 4])], prompt) == (0, 3)
    assert choose_slot([(0, [1, 2, 3, 4, 5, 6])], prompt) == (0, 3)
    assert choose_slot([(0, [1])], [1]) == (0, 0)
    long = list(range(50))
    assert choose_slot([(0, []), (1, long)], long) == (1, 49)


def test_a_short_shared_prefix_is_not_reused() -> None:
    """Under REUSE_MIN shared tokens, unless they are all of the prompt but its last token, the
    prompt is evaluated whole, as on an empty cache (the exact cold path: README
    "Determinism"), whichever slot it lands in."""
    prompt = [1, 2, 3, 4, 5]
    assert choose_slot([(0, [1, 2, 3, 9])], prompt) == (0, 0)
    # all of a short prompt but its last token: reused (the exact full-prefix path)
    assert choose_slot([(0, [1, 2, 3, 4])], prompt) == (0, 4)
    assert choose_slot([(0, [1, 2, 3, 4, 5, 6])], prompt) == (0, 4)
    short = list(range(REUSE_MIN - 1)) + [99, 100]
    assert choose_slot([(0, list(range(REUSE_MIN)))], short) == (0, 0)
    enough = list(range(REUSE_MIN)) + [99]
    assert choose_slot([(0, list(range(REUSE_MIN + 1)))], enough) == (0, REUSE_MIN)


def test_no_shared_prefix() -> None:
    assert choose_slot([(1, [9, 9]), (0, [8])], [1, 2]) == (0, 0)


def test_ties_go_to_the_lowest_id() -> None:
    prompt = list(range(40)) + [99]
    free = [(3, list(range(40)) + [1]), (1, list(range(40)) + [2]), (2, list(range(45)))]
    assert choose_slot(free, prompt) == (1, 40)
    assert choose_slot([(5, []), (2, []), (7, [])], [1, 2]) == (2, 0)


def test_empty_prompt() -> None:
    assert choose_slot([(0, [1, 2])], []) == (0, 0)


def test_no_free_slot() -> None:
    with pytest.raises(ValueError):
        choose_slot([], [1, 2])


# ---- plan_admission: copying a long shared prefix from another slot ---------------------------


def test_admission_prefers_own_cache_when_no_one_shares_more() -> None:
    prompt = list(range(100))
    adm = plan_admission([(0, list(range(50))), (1, [])], [(2, [7, 7])], prompt)
    assert adm == Admission(0, 50)


def test_admission_copies_from_busy_slot_with_much_longer_prefix() -> None:
    prompt = list(range(100))
    adm = plan_admission([(0, [0, 1]), (1, [5] * 10)], [(2, list(range(90)) + [0])], prompt)
    assert adm.donor == 2 and adm.reuse == 90
    assert adm.slot_id == 1  # next to the busy slot


def test_admission_copy_needs_a_real_gain() -> None:
    prompt = list(range(100))
    adm = plan_admission([(0, list(range(60)))], [(1, list(range(80)))], prompt, min_gain=32)
    assert adm == Admission(0, 60)
    adm = plan_admission([(0, list(range(40)))], [(1, list(range(80)))], prompt, min_gain=32)
    assert adm == Admission(0, 80, 1)


def test_admission_copy_leaves_one_token_to_evaluate() -> None:
    prompt = list(range(50))
    adm = plan_admission([(0, [])], [(1, list(range(200)))], prompt)
    assert adm == Admission(0, 49, 1)


def test_admission_may_copy_from_another_free_slot() -> None:
    prompt = list(range(100))
    adm = plan_admission([(0, list(range(99)) + [5]), (1, [])], [], prompt)
    assert adm == Admission(0, 99)  # its own cache already holds it: no copy


def test_admission_waits_for_a_slot_still_evaluating_the_shared_prefix() -> None:
    prompt = list(range(100))
    adm = plan_admission([(1, []), (2, [])], [(0, [0, 1, 2])], prompt,
                         prefilling=[(0, list(range(90)) + [7, 7])])
    assert adm == Admission(1, 90, 0, wait=True)


def test_admission_does_not_wait_when_a_cache_already_has_as_much() -> None:
    prompt = list(range(100))
    adm = plan_admission([(1, list(range(80)))], [(0, [])], prompt,
                         prefilling=[(0, list(range(90)))])
    assert adm == Admission(1, 80)


def test_waiting_and_finished_slots_get_no_work() -> None:
    slots = [SlotView(0, Phase.WAIT_COPY, pending_prompt=50), decode(1),
             SlotView(2, Phase.FINISHED), prefill(3, 10, admitted_at=1)]
    assert plan_step(slots, 64) == [Work(1, 1, False, True), Work(3, 9, True, False)]


# ---- plan_choices: the slots of a request's other choices ------------------------------------


def test_choices_take_free_slots_beside_the_busy_ones_and_the_first_choice() -> None:
    free = [(i, []) for i in (0, 1, 2, 5, 6, 7)]
    first = Admission(1, 0)
    # busy: 3 and 4; choice 0 in 1 -> the gap 2, then beside the span 0..4: 0, then 5
    assert plan_choices(free, [3, 4], first, 4) == [2, 0, 5]


def test_choices_prefer_empty_then_least_recently_used_caches() -> None:
    free = [(1, [1, 2]), (2, [3]), (3, []), (4, [4])]
    first = Admission(1, 2)  # every free slot is a gap between the busy 0 and 5
    assert plan_choices(free, [0, 5], first, 3, last_used={2: 5, 4: 1}) == [3, 4]


def test_choices_leave_the_donor_slot_to_the_last() -> None:
    free = [(0, list(range(80))), (1, []), (2, [])]
    first = Admission(1, 79, donor=0)
    assert plan_choices(free, [], first, 2) == [2]
    assert plan_choices(free, [], first, 3) == [2, 0]


def test_choices_need_as_many_free_slots() -> None:
    with pytest.raises(ValueError, match="3 free slots"):
        plan_choices([(0, []), (1, [])], [], Admission(0, 0), 3)
    assert plan_choices([(0, [])], [], Admission(0, 0), 1) == []


# ---- the host-RAM cache in admission ------------------------------------------------------------

LONG = list(range(100, 200))  # a 100-token conversation


def test_a_saved_state_beating_every_slot_is_restored_into_the_least_valuable_free_slot() -> None:
    free = [(0, LONG[:10]), (1, []), (2, [7] * 50)]
    plan = plan_admission(free, [], [*LONG, 1], saved=100)
    assert plan == Admission(1, 100, restore=True)  # the empty slot; nobody's cache lost


def test_no_restore_when_a_slot_serves_nearly_as_much() -> None:
    free = [(0, LONG[:80]), (1, [])]
    plan = plan_admission(free, [], [*LONG, 1], saved=100)  # 20 more: not worth it
    assert plan == Admission(0, 80)
    plan = plan_admission(free, [], [*LONG, 1], saved=80 + COPY_MIN_GAIN)
    assert plan.restore and plan.reuse == 80 + COPY_MIN_GAIN


def test_restore_beats_copying_or_waiting_for_a_busy_slot_only_by_enough() -> None:
    busy = [(3, LONG[:90])]
    plan = plan_admission([(0, []), (1, [])], busy, [*LONG, 1], saved=100)
    assert plan.donor == 3 and not plan.restore  # the copy gives 90: 10 short of 100
    plan = plan_admission([(0, []), (1, [])], [(3, [])], [*LONG, 1], saved=100,
                          prefilling=[(3, [*LONG[:40], 5])])
    assert plan.restore and plan.donor is None and not plan.wait


def test_no_restore_into_a_slot_a_copy_is_pending_for() -> None:
    free = [(0, []), (1, [])]
    plan = plan_admission(free, [], [*LONG, 1], saved=100, no_restore=[0])
    assert plan == Admission(1, 100, restore=True)
    plan = plan_admission(free, [], [*LONG, 1], saved=100, no_restore=[0, 1])
    assert not plan.restore and plan.reuse == 0


def test_a_slot_is_saved_only_when_what_it_loses_is_worth_a_restore() -> None:
    assert worth_saving(100, 0)
    assert worth_saving(100, 100 - COPY_MIN_GAIN)
    assert not worth_saving(100, 100 - COPY_MIN_GAIN + 1)  # the next turn keeps nearly all
    assert not worth_saving(COPY_MIN_GAIN - 1, 0)  # too short to be worth keeping
