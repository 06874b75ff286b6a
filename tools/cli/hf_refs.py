"""What ``hearth models pull REF`` means by REF, and which files of a Hugging Face repo it takes.

Pure functions, no network: the pull (tools/cli/pull.py) asks the hub and calls these.

REF kinds (a catalogue name is tried before any of these, by the caller):

* ``https://host/…/name.gguf`` (or ``http://``) -> :class:`UrlRef` (one with
  ``user:password@`` is refused: it would be recorded and shown);
* ``owner/repo:QUANT`` -> :class:`HfRepoRef` with ``quant`` (as llama-server's ``-hf`` and
  Ollama's ``hf.co/owner/repo:QUANT`` take it);
* ``owner/repo`` -> :class:`HfRepoRef` without ``quant``: the repo's only GGUF model;
* ``owner/repo/path/to/file.gguf`` -> :class:`HfFileRef`.

An optional ``hf.co/`` or ``huggingface.co/`` prefix is dropped, as Ollama users type it.

Split GGUFs are llama.cpp's gguf-split format: ``{stem}-00001-of-00003.gguf`` … (five digits
each, 1-based); llama.cpp opens the first part and finds the others by that name
(``llama_split_path`` in llama.cpp). The model's id is ``stem``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from hearth.tools.cli.url_rules import redact_url

__all__ = [
    "HfFileRef",
    "HfRepoRef",
    "ModelFiles",
    "RefError",
    "RepoFile",
    "UrlRef",
    "choose_model",
    "group_models",
    "model_files_for_path",
    "parse_ref",
    "sha256_from_etag",
    "split_name",
    "split_part_names",
]

# GitHub-like names: letters, digits, '-', '_', '.'; no leading '.' or '-'
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
_REPO_RE = re.compile(rf"^(?P<owner>{_NAME})/(?P<repo>{_NAME})(?::(?P<quant>[A-Za-z0-9_.-]+))?$")
_FILE_RE = re.compile(rf"^(?P<owner>{_NAME})/(?P<repo>{_NAME})/(?P<path>.+\.gguf)$", re.I)
_SPLIT_RE = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.I)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HUB_PREFIXES = ("hf.co/", "huggingface.co/")


class RefError(ValueError):
    """REF cannot be pulled as given (bad syntax, no or several matching files); the message is
    one line for the user."""


@dataclass(frozen=True)
class UrlRef:
    url: str


@dataclass(frozen=True)
class HfRepoRef:
    owner: str
    repo: str
    quant: str | None  # None: the repo's only GGUF model

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.repo}"


@dataclass(frozen=True)
class HfFileRef:
    owner: str
    repo: str
    path: str  # inside the repo, '/'-separated

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.repo}"


Ref = UrlRef | HfRepoRef | HfFileRef


def parse_ref(ref: str) -> Ref:
    """Classify a REF that is not a catalogue name. Raises :class:`RefError`."""
    ref = ref.strip()
    if not ref:
        raise RefError("empty model reference")
    lowered = ref.lower()
    if lowered.startswith(("http://", "https://")):
        shown = redact_url(ref)  # messages never show a password or a signed query
        if "@" in ref.split("://", 1)[1].split("/", 1)[0]:
            raise RefError(f"{shown}: a URL with a user name or password is not pulled (it "
                           f"would be recorded and shown); use a signed or public URL")
        path = ref.split("?", 1)[0].split("#", 1)[0]
        if not path.lower().endswith(".gguf"):
            raise RefError(f"{shown}: a URL must name a .gguf file")
        if "/" not in path.split("://", 1)[1].strip("/"):
            raise RefError(f"{shown}: the URL has no file path")
        return UrlRef(ref)
    if "://" in ref:
        raise RefError(f"{redact_url(ref)}: only http:// and https:// URLs can be pulled")
    for prefix in _HUB_PREFIXES:
        if lowered.startswith(prefix):
            ref = ref[len(prefix):]
            break
    if m := _REPO_RE.match(ref):
        return HfRepoRef(m["owner"], m["repo"], m["quant"])
    if m := _FILE_RE.match(ref):
        path = m["path"]
        parts = path.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise RefError(f"{ref}: bad file path in the repository")
        return HfFileRef(m["owner"], m["repo"], path)
    raise RefError(f"{ref!r} is not a catalogue name, a Hugging Face reference (owner/repo, "
                   f"owner/repo:QUANT, owner/repo/file.gguf) or an http(s) URL of a .gguf")


# ---- files of a repo ----------------------------------------------------------------------


@dataclass(frozen=True)
class RepoFile:
    """One file of a hub listing: ``path`` in the repo, ``size`` in bytes (None if not given),
    ``sha256`` (lowercase hex, from the listing's ``lfs.oid``; None for a non-LFS file)."""

    path: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class ModelFiles:
    """The files of one model: one GGUF, or every part of a split set in order. ``model_id`` is
    the file stem without ``.gguf`` and without the split suffix."""

    model_id: str
    files: tuple[RepoFile, ...]

    @property
    def is_split(self) -> bool:
        return split_name(PurePosixPath(self.files[0].path).name) is not None

    def describe(self) -> str:
        first = self.files[0].path
        if not self.is_split:
            return first
        return f"{first} (+{len(self.files) - 1} more parts)"


def split_name(filename: str) -> tuple[str, int, int] | None:
    """``(stem, part number, part count)`` of a gguf-split part name, else None.
    ``"m-00002-of-00003.gguf"`` -> ``("m", 2, 3)``."""
    m = _SPLIT_RE.match(filename)
    if m is None:
        return None
    no, count = int(m["no"]), int(m["count"])
    if not 1 <= no <= count:
        return None
    return m["stem"], no, count


def split_part_names(stem: str, count: int) -> list[str]:
    """Every part's file name of a split set, in order (as llama.cpp's ``llama_split_path``)."""
    return [f"{stem}-{i:05d}-of-{count:05d}.gguf" for i in range(1, count + 1)]


def _stem(filename: str) -> str:
    return filename[: -len(".gguf")] if filename.lower().endswith(".gguf") else filename


def model_files_for_path(path: str, known: dict[str, RepoFile] | None = None) -> ModelFiles:
    """The model an explicit file path names: the file itself, or - for a split part - every
    part of its set (the parts' names follow from the pattern). ``known`` supplies sizes and
    hashes by path, when a listing was read."""
    known = known or {}
    parent = PurePosixPath(path).parent
    name = PurePosixPath(path).name
    split = split_name(name)
    if split is None:
        return ModelFiles(_stem(name), (known.get(path, RepoFile(path)),))
    stem, _, count = split
    paths = [str(parent / n) if str(parent) != "." else n for n in split_part_names(stem, count)]
    return ModelFiles(stem, tuple(known.get(p, RepoFile(p)) for p in paths))


def _is_candidate(path: str) -> bool:
    name = PurePosixPath(path).name.lower()
    # mmproj files are vision projectors that sit beside a model, not models of their own
    return name.endswith(".gguf") and "mmproj" not in name


def group_models(files: list[RepoFile]) -> tuple[list[ModelFiles], list[str]]:
    """Group a repo's GGUFs into models: single files, and split sets whose parts are all
    there. Returns ``(models, problems)``; a split set with missing parts is a problem line,
    not a model. Models are in path order."""
    singles: list[ModelFiles] = []
    sets: dict[tuple[str, str, int], dict[int, RepoFile]] = {}
    for f in sorted(files, key=lambda f: f.path):
        if not _is_candidate(f.path):
            continue
        p = PurePosixPath(f.path)
        split = split_name(p.name)
        if split is None:
            singles.append(ModelFiles(_stem(p.name), (f,)))
        else:
            stem, no, count = split
            sets.setdefault((str(p.parent), stem, count), {})[no] = f
    models = list(singles)
    problems: list[str] = []
    for (parent, stem, count), parts in sets.items():
        missing = [i for i in range(1, count + 1) if i not in parts]
        if missing:
            where = f"{parent}/{stem}" if parent != "." else stem
            problems.append(f"{where}: split set of {count} parts lacks part(s) "
                            f"{', '.join(map(str, missing))}")
            continue
        models.append(ModelFiles(stem, tuple(parts[i] for i in range(1, count + 1))))
    models.sort(key=lambda m: m.files[0].path)
    return models, problems


def _quant_re(quant: str) -> re.Pattern[str]:
    # The quantisation must stand as a whole word of the path: "Q4_K" must not match
    # "Q4_K_M", and "Q4_XS" must not match "IQ4_XS". '_' may come before it ("model_Q8_0").
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(quant)}(?![A-Za-z0-9_])", re.I)


def choose_model(files: list[RepoFile], ref: HfRepoRef) -> ModelFiles:
    """The one model ``ref`` means among a repo's files. With a quant: the models whose path
    carries it (case-insensitive, as a whole word); without one: the repo's only model.
    Raises :class:`RefError` listing the choices when there is none or more than one."""
    models, problems = group_models(files)
    if ref.quant is not None:
        pattern = _quant_re(ref.quant)
        matches = [m for m in models if pattern.search(m.files[0].path)]
    else:
        matches = models
    if len(matches) == 1:
        return matches[0]
    if not models:
        extra = f" ({'; '.join(problems)})" if problems else ""
        raise RefError(f"{ref.repo_id} has no GGUF model files{extra}")
    if not matches:
        raise RefError(f"no GGUF in {ref.repo_id} matches {ref.quant!r}; it has: "
                       f"{_list_choices(models)}")
    what = f"several GGUFs in {ref.repo_id} match {ref.quant!r}" if ref.quant else (
        f"{ref.repo_id} has several GGUF models")
    raise RefError(f"{what}: {_list_choices(matches)}; name one as "
                   f"{ref.repo_id}/<path>.gguf" + ("" if ref.quant else " or add :QUANT"))


def _list_choices(models: list[ModelFiles], limit: int = 12) -> str:
    names = [m.describe() for m in models[:limit]]
    if len(models) > limit:
        names.append(f"… {len(models) - limit} more")
    return ", ".join(names)


def sha256_from_etag(value: str | None) -> str | None:
    """The sha256 an ``ETag`` / ``X-Linked-ETag`` carries, lowercase, or None.

    The hub answers a resolve of an LFS file with ``X-Linked-ETag: "<sha256 hex>"``; a non-LFS
    file's ETag is a git blob sha1 (40 hex), and other servers send opaque tags: only a
    64-hex-digit value (quotes and a weak ``W/`` prefix allowed) is taken as a sha256."""
    if not value:
        return None
    v = value.strip()
    if v.startswith(("W/", "w/")):
        v = v[2:]
    v = v.strip('"').lower()
    return v if _SHA256_RE.match(v) else None
