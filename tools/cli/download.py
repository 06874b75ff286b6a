"""Resumable, verified HTTP downloads of GGUF files for ``hearth models pull``.

Standard library only (urllib: proxies from the environment, TLS with the system's CAs). Why not
``huggingface_hub.hf_hub_download``: it resumes and draws a bar, but it checks no content hash
(the sha256 is only its cache key), writes its own cache layout instead of one named ``.part``
file, prefers the Xet protocol (servers a test cannot stand in for), and brings about ten
dependencies; the hub's resolve endpoint is plain HTTP, which this module speaks directly.

Contract of :func:`download`:

* the bytes go to a ``.part`` file the caller names; an existing ``.part`` is resumed with
  ``Range: bytes=N-`` (a ``206`` whose ``Content-Range`` starts at N appends; a ``200`` means
  the server ignored the range, and the file is started again from zero);
* redirects are followed by hand (at most 10) so that the hub's ``X-Linked-ETag`` on the 302
  is seen and the token (``Authorization: Bearer``) goes only to ``token_origin`` - never to a
  CDN on another host the hub redirects to;
* the sha256 of the whole file is computed while writing (a resumed file's existing bytes are
  hashed first) and compared with the expected one (the caller's, else a 64-hex ``ETag``);
* the GGUF magic is checked on the first bytes (an HTML page is refused before it is all
  fetched) and the header parsed at the end (:func:`hearth.tools.gguf_header.read_gguf_metadata`);
* a refused file (hash, not GGUF) is deleted; a broken connection or Ctrl-C keeps the ``.part``.

Every failure is a :class:`PullError` with a :class:`PullErrorKind`, whose value is the exit
status of ``hearth models pull``.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, TextIO

from hearth.tools.cli.formatting import format_size
from hearth.tools.cli.hf_refs import sha256_from_etag
from hearth.tools.cli.progress import ByteProgress
from hearth.tools.gguf_header import GGUF_MAGIC, GGUFError, read_gguf_metadata

__all__ = [
    "Download",
    "HttpClient",
    "PullError",
    "PullErrorKind",
    "download",
    "ensure_free_space",
    "format_rate",
    "origin_of",
]

_CHUNK = 1 << 20
_MAX_REDIRECTS = 10
_TIMEOUT_S = 30.0  # connect and per-read: a stalled CDN fails instead of hanging forever
_CONTENT_RANGE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE = re.compile(r"^bytes\s+\*/(\d+)$")
_REDIRECTS = (301, 302, 303, 307, 308)


class PullErrorKind(enum.Enum):
    """What went wrong; the value is the exit status (0 is success, 130 Ctrl-C)."""

    IO = 1  # a local file could not be written or read
    BAD_REF = 2  # the reference is malformed, or names no (or several) files
    OFFLINE = 3  # no connection, a dropped one, or a server error (5xx)
    NOT_FOUND = 4  # 404
    UNAUTHORISED = 5  # 401 / 403
    NO_SPACE = 6  # not enough free disk space
    HASH_MISMATCH = 7  # the sha256 differs from the source's
    NOT_GGUF = 8  # an HTML page, a truncated file, a wrong magic
    EXISTS = 9  # the model id is taken (--force replaces it)
    BUSY = 10  # another pull of the same model is running


class PullError(Exception):
    """A failed pull; ``str()`` is one line for the user (never holding a token)."""

    def __init__(self, kind: PullErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


Origin = tuple[str, str, int]


def origin_of(url: str) -> Origin:
    """``(scheme, host, port)`` of ``url``, lowercase, with the scheme's default port."""
    p = urllib.parse.urlsplit(url)
    scheme = p.scheme.lower()
    port = p.port or (443 if scheme == "https" else 80)
    return scheme, (p.hostname or "").lower(), port


def format_rate(bytes_per_s: float) -> str:
    return f"{format_size(int(bytes_per_s))}/s"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand every 3xx back as an HTTPError, so :class:`HttpClient` follows it itself."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class HttpClient:
    """GETs with hand-followed redirects. ``token`` goes as ``Authorization: Bearer`` to URLs of
    ``token_origin`` only. ``hops`` of the last :meth:`open`: each response's headers, in order
    (the redirects', then the final one's)."""

    token: str | None = None
    token_origin: Origin | None = None
    timeout: float = _TIMEOUT_S
    user_agent: str = "hearth-models-pull/1"
    hops: list[Message] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._opener = urllib.request.build_opener(_NoRedirect)

    def _is_token_host(self, url: str) -> bool:
        return self.token_origin is not None and origin_of(url) == self.token_origin

    def open(self, url: str, headers: dict[str, str] | None = None,
             ok_statuses: tuple[int, ...] = ()) -> http.client.HTTPResponse:
        """The final response to GET ``url`` (status 2xx, or one of ``ok_statuses``). The
        caller closes it. Raises :class:`PullError` (OFFLINE, NOT_FOUND, UNAUTHORISED)."""
        self.hops = []
        for _ in range(_MAX_REDIRECTS + 1):
            req = urllib.request.Request(url, headers={
                "User-Agent": self.user_agent, "Accept-Encoding": "identity", **(headers or {})})
            if self.token and self._is_token_host(url):
                req.add_unredirected_header("Authorization", f"Bearer {self.token}")
            try:
                resp: http.client.HTTPResponse = self._opener.open(req, timeout=self.timeout)
                self.hops.append(resp.headers)
                return resp
            except urllib.error.HTTPError as exc:
                self.hops.append(exc.headers)
                status = exc.code
                location = exc.headers.get("Location")
                exc.close()
                if status in _REDIRECTS and location:
                    url = urllib.parse.urljoin(url, location)
                    continue
                if status in ok_statuses:
                    return exc  # type: ignore[return-value]  # an HTTPError is a response
                raise self._status_error(status, url, exc.headers) from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                raise PullError(PullErrorKind.OFFLINE, f"cannot reach {_host(url)}: "
                                f"{_reason(exc)} (offline?)") from None
        raise PullError(PullErrorKind.OFFLINE, f"too many redirects from {_short(url)}")

    def get_json(self, url: str) -> tuple[Any, Message]:
        """GET ``url`` as JSON; returns the document and the final response's headers."""
        with self.open(url, {"Accept": "application/json"}) as resp:
            try:
                body = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                raise PullError(PullErrorKind.OFFLINE,
                                f"connection to {_host(url)} lost: {_reason(exc)}") from None
            headers = resp.headers
        try:
            return json.loads(body), headers
        except ValueError:
            raise PullError(PullErrorKind.OFFLINE,
                            f"{_short(url)} did not answer with JSON") from None

    def _status_error(self, status: int, url: str,
                      headers: Message) -> PullError:
        code = headers.get("X-Error-Code", "")
        token_host = self._is_token_host(url)
        if status in (401, 403) and code == "RepoNotFound":
            # the hub answers 401 for a repo that does not exist *or* that this token may not see
            hint = "" if self.token else "; if it is private, set HF_TOKEN or pass --hf-token"
            return PullError(PullErrorKind.NOT_FOUND, f"repository not found: {_short(url)}{hint}")
        if status in (401, 403):
            if not token_host:
                return PullError(PullErrorKind.UNAUTHORISED,
                                 f"access refused ({status}) by {_host(url)}: {_short(url)}")
            if not self.token:
                return PullError(PullErrorKind.UNAUTHORISED,
                                 f"access refused ({status}) to {_short(url)}: set HF_TOKEN or "
                                 f"pass --hf-token (a Hugging Face token with access to it)")
            gated = " (a gated model: accept its terms on its hub page)" if (
                code == "GatedRepo") else ""
            return PullError(PullErrorKind.UNAUTHORISED,
                             f"access refused ({status}) to {_short(url)}: the token in HF_TOKEN"
                             f"/--hf-token was refused or has no access{gated}")
        if status == 404:
            return PullError(PullErrorKind.NOT_FOUND, f"not found (404): {_short(url)}")
        return PullError(PullErrorKind.OFFLINE, f"{_host(url)} answered {status} for "
                                                f"{_short(url)}")


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _short(url: str) -> str:
    # the query of a signed CDN URL is long and says nothing to the user
    return url.split("?", 1)[0]


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, http.client.IncompleteRead):
        return "the connection closed early"
    return str(getattr(reason, "strerror", None) or reason) or type(reason).__name__


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


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def download(client: HttpClient, url: str, part: Path, *, label: str,
             expected_sha256: str | None = None, expected_size: int | None = None,
             progress: TextIO | None = None) -> Download:
    """Download ``url`` into ``part`` (resuming it), verify it, and return what was done.
    See the module docstring for the contract. Raises :class:`PullError`."""
    for _attempt in range(2):
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        resp = client.open(url, headers, ok_statuses=(416,))
        with resp:
            status = resp.status
            if status == 416:
                m = _UNSATISFIED_RANGE.match(resp.headers.get("Content-Range", ""))
                if m and int(m[1]) == have:
                    return _finish(client, part, have, expected_sha256, have, 0, label, progress,
                                   started=None)
                _remove(part)  # the part is longer than the file now is: start again
                continue
            start, total = _start_and_total(resp, have, expected_size)
            if status == 206 and start != have:
                _remove(part)  # a range we did not ask for: ask again for the whole file
                continue
            if status == 200 and have:
                # the server ignored the range: its body is the whole file, written afresh
                if progress is not None:
                    progress.write(f"{label}: the server cannot resume; starting again\n")
                have = 0
            if total is not None:
                ensure_free_space(part.parent, total - have)
            return _receive(client, resp, part, have, total, expected_sha256, label, progress)
    raise PullError(PullErrorKind.OFFLINE, f"{_short(url)}: the server keeps refusing the "
                                           f"byte range of {part.name}")


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


def _hash_existing(part: Path, have: int) -> hashlib._Hash:
    h = hashlib.sha256()
    with part.open("rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h


def _receive(client: HttpClient, resp: http.client.HTTPResponse, part: Path, have: int,
             total: int | None, expected_sha256: str | None, label: str,
             progress: TextIO | None) -> Download:
    hasher = _hash_existing(part, have) if have else hashlib.sha256()
    done = have
    shown = total if total is not None else 0
    where = f" from {_host(resp.url or '')}"
    start_line = (f"{label}: resuming at {format_size(have)} of {format_size(shown)}{where}"
                  if have else f"{label}: downloading {format_size(shown)}{where}")
    bar = ByteProgress(label, shown, progress, start_line=start_line,
                       end_line=lambda s: "") if progress is not None else None
    started = time.monotonic()
    if bar is not None:
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
                    _remove(part)
                    raise PullError(PullErrorKind.NOT_GGUF, f"{label}: not a GGUF file "
                                    f"({_what_it_is(block)}); nothing was kept")
                try:
                    out.write(block)
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
    digest = (hasher or _hash_existing(part, size)).hexdigest()
    expected = (expected_sha256 or _published_sha256(client) or "").lower() or None
    if expected is not None and digest != expected:
        _remove(part)
        raise PullError(PullErrorKind.HASH_MISMATCH,
                        f"{label}: sha256 mismatch (expected {expected}, got {digest}); the "
                        f"download was removed")
    try:
        read_gguf_metadata(part)
    except GGUFError as exc:
        _remove(part)
        why = str(exc).removeprefix(f"{os.fspath(part)}: ")
        raise PullError(PullErrorKind.NOT_GGUF, f"{label}: not a valid GGUF file ({why}); the "
                                                f"download was removed") from None
    except OSError as exc:
        raise PullError(PullErrorKind.IO,
                        f"cannot read {part}: {exc.strerror or exc}") from None
    if bar is not None and bar.tty:
        bar.finish()  # the bar drawn full, on a line of its own; the summary follows
    if progress is not None:
        check = "sha256 verified" if expected else "not verified (no hash published)"
        if started is None:
            line = f"{label}: already downloaded ({format_size(size)}), {check}"
        else:
            seconds = max(time.monotonic() - started, 1e-6)
            line = (f"{label}: {format_size(transferred)} in {seconds:.1f} s "
                    f"({format_rate(transferred / seconds)}), {check}")
        progress.write(line + "\n")
        progress.flush()
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
    why = f": {_reason(exc)}" if exc is not None else ""
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
