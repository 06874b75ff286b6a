"""Big prompts are rendered and tokenized on a thread of their own, off the decode loop.

The worker's loop runs one batched decode step after another for every slot; anything it does
between steps delays every running request. Tokenizing costs about 0.9 µs per byte of text on
this project's 2-core test machine (an 8 MB prompt: 7 s, measured with `/v1/messages/count_tokens`
during the Messages API's review), and llama.cpp's tokenizer releases the GIL while it works
(ctypes drops it around foreign calls), so a big prompt is prepared on one background thread
while the loop goes on decoding; small ones (most requests) are prepared inline, as before,
so that they never wait in line behind a big one and lose no step of latency.

Size is judged by the job's encoded message (``raw_bytes``): it bounds the text to tokenize.
llama.cpp's tokenizer is safe to call from two threads at once (it only reads the vocabulary;
its own server tokenizes on HTTP threads while decoding).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from hearth.scheduler import errors

# Jobs whose message is larger than this are prepared off the loop: ~30 ms of tokenizing at the
# rate above — about one decode step of the default model with a few slots busy.
INLINE_MAX_BYTES = 32 * 1024

JobT = TypeVar("JobT")
ResultT = TypeVar("ResultT")


@dataclass
class Prepared(Generic[JobT, ResultT]):
    """A job whose preparation ended: its result, or the error that preparation raised (the
    request's fault, e.g. a chat template that fails on its messages)."""

    job: JobT
    result: ResultT | errors.HearthError


class Preparer(Generic[JobT, ResultT]):
    """One background thread that runs ``prepare(job)`` for big jobs, in arrival order.

    :meth:`submit` returns None when the job was queued, or the result at once for a small job.
    :meth:`ready` hands back finished jobs (between steps); :meth:`cancel` forgets a queued one
    (its result is dropped when it ends). Exceptions other than :class:`errors.HearthError`
    propagate from :meth:`ready` — as they would have from the loop itself."""

    def __init__(self, prepare: Callable[[JobT], ResultT], request_id: Callable[[JobT], str],
                 inline_max_bytes: int = INLINE_MAX_BYTES) -> None:
        self._prepare = prepare
        self._request_id = request_id
        self._inline_max = inline_max_bytes
        self._pool: ThreadPoolExecutor | None = None
        self._queued: dict[str, tuple[JobT, Future[ResultT]]] = {}

    @property
    def pending(self) -> int:
        """Jobs queued or being prepared."""
        return len(self._queued)

    def run_now(self, job: JobT) -> ResultT | errors.HearthError:
        try:
            return self._prepare(job)
        except errors.HearthError as exc:
            return exc

    def submit(self, job: JobT, raw_bytes: int) -> ResultT | errors.HearthError | None:
        """Prepare ``job`` inline when its message is small (its result), else queue it
        (None: it comes back from :meth:`ready`)."""
        if raw_bytes <= self._inline_max:
            return self.run_now(job)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="hearth-prepare")
        self._queued[self._request_id(job)] = (job, self._pool.submit(self._prepare, job))
        return None

    def ready(self) -> list[Prepared[JobT, ResultT]]:
        """The queued jobs whose preparation has ended, in arrival order."""
        done: list[Prepared[JobT, ResultT]] = []
        for rid, (job, future) in list(self._queued.items()):
            if not future.done():
                break  # one thread, in order: the later ones are not done either
            del self._queued[rid]
            exc = future.exception()
            if exc is None:
                done.append(Prepared(job, future.result()))
            elif isinstance(exc, errors.HearthError):
                done.append(Prepared(job, exc))
            else:
                raise exc
        return done

    def cancel(self, request_id: str) -> bool:
        """Forget a queued job (its client left). True if it was queued here."""
        entry = self._queued.pop(request_id, None)
        if entry is None:
            return False
        entry[1].cancel()  # not started yet: it never runs; running: its result is dropped
        return True

    def drain(self) -> list[JobT]:
        """Forget every queued job (shutdown, a failed worker): the jobs, to be failed."""
        jobs = []
        for job, future in self._queued.values():
            future.cancel()
            jobs.append(job)
        self._queued.clear()
        return jobs

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
