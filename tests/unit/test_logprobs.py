"""Log-probabilities: the engine's log-softmax (engine/logprobs.py) against a numpy reference,
the slot engine's per-token entries lined up with the deltas' tokens, and the API's two wire
shapes (api/logprobs.py): chat's and the legacy completions' with its ``text_offset``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np
import pytest
from hearth.api.logprobs import LegacyLogprobs, chat_entries, token_text
from hearth.engine.logprobs import StepLogprobs, log_softmax_top
from hearth.engine.prompts import PromptMaker
from hearth.engine.slots import SCORING_CHUNK, SlotEngine
from hearth.scheduler.messages import (
    ChatJob,
    ChatMessage,
    Codec,
    EventBatch,
    Finished,
    RawPrompt,
    RequestedSampling,
    ResolvedSampling,
    Started,
    TextDelta,
    TokenLogprob,
    TopLogprob,
)
from test_prompts import RawRunner
from test_slots import EOG, FakeRunner, ScriptedSampler, Seg, run_to_end


def reference(row: np.ndarray) -> np.ndarray:
    x = row.astype(np.float64)
    return x - (x.max() + np.log(np.exp(x - x.max()).sum()))


@pytest.mark.parametrize("n_vocab,k", [(1, 0), (7, 3), (49152, 5), (262144, 20), (5, 9),
                                       (64 * 5 - 1, 5), (64 * 5, 5)])
def test_log_softmax_matches_a_float64_reference(n_vocab: int, k: int) -> None:
    rng = np.random.default_rng(n_vocab)
    row = (rng.standard_normal(n_vocab) * 4 + 30).astype(np.float32)
    want = reference(row)
    shifted, scratch = np.empty_like(row), np.empty_like(row)
    log_z, ids, lps = log_softmax_top(row, k, shifted, scratch)
    assert np.allclose(shifted.astype(np.float64) - log_z, want, atol=1e-5)
    top = np.argsort(-want, kind="stable")[:min(k, n_vocab)]
    assert ids.tolist() == top.tolist()
    assert np.allclose(lps, want[top], atol=1e-5)
    assert math.isclose(float(np.exp(want).sum()), 1.0, rel_tol=1e-9)


@pytest.mark.parametrize("spread,peak", [(0.5, 0.0), (3.0, 0.0), (40.0, 0.0), (3.0, 20.0)])
def test_the_top_k_whether_or_not_k_tokens_are_near_the_best(spread: float,
                                                              peak: float) -> None:
    """The sampled bar (engine.logprobs.SAMPLE_STRIDE) keeps the whole top k whatever the
    row's shape: flat, spread wide, or one token far above the rest."""
    rng = np.random.default_rng(1)
    row = (rng.standard_normal(5000) * spread).astype(np.float32)
    row[123] = row.max() + peak
    want = reference(row)
    _, ids, lps = log_softmax_top(row, 6, np.empty_like(row), np.empty_like(row))
    assert ids.tolist() == np.argsort(-want, kind="stable")[:6].tolist()
    assert np.allclose(lps, want[ids], atol=1e-5)


def test_equal_logits_rank_the_lower_id_first() -> None:
    row = np.zeros(10, dtype=np.float32)
    row[[7, 2, 5]] = 1.0
    _, ids, lps = log_softmax_top(row, 3, np.empty_like(row), np.empty_like(row))
    assert ids.tolist() == [2, 5, 7]
    assert lps[0] == lps[1] == lps[2]


def test_the_chosen_token_is_read_from_the_row_as_it_was_before_sampling() -> None:
    """A grammar sets rejected logits to -inf in the row in place; the entry must still give
    the model's own probability."""
    row = np.array([1.0, 3.0, 2.0, 0.5], dtype=np.float32)
    want = reference(row)
    reader = StepLogprobs(2)
    reader.read(row)
    row[1] = -np.inf  # what a grammar does to a token it rejects
    assert math.isclose(reader.chosen(2), want[2], abs_tol=1e-6)
    assert [t for t, _ in reader.top] == [1, 2]
    assert math.isclose(reader.top[0][1], want[1], abs_tol=1e-6)


# ---- the slot engine ---------------------------------------------------------------------------


class RowRunner(FakeRunner):
    """FakeRunner with a logits row per decode position: token t's logit is -|t - 100.25| / 8, so
    the model's top-1 is always token 100 ('d'), whatever the scripted sampler picks."""

    def __init__(self, scripts: dict[int | None, list[int]]) -> None:
        super().__init__(scripts)
        self.rows: dict[int, np.ndarray] = {}
        self.reads = 0

    def decode(self, segments: Sequence[object]) -> dict[int, int]:
        rows = super().decode(segments)
        base = -np.abs(np.arange(256, dtype=np.float32) - 100.25) / 8
        self.rows = {i: base.copy() for i in rows.values()}
        return rows

    def logits_row(self, index: int) -> np.ndarray:
        self.reads += 1
        return self.rows[index]

    def sampler(self, params: ResolvedSampling, seed: int) -> ScriptedSampler:
        return super().sampler(params, seed)


def job(rid: str, seed: int, logprobs: int | None, stop: list[str] | None = None) -> ChatJob:
    return ChatJob(rid, "fe", "key1", "m", [ChatMessage("user", "hi")],
                   RequestedSampling(seed=seed, stop=stop or []), logprobs=logprobs)


def engine(runner: RowRunner) -> SlotEngine[Seg]:
    return SlotEngine(runner, render=lambda s: s.messages[0].content, n_slots=2,
                      n_ctx_slot=64, token_budget=8, make_segment=Seg)


def test_entries_line_up_with_the_deltas_tokens_and_only_askers_pay() -> None:
    e_acute = "é".encode()  # two tokens of one byte each in the fake vocabulary
    runner = RowRunner({1: [*e_acute, ord("x"), ord("d"), EOG], 2: [ord("y"), EOG]})
    eng = engine(runner)
    assert eng.admit(job("a", 1, 2))[1] and eng.admit(job("b", 2, None))[1]
    out = run_to_end(eng)
    deltas = [e for e in out["a"] if isinstance(e, TextDelta)]
    assert [d.tokens for d in deltas] == [1, 1, 1, 1]
    assert [len(d.logprobs) for d in deltas] == [1, 1, 1, 1]
    assert [d.text for d in deltas] == ["", "é", "x", "d"]  # the first byte's text comes later
    entries = [d.logprobs[0] for d in deltas]
    assert [e.token for e in entries] == [*e_acute, ord("x"), ord("d")]
    assert b"".join(e.piece for e in entries).decode() == "éxd"
    want = reference(-np.abs(np.arange(256, dtype=np.float32) - 100.25) / 8)
    for e in entries:
        assert math.isclose(e.logprob, want[e.token], abs_tol=1e-5)
        assert [t.token for t in e.top] == [100, 101]
        assert e.top[0].piece == b"d"
    assert entries[3].logprob == entries[3].top[0].logprob  # the chosen token is the top-1
    b_deltas = [e for e in out["b"] if isinstance(e, TextDelta)]
    assert all(d.logprobs == [] for d in b_deltas)
    assert runner.reads == 5  # a row read per token "a" sampled (its end too), none for "b"


def test_a_stop_string_keeps_every_tokens_entry() -> None:
    runner = RowRunner({1: [ord("a"), ord("S"), ord("T"), ord("b"), EOG]})
    eng = engine(runner)
    eng.admit(job("a", 1, 0, stop=["ST"]))
    deltas = [e for e in run_to_end(eng)["a"] if isinstance(e, TextDelta)]
    assert "".join(d.text for d in deltas) == "a"
    assert [d.logprobs[0].token for d in deltas] == [ord("a"), ord("S"), ord("T")]
    assert all(d.logprobs[0].top == [] for d in deltas)  # k = 0: the chosen token only


def test_a_delta_without_logprobs_costs_nothing_on_the_wire() -> None:
    codec = Codec()
    plain = codec.encode(EventBatch([TextDelta("r", " word", 1)]))
    assert plain == codec.encode(EventBatch([TextDelta("r", " word", 1, [])]))
    assert b"logprobs" not in plain
    with_lp = EventBatch([TextDelta("r", "x", 1, [TokenLogprob(5, b"x", -0.5,
                                                               [TopLogprob(5, b"x", -0.5)])])])
    assert codec.events.decode(codec.encode(with_lp)) == with_lp


# ---- the wire shapes ---------------------------------------------------------------------------


def entry(piece: bytes, lp: float | None, top: Sequence[tuple[bytes, float]] = ()) -> TokenLogprob:
    return TokenLogprob(0, piece, lp, [TopLogprob(0, p, v) for p, v in top])


def test_token_text_of_a_partial_character_names_its_bytes() -> None:
    assert token_text("é".encode()) == "é"
    assert token_text(b"\xe2\x80") == "bytes:\\xe2\\x80"
    assert token_text(b"") == ""


def test_chat_entries_give_bytes_and_alternatives() -> None:
    out = chat_entries([entry(b"\xc3", -0.1, [(b"\xc3", -0.1), (b"a", -2.5)])])
    doc = msgspec.json.decode(msgspec.json.encode(out))
    assert doc == [{"token": "bytes:\\xc3", "logprob": -0.1, "bytes": [0xc3],
                    "top_logprobs": [{"token": "bytes:\\xc3", "logprob": -0.1, "bytes": [0xc3]},
                                     {"token": "a", "logprob": -2.5, "bytes": [97]}]}]


def test_legacy_shape_and_text_offset_count_characters_not_bytes() -> None:
    legacy = LegacyLogprobs()
    # "日" is three bytes, split over two tokens; "€" (three bytes) is one token
    first = legacy.add([entry(b"a", -1.0, [(b"b", -0.5)]), entry(b"\xe6\x97", -0.2)])
    second = legacy.add([entry(b"\xa5", -0.3), entry("€".encode(), -0.4), entry(b"z", -0.6)])
    assert first.text_offset == [0, 1]
    assert second.text_offset == [1, 2, 3]  # "a日€z": the character's offset for its 2nd token
    whole = legacy.whole
    assert whole.tokens == ["a", "bytes:\\xe6\\x97", "bytes:\\xa5", "€", "z"]
    assert whole.token_logprobs == [-1.0, -0.2, -0.3, -0.4, -0.6]
    assert whole.text_offset == [0, 1, 1, 2, 3]
    # the k alternatives, and the chosen token too (up to logprobs + 1 items, as OpenAI)
    assert whole.top_logprobs == [{"b": -0.5, "a": -1.0}, {"bytes:\\xe6\\x97": -0.2},
                                  {"bytes:\\xa5": -0.3}, {"€": -0.4}, {"z": -0.6}]


def test_legacy_offsets_start_after_text_already_in_the_choice() -> None:
    legacy = LegacyLogprobs(start=5)
    assert legacy.add([entry(b"x", -1.0), entry(b"y", -1.0)]).text_offset == [5, 6]


def test_two_alternatives_of_one_text_keep_the_more_likely() -> None:
    part = LegacyLogprobs().add([entry(b"a", -3.0, [(b"", -0.1), (b"", -0.7), (b"b", -1.0)])])
    assert part.top_logprobs == [{"": -0.1, "b": -1.0, "a": -3.0}]


# ---- echo with logprobs: the prompt's tokens scored ----------------------------------------------


class ScoringRunner(RawRunner):
    """RawRunner (byte tokens, PromptMaker's tokenizer) whose decode writes a logits row for
    each batch position that asks: the byte after the position's token is the most likely
    (logit -|t - (token + 1)|), so a prompt of consecutive bytes is the model's top-1 at every
    position. Batch positions are real ones (segments laid out one after another)."""

    def __init__(self, scripts: dict[int | None, list[int]]) -> None:
        super().__init__(scripts)
        self.rows: dict[int, np.ndarray] = {}

    def decode(self, segments: Sequence[object]) -> dict[int, int]:
        segs = [s for s in segments if isinstance(s, Seg)]
        self.decodes.append(segs)
        out: dict[int, int] = {}
        self.rows = {}
        i = 0
        ids = np.arange(256, dtype=np.float32)
        for seg in segs:
            for j, tok in enumerate(seg.tokens):
                last = j == len(seg.tokens) - 1
                if seg.all_logits or (seg.wants_logits and last):
                    self.rows[i] = -np.abs(ids - (tok + 1))
                    if last:
                        out[seg.seq] = i
                i += 1
        return out

    def logits_row(self, index: int) -> np.ndarray:
        return self.rows[index]


def scoring_engine(runner: ScoringRunner, budget: int = 256) -> SlotEngine[Seg]:
    return SlotEngine(runner, render=lambda s: "", n_slots=3, n_ctx_slot=512,
                      token_budget=budget, make_segment=Seg, prompts=PromptMaker(runner, None))


def scored(prompt: RawPrompt, logprobs: int | None, n: int = 1, seed: int = 1) -> ChatJob:
    return ChatJob("s", "fe", "k", "m", [], RequestedSampling(seed=seed), prompt=prompt,
                   logprobs=logprobs, n=n)


def test_echo_with_logprobs_scores_every_prompt_token_but_the_first() -> None:
    runner = ScoringRunner({1: [ord("z"), EOG]})
    eng = scoring_engine(runner)
    events, ok = eng.admit(scored(RawPrompt(text="abcdx", echo=True), 2))
    assert ok and events == [Started("s", 5, 0)]  # the echo waits for the prompt's rows
    out = run_to_end(eng)["s"]
    deltas = [e for e in out if isinstance(e, TextDelta)]
    echo = deltas[0]
    assert (echo.text, echo.tokens) == ("abcdx", 0)
    entries = echo.logprobs
    assert [e.token for e in entries] == list(b"abcdx")
    assert [e.piece for e in entries] == [b"a", b"b", b"c", b"d", b"x"]
    assert entries[0].logprob is None and entries[0].top == []  # nothing predicts it
    want = reference(-np.abs(np.arange(256, dtype=np.float32) - (ord("c") + 1)))
    for e in entries[1:4]:  # b, c, d: each the top-1 of the row before it
        assert e.logprob is not None and e.top[0].token == e.token
        assert math.isclose(e.logprob, e.top[0].logprob, abs_tol=1e-6)
        assert math.isclose(e.logprob, want[ord("d")], abs_tol=1e-5)  # (all rows alike)
    assert entries[4].top[0].token == ord("e") and entries[4].logprob is not None
    assert entries[4].logprob < entries[4].top[0].logprob  # "x" was not the model's best
    assert [d.text for d in deltas[1:]] == ["z"] and len(deltas[1].logprobs) == 1
    # every prompt token but the last asked for its row; the last's row samples "z"
    assert [seg.all_logits for step in runner.decodes for seg in step][:1] == [True]


def test_a_scored_prompt_reuses_no_cache_and_comes_in_bounded_chunks() -> None:
    runner = ScoringRunner({1: [EOG], 2: [EOG], 3: [EOG]})
    eng = scoring_engine(runner)
    text_tokens = list(range(1, 151))
    assert eng.admit(scored(RawPrompt(tokens=text_tokens), None, seed=1))[1]
    run_to_end(eng)
    plain, _ = eng.admit(scored(RawPrompt(tokens=text_tokens), None, seed=2))
    assert isinstance(plain[0], Started) and plain[0].cached_tokens > 0  # reuse, normally
    run_to_end(eng)
    runner.decodes.clear()
    events, ok = eng.admit(scored(RawPrompt(tokens=text_tokens, echo=True), 0, seed=3))
    assert ok and isinstance(events[0], Started) and events[0].cached_tokens == 0
    out = run_to_end(eng)["s"]
    echo = next(e for e in out if isinstance(e, TextDelta))
    assert [e.token for e in echo.logprobs] == text_tokens
    assert all(e.top == [] for e in echo.logprobs)  # logprobs 0: the chosen token only
    fed = [seg for step in runner.decodes for seg in step]
    # every row but the last token's, which is evaluated alone and only samples
    assert sum(len(seg.tokens) for seg in fed if seg.all_logits) == 149
    assert sum(len(seg.tokens) for seg in fed) == 150
    assert max(len(seg.tokens) for seg in fed) <= SCORING_CHUNK


def test_plain_requests_and_echo_without_logprobs_ask_for_no_extra_rows() -> None:
    runner = ScoringRunner({1: [ord("q"), EOG], 2: [ord("r"), EOG]})
    eng = scoring_engine(runner)
    events, _ = eng.admit(scored(RawPrompt(text="hello", echo=True), None))
    assert events[1] == TextDelta("s", "hello", 0)  # at once, no entries
    run_to_end(eng)
    assert eng.admit(scored(RawPrompt(text="hello"), 2, seed=2))[1]
    out = [e for e in run_to_end(eng)["s"] if isinstance(e, TextDelta)]
    assert [len(d.logprobs) for d in out] == [1]  # the generated token's only
    assert not any(seg.all_logits for step in runner.decodes for seg in step)


def test_every_choice_gets_the_scored_echo_before_its_tokens() -> None:
    runner = ScoringRunner({1: [ord("u"), EOG], 2: [ord("v"), EOG]})
    eng = scoring_engine(runner)
    assert eng.admit(scored(RawPrompt(text="abc", echo=True), 1, n=2))[1]
    out = [e for e in run_to_end(eng)["s"] if isinstance(e, TextDelta)]
    for index in (0, 1):
        mine = [d for d in out if d.index == index]
        assert mine[0].text == "abc" and [e.token for e in mine[0].logprobs] == list(b"abc")
        assert mine[0].logprobs[0].logprob is None
        assert "".join(d.text for d in mine[1:]) in ("u", "v")
    assert sum(seg.all_logits for step in runner.decodes for seg in step) >= 1


def test_a_one_token_prompt_echoes_its_entry_at_once() -> None:
    eng = scoring_engine(ScoringRunner({1: [EOG]}))
    events, ok = eng.admit(scored(RawPrompt(text="a", echo=True), 3))
    assert ok and events[1] == TextDelta("s", "a", 0, [TokenLogprob(ord("a"), b"a", None)])


def test_max_tokens_0_with_echo_scores_the_prompt_and_generates_nothing() -> None:
    runner = ScoringRunner({1: [ord("z"), EOG]})
    eng = scoring_engine(runner)
    job = ChatJob("s", "fe", "k", "m", [], RequestedSampling(seed=1, max_tokens=0),
                  prompt=RawPrompt(text="abc", echo=True), logprobs=1)
    assert eng.admit(job)[1]
    out = run_to_end(eng)["s"]
    deltas = [e for e in out if isinstance(e, TextDelta)]
    assert [(d.text, d.tokens) for d in deltas] == [("abc", 0)]
    assert [e.token for e in deltas[0].logprobs] == list(b"abc")
    fin = out[-1]
    assert isinstance(fin, Finished) and fin.finish_reason == "length"
    assert (fin.prompt_tokens, fin.completion_tokens) == (3, 0)
    assert not eng.has_work()


def test_legacy_shape_of_an_echoed_prompt_then_its_completion() -> None:
    legacy = LegacyLogprobs()
    prompt = legacy.add([entry(b"H", None), entry("é".encode(), -2.0, [(b"e", -0.5)]),
                         entry(b"!", -1.0)])
    completion = legacy.add([entry(b" ok", -0.25, [(b" ok", -0.25)])])
    assert prompt.token_logprobs == [None, -2.0, -1.0]
    assert prompt.top_logprobs == [None, {"e": -0.5, "é": -2.0}, {"!": -1.0}]
    assert prompt.text_offset == [0, 1, 2] and completion.text_offset == [3]
    doc = msgspec.json.decode(msgspec.json.encode(legacy.whole))
    assert doc == {"tokens": ["H", "é", "!", " ok"], "token_logprobs": [None, -2.0, -1.0, -0.25],
                   "top_logprobs": [None, {"e": -0.5, "é": -2.0}, {"!": -1.0}, {" ok": -0.25}],
                   "text_offset": [0, 1, 2, 3]}
