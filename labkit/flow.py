"""Flow control: how many jobs a client keeps sent but unanswered."""

from __future__ import annotations

import math
import statistics

from labkit.errors import InvalidInput


class Window:
    """How many jobs :meth:`Lab.submit_many` keeps unanswered: ``size``, fixed unless ``low < high``.

    Adaptive, it widens while answers come back about as fast as the fastest seen (under 2x: the workers
    keep up, more in flight means more throughput) and narrows when they come back over 4x slower (jobs
    wait in the queue: more in flight only adds latency and, on the emulator, slows its queues down).
    It decides once per ``size`` answers.
    """

    def __init__(self, size: int, low: int | None = None, high: int | None = None) -> None:
        if size < 1:
            raise InvalidInput(f"the window must be at least 1 job, got {size}")
        self.low = min(size, low or size)
        self.high = max(size, high or size)
        self.size = size
        self.fastest = math.inf
        self._epoch: list[float] = []

    def __repr__(self) -> str:
        return f"Window({self.size}, low={self.low}, high={self.high})"

    def observe(self, latency: float) -> None:
        """One answered job's latency (seconds from submit to answer)."""
        if self.low == self.high:
            return
        self.fastest = min(self.fastest, latency)
        self._epoch.append(latency)
        if len(self._epoch) < self.size:
            return
        typical = statistics.median(self._epoch)
        self._epoch.clear()
        if typical < 2 * self.fastest:
            self.size = min(self.high, self.size + max(10, self.size // 2))
        elif typical > 4 * self.fastest:
            self.size = max(self.low, self.size - max(10, self.size // 4))


def default_window(local: bool) -> int:
    """Outstanding jobs to start with: narrow on the emulator (its queues slow down as they fill),
    wide on real SQS (where depth costs nothing)."""
    return 20 if local else 200


def adaptive_window(local: bool) -> Window:
    """The window :meth:`labkit.client.Lab.submit_many` uses by default. On real SQS it adapts from
    :func:`default_window` within 10-1000 jobs. On the emulator it stays at 20: there every call costs
    more as a queue fills, and measured (docs/benchmark.md) a fixed 10-20 beat the adaptive window,
    which wandered between 10 and 30."""
    if local:
        return Window(default_window(local))
    return Window(default_window(local), low=10, high=1000)
