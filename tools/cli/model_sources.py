"""Where each model in a models directory came from: ``models_dir/.hearth-sources.json``.

The file is one JSON object ``{model_id: source}``; a source is one of

* ``"hf:owner/repo/path/in/repo.gguf"`` - pulled from Hugging Face (a split model: its first part),
* ``"url:<url>"`` - pulled from a URL, recorded without its query and user info (a signed
  URL's query is a credential; :func:`~hearth.tools.cli.url_rules.redact_url`),
* ``"catalogue:<name>"`` - installed from hearth's catalogue,
* ``"added:<original path>"`` - copied or linked in by ``hearth models add``.

Models dropped in by hand have no entry (``hearth models list`` shows ``-``). Writers take an
``flock`` on ``.hearth-sources.lock`` for the read-modify-write and replace the file atomically
(temporary file + rename), so two pulls finishing at once both land and a reader never sees half
a file. A missing or unreadable file reads as no sources: it only decorates the listing.
:func:`read_sources` redacts ``url:`` sources again, for files written before they were.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path

from hearth.tools.cli.file_lock import flocked
from hearth.tools.cli.url_rules import redact_url

__all__ = ["SOURCES_FILE", "forget_source", "read_sources", "record_source"]

SOURCES_FILE = ".hearth-sources.json"
_LOCK_FILE = ".hearth-sources.lock"


def read_sources(models_dir: Path) -> dict[str, str]:
    """``{model_id: source}`` from the models dir (``url:`` sources redacted); ``{}`` when
    there is no (valid) file."""
    try:
        doc = json.loads((Path(models_dir) / SOURCES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: _redacted(v) for k, v in doc.items() if isinstance(k, str) and isinstance(v, str)}


def _redacted(source: str) -> str:
    kind, _, where = source.partition(":")
    return f"url:{redact_url(where)}" if kind == "url" else source


def record_source(models_dir: Path, model_id: str, source: str) -> None:
    """Set ``model_id``'s source (replacing any earlier one; a ``url:`` source is redacted).
    Raises OSError if the file cannot be written."""
    _update(Path(models_dir), model_id, _redacted(source))


def forget_source(models_dir: Path, model_id: str) -> None:
    """Drop ``model_id``'s entry (its model was removed); nothing happens if it has none."""
    models_dir = Path(models_dir)
    if model_id in read_sources(models_dir):
        _update(models_dir, model_id, None)


def _update(models_dir: Path, model_id: str, source: str | None) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    with flocked(models_dir / _LOCK_FILE):
        sources = read_sources(models_dir)
        if source is None:
            sources.pop(model_id, None)
        else:
            sources[model_id] = source
        tmp = models_dir / f"{SOURCES_FILE}.{secrets.token_hex(4)}.tmp"
        try:
            with tmp.open("w", encoding="utf-8") as f:
                json.dump(dict(sorted(sources.items())), f, indent=2, ensure_ascii=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, models_dir / SOURCES_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
