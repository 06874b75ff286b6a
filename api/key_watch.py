"""Live reload of the key file (``--keys-file``, tools/key_file.py): the api re-reads it when it
changes and swaps its :class:`~hearth.api.access.KeyRing`, so a key can be added or revoked
without a restart.

Why a timer task rather than a check at request time: a revoked key should stop working, and a
broken file be reported, whether or not requests arrive; and the request path stays free of
file-system calls. Once every ``INTERVAL_S`` the event loop pays one ``os.stat()``. Only when
the file's stamp (mtime, ctime, size, inode) changed is it read and parsed, in a worker thread
(``asyncio.to_thread``); the new ring is put in place back on the loop, so handlers never see
it half-made.

When something goes wrong the keys stay as they were, with one warning (the file and line,
never a key) until the next change:

* the file became invalid (a bad line, a name given twice, not UTF-8…);
* the file is gone or unreadable: deleting the file does not revoke its keys (empty it, or
  delete their lines, to revoke them).

The keys of the config's ``[keys]`` table and of ``--api-key`` never change.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from hearth.api.access import KeyRing
from hearth.tools import key_file
from hearth.tools.key_file import KeyFile, KeyFileError, Stamp

log = logging.getLogger("hearth.api")

INTERVAL_S = 1.0


class KeyFileWatch:
    """Owned by the api's event loop: ``run`` is its one task."""

    def __init__(self, path: str, fixed: list[tuple[str, str]], taken: Mapping[str, str],
                 ring: KeyRing, loaded: KeyFile, interval: float = INTERVAL_S) -> None:
        """``fixed``: the keys from elsewhere, which stay; ``taken``: their names -> where from
        (``key_file.taken_names``); ``loaded``: the file as read at start-up."""
        self.path = path
        self.interval = interval
        self._fixed = list(fixed)
        self._taken = dict(taken)
        self._ring = ring
        self._keys = dict(loaded.keys)  # the file's keys in use now: name -> key
        self._stamp: Stamp | None = loaded.stamp
        self._warned: tuple[Stamp | None, str] | None = None  # the last warning, said once

    async def run(self) -> None:
        """Check until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception as exc:  # keep watching; the name only, in case a key is in it
                log.error("key file %s: checking it for changes failed (%s)", self.path,
                          type(exc).__name__)

    async def check(self) -> None:
        try:
            stamp = key_file.stamp_of(os.stat(self.path))  # the one call on the event loop
        except OSError as exc:
            self._stamp = None  # whatever appears there later is read
            self._warn(None, f"cannot read the key file {self.path}: {exc.strerror or exc}")
            return
        if stamp == self._stamp:
            return
        try:
            loaded = await asyncio.to_thread(key_file.read, self.path, self._taken)
        except KeyFileError as exc:
            self._stamp = stamp  # read again at the next change
            self._warn(stamp, str(exc))
            return
        self._stamp = loaded.stamp
        self._warned = None
        self._apply(loaded.keys)

    def _warn(self, stamp: Stamp | None, message: str) -> None:
        if self._warned != (stamp, message):
            self._warned = (stamp, message)
            log.warning("%s; keeping the keys it held before", message,
                        extra={"fields": {"event": "keys_file_invalid", "path": self.path}})

    def _apply(self, keys: list[tuple[str, str]]) -> None:
        new, old = dict(keys), self._keys
        added = [n for n in new if n not in old]
        removed = [n for n in old if n not in new]
        changed = [n for n in new if n in old and new[n] != old[n]]
        self._keys = new
        self._ring.replace(self._fixed + keys)
        parts = [f"{len(new)} keys"] + [
            f"{label} {', '.join(names)}" for label, names in
            (("added", added), ("removed", removed), ("new key for", changed)) if names]
        log.info("key file %s re-read: %s", self.path, "; ".join(parts), extra={"fields": {
            "event": "keys_file_reloaded", "path": self.path, "keys": list(new),
            "added": added, "removed": removed, "changed": changed}})
