"""Fake worker processes for the scheduler's tests (test_scheduler_core.py and
test_scheduler_server.py): the worker factory hands these back instead of spawning
engine/worker.py."""

from __future__ import annotations

import struct

import msgspec
from hearth.scheduler.messages import WorkerSpec

# a GGUF header with no metadata and no tensors: readable, so the scheduler accepts the file
EMPTY_GGUF = b"GGUF" + struct.pack("<IQQ", 3, 0, 0)


def gguf_header(metadata: dict[str, str | int]) -> bytes:
    """A GGUF v3 file with these metadata keys (strings, or uint32 numbers) and no tensors."""
    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata))
    for key, value in metadata.items():
        out += struct.pack("<Q", len(key.encode())) + key.encode()
        if isinstance(value, str):
            out += struct.pack("<IQ", 8, len(value.encode())) + value.encode()  # 8: string
        else:
            out += struct.pack("<II", 4, value)  # 4: uint32
    return out


class FakeProc:
    """What the scheduler uses of a multiprocessing.Process: its spec (what it was started
    with), exitcode, join/kill/terminate, and a sentinel that is never registered with a poll
    (the tests drive the scheduler's turns themselves)."""

    def __init__(self, spec_bytes: bytes) -> None:
        self.spec = msgspec.msgpack.decode(spec_bytes, type=WorkerSpec)
        self.exitcode: int | None = None
        self.sentinel = -1
        self.pid: int | None = None

    def join(self, timeout: float | None = None) -> None:
        if self.exitcode is None:
            self.exitcode = 0

    def kill(self) -> None:
        self.exitcode = -9

    def terminate(self) -> None:
        self.exitcode = -15
