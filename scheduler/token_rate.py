"""Tokens per second from a worker's cumulative generated-token count, as it reports it.

Workers report their count about once a second while they generate (``WorkerStats``; a remote
box sums its workers' on every pong). The rate is the rise over the last ``window`` seconds of
samples, at most one a ``min_gap`` seconds; a count that went down (the worker, or a box's
workers, restarted) starts afresh. Time is passed in (monotonic seconds): no clock here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WINDOW_S = 5.0
MIN_GAP_S = 1.0


@dataclass
class TokenRate:
    window: float = WINDOW_S
    min_gap: float = MIN_GAP_S
    samples: list[tuple[float, int]] = field(default_factory=list)  # (when, count), oldest first
    per_s: float = 0.0  # the rate at the last sample

    def sample(self, tokens: int, now: float) -> None:
        """Take the count ``tokens`` at ``now``; ``per_s`` is then the rise over the window."""
        samples = self.samples
        if samples and now - samples[-1][0] < self.min_gap:
            return
        if samples and tokens < samples[-1][1]:
            samples.clear()
        samples.append((now, tokens))
        while len(samples) > 2 and now - samples[1][0] >= self.window:
            samples.pop(0)
        at, before = samples[0]
        self.per_s = (tokens - before) / (now - at) if now > at else 0.0

    def now_per_s(self, now: float) -> float:
        """The rate as of ``now``: 0 once nothing has been reported for a whole window (a
        worker that went idle says so once, then stays silent)."""
        if not self.samples or now - self.samples[-1][0] >= self.window:
            return 0.0
        return self.per_s
