"""The official openai SDK's legacy completions (``client.completions.create``), streamed and
not, against the default model (smollm2-135m-instruct), and its FIM refusal: neither default
model declares fill-in-the-middle tokens in its GGUF header."""

from __future__ import annotations

import openai
import pytest
from harness import Server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID, DEFAULT_MODEL_ID

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is"


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0,
                         timeout=120)


def test_completion(default_server: Server) -> None:
    with client(default_server) as c:
        resp = c.completions.create(model=DEFAULT_MODEL_ID, prompt=PROMPT, max_tokens=8,
                                    temperature=0)
    assert resp.id.startswith("cmpl-") and resp.object == "text_completion"
    (choice,) = resp.choices
    assert choice.index == 0 and choice.finish_reason in ("stop", "length")
    assert "Paris" in choice.text
    assert resp.usage is not None and 0 < resp.usage.completion_tokens <= 8


def test_streamed_completion_of_two_prompts_with_usage(default_server: Server) -> None:
    with client(default_server) as c:
        whole = c.completions.create(model=DEFAULT_MODEL_ID, prompt=PROMPT, max_tokens=8,
                                     temperature=0)
        stream = c.completions.create(model=DEFAULT_MODEL_ID, prompt=[PROMPT, "1, 2, 3,"],
                                      max_tokens=8, temperature=0, stream=True,
                                      stream_options={"include_usage": True})
        texts = ["", ""]
        finish: list[str | None] = [None, None]
        usage = None
        for chunk in stream:
            for ch in chunk.choices:
                texts[ch.index] += ch.text
                finish[ch.index] = ch.finish_reason or finish[ch.index]
            usage = chunk.usage or usage
    assert texts[0] == whole.choices[0].text  # requests one at a time: same batch shapes
    assert all(f in ("stop", "length") for f in finish)
    assert usage is not None and usage.completion_tokens <= 16
    assert whole.usage is not None and usage.prompt_tokens > whole.usage.prompt_tokens


def test_a_suffix_is_refused_for_a_model_without_fim_tokens(default_server: Server) -> None:
    with client(default_server) as c:
        for model in (DEFAULT_MODEL_ID, BENCH_MODEL_ID):
            with pytest.raises(openai.BadRequestError) as err:
                c.completions.create(model=model, prompt="def f(", suffix="):", max_tokens=4)
            assert err.value.param == "suffix"  # type: ignore[attr-defined]


def test_tokenize_round_trip(default_server: Server) -> None:
    with client(default_server) as c:
        ids = c.post("/tokenize", body={"content": PROMPT}, cast_to=object)
        text = c.post("/detokenize", body={"tokens": ids["tokens"]},  # type: ignore[index]
                      cast_to=object)
    assert text == {"content": PROMPT}
