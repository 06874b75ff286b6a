"""A plain-text progress bar line, shared by the default-model bootstrap and `hearth models add`."""

from __future__ import annotations

import contextlib
from typing import TextIO

_MIB = 1024 * 1024


def format_bar(label: str, done: int, total: int, width: int = 30) -> str:
    """``LABEL  [#####.....]  45% 110/242 MiB``"""
    frac = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
    filled = int(frac * width)
    return (f"{label}  [{'#' * filled}{'.' * (width - filled)}] "
            f"{int(frac * 100):3d}% {done // _MIB}/{total // _MIB} MiB")


def is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class TerminalLine:
    """One status line on ``stream``: redrawn in place (``draw``) when it is a terminal; plain
    ``write`` otherwise. A closed or broken stream never raises."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = is_terminal(stream)
        self.drawn = 0  # length of the line on screen, so a shorter redraw blanks the rest

    def draw(self, line: str) -> None:
        self.write("\r" + line.ljust(self.drawn))
        self.drawn = len(line)

    def write(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()
