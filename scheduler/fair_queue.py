"""The bounded admission queue, fair across API keys. Pure Python.

Requests wait per key; when a slot frees up for a model, keys take turns (round-robin), so one app
that floods the server with 100 requests does not make another app's single request wait behind
all 100.
"""

from __future__ import annotations

from collections import OrderedDict, deque

from hearth.scheduler.errors import Overloaded
from hearth.scheduler.messages import Submit


class FairQueue:
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        # key name -> its waiting requests, oldest first. Order of keys = whose turn is next.
        self._by_key: OrderedDict[str, deque[Submit]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, req: Submit) -> None:
        if self._size >= self.max_size:
            raise Overloaded(f"the server is busy: {self._size} requests are already waiting; "
                             "retry shortly")
        self._by_key.setdefault(req.key_name, deque()).append(req)
        self._size += 1

    def pop_for(self, model: str) -> Submit | None:
        """The next request for ``model``, taking keys in turn; None if none waits."""
        for key, waiting in self._by_key.items():
            for i, req in enumerate(waiting):
                if req.model == model:
                    del waiting[i]
                    self._size -= 1
                    self._by_key.move_to_end(key)  # this key just had its turn
                    if not waiting:
                        del self._by_key[key]
                    return req
        return None

    def remove(self, request_id: str) -> Submit | None:
        for key, waiting in self._by_key.items():
            for i, req in enumerate(waiting):
                if req.request_id == request_id:
                    del waiting[i]
                    self._size -= 1
                    if not waiting:
                        del self._by_key[key]
                    return req
        return None

    def drain(self, model: str | None = None) -> list[Submit]:
        """Remove and return every waiting request (for ``model`` only, if given)."""
        out: list[Submit] = []
        for key in list(self._by_key):
            keep: deque[Submit] = deque()
            for req in self._by_key[key]:
                (out if model is None or req.model == model else keep).append(req)
            if keep:
                self._by_key[key] = keep
            else:
                del self._by_key[key]
        self._size -= len(out)
        return out

    def models_waiting(self) -> set[str]:
        return {req.model for waiting in self._by_key.values() for req in waiting}
