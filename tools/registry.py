"""The models directory: every ``*.gguf`` in it is a model whose id is the file stem.

Metadata comes from the GGUF header (``gguf_header``), never from loading weights. The
registry is the only cache of those headers: it keeps each file's entry by path and checks its
size and mtime at every look-up, so listing stays cheap and a rewritten file is read again. The
directory is rescanned on every look-up, so files dropped in appear without a restart.

One registry per process, built at start-up and passed to whoever needs it: the api's (listing,
resolving a request's ``model``), the scheduler's (a model's path and size), a CLI command's.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from hearth.tools.gguf_header import GGUFError, GGUFInfo, read_gguf_metadata


@dataclass(frozen=True)
class ModelEntry:
    id: str
    path: Path
    size: int
    created: int  # file mtime, seconds
    info: GGUFInfo | None  # None when the header cannot be read
    error: str | None = None  # why the header cannot be read


class ModelRegistry:
    """The models in ``models_dir`` and the config's aliases of them. Not thread-safe: it is
    used from its process's one event loop or main thread."""

    def __init__(self, models_dir: str | os.PathLike[str],
                 aliases: Mapping[str, str] | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.aliases = dict(aliases or {})  # alias -> model id (from the config)
        self._cache: dict[Path, tuple[int, int, ModelEntry]] = {}  # path -> (size, mtime_ns, …)

    def resolve(self, name: str) -> ModelEntry | None:
        """The model a request's ``model`` names: a file stem, or an alias of one."""
        return self.get(name) or (self.get(self.aliases[name]) if name in self.aliases
                                  else None)

    def scan(self) -> dict[str, ModelEntry]:
        out: dict[str, ModelEntry] = {}
        try:
            paths = sorted(self.models_dir.glob("*.gguf"))
        except OSError:
            return out
        for path in paths:
            entry = self._entry(path)
            if entry is not None:
                out[entry.id] = entry
        return out

    def get(self, model_id: str) -> ModelEntry | None:
        if not model_id or "/" in model_id or model_id.startswith("."):
            return None
        path = self.models_dir / f"{model_id}.gguf"
        return self._entry(path)

    def _entry(self, path: Path) -> ModelEntry | None:
        try:
            st = path.stat()
        except (OSError, ValueError):  # ValueError: a NUL in the name a request gave
            return None
        if not path.is_file():
            return None
        cached = self._cache.get(path)
        if cached and cached[0] == st.st_size and cached[1] == st.st_mtime_ns:
            return cached[2]
        info: GGUFInfo | None = None
        error = None
        try:
            info = read_gguf_metadata(path)
        except (GGUFError, OSError) as exc:
            error = str(exc)
        entry = ModelEntry(path.stem, path, st.st_size, int(st.st_mtime), info, error)
        self._cache[path] = (st.st_size, st.st_mtime_ns, entry)
        return entry
