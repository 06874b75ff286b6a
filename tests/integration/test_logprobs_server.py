"""Chat ``logprobs`` / ``top_logprobs`` and completions ``logprobs`` through real processes on the
tiny model: with greedy decoding each chosen token is the top-1 of its step and has the top-1's
log-probability; a stream's entries are the whole answer's (requests run one at a time: see
DESIGN's determinism note); the entries' bytes make the answer's text; ``text_offset`` points at
each token's text. (The 400s are driven with the SDK in test_request_fields.py.)"""

from __future__ import annotations

import http.client
import json
import math
from typing import Any

import pytest
from harness import Server

pytestmark = pytest.mark.integration

MESSAGES = [{"role": "user", "content": "Tell me a story about a lighthouse"}]


def post(server: Server, path: str, body: dict[str, Any]) -> Any:
    resp = server.request("POST", path, {"model": "tiny", **body})
    assert resp.status == 200, resp.body
    return resp.json()


def events(server: Server, path: str, body: dict[str, Any]) -> list[Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        conn.request("POST", path, headers=server.headers(),
                     body=json.dumps({"model": "tiny", "stream": True, **body}).encode())
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        out = []
        for line in resp.read().split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                out.append(json.loads(line[len(b"data: "):]))
        return out
    finally:
        conn.close()


def check_chat_entries(content: list[Any], k: int) -> None:
    for e in content:
        top = e["top_logprobs"]
        assert len(top) == k
        assert top[0]["token"] == e["token"] and top[0]["bytes"] == e["bytes"]
        assert math.isclose(top[0]["logprob"], e["logprob"], abs_tol=1e-6)
        assert all(a["logprob"] >= b["logprob"] for a, b in zip(top, top[1:], strict=False))
        assert all(t["logprob"] <= 0 for t in top)


def test_chat_greedy_tokens_are_the_top_1_and_make_the_content(server: Server) -> None:
    body = {"messages": MESSAGES, "max_tokens": 12, "temperature": 0, "logprobs": True,
            "top_logprobs": 4}
    whole = post(server, "/v1/chat/completions", body)
    choice = whole["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == whole["usage"]["completion_tokens"] > 0
    check_chat_entries(content, 4)
    joined = bytes(b for e in content for b in e["bytes"])
    assert joined.decode("utf-8", "replace") == choice["message"]["content"]

    chunks = events(server, "/v1/chat/completions", body)
    streamed = [e for c in chunks for ch in c["choices"]
                for e in ((ch.get("logprobs") or {}).get("content") or [])]
    assert streamed == content  # same batch composition: the same numbers
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    assert text == choice["message"]["content"]


def test_chat_without_top_logprobs_gives_the_chosen_token_only(server: Server) -> None:
    out = post(server, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3,
                                                "logprobs": True, "seed": 7})
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == out["usage"]["completion_tokens"]
    assert all(e["top_logprobs"] == [] and e["logprob"] <= 0 for e in content)


def test_chat_without_logprobs_has_none(server: Server) -> None:
    out = post(server, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3,
                                                "logprobs": False, "top_logprobs": 0})
    assert out["choices"][0]["logprobs"] is None
    for chunk in events(server, "/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 3}):
        assert all(ch["logprobs"] is None for ch in chunk["choices"])


def test_completions_legacy_shape_greedy_and_streamed(server: Server) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 10, "temperature": 0, "logprobs": 3}
    whole = post(server, "/v1/completions", body)
    choice = whole["choices"][0]
    lp = choice["logprobs"]
    n = whole["usage"]["completion_tokens"]
    assert n > 0
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) \
        == len(lp["text_offset"]) == n
    text = choice["text"]
    for token, logprob, top, offset in zip(lp["tokens"], lp["token_logprobs"],
                                           lp["top_logprobs"], lp["text_offset"], strict=True):
        best = max(top, key=top.get)
        assert best == token and math.isclose(top[best], logprob, abs_tol=1e-6)
        assert 3 <= len(top) <= 4  # the 3 most likely, and the chosen one (among them here)
        if not token.startswith("bytes:"):
            assert text[offset:offset + len(token)] == token
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0

    chunks = events(server, "/v1/completions", body)
    parts = [ch["logprobs"] for c in chunks for ch in c["choices"] if ch["logprobs"]]
    assert {key: [v for p in parts for v in p[key]] for key in lp} == lp
    assert "".join(ch["text"] for c in chunks for ch in c["choices"]) == text


def test_completions_logprobs_0_and_several_prompts(server: Server) -> None:
    out = post(server, "/v1/completions", {"prompt": ["a b c", "x y"], "max_tokens": 4,
                                           "logprobs": 0, "seed": 3})
    for choice in out["choices"]:
        lp = choice["logprobs"]
        assert [list(d) for d in lp["top_logprobs"]] == [[t] for t in lp["tokens"]]
        assert all(v <= 0 for v in lp["token_logprobs"])
    plain = post(server, "/v1/completions", {"prompt": "a", "max_tokens": 2})
    assert plain["choices"][0]["logprobs"] is None


# ---- echo with logprobs: the prompt's tokens scored --------------------------------------------


def check_echoed(choice: dict[str, Any], prompt_tokens: int, completion_tokens: int,
                 echo: str) -> None:
    """The legacy shape of an echoed prompt then its completion: the prompt's tokens first (the
    first one's items null), ``text_offset`` from 0 over both, the text echo + completion."""
    lp = choice["logprobs"]
    n = prompt_tokens + completion_tokens
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) \
        == len(lp["text_offset"]) == n
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    assert all(v is not None and v <= 0 for v in lp["token_logprobs"][1:])
    assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])
    assert choice["text"].startswith(echo)
    if completion_tokens:
        assert lp["text_offset"][prompt_tokens] == len(echo)


def test_echo_with_logprobs_scores_the_prompt_as_greedy_decoding_did(server: Server) -> None:
    """A prompt that is an earlier greedy answer (its token ids): each of its generated
    tokens is the top-1 of the row before it, with the log-probability the earlier answer gave
    it (within what a different batch composition changes: DESIGN's determinism note)."""
    text = "Once upon a time"
    start = post(server, "/v1/tokenize", {"content": text, "add_special": True})["tokens"]
    first = post(server, "/v1/completions", {"prompt": start, "max_tokens": 4,
                                             "temperature": 0, "logprobs": 2})
    lp1 = first["choices"][0]["logprobs"]
    # the answer's tokens as ids: the prompt's text and the answer's tokenized together give
    # back the prompt's ids and then the answer's tokens, as far as they match
    both = post(server, "/v1/tokenize", {"content": text + first["choices"][0]["text"],
                                         "add_special": True, "with_pieces": True})["tokens"]
    assert [t["id"] for t in both[:len(start)]] == start
    greedy: list[int] = []
    for t, token in zip(both[len(start):], lp1["tokens"], strict=False):
        if t["piece"] != token:
            break
        greedy.append(t["id"])
    if not greedy:
        pytest.skip("the tiny model's greedy tokens do not tokenize back")
    prompt = [*start, *greedy]
    body = {"prompt": prompt, "max_tokens": 3, "temperature": 0, "logprobs": 2, "echo": True}
    out = post(server, "/v1/completions", body)
    choice = out["choices"][0]
    assert out["usage"]["prompt_tokens"] == len(prompt)
    echo = post(server, "/v1/detokenize", {"tokens": prompt})["content"]
    check_echoed(choice, len(prompt), out["usage"]["completion_tokens"], echo)
    lp = choice["logprobs"]
    k = len(start)  # the greedy tokens' place in the prompt
    for i in range(len(greedy)):
        assert lp["tokens"][k + i] == lp1["tokens"][i]
        top = lp["top_logprobs"][k + i]
        assert max(top, key=top.get) == lp["tokens"][k + i]  # greedy: the row's top-1
        assert math.isclose(lp["token_logprobs"][k + i], lp1["token_logprobs"][i],
                            abs_tol=1e-3)  # (measured: within 1e-5 on CPU)
    # and the generated part is the greedy continuation of the whole prompt
    plain = post(server, "/v1/completions", {"prompt": prompt, "max_tokens": 3,
                                             "temperature": 0, "logprobs": 2})
    assert choice["text"] == echo + plain["choices"][0]["text"]
    assert lp["tokens"][len(prompt):] == plain["choices"][0]["logprobs"]["tokens"]

    chunks = events(server, "/v1/completions", body)
    parts = [ch["logprobs"] for c in chunks for ch in c["choices"] if ch["logprobs"]]
    streamed = {key: [v for p in parts for v in p[key]] for key in lp}
    assert streamed["tokens"] == lp["tokens"] and streamed["text_offset"] == lp["text_offset"]
    assert streamed["token_logprobs"][0] is None and streamed["top_logprobs"][0] is None
    assert "".join(ch["text"] for c in chunks for ch in c["choices"]) == choice["text"]


def test_echo_with_logprobs_on_text_every_choice_and_prompt(server: Server) -> None:
    prompts = ["The lighthouse keeper", "a b"]
    out = post(server, "/v1/completions", {"prompt": prompts, "max_tokens": 3, "n": 2,
                                           "seed": 5, "logprobs": 1, "echo": True})
    assert len(out["choices"]) == 4
    for choice in out["choices"]:
        text = prompts[choice["index"] // 2]
        lp = choice["logprobs"]
        assert choice["text"].startswith(text)
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert lp["tokens"][0] in ("", text[:len(lp["tokens"][0])])  # a BOS added: no text
        assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])


@pytest.mark.parametrize("stream", [False, True])
def test_echo_with_max_tokens_0_scores_the_prompt_only(server: Server, stream: bool) -> None:
    """OpenAI's way to score a prompt: ``echo``, ``logprobs`` and ``max_tokens: 0``."""
    prompt = "The lighthouse keeper"
    body = {"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 2, "n": 2}
    if not stream:
        out = post(server, "/v1/completions", body)
        assert out["usage"]["completion_tokens"] == 0
        for choice in out["choices"]:
            assert choice["text"] == prompt and choice["finish_reason"] == "length"
            check_echoed(choice, out["usage"]["prompt_tokens"], 0, prompt)
        return
    chunks = events(server, "/v1/completions", {**body, "stream_options":
                                                {"include_usage": True}})
    assert chunks[-1]["usage"]["completion_tokens"] == 0
    for index in (0, 1):
        mine = [ch for c in chunks for ch in c["choices"] if ch["index"] == index]
        assert "".join(ch["text"] for ch in mine) == prompt
        assert mine[-1]["finish_reason"] == "length"
        lp = [ch["logprobs"] for ch in mine if ch["logprobs"]]
        assert len(lp) == 1 and lp[0]["token_logprobs"][0] is None


def test_max_tokens_0_without_echo_is_refused(server: Server) -> None:
    resp = server.request("POST", "/v1/completions", {"model": "tiny", "prompt": "a",
                                                      "max_tokens": 0, "logprobs": 1})
    assert resp.status == 400 and resp.json()["error"]["param"] == "max_tokens"
