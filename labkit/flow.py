"""Flow control: how many jobs a client keeps sent but unanswered."""

from __future__ import annotations

import math
import statistics
import time

from labkit.endpoints import Endpoint
from labkit.errors import InvalidInput

# A widening must buy this much more throughput to be kept; after one that did not, this many decisions
# pass before the next try (on a service that shares this machine's cores, more in flight only queues).
WIDEN_GAIN = 1.1
# moto's fixed window. 10 against 20 (docs/benchmark.md, "The client's window"): one client as fast or faster
# (197 against 181 jobs/s, p50 47 against 104 ms), and a class's light clients wait behind half as many of a heavy
# client's jobs (their p95 4.75x their p95 alone against 5.92x; `labkit bench --clients 40`).
MOTO_WINDOW = 10
HOLD_EPOCHS = 8


class Window:
    """How many jobs :meth:`Lab.submit_many` keeps unanswered: ``size``, fixed unless ``low < high``.

    Adaptive, it decides once per ``size`` answers, from what the endpoint shows:

    * answers come back over 4x slower than the fastest seen: jobs wait in the queue, so it narrows (more
      in flight only adds latency and, on moto, slows the queues down);
    * its last widening did not raise the rate of answers by 10%: the workers were already busy, so it
      goes back, and tries again only after a while;
    * answers come back under 2x the fastest: the workers keep up, so it widens (by half) and watches.
    """

    def __init__(self, size: int, low: int | None = None, high: int | None = None) -> None:
        if size < 1:
            raise InvalidInput(f"the window must be at least 1 job, got {size}")
        self.low = min(size, low or size)
        self.high = max(size, high or size)
        self.size = size
        self.fastest = math.inf
        self._epoch: list[float] = []
        self._epoch_start: float | None = None
        self._tried: tuple[int, float] | None = None  # (size before the last widening, rate of answers then)
        self._hold = 0  # decisions left before widening may be tried again

    def __repr__(self) -> str:
        return f"Window({self.size}, low={self.low}, high={self.high})"

    def observe(self, latency: float, now: float | None = None) -> None:
        """One answered job's latency (seconds from submit to answer), answered at ``now``
        (``time.monotonic()``, given by tests)."""
        if self.low == self.high:
            return
        now = time.monotonic() if now is None else now
        if self._epoch_start is None:
            self._epoch_start = now
        self.fastest = min(self.fastest, latency)
        self._epoch.append(latency)
        if len(self._epoch) < self.size:
            return
        rate = len(self._epoch) / max(now - self._epoch_start, 1e-6)
        typical = statistics.median(self._epoch)
        self._epoch.clear()
        self._epoch_start = now
        self._decide(typical, rate)

    def _decide(self, typical: float, rate: float) -> None:
        tried, self._tried = self._tried, None
        self._hold = max(0, self._hold - 1)
        if typical > 4 * self.fastest:
            self.size = max(self.low, self.size - max(10, self.size // 4))
        elif tried is not None and rate < WIDEN_GAIN * tried[1]:
            self.size = tried[0]
            self._hold = HOLD_EPOCHS
        elif typical < 2 * self.fastest and not self._hold and self.size < self.high:
            self._tried = (self.size, rate)
            self.size = min(self.high, self.size + max(10, self.size // 2))


def default_window(endpoint: Endpoint) -> int:
    """Outstanding jobs to start with: narrow on a service on this machine or in the lab (moto, fauxqs,
    LocalStack: more in flight there only queues), wide on real SQS (where depth costs nothing and each
    answer takes a network round trip)."""
    if endpoint.kind == "aws":
        return 200
    return MOTO_WINDOW if endpoint.slows_as_queues_fill else 20


def adaptive_window(endpoint: Endpoint) -> Window:
    """The window :meth:`labkit.client.Lab.submit_many` uses by default, chosen from what the endpoint is.

    On moto it stays at :data:`MOTO_WINDOW` (10): every call there costs more as a queue fills, and measured
    (docs/benchmark.md) a fixed 10-20 beat the adaptive window, which wandered between 10 and 30.
    Anywhere else it adapts from :func:`default_window` within 10-1000 jobs: it widens while answers keep
    pace (a remote endpoint, whose latency is the network's) and narrows when they queue."""
    if endpoint.slows_as_queues_fill:
        return Window(default_window(endpoint))
    return Window(default_window(endpoint), low=10, high=1000)
