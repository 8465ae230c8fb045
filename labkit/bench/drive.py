"""Keep a window of jobs in flight through a pipeline given as a send and a receive function: the
driver of the two reference pipelines (the floor and the original lab's pattern)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from labkit.errors import JobTimeout


def drive(n: int, window: int, send: Callable[[list[int]], None], receive: Callable[[], list[int]],
          batch: int = 10, timeout: float = 120.0) -> tuple[float, list[float]]:
    """Send jobs ``0..n-1`` (``batch`` at a time, at most ``window`` unanswered) while a thread calls
    ``receive`` (which returns the indexes answered); returns (seconds, latencies by job).

    :class:`JobTimeout` when the jobs are not all answered within ``timeout`` seconds; an error raised
    by ``receive`` is raised here.
    """
    sent_at = [0.0] * n
    latencies = [float("nan")] * n
    room = threading.Semaphore(window)
    done = threading.Event()
    failure: list[BaseException] = []

    def receiver() -> None:
        got = 0
        try:
            while got < n and not done.is_set():
                for i in receive():
                    if latencies[i] != latencies[i]:  # NaN: first answer for this job
                        latencies[i] = time.perf_counter() - sent_at[i]
                        got += 1
                        room.release()
        except BaseException as exc:  # noqa: BLE001 (reported to the sender)
            failure.append(exc)
            for _ in range(window):
                room.release()
        done.set()

    t = threading.Thread(target=receiver, name="bench-receiver", daemon=True)
    t0 = time.perf_counter()
    t.start()
    i = 0
    deadline = time.monotonic() + timeout  # one budget for the whole run: each wait below gets what is left
    while i < n and not failure:
        group = list(range(i, min(n, i + min(batch, window))))
        for _ in group:
            if not room.acquire(timeout=max(0.0, deadline - time.monotonic())):
                done.set()
                raise JobTimeout(f"no answer within {timeout:.0f} s ({i} sent)")
        now = time.perf_counter()
        for j in group:
            sent_at[j] = now
        send(group)
        i += len(group)
    if not done.wait(timeout=max(0.0, deadline - time.monotonic())):
        done.set()
        raise JobTimeout(f"{sum(x != x for x in latencies)} of {n} jobs unanswered after {timeout:.0f} s")
    if failure:
        raise failure[0]
    return time.perf_counter() - t0, latencies
