from __future__ import annotations

from pathlib import Path

import pytest
from hearth.tools.cli.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight llama GGUF with a ChatML template, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
