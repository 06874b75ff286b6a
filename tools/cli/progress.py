"""The progress lines the commands draw on stderr: a byte count toward a known size (copying a
model in ``hearth models add``, assembling the default model) and requests done toward a total
(``hearth bench``). On a terminal a line is redrawn in place; otherwise each prints one line at
the start or end of its work, so logs stay readable.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from hearth.tools.cli.formatting import format_size

if TYPE_CHECKING:
    from hearth.tools.cli.bench_report import RequestResult

__all__ = ["ByteProgress", "RequestProgress", "TerminalLine", "format_bar", "is_terminal"]

_MIB = 1024 * 1024
_SMALL = 10 * _MIB  # below this a bar's sizes keep a decimal
BAR_WIDTH = 30
REDRAW_S = 0.1  # at most ten redraws a second: more only costs the terminal


def format_bar(label: str, done: int, total: int | None, width: int = BAR_WIDTH) -> str:
    """``LABEL  [#####.....]  45% 110/242 MiB``; below 10 MiB the sizes keep a decimal
    (``37% 416.0 KiB/1.1 MiB``: whole MiB would read ``0/1 MiB``); ``total`` None (a size the
    server did not say): ``LABEL  1.1 MiB`` without a bar."""
    if total is None:
        return f"{label}  {format_size(done)}"
    frac = min(max(done / total, 0.0), 1.0) if total > 0 else 1.0
    filled = int(frac * width)
    sizes = (f"{done // _MIB}/{total // _MIB} MiB" if total >= _SMALL else
             f"{format_size(done)}/{format_size(total)}")
    return f"{label}  [{'#' * filled}{'.' * (width - filled)}] {int(frac * 100):3d}% {sizes}"


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


class ByteProgress:
    """``done`` bytes of ``total`` as a :func:`format_bar` line, redrawn at most every
    ``redraw_s`` on a terminal (``total`` None: a byte count without a bar). Off a terminal
    it prints ``start_line`` at :meth:`start` and ``end_line(seconds)`` at :meth:`finish` and
    nothing between.

    One thread at a time calls it: the copying one, or a poller that watches a file grow."""

    def __init__(self, label: str, total: int | None, stream: TextIO, *, start_line: str,
                 end_line: Callable[[float], str], redraw_s: float = REDRAW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label = label
        self.total = total
        self._line = TerminalLine(stream)
        self.tty = self._line.tty
        self._start_line = start_line
        self._end_line = end_line
        self._redraw_s = redraw_s
        self._clock = clock
        self._started = clock()
        self._last = 0.0
        self._done = 0

    def start(self) -> None:
        if self.tty:
            self._line.draw(format_bar(self.label, 0, self.total))
        else:
            self._line.write(self._start_line + "\n")

    def update(self, done: int, note: str = "") -> None:
        """Redraw with ``done`` bytes (and ``note`` after the bar), unless it was redrawn less
        than ``redraw_s`` ago."""
        self._done = done
        now = self._clock()
        if self.tty and now - self._last >= self._redraw_s:
            self._last = now
            self._line.draw(format_bar(self.label, done, self.total) + note)

    def finish(self) -> None:
        seconds = self._clock() - self._started
        if self.tty:
            final = self.total if self.total is not None else self._done
            self._line.draw(f"{format_bar(self.label, final, self.total)}  "
                            f"done in {seconds:.1f} s")
            self._line.write("\n")
        else:
            self._line.write(self._end_line(seconds) + "\n")

    def abandon(self) -> None:
        """End a drawn bar's line, so an error message starts on a line of its own."""
        if self.tty and self._line.drawn:
            self._line.write("\n")


class RequestProgress:
    """Requests done toward ``total`` across phases (a phase: one server at one concurrency
    level), with the errors so far. On a terminal one bar is redrawn in place; otherwise one
    line is printed per phase. Called from the client threads: all state is behind one lock."""

    def __init__(self, total: int, stream: TextIO, enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled
        self.tty = stream.isatty()
        self.done = self.ok = 0
        self.label = ""
        self.phase_start = self.drawn = 0.0
        self.phase_done = self.phase_ok = 0
        self.lock = threading.Lock()

    def phase(self, label: str) -> None:
        with self.lock:
            self.label, self.phase_start = label, time.perf_counter()
            self.phase_done = self.phase_ok = 0
            self._draw(force=True)

    def advance(self, res: RequestResult) -> None:
        with self.lock:
            self.done += 1
            self.phase_done += 1
            self.ok += res.ok
            self.phase_ok += res.ok
            self._draw(force=False)

    def end_phase(self) -> None:
        with self.lock:
            if not self.enabled:
                return
            if self.tty:
                self._draw(force=True)
                self.stream.write("\n")
            else:
                self.stream.write(f"{self.label}: {self.phase_ok}/{self.phase_done} ok in "
                                  f"{time.perf_counter() - self.phase_start:.1f}s "
                                  f"({self.done}/{self.total} overall)\n")
            self.stream.flush()

    def _draw(self, force: bool) -> None:
        now = time.perf_counter()
        if not (self.enabled and self.tty) or (not force and now - self.drawn < REDRAW_S):
            return
        self.drawn = now
        filled = BAR_WIDTH * self.done // max(1, self.total)
        errors = self.done - self.ok
        self.stream.write(f"\r{self.label:<22} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
                          f"{self.done}/{self.total}  errors {errors}  "
                          f"{now - self.phase_start:5.1f}s ")
        self.stream.flush()
