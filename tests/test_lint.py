"""The house style is checked, not hoped for: ruff and mypy (strict) must be clean.

mypy checks the packages under the names they install as (``hearth.api``, ``hearth.scheduler``,
...). The folders become those packages only through pyproject's package-dir mapping, which mypy
cannot see: run on the bare folders, every ``from hearth.scheduler... import`` would resolve to
nothing and its types would not be checked at all. So each run builds a folder holding
``hearth/<package>`` links to the repository's folders and points mypy at it; the settings
(strict) are pyproject's [tool.mypy].
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["api", "scheduler", "engine", "tools"]


def installed_tree(into: Path, *, copied: Sequence[str] = ()) -> Path:
    """``into/hearth/<package>`` for each package: a link to the repository's folder, or a copy
    for those named in ``copied`` (to edit without touching the repository)."""
    hearth = into / "hearth"
    hearth.mkdir()
    for package in PACKAGES:
        if package in copied:
            shutil.copytree(ROOT / package, hearth / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (hearth / package).symlink_to(ROOT / package, target_is_directory=True)
    return into


def run_mypy(tree: Path, packages: Sequence[str]) -> subprocess.CompletedProcess[str]:
    # The cache stays in the repository (mypy's own ignored folder) so that a run after an
    # unchanged one takes a second; it is keyed by module and re-validated by file contents,
    # so a tree in another folder reuses it safely.
    args = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
            "--cache-dir", str(ROOT / ".mypy_cache")]
    for package in packages:
        args += ["-p", f"hearth.{package}"]
    return subprocess.run(args, cwd=tree, env={**os.environ, "MYPYPATH": str(tree)},
                          capture_output=True, text=True)


def test_ruff_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", *PACKAGES, "bench", "tests"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_clean(tmp_path: Path) -> None:
    proc = run_mypy(installed_tree(tmp_path), PACKAGES)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success: no issues found" in proc.stdout, proc.stdout + proc.stderr


def test_mypy_checks_types_across_packages(tmp_path: Path) -> None:
    """The check above is real: api code that gives a scheduler message a state its Literal
    does not allow is reported (with imports that resolved to nothing it would pass)."""
    tree = installed_tree(tmp_path, copied=["api"])
    (tree / "hearth" / "api" / "probe.py").write_text(
        "from hearth.scheduler.messages import ModelState\n"
        "\n"
        'STATE = ModelState("m", "warming")\n')
    proc = run_mypy(tree, ["api"])
    assert proc.returncode == 1, proc.stdout + proc.stderr
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, proc.stdout
    assert errors[0].startswith("hearth/api/probe.py:3: error:"), proc.stdout
    assert "[arg-type]" in errors[0], proc.stdout


def test_test_files_have_unique_basenames() -> None:
    """pytest imports test modules by basename (rootdir-relative, no packages): two files named
    alike in different folders fail the whole run's collection with an import-file mismatch."""
    seen: dict[str, Path] = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")) + sorted(
            (ROOT / "bench").rglob("test_*.py")):
        assert path.name not in seen, f"{path} and {seen[path.name]} share a basename"
        seen[path.name] = path
