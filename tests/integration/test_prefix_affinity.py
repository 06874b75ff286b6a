"""Prefix-affinity routing across a model's replicas, through real processes: two workers of
the tiny model, one slot each, and two conversations taking turns. Each later turn must find
its conversation's earlier turns cached (usage.prompt_tokens_details.cached_tokens), which only
the worker that ran them can give (the test waits for the scheduler to see each slot freed, as
it has by a person's next turn: a worker still busy is never chosen). With --routing even, both
workers being idle between turns, every request goes to the first worker, whose one slot holds
the other conversation by then: the same turns find nothing cached (checked too, so the test
shows what affinity changes)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server, wait_until

pytestmark = pytest.mark.integration

# no host-RAM prompt cache (on by default): it would restore an evicted conversation under either
# rule, and what a later turn finds cached would no longer say which worker ran it
ARGS = ("--ctx-size", "512", "--threads", "1", "--cache-ram", "0")
CONFIG = "[models.tiny]\nreplicas = 2\nparallel = 1\nthreads = 1\n"


def serve(tiny_models_dir: Path, home: Path, routing: str) -> Server:
    config = home / "hearth.toml"
    config.write_text(CONFIG)
    return Server(tiny_models_dir, "tiny", home,
                  args=(*ARGS, "--config", str(config), "--routing", routing)).start()


@pytest.fixture(params=["prefix", "even"])
def server(request: pytest.FixtureRequest, tiny_models_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = serve(tiny_models_dir, tmp_path_factory.mktemp("home"), request.param)
    try:
        yield srv
    finally:
        assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


def both_ready(srv: Server) -> bool:
    models = srv.request("GET", "/v1/models").json()["data"]
    return any(m["id"] == "tiny" and m["hearth"]["loaded"] for m in models) and \
        "hearth_slots_total{model=\"tiny\"} 2.0" in srv.request("GET", "/metrics").body.decode()


def idle(srv: Server) -> bool:
    return "hearth_slots_busy{model=\"tiny\"} 0.0" in srv.request("GET", "/metrics").body.decode()


def routed(srv: Server) -> dict[str, float]:
    text = srv.request("GET", "/metrics").body.decode()
    return {by: float(n) for by, n in
            re.findall(r'hearth_routed_requests_total\{by="(\w+)",model="tiny"\} (\S+)', text)}


def test_a_conversation_s_next_turn_finds_its_cache(server: Server) -> None:
    wait_until(lambda: both_ready(server), lambda: server.stderr, timeout=60)
    routing = "prefix" if "--routing" in server.args and \
        server.args[server.args.index("--routing") + 1] == "prefix" else "even"
    conversations: dict[str, list[dict[str, str]]] = {
        "a": [{"role": "system", "content": "You answer questions about gardens. " * 4}],
        "b": [{"role": "system", "content": "You answer questions about boats and sails. " * 4}],
    }
    cached: dict[str, list[int]] = {"a": [], "b": []}
    for turn in range(3):
        for name, messages in conversations.items():
            messages.append({"role": "user", "content": f"question {turn} about {name}"})
            r = server.chat({"model": "tiny", "max_tokens": 3, "temperature": 0,
                             "messages": messages})
            assert r.status == 200, r.body
            body = r.json()
            cached[name].append(body["usage"]["prompt_tokens_details"]["cached_tokens"])
            messages.append({"role": "assistant",
                             "content": body["choices"][0]["message"]["content"] or "ok"})
            # the answer comes straight from the worker; its slot is free for routing once the
            # scheduler has heard (as it has by a person's next turn)
            wait_until(lambda: idle(server), lambda: server.stderr)
    later = cached["a"][1:] + cached["b"][1:]
    if routing == "prefix":
        assert all(n > 0 for n in later), cached
        wait_until(lambda: routed(server).get("prefix") == 4.0, lambda: routed(server))
        assert routed(server) == {"prefix": 4.0, "load": 2.0}
    else:  # every request on the first worker, its one slot holding the other conversation
        assert later == [0, 0, 0, 0], cached
        wait_until(lambda: routed(server).get("load") == 6.0, lambda: routed(server))
