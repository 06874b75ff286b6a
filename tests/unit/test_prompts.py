"""Completions' prompts: FIM tokens from a GGUF header under each key convention, the FIM
layout, prompt forms and their validation, token ids against the vocabulary, a completion's
prompt in the slot engine (no template, echo), and tokenize/detokenize jobs — over fakes."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from hearth.api import completion_types as ct
from hearth.api.openai_types import sampling_of
from hearth.engine.prompts import PromptMaker, fim_layout, run_tokenize
from hearth.engine.slots import SlotEngine
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import (
    ChatJob,
    ChatMessage,
    Failed,
    Finished,
    RawPrompt,
    RequestedSampling,
    Started,
    TextDelta,
    TokenizeJob,
)
from hearth.scheduler.token_ids import check_fim, check_token_ids
from hearth.tools.gguf_header import FimTokens, GGUFInfo
from hearth.tools.model_config import SamplingDefaults
from test_slots import FakeRunner, Seg, run_to_end, text_of

FIM = FimTokens(pre=300, suf=301, mid=302)
BOS = 1


def info(**metadata: object) -> GGUFInfo:
    return GGUFInfo(path="m.gguf", version=3, byte_order="little", file_size=0,
                    metadata={f"tokenizer.ggml.{k}": v for k, v in metadata.items()},
                    tensors=(), alignment=32, data_offset=0)


@pytest.mark.parametrize("keys", [
    {"fim_pre_token_id": 300, "fim_suf_token_id": 301, "fim_mid_token_id": 302},
    {"prefix_token_id": 300, "suffix_token_id": 301, "middle_token_id": 302},
    # both conventions: the newer keys win
    {"fim_pre_token_id": 300, "fim_suf_token_id": 301, "fim_mid_token_id": 302,
     "prefix_token_id": 7, "suffix_token_id": 8, "middle_token_id": 9},
], ids=["fim_pre/suf/mid", "prefix/suffix/middle", "both"])
def test_fim_tokens_from_each_header_convention(keys: dict[str, int]) -> None:
    assert info(**keys).fim_tokens == FIM


@pytest.mark.parametrize("keys", [
    {}, {"fim_pre_token_id": 300, "fim_suf_token_id": 301},
    {"fim_pre_token_id": 300, "fim_suf_token_id": 301, "fim_mid_token_id": -1},
    {"prefix_token_id": 300, "fim_suf_token_id": 301, "middle_token_id": 302},
])
def test_no_fim_tokens_unless_all_three_of_one_convention(keys: dict[str, int]) -> None:
    assert info(**keys).fim_tokens is None


def test_fim_layout_is_prefix_suffix_middle() -> None:
    assert fim_layout([10, 11], [20], FIM, BOS) == [BOS, 300, 10, 11, 301, 20, 302]
    assert fim_layout([10], [], FIM, None) == [300, 10, 301, 302]


class Tok:
    """Tokens are byte values + 2; BOS is 1; the text "<s>" is BOS when specials are parsed."""

    def __init__(self, add_bos: bool = True) -> None:
        self.add_bos = add_bos

    def tokenize(self, text: str, *, add_bos: bool | None = None,
                 parse_special: bool = True) -> list[int]:
        bos = self.add_bos if add_bos is None else add_bos
        out = [BOS] * bos
        for i, part in enumerate(text.split("<s>") if parse_special else [text]):
            out += [BOS] * (i > 0) + [b + 2 for b in part.encode()]
        return out

    def special_piece(self, token: int) -> bytes:
        return b"<s>" if token == BOS else bytes([token - 2])

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        return b"".join(self.special_piece(t) for t in tokens)

    @property
    def bos_id(self) -> int:
        return BOS


@pytest.mark.parametrize("add_bos", [True, False])
def test_a_fim_prompt_gets_bos_as_the_model_says(add_bos: bool) -> None:
    maker = PromptMaker(Tok(add_bos), FIM)
    got = maker.tokens(RawPrompt(text="ab", suffix="c"))
    assert got == [BOS] * add_bos + [300, ord("a") + 2, ord("b") + 2, 301, ord("c") + 2, 302]


def test_fim_text_is_not_parsed_for_special_tokens_but_a_prompt_s_is() -> None:
    maker = PromptMaker(Tok(False), FIM)
    assert BOS not in maker.tokens(RawPrompt(text="<s>", suffix="<s>"))
    assert maker.tokens(RawPrompt(text="a<s>")) == [ord("a") + 2, BOS]


def test_prompt_tokens_as_given_and_text_with_bos() -> None:
    maker = PromptMaker(Tok(), None)
    assert maker.tokens(RawPrompt(tokens=[5, 6])) == [5, 6]
    assert maker.tokens(RawPrompt(text="a")) == [BOS, ord("a") + 2]
    assert maker.echo(RawPrompt(text="a")) == "a"
    assert maker.echo(RawPrompt(tokens=[ord("h") + 2, ord("i") + 2])) == "hi"


def test_a_suffix_without_fim_tokens_names_suffix() -> None:
    with pytest.raises(InvalidRequest) as err:
        PromptMaker(Tok(), None).tokens(RawPrompt(text="a", suffix="b"))
    assert err.value.param == "suffix"


def completion_job(prompt: RawPrompt, rid: str = "c", **sampling: Any) -> ChatJob:
    return ChatJob(rid, "fe", "k", "m", [], RequestedSampling(**sampling), prompt=prompt)


def test_the_scheduler_refuses_a_suffix_for_a_model_without_fim_tokens() -> None:
    job = completion_job(RawPrompt(text="a", suffix="b"))
    with pytest.raises(InvalidRequest) as err:
        check_fim(job, info())
    assert err.value.param == "suffix"
    check_fim(job, info(fim_pre_token_id=1, fim_suf_token_id=2, fim_mid_token_id=3))
    check_fim(completion_job(RawPrompt(text="a")), info())


def test_prompt_and_detokenize_ids_outside_the_vocabulary() -> None:
    with pytest.raises(InvalidRequest) as err:
        check_token_ids(completion_job(RawPrompt(tokens=[1, 100])), 100)
    assert err.value.param == "prompt"
    with pytest.raises(InvalidRequest) as err:
        check_token_ids(TokenizeJob("t", "fe", "k", "m", tokens=[100], detokenize=True), 100)
    assert err.value.param == "tokens"
    check_token_ids(completion_job(RawPrompt(tokens=[0, 99])), 100)


# ---- the slot engine ---------------------------------------------------------------------------


class RawRunner(FakeRunner):
    """FakeRunner's byte tokens, with FakeRunner's own tokenize for prompts (no BOS)."""

    add_bos = False
    bos_id = 255

    def tokenize(self, text: str, *, add_bos: bool | None = None,
                 parse_special: bool = True) -> list[int]:
        return list(text.encode())

    def special_piece(self, token: int) -> bytes:
        return bytes([token])

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        return bytes(tokens)


def engine(runner: RawRunner, ctx: int = 64) -> SlotEngine[Seg]:
    def no_template(job: ChatJob) -> str:
        raise AssertionError("a completion's prompt must not be rendered")

    return SlotEngine(runner, render=no_template, n_slots=2, n_ctx_slot=ctx, token_budget=8,
                      make_segment=Seg, prompts=PromptMaker(runner, FIM))


def test_a_completion_skips_the_template_and_echoes_its_prompt() -> None:
    runner = RawRunner({1: list(b"ok")})
    eng = engine(runner)
    events, ok = eng.admit(completion_job(RawPrompt(text="hey", echo=True), seed=1))
    assert ok and events == [Started("c", 3, 0), TextDelta("c", "hey", 0)]
    out = run_to_end(eng)["c"]
    assert text_of(out) == "ok"
    fin = out[-1]
    assert isinstance(fin, Finished) and (fin.prompt_tokens, fin.completion_tokens) == (3, 2)
    fed = [t for step in runner.decodes for seg in step for t in seg.tokens]
    assert fed[:3] == list(b"hey")


def test_a_completion_over_the_context_names_the_prompt() -> None:
    eng = engine(RawRunner({}), ctx=4)
    events, ok = eng.admit(completion_job(RawPrompt(tokens=[5] * 5)))
    assert not ok
    (failed,) = events
    assert isinstance(failed, Failed) and failed.param == "prompt"
    assert failed.kind == "ContextLengthExceeded"


def test_tokenize_jobs() -> None:
    tok = Tok()
    render = lambda job: "[" + job.messages[0].content + "]"  # noqa: E731
    base = ("t", "fe", "k", "m")
    assert run_tokenize(TokenizeJob(*base, text="ab"), tok, render, 300).tokens == \
        [ord("a") + 2, ord("b") + 2]
    with_bos = run_tokenize(TokenizeJob(*base, text="a", add_special=True, with_pieces=True),
                            tok, render, 300)
    assert with_bos.tokens == [BOS, ord("a") + 2] and with_bos.pieces == [b"<s>", b"a"]
    chat = run_tokenize(TokenizeJob(*base, messages=[ChatMessage("user", "x")]), tok, render, 300)
    assert chat.tokens == [ord(c) + 2 for c in "[x]"]
    assert run_tokenize(TokenizeJob(*base, tokens=[BOS, ord("z") + 2], detokenize=True),
                        tok, render, 300).text == "<s>z"
    with pytest.raises(InvalidRequest) as err:
        run_tokenize(TokenizeJob(*base, tokens=[300], detokenize=True), tok, render, 300)
    assert err.value.param == "tokens"


# ---- request validation ------------------------------------------------------------------------


def parse(**body: Any) -> ct.CompletionRequest:
    return ct.parse_completion_request(json.dumps({"model": "m", **body}).encode())


@pytest.mark.parametrize("prompt,expected", [
    ("hi", [RawPrompt(text="hi")]),
    ("", [RawPrompt(text="")]),
    (["a", "b"], [RawPrompt(text="a"), RawPrompt(text="b")]),
    ([1, 2, 3], [RawPrompt(tokens=[1, 2, 3])]),
    ([[1], [2, 3]], [RawPrompt(tokens=[1]), RawPrompt(tokens=[2, 3])]),
])
def test_every_prompt_form(prompt: Any, expected: list[RawPrompt]) -> None:
    assert ct.raw_prompts(parse(prompt=prompt)) == expected


def test_suffix_and_echo_travel_with_every_prompt() -> None:
    assert ct.raw_prompts(parse(prompt=["a", "b"], suffix="z")) == [
        RawPrompt(text="a", suffix="z"), RawPrompt(text="b", suffix="z")]
    assert ct.raw_prompts(parse(prompt=[[4]], echo=True)) == [RawPrompt(tokens=[4], echo=True)]


@pytest.mark.parametrize("body,param", [
    ({"prompt": []}, "prompt"),
    ({"prompt": [[1], []]}, "prompt"),
    ({"prompt": ["a", 1]}, "prompt"),
    ({"prompt": [1, [2]]}, "prompt"),
    ({"prompt": [-1]}, "prompt"),
    ({"prompt": ["a"] * (ct.MAX_PROMPTS + 1)}, "prompt"),
    ({"prompt": "a", "suffix": "b", "echo": True}, "echo"),
    ({"prompt": "a", "logprobs": 6}, "logprobs"),
    ({"prompt": "a", "logprobs": -1}, "logprobs"),
    ({"prompt": "a", "n": 3, "best_of": 2}, "best_of"),
    ({"prompt": "a", "n": 0}, "n"),
    ({"prompt": "a", "stop": ["a"] * 5}, "stop"),
    ({}, "prompt"),
])
def test_bad_prompts_and_fields_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        req = parse(**body)
        ct.raw_prompts(req)
        sampling_of(req, req.max_tokens)
    assert err.value.param == param


def test_a_completion_s_max_tokens_is_the_request_s_then_the_model_s_then_16() -> None:
    def generated(defaults: SamplingDefaults | None, **sampling: Any) -> int:
        runner = RawRunner({1: [ord("x")] * 40})
        eng = SlotEngine(runner, render=lambda job: "", n_slots=1, n_ctx_slot=64,
                         token_budget=8, make_segment=Seg, prompts=PromptMaker(runner, None),
                         sampling_defaults=defaults)
        eng.admit(completion_job(RawPrompt(text="a"), seed=1, **sampling))
        fin = run_to_end(eng)["c"][-1]
        assert isinstance(fin, Finished)
        return fin.completion_tokens

    assert generated(None) == 16
    assert generated(None, max_tokens=3) == 3
    assert generated(SamplingDefaults(max_tokens=5)) == 5
    assert generated(SamplingDefaults(max_tokens=5), max_tokens=20) == 20


def test_token_pieces_keep_partial_utf8_as_bytes() -> None:
    got = ct.pieces([5, 6], [b"ab", "☕".encode()[:2]])
    assert got == [ct.TokenPiece(5, "ab"), ct.TokenPiece(6, [0xE2, 0x98])]
