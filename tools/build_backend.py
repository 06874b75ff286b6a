"""Which llama.cpp backend ``scripts/ensure-venv`` builds llama-cpp-python for, and with what
``CMAKE_ARGS``: exactly what ``HEARTH_CMAKE_ARGS`` (else ``CMAKE_ARGS``) says when set; else CUDA
when ``nvcc`` is found (on ``PATH``, in ``$CUDA_HOME``/``$CUDA_PATH``, or in a CUDA toolkit
directory such as /usr/local/cuda); else Metal on an Apple Silicon Mac; else the CPU (llama.cpp's
own defaults, no arguments).

CUDA needs an NVIDIA GPU beside the toolkit (a driver's /proc/driver/nvidia/gpus/ entry, a
/dev/nvidia0, or ``nvidia-smi -L`` naming one): a machine with the toolkit and no GPU (a CI
runner, a build container) gets the CPU build it can run, and its CPU venv is kept;
``HEARTH_CMAKE_ARGS=-DGGML_CUDA=on`` builds for CUDA there anyway.

The flags are llama.cpp's (``-DGGML_CUDA=on``, ``-DGGML_METAL=on``: llama-cpp-python's README,
"Supported Backends"). Standard library only: the script runs before the virtual environment
exists, with ``python3 -I tools/build_backend.py``, and prints three lines — the backend, the
CMAKE_ARGS (possibly empty) and why — which ensure-venv reads and records in the venv, so an
up-to-date venv of the same backend is never rebuilt.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# where CUDA toolkits install when their bin/ is not on PATH (NVIDIA's runfile and packages)
CUDA_TOOLKIT_DIRS = ("/usr/local/cuda", "/opt/cuda", "/usr/lib/cuda")

# where the NVIDIA driver shows its GPUs (Linux), and nvidia-smi where it is off PATH (WSL2)
NVIDIA_PROC_GPUS = "/proc/driver/nvidia/gpus"
NVIDIA_DEVICES = ("/dev/nvidia0",)
NVIDIA_SMI_DIRS = ("/usr/lib/wsl/lib",)

# a -D flag of llama.cpp's CMake that names a GPU backend -> the backend's name
_BACKEND_FLAGS = {"GGML_CUDA": "cuda", "GGML_METAL": "metal", "GGML_VULKAN": "vulkan",
                  "GGML_HIP": "rocm", "GGML_SYCL": "sycl", "GGML_OPENCL": "opencl",
                  "GGML_MUSA": "musa", "GGML_CANN": "cann"}
_ON = ("on", "1", "yes", "true", "y")
_FLAG = re.compile(r"-D\s*([A-Z0-9_]+)(?::[A-Z]+)?=(\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class Build:
    """A build of llama-cpp-python: ``backend`` ("cpu", "cuda", "metal", or what custom
    arguments turn on), the ``cmake_args`` pip builds it with ("" for llama.cpp's defaults),
    and ``reason``, for the user."""

    backend: str
    cmake_args: str
    reason: str

    @property
    def record(self) -> str:
        """What ensure-venv keeps in the venv: a venv whose record differs is rebuilt."""
        return f"{self.backend} {self.cmake_args}".strip()


def backend_of_args(cmake_args: str) -> str:
    """The backend a CMAKE_ARGS string turns on: the first GPU backend flag set on, else
    "cpu" (``-DGGML_CUDA=off``, BLAS or CPU tuning flags build for the CPU)."""
    for name, value in _FLAG.findall(cmake_args):
        backend = _BACKEND_FLAGS.get(name.upper())
        if backend is not None and value.lower() in _ON:
            return backend
    return "cpu"


def find_nvcc(environ: Mapping[str, str],
              toolkit_dirs: Sequence[str] = CUDA_TOOLKIT_DIRS) -> str | None:
    """The CUDA compiler's path: on ``environ``'s PATH, else under CUDA_HOME, CUDA_PATH or a
    toolkit directory; None when there is none."""
    found = shutil.which("nvcc", path=environ.get("PATH", ""))
    if found:
        return found
    homes = [environ.get("CUDA_HOME", ""), environ.get("CUDA_PATH", ""), *toolkit_dirs]
    for home in homes:
        if not home:
            continue
        nvcc = os.path.join(home, "bin", "nvcc")
        if os.path.isfile(nvcc) and os.access(nvcc, os.X_OK):
            return nvcc
    return None


def nvidia_gpu(environ: Mapping[str, str], proc_gpus: str = NVIDIA_PROC_GPUS,
               devices: Sequence[str] = NVIDIA_DEVICES,
               smi_dirs: Sequence[str] = NVIDIA_SMI_DIRS) -> str | None:
    """How an NVIDIA GPU was seen (for the user), or None when none is."""
    try:
        if os.listdir(proc_gpus):
            return f"a GPU in {proc_gpus}"
    except OSError:
        pass
    for dev in devices:
        if os.path.exists(dev):
            return f"{dev}"
    search = os.pathsep.join([environ.get("PATH", ""), *smi_dirs])
    smi = shutil.which("nvidia-smi", path=search)
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10,
                             check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    gpus = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    return f"nvidia-smi: {gpus[0].split(' (')[0]}" if out.returncode == 0 and gpus else None


def detect(environ: Mapping[str, str] | None = None, system: str | None = None,
           machine: str | None = None, toolkit_dirs: Sequence[str] = CUDA_TOOLKIT_DIRS,
           gpu: str | None | bool = True) -> Build:
    """The build for this machine (``system``/``machine`` as :mod:`platform` names them).
    ``gpu``: True to look for an NVIDIA GPU (:func:`nvidia_gpu`), else what was seen (None:
    nothing); the arguments exist so tests can stand in for another machine."""
    env = os.environ if environ is None else environ
    system = platform.system() if system is None else system
    machine = platform.machine() if machine is None else machine
    for name in ("HEARTH_CMAKE_ARGS", "CMAKE_ARGS"):
        args = env.get(name, "").strip()
        if args:
            return Build(backend_of_args(args), args, f"{name} is set")
    nvcc = find_nvcc(env, toolkit_dirs)
    seen = nvidia_gpu(env) if gpu is True else gpu or None
    if nvcc is not None and seen:
        args = "-DGGML_CUDA=on"
        if shutil.which("nvcc", path=env.get("PATH", "")) != nvcc:
            args += f" -DCMAKE_CUDA_COMPILER={nvcc}"  # CMake finds it on PATH only
        return Build("cuda", args, f"nvcc found at {nvcc}, NVIDIA GPU: {seen}")
    if system == "Darwin" and machine == "arm64":
        return Build("metal", "-DGGML_METAL=on", "macOS on Apple Silicon")
    if nvcc is not None:
        return Build("cpu", "", f"nvcc found at {nvcc} but no NVIDIA GPU; "
                     "HEARTH_CMAKE_ARGS=-DGGML_CUDA=on builds for CUDA anyway")
    return Build("cpu", "", "no CUDA toolkit (nvcc) found" +
                 ("" if system != "Darwin" else " on an Intel Mac"))


def main(argv: Sequence[str] | None = None) -> int:
    build = detect()
    # newlines cannot occur in the values ensure-venv reads line by line
    for line in (build.backend, build.cmake_args, build.reason):
        print(line.replace("\n", " "))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
