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
from hearth.engine.slots import SlotEngine
from hearth.scheduler.messages import (
    ChatJob,
    ChatMessage,
    Codec,
    EventBatch,
    RequestedSampling,
    ResolvedSampling,
    TextDelta,
    TokenLogprob,
    TopLogprob,
)
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


def entry(piece: bytes, lp: float, top: Sequence[tuple[bytes, float]] = ()) -> TokenLogprob:
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
