"""The stored responses of the Responses API (``store: true``, the default): kept in the api
process's memory — lost on restart — for ``GET``/``DELETE {prefix}/responses/{id}``,
``GET {prefix}/responses/{id}/input_items`` and ``previous_response_id``.

Bounded by count and by bytes (``--responses-store-max``, ``--responses-store-bytes``): when a
new response would pass either cap, the key that holds the most (responses for the count cap,
bytes for the byte cap) loses its least recently used one (stored or read), until it fits. So a
key that stores a flood evicts its own responses, never a lighter key's, and a lone key's store
is plain LRU. A response larger than the byte cap on its own is not kept.

Scoped to the API key's *name*: a response is found only by the key name that stored it; for
any other key it is absent (the handlers answer 404, the same as for an id never stored), so a
key never reads, continues or deletes another key's responses.

One store per api process, built at start-up (``AppState.responses``); used on the event loop
only, so it takes no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import msgspec
from hearth.api import responses_types as rt

_json = msgspec.json.Encoder()


@dataclass(frozen=True)
class Stored:
    """One stored response: its object as answered, its input items (the conversation it
    continued, then its own input) and the key name that owns it."""

    owner: str
    response: rt.Response
    input_items: list[rt.Item]
    size: int  # bytes of both as JSON: what the byte cap counts

    def conversation(self) -> list[rt.Item]:
        """What a response continuing this one starts from: its input, then its output."""
        return [*self.input_items, *self.response.output]


@dataclass
class _Holding:
    """One key name's responses, least recently used first, and their bytes."""

    ids: OrderedDict[str, None]
    bytes: int = 0


class ResponseStore:
    def __init__(self, max_count: int, max_bytes: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self._items: dict[str, Stored] = {}
        self._owners: dict[str, _Holding] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def held(self, owner: str) -> tuple[int, int]:
        """(responses, bytes) that ``owner`` holds."""
        h = self._owners.get(owner)
        return (0, 0) if h is None else (len(h.ids), h.bytes)

    def _evict_one(self, by_bytes: bool) -> None:
        """The heaviest key's least recently used response goes."""
        heaviest = max(self._owners.values(),
                       key=(lambda h: h.bytes) if by_bytes else (lambda h: len(h.ids)))
        self._drop(next(iter(heaviest.ids)))

    def put(self, owner: str, response: rt.Response, input_items: list[rt.Item]) -> bool:
        """Keep ``response`` for ``owner``, evicting the least recently used as the caps need.
        False: not kept (the store holds none, or this one alone is over the byte cap)."""
        size = len(_json.encode(response)) + len(_json.encode(input_items))
        if self.max_count < 1 or size > self.max_bytes:
            return False
        self._drop(response.id)
        while len(self._items) >= self.max_count:
            self._evict_one(by_bytes=False)
        while self.bytes + size > self.max_bytes:
            self._evict_one(by_bytes=True)
        self._items[response.id] = Stored(owner, response, input_items, size)
        holding = self._owners.setdefault(owner, _Holding(OrderedDict()))
        holding.ids[response.id] = None
        holding.bytes += size
        self.bytes += size
        return True

    def get(self, owner: str, response_id: str) -> Stored | None:
        """The response ``response_id`` if ``owner`` stored it (it becomes the most recently
        used), else None — whether it does not exist or is another key's."""
        found = self._items.get(response_id)
        if found is None or found.owner != owner:
            return None
        self._owners[owner].ids.move_to_end(response_id)
        return found

    def delete(self, owner: str, response_id: str) -> bool:
        """Forget ``owner``'s response ``response_id``; False if ``owner`` has none of that
        id."""
        found = self._items.get(response_id)
        if found is None or found.owner != owner:
            return False
        self._drop(response_id)
        return True

    def _drop(self, response_id: str) -> None:
        gone = self._items.pop(response_id, None)
        if gone is None:
            return
        self.bytes -= gone.size
        holding = self._owners[gone.owner]
        del holding.ids[response_id]
        holding.bytes -= gone.size
        if not holding.ids:
            del self._owners[gone.owner]
