"""Where each model in a models directory came from, for ``hearth models list``.

One JSON object in ``models_dir/.hearth-sources.json``: ``{model_id: source}``, where a source
is a short string naming the origin (``catalogue:smollm2-135m-instruct``, a Hugging Face
reference, a URL). The file is hidden so the registry, which lists ``*.gguf``, never sees it.
It is rewritten whole through a temporary file and a rename, so a reader sees the old or the
new map, never half of one. Writers are the commands that put models in place; two writing at
once may lose one entry (the last rename wins), never corrupt the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from hearth.tools.cli.fsync import fsync_dir

__all__ = ["SOURCES_FILENAME", "read_sources", "record_source"]

SOURCES_FILENAME = ".hearth-sources.json"


def read_sources(models_dir: Path) -> dict[str, str]:
    """``{model_id: source}`` from ``models_dir``; empty when the file is missing or unreadable
    (it is informative only: a damaged one must not stop a command)."""
    try:
        data = json.loads((Path(models_dir) / SOURCES_FILENAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def record_source(models_dir: Path, model_id: str, source: str) -> None:
    """Set ``model_id``'s source in ``models_dir`` (atomically: temporary file + rename).
    Raises OSError if the directory is not writable."""
    models_dir = Path(models_dir)
    sources = read_sources(models_dir)
    sources[model_id] = source
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=SOURCES_FILENAME + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes it 0600; it holds nothing secret
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(sources, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, models_dir / SOURCES_FILENAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(models_dir)
