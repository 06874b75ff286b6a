"""POST /v1/completions (every prompt form, echo, stop, streams, several prompts, FIM) and
/v1/tokenize, /v1/detokenize through real processes, on the tiny model and a tiny model with
fill-in-the-middle tokens (tiny-fim)."""

from __future__ import annotations

import http.client
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Response, Server, wait_until
from hearth.tools.cli.tiny_model import BOS_ID, FIM_TOKENS, IM_END_ID, build_tiny_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fim_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    d = tmp_path_factory.mktemp("models")
    shutil.copy(tiny_model_path, d / "tiny.gguf")
    build_tiny_model(d / "tiny-fim.gguf", fim="fim")
    return d


@pytest.fixture(scope="module")
def srv(fim_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = Server(fim_models_dir, "tiny", tmp_path_factory.mktemp("home"),
               args=("--parallel", "2", "--ctx-size", "256", "--threads", "1"))
    s.start()
    yield s
    assert s.stop() == 0, "".join(s.stderr)
    assert s.orphans() == []


def complete(srv: Server, **body: Any) -> Response:
    return srv.request("POST", "/v1/completions", {"model": "tiny", **body})


def stream(srv: Server, **body: Any) -> list[Any]:
    """Every ``data:`` payload of a streamed completion, JSON-decoded ("[DONE]" as is)."""
    return srv.stream_payloads("/v1/completions", {"model": "tiny", **body})


def tokenize(srv: Server, **body: Any) -> Response:
    return srv.request("POST", "/v1/tokenize", {"model": "tiny", **body})


def test_a_string_prompt(srv: Server) -> None:
    r = complete(srv, prompt="The quick brown fox", max_tokens=5, temperature=0)
    assert r.status == 200, r.body
    data = r.json()
    assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
    assert data["model"] == "tiny"
    (choice,) = data["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "length"
    assert choice["logprobs"] is None and isinstance(choice["text"], str)
    ids = tokenize(srv, content="The quick brown fox", add_special=True).json()["tokens"]
    usage = data["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (len(ids), 5)
    assert usage["total_tokens"] == len(ids) + 5


def test_a_repeated_prompt_is_served_from_the_prefix_cache(srv: Server) -> None:
    prompt = "the same long prompt " * 8
    complete(srv, prompt=prompt, max_tokens=2)
    again = complete(srv, prompt=prompt, max_tokens=2).json()["usage"]
    assert again["prompt_tokens_details"]["cached_tokens"] == again["prompt_tokens"] - 1


def test_max_tokens_defaults_to_16(srv: Server) -> None:
    r = complete(srv, prompt="hello", temperature=0)
    assert r.status == 200, r.body
    assert r.json()["usage"]["completion_tokens"] == 16


def test_no_chat_template_is_applied(srv: Server) -> None:
    """The prompt's tokens are the text's own (BOS added, as the tiny model's add_bos_token
    says): the chat template would add <|im_start|>user… around it."""
    text = "hello world"
    ids = tokenize(srv, content=text, add_special=True).json()["tokens"]
    assert ids[0] == BOS_ID
    r = complete(srv, prompt=text, max_tokens=1)
    assert r.json()["usage"]["prompt_tokens"] == len(ids)


def test_special_token_text_in_a_prompt_is_a_special_token(srv: Server) -> None:
    ids = tokenize(srv, content="hi<|im_end|>").json()["tokens"]
    assert IM_END_ID in ids


def test_token_id_prompts_give_the_same_greedy_text_as_their_text(srv: Server) -> None:
    text = "The little dog"
    ids = tokenize(srv, content=text, add_special=True).json()["tokens"]
    by_text = complete(srv, prompt=text, max_tokens=6, temperature=0).json()
    by_ids = complete(srv, prompt=ids, max_tokens=6, temperature=0).json()
    assert by_ids["choices"][0]["text"] == by_text["choices"][0]["text"]
    assert by_ids["usage"]["prompt_tokens"] == len(ids)


@pytest.mark.parametrize("form", ["strings", "id lists"])
def test_a_list_of_prompts_gives_one_choice_each_in_order(srv: Server, form: str) -> None:
    texts = ["one two", "the sea", "a big red dog"]
    alone = [complete(srv, prompt=t, max_tokens=4, temperature=0).json() for t in texts]
    prompts: list[Any] = texts
    if form == "id lists":
        prompts = [tokenize(srv, content=t, add_special=True).json()["tokens"] for t in texts]
    r = complete(srv, prompt=prompts, max_tokens=4, temperature=0)
    assert r.status == 200, r.body
    data = r.json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    assert data["usage"]["completion_tokens"] == 12
    assert data["usage"]["prompt_tokens"] == sum(a["usage"]["prompt_tokens"] for a in alone)
    assert data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + 12
    for choice in data["choices"]:
        assert choice["finish_reason"] == "length" and isinstance(choice["text"], str)


def test_echo_prepends_the_prompt(srv: Server) -> None:
    plain = complete(srv, prompt="hello there", max_tokens=4, temperature=0).json()
    echoed = complete(srv, prompt="hello there", max_tokens=4, temperature=0, echo=True).json()
    assert echoed["choices"][0]["text"] == "hello there" + plain["choices"][0]["text"]
    assert echoed["usage"]["completion_tokens"] == 4
    ids = tokenize(srv, content="hello there").json()["tokens"]
    by_ids = complete(srv, prompt=ids, max_tokens=1, echo=True).json()
    assert by_ids["choices"][0]["text"].startswith("hello there")


def test_stop_ends_the_choice(srv: Server) -> None:
    full = complete(srv, prompt="word", max_tokens=12, temperature=0).json()["choices"][0]
    text = full["text"]
    stop = text[len(text) // 2:len(text) // 2 + 2]
    assert stop.strip()
    cut = complete(srv, prompt="word", max_tokens=12, temperature=0, stop=[stop]).json()
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["text"] == text[:text.index(stop)]


def test_a_stream_with_usage(srv: Server) -> None:
    events = stream(srv, prompt="the sea", max_tokens=6, temperature=0,
                    stream_options={"include_usage": True})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 6
    texts = [c["choices"][0]["text"] for c in chunks[:-1]]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    whole = complete(srv, prompt="the sea", max_tokens=6, temperature=0).json()
    assert "".join(texts) == whole["choices"][0]["text"]


def test_a_stream_of_several_prompts_carries_each_index(srv: Server) -> None:
    events = stream(srv, prompt=["one", "two", "three"], max_tokens=5,
                    stream_options={"include_usage": True}, echo=True)
    chunks = events[:-1]
    by_index: dict[int, list[dict[str, Any]]] = {}
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        by_index.setdefault(choice["index"], []).append(choice)
    assert sorted(by_index) == [0, 1, 2]
    for i, word in enumerate(["one", "two", "three"]):
        assert "".join(ch["text"] for ch in by_index[i]).startswith(word)
        assert by_index[i][-1]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 15


@pytest.mark.parametrize("streamed", [True, False])
def test_a_disconnect_cancels_every_prompt(srv: Server, streamed: bool) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    conn.request("POST", "/v1/completions", headers=srv.headers(), body=json.dumps(
        {"model": "tiny", "prompt": ["one", "two"], "max_tokens": 100000,
         "stream": streamed}).encode())
    if streamed:
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.readline()
    wait_until(lambda: srv.busy_slots() == 2, srv.health)
    conn.sock.close()  # type: ignore[union-attr]
    conn.close()
    wait_until(lambda: srv.busy_slots() == 0, srv.health)


def test_one_bad_prompt_of_several_fails_the_request_and_frees_the_others(srv: Server) -> None:
    r = complete(srv, prompt=["fine", "word " * 600], max_tokens=100000)
    assert r.status == 400, r.body
    assert r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] == "prompt"
    wait_until(lambda: srv.busy_slots() == 0, srv.health)


def test_fill_in_the_middle(srv: Server) -> None:
    r = complete(srv, model="tiny-fim", prompt="def add(a, b):\n    ", suffix="\n    return c",
                 max_tokens=5, temperature=0)
    assert r.status == 200, r.body
    data = r.json()
    assert data["choices"][0]["finish_reason"] == "length"
    pre = tokenize(srv, model="tiny-fim", content="def add(a, b):\n    ").json()["tokens"]
    suf = tokenize(srv, model="tiny-fim", content="\n    return c").json()["tokens"]
    # [BOS] <fim_prefix> prefix <fim_suffix> suffix <fim_middle>
    assert data["usage"]["prompt_tokens"] == 1 + 3 + len(pre) + len(suf)
    layout = [BOS_ID, 1510, *pre, 1511, *suf, 1512]  # the FIM tokens: the tiny model's last ids
    spelled = complete(srv, model="tiny-fim", prompt=layout, max_tokens=5,
                       temperature=0).json()
    assert spelled["choices"][0]["text"] == data["choices"][0]["text"]
    assert tokenize(srv, model="tiny-fim", content="".join(FIM_TOKENS)).json()["tokens"] == \
        [1510, 1511, 1512]


def test_special_token_text_in_fim_code_stays_text(srv: Server) -> None:
    r = complete(srv, model="tiny-fim", prompt="a<|fim_middle|>", suffix="<|im_end|>",
                 max_tokens=1)
    as_text = tokenize(srv, model="tiny-fim", content="a<|fim_middle|><|im_end|>").json()
    # parsed, the text would be 2 special tokens; as text it is many more
    assert r.json()["usage"]["prompt_tokens"] > 1 + 3 + len(as_text["tokens"])


def test_continue_autocomplete_request_shape(srv: Server) -> None:
    """Continue's tab autocomplete: prompt + suffix, max_tokens, temperature, stop, stream."""
    events = stream(srv, model="tiny-fim", prompt="import os\nprint(", suffix=")\n",
                    max_tokens=8, temperature=0.01, stop=["\n\n", "```"])
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")


@pytest.mark.parametrize("body,param", [
    ({"model": "tiny", "prompt": "x", "suffix": "y"}, "suffix"),
    ({"model": "tiny-fim", "prompt": "x", "suffix": "y", "echo": True}, "echo"),
    ({"model": "tiny", "prompt": []}, "prompt"),
    ({"model": "tiny", "prompt": [[]]}, "prompt"),
    ({"model": "tiny", "prompt": ["a", 1]}, "prompt"),
    ({"model": "tiny", "prompt": [1, 99999]}, "prompt"),
    ({"model": "tiny", "prompt": [[5], [2**31]]}, "prompt"),
    ({"model": "tiny", "prompt": "word " * 600}, "prompt"),
    ({"model": "tiny", "prompt": "x", "logprobs": 6}, "logprobs"),
    ({"model": "tiny", "prompt": "x", "n": 3}, "n"),  # more than the 2 slots
    ({"model": "tiny", "prompt": "x", "n": 0}, "n"),
    ({"model": "tiny", "prompt": "x", "best_of": 3}, "best_of"),
    ({"model": "tiny", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"model": "tiny"}, "prompt"),
])
def test_bad_input_is_a_400_naming_the_field(srv: Server, body: dict[str, Any],
                                             param: str) -> None:
    r = srv.request("POST", "/v1/completions", body)
    assert r.status == 400, r.body
    assert r.json()["error"]["param"] == param, r.body


def test_neutral_values_of_unimplemented_fields_pass(srv: Server) -> None:
    r = complete(srv, prompt="x", max_tokens=1, n=1, best_of=1, logprobs=None, echo=False)
    assert r.status == 200, r.body


def test_tokenize_detokenize_round_trip(srv: Server) -> None:
    text = "Hello world, café ☕ <|im_end|>"
    ids = tokenize(srv, content=text).json()["tokens"]
    assert ids[0] != BOS_ID and IM_END_ID in ids
    with_bos = tokenize(srv, content=text, add_special=True).json()["tokens"]
    assert with_bos == [BOS_ID, *ids]
    r = srv.request("POST", "/v1/detokenize", {"model": "tiny", "tokens": ids})
    assert r.status == 200, r.body
    # SentencePiece's leading-space marker comes back as a space
    assert r.json()["content"].strip() == text


def test_tokenize_with_pieces_and_messages(srv: Server) -> None:
    pieces = tokenize(srv, content="hello ☕", with_pieces=True).json()["tokens"]
    assert all(set(p) == {"id", "piece"} for p in pieces)
    assert any(isinstance(p["piece"], list) for p in pieces)  # ☕ by byte fallback
    joined = b"".join(p["piece"].encode() if isinstance(p["piece"], str) else bytes(p["piece"])
                      for p in pieces)
    assert joined.decode().strip() == "hello ☕"
    chat = srv.request("POST", "/v1/tokenize",  # the default model
                       {"messages": [{"role": "user", "content": "hi"}]}).json()["tokens"]
    rendered = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"  # its chat template
    assert chat == tokenize(srv, content=rendered).json()["tokens"]


@pytest.mark.parametrize("path,body,param", [
    ("/v1/tokenize", {"model": "tiny"}, "content"),
    ("/v1/tokenize", {"model": "tiny", "content": "a", "messages": []}, "content"),
    ("/v1/tokenize", {"model": "nope", "content": "a"}, "model"),
    ("/v1/detokenize", {"model": "tiny", "tokens": [1, 5000]}, "tokens"),
    ("/v1/detokenize", {"model": "tiny", "tokens": [-1]}, "tokens"),
])
def test_tokenize_errors(srv: Server, path: str, body: dict[str, Any], param: str) -> None:
    r = srv.request("POST", path, body)
    assert r.status in (400, 404), r.body
    assert r.json()["error"]["param"] == param


def test_tokenize_needs_the_api_key(srv: Server) -> None:
    r = srv.request("POST", "/v1/tokenize", {"content": "a"},
                    headers={"Content-Type": "application/json"})
    assert r.status == 401
