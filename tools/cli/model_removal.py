"""``hearth models rm ID``: remove a model from the models directory, and what is left of its
downloads.

A model is ``{id}.gguf`` (a file, or a symlink: only the link goes, never its target) or the
parts of a split model (the first part first, so a scanning server stops listing it before the
rest goes). With it go its unfinished downloads - ``.part`` files, their records and the
model's lock file (:func:`hearth.tools.cli.partials.remove_leftovers`) - unless a pull or
install of that id is running, which keeps them and is said in a note. An id with no model but
an unfinished download (a pull given up on) has that removed: "removed the unfinished download
of ID". The sources record loses the id's entry.

It asks first on a terminal; from a script (stdin not a terminal) it refuses unless ``yes``.
Errors are :class:`~hearth.tools.cli.models.ModelsError`: 2 unknown id or no confirmation,
1 a file that cannot be removed, 10 a pull of an id with nothing but an unfinished download is
running.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

from hearth.tools.cli.formatting import format_size
from hearth.tools.cli.model_sources import forget_source
from hearth.tools.cli.models import ModelsError, validate_id
from hearth.tools.cli.partials import leftovers, remove_leftovers
from hearth.tools.cli.progress import is_terminal
from hearth.tools.cli.pull import model_files_on_disk

__all__ = ["BUSY_EXIT", "remove_model"]

BUSY_EXIT = 10  # as `hearth models pull`'s: another pull of the same model is running


def remove_model(models_dir: Path, model_id: str, *, yes: bool = False,
                 stdin: TextIO = sys.stdin, err: TextIO = sys.stderr) -> str | None:
    """Remove model ``model_id`` (see the module docstring). Returns the lines saying what was
    removed, or None when the user declined. Raises :class:`ModelsError`."""
    path = models_dir / f"{validate_id(model_id)}.gguf"
    if os.path.lexists(path):
        files = [path]
    else:
        files = model_files_on_disk(models_dir, model_id)
    if not files:
        if not leftovers(models_dir, model_id):
            raise ModelsError(f"no model '{model_id}' in {models_dir} (see "
                              f"`hearth models list`)")
        return _remove_unfinished(models_dir, model_id, yes=yes, stdin=stdin, err=err)
    if len(files) > 1:
        parts = f"{len(files)} parts {files[0].name} … ({format_size(sum(map(_size, files)))})"
        question = f"the split model '{model_id}': {parts}"
        done = f"removed {question}"
    elif path.is_symlink():
        what = f"the symlink {path} -> {os.readlink(path)} (the target is kept)"
        question, done = f"the model '{model_id}': {what}", f"removed {what}"
    elif path.is_dir():
        raise ModelsError(f"{path} is a directory, not a model file")
    else:
        what = f"{path} ({format_size(_size(path))})"
        question, done = f"the model '{model_id}': {what}", f"removed {what}"
    if not _confirmed(f"remove {question}?", model_id, yes, stdin, err):
        return None
    for p in files:
        try:
            p.unlink()
        except OSError as exc:
            raise ModelsError(f"could not remove {p}: {exc.strerror or exc}", 1) from None
    _forget(models_dir, model_id, err)
    lines = [done]
    try:
        removed = remove_leftovers(models_dir, model_id)
    except OSError as exc:
        err.write(f"hearth: warning: could not remove the unfinished download of "
                  f"'{model_id}': {exc.strerror or exc}\n")
        removed = []
    if removed is None:
        err.write(f"hearth: note: a pull or install of '{model_id}' is running; its "
                  f"unfinished download was kept\n")
    elif [p for p in removed if p.name.endswith(".part")]:
        lines.append(f"removed the unfinished download of {model_id}")
    return "\n".join(lines)


def _remove_unfinished(models_dir: Path, model_id: str, *, yes: bool, stdin: TextIO,
                       err: TextIO) -> str | None:
    found = leftovers(models_dir, model_id)
    size = sum(_size(p) for p in found if p.name.endswith(".part"))
    if not _confirmed(f"remove the unfinished download of '{model_id}' ({format_size(size)})?",
                      model_id, yes, stdin, err):
        return None
    try:
        removed = remove_leftovers(models_dir, model_id)
    except OSError as exc:
        raise ModelsError(f"could not remove the unfinished download of '{model_id}': "
                          f"{exc.strerror or exc}", 1) from None
    if removed is None:
        raise ModelsError(f"a pull or install of '{model_id}' is running in {models_dir}; "
                          f"nothing was removed", BUSY_EXIT)
    _forget(models_dir, model_id, err)
    return f"removed the unfinished download of {model_id}"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _confirmed(question: str, model_id: str, yes: bool, stdin: TextIO, out: TextIO) -> bool:
    if yes:
        return True
    if not is_terminal(stdin):
        raise ModelsError(f"not removing '{model_id}' without confirmation: stdin is not a "
                          f"terminal; pass --yes")
    out.write(f"{question} [y/N] ")
    out.flush()
    answer = stdin.readline()
    if not answer:
        out.write("\n")
    return answer.strip().lower() in ("y", "yes")


def _forget(models_dir: Path, model_id: str, err: TextIO) -> None:
    try:
        forget_source(models_dir, model_id)
    except OSError as exc:
        err.write(f"hearth: warning: could not update {models_dir}/.hearth-sources.json: "
                  f"{exc.strerror or exc}\n")
