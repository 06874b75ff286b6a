"""Which llama.cpp backend the install builds (tools/build_backend.py), and scripts/ensure-venv
acting on it: a fake ``nvcc`` on PATH, fake platforms, and a fake venv whose ``pip`` only
records how it was called (nothing is built or downloaded)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hearth.tools.build_backend import (
    Build,
    backend_of_args,
    detect,
    find_nvcc,
    nvidia_gpu,
)

ROOT = Path(__file__).resolve().parents[2]


def _fake_nvcc(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    nvcc = folder / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.4'\n")
    nvcc.chmod(0o755)
    return nvcc


def _fake_smi(folder: Path, gpus: str = "GPU 0: NVIDIA H100 (UUID: GPU-1234)") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    smi = folder / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] && echo '{gpus}'\n")
    smi.chmod(0o755)
    return smi


GPU = "nvidia-smi: GPU 0: NVIDIA H100"


def test_cuda_when_nvcc_is_on_path(tmp_path: Path) -> None:
    nvcc = _fake_nvcc(tmp_path / "bin")
    build = detect({"PATH": f"{tmp_path / 'bin'}:/usr/bin"}, "Linux", "x86_64", toolkit_dirs=(),
                   gpu=GPU)
    assert build == Build("cuda", "-DGGML_CUDA=on", f"nvcc found at {nvcc}, NVIDIA GPU: {GPU}")
    assert build.record == "cuda -DGGML_CUDA=on"


def test_a_toolkit_without_a_gpu_builds_for_the_cpu(tmp_path: Path) -> None:
    """A CI runner or build box with the CUDA toolkit and no GPU (this project's own CI)."""
    nvcc = _fake_nvcc(tmp_path / "bin")
    build = detect({"PATH": str(tmp_path / "bin")}, "Linux", "x86_64", toolkit_dirs=(),
                   gpu=None)
    assert (build.backend, build.cmake_args) == ("cpu", "")
    assert build.reason == (f"nvcc found at {nvcc} but no NVIDIA GPU; "
                            "HEARTH_CMAKE_ARGS=-DGGML_CUDA=on builds for CUDA anyway")


def test_an_nvidia_gpu_is_seen_by_the_driver_or_nvidia_smi(tmp_path: Path) -> None:
    none = {"PATH": str(tmp_path / "empty")}
    proc = tmp_path / "proc"
    proc.mkdir()
    assert nvidia_gpu(none, str(proc), (), ()) is None  # the driver lists no GPU
    (proc / "0000:01:00.0").mkdir()
    assert nvidia_gpu(none, str(proc), (), ()) == f"a GPU in {proc}"
    dev = tmp_path / "nvidia0"
    dev.touch()
    assert nvidia_gpu(none, str(tmp_path / "no-proc"), (str(dev),), ()) == str(dev)
    _fake_smi(tmp_path / "smi")
    assert nvidia_gpu({"PATH": str(tmp_path / "smi")}, str(tmp_path / "no-proc"), (), ()) == GPU
    assert nvidia_gpu(none, str(tmp_path / "no-proc"), (), (str(tmp_path / "smi"),)) == GPU
    _fake_smi(tmp_path / "smi-none", "No devices were found")
    assert nvidia_gpu({"PATH": str(tmp_path / "smi-none")}, "/nonexistent", (), ()) is None


def test_cuda_from_a_toolkit_directory_off_path(tmp_path: Path) -> None:
    nvcc = _fake_nvcc(tmp_path / "cuda" / "bin")
    build = detect({"PATH": "/nonexistent"}, "Linux", "x86_64",
                   toolkit_dirs=(str(tmp_path / "none"), str(tmp_path / "cuda")), gpu=GPU)
    # CMake looks for nvcc on PATH only: it is told where this one is
    assert build == Build("cuda", f"-DGGML_CUDA=on -DCMAKE_CUDA_COMPILER={nvcc}",
                          f"nvcc found at {nvcc}, NVIDIA GPU: {GPU}")
    home = _fake_nvcc(tmp_path / "home" / "bin")
    assert find_nvcc({"PATH": "", "CUDA_HOME": str(tmp_path / "home")}, ()) == str(home)
    assert find_nvcc({"PATH": "", "CUDA_PATH": str(tmp_path / "home")}, ()) == str(home)


def test_a_non_executable_nvcc_is_no_toolkit(tmp_path: Path) -> None:
    _fake_nvcc(tmp_path / "cuda" / "bin").chmod(0o644)
    assert find_nvcc({"PATH": ""}, (str(tmp_path / "cuda"),)) is None


def test_metal_on_apple_silicon_and_cpu_elsewhere() -> None:
    assert detect({"PATH": "/nonexistent"}, "Darwin", "arm64", toolkit_dirs=(),
                  gpu=None) == Build("metal", "-DGGML_METAL=on", "macOS on Apple Silicon")
    intel = detect({"PATH": "/nonexistent"}, "Darwin", "x86_64", toolkit_dirs=(), gpu=None)
    assert (intel.backend, intel.cmake_args) == ("cpu", "")
    linux = detect({"PATH": "/nonexistent"}, "Linux", "x86_64", toolkit_dirs=(), gpu=None)
    assert (linux.backend, linux.cmake_args, linux.record) == ("cpu", "", "cpu")


def test_cmake_args_are_taken_exactly_as_given(tmp_path: Path) -> None:
    _fake_nvcc(tmp_path / "bin")
    path = f"{tmp_path / 'bin'}:/usr/bin"
    # HEARTH_CMAKE_ARGS, then CMAKE_ARGS, win over what the machine has
    got = detect({"PATH": path, "HEARTH_CMAKE_ARGS": "-DGGML_VULKAN=on",
                  "CMAKE_ARGS": "-DGGML_CUDA=on"}, "Linux", "x86_64", toolkit_dirs=(), gpu=GPU)
    assert got == Build("vulkan", "-DGGML_VULKAN=on", "HEARTH_CMAKE_ARGS is set")
    got = detect({"PATH": path, "CMAKE_ARGS": "-DGGML_CUDA=OFF -DGGML_BLAS=ON"}, "Linux",
                 "x86_64", toolkit_dirs=(), gpu=GPU)
    assert got == Build("cpu", "-DGGML_CUDA=OFF -DGGML_BLAS=ON", "CMAKE_ARGS is set")
    got = detect({"PATH": "", "HEARTH_CMAKE_ARGS": "  "}, "Darwin", "arm64", toolkit_dirs=(),
                 gpu=None)
    assert got.backend == "metal"  # blank is unset


@pytest.mark.parametrize(("args", "backend"), [
    ("-DGGML_CUDA=on", "cuda"), ("-DGGML_CUDA:BOOL=ON", "cuda"), ("-D GGML_METAL=1", "metal"),
    ("-DGGML_HIP=ON -DAMDGPU_TARGETS=gfx1100", "rocm"), ("-DGGML_CUDA=off", "cpu"),
    ("-DGGML_NATIVE=off", "cpu"), ("", "cpu"),
])
def test_backend_of_args(args: str, backend: str) -> None:
    assert backend_of_args(args) == backend


# ---- scripts/ensure-venv with a fake venv -------------------------------------------------------


def _fake_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A venv ensure-venv takes as up to date: its python runs the real interpreter for the
    detection script and only logs ``-m pip`` calls (and answers the GPU-offload probe "no")."""
    venv, log = tmp_path / "venv", tmp_path / "pip.log"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text(f"""#!/bin/sh
case "$1" in
  -m) echo "CMAKE_ARGS=$CMAKE_ARGS $*" >>"{log}"; exit 0 ;;
  -c) echo no; exit 0 ;;
esac
exec "{sys.executable}" "$@"
""")
    python.chmod(0o755)
    (venv / "bin" / "hearth").write_text("#!/bin/sh\n")
    (venv / "bin" / "hearth").chmod(0o755)
    (venv / ".hearth-installed").touch()  # newer than pyproject.toml and the script
    return venv, log


def _ensure_venv(venv: Path, path: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HEARTH_VENV": str(venv), "HOME": os.environ.get("HOME", "/"),
           **extra}
    return subprocess.run(["bash", str(ROOT / "scripts" / "ensure-venv")], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


# (this project's machines have the CUDA toolkit in /usr/local/bin and no GPU)
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
needs_no_toolkit = pytest.mark.skipif(
    nvidia_gpu({"PATH": SYSTEM_PATH}) is not None,
    reason="this machine has an NVIDIA GPU: it is not the CPU machine these cases stand for")


@needs_no_toolkit
def test_an_up_to_date_cpu_venv_is_recorded_and_never_rebuilt(tmp_path: Path) -> None:
    venv, log = _fake_venv(tmp_path)
    for _ in range(2):
        run = _ensure_venv(venv, SYSTEM_PATH)
        assert run.returncode == 0, run.stderr
        assert run.stderr == ""  # silent, as before: nothing to do
        assert (venv / ".hearth-llama-build").read_text() == "cpu\n"
    assert not log.exists()  # pip never ran


@needs_no_toolkit
def test_a_cuda_toolkit_rebuilds_llama_cpp_python_once(tmp_path: Path) -> None:
    venv, log = _fake_venv(tmp_path)
    (venv / ".hearth-llama-build").write_text("cpu\n")
    _fake_nvcc(tmp_path / "cuda-bin")
    _fake_smi(tmp_path / "cuda-bin")
    path = f"{tmp_path / 'cuda-bin'}:{SYSTEM_PATH}"
    run = _ensure_venv(venv, path)
    assert run.returncode == 0, run.stderr
    pin = next(line.split('"')[1] for line in (ROOT / "pyproject.toml").read_text().splitlines()
               if '"llama-cpp-python==' in line)
    assert (f"hearth: building {pin} for cuda (nvcc found at {tmp_path / 'cuda-bin' / 'nvcc'}, "
            f"NVIDIA GPU: {GPU})") in run.stderr
    assert "hearth: llama-cpp-python is built for cuda (GPU offload: no)" in run.stderr
    assert "warning: a cuda build without GPU offload" in run.stderr  # the fake probe said no
    (call,) = log.read_text().splitlines()
    assert call.startswith("CMAKE_ARGS=-DGGML_CUDA=on -m pip install")
    assert "--no-cache-dir" in call and "--force-reinstall" in call and call.endswith(pin)
    assert (venv / ".hearth-llama-build").read_text() == "cuda -DGGML_CUDA=on\n"
    run = _ensure_venv(venv, path)  # built for what the machine has: left alone
    assert run.returncode == 0 and run.stderr == ""
    assert len(log.read_text().splitlines()) == 1


@needs_no_toolkit
def test_hearth_cmake_args_choose_the_build(tmp_path: Path) -> None:
    venv, log = _fake_venv(tmp_path)
    run = _ensure_venv(venv, SYSTEM_PATH, HEARTH_CMAKE_ARGS="-DGGML_VULKAN=on")
    assert run.returncode == 0, run.stderr
    assert "for vulkan (HEARTH_CMAKE_ARGS is set)" in run.stderr
    assert log.read_text().startswith("CMAKE_ARGS=-DGGML_VULKAN=on -m pip install")
    assert (venv / ".hearth-llama-build").read_text() == "vulkan -DGGML_VULKAN=on\n"


@needs_no_toolkit
def test_a_venv_built_for_another_backend_is_rebuilt_for_the_cpu(tmp_path: Path) -> None:
    """The GPU went away (or the venv was copied): back to the CPU build, which pip's wheel
    cache may serve."""
    venv, log = _fake_venv(tmp_path)
    (venv / ".hearth-llama-build").write_text("cuda -DGGML_CUDA=on\n")
    run = _ensure_venv(venv, SYSTEM_PATH)
    assert run.returncode == 0, run.stderr
    assert "for cpu (" in run.stderr
    (call,) = log.read_text().splitlines()
    assert call.startswith("CMAKE_ARGS= -m pip install") and "--no-cache-dir" not in call
    assert (venv / ".hearth-llama-build").read_text() == "cpu\n"
