"""tools/registry.py: a request's model name never breaks the look-up."""

from __future__ import annotations

from pathlib import Path

import pytest
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
