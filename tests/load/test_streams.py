"""Many concurrent streams through real processes on the tiny model: none is lost, and clients
that hang up mid-stream leave no slot busy and nothing queued.

Sizes come from ``HEARTH_LOAD`` (see conftest.py); the same code runs at both sizes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import API_KEY, Server
from load_client import (
    NOT_TEXT_TOKENS,
    Connection,
    Samples,
    check_stream,
    sample,
    scrape,
    settled,
    stream_chat,
)
from load_support import LoadSizes

pytestmark = pytest.mark.load

PARALLEL = 8
ARGS = ("--parallel", str(PARALLEL), "--ctx-size", "256", "--threads", "1",
        "--max-queue", "1024")
AUTH = {"Authorization": f"Bearer {API_KEY}"}
REQUEST_TIMEOUT = 120.0
STOPS = ("q", "Th")  # stop strings of the requests that use them
SYSTEM = ("You are a careful assistant who answers in plain words, without lists, and keeps "
          "every answer short. ") * 3  # shared by half the requests: the prefix cache is used


@pytest.fixture(scope="module")
def server(load_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(load_models_dir, "tiny", tmp_path_factory.mktemp("home"), args=ARGS).start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []
    assert "Traceback" not in "".join(srv.stderr), "".join(srv.stderr)


def chat_body(n: int, max_tokens: int, *, exact: bool) -> dict[str, Any]:
    """Request ``n`` of a load run. ``exact``: non-text tokens biased away and no stop strings,
    so every token is one content chunk; otherwise stop strings and every token allowed."""
    messages = [{"role": "user", "content": f"Request {n}: tell me about the word {n * 7919}."}]
    if n % 2:
        messages.insert(0, {"role": "system", "content": SYSTEM})
    body: dict[str, Any] = {
        "model": "tiny", "messages": messages, "max_tokens": max_tokens, "stream": True,
        "stream_options": {"include_usage": True}, "temperature": 1.0, "seed": n}
    if exact:
        body["logit_bias"] = NOT_TEXT_TOKENS
    else:
        body["stop"] = list(STOPS)
    return body


async def one_stream(port: int, n: int, max_tokens: int) -> tuple[str, dict[str, Any] | None]:
    """Stream request ``n``; ('ok' and its usage) or (why it was lost, None)."""
    exact = n % 4 != 3
    res = await stream_chat(port, chat_body(n, max_tokens, exact=exact), AUTH, REQUEST_TIMEOUT)
    try:
        checked = check_stream(res, "tiny", max_tokens, every_token_is_text=exact,
                               stops=() if exact else STOPS)
    except AssertionError as exc:
        return f"request {n}: {exc}", None
    return checked.request_id, checked.usage


def test_concurrent_streams_lose_nothing(server: Server, sizes: LoadSizes,
                                         report: Callable[[str], None]) -> None:
    """``sizes.clients`` clients stream ``sizes.requests_per_client`` requests each, back to
    back, each on its own connection: every stream ends with one finish_reason, a usage chunk
    whose completion_tokens matches its deltas, and [DONE]; the server's own counters agree."""

    async def main() -> tuple[list[tuple[str, dict[str, Any] | None]], float, Samples,
                              Samples]:
        before = await scrape(server.port, API_KEY)
        results: list[tuple[str, dict[str, Any] | None]] = []

        async def client(c: int) -> None:
            for j in range(sizes.requests_per_client):
                n = c * sizes.requests_per_client + j
                results.append(await one_stream(server.port, n, 1 + (n * 7) % 48))

        started = time.monotonic()
        await asyncio.gather(*(client(c) for c in range(sizes.clients)))
        wall = time.monotonic() - started
        await settled(server.port, API_KEY)
        return results, wall, before, await scrape(server.port, API_KEY)

    results, wall, before, after = asyncio.run(main())
    lost = [why for why, usage in results if usage is None]
    ok = [(rid, usage) for rid, usage in results if usage is not None]
    tokens = sum(u["completion_tokens"] for _, u in ok)
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for _, u in ok)
    report(f"{sizes.clients} clients, {len(results)} streamed requests, {len(lost)} lost; "
           f"{tokens} completion tokens, {cached} cached prompt tokens, {wall:.1f}s")
    assert len(results) == sizes.requests
    assert lost == [], f"{len(lost)} lost, e.g. {lost[:3]}"
    assert len({rid for rid, _ in ok}) == len(ok)
    assert cached > 0  # the shared system prompt was reused
    # the server counted what the clients saw
    labels = {"endpoint": "chat.completions", "model": "tiny", "status": "200", "key": "key1"}
    assert (sample(after, "hearth_requests_total", **labels)
            - sample(before, "hearth_requests_total", **labels)) == len(ok)
    assert (sample(after, "hearth_completion_tokens_total", model="tiny")
            - sample(before, "hearth_completion_tokens_total", model="tiny")) == tokens


async def hang_up(port: int, rng: random.Random, n: int) -> str:
    """Start a long stream and close the connection at a random point: with half the body
    sent, right after sending (before any answer: often still queued), after the response
    headers, or after k events. Some close normally, some reset the connection. Returns where
    it hung up."""
    where = rng.choice(("partial", "sent", "headers", "events", "events", "events"))
    abort = rng.random() < 0.3
    conn = await Connection.open(port, "POST", "/v1/chat/completions",
                                 chat_body(n, 200, exact=True), AUTH, partial=where == "partial")
    try:
        if where in ("partial", "sent"):
            await asyncio.sleep(rng.uniform(0, 0.05))
            return where
        await asyncio.wait_for(conn.read_head(), REQUEST_TIMEOUT)
        assert conn.status == 200, conn.status
        if where == "events":
            want = rng.randint(1, 30)
            async for _ in conn.events():
                want -= 1
                if want == 0:
                    break
        return where
    finally:
        conn.close(abort=abort)


def test_clients_hanging_up_leave_nothing_busy(server: Server, sizes: LoadSizes,
                                               report: Callable[[str], None]) -> None:
    """``sizes.disconnects`` clients start 200-token streams at once (most wait in the queue)
    and hang up at random points (hang_up), while a few other clients stream normally.
    Afterwards the scheduler reports no busy slot and nothing queued, and every slot serves
    again."""
    rng = random.Random(1234)
    normal = max(2, sizes.clients // 8)

    async def main() -> tuple[dict[str, int], list[str], dict[str, Any]]:
        where: dict[str, int] = {}

        async def leaver(i: int) -> None:
            w = await hang_up(server.port, rng, 100_000 + i)
            where[w] = where.get(w, 0) + 1

        async def stayer(i: int) -> str:
            why, usage = await one_stream(server.port, 200_000 + i, 1 + (i * 5) % 48)
            return "" if usage is not None else why

        outcome = await asyncio.gather(*(leaver(i) for i in range(sizes.disconnects)),
                                       *(stayer(i) for i in range(normal)))
        lost = [why for why in outcome if why]
        after = await settled(server.port, API_KEY)
        # every slot serves again: more fresh streams than slots, all at once
        fresh = await asyncio.gather(*(one_stream(server.port, 300_000 + i, 16)
                                       for i in range(2 * PARALLEL)))
        lost += [why for why, usage in fresh if usage is None]
        return where, lost, after

    where, lost, after = asyncio.run(main())
    how = ", ".join(f"{n} {w}" for w, n in sorted(where.items()))
    report(f"{sizes.disconnects} clients hung up ({how}) "
           f"beside {normal} streaming; afterwards busy slots {after['slots']['busy']}/"
           f"{after['slots']['total']}, queued {after['queued']}; lost {len(lost)}")
    assert sum(where.values()) == sizes.disconnects
    assert lost == [], lost[:3]

