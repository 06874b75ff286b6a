from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Server
from hearth.tools.cli.bootstrap import BENCH_MODEL_ID, DEFAULT_MODEL_ID


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
