"""Resumable, verified HTTP downloads of GGUF files for ``hearth models pull``.

Why not ``huggingface_hub.hf_hub_download``: it resumes and draws a bar, but it checks no content
hash (the sha256 is only its cache key), writes its own cache layout instead of one named
``.part`` file, prefers the Xet protocol (servers a test cannot stand in for), and brings about
ten dependencies; the hub's resolve endpoint is plain HTTP, which
:class:`~hearth.tools.cli.http_client.HttpClient` speaks directly.

Contract of :func:`download`:

* the bytes go to a ``.part`` file the caller names, with a record of their origin beside it
  (:mod:`hearth.tools.cli.partials`). An existing ``.part`` is resumed only when its record
  names the same URL and size, and either a validator (ETag, Last-Modified) or a published
  sha256 will catch a changed file; it is asked for with ``Range: bytes=N-`` and ``If-Range``.
  A ``206`` whose ``Content-Range`` starts at N (and whose validators did not change) appends;
  a ``200`` means the file changed or the server ignores ranges: it is written afresh. A ``416``
  for a ``.part`` that is already whole has it checked (sha256, GGUF header) and counted as
  done; a longer or failing one is started again. Every restart says why, in one line;
* the sha256 of the whole file is computed while writing (a resumed file's existing bytes are
  hashed first) and compared with the expected one (the caller's, else a 64-hex ``ETag`` /
  ``X-Linked-ETag`` of any hop);
* the GGUF magic is checked on the first bytes (an HTML page is refused before it is all
  fetched) and the header parsed at the end (:func:`hearth.tools.gguf_header.read_gguf_metadata`);
* a refused file (hash, not GGUF) is deleted with its record; a broken connection or Ctrl-C
  keeps both.

Every failure is a :class:`~hearth.tools.cli.http_client.PullError`, whose kind's value is the
exit status of ``hearth models pull``.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import os
import re
import shutil
import time
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import TextIO

from hearth.tools.cli.formatting import format_size
from hearth.tools.cli.hf_refs import sha256_from_etag
from hearth.tools.cli.http_client import (
    HttpClient,
    PullError,
    PullErrorKind,
    describe_host,
    reason_of,
)
from hearth.tools.cli.partials import PartRecord, discard, read_record, write_record
from hearth.tools.cli.progress import ByteProgress
from hearth.tools.cli.url_rules import redact_url
from hearth.tools.gguf_header import GGUF_MAGIC, GGUFError, read_gguf_metadata

__all__ = ["Download", "download", "ensure_free_space", "format_rate"]

_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")
_ATTEMPTS = 3  # a restart after a bad resume, and one more for a server that moves under us


def format_rate(bytes_per_s: float) -> str:
    return f"{format_size(int(bytes_per_s))}/s"


def ensure_free_space(directory: Path, needed: int) -> None:
    """Raise NO_SPACE unless ``directory``'s file system has ``needed`` bytes free."""
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return  # cannot tell: the write itself will say
    if needed > free:
        raise PullError(PullErrorKind.NO_SPACE,
                        f"not enough disk space in {directory}: needs {format_size(needed)}, "
                        f"{format_size(free)} free")


@dataclass(frozen=True)
class Download:
    """A finished, verified ``.part``: ``size`` bytes; ``sha256`` computed over all of it;
    ``verified`` when it matched a published hash; ``resumed_from`` bytes kept from before;
    ``transferred`` bytes received in this run."""

    part: Path
    size: int
    sha256: str
    verified: bool
    resumed_from: int
    transferred: int


def _published_sha256(client: HttpClient) -> str | None:
    for headers in client.hops:  # the hub's 302 carries X-Linked-ETag; a CDN's ETag may too
        for name in ("X-Linked-ETag", "ETag"):
            if sha := sha256_from_etag(headers.get(name)):
                return sha
    return None


def _tell(progress: TextIO | None, line: str) -> None:
    if progress is not None:
        progress.write(line + "\n")
        progress.flush()


def _size_of(part: Path) -> int:
    try:
        return part.stat().st_size
    except FileNotFoundError:
        return 0


def _why_not_resume(part: Path, record: PartRecord | None, url: str, have: int,
                    expected_size: int | None, expected_sha256: str | None) -> str | None:
    """Why the ``have`` bytes in ``part`` may not be continued from ``url``, or None."""
    if record is None:
        return f"no record of where {part.name} came from"
    if record.url != url:
        return f"{part.name} was downloaded from another URL ({record.url})"
    if expected_size is not None and record.size not in (None, expected_size):
        return "the file's size has changed since the partial download"
    size = expected_size if expected_size is not None else record.size
    if size is not None and have > size:
        return (f"the partial download ({format_size(have)}) is longer than the file "
                f"({format_size(size)})")
    if record.validator is None and not (expected_sha256 or record.sha256):
        return "the server gave no ETag, Last-Modified or sha256 to check a resume against"
    return None


def _changed(record: PartRecord | None, headers: Message, size: int | None) -> bool:
    """Whether a response's validators or size differ from those the ``.part`` began with."""
    if record is None:
        return False
    etag, modified = headers.get("ETag"), headers.get("Last-Modified")
    return bool((record.etag and etag and etag != record.etag)
                or (record.last_modified and modified and modified != record.last_modified)
                or (record.size is not None and size is not None and size != record.size))


def download(client: HttpClient, url: str, part: Path, *, label: str,
             expected_sha256: str | None = None, expected_size: int | None = None,
             progress: TextIO | None = None) -> Download:
    """Download ``url`` into ``part`` (resuming it), verify it, and return what was done;
    progress and restart lines go to ``progress``. See the module docstring for the contract.
    Raises :class:`PullError`."""
    shown = redact_url(url)
    for _attempt in range(_ATTEMPTS):
        have = _size_of(part)
        record = read_record(part) if have else None
        if have and (why := _why_not_resume(part, record, shown, have, expected_size,
                                            expected_sha256)) is not None:
            _tell(progress, f"{label}: {why}; starting again")
            discard(part)
            have, record = 0, None
        headers: dict[str, str] = {}
        if have and record is not None:
            headers["Range"] = f"bytes={have}-"
            if record.validator:  # a changed file then comes whole (200), not as a 206 of it
                headers["If-Range"] = record.validator
        resp = client.open(url, headers, ok_statuses=(416,))
        with resp:
            if resp.status == 416:
                m = _UNSATISFIED_RANGE.match(resp.headers.get("Content-Range", ""))
                size = int(m[1]) if m else (record.size if record else None)
                if size == have and not _changed(record, resp.headers, size):
                    try:  # the .part is already whole (a pull that failed on a later part)
                        return _finish(client, part, have, expected_sha256 or (
                            record.sha256 if record else None), have, 0, label, progress,
                            started=None)
                    except PullError as exc:
                        if exc.kind not in (PullErrorKind.HASH_MISMATCH, PullErrorKind.NOT_GGUF):
                            raise
                        why = "its sha256 differs" if (
                            exc.kind is PullErrorKind.HASH_MISMATCH) else "it is not a GGUF"
                        _tell(progress, f"{label}: the complete partial download fails its "
                                        f"check ({why}); starting again")
                        discard(part)
                        continue
                longer = f"longer than the file ({format_size(size)})" if (
                    size is not None and size < have) else "not the file the server has"
                _tell(progress, f"{label}: the partial download ({format_size(have)}) is "
                                f"{longer}; starting again")
                discard(part)
                continue
            start, total = _start_and_total(resp, have, expected_size)
            if resp.status == 206 and (start != have or _changed(record, resp.headers, total)):
                _tell(progress, f"{label}: the server answered with another range or another "
                                f"file; starting again")
                discard(part)  # never write bytes at an offset we did not ask for
                continue
            if resp.status == 200 and have:
                # the file changed (If-Range did not match) or the server ignores ranges: its
                # body is the whole file, written afresh
                _tell(progress, f"{label}: the file changed on the server or it cannot "
                                f"resume; starting again")
                have = 0
            if total is not None:
                ensure_free_space(part.parent, total - have)
            if have == 0:
                _start_record(part, shown, resp.headers, total, expected_sha256 or (
                    _published_sha256(client)))
            return _receive(client, resp, part, have, total, expected_sha256 or (
                record.sha256 if record else None), label, progress)
    raise PullError(PullErrorKind.OFFLINE, f"{shown}: the server keeps answering with other "
                                           f"ranges or files for {part.name}")


def _start_record(part: Path, url: str, headers: Message, total: int | None,
                  sha256: str | None) -> None:
    """Write ``part``'s record before its first byte, so any ``.part`` on disk has one."""
    discard(part)
    try:
        write_record(part, PartRecord(url, total, headers.get("ETag"),
                                      headers.get("Last-Modified"), sha256))
    except OSError as exc:
        raise _write_error(part, exc) from None


def _start_and_total(resp: http.client.HTTPResponse, have: int,
                     expected_size: int | None) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's whole size (None if unknown)."""
    if resp.status == 206:
        m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
        if m is None:
            return -1, expected_size  # no usable Content-Range: the caller starts again
        return int(m[1]), (int(m[3]) if m[3] != "*" else expected_size)
    length = resp.headers.get("Content-Length")
    return 0, int(length) if length and length.isdigit() else expected_size


def _hash_existing(part: Path) -> hashlib._Hash:
    h = hashlib.sha256()
    with part.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h


def _receive(client: HttpClient, resp: http.client.HTTPResponse, part: Path, have: int,
             total: int | None, expected_sha256: str | None, label: str,
             progress: TextIO | None) -> Download:
    hasher = _hash_existing(part) if have else hashlib.sha256()
    done = have
    where = f" from {describe_host(resp.url or '')}"
    size = format_size(total) if total is not None else None
    start_line = (f"{label}: resuming at {format_size(have)} of {size or 'a file of unknown size'}"
                  f"{where}" if have else f"{label}: downloading {size or '(size unknown)'}{where}")
    bar = ByteProgress(label, total, progress, start_line=start_line,
                       end_line=lambda s: "") if progress is not None else None
    started = time.monotonic()
    if bar is not None:
        if bar.tty:  # the bar shows bytes, not where they come from: say that first
            _tell(progress, start_line)
        bar.start()
    try:
        with part.open("ab" if have else "wb") as out:
            while True:
                try:
                    # read1: what has arrived (up to a chunk), so the .part holds every byte
                    # received when the connection drops or Ctrl-C comes
                    block = resp.read1(_CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise PullError(PullErrorKind.OFFLINE, _lost(label, done, total, exc)) from None
                if not block:
                    break  # the end, or a dropped connection: the size check below tells
                if done == 0 and not block.startswith(GGUF_MAGIC[: len(block)]):
                    out.close()
                    discard(part)
                    raise PullError(PullErrorKind.NOT_GGUF, f"{label}: not a GGUF file "
                                    f"({_what_it_is(block)}); nothing was kept")
                try:
                    out.write(block)
                    out.flush()  # on disk now, not in the writer's buffer: a kill keeps it,
                    # and the .part's size is the count of bytes received
                except OSError as exc:
                    raise _write_error(part, exc) from None
                hasher.update(block)
                done += len(block)
                if bar is not None:
                    bar.update(done, _rate_note(done - have, started, done, total))
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as exc:
                raise _write_error(part, exc) from None
    except BaseException:
        if bar is not None:
            bar.abandon()
        raise
    if total is not None and done != total:
        raise PullError(PullErrorKind.OFFLINE, _lost(label, done, total, None))
    return _finish(client, part, done, expected_sha256, have, done - have, label, progress,
                   started=started, hasher=hasher, bar=bar)


def _finish(client: HttpClient, part: Path, size: int, expected_sha256: str | None, have: int,
            transferred: int, label: str, progress: TextIO | None, *, started: float | None,
            hasher: hashlib._Hash | None = None, bar: ByteProgress | None = None) -> Download:
    digest = (hasher or _hash_existing(part)).hexdigest()
    expected = (expected_sha256 or _published_sha256(client) or "").lower() or None
    if expected is not None and digest != expected:
        discard(part)
        raise PullError(PullErrorKind.HASH_MISMATCH,
                        f"{label}: sha256 mismatch (expected {expected}, got {digest}); the "
                        f"download was removed")
    try:
        read_gguf_metadata(part)
    except GGUFError as exc:
        discard(part)
        why = str(exc).removeprefix(f"{os.fspath(part)}: ")
        raise PullError(PullErrorKind.NOT_GGUF, f"{label}: not a valid GGUF file ({why}); the "
                                                f"download was removed") from None
    except OSError as exc:
        raise PullError(PullErrorKind.IO,
                        f"cannot read {part}: {exc.strerror or exc}") from None
    if bar is not None and bar.tty:
        bar.finish()  # the bar drawn full, on a line of its own; the summary follows
    check = "sha256 verified" if expected else "not verified (no hash published)"
    if started is None:
        _tell(progress, f"{label}: already downloaded ({format_size(size)}), {check}")
    else:
        seconds = max(time.monotonic() - started, 1e-6)
        _tell(progress, f"{label}: {format_size(transferred)} in {seconds:.1f} s "
                        f"({format_rate(transferred / seconds)}), {check}")
    return Download(part, size, digest, expected is not None, have, transferred)


def _rate_note(transferred: int, started: float, done: int, total: int | None) -> str:
    elapsed = time.monotonic() - started
    if elapsed <= 0 or transferred <= 0:
        return ""
    rate = transferred / elapsed
    note = f"  {format_rate(rate)}"
    if total:
        left = max(total - done, 0) / rate
        note += f"  ETA {int(left) // 60}:{int(left) % 60:02d}"
    return note


def _lost(label: str, done: int, total: int | None, exc: BaseException | None) -> str:
    of = f" of {format_size(total)}" if total is not None else ""
    why = f": {reason_of(exc)}" if exc is not None else ""
    return (f"{label}: connection lost after {format_size(done)}{of}{why}; the partial "
            f"download is kept: run the same command again to resume")


def _write_error(part: Path, exc: OSError) -> PullError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return PullError(PullErrorKind.NO_SPACE, f"disk full while writing {part} (the partial "
                                                 f"download is kept)")
    return PullError(PullErrorKind.IO, f"cannot write {part}: {exc.strerror or exc}")


def _what_it_is(block: bytes) -> str:
    head = block[:256].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<html" in head:
        return "an HTML page"
    if head.startswith((b"{", b"[")):
        return "a JSON document"
    return f"it starts with {block[:8]!r}"
