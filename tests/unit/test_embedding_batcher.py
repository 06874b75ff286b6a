"""EmbeddingBatcher (engine/embeddings.py) over a fake embedder, and the embeddings request
types."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hearth.api import openai_types
from hearth.engine.embeddings import EmbeddingBatcher
from hearth.scheduler.errors import InvalidRequest
from hearth.scheduler.messages import Embedded, EmbedJob, Failed


class FakeEmbedder:
    def __init__(self, n_ctx: int = 16, n_seq_max: int = 3) -> None:
        self.n_ctx, self.n_seq_max = n_ctx, n_seq_max
        self.calls: list[list[list[int]]] = []

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[bytes]:
        self.calls.append([list(i) for i in inputs])
        return [bytes(i) for i in inputs]


N_EMBD = 8  # the width of the fake model's vectors


def jobs(emb: FakeEmbedder, n_ctx: int = 16) -> EmbeddingBatcher:
    return EmbeddingBatcher(lambda text: list(text.encode()), 256, N_EMBD, lambda: emb, n_ctx,
                            batch_tokens=emb.n_ctx)


def run(j: EmbeddingBatcher) -> list[tuple[str, list[object], str]]:
    out = []
    while j.has_work():
        out.extend(j.step())
    return out  # type: ignore[arg-type]


def test_inputs_are_packed_into_few_batches_in_order() -> None:
    emb = FakeEmbedder(n_ctx=16, n_seq_max=3)
    j = jobs(emb)
    assert j.admit(EmbedJob("r", "fe", "k", "m", texts=["aaaa", "bb", "c", "dddddddddd", "e"])) \
        is None
    ((frontend, events, rid),) = run(j)
    assert (frontend, rid) == ("fe", "r")
    (ev,) = events
    assert isinstance(ev, Embedded)
    assert ev.vectors == [b"aaaa", b"bb", b"c", b"dddddddddd", b"e"]
    assert ev.prompt_tokens == 18
    assert [len(c) for c in emb.calls] == [3, 2]  # 3 sequences max, then 16 tokens max


def test_token_ids_outside_the_vocabulary_fail() -> None:
    failed = jobs(FakeEmbedder()).admit(EmbedJob("r", "fe", "k", "m", tokens=[[1, 2], [3, 256]]))
    assert isinstance(failed, Failed)
    assert failed.kind == "InvalidRequest" and failed.param == "input"
    assert "256" in failed.message


def test_too_long_input_fails() -> None:
    failed = jobs(FakeEmbedder(), n_ctx=4).admit(EmbedJob("r", "fe", "k", "m", texts=["hello"]))
    assert isinstance(failed, Failed) and failed.param == "input"


def test_inputs_of_several_requests_share_a_batch() -> None:
    emb = FakeEmbedder(n_ctx=64, n_seq_max=8)
    j = jobs(emb, n_ctx=64)
    for i in range(4):
        j.admit(EmbedJob(f"r{i}", "fe", "k", "m", texts=[f"one {i}", f"two {i}"]))
    done = run(j)
    assert [rid for _, _, rid in done] == ["r0", "r1", "r2", "r3"]
    assert len(emb.calls) == 1 and len(emb.calls[0]) == 8
    for i, (_, (ev,), _) in enumerate(done):
        assert isinstance(ev, Embedded) and ev.vectors == [f"one {i}".encode(),
                                                           f"two {i}".encode()]


def test_a_long_input_goes_alone() -> None:
    emb = FakeEmbedder(n_ctx=64, n_seq_max=8)
    j = EmbeddingBatcher(lambda text: list(text.encode()), 256, N_EMBD, lambda: emb, 64,
                         batch_tokens=8)
    j.admit(EmbedJob("r", "fe", "k", "m", texts=["ab", "a much longer input", "cd"]))
    run(j)
    assert [[bytes(t) for t in c] for c in emb.calls] == [
        [b"ab"], [b"a much longer input"], [b"cd"]]


def test_dimensions_other_than_the_models_width_fail_before_the_inputs() -> None:
    # an empty input is also wrong: the width is checked first (as the api did before)
    failed = jobs(FakeEmbedder()).admit(EmbedJob("r", "fe", "k", "m", texts=[""], dimensions=4))
    assert isinstance(failed, Failed)
    assert (failed.kind, failed.param) == ("InvalidRequest", "dimensions")
    assert failed.message == ("'m' does not support shortening its embeddings: its vectors "
                              "have 8 dimensions.")


def test_dimensions_equal_to_the_models_width_are_accepted() -> None:
    j = jobs(FakeEmbedder())
    assert j.admit(EmbedJob("r", "fe", "k", "m", texts=["x"], dimensions=N_EMBD)) is None
    ((_, (ev,), _),) = run(j)
    assert isinstance(ev, Embedded) and ev.vectors == [b"x"]


def test_cancel_drops_the_job() -> None:
    j = jobs(FakeEmbedder())
    j.admit(EmbedJob("r", "fe", "k", "m", texts=["x"]))
    assert j.cancel("r") and not j.has_work() and not j.cancel("r")


def test_embedder_failure_fails_the_job() -> None:
    class Broken(FakeEmbedder):
        def embed(self, inputs: Sequence[Sequence[int]]) -> list[bytes]:
            raise RuntimeError("llama.cpp failed to evaluate the inputs (status -1)")

    j = jobs(Broken())
    j.admit(EmbedJob("r", "fe", "k", "m", texts=["x"]))
    ((_, (ev,), _),) = run(j)
    assert isinstance(ev, Failed) and ev.kind == "InternalError"


@pytest.mark.parametrize(("body", "texts", "tokens"), [
    (b'{"model":"m","input":"hi"}', ["hi"], []),
    (b'{"model":"m","input":["a","b"]}', ["a", "b"], []),
    (b'{"model":"m","input":[1,2,3]}', [], [[1, 2, 3]]),
    (b'{"model":"m","input":[[1],[2,3]],"user":"u","extra":1}', [], [[1], [2, 3]]),
])
def test_wire_inputs(body: bytes, texts: list[str], tokens: list[list[int]]) -> None:
    req = openai_types.parse_embedding_request(body)
    assert openai_types.embedding_inputs(req) == (texts, tokens)


@pytest.mark.parametrize("body", [
    b'{"model":"m","input":""}', b'{"model":"m","input":[]}', b'{"model":"m","input":["a",1]}',
    b'{"model":"m","input":[[1],[]]}', b'{"model":"m","input":[-1]}',
    b'{"model":"m","input":{"a":1}}', b'{"model":"m"}',
    b'{"model":"m","input":[' + b",".join([b'"x"'] * 2049) + b"]}",
])
def test_wire_bad_inputs(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        openai_types.embedding_inputs(openai_types.parse_embedding_request(body))
    assert info.value.param == "input"


def test_wire_bad_encoding_format() -> None:
    with pytest.raises(InvalidRequest) as info:
        openai_types.parse_embedding_request(b'{"model":"m","input":"x","encoding_format":"int8"}')
    assert info.value.param == "encoding_format"
