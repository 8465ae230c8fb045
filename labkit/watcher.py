"""Watch queues while work runs: visible, in-flight and dead-letter counts, sampled every ``interval``
seconds from SQS's own attributes (on the emulator as on AWS).

    with QueueWatcher.for_lane(lab, "numbers", interval=0.5) as watch:
        lab.numbers_many(lists)
    plots.queue_depth_figure(watch.samples)

``on_sample`` is called after each look (an interactive session redraws its live plot there). For
periods longer than a session, AWS keeps the same numbers in CloudWatch (``ApproximateNumberOfMessages*``,
one point a minute): see docs/aws.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from labkit import kinds
from labkit.aws.queues import Queue
from labkit.config import DLQ_SUFFIX
from labkit.errors import WaitTimeout
from labkit.waiting import poll, wait_for


@dataclass(frozen=True)
class Sample:
    """One look at one queue."""

    at: float  # epoch seconds
    queue: str
    visible: int
    in_flight: int
    dead_letter: int | None = None


@dataclass
class QueueWatcher:
    """Samples ``queues`` (label -> request queue; its dead-letter queue too, if it has one) in a thread."""

    queues: dict[str, Queue]
    dead_letters: dict[str, Queue] = field(default_factory=dict)
    interval: float = 0.5
    on_sample: Callable[[list[Sample]], None] | None = None
    samples: list[Sample] = field(default_factory=list)
    errors: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_lane(cls, lab: Any, lane: str = "numbers", **kw: Any) -> QueueWatcher:
        """Watch a lane's request queue (and its dead-letter queue) through ``lab``'s clients."""
        name = kinds.get_lane(lane).request_queue(lab.settings)
        dlq = Queue.find(lab.clients.sqs, name + DLQ_SUFFIX)
        return cls({name: lab.queue(name)}, {name: dlq} if dlq else {}, **kw)

    def look(self) -> list[Sample]:
        """Sample every queue once (also what the thread does each interval)."""
        now = time.time()
        out = []
        for label, queue in self.queues.items():
            depth = queue.depth()
            dlq = self.dead_letters.get(label)
            out.append(Sample(now, label, depth["visible"], depth["in_flight"],
                              dlq.depth()["visible"] if dlq else None))
        return out

    def settle(self, timeout: float) -> bool:
        """Wait (``timeout`` seconds at most) until a look shows the watched queues empty (nothing visible or
        in flight, no dead letter); whether one did.

        Call it before the watcher stops, so that its last looks show the work ended. An answer reaches
        the client a moment before its worker deletes the request (off the receive path: docs/protocol.md),
        and the depth SQS reports is approximate and may lag: a look taken just as the last answer arrives
        can still count answered requests in flight. While the watcher runs, its own looks are read (no call
        of its own); otherwise each check is a look, kept with the samples. On a queue someone else is using,
        it may never look empty: the wait ends at ``timeout``, never in an error."""
        since = time.time()  # a look taken before this call may predate the last requests: it proves nothing

        def ended() -> bool:
            if self._thread is None or not self._thread.is_alive():
                self.samples += self.look()
            last = self.samples[-len(self.queues):]
            return len(last) == len(self.queues) and all(s.at >= since for s in last) and \
                not any(s.visible or s.in_flight or s.dead_letter for s in last)
        try:
            wait_for(ended, timeout, "the watched queues to look empty", interval=self.interval)
        except WaitTimeout:
            return False
        return True

    def _run(self) -> None:
        for _ in poll(self.interval, stop=self._stop):
            try:
                batch = self.look()
            except Exception:  # a missed look is a gap in the plot, not a failed batch
                self.errors += 1
                continue
            self.samples += batch
            if self.on_sample is not None:
                try:
                    self.on_sample(self.samples)
                except Exception:  # a live plot that failed to draw must not stop the sampling
                    self.errors += 1

    def start(self) -> QueueWatcher:
        self._thread = threading.Thread(target=self._run, name="labkit-queue-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        """Stop sampling (after one last look) and return every sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.samples += self.look()
        except Exception:
            self.errors += 1
        return self.samples

    def __enter__(self) -> QueueWatcher:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
