"""scheduler/messages.py: every ZeroMQ message round-trips on its channel and nowhere else."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hearth.scheduler.errors import ErrorKind, WorkerDied
from hearth.scheduler.messages import (
    Assign,
    Cancel,
    ChatJob,
    ChatMessage,
    Codec,
    EventBatch,
    Failed,
    Finished,
    ModelState,
    RequestedSampling,
    SchedulerStatus,
    Shutdown,
    SlotFreed,
    Started,
    TextDelta,
    WorkerFailed,
    WorkerReady,
    WorkerSpec,
)
from hearth.tools.model_config import WorkerConfig

PARAMS = RequestedSampling(max_tokens=8, temperature=0.0, top_p=0.9, top_k=40, min_p=0.05, seed=7,
                           frequency_penalty=0.5, presence_penalty=-0.5,
                           logit_bias={15: -100.0, 2: 3.5}, stop=["\n", "END"])
CHAT_JOB = ChatJob("chatcmpl-1", "fe-1", "key1", "tiny",
                   [ChatMessage("system", "Be brief."), ChatMessage("user", "héllo 😀")], PARAMS)

# channel name (a Codec decoder attribute) -> messages that travel on it
CHANNELS: dict[str, list[msgspec.Struct]] = {
    "to_scheduler": [CHAT_JOB, Cancel("chatcmpl-1")],
    "to_worker": [Assign(CHAT_JOB), Cancel("chatcmpl-2"), Shutdown()],
    "from_worker": [WorkerReady("w1", "tiny", 4),
                    WorkerFailed("w1", "tiny", "bad magic"),
                    SlotFreed("w1", "chatcmpl-1"),
                    SlotFreed("w1", "chatcmpl-1", b"\x01" * 16), SlotFreed("w1", "c", b"")],
    "events": [
        EventBatch([]),
        EventBatch([Started("r1", 12, 3), TextDelta("r1", "Hé", 2), TextDelta("r1", "", 1),
                    Finished("r1", "length", 12, 3, 3),
                    Failed("r2", ErrorKind.CONTEXT_LENGTH_EXCEEDED, "too long", "messages"),
                    Finished("r3", "cancelled", 1, 0),
                    Failed("r4", ErrorKind.WORKER_DIED, "gone")]),
    ],
    "status": [
        SchedulerStatus("tiny", [], 0),
        SchedulerStatus("tiny", [ModelState("tiny", "ready", 4, 1),
                                 ModelState("big", "failed", message="out of memory")], 7),
    ],
}
CASES = [(channel, msg) for channel, msgs in CHANNELS.items() for msg in msgs]


def _id(value: Any) -> str:
    return value if isinstance(value, str) else type(value).__name__


def decoder(codec: Codec, channel: str) -> Callable[[bytes], Any]:
    return getattr(codec, channel).decode  # type: ignore[no-any-return]


@pytest.mark.parametrize(("channel", "msg"), CASES, ids=_id)
def test_round_trip_on_its_channel(channel: str, msg: msgspec.Struct) -> None:
    codec = Codec()
    raw = codec.encode(msg)
    assert isinstance(raw, bytes)
    back = decoder(codec, channel)(raw)
    assert type(back) is type(msg)
    assert back == msg


@pytest.mark.parametrize(("channel", "msg"), CASES, ids=_id)
def test_refused_on_every_other_channel(channel: str, msg: msgspec.Struct) -> None:
    codec = Codec()
    raw = codec.encode(msg)
    for other in CHANNELS:
        if other == channel:
            continue
        if isinstance(msg, Cancel) and other in ("to_scheduler", "to_worker"):
            continue  # Cancel travels on both of these
        with pytest.raises(msgspec.ValidationError):
            decoder(codec, other)(raw)


@pytest.mark.parametrize("channel", list(CHANNELS))
@pytest.mark.parametrize("raw", [
    b"", b"\xc1", b"not msgpack at all", b"\x92\x01",
    pickle.dumps({"type": "chat"}), b'{"type": "cancel", "request_id": "x"}',
], ids=["empty", "reserved-byte", "text", "truncated", "pickle", "json"])
def test_garbage_is_a_decode_error(channel: str, raw: bytes) -> None:
    with pytest.raises(msgspec.DecodeError):
        decoder(Codec(), channel)(raw)


def test_dicts_of_anything_are_refused() -> None:
    codec = Codec()
    # right tag, wrong fields
    with pytest.raises(msgspec.ValidationError):
        codec.to_scheduler.decode(msgspec.msgpack.encode({"type": "chat", "request_id": "r"}))
    # right fields, unknown tag
    with pytest.raises(msgspec.ValidationError):
        codec.to_scheduler.decode(msgspec.msgpack.encode({"type": "exec", "request_id": "r"}))
    # wrong field type
    with pytest.raises(msgspec.ValidationError):
        codec.to_scheduler.decode(msgspec.msgpack.encode({"type": "cancel", "request_id": 5}))
    # an event kind that does not exist
    with pytest.raises(msgspec.ValidationError):
        codec.events.decode(msgspec.msgpack.encode(
            {"events": [{"type": "finished", "request_id": "r", "finish_reason": "bored",
                         "prompt_tokens": 1, "completion_tokens": 1}]}))


def test_tags_are_on_the_wire() -> None:
    codec = Codec()
    assert msgspec.msgpack.decode(codec.encode(CHAT_JOB))["type"] == "chat"
    assert msgspec.msgpack.decode(codec.encode(Cancel("r")))["type"] == "cancel"
    failed = Failed("r", ErrorKind.INTERNAL_ERROR, "m")
    assert msgspec.msgpack.decode(codec.encode(failed))["type"] == "error"


def test_failed_of_an_exception() -> None:
    failed = Failed.of("r", WorkerDied("gone", param="model"))
    assert failed == Failed("r", ErrorKind.WORKER_DIED, "gone", "model")
    assert msgspec.msgpack.decode(Codec().encode(failed))["kind"] == "WorkerDied"


def _failed_batch(kind: object) -> bytes:
    return msgspec.msgpack.encode({"events": [
        {"type": "error", "request_id": "r", "kind": kind, "message": "m", "param": None},
        {"type": "started", "request_id": "s", "prompt_tokens": 1}]})


def test_an_unknown_error_kind_decodes_as_internal_error() -> None:
    # a peer with a kind this process does not know: its request still ends (as an internal
    # error), and the other events of the batch are kept
    batch = Codec().events.decode(_failed_batch("SomethingNew"))
    assert batch.events == [Failed("r", ErrorKind.INTERNAL_ERROR, "m"), Started("s", 1)]
    failed = batch.events[0]
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.INTERNAL_ERROR


def test_a_known_error_kind_decodes_to_its_member() -> None:
    failed = Codec().events.decode(_failed_batch("Overloaded")).events[0]
    assert isinstance(failed, Failed) and failed.kind is ErrorKind.OVERLOADED


def test_an_error_kind_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(msgspec.ValidationError):
        Codec().events.decode(_failed_batch(5))


def test_worker_spec_round_trips() -> None:
    spec = WorkerSpec(worker_id="w1", model="tiny",
                      control_endpoint="ipc:///tmp/c", events_endpoint="ipc:///tmp/e",
                      config=WorkerConfig(path="/m/tiny.gguf", n_slots=2, n_ctx_slot=256,
                                          n_threads=1, chat_template="{{ x }}"))
    raw = msgspec.msgpack.encode(spec)
    assert msgspec.msgpack.decode(raw, type=WorkerSpec) == spec
    with pytest.raises(msgspec.ValidationError):
        msgspec.msgpack.decode(Codec().encode(CHAT_JOB), type=WorkerSpec)


def test_messages_are_immutable() -> None:
    with pytest.raises(AttributeError):
        CHAT_JOB.model = "other"  # type: ignore[misc]


def test_slot_freed_carries_the_cache_summary_only_when_there_is_one() -> None:
    """SlotFreed.cache (None: unchanged) is left off the wire; a full one, every slot of 8
    holding 32 different blocks, stays small."""
    codec = Codec()
    bare = codec.encode(SlotFreed("tiny-0123abcd", "chatcmpl-" + "x" * 29))
    assert b"cache" not in bare and len(bare) < 100
    full = codec.encode(SlotFreed("tiny-0123abcd", "chatcmpl-" + "x" * 29, bytes(8 * 32 * 8)))
    assert len(full) - len(bare) < 8 * 32 * 8 + 16
