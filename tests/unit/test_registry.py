"""tools/registry.py: a request's model name never breaks the look-up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hearth.tools import registry as registry_module
from hearth.tools.gguf_header import GGUFInfo, read_gguf_metadata
from hearth.tools.registry import ModelRegistry


@pytest.mark.parametrize("name", ["ti\x00ny", "\x00", "x" * 10_000, "", ".tiny", "a/../tiny",
                                  "../tiny"])
def test_names_that_cannot_be_a_model_are_not_found(tmp_path: Path, name: str) -> None:
    (tmp_path / "tiny.gguf").write_bytes(b"not a real gguf")
    registry = ModelRegistry(tmp_path, {"alias": "ti\x00ny"})
    # a NUL in the name was a ValueError from os.stat: a 500 for the request
    assert registry.resolve(name) is None
    assert registry.resolve("alias") is None
    entry = registry.resolve("tiny")
    assert entry is not None and entry.id == "tiny" and entry.error


def test_headers_are_read_once_until_the_file_changes(
        tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry is the one cache of GGUF headers: keyed by path, checked by size and
    mtime at every look-up."""
    reads: list[Path] = []

    def counting_read(path: Path) -> GGUFInfo:
        reads.append(path)
        return read_gguf_metadata(path)

    monkeypatch.setattr(registry_module, "read_gguf_metadata", counting_read)
    model = tmp_path / "tiny.gguf"
    shutil.copyfile(tiny_model_path, model)
    registry = ModelRegistry(tmp_path, {"chat": "tiny"})
    first = registry.resolve("tiny")
    assert first is not None and first.info is not None and first.error is None
    assert registry.resolve("chat") is first
    assert registry.scan() == {"tiny": first}
    assert reads == [model]

    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = registry.get("tiny")
    assert again is not None and again is not first and again.info == first.info
    assert reads == [model, model]

    model.write_bytes(b"GGUF broken now")
    broken = registry.get("tiny")
    assert broken is not None and broken.info is None and broken.error
    assert len(reads) == 3


def test_a_file_renamed_over_another_with_its_size_and_mtime_is_read_again(
        tmp_path: Path) -> None:
    """The stamp holds the inode: ``cp -p`` or a download that keeps the server's mtime, then
    a rename, replaces a model with a file of the same size and mtime (the scheduler relies
    on the stamp to retire workers of a replaced file)."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(20))  # version 0: an error the entry carries
    registry = ModelRegistry(tmp_path)
    before = registry.get("m")
    assert before is not None and before.stamp is not None and before.error
    new = tmp_path / ".m.gguf.tmp"
    new.write_bytes(b"not a gguf at all!!!!!!!")  # the same length
    st = model.stat()
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, model)
    after = registry.get("m")
    assert after is not None and after.stamp is not None
    assert (after.stamp.size, after.stamp.mtime_ns) == (before.stamp.size, before.stamp.mtime_ns)
    assert after.stamp != before.stamp and after.error != before.error
    assert registry.get("m") is after  # unchanged since: the cached entry


def test_registries_do_not_share_a_cache(tmp_path: Path, tiny_model_path: Path) -> None:
    shutil.copyfile(tiny_model_path, tmp_path / "tiny.gguf")
    a, b = ModelRegistry(tmp_path).get("tiny"), ModelRegistry(tmp_path).get("tiny")
    assert a is not None and b is not None and a is not b and a == b


def test_a_split_model_is_one_entry(tmp_path: Path) -> None:
    """gguf-split parts list once, as the first part's id without the suffix; the size is
    every part's; a missing part is the entry's error (the server answers model_load_failed)."""
    from hearth.tools.cli.tiny_model import build_tiny_model

    first = build_tiny_model(tmp_path / "big.gguf", split_max_tensors=8)
    parts = sorted(tmp_path.glob("big-*.gguf"))
    assert first == parts[0] and len(parts) == 3
    shutil.copy(first, tmp_path / "plain.gguf")
    registry = ModelRegistry(tmp_path)
    entries = registry.scan()
    assert sorted(entries) == ["big", "plain"]
    big = entries["big"]
    assert big.path == first and big.error is None and big.info is not None
    assert big.size == sum(p.stat().st_size for p in parts)
    assert registry.get("big") == big
    assert registry.get("big-00001-of-00003") is None  # a part is not a model of its own
    assert registry.get("big-00002-of-00003") is None
    parts[2].unlink()
    broken = registry.get("big")
    assert broken is not None and "part(s) 3 of 3 missing" in (broken.error or "")
    assert registry.scan()["big"].error == broken.error
