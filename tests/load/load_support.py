"""Sizes of the load tests and the processes they look at (helpers for tests/load)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import pytest
from harness import Server


@dataclass(frozen=True)
class LoadSizes:
    name: str
    clients: int  # concurrent streaming clients
    requests_per_client: int  # streamed back to back by each
    disconnects: int  # clients that hang up mid-stream
    fault_clients: int  # concurrent streams when a worker is killed / the server is stopped

    @property
    def requests(self) -> int:
        return self.clients * self.requests_per_client


FULL = LoadSizes("full", clients=64, requests_per_client=32, disconnects=200, fault_clients=64)
CI = LoadSizes("ci", clients=32, requests_per_client=12, disconnects=50, fault_clients=16)


def load_sizes() -> LoadSizes:
    """``HEARTH_LOAD=full``: the full sizes; unset (or ``ci``): the sized-down ones."""
    value = os.environ.get("HEARTH_LOAD", "").strip().lower()
    if value == "full":
        return FULL
    if value in ("", "ci"):
        return CI
    raise pytest.UsageError(f"HEARTH_LOAD must be 'full' or 'ci', not {value!r}")


def orphans_after(srv: Server, grace: float = 3.0) -> list[int]:
    """Children of ``hearth serve`` still alive ``grace`` seconds after it exited (the grace is
    for multiprocessing's resource tracker, which exits a moment after its parent)."""
    deadline = time.monotonic() + grace
    while srv.orphans() and time.monotonic() < deadline:
        time.sleep(0.05)
    return srv.orphans()
