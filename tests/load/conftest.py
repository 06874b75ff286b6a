"""Load and fault tests: sizes, the tiny-model directory, and the figures they report.

``HEARTH_LOAD=full`` runs the full sizes (64 clients, 2048 streamed requests, 200 clients
hanging up); by default (CI) the same code runs sized down (load_support.CI). Each test adds its
figures (counts, recovery time) to a summary printed at the end of the pytest run.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from load_support import LoadSizes, load_sizes

FIGURES = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[FIGURES] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = terminalreporter.config.stash.get(FIGURES, [])
    if lines:
        terminalreporter.section(f"hearth load figures ({load_sizes().name} size)")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def sizes() -> LoadSizes:
    return load_sizes()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """Add a line to the figures printed at the end of the run (and to the test's output)."""

    def add(line: str) -> None:
        print(line)
        request.config.stash[FIGURES].append(f"{request.node.name}: {line}")

    return add


@pytest.fixture(scope="session")
def load_models_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    d = tmp_path_factory.mktemp("load-models")
    shutil.copy(tiny_model_path, d / "tiny.gguf")
    return d
