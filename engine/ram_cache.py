"""The host-RAM prompt cache: KV states of conversations pushed out of their slot, kept in the
worker's memory so that a later turn restores them instead of evaluating its prompt again.

:class:`RamCache` is a byte-capped least-recently-used store of (tokens, state) pairs; a state
is the opaque bytes ``llama_state_seq_get_data`` wrote for one slot's sequence, holding the KV
of exactly those tokens at positions 0..len(tokens)-1 (engine.runner.LlamaRunner.save_state).
It knows nothing of llama.cpp: the slot engine saves into it when a slot's cached conversation
is about to be overwritten and asks :meth:`RamCache.best` at each admission which saved state
shares the longest prefix with the new prompt (scheduler.policy.plan_admission decides whether
that beats every slot).

Owned by the slot engine, on the worker's only thread. Sizes are in bytes; ``cap_bytes`` 0
turns the cache off (nothing is saved).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from hearth.scheduler.messages import RamCacheStats
from hearth.scheduler.policy import common_prefix


@dataclass(frozen=True, slots=True)
class SavedState:
    """One saved sequence: its tokens and the state bytes that hold their KV."""

    tokens: tuple[int, ...]
    data: bytes | bytearray

    @property
    def nbytes(self) -> int:
        return len(self.data)


@dataclass
class RamCache:
    """Byte-capped LRU of saved states, keyed by an id given at :meth:`put`.

    Counters (cumulative): ``hits`` (admissions that restored a state), ``misses``
    (admissions it was asked about and had nothing better for than the slots), ``saves``,
    ``evictions`` (states dropped for room), ``failures`` (restores llama.cpp refused: the
    request was evaluated cold), ``restore_s`` (seconds spent restoring, llama.cpp's copy
    included)."""

    cap_bytes: int
    hits: int = 0
    misses: int = 0
    saves: int = 0
    evictions: int = 0
    failures: int = 0
    restore_s: float = 0.0
    _entries: OrderedDict[int, SavedState] = field(default_factory=OrderedDict)  # LRU first
    _bytes: int = 0
    _next_id: int = 0

    @property
    def enabled(self) -> bool:
        return self.cap_bytes > 0

    @property
    def nbytes(self) -> int:
        """Bytes of state held (the tokens' own lists are not counted)."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[tuple[int, SavedState]]:
        """(id, state), least recently used first."""
        return list(self._entries.items())

    def get(self, entry_id: int) -> SavedState:
        """The state ``entry_id``, now the most recently used. KeyError if it is gone."""
        self._entries.move_to_end(entry_id)
        return self._entries[entry_id]

    def best(self, prompt: Sequence[int]) -> tuple[int | None, int]:
        """The saved state sharing the longest prefix with ``prompt``: (id, shared tokens),
        the count capped at all but the prompt's last token (its logits must be computed);
        (None, 0) when none shares any. Ties go to the most recently used."""
        cap = max(len(prompt) - 1, 0)
        best_id, best = None, 0
        for entry_id, saved in reversed(self._entries.items()):
            n = min(common_prefix(saved.tokens, prompt), cap)
            if n > best:
                best_id, best = entry_id, n
        return best_id, best

    def put(self, tokens: Sequence[int], data: bytes | bytearray) -> int | None:
        """Keep ``data``, the state of ``tokens``; least recently used states go to make room.
        Returns its id, or None when it is not kept: larger than the whole cap, or an
        already-saved state holds these tokens and more (that one is used instead). States
        whose tokens are a prefix of ``tokens`` are dropped: this one serves every prompt they
        would."""
        key = tuple(tokens)
        if not self.enabled or len(data) > self.cap_bytes or not key:
            return None
        for entry_id, saved in list(self._entries.items()):
            n = common_prefix(saved.tokens, key)
            if n == len(key):  # a longer (or equal) state is here already
                self._entries.move_to_end(entry_id)
                return None
            if n == len(saved.tokens):  # a shorter one: superseded
                self.remove(entry_id)
        while self._entries and self._bytes + len(data) > self.cap_bytes:
            _, old = self._entries.popitem(last=False)
            self._bytes -= old.nbytes
            self.evictions += 1
        entry_id = self._next_id
        self._next_id += 1
        self._entries[entry_id] = SavedState(key, data)
        self._bytes += len(data)
        self.saves += 1
        return entry_id

    def remove(self, entry_id: int) -> None:
        saved = self._entries.pop(entry_id, None)
        if saved is not None:
            self._bytes -= saved.nbytes

    def stats(self) -> RamCacheStats:
        return RamCacheStats(self._bytes, len(self._entries), self.hits, self.misses,
                             self.saves, self.evictions, self.failures, self.restore_s)
