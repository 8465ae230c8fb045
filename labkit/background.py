"""Work that must be done, in order, but that nobody should wait for: one thread of its own runs the calls
given to :meth:`Background.run`.

The worker and the client delete the messages they have answered or read this way: a delete is a round
trip to SQS (on AWS, milliseconds), and the next receive need not wait for it. What must come first still
does: a request is handed over for deletion only once its reply was sent.

    deletes = Background("deletes")
    deletes.run(lambda: queue.delete_batch(receipts))   # returns at once (waits only when `limit` are queued)
    deletes.close(timeout=30)                           # runs what is queued, then the thread ends
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

log = logging.getLogger("labkit")


class Background:
    """A thread that runs the calls given to :meth:`run`, one at a time, in the order given.

    At most ``limit`` calls wait at once: past that, :meth:`run` waits for room (a thread that gives work
    faster than it is done slows down rather than pile it up). A call that raises is logged and the next one
    runs. After :meth:`close`, :meth:`run` runs the call on the caller's thread.
    """

    def __init__(self, name: str, limit: int = 8) -> None:
        self.name = name
        self.limit = max(1, limit)
        self._cond = threading.Condition()
        self._todo: deque[Callable[[], object]] = deque()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def run(self, fn: Callable[[], object]) -> None:
        """Run ``fn()`` on the background thread, after the calls given before it."""
        with self._cond:
            while len(self._todo) >= self.limit and not self._closed:
                self._cond.wait()
            if not self._closed:
                self._todo.append(fn)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                    self._thread.start()
                self._cond.notify_all()
                return
        self._call(fn)

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every call given so far has run; False if ``timeout`` seconds passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._todo and not self._busy, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Take no more calls; wait up to ``timeout`` seconds for those given to run (0: do not wait; the
        thread still runs them, then ends). True when all have run."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        return self.drain(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._todo and not self._closed:
                    self._cond.wait()
                if not self._todo:
                    return
                fn = self._todo.popleft()
                self._busy = True
                self._cond.notify_all()  # room for run()
            try:
                self._call(fn)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _call(self, fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:  # the caller's call should handle its own errors; this one did not
            log.exception("%s: a background call failed", self.name)
