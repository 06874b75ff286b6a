"""``hearth models pull REF``: bring a GGUF model into the models directory.

REF is tried as, in order: a catalogue name (:mod:`hearth.tools.cli.catalogue`), a Hugging
Face reference or an http(s) URL (:mod:`hearth.tools.cli.hf_refs` says which). Hugging Face
files are listed with the hub API ``GET {HF_ENDPOINT}/api/models/{owner}/{repo}/tree/main
?recursive=true`` (each LFS file's ``lfs.oid`` is its sha256, ``size`` its bytes; pages follow
``Link: <…>; rel="next"``) and downloaded from ``{HF_ENDPOINT}/{owner}/{repo}/resolve/main/
{path}``, which answers 302 to a CDN. ``HF_ENDPOINT`` defaults to https://huggingface.co, as in
``huggingface_hub``. The token (``--hf-token``, else ``HF_TOKEN``) goes to the endpoint's host
only.

Files land as ``.{file}.part`` in the models directory, with a record of their origin
(:mod:`hearth.tools.cli.partials`; resumed by the next pull after a failure or Ctrl-C, from the
same URL only), are verified (:mod:`hearth.tools.cli.download`) and renamed into place only
when every file of the model is complete: a split model's first part last, so that a scanning
server never lists a model with parts missing. The model id is the file stem (a split model's
without its ``-0000k-of-0000N`` suffix) unless ``--name`` picks one; where it came from is
recorded in ``.hearth-sources.json`` (:mod:`hearth.tools.cli.model_sources`).

Exit status: :class:`~hearth.tools.cli.http_client.PullErrorKind` values (2 bad reference,
URL, HF_ENDPOINT or token, 3 offline or a refused redirect, 4 not found, 5 unauthorised,
6 no space, 7 hash mismatch, 8 not a GGUF, 9 already exists, 10 a pull of the same model is
running, 1 other I/O), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hearth.tools.cli import catalogue
from hearth.tools.cli.download import download, ensure_free_space
from hearth.tools.cli.file_lock import Busy, flocked, model_lock_path
from hearth.tools.cli.formatting import format_size
from hearth.tools.cli.fsync import fsync_dir
from hearth.tools.cli.hf_refs import (
    HfFileRef,
    HfRepoRef,
    RefError,
    RepoFile,
    UrlRef,
    choose_model,
    model_files_for_path,
    parse_ref,
    sha256_from_etag,
    split_name,
    split_part_names,
)
from hearth.tools.cli.http_client import (
    HttpClient,
    PullError,
    PullErrorKind,
    check_endpoint,
    clean_token,
    origin_of,
)
from hearth.tools.cli.model_sources import record_source
from hearth.tools.cli.partials import discard
from hearth.tools.cli.setting_flags import add_setting_flags
from hearth.tools.cli.url_rules import redact_url, url_problem

__all__ = ["DEFAULT_HF_ENDPOINT", "PlannedFile", "PullPlan", "PullResult", "add_pull_parser",
           "list_repo_files", "model_files_on_disk", "pull", "run_pull"]

DEFAULT_HF_ENDPOINT = "https://huggingface.co"


def add_pull_parser(msub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``models pull`` on the ``models`` subparsers."""
    p = msub.add_parser(
        "pull", help="download a model: a catalogue name, owner/repo[:QUANT], "
                     "owner/repo/file.gguf or an https URL of a .gguf")
    add_setting_flags(p, ("models_dir",))
    p.add_argument("ref", metavar="REF",
                   help="a catalogue name, a Hugging Face reference (owner/repo:Q4_K_M, "
                        "owner/repo, owner/repo/path/file.gguf) or an https://…/file.gguf URL")
    p.add_argument("--name", metavar="ID", default=None,
                   help="the model id (default: the file name without .gguf and split suffix)")
    p.add_argument("--force", action="store_true", help="replace a model with the same id")
    p.add_argument("--hf-token", metavar="TOKEN", default=None,
                   help="Hugging Face token for gated or private repos (default: $HF_TOKEN; "
                        "the variable keeps it out of the process list)")


@dataclass(frozen=True)
class PlannedFile:
    """One file to fetch: from ``url`` into the models dir as ``name``; ``size`` and
    ``sha256`` when a listing published them."""

    url: str
    name: str
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class PullPlan:
    model_id: str
    files: tuple[PlannedFile, ...]  # a split model's parts in order
    source: str  # as model_sources records it


@dataclass(frozen=True)
class PullResult:
    model_id: str
    path: Path  # the model's file (a split model's first part)
    size: int  # bytes, all parts
    source: str
    verified: bool  # every file matched a published sha256
    already: bool  # a catalogue model whose file was there: verified, nothing written


# ---- planning -----------------------------------------------------------------------------


def list_repo_files(client: HttpClient, endpoint: str, repo_id: str) -> list[RepoFile]:
    """Every file of ``repo_id``'s main branch, with sizes and LFS sha256s, from the hub API."""
    url: str | None = f"{endpoint}/api/models/{repo_id}/tree/main?recursive=true"
    files: list[RepoFile] = []
    while url is not None:
        doc, headers = client.get_json(url)
        if not isinstance(doc, list):
            raise PullError(PullErrorKind.OFFLINE, f"{endpoint}: unexpected answer listing "
                                                   f"{repo_id}'s files")
        files += [_repo_file(item) for item in doc
                  if isinstance(item, dict) and item.get("type") == "file"
                  and isinstance(item.get("path"), str)]
        url = _next_link(headers.get("Link"), url)
    return files


def _repo_file(item: dict[str, Any]) -> RepoFile:
    lfs = item.get("lfs") if isinstance(item.get("lfs"), dict) else {}
    oid = lfs.get("oid") if isinstance(lfs, dict) else None
    sha = sha256_from_etag(str(oid).removeprefix("sha256:")) if oid else None
    size = item.get("size")
    return RepoFile(item["path"], size if isinstance(size, int) else None, sha)


def _next_link(link: str | None, base: str) -> str | None:
    for part in (link or "").split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' in params.replace(" ", ""):
            return urllib.parse.urljoin(base, target.strip().strip("<>"))
    return None


def _resolve_url(endpoint: str, repo_id: str, path: str) -> str:
    return f"{endpoint}/{repo_id}/resolve/main/{urllib.parse.quote(path)}"


def _check_url(url: str) -> None:
    if (problem := url_problem(url)) is not None:
        raise PullError(PullErrorKind.BAD_REF, f"{redact_url(url)}: {problem}")


def plan_pull(ref: UrlRef | HfRepoRef | HfFileRef, client: HttpClient,
              endpoint: str) -> PullPlan:
    """What to fetch for ``ref`` (the hub is asked for the listing of an ``owner/repo`` REF)."""
    if isinstance(ref, UrlRef):
        _check_url(ref.url)
        split = urllib.parse.urlsplit(ref.url)
        name = urllib.parse.unquote(split.path.rsplit("/", 1)[-1])
        parts = split_name(name)
        names = [name] if parts is None else split_part_names(parts[0], parts[2])
        base = split.path.rsplit("/", 1)[0]
        urls = [urllib.parse.urlunsplit(split._replace(path=f"{base}/{urllib.parse.quote(n)}"))
                for n in names] if parts is not None else [ref.url]
        model_id = parts[0] if parts is not None else name[: -len(".gguf")]
        files = tuple(PlannedFile(u, n, None, None) for u, n in zip(urls, names, strict=True))
        return PullPlan(model_id, files, f"url:{redact_url(ref.url)}")
    if isinstance(ref, HfRepoRef):
        model = choose_model(list_repo_files(client, endpoint, ref.repo_id), ref)
    else:
        model = model_files_for_path(ref.path)
    files = tuple(PlannedFile(_resolve_url(endpoint, ref.repo_id, f.path),
                              f.path.rsplit("/", 1)[-1], f.size, f.sha256) for f in model.files)
    return PullPlan(model.model_id, files, f"hf:{ref.repo_id}/{model.files[0].path}")


# ---- the models directory -----------------------------------------------------------------


def model_files_on_disk(models_dir: Path, model_id: str) -> list[Path]:
    """The files that are model ``model_id`` now: ``{id}.gguf`` and/or its split parts."""
    found: list[Path] = []
    single = models_dir / f"{model_id}.gguf"
    if os.path.lexists(single):
        found.append(single)
    pattern = f"{glob.escape(model_id)}-[0-9][0-9][0-9][0-9][0-9]-of-[0-9][0-9][0-9][0-9][0-9].gguf"
    for p in sorted(models_dir.glob(pattern)):
        split = split_name(p.name)
        if split is not None and split[0] == model_id:
            found.append(p)
    return found


def _dest_names(model_id: str, plan: PullPlan) -> list[str]:
    if len(plan.files) == 1 and split_name(plan.files[0].name) is None:
        return [f"{model_id}.gguf"]
    return split_part_names(model_id, len(plan.files))


@contextlib.contextmanager
def _pull_lock(models_dir: Path, model_id: str) -> Iterator[None]:
    """Refuse a second writer of the same model at once (a pull would append to the other's
    ``.part``): the model's one lock, shared with the catalogue's installs."""
    try:
        with flocked(model_lock_path(models_dir, model_id), wait=False):
            yield
    except Busy:
        raise PullError(PullErrorKind.BUSY, f"another pull or install of '{model_id}' is "
                                            f"running in {models_dir}") from None


# ---- the pull -----------------------------------------------------------------------------


def pull(ref: str, models_dir: Path, *, name: str | None = None, force: bool = False,
         token: str | None = None, token_from: str = "--hf-token",
         endpoint: str = DEFAULT_HF_ENDPOINT,
         progress: TextIO | None = sys.stderr) -> PullResult:
    """Pull ``ref`` into ``models_dir``. ``token`` and ``endpoint`` are taken as the user gave
    them (``token_from`` names where the token came from, for its error message) and checked
    only when REF is not a catalogue name. Raises :class:`PullError`; Ctrl-C
    (KeyboardInterrupt) leaves the ``.part`` files for the next pull to resume."""
    from hearth.tools.cli.models import ModelsError, validate_id

    entry = catalogue.find(ref)
    if entry is not None:
        return _install_from_catalogue(entry, models_dir, name=name, force=force,
                                       progress=progress)
    try:
        parsed = parse_ref(ref)
    except RefError as exc:
        raise PullError(PullErrorKind.BAD_REF, str(exc)) from None
    endpoint = check_endpoint(endpoint)
    client = HttpClient(token=clean_token(token, token_from), token_origin=origin_of(endpoint))
    try:
        plan = plan_pull(parsed, client, endpoint)
    except RefError as exc:
        raise PullError(PullErrorKind.BAD_REF, str(exc)) from None
    try:
        model_id = validate_id(name if name is not None else plan.model_id)
    except ModelsError as exc:
        raise PullError(PullErrorKind.BAD_REF, f"{exc}; pass --name ID") from None
    old = model_files_on_disk(models_dir, model_id)
    if old and not force:
        raise PullError(PullErrorKind.EXISTS, f"a model '{model_id}' already exists "
                        f"({old[0]}); pass --force to replace it or --name to pick another id")
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PullError(PullErrorKind.IO, f"cannot create {models_dir}: "
                                          f"{exc.strerror or exc}") from None
    names = _dest_names(model_id, plan)
    with _pull_lock(models_dir, model_id):
        parts = [models_dir / f".{n}.part" for n in names]
        if all(f.size is not None for f in plan.files):
            have = sum(p.stat().st_size for p in parts if p.exists())
            ensure_free_space(models_dir, sum(f.size or 0 for f in plan.files) - have)
        done = [download(client, f.url, part, label=n, expected_sha256=f.sha256,
                         expected_size=f.size, progress=progress)
                for f, part, n in zip(plan.files, parts, names, strict=True)]
        dests = [models_dir / n for n in names]
        try:
            # the first part last: a scanning server lists the model only once it is whole
            for d, dest in list(zip(done, dests, strict=True))[1:] + [(done[0], dests[0])]:
                os.replace(d.part, dest)
                discard(d.part)  # its record: the .part is gone
            for stale in old:
                if stale not in dests:
                    stale.unlink(missing_ok=True)
            fsync_dir(models_dir)
            record_source(models_dir, model_id, plan.source)
        except OSError as exc:
            raise PullError(PullErrorKind.IO, f"cannot move the download into {models_dir}: "
                                              f"{exc.strerror or exc}") from None
    return PullResult(model_id, dests[0], sum(d.size for d in done), plan.source,
                      all(d.verified for d in done), already=False)


# a catalogue install's failure, as the exit status a pull of the same kind would have
_CATALOGUE_EXIT: dict[catalogue.ErrorKind, PullErrorKind] = {
    "download": PullErrorKind.OFFLINE, "verify": PullErrorKind.HASH_MISMATCH,
    "space": PullErrorKind.NO_SPACE, "conflict": PullErrorKind.EXISTS, "io": PullErrorKind.IO}


def _install_from_catalogue(entry: catalogue.CatalogueEntry, models_dir: Path, *,
                            name: str | None, force: bool,
                            progress: TextIO | None) -> PullResult:
    if name is not None or force:
        raise PullError(PullErrorKind.BAD_REF, f"{entry.name} is a catalogue model: it is "
                        f"installed as '{entry.model_id}' (--name and --force do not apply; "
                        f"`hearth models rm {entry.model_id}` first to install it again)")
    source = f"catalogue:{entry.name}"
    target = models_dir / entry.filename
    if os.path.lexists(target):
        # hashed, not only sized (the bootstrap's fast path at every start): a pull is asked
        # for, so a file of the right size with other bytes must not pass as installed
        try:
            same = catalogue.matches_pin(entry, target)
        except OSError as exc:
            raise PullError(PullErrorKind.IO, f"cannot read {target}: "
                                              f"{exc.strerror or exc}") from None
        if not same:
            raise PullError(PullErrorKind.EXISTS, f"{target} is not {entry.name} (its size or "
                            f"sha256 differs from the pinned one): `hearth models rm "
                            f"{entry.model_id}`, then pull it again")
        return PullResult(entry.model_id, target, entry.size, source, True, already=True)
    try:
        path = catalogue.install(entry, models_dir, progress=progress)  # records its source
    except catalogue.CatalogueError as exc:
        raise PullError(_CATALOGUE_EXIT[exc.kind], str(exc)) from None
    except OSError as exc:
        raise PullError(PullErrorKind.IO, f"cannot install {entry.name}: "
                                          f"{exc.strerror or exc}") from None
    return PullResult(entry.model_id, path, path.stat().st_size, source, True, already=False)


def run_pull(args: argparse.Namespace, models_dir: Path) -> int:
    """Run a parsed ``hearth models pull``; returns the exit status."""
    given = args.hf_token is not None
    token = args.hf_token if given else os.environ.get("HF_TOKEN")
    try:
        result = pull(args.ref, models_dir, name=args.name, force=args.force, token=token,
                      token_from="--hf-token" if given else "HF_TOKEN",
                      endpoint=os.environ.get("HF_ENDPOINT") or DEFAULT_HF_ENDPOINT,
                      progress=sys.stderr)
    except PullError as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return exc.kind.value
    except KeyboardInterrupt:
        print(f"\nhearth: interrupted; the partial download is kept in {models_dir} (a hidden "
              f".part file): run the same command again to resume", file=sys.stderr)
        return 130
    if result.already:
        print(f"{result.model_id} is already installed in {result.path} (sha256 verified)\n"
              f"model id: {result.model_id}")
    else:
        print(f"pulled {result.model_id} ({format_size(result.size)}) into {result.path}\n"
              f"model id: {result.model_id}")
    return 0
