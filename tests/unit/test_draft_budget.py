"""scheduler/draft_budget.py and plan_step's drafts: speculation only takes what is left."""

from __future__ import annotations

from hearth.scheduler.draft_budget import share_drafts
from hearth.scheduler.policy import Phase, SlotView, Work, plan_step


def drafting(slot_id: int, wanted: int) -> SlotView:
    return SlotView(slot_id, Phase.DECODE, draft_wanted=wanted)


def test_share_gives_each_what_it_asks_when_there_is_room() -> None:
    assert share_drafts([(0, 4), (1, 8)], 100) == {0: 4, 1: 8}


def test_share_is_fair_and_hands_on_what_a_small_ask_leaves() -> None:
    # 10 positions, three slots: the one wanting 2 gets 2; the other two split the 8 left
    assert share_drafts([(0, 8), (1, 2), (2, 8)], 10) == {0: 4, 1: 2, 2: 4}


def test_share_never_exceeds_the_room_or_the_cap() -> None:
    for left in range(0, 20):
        for cap in (None, 0, 3, 7):
            got = share_drafts([(0, 8), (1, 8), (2, 1), (3, 0)], left, cap)
            assert sum(got.values()) <= (left if cap is None else min(left, cap))
            assert got[0] <= 8 and got[2] <= 1 and got[3] == 0


def test_share_with_no_room_grants_nothing() -> None:
    assert share_drafts([(0, 8)], 0) == {0: 0}
    assert share_drafts([(0, 8)], -3) == {0: 0}


def test_drafts_ride_along_with_the_decode_token() -> None:
    work = plan_step([drafting(0, 4), SlotView(1, Phase.DECODE)], 64)
    assert work == [Work(0, 5, False, True, 4), Work(1, 1, False, True)]


def test_drafts_never_crowd_out_prefill() -> None:
    # budget 16: two decode tokens, the waiting prompt's chunk takes the other 14: no drafts
    views = [drafting(0, 8), drafting(1, 8),
             SlotView(2, Phase.PREFILL, pending_prompt=100, admitted_at=1)]
    work = plan_step(views, 16)
    assert work == [Work(0, 1, False, True), Work(1, 1, False, True), Work(2, 14, True, False)]
    # the prompt's chunk is the same as it is with no drafting at all
    plain = plan_step([SlotView(0, Phase.DECODE), SlotView(1, Phase.DECODE), views[2]], 16)
    assert [w for w in work if w.prefill] == [w for w in plain if w.prefill]


def test_drafts_get_only_what_prefill_leaves() -> None:
    views = [drafting(0, 8), SlotView(1, Phase.PREFILL, pending_prompt=6, admitted_at=1)]
    work = plan_step(views, 12)
    # 1 decode token, 5 prompt tokens (the last one comes alone later), 6 left: the draft's
    assert work == [Work(0, 7, False, True, 6), Work(1, 5, True, False)]


def test_drafts_never_take_a_decode_token_from_another_slot() -> None:
    # more decoding slots than budget: every slot still gets its token, nobody drafts
    views = [drafting(i, 8) for i in range(6)]
    work = plan_step(views, 4)
    assert work == [Work(i, 1, False, True) for i in range(6)]


def test_total_step_tokens_stay_within_the_budget_when_drafting() -> None:
    for budget in range(1, 40):
        views = [drafting(0, 8), drafting(1, 3), SlotView(2, Phase.DECODE),
                 SlotView(3, Phase.PREFILL, pending_prompt=9, admitted_at=2)]
        work = plan_step(views, budget)
        total = sum(w.n_tokens for w in work)
        assert total <= max(budget, 3)  # 3 decode tokens always go in
        assert all(w.n_tokens == 1 + w.n_draft for w in work if not w.prefill)


def test_max_draft_caps_a_step_s_drafts() -> None:
    work = plan_step([drafting(0, 8), drafting(1, 8)], 64, max_draft=6)
    assert [w.n_draft for w in work] == [3, 3]


def test_prefilling_or_idle_slots_never_draft() -> None:
    views = [SlotView(0, Phase.PREFILL, pending_prompt=1, admitted_at=1, draft_wanted=5),
             SlotView(1, Phase.WAIT_COPY, draft_wanted=5)]
    assert plan_step(views, 64) == [Work(0, 1, True, True)]
