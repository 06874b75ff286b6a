"""GPU offload rules (engine/devices.py): what ``--n-gpu-layers`` gives llama.cpp and what the
worker reports, on a build with and without GPU support (the device query faked)."""

from __future__ import annotations

import pytest
from hearth.engine.devices import RESERVE_BYTES, gpu_free_bytes, gpu_layers_for
from hearth.scheduler.messages import Placement
from hearth.tools.model_config import GpuLayers

GB = 1024**3


def _offload(requested: GpuLayers | None, *, gpu: bool = True,
             free: int | None = 80 * GB) -> tuple[int, Placement]:
    out = gpu_layers_for(requested, supports_offload=gpu, n_layer=30,
                         free_bytes=lambda: free, file_bytes=3 * GB, kv_bytes=GB)
    return out.n_gpu_layers, out.placement


def test_a_cpu_build_runs_on_the_cpu_whatever_was_asked() -> None:
    assert _offload("auto", gpu=False) == (0, Placement("cpu", 0, 30))
    assert _offload(0, gpu=False) == (0, Placement("cpu", 0, 30))
    for asked in (-1, 12):
        n, placement = _offload(asked, gpu=False)
        assert (n, placement.device, placement.gpu_layers) == (0, "cpu", 0)
        assert f"n_gpu_layers = {asked} asked for, but this llama.cpp build has no GPU" in \
            placement.warning


def test_a_gpu_build_offloads_what_was_asked() -> None:
    assert _offload(-1) == (-1, Placement("gpu", 30, 30))
    assert _offload(12) == (12, Placement("gpu", 12, 30))
    assert _offload(99) == (99, Placement("gpu", 30, 30))
    assert _offload(0) == (0, Placement("cpu", 0, 30))


def test_auto_offloads_the_layers_that_fit_the_free_memory() -> None:
    assert _offload("auto") == (-1, Placement("gpu", 30, 30))  # 80 GB free: all of it
    assert _offload(None) == (-1, Placement("gpu", 30, 30))
    share = 4 * GB / 31  # (file + KV) over 30 layers and the output layer
    n, placement = _offload("auto", free=RESERVE_BYTES + int(10.5 * share))
    assert (n, placement) == (10, Placement("gpu", 10, 30))
    assert _offload("auto", free=RESERVE_BYTES // 2) == (0, Placement("cpu", 0, 30))
    n, placement = _offload("auto", free=None)  # offload built in, but no GPU device found
    assert (n, placement.device) == (0, "cpu") and "no GPU device" in placement.warning


def test_the_device_query_of_this_machines_build() -> None:
    """Through ggml's device API, unbound by llama-cpp-python: it answers without crashing,
    and a number when (and only when) the build sees a GPU."""
    import llama_cpp as ll

    free = gpu_free_bytes()
    if not ll.llama_supports_gpu_offload():
        assert free is None
    else:
        assert free is None or free >= 0


@pytest.mark.parametrize("asked", ["auto", 0, -1, 7])
def test_the_placement_crosses_in_the_worker_message(asked: GpuLayers) -> None:
    import msgspec
    from hearth.scheduler.messages import WorkerReady

    msg = WorkerReady("w", "m", 4, _offload(asked)[1])
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(msg), type=WorkerReady) == msg
