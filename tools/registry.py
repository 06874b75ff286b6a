"""The models directory: every ``*.gguf`` in it is a model whose id is the file stem.

Metadata comes from the GGUF header (``gguf_header``), never from loading weights. The
registry is the only cache of those headers: it keeps each file's entry by path and checks its
:class:`FileStamp` (size, mtime, inode) at every look-up, so listing stays cheap and a rewritten
or replaced file is read again. The directory is rescanned on every look-up, so files dropped in
appear without a restart. The stamp is also how the scheduler tells that a loaded model's file
was replaced under it (scheduler.core).

A split model (llama.cpp's gguf-split: ``{stem}-00001-of-0000N.gguf`` …) is one model: its id
is ``stem``, its path the first part (llama.cpp finds the rest by name), its size the sum of the
parts, and its header the first part's. The other parts are not models of their own; a set with
a part missing is listed with an error.

One registry per process, built at start-up and passed to whoever needs it: the api's (listing,
resolving a request's ``model``), the scheduler's (a model's path and size), a CLI command's.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from hearth.tools.gguf_header import GGUFError, GGUFInfo, read_gguf_metadata

# llama.cpp's split names (llama_split_path): 1-based part number and count, five digits each
_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.I)


def _split_of(name: str) -> tuple[str, int, int] | None:
    """``(stem, part, count)`` when ``name`` is a gguf-split part's file name."""
    m = _SPLIT_RE.match(name)
    if m is None or not 1 <= int(m["no"]) <= int(m["count"]):
        return None
    return m["stem"], int(m["no"]), int(m["count"])


@dataclass(frozen=True, slots=True)
class FileStamp:
    """Which file a path named when it was looked at (``os.stat`` through symlinks). An
    atomic rename over the path gives a new inode even when size and mtime match (``cp -p``,
    a download that sets the server's mtime); a rewrite in place changes size or mtime."""

    path: Path
    size: int  # bytes
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: Path, st: os.stat_result) -> FileStamp:
        return cls(path, st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class ModelEntry:
    id: str
    path: Path
    size: int  # bytes; all parts of a split model
    created: int  # file mtime, seconds
    info: GGUFInfo | None  # None when the header cannot be read
    error: str | None = None  # why the header cannot be read
    # the model's file as looked at (a split model's first part, with the parts' total size)
    stamp: FileStamp | None = None


class ModelRegistry:
    """The models in ``models_dir`` and the config's aliases of them. Not thread-safe: it is
    used from its process's one event loop or main thread."""

    def __init__(self, models_dir: str | os.PathLike[str],
                 aliases: Mapping[str, str] | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.aliases = dict(aliases or {})  # alias -> model id (from the config)
        self._cache: dict[Path, ModelEntry] = {}  # path -> its entry, valid while its stamp is

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
            split = _split_of(path.name)
            if split is not None and split[1] != 1:
                continue  # a later part of a split model: listed through its first part
            entry = self._entry(path)
            if entry is not None and entry.id not in out:  # a plain file wins over a split set
                out[entry.id] = entry
        return out

    def get(self, model_id: str) -> ModelEntry | None:
        if not model_id or "/" in model_id or model_id.startswith("."):
            return None
        entry = self._entry(self.models_dir / f"{model_id}.gguf")
        if entry is not None:
            return entry if _split_of(entry.path.name) is None else None
        try:
            firsts = sorted(self.models_dir.glob(f"{glob.escape(model_id)}-00001-of-*.gguf"))
        except (OSError, ValueError):
            return None
        for path in firsts:
            split = _split_of(path.name)
            if split is not None and split[0] == model_id:
                return self._entry(path)
        return None

    def _entry(self, path: Path) -> ModelEntry | None:
        split = _split_of(path.name)
        if split is not None:
            return self._split_entry(path, *split)
        return self._file_entry(path)

    def _split_entry(self, first: Path, stem: str, _no: int, count: int) -> ModelEntry | None:
        """The model of a split set, from its first part; the other parts' sizes are added
        and a missing one is the entry's error (llama.cpp could not load it)."""
        entry = self._file_entry(first)
        if entry is None:
            return None
        size = entry.size
        missing: list[int] = []
        for no in range(2, count + 1):
            try:
                size += (self.models_dir / f"{stem}-{no:05d}-of-{count:05d}.gguf").stat().st_size
            except OSError:
                missing.append(no)
        error = entry.error
        if missing:
            error = (f"{first}: split model: part(s) {', '.join(map(str, missing))} of {count} "
                     f"missing")
        stamp = replace(entry.stamp, size=size) if entry.stamp else None
        return replace(entry, id=stem, size=size, error=error, stamp=stamp)

    def _file_entry(self, path: Path) -> ModelEntry | None:
        try:
            st = path.stat()
        except (OSError, ValueError):  # ValueError: a NUL in the name a request gave
            return None
        if not path.is_file():
            return None
        stamp = FileStamp.of(path, st)
        cached = self._cache.get(path)
        if cached is not None and cached.stamp == stamp:
            return cached
        info: GGUFInfo | None = None
        error = None
        try:
            info = read_gguf_metadata(path)
        except (GGUFError, OSError) as exc:
            error = str(exc)
        entry = ModelEntry(path.stem, path, st.st_size, int(st.st_mtime), info, error, stamp)
        self._cache[path] = entry
        return entry
