"""SlotEngine (the worker's step loop body) over a fake runner: no model, milliseconds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from hearth.engine.ram_cache import RamCache
from hearth.engine.slots import SlotEngine
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import (
    ChatJob,
    ChatMessage,
    Failed,
    Finished,
    RamCacheStats,
    RequestedSampling,
    ResolvedSampling,
    Started,
    TextDelta,
)
from hearth.scheduler.policy import Phase
from hearth.scheduler.prefix_blocks import prefix_blocks, split

EOG = 0


@dataclass(frozen=True)
class Seg:
    seq: int
    tokens: Sequence[int]
    pos: int
    wants_logits: bool
    all_logits: bool = False


class ScriptedSampler:
    """Returns the next token of a script; the script is the 'model output' of one request."""

    threaded = True

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.freed = False

    def sample(self, logits_index: int) -> int:
        return self.script.pop(0) if self.script else EOG

    def free(self) -> None:
        self.freed = True


class FakeRunner:
    """Tokens are byte values (1..255), token 0 is end-of-generation. Records every decode."""

    def __init__(self, scripts: dict[int | None, list[int]]) -> None:
        self.scripts = scripts  # by seed
        self.decodes: list[list[Seg]] = []
        self.forgotten: list[tuple[int, int]] = []
        self.copies: list[tuple[int, int]] = []
        self.samplers: list[ScriptedSampler] = []

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        return list(text.encode())

    def piece(self, token: int) -> bytes:
        return bytes([token])

    def is_eog(self, token: int) -> bool:
        return token == EOG

    def forget(self, seq: int, from_pos: int = 0) -> None:
        self.forgotten.append((seq, from_pos))

    def copy(self, src: int, dst: int) -> None:
        self.copies.append((src, dst))

    def decode(self, segments: Sequence[object]) -> dict[int, int]:
        segs = [s for s in segments if isinstance(s, Seg)]
        self.decodes.append(segs)
        return {s.seq: i for i, s in enumerate(segs) if s.wants_logits}

    def sampler(self, params: ResolvedSampling, seed: int) -> ScriptedSampler:
        s = ScriptedSampler(self.scripts.get(params.seed, []))
        self.samplers.append(s)
        return s


def submit(rid: str, text: str, *, seed: int, max_tokens: int | None = None,
           stop: list[str] | None = None, frontend: str = "fe") -> ChatJob:
    return ChatJob(rid, frontend, "key1", "m", [ChatMessage("user", text)],
                   RequestedSampling(max_tokens=max_tokens, seed=seed, stop=stop or []))


def engine(runner: FakeRunner, *, slots: int = 2, ctx: int = 64,
           budget: int = 8) -> SlotEngine:
    return SlotEngine(runner, render=lambda s: s.messages[0].content, n_slots=slots,
                      n_ctx_slot=ctx, token_budget=budget, make_segment=Seg)


def run_to_end(eng: SlotEngine, limit: int = 200) -> dict[str, list[object]]:
    out: dict[str, list[object]] = {}
    for _ in range(limit):
        if not eng.has_work():
            break
        events, _ended = eng.step()
        for evs in events.values():
            for ev in evs:
                out.setdefault(ev.request_id, []).append(ev)  # type: ignore[union-attr]
    return out


def text_of(events: list[object]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def test_generates_until_eog_and_reports_usage() -> None:
    runner = FakeRunner({1: list(b"hi!")})
    eng = engine(runner)
    events, ok = eng.admit(submit("a", "hello", seed=1))
    assert ok and events == [Started("a", 5, 0)]
    out = run_to_end(eng)["a"]
    assert text_of(out) == "hi!"
    fin = out[-1]
    assert isinstance(fin, Finished)
    assert (fin.finish_reason, fin.prompt_tokens, fin.completion_tokens) == ("stop", 5, 3)
    assert sum(e.tokens for e in out if isinstance(e, TextDelta)) == 3
    assert runner.samplers[0].freed and not eng.has_work()


def test_counts_steps_tokens_and_time() -> None:
    eng = engine(FakeRunner({1: list(b"abcd")}))
    eng.admit(submit("a", "hello", seed=1, max_tokens=3))
    run_to_end(eng)
    times = eng.times(busy_s=1.0)
    # the prompt but its last token, that token alone (the first sample), then two decodes
    assert (times.steps, times.tokens) == (4, 3)
    assert times.decode_s > 0 and times.sample_s > 0 and times.busy_s == 1.0


def test_max_tokens_gives_length() -> None:
    eng = engine(FakeRunner({1: list(b"abcdefgh")}))
    eng.admit(submit("a", "x", seed=1, max_tokens=3))
    out = run_to_end(eng)["a"]
    assert text_of(out) == "abc"
    assert isinstance(out[-1], Finished) and out[-1].finish_reason == "length"


def test_context_full_gives_length() -> None:
    eng = engine(FakeRunner({1: list(b"a" * 100)}), ctx=10)
    eng.admit(submit("a", "12345", seed=1))
    out = run_to_end(eng)["a"]
    fin = out[-1]
    assert isinstance(fin, Finished) and fin.finish_reason == "length"
    assert fin.prompt_tokens + fin.completion_tokens == 10


def test_prompt_too_long_is_context_length_exceeded() -> None:
    eng = engine(FakeRunner({}), ctx=4)
    events, ok = eng.admit(submit("a", "too long", seed=1))
    assert not ok
    (ev,) = events
    assert isinstance(ev, Failed) and ev.kind == "ContextLengthExceeded"
    assert ev.param == "messages"
    assert not eng.has_work()


def test_stop_string_split_across_tokens_never_streams() -> None:
    eng = engine(FakeRunner({1: list(b"one two STOP three")}))
    eng.admit(submit("a", "x", seed=1, stop=["STOP"]))
    out = run_to_end(eng)["a"]
    assert text_of(out) == "one two "
    assert isinstance(out[-1], Finished) and out[-1].finish_reason == "stop"
    # every token that was generated is counted, including those of the stop string
    assert out[-1].completion_tokens == len("one two STOP")


def test_utf8_split_across_tokens_is_emitted_whole() -> None:
    eng = engine(FakeRunner({1: list("é😀".encode())}))
    eng.admit(submit("a", "x", seed=1))
    out = run_to_end(eng)["a"]
    texts = [e.text for e in out if isinstance(e, TextDelta)]
    assert "".join(texts) == "é😀"
    assert all("\ufffd" not in t for t in texts)


class SpecialRunner(FakeRunner):
    """Token 200 is a special token "[TOOL_CALLS]" whose piece is nothing (as llama.cpp writes
    control tokens without special rendering)."""

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        return [200] if text == "[TOOL_CALLS]" else super().tokenize(text, add_bos=add_bos)

    def piece(self, token: int) -> bytes:
        return b"" if token == 200 else super().piece(token)


def test_shown_special_tokens_stream_as_their_text() -> None:
    script = [*b"ok ", 200, *b"{}"]
    eng = engine(SpecialRunner({1: script, 2: script}))
    job = submit("a", "x", seed=1)
    eng.admit(msgspec.structs.replace(job, shown_tokens=["[TOOL_CALLS]", "[ARGS]"]))
    eng.admit(submit("b", "x", seed=2))
    out = run_to_end(eng)
    assert text_of(out["a"]) == "ok [TOOL_CALLS]{}"
    assert text_of(out["b"]) == "ok {}"  # not asked: written as nothing


def test_long_prompt_is_prefilled_in_chunks_while_others_decode() -> None:
    runner = FakeRunner({1: list(b"a" * 30), 2: list(b"b" * 5)})
    eng = engine(runner, budget=4)
    eng.admit(submit("a", "go", seed=1))
    run_steps = 0
    while runner.decodes == [] or any(s.pos == 0 for s in runner.decodes[-1]):
        eng.step()
        run_steps += 1
    eng.admit(submit("b", "x" * 10, seed=2))
    for _ in range(3):
        eng.step()
        batch = runner.decodes[-1]
        assert sum(len(s.tokens) for s in batch) <= 4 + 1
        decode = [s for s in batch if s.seq == 0]
        assert decode and len(decode[0].tokens) == 1  # the running stream got its token
    prefill = [s for d in runner.decodes[-3:] for s in d if s.seq == 1]
    assert [len(s.tokens) for s in prefill] == [3, 3, 3]
    assert [s.wants_logits for s in prefill] == [False, False, False]


SYSTEM = "a system prompt longer than REUSE_MIN tokens: "


def test_prefix_of_a_finished_request_is_reused() -> None:
    runner = FakeRunner({1: list(b"ok"), 2: list(b"ok")})
    eng = engine(runner, slots=1, ctx=128)
    eng.admit(submit("a", SYSTEM + "hi", seed=1))
    run_to_end(eng)
    events, _ = eng.admit(submit("b", SYSTEM + "bye", seed=2))
    (started,) = events
    assert isinstance(started, Started)
    assert started.cached_tokens == len(SYSTEM)
    assert runner.forgotten[-1] == (0, len(SYSTEM))
    fin = run_to_end(eng)["b"][-1]
    assert isinstance(fin, Finished) and fin.cached_tokens == len(SYSTEM)
    assert fin.prompt_tokens == len(SYSTEM + "bye")


def test_a_prefix_shorter_than_reuse_min_is_evaluated_again() -> None:
    """Sharing "system prompt: " (15 tokens) is not worth leaving the cold path for."""
    runner = FakeRunner({1: list(b"ok"), 2: list(b"ok")})
    eng = engine(runner, slots=1)
    eng.admit(submit("a", "system prompt: hi", seed=1))
    run_to_end(eng)
    events, _ = eng.admit(submit("b", "system prompt: bye", seed=2))
    (started,) = events
    assert isinstance(started, Started) and started.cached_tokens == 0
    assert runner.forgotten[-1] == (0, 0)


def test_two_apps_taking_turns_keep_their_conversations_cached() -> None:
    """A request with nothing cached takes an empty (else the least recently used) slot, not
    the one holding another app's conversation, so each app's next turn finds its own."""
    runner = FakeRunner({i: list(b"ok") for i in range(1, 5)})
    eng = engine(runner, slots=4, ctx=256)
    a1 = "app A, a conversation, turn one. " * 2
    b1 = "app B: a question that has nothing to do with A. " * 2
    for rid, text, seed in (("a1", a1, 1), ("b1", b1, 2)):
        eng.admit(submit(rid, text, seed=seed))
        run_to_end(eng)
    for rid, text, seed in (("a2", a1 + "ok, and turn two", 3), ("b2", b1 + "ok; more", 4)):
        (started,), _ = eng.admit(submit(rid, text, seed=seed))
        assert isinstance(started, Started)
        assert started.cached_tokens == len(text.split("ok")[0]) + 2, rid
        run_to_end(eng)


def test_requests_running_together_take_neighbouring_slots() -> None:
    """After a burst has left a cache in every slot, requests that run at the same time still
    sit next to each other (llama.cpp attends over every slot between the lowest and the
    highest busy one)."""
    runner = FakeRunner({i: list(b"abc") for i in range(1, 9)})
    eng = engine(runner, slots=4)
    for i in range(4):
        eng.admit(submit(f"burst{i}", f"burst prompt number {i}", seed=i + 1))
    run_to_end(eng)
    before = len(runner.decodes)
    for i in range(3):
        eng.admit(submit(f"next{i}", f"another prompt {i}", seed=5 + i))
    run_to_end(eng)
    seqs = sorted({seg.seq for segs in runner.decodes[before:] for seg in segs})
    assert seqs == list(range(seqs[0], seqs[0] + 3))


def test_cancel_frees_the_slot() -> None:
    runner = FakeRunner({1: list(b"a" * 50)})
    eng = engine(runner, slots=1)
    eng.admit(submit("a", "x", seed=1))
    eng.step()
    assert eng.busy == 1
    assert eng.cancel("a")
    assert eng.busy == 0 and not eng.has_work()
    assert runner.samplers[0].freed
    assert not eng.cancel("a")
    _, ok = eng.admit(submit("b", "y", seed=1))
    assert ok


def test_full_worker_refuses_admission() -> None:
    eng = engine(FakeRunner({}), slots=1)
    eng.admit(submit("a", "x", seed=1))
    events, ok = eng.admit(submit("b", "y", seed=1))
    assert not ok and isinstance(events[0], Failed) and events[0].kind == "Overloaded"


def test_events_grouped_by_frontend_one_list_per_step() -> None:
    eng = engine(FakeRunner({1: list(b"abc"), 2: list(b"xyz")}))
    eng.admit(submit("a", "p", seed=1, frontend="f1"))
    eng.admit(submit("b", "q", seed=2, frontend="f2"))
    events, _ = eng.step()
    assert set(events) == {"f1", "f2"}
    assert all(ev.request_id == "a" for ev in events["f1"])


def test_decode_failure_fails_only_that_step_s_requests() -> None:
    class Refusing(FakeRunner):
        def decode(self, segments: Sequence[object]) -> dict[int, int]:
            raise RuntimeError("llama_decode failed with status 1")

    eng = engine(Refusing({1: list(b"abc")}))
    eng.admit(submit("a", "p", seed=1))
    events, ended = eng.step()
    assert ended == ["a"]
    (ev,) = events["fe"]
    assert isinstance(ev, Failed) and ev.kind == "InternalError"
    assert not eng.has_work()


def test_shared_prefix_is_copied_from_a_busy_slot() -> None:
    system = "You are a helpful assistant. " * 4  # 116 tokens in the fake tokenizer
    runner = FakeRunner({1: list(b"a" * 50), 2: list(b"ok")})
    eng = engine(runner, slots=2, budget=512, ctx=512)
    eng.admit(submit("a", system + "first question", seed=1))
    eng.step()  # all but the last prompt token
    eng.step()  # a's prompt is now cached in slot 0, and a keeps generating
    events, _ = eng.admit(submit("b", system + "second one", seed=2))
    (started,) = events
    assert isinstance(started, Started)
    shared = len(system)
    assert started.cached_tokens == shared
    assert runner.copies == [(0, 1)]
    assert runner.forgotten[-1] == (1, shared)
    eng.step()
    prefill = [s for s in runner.decodes[-1] if s.seq == 1]
    assert prefill[0].pos == shared and bytes(prefill[0].tokens) == b"second on"
    eng.step()
    (last,) = [s for s in runner.decodes[-1] if s.seq == 1]
    assert bytes(last.tokens) == b"e" and last.wants_logits


def test_small_shared_prefix_is_not_worth_a_copy() -> None:
    runner = FakeRunner({1: list(b"a" * 50), 2: list(b"ok")})
    eng = engine(runner, slots=2, budget=512)
    eng.admit(submit("a", "short shared first", seed=1))
    eng.step()
    events, _ = eng.admit(submit("b", "short shared second", seed=2))
    assert runner.copies == []
    assert isinstance(events[0], Started) and events[0].cached_tokens == 0


def test_simultaneous_shared_prefix_is_evaluated_once() -> None:
    """Requests with one long system prompt arriving together: the first evaluates it, the
    others wait and copy it instead of evaluating it too."""
    system = "You are a helpful assistant. " * 4
    runner = FakeRunner({1: list(b"a" * 5), 2: list(b"b" * 5), 3: list(b"c" * 5)})
    eng = engine(runner, slots=3, budget=64, ctx=512)
    for i, seed in enumerate((1, 2, 3)):
        _, ok = eng.admit(submit(f"r{i}", system + f"question {i}", seed=seed))
        assert ok
    out = run_to_end(eng)
    shared = len(system + "question ")
    prefilled = {seq: sum(min(len(s.tokens), shared - s.pos) for d in runner.decodes for s in d
                          if s.seq == seq and s.pos < shared) for seq in range(3)}
    assert prefilled[0] == shared  # evaluated once...
    assert prefilled[1] == 0 and prefilled[2] == 0  # ...and copied by the others
    assert sorted(runner.copies) == [(0, 1), (0, 2)]
    for i in (1, 2):
        fin = out[f"r{i}"][-1]
        assert isinstance(fin, Finished) and fin.cached_tokens == shared
        assert text_of(out[f"r{i}"]) == "bc"[i - 1] * 5


def test_waiting_request_evaluates_itself_if_the_donor_is_cancelled() -> None:
    system = "You are a helpful assistant. " * 4
    runner = FakeRunner({1: list(b"a" * 5), 2: list(b"b" * 5)})
    eng = engine(runner, slots=2, budget=16, ctx=512)
    eng.admit(submit("r0", system + "one", seed=1))
    eng.admit(submit("r1", system + "two", seed=2))
    eng.step()  # r0 evaluated 16 tokens of the prefix; r1 waits
    assert eng.cancel("r0")
    out = run_to_end(eng)
    fin = out["r1"][-1]
    assert isinstance(fin, Finished) and fin.finish_reason == "stop"
    assert text_of(out["r1"]) == "bbbbb"
    assert fin.cached_tokens == 0  # 16 tokens were not worth a copy


def test_sampling_threads_give_the_same_results() -> None:
    def run(threads: int) -> dict[str, str]:
        runner = FakeRunner({i: list(f"reply {i} ".encode() * 3) for i in range(4)})
        eng = SlotEngine(runner, render=lambda s: s.messages[0].content, n_slots=4,
                         n_ctx_slot=256, token_budget=64, make_segment=Seg,
                         sample_threads=threads)
        for i in range(4):
            eng.admit(submit(f"r{i}", f"prompt {i}", seed=i))
        out = run_to_end(eng)
        eng.close()
        return {rid: text_of(events) for rid, events in out.items()}

    threaded = run(2)
    assert threaded == run(1)
    assert threaded["r3"] == "reply 3 " * 3
    ScriptedSampler.threaded = False  # quick samplers run inline: the same results again
    try:
        assert run(2) == threaded
    finally:
        ScriptedSampler.threaded = True


def test_phase_moves_from_prefill_to_decode_to_finished() -> None:
    runner = FakeRunner({1: list(b"xy")})
    eng = engine(runner, budget=4)
    eng.admit(submit("a", "0123456789", seed=1))
    req = eng._by_id["a"][0].req  # held past its end: the engine drops it when it finishes
    assert req is not None
    assert eng.phases() == {"a": Phase.PREFILL}
    seen_at_sampling: list[Phase] = []
    sampler = runner.samplers[0]
    sample = sampler.sample

    def watched(row: int) -> int:
        seen_at_sampling.append(eng.phases()["a"])
        return sample(row)

    sampler.sample = watched  # type: ignore[method-assign,assignment]
    eng.step()
    eng.step()
    assert eng.phases() == {"a": Phase.PREFILL}  # 8 of 10 prompt tokens evaluated
    eng.step()  # the 9th: a prompt's last token comes alone
    assert eng.phases() == {"a": Phase.PREFILL}
    assert seen_at_sampling == []
    eng.step()  # the last prompt token, then its first token
    assert seen_at_sampling == [Phase.DECODE]
    assert eng.phases() == {"a": Phase.DECODE}
    eng.step()
    assert eng.phases() == {"a": Phase.DECODE}
    _, ended = eng.step()  # end of generation
    assert ended == ["a"] and eng.phases() == {}
    assert req.phase is Phase.FINISHED


def test_cancelled_and_failed_requests_are_finished() -> None:
    class Refusing(FakeRunner):
        def decode(self, segments: Sequence[object]) -> dict[int, int]:
            raise RuntimeError("llama_decode failed with status 1")

    eng = engine(Refusing({}))
    eng.admit(submit("a", "p", seed=1))
    eng.admit(submit("b", "q", seed=2))
    a, b = eng._by_id["a"][0].req, eng._by_id["b"][0].req
    assert a is not None and b is not None
    eng.cancel("a")
    assert a.phase is Phase.FINISHED and eng.phases() == {"b": Phase.PREFILL}
    eng.step()
    assert b.phase is Phase.FINISHED and eng.phases() == {}


def test_a_request_waiting_for_a_copy_prefills_once_it_is_resolved() -> None:
    system = "You are a helpful assistant. " * 4  # 116 tokens
    runner = FakeRunner({1: list(b"a" * 5), 2: list(b"b" * 5)})
    eng = engine(runner, slots=2, budget=64, ctx=512)
    eng.admit(submit("r0", system + "one", seed=1))
    eng.admit(submit("r1", system + "two", seed=2))
    assert eng.phases() == {"r0": Phase.PREFILL, "r1": Phase.WAIT_COPY}
    eng.step()  # r0: 64 of its prompt tokens; r1 gets no work while it waits
    assert eng.phases() == {"r0": Phase.PREFILL, "r1": Phase.WAIT_COPY}
    assert all(s.seq == 0 for s in runner.decodes[-1])
    eng.step()  # r0 has the prefix now (all its prompt but the last token)
    assert eng.phases() == {"r0": Phase.PREFILL, "r1": Phase.WAIT_COPY}
    eng.step()  # r1 copies it at the start of the step and prefills the rest but one token
    assert runner.copies == [(0, 1)]
    assert eng.phases() == {"r0": Phase.DECODE, "r1": Phase.PREFILL}
    eng.step()
    assert eng.phases() == {"r0": Phase.DECODE, "r1": Phase.DECODE}


def test_a_waiting_request_prefills_itself_when_its_donor_is_cancelled() -> None:
    system = "You are a helpful assistant. " * 4
    runner = FakeRunner({1: list(b"a" * 5), 2: list(b"b" * 5)})
    eng = engine(runner, slots=2, budget=16, ctx=512)
    eng.admit(submit("r0", system + "one", seed=1))
    eng.admit(submit("r1", system + "two", seed=2))
    eng.step()
    assert eng.cancel("r0")
    assert eng.phases() == {"r1": Phase.WAIT_COPY}
    eng.step()
    assert eng.phases() == {"r1": Phase.PREFILL}
    assert runner.copies == []  # 16 tokens were not worth a copy


def test_logit_bias_outside_the_vocabulary_is_refused_by_the_worker() -> None:
    runner = FakeRunner({})
    eng = SlotEngine(runner, render=lambda s: s.messages[0].content, n_slots=1, n_ctx_slot=64,
                     token_budget=8, make_segment=Seg, n_vocab=256)
    job = ChatJob("r1", "fe", "key1", "m", [ChatMessage("user", "hi")],
                  RequestedSampling(logit_bias={5: 1.0, 256: -3.0}))
    (ev,), ok = eng.admit(job)
    assert not ok and isinstance(ev, Failed)
    assert ev.kind == "InvalidRequest" and ev.param == "logit_bias"
    assert "256" in ev.message and "256 tokens" in ev.message
    assert runner.decodes == [] and not eng.has_work()
    good = ChatJob("r2", "fe", "key1", "m", [ChatMessage("user", "hi")],
                   RequestedSampling(logit_bias={255: 1.0}))
    assert eng.admit(good)[1]


# ---- n choices (ChatJob.n) ----------------------------------------------------------------------


def choices_job(rid: str, text: str, n: int, *, seed: int | None = 10,
                max_tokens: int | None = None) -> ChatJob:
    return ChatJob(rid, "fe", "key1", "m", [ChatMessage("user", text)],
                   RequestedSampling(max_tokens=max_tokens, seed=seed), n=n)


def by_choice(events: list[object]) -> dict[int, list[object]]:
    out: dict[int, list[object]] = {}
    for ev in events:
        if isinstance(ev, (TextDelta, Finished)):
            out.setdefault(ev.index, []).append(ev)
    return out


def test_n_choices_evaluate_the_prompt_once_and_copy_its_cache() -> None:
    """The seq-copy plan: choice 0 evaluates all but the prompt's last token; the other
    choices copy its cache, then each evaluates the last token in the same step as choice 0
    and samples with its own sampler (seed + i)."""
    prompt = "a prompt of some forty tokens, give or take"
    runner = FakeRunner({10: list(b"xx"), 11: list(b"yyy"), 12: list(b"z")})
    eng = engine(runner, slots=4, budget=16, ctx=256)
    events, ok = eng.admit(choices_job("r", prompt, 3))
    assert ok and events == [Started("r", len(prompt), 0)]
    assert set(eng.choice_phases("r").values()) == {Phase.PREFILL, Phase.WAIT_COPY}
    out = run_to_end(eng)["r"]
    choice0 = next(seq for seq in range(4) if any(s.seq == seq and s.pos == 0 and len(s.tokens) > 1
                                                   for d in runner.decodes for s in d))
    others = sorted(dst for src, dst in runner.copies)
    assert [src for src, _ in runner.copies] == [choice0, choice0] and len(others) == 2
    # the prompt but its last token was fed once, to choice 0's sequence only
    prompt_fed = {seq: sum(len(s.tokens) for d in runner.decodes for s in d
                           if s.seq == seq and s.pos < len(prompt)) for seq in range(4)}
    assert prompt_fed[choice0] == len(prompt)
    assert all(prompt_fed[seq] == 1 for seq in others)  # the last token, each its own
    last_step = next(d for d in runner.decodes if any(s.seq == choice0 and
                                                      s.pos == len(prompt) - 1 for s in d))
    assert sorted(s.seq for s in last_step) == sorted([choice0, *others])
    assert all(s.pos == len(prompt) - 1 and s.wants_logits for s in last_step)
    texts = {i: text_of(evs) for i, evs in by_choice(out).items()}
    assert texts == {0: "xx", 1: "yyy", 2: "z"}  # seeds 10, 11, 12
    fins = [ev for ev in out if isinstance(ev, Finished)]
    assert sorted(f.index for f in fins) == [0, 1, 2]
    assert all(f.prompt_tokens == len(prompt) and f.cached_tokens == 0 for f in fins)
    assert {f.index: f.completion_tokens for f in fins} == {0: 2, 1: 3, 2: 1}
    assert all(s.freed for s in runner.samplers) and not eng.has_work()


def test_a_request_ends_after_its_last_choice() -> None:
    runner = FakeRunner({10: list(b"a"), 11: list(b"bbbb")})
    eng = engine(runner, slots=2, budget=16)
    eng.admit(choices_job("r", "hello", 2))
    ended: list[str] = []
    finished: list[int] = []
    while eng.has_work():
        events, done = eng.step()
        finished += [e.index for evs in events.values() for e in evs if isinstance(e, Finished)]
        if done:
            assert finished == [0, 1]  # not after choice 0 alone
        ended += done
    assert ended == ["r"]


def test_without_a_seed_each_choice_gets_its_own_random_seed() -> None:
    seeds: list[int] = []

    class Recording(FakeRunner):
        def sampler(self, params: ResolvedSampling, seed: int) -> ScriptedSampler:
            seeds.append(seed)
            return super().sampler(params, seed)

    eng = engine(Recording({}), slots=3)
    eng.admit(choices_job("r", "hi", 3, seed=None))
    assert len(seeds) == 3 and len(set(seeds)) == 3


def test_cancel_frees_every_choice() -> None:
    runner = FakeRunner({10: list(b"a" * 30), 11: list(b"b" * 30), 12: list(b"c" * 30)})
    eng = engine(runner, slots=3, budget=16)
    eng.admit(choices_job("r", "hello there", 3))
    for _ in range(3):
        eng.step()
    assert eng.busy == 1 and len(eng.choice_phases("r")) == 3
    assert eng.cancel("r")
    assert not eng.has_work() and eng.choice_phases("r") == {}
    assert all(s.freed for s in runner.samplers)
    events, ok = eng.admit(choices_job("s", "again", 3))  # all three slots are free again
    assert ok


def test_n_choices_need_n_free_slots() -> None:
    eng = engine(FakeRunner({}), slots=2)
    events, ok = eng.admit(choices_job("r", "hello", 3))
    assert not ok and isinstance(events[0], Failed) and events[0].kind == "Overloaded"


def test_one_choice_s_sampling_error_fails_the_request_once() -> None:
    class Failing(ScriptedSampler):
        def sample(self, logits_index: int) -> int:
            raise InvalidRequest("the grammar allows no token", param="response_format")

    class Runner(FakeRunner):
        def sampler(self, params: ResolvedSampling, seed: int) -> ScriptedSampler:
            s = Failing([]) if params.seed == 11 else ScriptedSampler(list(b"aaaa"))
            self.samplers.append(s)
            return s

    runner = Runner({})
    eng = engine(runner, slots=3, budget=16)
    eng.admit(choices_job("r", "hello", 3))
    ended: list[str] = []
    out: list[object] = []
    while eng.has_work():
        events, done = eng.step()
        out += events.get("fe", [])
        ended += done
    assert ended == ["r"]
    failed = [e for e in out if isinstance(e, Failed)]
    assert len(failed) == 1 and failed[0].param == "response_format"
    assert not any(isinstance(e, Finished) for e in out)
    assert all(s.freed for s in runner.samplers)


def test_a_one_token_prompt_is_evaluated_by_each_choice() -> None:
    runner = FakeRunner({10: list(b"a"), 11: list(b"b")})
    eng = engine(runner, slots=2)
    eng.admit(choices_job("r", "x", 2))
    out = run_to_end(eng)["r"]
    assert runner.copies == []
    assert {i: text_of(evs) for i, evs in by_choice(out).items()} == {0: "a", 1: "b"}


def test_the_cache_summary_names_what_the_slots_hold() -> None:
    """cache_summary: each held job's prefix-block hashes once, sorted; a slot whose cache is
    dropped (a failed decode) adds nothing."""
    runner = FakeRunner({i: list(b"ok") for i in range(1, 4)})
    eng = engine(runner, slots=2, ctx=256)
    assert eng.cache_summary() == b""
    a, b = submit("a", "conversation A " * 5, seed=1), submit("b", "conversation B " * 5, seed=2)
    for job in (a, b):
        eng.admit(job)
        run_to_end(eng)
    want = sorted(split(prefix_blocks(a)) + split(prefix_blocks(b)))
    assert eng.cache_summary() == b"".join(want)
    eng.admit(submit("c", "conversation C " * 5, seed=3))  # evicts the least recently used (a)
    run_to_end(eng)
    c = submit("c", "conversation C " * 5, seed=3)
    assert eng.cache_summary() == b"".join(sorted(split(prefix_blocks(b)) +
                                                  split(prefix_blocks(c))))


# ---- the host-RAM prompt cache ----------------------------------------------------------------


class KVRunner(FakeRunner):
    """FakeRunner that keeps each sequence's KV as the list of tokens it holds, saves a state
    as those tokens' bytes and restores it (or refuses one when ``refuse`` is set)."""

    def __init__(self, scripts: dict[int | None, list[int]]) -> None:
        super().__init__(scripts)
        self.kv: dict[int, list[int]] = {}
        self.saved: list[int] = []  # seqs saved
        self.restored: list[int] = []  # seqs restored into
        self.refuse = False

    def forget(self, seq: int, from_pos: int = 0) -> None:
        super().forget(seq, from_pos)
        del self.kv.setdefault(seq, [])[from_pos:]

    def copy(self, src: int, dst: int) -> None:
        super().copy(src, dst)
        self.kv[dst] = list(self.kv.get(src, []))

    def decode(self, segments: Sequence[object]) -> dict[int, int]:
        for s in segments:
            if isinstance(s, Seg):
                kv = self.kv.setdefault(s.seq, [])
                assert len(kv) == s.pos, (s.seq, kv, s.pos)  # positions follow what is cached
                kv.extend(s.tokens)
        return super().decode(segments)

    def save_state(self, seq: int) -> bytes:
        self.saved.append(seq)
        return bytes(self.kv.get(seq, []))

    def restore_state(self, seq: int, data: bytes | bytearray) -> bool:
        self.restored.append(seq)
        self.kv[seq] = [] if self.refuse else list(data)
        return not self.refuse


def ram_engine(runner: FakeRunner, *, slots: int = 1, cap: int = 10_000) -> SlotEngine:
    return SlotEngine(runner, render=lambda s: s.messages[0].content, n_slots=slots,
                      n_ctx_slot=256, token_budget=64, make_segment=Seg,
                      ram_cache=RamCache(cap))


CONVERSATION = "a conversation long enough to be worth keeping in RAM: " * 2  # 110 tokens


def finished(events: list[object]) -> Finished:
    fin = events[-1]
    assert isinstance(fin, Finished)
    return fin


def test_a_conversation_pushed_out_of_its_slot_is_restored_on_its_next_turn() -> None:
    runner = KVRunner({1: list(b"ok"), 2: list(b"no"), 3: list(b"ok")})
    eng = ram_engine(runner)
    eng.admit(submit("a", CONVERSATION, seed=1))
    run_to_end(eng)
    first = runner.kv[0][:]  # the prompt and the answer (but its EOG)
    eng.admit(submit("b", "something else entirely, as long as it needs to be to count", seed=2))
    assert runner.saved == [0]  # saved before b overwrote it
    run_to_end(eng)
    stats = eng.ram_stats()
    assert (stats.entries, stats.bytes, stats.saves) == (1, len(first), 1)

    turn = CONVERSATION + "ok and then?"
    started, _ = eng.admit(submit("c", turn, seed=3))
    assert runner.restored == [0]
    assert runner.saved == [0, 0]  # b's conversation went to RAM before the restore
    assert started == [Started("c", len(turn), len(first))]
    fin = finished(run_to_end(eng)["c"])
    assert fin.cached_tokens == len(first)  # the restored tokens count as cached
    assert runner.kv[0][:len(turn)] == list(turn.encode())  # and only the rest was evaluated
    stats = eng.ram_stats()
    assert (stats.hits, stats.misses, stats.failures) == (1, 2, 0)
    assert stats.restore_s > 0
    # c's slot now holds all of the saved conversation: the state was dropped from RAM
    assert stats.entries == 1 and stats.bytes < len(first)


def test_a_restore_keeps_only_the_shared_prefix() -> None:
    runner = KVRunner({})
    eng = ram_engine(runner)
    eng.admit(submit("a", CONVERSATION + "first branch of it", seed=1))
    run_to_end(eng)
    eng.admit(submit("b", "x" * 60, seed=2))
    run_to_end(eng)
    other = CONVERSATION + "second branch"
    started, _ = eng.admit(submit("c", other, seed=3))
    shared = len(CONVERSATION)
    assert started == [Started("c", len(other), shared)]
    assert runner.forgotten[-1] == (0, shared)
    run_to_end(eng)
    assert runner.kv[0][:len(other)] == list(other.encode())
    # the saved state still holds the first branch (not all of it is in the slot)
    assert eng.ram_stats().entries == 2


def test_a_refused_restore_falls_back_to_a_cold_evaluation() -> None:
    runner = KVRunner({3: list(b"fine")})
    eng = ram_engine(runner)
    eng.admit(submit("a", CONVERSATION, seed=1))
    run_to_end(eng)
    eng.admit(submit("b", "y" * 60, seed=2))
    run_to_end(eng)
    runner.refuse = True
    started, ok = eng.admit(submit("c", CONVERSATION + "more", seed=3))
    assert ok and started == [Started("c", len(CONVERSATION) + 4, 0)]
    out = run_to_end(eng)["c"]
    assert text_of(out) == "fine" and finished(out).cached_tokens == 0
    assert runner.kv[0][:len(CONVERSATION) + 4] == list((CONVERSATION + "more").encode())
    stats = eng.ram_stats()
    assert (stats.hits, stats.failures) == (0, 1)


def test_short_or_nearly_kept_conversations_are_not_saved() -> None:
    runner = KVRunner({})
    eng = ram_engine(runner)
    eng.admit(submit("a", "short", seed=1))
    run_to_end(eng)
    eng.admit(submit("b", "another short one", seed=2))
    run_to_end(eng)
    eng.admit(submit("c", CONVERSATION, seed=3))
    run_to_end(eng)
    eng.admit(submit("d", CONVERSATION + "the next turn", seed=4))  # keeps all of c
    run_to_end(eng)
    assert runner.saved == [] and eng.ram_stats().entries == 0


def test_without_a_cache_nothing_is_saved_or_restored() -> None:
    runner = KVRunner({})
    eng = engine(runner, slots=1, ctx=256, budget=64)
    for rid, text in (("a", CONVERSATION), ("b", "z" * 60), ("c", CONVERSATION + "!")):
        eng.admit(submit(rid, text, seed=1))
        run_to_end(eng)
    assert runner.saved == runner.restored == []
    assert eng.ram_stats() == RamCacheStats()


def test_a_slot_with_a_copy_pending_is_neither_saved_nor_restored_into() -> None:
    """llama.cpp writes a copied sequence's rows at the next decode: until then the slot's
    state is not what its tokens say. A request copied into slot 1 is cancelled before any
    decode; the next prompt that would overwrite slot 1 does not save it, and a restore goes
    to the other slot."""
    runner = KVRunner({})
    eng = ram_engine(runner, slots=3)
    eng.admit(submit("a", CONVERSATION, seed=1))  # slot 0
    eng.admit(submit("x", "q" * 80, seed=2))  # slot 1 (beside 0)
    run_to_end(eng)
    eng.admit(submit("keep0", CONVERSATION + "busy", seed=3, max_tokens=50))  # slot 0, busy
    eng.step()
    eng.admit(submit("b", CONVERSATION + "copy", seed=4))  # copies slot 0 into slot 1
    assert runner.copies == [(0, 1)] and runner.saved == [1]  # x's conversation saved first
    eng.cancel("b")  # slot 1 is free again, its copy not yet written
    eng.admit(submit("c", "q" * 80 + "more", seed=5))  # x's conversation comes back
    assert runner.restored == [2]  # not into slot 1
    eng.admit(submit("d", "r" * 80, seed=6))  # only slot 1 is free: overwritten, not saved
    assert runner.saved == [1]
    out = run_to_end(eng)
    assert finished(out["c"]).cached_tokens == 80 and finished(out["d"]).cached_tokens == 0
