"""SlotEngine with n-gram speculative decoding, over a fake model: drafts are verified against
the model's greedy picks, rejected positions are rolled back, and every token still goes through
stop strings, end of generation and max_tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from hearth.engine.slots import SlotEngine

# (the fake model's decode times are microseconds of noise: the tests here are about
# verification, so every draft position counts as free unless a test says otherwise)
from hearth.scheduler.draft_budget import FreeSteps, StepCost
from hearth.scheduler.messages import (
    ChatJob,
    ChatMessage,
    Finished,
    Grammar,
    RequestedSampling,
    ResolvedSampling,
    TextDelta,
)

EOG = 0
POISON = 255  # what the fake model predicts after a context it was never meant to see


@dataclass(frozen=True)
class Seg:
    seq: int
    tokens: Sequence[int]
    pos: int
    wants_logits: bool
    all_logits: bool = False


class GreedyPick:
    threaded = False

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner

    def sample(self, logits_index: int) -> int:
        return self.runner.rows[logits_index]

    def free(self) -> None:
        pass


class ModelRunner:
    """A fake model: tokens are bytes (0 ends generation). For a prompt it knows
    (``answers``), its greedy continuation is the answer's bytes, then end-of-generation; after
    any other context it predicts POISON. It keeps every sequence's KV contents by position and
    checks that each decode continues them exactly (so a missed rollback fails the test)."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = {q.encode(): a.encode() for q, a in answers.items()}
        self.kv: dict[int, list[int]] = {}
        self.rows: list[int] = []
        self.decodes: list[list[Seg]] = []
        self.forgotten: list[tuple[int, int]] = []

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        return list(text.encode())

    def piece(self, token: int) -> bytes:
        return bytes([token])

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def forget(self, seq: int, from_pos: int = 0) -> None:
        self.forgotten.append((seq, from_pos))
        del self.kv.setdefault(seq, [])[from_pos:]

    def copy(self, src: int, dst: int) -> None:
        self.kv[dst] = list(self.kv.get(src, []))

    def predict(self, context: list[int]) -> int:
        for q, a in self.answers.items():
            if bytes(context[:len(q)]) == q:
                out = bytes(context[len(q):])
                if a.startswith(out):
                    return a[len(out)] if len(out) < len(a) else EOG
        return POISON

    def decode(self, segments: Sequence[Seg]) -> dict[int, int]:
        self.decodes.append(list(segments))
        self.rows = []
        rows: dict[int, int] = {}
        for seg in segments:
            kv = self.kv.setdefault(seg.seq, [])
            assert seg.pos == len(kv), f"seq {seg.seq} fed at {seg.pos}, holds {len(kv)}"
            for j, tok in enumerate(seg.tokens):
                kv.append(tok)
                last = j == len(seg.tokens) - 1
                if seg.all_logits or (seg.wants_logits and last):
                    self.rows.append(self.predict(kv))
                    if last:
                        rows[seg.seq] = len(self.rows) - 1
                elif seg.all_logits is False:
                    pass
        return rows

    def logits_row(self, index: int) -> object:
        raise AssertionError("no logprobs here")

    def sampler(self, params: ResolvedSampling, seed: int) -> GreedyPick:
        return GreedyPick(self)

    def grammar_sampler(self, inner: GreedyPick, grammar: Grammar,
                        param: str | None = None) -> GreedyPick:
        return inner


def job(rid: str, text: str, *, max_tokens: int | None = None, stop: Sequence[str] = (),
        temperature: float = 0.0, speculative: bool | None = None,
        grammar: Grammar | None = None) -> ChatJob:
    return ChatJob(rid, "fe", "key1", "m", [ChatMessage("user", text)],
                   RequestedSampling(max_tokens=max_tokens, temperature=temperature,
                                     stop=list(stop), speculative_decoding=speculative),
                   grammar=grammar)


def engine(runner: ModelRunner, *, speculative: bool = True, budget: int = 64,
           slots: int = 2, ctx: int = 256, draft_max: int = 8,
           step_cost: StepCost | None = None) -> SlotEngine[Seg]:
    return SlotEngine(runner, render=lambda j: j.messages[0].content, n_slots=slots,
                      n_ctx_slot=ctx, token_budget=budget, make_segment=Seg,
                      speculative=speculative, draft_max=draft_max, draft_ngram=3,
                      step_cost=FreeSteps() if step_cost is None else step_cost)


def run(eng: SlotEngine[Seg], limit: int = 500) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for _ in range(limit):
        if not eng.has_work():
            break
        events, _ = eng.step()
        for evs in events.values():
            for ev in evs:
                out.setdefault(ev.request_id, []).append(ev)  # type: ignore[union-attr]
    return out


def text(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def finished(events: list[object]) -> Finished:
    last = events[-1]
    assert isinstance(last, Finished)
    return last


SOURCE = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n"
EDIT = "Repeat it:\n" + SOURCE + "\n---\n"
ANSWER = SOURCE.replace("a - b", "b - a")


def test_output_with_speculation_is_the_greedy_output_in_fewer_steps() -> None:
    results = {}
    for on in (False, True):
        runner = ModelRunner({EDIT: ANSWER})
        eng = engine(runner, speculative=on)
        assert eng.admit(job("a", EDIT))[1]
        events = run(eng)["a"]
        results[on] = (text(events), finished(events), eng.steps, eng.times(0.0))
    assert results[True][0] == results[False][0] == ANSWER
    assert results[True][1] == results[False][1]  # usage and finish_reason too
    assert results[True][2] < results[False][2] / 2
    on_times, off_times = results[True][3], results[False][3]
    assert on_times.tokens == off_times.tokens == len(ANSWER)
    assert off_times.draft_proposed == 0
    assert 0 < on_times.draft_accepted <= on_times.draft_proposed


def test_several_tokens_stream_per_step() -> None:
    runner = ModelRunner({EDIT: ANSWER})
    eng = engine(runner)
    eng.admit(job("a", EDIT))
    counts = []
    while eng.has_work():
        events, _ = eng.step()
        counts.append(sum(e.tokens for e in events.get("fe", [])
                          if isinstance(e, TextDelta)))
    assert max(counts) > 1


def test_rejected_draft_positions_are_rolled_back() -> None:
    runner = ModelRunner({EDIT: ANSWER})
    eng = engine(runner)
    eng.admit(job("a", EDIT))
    run(eng)
    # the answer differs from the prompt's copy at "b - a": a draft there was cut short
    drafted = [(d, seg) for d in runner.decodes for seg in d
               if seg.all_logits and not seg.pos < len(EDIT)]
    assert drafted
    rollbacks = [pos for seq, pos in runner.forgotten if pos > len(EDIT)]
    assert rollbacks  # partially rejected drafts were removed from the cache...
    for pos in rollbacks:  # ...from just after their last accepted token
        assert any(seg.pos < pos < seg.pos + len(seg.tokens) for _, seg in drafted)
    # and each later decode continued the sequence exactly (ModelRunner.decode checks it)


def test_stop_string_inside_an_accepted_draft_ends_there() -> None:
    prompt = "say: alpha beta STOP gamma delta\n---\n"
    runner = ModelRunner({prompt: "alpha beta STOP gamma delta"})
    eng = engine(runner)
    eng.admit(job("a", prompt, stop=["STOP"]))
    events = run(eng)["a"]
    assert text(events) == "alpha beta "
    fin = finished(events)
    assert fin.finish_reason == "stop" and fin.stop_sequence == "STOP"
    assert not any(isinstance(e, TextDelta) for e in events[events.index(fin):])
    # the stop string came inside a draft that was accepted beyond it
    assert eng.draft_accepted > 0


def test_eos_inside_an_accepted_draft_ends_there() -> None:
    prompt = "abcdefgh\x00xyz then abc"
    runner = ModelRunner({prompt: "defgh"})  # then end-of-generation, as in the prompt
    eng = engine(runner)
    eng.admit(job("a", prompt))
    events = run(eng)["a"]
    assert text(events) == "defgh"
    fin = finished(events)
    assert fin.finish_reason == "stop" and fin.completion_tokens == 5
    assert [type(e) for e in events] == [TextDelta] * 5 + [Finished]  # nothing after the end
    assert eng.draft_accepted >= 5  # "defgh" and the end were drafted and accepted


def test_max_tokens_is_never_exceeded_by_a_draft() -> None:
    for limit in range(1, 12):
        runner = ModelRunner({EDIT: ANSWER})
        eng = engine(runner)
        eng.admit(job("a", EDIT, max_tokens=limit))
        events = run(eng)["a"]
        assert text(events) == ANSWER[:limit]
        fin = finished(events)
        assert fin.completion_tokens == limit and fin.finish_reason == "length"
        # nothing was ever fed past the prompt and max_tokens - 1 outputs
        assert all(seg.pos + len(seg.tokens) <= len(EDIT) + limit - 1
                   for d in runner.decodes for seg in d)


def test_a_full_context_limits_the_draft() -> None:
    runner = ModelRunner({EDIT: ANSWER})
    eng = engine(runner, ctx=len(EDIT) + 10)
    eng.admit(job("a", EDIT))
    events = run(eng)["a"]
    assert text(events) == ANSWER[:10] and finished(events).finish_reason == "length"
    assert all(seg.pos + len(seg.tokens) <= len(EDIT) + 10 for d in runner.decodes for seg in d)


def test_cancel_during_a_draft_frees_the_slot_and_the_next_request_is_exact() -> None:
    runner = ModelRunner({EDIT: ANSWER, "other prompt": "xyz"})
    eng = engine(runner, slots=1)
    eng.admit(job("a", EDIT))
    while not any(seg.all_logits and seg.pos >= len(EDIT) for d in runner.decodes for seg in d):
        eng.step()
    assert eng.cancel("a")
    assert eng.busy == 0 and not eng.has_work()
    assert eng.admit(job("b", "other prompt"))[1]
    assert text(run(eng)["b"]) == "xyz"
    assert eng.admit(job("c", EDIT))[1]  # its old prompt again, from the slot's cache
    assert text(run(eng)["c"]) == ANSWER


def test_drafts_never_take_budget_from_another_slot_s_prefill() -> None:
    runner = ModelRunner({EDIT: ANSWER, "x" * 40: "y"})
    eng = engine(runner, budget=12)
    eng.admit(job("a", EDIT))
    run(eng, limit=len(EDIT) // 11 + 4)  # a is decoding (and drafting) by now
    assert eng.draft_proposed > 0
    eng.admit(job("b", "x" * 40))
    b_seq = 1
    while eng.has_work():
        pending = 40 - len(runner.kv.get(b_seq, []))
        eng.step()
        if pending <= 0:
            continue
        chunk = [s for s in runner.decodes[-1] if s.seq == b_seq]
        # b's chunk is what it would be with nobody drafting: all the budget left by the
        # one decode token, up to all but its prompt's last token (which comes alone)
        want = 1 if pending == 1 else min(pending - 1, 12 - 1)
        assert chunk and len(chunk[0].tokens) == want
        drafts = sum(len(s.tokens) - 1 for s in runner.decodes[-1] if s.seq != b_seq)
        assert 1 + drafts + want <= 12


def test_sampled_requests_draft_and_constrained_ones_do_not() -> None:
    runner = ModelRunner({EDIT: ANSWER})
    eng = engine(runner, slots=1)
    eng.admit(job("t", EDIT, temperature=0.7))
    assert text(run(eng)["t"]) == ANSWER  # (the fake's sampler picks its one answer)
    assert eng.draft_accepted > 0
    cases = [job("off", EDIT, speculative=False),
             job("g", EDIT, grammar=Grammar("root ::= [a-z]*"))]
    for case in cases:
        eng = engine(runner, slots=1)
        eng.admit(case)
        run(eng, limit=30)
        assert eng.draft_proposed == 0, case.request_id


def test_a_request_may_turn_speculation_on() -> None:
    runner = ModelRunner({EDIT: ANSWER})
    eng = engine(runner, speculative=False)
    eng.admit(job("on", EDIT, speculative=True))
    assert text(run(eng)["on"]) == ANSWER
    assert eng.draft_accepted > 0


def test_draft_state_is_new_for_every_request() -> None:
    runner = ModelRunner({EDIT: ANSWER, "abc": "zzzzzzzzzzzz"})
    eng = engine(runner, slots=1)
    eng.admit(job("a", EDIT))
    run(eng)
    proposed = eng.draft_proposed
    eng.admit(job("b", "abc"))
    assert text(run(eng)["b"]) == "zzzzzzzzzzzz"
    # b's drafts come from b's own sequence only ("zzz" repeats), never from a's
    assert eng.draft_proposed > proposed
    assert all(set(seg.tokens) <= set(b"abcz") for seg in runner.decodes[-1])


def test_every_choice_drafts_on_its_own() -> None:
    runner = ModelRunner({EDIT: ANSWER})
    eng = engine(runner, slots=2)
    two = msgspec.structs.replace(job("n", EDIT), n=2)
    assert eng.admit(two)[1]
    events = run(eng)["n"]
    for index in (0, 1):
        mine = [e for e in events if getattr(e, "index", None) == index]
        assert text(mine) == ANSWER
        assert finished(mine).completion_tokens == len(ANSWER)
    assert eng.draft_accepted > 0


class Costly(StepCost):
    """Positions that cost ``per`` of a token each: only drafts that are almost sure pay."""

    def __init__(self, per: float) -> None:
        super().__init__()
        self.per = per

    def draft_costs(self, generating: int, k_max: int) -> list[float]:
        return [self.per * k for k in range(k_max + 1)]


def test_drafting_turns_itself_down_when_positions_cost_too_much() -> None:
    from hearth.engine.speculation import PROBE_EVERY

    runner = ModelRunner({EDIT: ANSWER})
    eng = engine(runner, slots=1, step_cost=Costly(0.9))
    eng.admit(job("a", EDIT))
    assert text(run(eng)["a"]) == ANSWER  # the output does not change
    # at the prior acceptance (0.8) nothing pays: only a probe now and then, as long as it
    # would pay at 0.95 acceptance (0.95 and 0.95**2 beat 0.9, 0.95**3 does not)
    drafted = [i for i, step in enumerate(runner.decodes) if any(s.all_logits for s in step)]
    assert drafted and drafted[0] >= PROBE_EVERY
    assert [len(s.tokens) for s in runner.decodes[drafted[0]]] == [3]  # decode token + 2
    free = ModelRunner({EDIT: ANSWER})
    eng_free = engine(free, slots=1)
    eng_free.admit(job("a", EDIT))
    run(eng_free)
    assert eng_free.draft_proposed > eng.draft_proposed


def test_no_probe_where_even_a_verbatim_copy_would_not_pay() -> None:
    runner = ModelRunner({EDIT: ANSWER})
    eng = engine(runner, slots=1, step_cost=Costly(0.97))
    eng.admit(job("a", EDIT))
    assert text(run(eng)["a"]) == ANSWER
    assert eng.draft_proposed == 0


def test_the_engine_measures_its_decode_steps() -> None:
    runner = ModelRunner({EDIT: ANSWER})
    cost = StepCost()
    eng = engine(runner, slots=1, step_cost=cost)
    eng.admit(job("a", EDIT))
    run(eng)
    assert cost.fit() != (cost.prior, 1.0)  # decode-only steps were observed


def test_steps_with_drafts_beside_other_slots_are_not_taken_as_one_pass() -> None:
    """StepCost models one pass of the model: a decode-only step without drafts, or one slot
    with its draft. Beside other slots a draft is a ubatch of its own (StepCost.draft_costs),
    so such a step's time says nothing about a step of as many one-token slots."""
    runner = ModelRunner({EDIT: ANSWER})

    class Recording(FreeSteps):  # drafts granted freely; which steps were observed
        steps: list[list[Seg]] = []

        def observe(self, positions: int, seconds: float) -> None:
            self.steps.append(runner.decodes[-1])

    cost = Recording()
    eng = engine(runner, slots=2, step_cost=cost)
    eng.admit(job("a", EDIT))
    eng.admit(job("b", EDIT))
    out = run(eng)
    assert text(out["a"]) == text(out["b"]) == ANSWER
    side_by_side = [d for d in runner.decodes
                    if len(d) > 1 and any(seg.all_logits for seg in d)]
    assert side_by_side  # both slots drafted in one step
    assert cost.steps and all(
        len(d) == 1 or all(len(seg.tokens) == 1 for seg in d) for d in cost.steps)
    assert not any(d in side_by_side for d in cost.steps)


def test_only_a_slot_generating_alone_probes() -> None:
    """Beside another slot a draft is a pass of its own: where acceptance does not pay for
    it, no probe is sent either (alone, the probe test above drafts)."""
    runner = ModelRunner({EDIT: ANSWER})
    eng = engine(runner, slots=2, step_cost=Costly(0.9))
    eng.admit(job("a", EDIT))
    eng.admit(job("b", EDIT))
    out = run(eng)
    assert text(out["a"]) == text(out["b"]) == ANSWER  # side by side to the end
    assert eng.draft_proposed == 0
