"""The host-RAM prompt cache (engine/ram_cache.py) on the tiny model: more conversations than
slots take turns; one pushed out of its slot is restored from RAM on its next turn, reports the
restored tokens as cached, and answers with the same greedy tokens as a server without the cache
evaluating it cold (requests one at a time); a small cap keeps the most recently saved states
and drops the oldest. In process: a restored state gives the next token the same logits, bit
for bit, as the slot that never lost it."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import API_KEY, Server
from hearth.engine.ram_cache import RamCache
from hearth.engine.runner import LlamaRunner, Segment
from hearth.engine.slots import SlotEngine
from hearth.scheduler.messages import (
    ChatJob,
    ChatMessage,
    Finished,
    RequestedSampling,
    ResolvedSampling,
)
from hearth.tools.model_config import WorkerConfig
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

ARGS = ("--parallel", "2", "--ctx-size", "256", "--threads", "1")
# A state of the tiny model is about 270 bytes per token: one conversation of ~150 tokens fits
# in 60 KiB, two do not.
SMALL_CAP = "60K"


def _serve(models_dir: Path, home: Path, cache_ram: str) -> Server:
    return Server(models_dir, "tiny", home, args=(*ARGS, "--cache-ram", cache_ram)).start()


@pytest.fixture(scope="module")
def cached(tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _serve(tiny_models_dir, tmp_path_factory.mktemp("home"), "64")
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)


@pytest.fixture(scope="module")
def uncached(tiny_models_dir: Path,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _serve(tiny_models_dir, tmp_path_factory.mktemp("home"), "0")
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)


def ram_metrics(srv: Server) -> dict[str, float]:
    r = srv.request("GET", "/metrics", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status == 200, r.body
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(r.body.decode()):
        for s in family.samples:
            if s.name.startswith("hearth_ram_cache_") and s.labels.get("model") == "tiny":
                out[s.name.removeprefix("hearth_ram_cache_")] = s.value
    return out


def settled_metrics(srv: Server, done: int) -> dict[str, float]:
    """The cache's metrics once the worker's stats cover ``done`` admissions (hits + misses):
    they travel with the worker's stats and the scheduler's status, about once a second."""
    deadline = time.monotonic() + 15
    while True:
        m = ram_metrics(srv)
        if m.get("hits_total", 0) + m.get("misses_total", 0) >= done:
            return m
        assert time.monotonic() < deadline, m
        time.sleep(0.1)


def topic(i: int, words: int) -> str:
    return f"Conversation {i}: " + " ".join(f"{w}{i}" for w in ["tell", "me", "about"] * words)


def ask(srv: Server, messages: list[dict[str, str]]) -> dict[str, Any]:
    r = srv.chat({"model": "tiny", "temperature": 0, "max_tokens": 8, "messages": messages})
    assert r.status == 200, r.body
    answer: dict[str, Any] = r.json()
    return answer


def take_turns(srv: Server, n_conversations: int, words: int) -> list[list[dict[str, Any]]]:
    """Each conversation's first turn, then each one's second (one request at a time): with
    more conversations than the server's 2 slots, every second turn finds its conversation
    pushed out of its slot. Returns each conversation's two answers."""
    history = [[{"role": "user", "content": topic(i, words)}] for i in range(n_conversations)]
    answers: list[list[dict[str, Any]]] = [[] for _ in range(n_conversations)]
    for turn in range(2):
        for i, messages in enumerate(history):
            if turn:
                messages += [{"role": "assistant",
                              "content": answers[i][0]["choices"][0]["message"]["content"]},
                             {"role": "user", "content": f"And then, {i}?"}]
            answers[i].append(ask(srv, messages))
    return answers


def cached_tokens(answer: dict[str, Any]) -> int:
    return int(answer["usage"]["prompt_tokens_details"]["cached_tokens"])


def text(answer: dict[str, Any]) -> str:
    return str(answer["choices"][0]["message"]["content"])


def test_a_conversation_pushed_out_of_its_slot_is_restored_with_the_cold_answer(
        cached: Server, uncached: Server) -> None:
    warm = take_turns(cached, 4, 10)
    cold = take_turns(uncached, 4, 10)
    firsts = [a[0]["usage"]["prompt_tokens"] for a in warm]
    for i in range(4):
        # the second turn found its first turn's prompt (and more) restored from RAM...
        assert cached_tokens(warm[i][1]) >= firsts[i], (i, warm[i][1]["usage"])
        # ... where, without the cache, it was evaluated cold (the template's opening tokens
        # are shared by every conversation, but fewer than are worth reusing)
        assert cached_tokens(cold[i][1]) == 0
        # and the greedy answers are the same
        assert [text(a) for a in warm[i]] == [text(a) for a in cold[i]], i
    m = settled_metrics(cached, 8)
    assert (m["hits_total"], m["misses_total"], m["restore_failures_total"]) == (4, 4, 0)
    assert m["saves_total"] >= 4 and m["restore_seconds_total"] > 0
    assert 0 < m["bytes"] and m["entries"] >= 1
    # the server without the cache reports it off: nothing held, nothing counted
    off = ram_metrics(uncached)
    assert off.get("bytes", 0) == off.get("hits_total", 0) == off.get("saves_total", 0) == 0


def test_a_small_cap_keeps_the_most_recently_saved_state_and_evicts_the_oldest(
        tiny_models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    srv = _serve(tiny_models_dir, tmp_path_factory.mktemp("home"), SMALL_CAP)
    try:
        convs = [[{"role": "user", "content": topic(i, 16)}] for i in range(4)]
        firsts = [ask(srv, messages) for messages in convs]  # C2 pushes C0 out, C3 pushes C1
        m = settled_metrics(srv, 4)
        assert (m["saves_total"], m["evictions_total"], m["entries"]) == (2, 1, 1)
        assert 0 < m["bytes"] <= 60 * 1024

        def again(i: int) -> dict[str, Any]:
            return ask(srv, [*convs[i], {"role": "assistant", "content": text(firsts[i])},
                             {"role": "user", "content": "And then?"}])

        c1 = again(1)  # saved last: restored (its slot's conversation, C2, saved in its place)
        assert cached_tokens(c1) >= firsts[1]["usage"]["prompt_tokens"]
        c0 = again(0)  # saved first, evicted when C1 was saved: evaluated cold
        assert cached_tokens(c0) == 0
        m = settled_metrics(srv, 6)
        assert (m["hits_total"], m["misses_total"]) == (1, 5)
        assert m["bytes"] <= 60 * 1024 and m["entries"] == 1
    finally:
        assert srv.stop() == 0, "".join(srv.stderr)


# ---- in process: the restored state is the slot's, bit for bit ----------------------------------


class RecordingSampler:
    """Greedy; keeps a copy of every logits row it sampled from."""

    threaded = False

    def __init__(self, runner: LlamaRunner, rows: list[np.ndarray]) -> None:
        self._runner = runner
        self.rows = rows

    def sample(self, logits_index: int) -> int:
        row = self._runner.logits_row(logits_index).copy()
        self.rows.append(row)
        return int(np.argmax(row))

    def free(self) -> None:
        pass


class RecordingRunner(LlamaRunner):
    def __init__(self, cfg: WorkerConfig) -> None:
        super().__init__(cfg)
        self.requests: list[list[np.ndarray]] = []

    def sampler(self, params: ResolvedSampling, seed: int) -> RecordingSampler:  # type: ignore[override]
        self.requests.append([])
        return RecordingSampler(self, self.requests[-1])


@pytest.fixture(scope="module")
def runner(tiny_model_path: Path) -> Iterator[RecordingRunner]:
    r = RecordingRunner(WorkerConfig(path=str(tiny_model_path), n_slots=1, n_ctx_slot=512,
                                     n_batch=64, n_threads=2))
    yield r
    r.close()


def _run(eng: SlotEngine[Segment], runner: RecordingRunner,
         tokens: Sequence[int]) -> tuple[int, list[np.ndarray]]:
    """One greedy request whose prompt is exactly ``tokens``: (cached tokens, its logits)."""
    runner.tokenize = lambda text, *, add_bos=None: list(tokens)  # type: ignore[method-assign]
    try:
        job = ChatJob(f"r{len(runner.requests)}", "fe", "k", "m", [ChatMessage("user", "-")],
                      RequestedSampling(temperature=0, max_tokens=6))
        assert eng.admit(job)[1]
        cached = -1
        while eng.has_work():
            events, _ = eng.step()
            for ev in events.get("fe", []):
                if isinstance(ev, Finished):
                    cached = ev.cached_tokens
    finally:
        del runner.tokenize
    return cached, runner.requests[-1]


def test_a_restored_state_gives_the_logits_of_the_slot_that_kept_it(
        runner: RecordingRunner) -> None:
    first = runner.tokenize("The first turn of a conversation that goes on and on. " * 3)
    other = runner.tokenize("Something else altogether, to push it out of the slot. " * 3)
    nxt = [*first, *runner.tokenize(" and the second turn", add_bos=False)]

    def engine(cache: RamCache | None) -> SlotEngine[Segment]:
        return SlotEngine(runner, render=lambda job: "-", n_slots=1, n_ctx_slot=512,
                          token_budget=64, make_segment=Segment, ram_cache=cache)

    kept = engine(None)  # the conversation keeps its slot
    _run(kept, runner, first)
    kept_cached, kept_rows = _run(kept, runner, nxt)

    cache = RamCache(64 * 1024 * 1024)
    moved = engine(cache)  # another prompt takes the slot in between
    _run(moved, runner, first)
    _run(moved, runner, other)
    restored_cached, restored_rows = _run(moved, runner, nxt)

    assert cache.hits == 1 and restored_cached == kept_cached >= len(first)
    assert [np.array_equal(a, b) for a, b in zip(kept_rows, restored_rows, strict=True)] == \
        [True] * len(kept_rows)
