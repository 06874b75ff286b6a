"""Issue 15 (kinds 2, 4, 7) through real processes on the tiny model, with the official openai
SDK: refused fields are a BadRequestError naming the field, token ids outside the vocabulary are
a 400 naming the id, an unknown endpoint's 404 says it does not exist, and a last assistant
message is continued (prefill)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llama_cpp
import openai
import pytest
from harness import Server
from hearth.api import field_policy as fp

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "Hello there"}]
# Each refused chat field with a value that asks for something (as the SDK sends it).
ASKING: dict[str, Any] = {
    "functions": [{"name": "f", "parameters": {}}], "function_call": {"name": "f"},
    "audio": {"voice": "alloy", "format": "wav"}, "modalities": ["text", "audio"],
    "prediction": {"type": "content", "content": "x"}, "web_search_options": {},
    "reasoning_effort": "high", "verbosity": "low",
}
SDK_KWARGS = set(ASKING)
EXTRA_BODY = {name: "x" if name != "chat_template_kwargs" else {"a": 1}
              for name in (r.name for r in fp.CHAT_FIELDS if r.policy is fp.Policy.REFUSED)
              if name not in SDK_KWARGS}


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=server.api_key or "none",
                         max_retries=0)


@pytest.mark.parametrize("name", sorted(ASKING))
def test_refused_field_is_a_bad_request_naming_it(client: openai.OpenAI, name: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2,
                                       **{name: ASKING[name]})
    assert err.value.status_code == 400
    body: Any = err.value.body
    assert body["param"] == name
    assert "not supported" in body["message"]


@pytest.mark.parametrize("name", sorted(EXTRA_BODY))
def test_refused_extension_field_is_a_bad_request(client: openai.OpenAI, name: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2,
                                       extra_body={name: EXTRA_BODY[name]})
    assert err.value.body["param"] == name  # type: ignore[index]


def test_refused_field_in_a_stream_is_refused_before_it_starts(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2,
                                       stream=True, modalities=["text", "audio"])
    assert err.value.body["param"] == "modalities"  # type: ignore[index]


TOOLS: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fields,param", [
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": False, "top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"logprobs": True, "tools": TOOLS}, "logprobs"),
])
def test_bad_chat_logprobs_are_a_bad_request_naming_the_field(
        client: openai.OpenAI, fields: dict[str, Any], param: str, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2,
                                       stream=stream, **fields)
    assert err.value.body["param"] == param  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("fields,param", [
    ({"logprobs": 6}, "logprobs"),
    ({"logprobs": -1}, "logprobs"),
])
def test_bad_completion_logprobs_are_a_bad_request_naming_the_field(
        client: openai.OpenAI, fields: dict[str, Any], param: str, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="Hello", max_tokens=2, stream=stream,
                                  **fields)
    assert err.value.body["param"] == param  # type: ignore[index]


@pytest.mark.parametrize("stream", [False, True])
def test_a_schema_that_cannot_be_enforced_is_refused(client: openai.OpenAI,
                                                    stream: bool) -> None:
    """response_format is applied (tests/integration/test_structured_outputs.py); a schema with
    a keyword the grammar cannot enforce is a 400 naming response_format, streamed or not."""
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="tiny", messages=MESSAGES, max_tokens=2, stream=stream,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "n", "schema": schema}})
    body: Any = err.value.body
    assert body["param"] == "response_format"
    assert "'minimum'" in body["message"]


def test_image_part_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", max_tokens=2, messages=[{
            "role": "user", "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])
    assert err.value.body["param"] == "messages[0].content[1].type"  # type: ignore[index]


def test_neutral_and_ignored_values_pass(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=2, tools=[], logprobs=False,
        response_format={"type": "text"}, modalities=["text"], tool_choice="none",
        user="u", store=False, metadata={"k": "v"}, service_tier="auto")
    assert out.choices[0].finish_reason == "length"


@pytest.mark.parametrize("name,value", [("input_type", "query"), ("truncate", True)])
def test_refused_embeddings_field(client: openai.OpenAI, name: str, value: Any) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="tiny", input="x", extra_body={name: value})
    assert err.value.body["param"] == name  # type: ignore[index]


# ---- kind 4: token ids outside the vocabulary ------------------------------------------------

@pytest.fixture(scope="module")
def vocab(tiny_models_dir: Path) -> llama_cpp.Llama:
    return llama_cpp.Llama(str(tiny_models_dir / "tiny.gguf"), vocab_only=True, verbose=False)


@pytest.mark.parametrize("stream", [False, True])
def test_logit_bias_outside_the_vocabulary_is_a_400(client: openai.OpenAI,
                                                    vocab: llama_cpp.Llama, stream: bool) -> None:
    n_vocab = vocab.n_vocab()
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2,
                                       stream=stream, logit_bias={"1": 2, str(n_vocab): 5})
    body: Any = err.value.body
    assert body["param"] == "logit_bias"
    assert f"token id {n_vocab}" in body["message"]
    ok = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2,
                                        logit_bias={str(n_vocab - 1): 5})
    assert ok.choices[0].finish_reason


def test_embedding_token_ids_outside_the_vocabulary_are_a_400(
        client: openai.OpenAI, vocab: llama_cpp.Llama) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="tiny", input=[[1, 2], [vocab.n_vocab()]])
    body: Any = err.value.body
    assert body["param"] == "input" and "input[1]" in body["message"]


# ---- kind 7 ----------------------------------------------------------------------------------

def test_unknown_endpoint_under_the_prefix_says_it_does_not_exist(server: Server) -> None:
    r = server.request("POST", "/v1/nope", {"x": "y"})
    assert r.status == 404
    err = r.json()["error"]
    assert err["code"] == "unknown_url"
    assert "does not exist" in err["message"] and "lives under" not in err["message"]
    r = server.request("GET", "/models")
    assert "The API lives under /v1." in r.json()["error"]["message"]


def test_assistant_prefill_continues_the_message(client: openai.OpenAI,
                                                 vocab: llama_cpp.Llama) -> None:
    # The tiny model's template is ChatML: the prompt must end in the assistant's header and
    # the prefill text, with no end-of-turn and no second header.
    def count(text: str) -> int:
        return len(vocab.tokenize(text.encode(), add_bos=False, special=True))

    head = "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
    plain = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1)
    assert plain.usage is not None
    bos = plain.usage.prompt_tokens - count(head)  # the worker may add a BOS token
    assert bos in (0, 1)
    prefill = "Sure, here"
    cont = client.chat.completions.create(
        model="tiny", max_tokens=1,
        messages=[*MESSAGES, {"role": "assistant", "content": prefill}])
    assert cont.usage is not None
    assert cont.usage.prompt_tokens == bos + count(head + prefill)
    assert cont.usage.prompt_tokens != bos + count(head + prefill + "<|im_end|>\n"
                                                   "<|im_start|>assistant\n")


# ---- completions ------------------------------------------------------------------------------

COMPLETION_ASKING: dict[str, Any] = {"best_of": 3}  # more choices than the model's 2 slots
COMPLETION_EXTRA = [r.name for r in fp.COMPLETION_FIELDS
                    if r.policy is fp.Policy.REFUSED and r.name not in COMPLETION_ASKING]


@pytest.mark.parametrize("name", sorted(COMPLETION_ASKING))
def test_unimplemented_completion_field_is_a_bad_request_naming_it(client: openai.OpenAI,
                                                                   name: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="Hello", max_tokens=2,
                                  **{name: COMPLETION_ASKING[name]})
    assert err.value.body["param"] == name  # type: ignore[index]


@pytest.mark.parametrize(("n", "words"), [(3, "--parallel"), (9, "--max-n"), (0, "")])
def test_n_the_server_cannot_give_is_a_bad_request_naming_it(client: openai.OpenAI, n: int,
                                                             words: str) -> None:
    """``n`` is applied (up to --max-n and the model's 2 slots here): beyond, a 400."""
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="Hello", max_tokens=2, n=n)
    assert err.value.body["param"] == "n"  # type: ignore[index]
    assert words in err.value.body["message"]  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "a"}],
                                       max_tokens=2, n=n)
    assert err.value.body["param"] == "n"  # type: ignore[index]


@pytest.mark.parametrize("name", sorted(COMPLETION_EXTRA))
def test_refused_completion_extension_field_is_a_bad_request(client: openai.OpenAI,
                                                             name: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt="Hello", max_tokens=2,
                                  extra_body={name: "x"})
    assert err.value.body["param"] == name  # type: ignore[index]


def test_completion_neutral_values_pass(client: openai.OpenAI) -> None:
    out = client.completions.create(model="tiny", prompt="Hello", max_tokens=2, n=1, best_of=1,
                                    logprobs=None, echo=False, user="u",
                                    extra_body={"response_format": {"type": "text"}})
    assert out.usage is not None and out.usage.completion_tokens == 2


def test_completion_token_ids_outside_the_vocabulary(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="tiny", prompt=[1, 2, 10**6], max_tokens=2)
    assert err.value.body["param"] == "prompt"  # type: ignore[index]
    assert "token id 1000000" in err.value.body["message"]  # type: ignore[index]
