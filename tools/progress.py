"""A plain-text progress bar line, shared by the default-model bootstrap and `hearth models add`."""

from __future__ import annotations

_MIB = 1024 * 1024


def format_bar(label: str, done: int, total: int, width: int = 30) -> str:
    """``LABEL  [#####.....]  45% 110/242 MiB``"""
    frac = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
    filled = int(frac * width)
    return (f"{label}  [{'#' * filled}{'.' * (width - filled)}] "
            f"{int(frac * 100):3d}% {done // _MIB}/{total // _MIB} MiB")
