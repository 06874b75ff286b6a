"""``n`` > 1 through the official openai SDK, unchanged, against the default model
(smollm2-135m-instruct) served with 4 slots: chat (streamed and not) and completions.

Requests run one at a time (DESIGN.md "Determinism"), so a seeded request's choices are the
same every time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from harness import Server
from hearth.tools.cli.bootstrap import DEFAULT_MODEL_ID

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture(scope="module")
def server(default_models_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(default_models_dir, DEFAULT_MODEL_ID, tmp_path_factory.mktemp("e2e-home"),
                 args=("--parallel", "4", "--ctx-size", "1024"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


@pytest.fixture
def client(server: Server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0,
                       timeout=120) as c:
        yield c


def test_three_choices(client: openai.OpenAI) -> None:
    def ask(n: int) -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model=DEFAULT_MODEL_ID, messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=16, temperature=0.9, seed=42, n=n)

    resp = ask(3)
    assert [c.index for c in resp.choices] == [0, 1, 2]
    assert all(c.message.role == "assistant" and c.message.content for c in resp.choices)
    assert all(c.finish_reason in ("stop", "length") for c in resp.choices)
    assert len({c.message.content for c in resp.choices}) > 1  # three seeds: 42, 43, 44
    assert resp.usage is not None
    single = ask(1)
    assert single.usage is not None
    assert resp.usage.prompt_tokens == single.usage.prompt_tokens  # counted once
    assert resp.usage.completion_tokens <= 48
    if all(c.finish_reason == "length" for c in resp.choices):
        assert resp.usage.completion_tokens == 48
    again = ask(3)
    assert [c.message.content for c in again.choices] == [c.message.content
                                                          for c in resp.choices]


def test_three_choices_streamed(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=DEFAULT_MODEL_ID, messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=16, temperature=0.9, seed=7, n=3, stream=True,
        stream_options={"include_usage": True})
    chunks = list(stream)
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    roles: dict[int, str] = {}
    for chunk in chunks[:-1]:
        (choice,) = chunk.choices
        texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
        if choice.delta.role:
            roles[choice.index] = choice.delta.role
        if choice.finish_reason:
            finishes[choice.index] = choice.finish_reason
    assert sorted(texts) == [0, 1, 2] and all(texts.values())
    assert roles == {0: "assistant", 1: "assistant", 2: "assistant"}
    assert sorted(finishes) == [0, 1, 2]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert 0 < chunks[-1].usage.completion_tokens <= 48
    whole = client.chat.completions.create(
        model=DEFAULT_MODEL_ID, messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=16, temperature=0.9, seed=7, n=3)
    assert [c.message.content for c in whole.choices] == [texts[i] for i in range(3)]


def test_completions_with_two_prompts_and_two_choices(client: openai.OpenAI) -> None:
    out = client.completions.create(model=DEFAULT_MODEL_ID, prompt=["The sea is", "The sky is"],
                                    max_tokens=6, temperature=0.9, seed=1, n=2, echo=True)
    assert [c.index for c in out.choices] == [0, 1, 2, 3]
    assert [c.text.split(" is")[0] for c in out.choices] == ["The sea", "The sea", "The sky",
                                                              "The sky"]
    assert out.usage is not None and out.usage.completion_tokens <= 24


def test_n_beyond_the_slots_is_a_bad_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=DEFAULT_MODEL_ID, messages=MESSAGES,  # type: ignore[arg-type]
                                       max_tokens=4, n=5)
    assert info.value.param == "n"



def test_best_of_with_echoed_logprobs(client: openai.OpenAI) -> None:
    """``best_of`` 4, ``n`` 2 with ``echo`` and ``logprobs`` through the SDK: of what ``n`` 4
    with the same seed gives, the two whose generated tokens have the highest mean
    log-probability, best first, each starting with the echoed prompt and its scored tokens
    (the first one's logprob null: nothing predicts it)."""
    prompt = "The sea is"
    kw = {"model": DEFAULT_MODEL_ID, "prompt": prompt, "max_tokens": 6, "temperature": 0.9,
          "seed": 5, "echo": True, "logprobs": 1}

    def mean(choice: openai.types.CompletionChoice) -> float:
        lp = choice.logprobs
        assert lp is not None and lp.token_logprobs is not None and lp.text_offset is not None
        assert lp.token_logprobs[0] is None
        generated = [v for v, at in zip(lp.token_logprobs, lp.text_offset, strict=True)
                     if at >= len(prompt) and v is not None]
        return sum(generated) / len(generated) if generated else float("-inf")

    every = client.completions.create(n=4, **kw)  # type: ignore[call-overload]
    best = client.completions.create(n=2, best_of=4, **kw)  # type: ignore[call-overload]
    ranked = sorted(every.choices, key=lambda c: (-mean(c), c.index))
    assert [c.index for c in best.choices] == [0, 1]
    assert all(c.text.startswith(prompt) for c in best.choices)
    assert [c.text for c in best.choices] == [c.text for c in ranked[:2]]
