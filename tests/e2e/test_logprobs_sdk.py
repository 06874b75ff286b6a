"""``logprobs`` with the official openai SDK, parsed into its own types: chat's ``logprobs`` /
``top_logprobs`` on the default model (smollm2-135m-instruct), streamed and not, and the legacy
completions' ``logprobs`` on both default models (gemma-3-270m's 262k vocabulary with Japanese
text: characters of several bytes)."""

from __future__ import annotations

import math

import openai
import pytest
from harness import Server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID, DEFAULT_MODEL_ID

pytestmark = pytest.mark.e2e


def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0,
                         timeout=120)


def test_chat_logprobs_streamed_and_not(default_server: Server) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the capital of France?"}]
    with client(default_server) as c:
        whole = c.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages,
                                          max_tokens=12, temperature=0, logprobs=True,
                                          top_logprobs=3)
        stream = c.chat.completions.create(model=DEFAULT_MODEL_ID, messages=messages,
                                           max_tokens=12, temperature=0, logprobs=True,
                                           top_logprobs=3, stream=True)
        streamed = []
        for chunk in stream:
            for ch in chunk.choices:
                if ch.logprobs is not None and ch.logprobs.content:
                    streamed += ch.logprobs.content
    (choice,) = whole.choices
    assert choice.logprobs is not None and choice.logprobs.content is not None
    content = choice.logprobs.content
    assert whole.usage is not None and len(content) == whole.usage.completion_tokens
    for item in content:  # greedy: the chosen token is the most likely one
        assert len(item.top_logprobs) == 3
        assert item.top_logprobs[0].token == item.token
        assert math.isclose(item.top_logprobs[0].logprob, item.logprob, abs_tol=1e-6)
    assert bytes(b for item in content for b in item.bytes or []).decode() == \
        choice.message.content
    assert [(i.token, i.logprob) for i in streamed] == [(i.token, i.logprob) for i in content]


@pytest.mark.parametrize("model,prompt", [(DEFAULT_MODEL_ID, "The capital of France is"),
                                          (BENCH_MODEL_ID, "日本の首都は東京です。京都は")])
def test_completion_logprobs_legacy_shape(default_server: Server, gemma_server: Server,
                                          model: str, prompt: str) -> None:
    server = default_server if model == DEFAULT_MODEL_ID else gemma_server
    with client(server) as c:
        resp = c.completions.create(model=model, prompt=prompt, max_tokens=10, temperature=0,
                                    logprobs=2)
        parts = [ch.logprobs for chunk in c.completions.create(
                     model=model, prompt=prompt, max_tokens=10, temperature=0, logprobs=2,
                     stream=True)
                 for ch in chunk.choices if ch.logprobs is not None]
    (choice,) = resp.choices
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs \
        and lp.text_offset
    assert resp.usage is not None and len(lp.tokens) == resp.usage.completion_tokens
    for token, logprob, top, offset in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs,
                                           lp.text_offset, strict=True):
        assert logprob is not None and logprob <= 0
        assert max(top, key=lambda t: top[t]) == token  # greedy: the top-1
        if not token.startswith("bytes:"):
            assert choice.text[offset:offset + len(token)] == token
    assert [t for p in parts for t in p.tokens or []] == lp.tokens
    assert [o for p in parts for o in p.text_offset or []] == lp.text_offset
