"""A big prompt is tokenized off the worker's decode loop (engine/prepare.py): while a worker
renders and tokenizes a prompt of megabytes, its other requests go on — through real processes
on the tiny model.

Measured before the change: an 8 MB ``count_tokens`` body held another user's chat for the 7 s
its tokenizing took (the issue-18 review)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

from harness import Server, wait_until

# 7.7 MB of text (ASCII: JSON sends it as is), under the 8 MB body limit: seconds of tokenizing
# on the tiny model's SentencePiece vocabulary (5 s for 8 MB on the 2-core test machine)
BIG = "The quick brown fox jumps over the lazy dog, 1234. " * 150_000


def test_a_chat_is_answered_while_a_big_prompt_is_tokenized(server: Server) -> None:
    answer: dict[str, Any] = {}

    def count() -> None:
        resp = server.request("POST", "/v1/messages/count_tokens", {
            "model": "tiny", "messages": [{"role": "user", "content": BIG}]})
        answer["resp"] = resp

    big = threading.Thread(target=count)
    big.start()
    try:
        time.sleep(1.5)  # the body is sent, read and handed to the worker well within this
        # a small chat sent while the worker tokenizes: answered before the big one ends
        chat = server.chat({"model": "tiny", "max_tokens": 8, "temperature": 0,
                            "messages": [{"role": "user", "content": "hi"}]})
        assert chat.status == 200, chat.body
        assert "resp" not in answer, "the chat waited for the big prompt's tokenizing"
    finally:
        big.join(120)
    resp = answer["resp"]
    assert resp.status == 200, resp.body
    # every token is at most 12 bytes in this vocabulary ("max token length" in its header)
    assert resp.json()["input_tokens"] > len(BIG.encode()) // 12


def test_a_big_prompt_over_the_context_is_a_400_and_the_worker_goes_on(server: Server) -> None:
    resp = server.chat({"model": "tiny", "max_tokens": 4,
                        "messages": [{"role": "user", "content": BIG}]})
    assert resp.status == 400, resp.body
    err = resp.json()["error"]
    assert err["code"] == "context_length_exceeded" and err["param"] == "messages"
    ok = server.chat({"model": "tiny", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status == 200, ok.body
    wait_until(lambda: server.busy_slots() == 0, server.health)


def test_a_client_that_leaves_during_tokenizing_frees_its_place(server: Server) -> None:
    """The request is cancelled while its prompt is on the prepare thread: nothing of it is
    left (no busy slot), and later requests are answered."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/v1/chat/completions", headers=server.headers(), body=json.dumps({
        "model": "tiny", "max_tokens": 4, "stream": True,
        "messages": [{"role": "user", "content": BIG}]}).encode())
    time.sleep(1.0)
    conn.close()  # gone before its prompt is tokenized
    ok = server.chat({"model": "tiny", "max_tokens": 4,
                      "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status == 200, ok.body
    # (a slot is freed a moment after its answer is sent: the scheduler hears it separately)
    wait_until(lambda: server.busy_slots() == 0, server.health)


def test_big_embeddings_inputs_are_prepared_off_the_loop_too(server: Server) -> None:
    """An embeddings request of megabytes goes through the prepare thread: its over-long input
    is a 400 naming ``input``; a small one beside it is answered."""
    resp = server.request("POST", "/v1/embeddings", {"model": "tiny", "input": [BIG[:2_000_000]]})
    assert resp.status == 400, resp.body
    assert resp.json()["error"]["param"] == "input"
    small = server.request("POST", "/v1/embeddings", {"model": "tiny", "input": ["hi", "there"]})
    assert small.status == 200, small.body
    assert len(small.json()["data"]) == 2
