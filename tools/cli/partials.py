"""Unfinished downloads in a models directory, and what each one is a part of.

``hearth models pull`` writes a file's bytes to ``.{file}.part`` (``file`` as it will be named:
``{id}.gguf`` or ``{id}-0000k-of-0000N.gguf``) and, before the first byte, a record beside it,
``.{file}.part.json``: ``{"url", "size", "etag", "last_modified", "sha256"}`` - the URL
asked for (without query or user info: a signed URL's query is a credential), the file's whole
size, the server's validators and the sha256 the source published, as the first response gave
them. A resume is only made against the
same URL, and is sent with ``If-Range`` (RFC 9110 13.1.5) so that a server whose file changed
answers with the whole new file instead of the rest of another one. A ``.part`` without a
readable record is not resumed. The catalogue writes ``{id}.gguf.part`` (not hidden) and
removes it itself; it is only found here when a process was killed.

None of these names ends in ``.gguf``, so a scanning server never lists them.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec
from hearth.tools.cli.file_lock import Busy, flocked, model_lock_path
from hearth.tools.cli.hf_refs import split_name

__all__ = ["PartRecord", "discard", "leftovers", "read_record", "record_path",
           "remove_leftovers", "write_record"]


class PartRecord(msgspec.Struct, frozen=True):
    """Where a ``.part`` came from: ``url`` (redacted), ``size`` in bytes of the whole file
    (None if the server did not say), the validators of the response it started with, and the
    published ``sha256`` (hex) if there was one."""

    url: str
    size: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    sha256: str | None = None

    @property
    def validator(self) -> str | None:
        """What to send as ``If-Range``: a strong ETag, else Last-Modified, else None (a weak
        ETag may not be used there)."""
        if self.etag and not self.etag.startswith(("W/", "w/")):
            return self.etag
        return self.last_modified or None


def record_path(part: Path) -> Path:
    """``.{file}.part`` -> ``.{file}.part.json``."""
    return part.with_name(part.name + ".json")


def read_record(part: Path) -> PartRecord | None:
    """The record of ``part``, or None when it is missing or unreadable."""
    try:
        return msgspec.json.decode(record_path(part).read_bytes(), type=PartRecord)
    except (OSError, msgspec.DecodeError):
        return None


def write_record(part: Path, record: PartRecord) -> None:
    """Write ``part``'s record atomically (a temporary file renamed over it). Raises OSError."""
    path = record_path(part)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(msgspec.json.encode(record) + b"\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def discard(part: Path) -> None:
    """Remove ``part`` and its record (either may be missing; errors are ignored: a leftover
    is only ever resumed after its record was checked)."""
    for p in (part, record_path(part)):
        with contextlib.suppress(OSError):
            p.unlink(missing_ok=True)


def leftovers(models_dir: Path, model_id: str) -> list[Path]:
    """The unfinished downloads of model ``model_id`` in ``models_dir``: the pull's ``.part``
    files and records (single and split names) and the catalogue's ``{id}.gguf.part``;
    sorted. The model's lock file is not among them."""
    found: list[Path] = []
    try:
        names = sorted(os.listdir(models_dir))
    except OSError:
        return []
    for name in names:
        if name == f"{model_id}.gguf.part":
            found.append(models_dir / name)
            continue
        if not name.startswith("."):
            continue
        file = name[1:].removesuffix(".json")
        if not file.endswith(".part"):
            continue
        file = file.removesuffix(".part")
        split = split_name(file)
        if file == f"{model_id}.gguf" or (split is not None and split[0] == model_id):
            found.append(models_dir / name)
    return found


def remove_leftovers(models_dir: Path, model_id: str) -> list[Path] | None:
    """Remove ``model_id``'s :func:`leftovers` and its lock file, and return what was removed;
    None (nothing removed) while a pull or install holds the model's lock - the files are its
    work in progress. The lock is tried without waiting, and deleted while held (see
    :mod:`hearth.tools.cli.file_lock` for why that is safe). Raises OSError."""
    lock = model_lock_path(models_dir, model_id)
    if not os.path.lexists(lock) and not leftovers(models_dir, model_id):
        return []
    try:
        with flocked(lock, wait=False):
            found = leftovers(models_dir, model_id)
            for p in found:
                p.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
    except Busy:
        return None
    return found
