"""Making a rename durable: a file moved into place by ``os.replace`` survives a power cut only
once its directory's entry is on disk too (the default-model bootstrap, ``hearth models add``)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir"]


def fsync_dir(directory: Path) -> None:
    """fsync ``directory`` where the system allows it; never raises."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported here (e.g. Windows); the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
