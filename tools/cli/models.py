"""``hearth models list|add|rm|pull``: look after the models directory from the command line.

The models directory is the same one ``hearth serve`` reads (``--models-dir``, env
``HEARTH_MODELS_DIR``, TOML ``models_dir``, default under the user's data dir), resolved by
:mod:`hearth.tools.settings` with the same precedence. A model is ``{id}.gguf`` in it (a file or
a symlink; a split model is its parts ``{id}-0000k-of-0000N.gguf``); metadata comes from the
GGUF header only (:mod:`hearth.tools.registry`). Where each model came from is kept in
``.hearth-sources.json`` (:mod:`hearth.tools.cli.model_sources`); ``pull`` is
:mod:`hearth.tools.cli.pull`.

``add`` validates the header before writing anything, copies into a hidden temporary file in the
models directory and renames it into place, so a server scanning the directory never sees a
half-copied model and an interrupted copy leaves nothing behind. Exit codes: 0 done, 1 an I/O
error while copying, 2 a usage error (bad file, unknown id, existing id, no confirmation),
130 interrupted (``pull`` has its own codes, see its module; ``rm`` is
:mod:`hearth.tools.cli.model_removal`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from hearth.scheduler.placement import kv_bytes_per_slot
from hearth.tools.cli.formatting import format_params, format_size, table
from hearth.tools.cli.fsync import fsync_dir
from hearth.tools.cli.model_sources import read_sources, record_source
from hearth.tools.cli.progress import ByteProgress
from hearth.tools.cli.server_client import (
    SERVER_CLIENT_HELPS,
    ServerModels,
    query_server,
    server_key,
    server_tls,
)
from hearth.tools.cli.setting_flags import add_setting_flags
from hearth.tools.gguf_header import GGUFError, read_gguf_metadata
from hearth.tools.registry import ModelEntry, ModelRegistry
from hearth.tools.settings import Settings, SettingsError, resolve
from hearth.tools.tls import TlsError

__all__ = [
    "ModelsError",
    "add_model",
    "add_models_parser",
    "copy_with_progress",
    "list_models",
    "run_models",
    "validate_id",
]

_MIB = 1 << 20
_CHUNK = 8 * _MIB
_REDRAW_S = 0.1  # how often the copy's bar is redrawn on a terminal


class ModelsError(Exception):
    """A user-facing failure: the message is printed after ``hearth: ``; ``code`` is the exit
    status (2 for usage errors, 1 for I/O errors)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ---- the command line ---------------------------------------------------------------------


# argparse's subparsers action has no public name; typeshed calls it _SubParsersAction
def add_models_parser(
        sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``models list|add|rm`` on the top-level subparsers object ``sub``."""
    models = sub.add_parser("models", help="list, add or remove models in the models directory")
    msub = models.add_subparsers(dest="models_command", required=True,
                                 metavar="{list,add,rm,pull}")

    ls = msub.add_parser("list", aliases=["ls"], help="list the models (and which are loaded)")
    add_setting_flags(ls, ("models_dir", "host", "port", "api_prefix", "api_key", "tls_cert",
                           "ctx_size", "cache_type_k", "cache_type_v"), {
        **SERVER_CLIENT_HELPS,
        "api_prefix": "the server's API prefix (for the default --url)",
    })
    ls.add_argument("--url", default=None,
                    help="base URL of a running server to ask which models are loaded "
                         "(default: http://HOST:PORT + API prefix from the settings)")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")

    add = msub.add_parser("add", help="copy (or link) a GGUF file into the models directory")
    add_setting_flags(add, ("models_dir",))
    add.add_argument("path", metavar="PATH", help="the .gguf file to add")
    add.add_argument("--link", action="store_true",
                     help="make a symlink to PATH (absolute) instead of copying it")
    add.add_argument("--name", metavar="ID", default=None,
                     help="the model id (default: the file name without .gguf)")
    add.add_argument("--force", action="store_true", help="replace a model with the same id")

    rm = msub.add_parser("rm", aliases=["remove"],
                         help="remove a model (a symlink is removed, never its target)")
    add_setting_flags(rm, ("models_dir",))
    rm.add_argument("id", metavar="ID", help="the model id")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")

    from hearth.tools.cli.pull import add_pull_parser  # pull imports this module's helpers

    add_pull_parser(msub)
    return models


# ---- ids and paths ------------------------------------------------------------------------


def validate_id(model_id: str) -> str:
    """Return ``model_id`` if it can name ``{id}.gguf`` in the models directory (and be typed
    in a request without quoting), else raise :class:`ModelsError`."""
    if not model_id:
        raise ModelsError("a model id may not be empty")
    if "/" in model_id or "\\" in model_id or model_id.startswith("."):
        raise ModelsError(f"invalid model id {model_id!r}: no slashes, and it may not start "
                          f"with '.'")
    if any(c.isspace() or not c.isprintable() for c in model_id):
        raise ModelsError(f"invalid model id {model_id!r}: no spaces or control characters")
    return model_id


def _strip_gguf(name: str) -> str:
    return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name


# ---- list ---------------------------------------------------------------------------------


def _broken_links(models_dir: Path, known: Iterable[str]) -> list[Path]:
    """``*.gguf`` symlinks whose target is gone (the registry cannot stat them)."""
    seen = set(known)
    try:
        paths = sorted(models_dir.glob("*.gguf"))
    except OSError:
        return []
    return [p for p in paths if p.stem not in seen and p.is_symlink() and not p.exists()]


def _kv_cache(entry: ModelEntry, settings: Settings) -> tuple[int, str, str, int]:
    """(bytes of one slot's KV cache, key type, value type, the slot's context size), with the
    cache types and context size a worker of this model would run with."""
    cfg = settings.worker_config(entry.id, str(entry.path))
    type_k, type_v = cfg.cache_type_k or "f16", cfg.cache_type_v or "f16"
    return (kv_bytes_per_slot(entry.info, cfg.n_ctx_slot, type_k, type_v), type_k, type_v,
            cfg.n_ctx_slot)


def _kv_cell(entry: ModelEntry, settings: Settings) -> str:
    """The KV/SLOT column: "96.0 MiB (q8_0)", "(q8_0/f16)" when the types differ."""
    size, type_k, type_v, _ = _kv_cache(entry, settings)
    if not size:
        return "-"
    return f"{format_size(size)} ({type_k if type_k == type_v else f'{type_k}/{type_v}'})"


def _model_json(entry: ModelEntry, loaded: bool | None, source: str | None,
                settings: Settings) -> dict[str, Any]:
    info = entry.info
    kv_bytes, type_k, type_v, n_ctx_slot = _kv_cache(entry, settings)
    return {
        "id": entry.id,
        "path": str(entry.path),
        "link": os.readlink(entry.path) if entry.path.is_symlink() else None,
        "size_bytes": entry.size,
        "architecture": info.architecture if info else None,
        "parameters": (info.parameter_count or None) if info else None,
        "quantization": info.file_type_name if info else None,
        "context_length": info.context_length if info else None,
        "loaded": loaded,
        "source": source,
        "error": entry.error,
        "ctx_size": n_ctx_slot,  # per slot (--ctx-size or the model's table)
        "kv_cache_type_k": type_k,
        "kv_cache_type_v": type_v,
        "kv_bytes_per_slot": kv_bytes or None,
    }


def _loaded_of(server: ServerModels | None, model_id: str) -> bool | None:
    if server is None or server.loaded is None or model_id not in server.loaded:
        return None
    return server.loaded[model_id]


def list_models(models_dir: Path, server: ServerModels | None, *, as_json: bool,
                out: TextIO, settings: Settings | None = None) -> int:
    """Print the models in ``models_dir``; ``settings`` give each one's KV cache per slot (its
    context size and cache types; default settings when None)."""
    settings = settings or Settings()
    entries = ModelRegistry(models_dir).scan()
    broken = _broken_links(models_dir, entries)
    sources = read_sources(models_dir)
    if as_json:
        models = [_model_json(e, _loaded_of(server, e.id), sources.get(e.id), settings)
                  for e in entries.values()]
        models += [{"id": p.stem, "path": str(p), "link": os.readlink(p), "size_bytes": None,
                    "architecture": None, "parameters": None, "quantization": None,
                    "context_length": None, "loaded": None, "source": sources.get(p.stem),
                    "error": "broken symlink: the target does not exist", "ctx_size": None,
                    "kv_cache_type_k": None, "kv_cache_type_v": None,
                    "kv_bytes_per_slot": None} for p in broken]
        doc = {
            "models_dir": str(models_dir),
            "server": None if server is None else {
                "url": server.url, "reachable": server.loaded is not None,
                "note": server.note or None},
            "models": models,
        }
        out.write(json.dumps(doc, indent=2) + "\n")
        return 0

    if not entries and not broken:
        out.write(f"no models in {models_dir}\n")
        return 0
    rows: list[list[str]] = []
    errors: list[str] = []
    for e in entries.values():
        info = e.info
        loaded = _loaded_of(server, e.id)
        rows.append([
            e.id, format_size(e.size),
            (info.architecture or "?") if info else "?",
            format_params(info.parameter_count) if info else "-",
            (info.file_type_name or "-") if info else "-",
            str(info.context_length) if info and info.context_length else "-",
            _kv_cell(e, settings),
            "-" if loaded is None else ("yes" if loaded else "no"),
            sources.get(e.id, "-"),
        ])
        if e.error:
            errors.append(f"  {e.id}: {e.error.removeprefix(f'{e.path}: ')}")
    for p in broken:
        rows.append([p.stem, "-", "?", "-", "-", "-", "-", "-", sources.get(p.stem, "-")])
        errors.append(f"  {p.stem}: broken symlink to {os.readlink(p)}")
    headers = ("ID", "SIZE", "ARCHITECTURE", "PARAMETERS", "QUANTIZATION", "CONTEXT", "KV/SLOT",
               "LOADED", "SOURCE")
    out.write(table(headers, rows) + "\n")
    if errors:
        out.write("\nunreadable models:\n" + "\n".join(errors) + "\n")
    if server is not None and server.note:
        out.write(f"\n{server.note}\n")
    return 0


# ---- add ----------------------------------------------------------------------------------


def _temp_path(models_dir: Path, model_id: str) -> Path:
    """A hidden name that ``*.gguf`` never matches, unique per run."""
    return models_dir / f".{model_id}.gguf.{secrets.token_hex(4)}.part"


def copy_with_progress(src: Path, dest: Path, progress: Callable[[int], None] | None = None,
                       chunk: int = _CHUNK) -> int:
    """Copy ``src`` to the new file ``dest`` (must not exist; mode 0644 minus umask), fsync it,
    and return the bytes copied. ``progress`` gets the running total after each chunk."""
    done = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
        while block := inp.read(chunk):
            out.write(block)
            done += len(block)
            if progress is not None:
                progress(done)
        out.flush()
        os.fsync(out.fileno())
    return done


def _validate_source(src: Path) -> int:
    """Check ``src`` is a GGUF llama.cpp could load; return its size."""
    if not src.exists():
        raise ModelsError(f"{src}: no such file")
    if not src.is_file():
        raise ModelsError(f"{src}: not a regular file")
    try:
        read_gguf_metadata(src)
    except GGUFError as exc:
        why = str(exc).removeprefix(f"{os.fspath(src)}: ")
        raise ModelsError(f"{src} is not a valid GGUF model: {why}") from None
    except OSError as exc:
        raise ModelsError(f"cannot read {src}: {exc.strerror or exc}") from None
    return src.stat().st_size


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def add_model(models_dir: Path, src: Path, *, name: str | None = None, link: bool = False,
              force: bool = False, err: TextIO = sys.stderr) -> Path:
    """Copy (or symlink) the GGUF ``src`` into ``models_dir`` as ``{id}.gguf``; return that path.

    Nothing is written unless the header is valid and the id is free (or ``force``). The copy
    goes to a hidden temporary file renamed into place; it is removed on any error or Ctrl-C.
    """
    if name is not None:
        model_id = validate_id(_strip_gguf(name))
    else:
        try:
            model_id = validate_id(_strip_gguf(src.name))
        except ModelsError as exc:
            raise ModelsError(f"{exc}; pass --name ID") from None
    size = _validate_source(src)
    dest = models_dir / f"{model_id}.gguf"
    if os.path.lexists(dest):
        if _same_file(src, dest) and (link or not dest.is_symlink()):
            # linking dest to itself (or through itself) would lose the model
            raise ModelsError(f"{src} already is the model '{model_id}' in {models_dir}")
        if not force:
            raise ModelsError(f"a model '{model_id}' already exists ({dest}); pass --force to "
                              f"replace it or --name to pick another id")
        if dest.is_dir() and not dest.is_symlink():
            raise ModelsError(f"{dest} is a directory")
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelsError(f"cannot create {models_dir}: {exc.strerror or exc}", 1) from None

    tmp = _temp_path(models_dir, model_id)
    label = f"copying {src.name}" + ("" if src.name == dest.name else f" as {dest.name}")
    bar = None if link else ByteProgress(
        label, size, err, start_line=f"{label} ({format_size(size)})",
        end_line=lambda seconds: f"{label}: done in {seconds:.1f} s", redraw_s=_REDRAW_S)
    try:
        if link:
            os.symlink(src.absolute(), tmp)
        else:
            assert bar is not None
            bar.start()
            copied = copy_with_progress(src, tmp, bar.update)
            if copied != size:
                raise ModelsError(f"{src} changed while it was being copied", 1)
            read_gguf_metadata(tmp)  # the copy is complete and loadable before it gets a name
        os.replace(tmp, dest)
        fsync_dir(models_dir)
    except BaseException as exc:
        if bar is not None:
            bar.abandon()
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, GGUFError):
            why = str(exc).removeprefix(f"{os.fspath(tmp)}: ")
            raise ModelsError(f"the copy of {src} is not a valid GGUF model: {why}", 1) from None
        if isinstance(exc, OSError):
            raise ModelsError(f"could not add {src}: {exc.strerror or exc}", 1) from None
        raise
    if bar is not None:
        bar.finish()
    try:
        record_source(models_dir, model_id, f"added:{src.absolute()}")
    except OSError as exc:  # the model is in place; only the listing's SOURCE column suffers
        err.write(f"hearth: warning: could not record where '{model_id}' came from: "
                  f"{exc.strerror or exc}\n")
    return dest


# ---- entry point --------------------------------------------------------------------------


def _server_url(args: argparse.Namespace, settings: Settings) -> str:
    return args.url or settings.base_url


def run_models(args: argparse.Namespace) -> int:
    """Run a parsed ``hearth models ...`` command; returns the exit status."""
    try:
        settings = resolve(args)
        models_dir = Path(settings.models_dir).expanduser()
        command = args.models_command
        if command in ("list", "ls"):
            tls = server_tls(settings, url_given=bool(args.url))
            server = query_server(_server_url(args, settings), server_key(settings), tls=tls)
            return list_models(models_dir, server, as_json=args.json, out=sys.stdout,
                               settings=settings)
        if command == "add":
            dest = add_model(models_dir, Path(args.path).expanduser(), name=args.name,
                             link=args.link, force=args.force)
            kind = f"linked {dest} -> {os.readlink(dest)}" if args.link else f"added {dest}"
            print(f"{kind}\nmodel id: {dest.stem}")
            return 0
        if command == "pull":
            from hearth.tools.cli.pull import run_pull

            return run_pull(args, models_dir)
        if command in ("rm", "remove"):
            from hearth.tools.cli.model_removal import remove_model

            done = remove_model(models_dir, args.id, yes=args.yes)
            if done is None:
                print("nothing removed", file=sys.stderr)
                return 1
            print(done)
            return 0
    except (ModelsError, SettingsError, TlsError) as exc:
        print(f"hearth: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, ModelsError) else 2
    except KeyboardInterrupt:
        print("\nhearth: interrupted; nothing was changed", file=sys.stderr)
        return 130
    return 2
