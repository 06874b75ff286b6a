"""Stand-in for the catalogue of registry-shipped GGUFs (issue 14): the interface
``hearth models pull`` calls, with no entries. The real module replaces this file at merge.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

__all__ = ["CatalogueEntry", "CatalogueError", "entries", "find", "install"]


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    model_id: str
    size: int
    sha256: str
    licence: str
    description: str


class CatalogueError(Exception):
    """A catalogue model cannot be installed; the message is one line for the user."""


def entries() -> list[CatalogueEntry]:
    return []


def find(ref: str) -> CatalogueEntry | None:
    return next((e for e in entries() if e.name == ref), None)


def install(entry: CatalogueEntry, models_dir: Path, *, progress: TextIO | None) -> Path:
    raise CatalogueError(f"the catalogue cannot install {entry.name} yet")
