"""Prefix affinity across remote boxes, through real processes in network namespaces: two
``hearth worker --join`` boxes (each in a namespace the test makes) serve the same model
(``faraway``, which the server itself does not have) with one slot each, and two conversations
take turns. With ``--routing prefix`` each later turn goes to the box whose slot holds its
conversation and finds its earlier turns cached (``usage.prompt_tokens_details.cached_tokens``):
only that box can give them, and the scheduler knows where they are only from the boxes'
``SlotFreed`` cache summaries, relayed over each box's tcp+CURVE link. With ``--routing even``
(the contrast), both boxes being idle between turns, every request goes to the first box,
whose one slot holds the other conversation by then: the same turns find nothing cached. (The
boxes run without the host-RAM prompt cache, which would otherwise restore an evicted
conversation on either rule.)
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server, free_port, wait_until
from netns import Box, Worker, models, print_key, server_key, two_boxes

pytestmark = pytest.mark.integration

# no host-RAM prompt cache: what a later turn finds cached is then only what its box's slot holds
BOX_ARGS = ("--model", "faraway", "--parallel", "1", "--ctx-size", "512", "--threads", "1",
            "--cache-ram", "0")


@pytest.fixture(scope="module")
def boxes() -> Iterator[list[Box]]:
    yield from two_boxes("7")


@pytest.fixture(scope="module")
def box_models(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("box-models")
    (d / "faraway.gguf").write_bytes(tiny_model_path.read_bytes())
    return d


class Joined:
    """A server with ``routing`` and both boxes joined to it; ``restart`` replaces the server
    with a new one (same config dir, so the same key pair, and the same listen address), which
    the boxes join again by themselves."""

    def __init__(self, srv: Server, routing: str) -> None:
        self.srv, self.routing = srv, routing

    def restart(self) -> None:
        assert self.srv.stop() == 0, "".join(self.srv.stderr)
        assert self.srv.orphans() == []
        self.srv = Server(self.srv.models_dir, "tiny", self.srv.home, args=self.srv.args)
        self.srv.start()


@pytest.fixture(params=["prefix", "even"])
def joined(request: pytest.FixtureRequest, boxes: list[Box], tiny_models_dir: Path,
           box_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Joined]:
    """A server with the given --routing and both boxes joined (box1 first, so it is first
    in the scheduler's order of the model's workers)."""
    homes = {n: tmp_path_factory.mktemp(n) for n in ("server", "box1", "box2")}
    config = homes["server"] / "hearth.toml"
    config.write_text(f'[workers]\nbox1 = "{print_key(homes["box1"])}"\n'
                      f'box2 = "{print_key(homes["box2"])}"\n')
    listen = f"tcp://{boxes[0].host_ip}:{free_port()}"
    srv = Server(tiny_models_dir, "tiny", homes["server"],
                 args=("--parallel", "1", "--ctx-size", "256", "--threads", "1",
                       "--config", str(config), "--worker-listen", listen,
                       "--routing", request.param))
    srv.start()
    it = Joined(srv, request.param)
    workers: list[Worker] = []
    try:
        for i, box in enumerate(boxes):
            name = f"box{i + 1}"
            w = Worker(box, homes[name], box_models, "--join", listen,
                       "--server-key", server_key(srv), *BOX_ARGS)
            workers.append(w)
            wait_until(lambda n=name: models(srv).get("faraway", [])[-1:] == [n],
                       lambda w=w: w.text() + "".join(srv.stderr), timeout=60)
        yield it
    finally:
        for w in workers:
            assert w.stop() == 0, w.text()
        assert it.srv.stop() == 0, "".join(it.srv.stderr)
    assert it.srv.orphans() == []


def metric(srv: Server, pattern: str) -> list[tuple[str, ...]]:
    return re.findall(pattern, srv.request("GET", "/metrics").body.decode())


def idle(srv: Server) -> bool:
    busy = metric(srv, r'hearth_remote_worker_slots_busy\{[^}]*worker="(\w+)"\} (\S+)')
    return len(busy) == 2 and all(float(n) == 0 for _, n in busy)


def routed(srv: Server) -> dict[str, float]:
    return {by: float(n) for by, n in
            metric(srv, r'hearth_routed_requests_total\{by="(\w+)",model="faraway"\} (\S+)')}


def box_tokens(srv: Server) -> dict[str, float]:
    return {name: float(n) for name, n in
            metric(srv, r'hearth_remote_worker_tokens_total\{[^}]*worker="(\w+)"\} (\S+)')}


def turn(srv: Server, messages: list[dict[str, str]], text: str) -> int:
    """One turn of a conversation: its cached_tokens. Returns once the box's SlotFreed (with
    its cache summary) has crossed the link."""
    messages.append({"role": "user", "content": text})
    r = srv.chat({"model": "faraway", "max_tokens": 3, "temperature": 0, "messages": messages})
    assert r.status == 200, r.body
    body = r.json()
    messages.append({"role": "assistant",
                     "content": body["choices"][0]["message"]["content"] or "ok"})
    wait_until(lambda: idle(srv), lambda: "".join(srv.stderr))
    return int(body["usage"]["prompt_tokens_details"]["cached_tokens"])


def test_a_conversation_s_next_turn_goes_to_the_box_holding_it(joined: Joined) -> None:
    srv, routing = joined.srv, joined.routing
    assert models(srv)["faraway"] == ["box1", "box2"]
    conversations: dict[str, list[dict[str, str]]] = {
        "a": [{"role": "system", "content": "You answer questions about gardens. " * 4}],
        "b": [{"role": "system", "content": "You answer questions about boats and sails. " * 4}],
    }
    cached: dict[str, list[int]] = {"a": [], "b": []}
    for i in range(3):
        for name, messages in conversations.items():
            cached[name].append(turn(srv, messages, f"question {i} about {name}"))
    later = cached["a"][1:] + cached["b"][1:]
    if routing == "prefix":
        assert all(n > 0 for n in later), cached
        wait_until(lambda: routed(srv).get("prefix") == 4.0, lambda: routed(srv))
        assert routed(srv) == {"prefix": 4.0, "load": 2.0}
        # one conversation on each box (their token counts come with their stats, each second)
        wait_until(lambda: all(box_tokens(srv).get(b, 0) > 0 for b in ("box1", "box2")),
                   lambda: box_tokens(srv))
    else:  # every request on box1, its one slot holding the other conversation
        assert later == [0, 0, 0, 0], cached
        wait_until(lambda: routed(srv).get("load") == 6.0, lambda: routed(srv))
        assert box_tokens(srv).get("box2", 0) == 0
    if routing == "even":
        return
    # A restarted server knows nothing of the boxes but what they say when they join again
    # (in either order): each Join carries what its slots hold, so the next turns go back to
    # the boxes holding them at once
    joined.restart()
    srv = joined.srv
    wait_until(lambda: sorted(models(srv).get("faraway", [])) == ["box1", "box2"],
               lambda: "".join(srv.stderr), timeout=60)
    again = {name: turn(srv, messages, f"back to {name}")
             for name, messages in conversations.items()}
    assert all(n > 0 for n in again.values()), again
    wait_until(lambda: routed(srv).get("prefix") == 2.0, lambda: routed(srv))
