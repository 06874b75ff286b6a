"""The key file (``--keys-file PATH``): named API keys kept in a file of their own, which the api
re-reads when it changes (api/key_watch.py), so a shared box can add or revoke one person's key
without a restart.

Format — UTF-8 text, one key per line::

    # comments and blank lines are ignored
    alice = a-long-random-key
    ci-bot = another-long-random-key

* The name follows the rules of the config's ``[keys]`` table (``tools/settings.py``); the key
  is everything after the first ``=``, stripped, taken literally: no quotes, no escapes, and a
  ``#`` inside a key is part of the key (only a line *starting* with ``#`` is a comment).
* A name may appear once: not twice in the file, nor also in ``[keys]`` or as the name of an
  ``--api-key`` key (``key1``, ``key2``…).

Errors name the file and the line, never the key — nor the "name" of a malformed line, which may
well be a key pasted on a line of its own.
"""

from __future__ import annotations

import codecs
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from hearth.tools.settings import KEY_NAME_RULE, Settings, check_api_key, valid_key_name

MAX_BYTES = 1024 * 1024  # one short line per key: anything this big is the wrong file

# (mtime, ctime, size, inode): changes when the file is written, replaced (an editor's rename)
# or chmod-ed (a file made readable again is read again)
Stamp = tuple[int, int, int, int]


class KeyFileError(Exception):
    """A user-facing problem with the key file; the message names the file (and line), never
    a key."""


@dataclass(frozen=True)
class KeyFile:
    stamp: Stamp  # of the file that was read, taken before reading it
    keys: list[tuple[str, str]]  # (name, key) in file order


def stamp_of(st: os.stat_result) -> Stamp:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def taken_names(settings: Settings) -> dict[str, str]:
    """Names of the keys configured outside the key file -> where they come from."""
    out = dict.fromkeys(settings.named_keys, "the config's [keys] table")
    for name, _ in settings.key_ring():
        out.setdefault(name, "an --api-key key (those are named key1, key2…)")
    return out


def parse(text: str, path: str, taken: Mapping[str, str] | None = None
          ) -> list[tuple[str, str]]:
    """The (name, key) pairs of a key file's text. ``taken``: names already used elsewhere
    (name -> where), which the file may not use again."""
    taken = taken or {}
    first_seen: dict[str, int] = {}
    keys: list[tuple[str, str]] = []
    # split on "\n" only (not str.splitlines' form feeds and Unicode separators), so that
    # line numbers are the ones an editor shows
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"key file {path}, line {number}"
        name, equals, key = line.partition("=")
        name, key = name.strip(), key.strip()
        if not equals:
            raise KeyFileError(f"{where}: expected 'name = key'")
        if not valid_key_name(name):
            raise KeyFileError(f"{where}: a key's name may hold only {KEY_NAME_RULE}")
        if name in first_seen:
            raise KeyFileError(f"{where}: the name {name!r} is given twice (also on line "
                               f"{first_seen[name]})")
        if name in taken:
            raise KeyFileError(f"{where}: the name {name!r} is already used by {taken[name]}")
        if len(key) >= 2 and key[0] == key[-1] and key[0] in "\"'":
            raise KeyFileError(f"{where} ({name}): write the key without quotes")
        try:
            key = check_api_key(key)
        except ValueError as exc:  # its message never holds the key
            raise KeyFileError(f"{where} ({name}): {exc}") from None
        first_seen[name] = number
        keys.append((name, key))
    return keys


def read(path: str, taken: Mapping[str, str] | None = None) -> KeyFile:
    """Read and parse the key file. Raises :class:`KeyFileError` (never OSError)."""
    try:
        # O_NONBLOCK: opening a FIFO put there by mistake must not hang; it is refused below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fd)  # before reading: a change after this gets a new stamp
            if not stat.S_ISREG(st.st_mode):
                raise KeyFileError(f"cannot read the key file {path}: not a regular file")
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise KeyFileError(f"the key file {path} is larger than {MAX_BYTES} bytes; it should "
                           "hold one short 'name = key' line per key")
    if data.startswith(codecs.BOM_UTF8):  # as some Windows editors write it
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise KeyFileError(f"key file {path}, line {line}: not UTF-8 text") from None
    return KeyFile(stamp_of(st), parse(text, path, taken))


def loose_permissions(path: str) -> str | None:
    """A warning when group or others may access the file (as ssh warns about its keys)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if mode & 0o077:
        return (f"the key file {path} is accessible by group or others (mode "
                f"{stat.S_IMODE(mode):o}); make it private: chmod 600 {path}")
    return None
