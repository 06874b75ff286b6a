"""Where a model's layers go: the GPU offload ``--n-gpu-layers`` asks for, against what the
loaded llama.cpp build can do, and what was actually done (:class:`Placement`, which the worker
reports in WorkerReady for ``hearth status`` and ``/v1/models``).

The device query uses ggml's backend-device API (``ggml_backend_dev_*``, ggml-backend.h), which
llama-cpp-python 0.3.36 loads with libllama but does not bind; the prototypes are declared here.
The offload rule itself is pure (:func:`gpu_layers_for`), so it is unit-tested with fakes.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

import llama_cpp as ll
from hearth.scheduler.messages import Placement
from hearth.scheduler.placement import layers_that_fit
from hearth.tools.model_config import GpuLayers

# ggml_backend_dev_type (ggml-backend.h): CPU, GPU, IGPU (integrated), ACCEL
_GPU_TYPES = (1, 2)
# kept free on the device for llama.cpp's compute buffers and the CUDA/Metal context (llama.cpp's
# own fitting (common/arg.cpp --fit) leaves a margin of the same order, 1 GiB by default)
RESERVE_BYTES = 1024 << 20


@dataclass(frozen=True)
class Offload:
    """What to pass llama.cpp as ``n_gpu_layers`` and what the worker reports."""

    n_gpu_layers: int
    placement: Placement


def gpu_layers_for(requested: GpuLayers | None, *, supports_offload: bool, n_layer: int,
                   free_bytes: Callable[[], int | None], file_bytes: int,
                   kv_bytes: int) -> Offload:
    """The offload for ``requested`` ("auto", -1 all, 0 CPU, a count; None as "auto") on a build
    that can (``supports_offload``) or cannot offload. ``free_bytes`` asks the GPU devices'
    free memory (None: no GPU device found). A CPU build runs on the CPU whatever was asked;
    asking it for layers gives the placement a warning to log."""
    if not supports_offload:
        warning = ""
        if isinstance(requested, int) and requested != 0:
            warning = (f"n_gpu_layers = {requested} asked for, but this llama.cpp build has no "
                       "GPU support: running on the CPU (see README, GPU)")
        return Offload(0, Placement("cpu", 0, n_layer, warning))
    if requested is None or requested == "auto":
        free = free_bytes()
        if free is None:
            return Offload(0, Placement("cpu", 0, n_layer,
                                        "n_gpu_layers = auto: no GPU device found, on the CPU"))
        n = layers_that_fit(free, file_bytes, n_layer, kv_bytes, RESERVE_BYTES)
    else:
        n = requested
    if n == 0:
        return Offload(0, Placement("cpu", 0, n_layer))
    on_gpu = n_layer if n < 0 or n >= n_layer else n
    return Offload(n, Placement("gpu", on_gpu, n_layer))


def gpu_free_bytes() -> int | None:
    """Free memory of the GPU devices llama.cpp sees, summed (llama.cpp splits layers across
    them); None when it sees none."""
    lib = ll.llama_cpp._lib
    try:
        count = ctypes.CFUNCTYPE(ctypes.c_size_t)(("ggml_backend_dev_count", lib))
        get = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_size_t)(("ggml_backend_dev_get", lib))
        kind = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)(("ggml_backend_dev_type", lib))
        memory = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                  ctypes.POINTER(ctypes.c_size_t))(
            ("ggml_backend_dev_memory", lib))
    except AttributeError:  # a build without the device API: nothing to ask
        return None
    total_free = 0
    found = False
    for i in range(count()):
        dev = get(i)
        if not dev or kind(dev) not in _GPU_TYPES:
            continue
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        memory(dev, ctypes.byref(free), ctypes.byref(total))
        total_free += free.value
        found = True
    return total_free if found else None


def supports_gpu_offload() -> bool:
    """Whether the loaded llama.cpp build can put layers on a GPU (CUDA, Metal, Vulkan...)."""
    return bool(ll.llama_supports_gpu_offload())
