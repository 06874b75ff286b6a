"""Turning sampled token bytes into the text a client sees. Pure Python, no llama.cpp.

* :class:`Utf8Stream` decodes token pieces incrementally: a multi-byte character split across
  tokens is emitted only once complete, never as a replacement character.
* :class:`StopFilter` holds back text that might be the start of a stop string, so the streamed
  text never contains a stop string even when one arrives split across tokens.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class Utf8Stream:
    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._dec.decode(piece)

    def flush(self) -> str:
        return self._dec.decode(b"", final=True)


class StopFilter:
    """Feed text, get back what is safe to emit. ``stopped`` turns true at the first stop string;
    everything from it on is dropped. ``matched``: that stop string (the one that starts first
    in the text; of two starting at the same place, the one listed first)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buf = self._held + text
        cut = -1
        for stop in self._stops:
            at = buf.find(stop)
            if at != -1 and (cut == -1 or at < cut):
                cut = at
                self.matched = stop
        if cut != -1:
            self.stopped = True
            self._held = ""
            return buf[:cut]
        keep = self._partial_suffix(buf)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep]

    def flush(self) -> str:
        """The generation ended without a stop string: release what was held back."""
        out, self._held = self._held, ""
        return "" if self.stopped else out

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of ``buf`` that is a proper prefix of some stop string."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best
