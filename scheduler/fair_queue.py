"""The bounded admission queue, fair across API keys. Pure Python.

Requests wait per key; when a slot frees up for a model, keys take turns (round-robin), so one app
that floods the server with 100 requests does not make another app's single request wait behind
all 100.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable

from hearth.scheduler.errors import Overloaded
from hearth.scheduler.messages import ChatJob, Job


def slots_of(req: Job) -> int:
    """The slots a request takes while it runs: a chat or completion job one per choice (its
    ``n``), the slotless jobs (embeddings, tokenize) one of their own kind's places."""
    return req.n if isinstance(req, ChatJob) else 1


class FairQueue:
    MAX_REMEMBERED_KEYS = 4096
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        # key name -> its waiting requests, oldest first (keys in order of arrival)
        self._by_key: OrderedDict[str, deque[Job]] = OrderedDict()
        self._size = 0
        # key name -> the turn at which it was last served; the least recent goes next
        self._served: dict[str, int] = {}
        self._turn = 0

    def __len__(self) -> int:
        return self._size

    def push(self, req: Job) -> None:
        if self._size >= self.max_size:
            raise Overloaded(f"the server is busy: {self._size} requests are already waiting; "
                             "retry shortly")
        self._by_key.setdefault(req.key_name, deque()).append(req)
        self._size += 1

    def pop_for(self, model: str, key_may_run: Callable[[str, int], bool] | None = None,
                kind: type | tuple[type, ...] = object, room: int | None = None) -> Job | None:
        """The next request for ``model``: from the waiting key served least recently (a key
        never served goes first), oldest request of that key first. Keys for which
        ``key_may_run(key, slots)`` says no (its concurrency cap would be passed by that
        request's slots) are skipped; only requests that are instances of ``kind`` are
        considered. None if none waits, or if the next one takes more than ``room`` slots
        (None: any number): a request of n choices takes its n slots at once, so it keeps its
        turn and the requests behind it wait until that many are free, rather than being
        passed by smaller ones for as long as they keep coming."""
        best: tuple[int, str, int] | None = None  # (last served, key, index in its deque)
        for key, waiting in self._by_key.items():
            turn = self._served.get(key, -1)
            if best is not None and turn >= best[0]:
                continue
            for i, req in enumerate(waiting):
                if req.model == model and isinstance(req, kind):
                    if key_may_run is None or key_may_run(key, slots_of(req)):
                        best = (turn, key, i)
                    break
        if best is None:
            return None
        if room is not None and slots_of(self._by_key[best[1]][best[2]]) > room:
            return None
        _, key, i = best
        waiting = self._by_key[key]
        req = waiting[i]
        del waiting[i]
        if not waiting:
            del self._by_key[key]
        self._size -= 1
        self._turn += 1
        self._served[key] = self._turn
        if len(self._served) > self.MAX_REMEMBERED_KEYS:
            self._forget_idle_keys()
        return req

    def _forget_idle_keys(self) -> None:
        for key in [k for k in self._served if k not in self._by_key]:
            del self._served[key]

    def remove(self, request_id: str) -> Job | None:
        for key, waiting in self._by_key.items():
            for i, req in enumerate(waiting):
                if req.request_id == request_id:
                    del waiting[i]
                    self._size -= 1
                    if not waiting:
                        del self._by_key[key]
                    return req
        return None

    def drain(self, model: str | None = None) -> list[Job]:
        """Remove and return every waiting request (for ``model`` only, if given)."""
        out: list[Job] = []
        for key in list(self._by_key):
            keep: deque[Job] = deque()
            for req in self._by_key[key]:
                (out if model is None or req.model == model else keep).append(req)
            if keep:
                self._by_key[key] = keep
            else:
                del self._by_key[key]
        self._size -= len(out)
        return out

    def depth_by_key(self) -> dict[str, int]:
        return {key: len(waiting) for key, waiting in self._by_key.items()}

    def models_waiting(self) -> set[str]:
        return {req.model for waiting in self._by_key.values() for req in waiting}
