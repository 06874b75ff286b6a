"""The floors of the house, checked: every import between hearth's packages runs downwards.

    tools/cli/              the commands (top floor): may import anything
    api/                    HTTP; may import scheduler/ (the messages and errors) and tools/
    engine/                 llama.cpp; may import scheduler/ (messages, policy) and tools/
    scheduler/              may import tools/
    tools/ (not tools/cli)  the ground floor: settings, logs, processes, TLS, key files,
                            GGUF headers, the model registry; imports nothing of hearth above it

api/ and engine/ never import each other (the api knows nothing of llama.cpp). Imports inside
functions count too: a lazy import is still an arrow. One arrow is by name only and so not seen
here: the scheduler starts workers as ``"hearth.engine.worker:worker_main"`` in a fresh
interpreter (scheduler/workers.py), precisely so that it never imports the engine or llama.cpp.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# floor -> the floors it may import from (itself included)
ALLOWED: dict[str, set[str]] = {
    "tools": {"tools"},
    "scheduler": {"scheduler", "tools"},
    "engine": {"engine", "scheduler", "tools"},
    "api": {"api", "scheduler", "tools"},
    "tools.cli": {"tools.cli", "api", "scheduler", "engine", "tools"},
}


def floor_of_module(dotted: str) -> str | None:
    """``hearth.tools.cli.serve`` -> ``tools.cli``; None for anything outside hearth."""
    parts = dotted.split(".")
    if parts[0] != "hearth" or len(parts) < 2:
        return None
    if parts[1] == "tools" and len(parts) > 2 and parts[2] == "cli":
        return "tools.cli"
    return parts[1]


def floor_of_file(path: Path) -> str:
    rel = path.relative_to(ROOT).parts
    if rel[0] == "tools" and len(rel) > 2 and rel[1] == "cli":
        return "tools.cli"
    return rel[0]


def module_of_file(path: Path) -> str:
    """``<repo>/tools/cli/serve.py`` -> ``hearth.tools.cli.serve`` (as installed)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["hearth", *parts])


def hearth_imports(path: Path, module: str | None = None) -> list[tuple[int, str]]:
    """(line, module) for every ``hearth.*`` module the file imports, at any depth. Relative
    imports are resolved against the file's own package; ``from hearth.x import y`` counts as
    ``hearth.x.y`` where ``y`` may be a module (``from hearth import api``,
    ``from hearth.tools import cli``). ``module``: the file's module name, if it is not where
    it would be installed from."""
    out: list[tuple[int, str]] = []
    own = module or module_of_file(path)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names
                       if alias.name.startswith("hearth."))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module == "hearth" or module.startswith("hearth."):
                out.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return out


def package_files() -> list[Path]:
    return sorted(p for pkg in ALLOWED if "." not in pkg for p in (ROOT / pkg).rglob("*.py"))


def test_imports_run_downwards() -> None:
    wrong: list[str] = []
    seen = 0
    for path in package_files():
        floor = floor_of_file(path)
        for line, module in hearth_imports(path):
            seen += 1
            target = floor_of_module(module)
            if target is not None and target not in ALLOWED[floor]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} ({floor}) imports {module} "
                             f"({target})")
    assert seen > 100, f"only {seen} imports found: is the walk looking at the packages?"
    assert not wrong, "imports that run back up:\n" + "\n".join(wrong)


def test_checker_sees_an_arrow_back_up(tmp_path: Path) -> None:
    copy = tmp_path / "x.py"  # read as if it were tools/x.py, on the ground floor
    copy.write_text("def f():\n    from hearth.tools.cli.serve import serve\n"
                    "from hearth.tools import cli, logs\nfrom hearth import api\n"
                    "from .cli import main\nfrom . import proc\n")
    found = sorted(hearth_imports(copy, "hearth.tools.x"))
    assert found == [(2, "hearth.tools.cli.serve.serve"), (3, "hearth.tools.cli"),
                     (3, "hearth.tools.logs"), (4, "hearth.api"), (5, "hearth.tools.cli.main"),
                     (6, "hearth.tools.proc")]
    floors = {floor_of_module(module) for _, module in found}
    assert floors == {"tools.cli", "tools", "api"}
    assert "tools.cli" not in ALLOWED["tools"] and "api" not in ALLOWED["tools"]
    assert "engine" not in ALLOWED["api"]

