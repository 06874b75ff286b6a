"""scheduler/draft_budget.py and plan_step's drafts: speculation only takes what is left."""

from __future__ import annotations

import pytest
from hearth.scheduler.draft_budget import (
    ACCEPT_PRIOR,
    Acceptance,
    StepCost,
    share_drafts,
    worth_drafting,
)
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


# ---- the cost-aware part: acceptance against the cost of a position -------------------------


def test_step_cost_fits_fixed_and_per_position_times() -> None:
    cost = StepCost(prior=10.0)  # a prior far from the truth: the measurements win
    for _ in range(200):
        for positions in (1, 3, 4, 9):
            cost.observe(positions, 0.120 + 0.043 * positions)
    fixed, per = cost.fit()
    # (the prior, two pseudo-steps against ~50 measured ones, pulls a little)
    assert abs(fixed - 0.120) < 0.02 and abs(per - 0.043) < 0.004
    # issue 21's CPU measurement: drafts pay alone above ~0.3, at 4 slots above ~0.6
    assert 0.2 < cost.ratio(1) < 0.32
    assert 0.5 < cost.ratio(4) < 0.65
    assert cost.ratio(16) > 0.8


def test_step_cost_keeps_the_prior_shape_until_steps_differ_in_size() -> None:
    cost = StepCost(prior=2.8)
    assert cost.ratio(1) == pytest.approx(1 / 3.8)  # nothing measured yet
    for _ in range(100):
        cost.observe(1, 0.016)  # one stream, never drafting: every step one position
    fixed, per = cost.fit()
    assert fixed + per == pytest.approx(0.016, rel=1e-6)
    assert fixed / per == pytest.approx(2.8, rel=1e-6)


def test_where_a_position_costs_nothing_a_slot_alone_drafts_for_free() -> None:
    cost = StepCost()
    for _ in range(100):
        for positions in (1, 8, 16, 64):
            cost.observe(positions, 0.010)  # a GPU: the step's size does not show
    assert cost.ratio(1) < 0.01 and cost.ratio(16) < 0.05
    assert worth_drafting(8, 0.3, cost.draft_costs(1, 8)) >= 2
    # beside other slots a draft is a pass of its own, which costs a whole step there
    assert cost.draft_costs(16, 8)[1:] == pytest.approx([16.0] * 8)
    assert worth_drafting(8, 0.99, cost.draft_costs(16, 8)) == 0
    assert cost.draft_costs(2, 8)[1] == pytest.approx(2.0)


def test_step_cost_ignores_nonsense() -> None:
    cost = StepCost()
    cost.observe(0, 1.0)
    cost.observe(3, -1.0)
    assert cost.fit() == (cost.prior, 1.0)
    with pytest.raises(ValueError):
        StepCost(decay=0.0)


def line(ratio: float, k_max: int = 8) -> list[float]:
    """Draft costs where every position costs ``ratio`` tokens."""
    return [k * ratio for k in range(k_max + 1)]


def test_worth_drafting_weighs_acceptance_against_cost() -> None:
    assert worth_drafting(8, 0.9, line(0.0)) == 8  # free positions: everything asked
    assert worth_drafting(8, 0.5, line(0.26)) == 1  # 0.5 > 0.26, 0.25 < 0.26
    assert worth_drafting(8, 0.5, line(0.59)) == 0  # at 4 slots a coin-flip draft loses
    assert worth_drafting(8, 0.9, line(0.59)) == 5  # 0.9**5 = 0.5905 > 0.59 > 0.9**6
    assert worth_drafting(3, 0.99, line(0.5)) == 3  # never more than wanted
    assert worth_drafting(8, 0.99, line(0.5, 2)) == 2  # nor than costs are known for
    assert worth_drafting(0, 0.99, line(0.0)) == 0
    assert worth_drafting(8, 0.0, line(0.0)) == 0
    # a first position dearer than the later ones: short drafts lose, a long one may pay
    steep = [0.0, 2.0, 2.2, 2.4, 2.6, 2.8, 3.0, 3.2, 3.4]
    assert worth_drafting(8, 0.95, steep) == 8
    assert worth_drafting(2, 0.95, steep) == 0


def test_step_time_by_size_follows_the_measured_steps() -> None:
    cost = StepCost()
    assert cost.time(4) == pytest.approx(sum(cost.fit()) + 3 * cost.fit()[1])  # the prior line
    for _ in range(20):  # bench/draft_step_cost.py on gemma-3-270m, 1 thread (ms)
        cost.observe(4, 0.090)
        cost.observe(6, 0.157)
        cost.observe(12, 0.240)
    assert cost.time(6) == pytest.approx(0.157)
    assert cost.time(5) == pytest.approx((0.090 + 0.157) / 2)  # between measured sizes
    assert cost.time(13) > 0.240  # beyond them, along the fitted line
    # 4 slots: a draft of k is a pass of k positions of its own (measured: one slot's 2-token
    # draft made the step 67 ms longer); no draft of any length pays, even at 0.9 acceptance
    costs = cost.draft_costs(4, 8)
    assert costs[2] == pytest.approx(cost.time(2) * 4 / 0.090)
    assert costs[6] == pytest.approx(0.157 * 4 / 0.090)
    assert worth_drafting(8, 0.9, costs) == 0
    assert worth_drafting(8, 0.99, costs) == 0
    alone = StepCost()
    for _ in range(20):
        alone.observe(1, 0.050)
        alone.observe(9, 0.194)
    assert worth_drafting(8, 0.9, alone.draft_costs(1, 8)) == 8  # one slot: a long draft pays
    # (each position there costs 0.36 of a token: 0.3 acceptance does not pay for one)
    assert worth_drafting(8, 0.3, alone.draft_costs(1, 8)) == 0


def test_acceptance_follows_recent_drafts() -> None:
    acc = Acceptance()
    assert acc.rate == pytest.approx(ACCEPT_PRIOR)
    for _ in range(30):
        acc.record(8, 8)  # every token accepted
    assert acc.rate > 0.97
    for _ in range(60):
        acc.record(4, 0)  # every draft rejected at its first token
    assert acc.rate < 0.2
    acc.record(0, 0)  # nothing proposed: nothing learnt
    low = acc.rate
    acc.record(4, 2)  # two accepted, the third tried and rejected: 2 of 3
    assert acc.rate > low
