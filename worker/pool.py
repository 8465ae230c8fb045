"""The job threads, and how a job past its hard limit is left behind."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit.aws.queues import Message


@dataclass(eq=False)
class Task:
    """One message's job on the pool."""

    message: Message
    run: Callable[[], Any]
    prepared: Any = None  # the decoded message (worker.answer.Prepared): its events grow while it runs
    future: cf.Future[Any] = field(init=False, repr=False)  # set by JobPool.submit
    pool: cf.ThreadPoolExecutor = field(init=False, repr=False)
    started: float | None = None  # time.monotonic() when the job began to run (set by its thread)


class JobPool:
    """The job threads. Python cannot kill a thread, so a job past its hard limit is *abandoned*: its
    thread is left to finish on its own and a fresh pool of ``size`` threads takes the work from then on."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._pool = self._new()
        self._abandoned: list[Task] = []

    def _new(self) -> cf.ThreadPoolExecutor:
        return cf.ThreadPoolExecutor(self.size, thread_name_prefix="job")

    def submit(self, task: Task) -> Task:
        def run() -> Any:
            task.started = time.monotonic()
            return task.run()
        with self._lock:
            task.pool = self._pool
            task.future = self._pool.submit(run)
        return task

    def abandon(self, task: Task) -> None:
        """Give up on a running job; its pool is retired if it is still the current one."""
        with self._lock:
            self._abandoned.append(task)
            if task.pool is self._pool:
                retired, self._pool = self._pool, self._new()
                retired.shutdown(wait=False)  # queued jobs still run there unless rescued

    def rescue(self, tasks: list[Task]) -> None:
        """Move jobs not started yet off a retired pool (whose threads may all be stuck)."""
        for task in tasks:
            if task.pool is not self._pool and task.future.cancel():
                task.started = None
                self.submit(task)

    def stuck(self) -> int:
        """Abandoned jobs still running."""
        return sum(1 for t in self._abandoned if not t.future.done())

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
