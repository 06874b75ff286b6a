"""hearth.tools.cli.fsync: a directory's entries made durable, never an error for the caller."""

from __future__ import annotations

from pathlib import Path

from hearth.tools.cli.fsync import fsync_dir


def test_fsync_dir_on_a_directory(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(b"GGUF")
    fsync_dir(tmp_path)  # returns; the entry is still there
    assert (tmp_path / "model.gguf").read_bytes() == b"GGUF"


def test_fsync_dir_on_a_missing_directory_is_quiet(tmp_path: Path) -> None:
    fsync_dir(tmp_path / "gone")
