"""The official openai SDK, unchanged, against hearth serving the default model
(smollm2-135m-instruct), which a fresh models dir gets beside gemma-3-270m."""

from __future__ import annotations

import openai
import pytest
from harness import Server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID, DEFAULT_MODEL_ID

pytestmark = pytest.mark.e2e

MESSAGES = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "Name three colours."}]


def client(server: Server, **kw: object) -> openai.OpenAI:
    args: dict[str, object] = {"base_url": server.base_url, "api_key": server.api_key,
                               "max_retries": 0, "timeout": 120}
    args.update(kw)
    return openai.OpenAI(**args)  # type: ignore[arg-type]


def test_models_list_and_retrieve(default_server: Server) -> None:
    with client(default_server) as c:
        ids = [m.id for m in c.models.list()]
        assert DEFAULT_MODEL_ID in ids and BENCH_MODEL_ID in ids
        model = c.models.retrieve(DEFAULT_MODEL_ID)
        assert model.id == DEFAULT_MODEL_ID
        assert model.object == "model"
        assert model.owned_by == "hearth"


def test_chat_completion(default_server: Server) -> None:
    with client(default_server) as c:
        resp = c.chat.completions.create(model=DEFAULT_MODEL_ID, messages=MESSAGES,  # type: ignore[arg-type]
                                         max_tokens=16, temperature=0)
    assert resp.id.startswith("chatcmpl-")
    assert resp.object == "chat.completion"
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage is not None
    assert resp.usage.prompt_tokens > 0
    assert 0 < resp.usage.completion_tokens <= 16
    if choice.finish_reason == "length":
        assert resp.usage.completion_tokens == 16


def test_the_default_model_answers_a_question(default_server: Server) -> None:
    # Measured: "The capital of France is Paris." (greedy, one request at a time, so the same
    # batch every run; see DESIGN.md "Determinism").
    with client(default_server) as c:
        resp = c.chat.completions.create(
            model=DEFAULT_MODEL_ID, temperature=0, max_tokens=32,
            messages=[{"role": "user",
                       "content": "What is the capital of France? Answer in one sentence."}])
    answer = resp.choices[0].message.content
    assert answer is not None and "Paris" in answer, answer
    assert resp.choices[0].finish_reason == "stop"


def test_stream_with_include_usage(default_server: Server) -> None:
    with client(default_server) as c:
        stream = c.chat.completions.create(
            model=DEFAULT_MODEL_ID, messages=MESSAGES, max_tokens=24, temperature=0,  # type: ignore[arg-type]
            stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage is not None and 0 < usage.completion_tokens <= 24
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text


def test_max_completion_tokens(default_server: Server) -> None:
    with client(default_server) as c:
        resp = c.chat.completions.create(model=DEFAULT_MODEL_ID, messages=MESSAGES,  # type: ignore[arg-type]
                                         max_completion_tokens=3, temperature=0)
    assert resp.usage is not None and resp.usage.completion_tokens <= 3


def test_wrong_key_is_401(default_server: Server) -> None:
    with client(default_server, api_key="not-the-key") as c:
        with pytest.raises(openai.AuthenticationError) as info:
            c.models.list()
    assert info.value.status_code == 401
    assert info.value.code == "invalid_api_key"


def test_unknown_model_is_404(default_server: Server) -> None:
    with client(default_server) as c:
        with pytest.raises(openai.NotFoundError) as info:
            c.chat.completions.create(model="gpt-nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"
    assert info.value.param == "model"


def test_wrong_prefix_is_404(default_server: Server) -> None:
    base = default_server.base_url.replace("/v1", "/v2")
    with client(default_server, base_url=base) as c:
        with pytest.raises(openai.NotFoundError) as info:
            c.models.list()
    assert isinstance(info.value.body, dict) and "message" in info.value.body


def test_foreign_host_is_403(default_server: Server) -> None:
    with client(default_server, default_headers={"Host": "attacker.example"}) as c:
        with pytest.raises(openai.PermissionDeniedError) as info:
            c.models.list()
    assert info.value.status_code == 403


def test_bad_parameter_is_400_with_param(default_server: Server) -> None:
    with client(default_server) as c:
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model=DEFAULT_MODEL_ID, messages=MESSAGES,  # type: ignore[arg-type]
                                      temperature=3.5)
    assert info.value.param == "temperature"
