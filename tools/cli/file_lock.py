"""Cross-process locks on files in a models directory (``flock``), for the commands that write
models into it: the catalogue's installs, ``hearth models pull``, the sources record.

A lock file is left in place after use. It may be deleted only by a process that holds it
(``hearth models rm`` does, with the model's leftovers): every :func:`flocked` checks, once it
has the lock, that the path still names the file it locked, and otherwise locks the one that is
there now - so a process that waited on a deleted file's lock never holds it beside another
that locked the new one. On a system without ``fcntl`` there is no lock
(the atomic renames still keep every file whole). Locks are per open file: a process must not
take the same lock twice (the second ``flock`` would wait for the first, for ever).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["Busy", "flocked", "model_lock_path"]


class Busy(Exception):
    """The lock is held by another process and the caller asked not to wait."""


def model_lock_path(models_dir: Path, model_id: str) -> Path:
    """The one lock of every writer of ``<model_id>.gguf`` (and its split parts) in
    ``models_dir``: catalogue installs and pulls of one id exclude each other. (The bootstrap
    has used this name since before the catalogue; keep it.)"""
    return Path(models_dir) / f".{model_id}.gguf.lock"


@contextlib.contextmanager
def flocked(path: Path, *, wait: bool = True,
            on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) inside the ``with``.
    ``wait=False`` raises :class:`Busy` if another process holds it; otherwise ``on_wait`` is
    called once before blocking, so the caller can say what it waits for. OSError (the
    directory is not writable...) comes through as is."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    raise Busy(str(path)) from None
                if on_wait is not None and not told:
                    on_wait()
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _names(path, fd):
            break
        os.close(fd)  # its holder deleted it while we waited: lock the file there now
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def _names(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the open file ``fd``."""
    try:
        return os.path.samestat(os.stat(path), os.fstat(fd))
    except FileNotFoundError:
        return False
