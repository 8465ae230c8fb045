"""One way to wait: look at a condition every ``interval`` seconds until it holds, a deadline passes or
someone asks to stop.

    for elapsed in poll(0.5, timeout=30):         # the loop: yields, then sleeps what is left of the step
        if done():
            break

    url = wait_for(read_url, 30, "the emulator to write its address")   # the common case

Every wait in labkit goes through these two (arq's ``poll`` is the model): a process to start, a queue
to be forgotten, an instance to terminate, a worker to log a line.

A call that failed and is worth another try (botocore retries throttling and 5xx answers itself, 5 attempts:
:mod:`labkit.aws.clients`) goes through the third, :func:`tries`, with its pauses::

    for _ in tries(doubling(0.5, 10), wake=stopped):   # 0.5 s, 1 s, 2 s ... at most 10 s between tries
        try:
            return call()
        except Exception as exc:
            if not worth_another(exc):
                raise
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from labkit.errors import WaitTimeout

T = TypeVar("T")


def poll(interval: float, timeout: float | None = None, stop: threading.Event | None = None) -> Iterator[float]:
    """Yield the seconds elapsed since the first look, then wait until ``interval`` has passed since
    that look. Ends once ``timeout`` seconds have passed (after one last look at the deadline) or when
    ``stop`` is set."""
    start = time.monotonic()
    while True:
        before = time.monotonic()
        elapsed = before - start
        yield elapsed
        if timeout is not None and elapsed >= timeout:
            return
        pause = interval - (time.monotonic() - before)
        if timeout is not None:
            pause = min(pause, start + timeout - time.monotonic())
        if stop is not None:
            if stop.wait(max(0.0, pause)):
                return
        elif pause > 0:
            time.sleep(pause)


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05,
             on_wait: Callable[[str], None] | None = None) -> T:
    """``check()``'s first true value, looked at every ``interval`` seconds.

    Raises :class:`WaitTimeout` ("timed out after 30 s waiting for <what>") when ``timeout`` passes
    first. ``on_wait`` hears "waiting for <what>" once, when the first look was not enough.
    """
    for _ in poll(interval, timeout):
        value = check()
        if value:
            return value
        if on_wait is not None:
            on_wait(f"waiting for {what}")
            on_wait = None
    raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what}")


def tries(pauses: Iterable[float], wake: threading.Event | None = None) -> Iterator[int]:
    """The one retry loop: yield the number of the try about to be made (0 first); before each later one, wait the
    next of ``pauses`` (seconds, taken when the wait begins: a generator may work it out then). Ends when
    ``pauses`` runs out; the loop's body leaves it (return, break, raise) once a try worked or a failure is not
    worth another. ``wake``, once set, cuts the waits short (the tries left are still made)."""
    yield 0
    for n, pause in enumerate(pauses, 1):
        if wake is not None:
            wake.wait(max(0.0, pause))
        elif pause > 0:
            time.sleep(pause)
        yield n


def doubling(first: float, most: float) -> Iterator[float]:
    """Pauses that double from ``first`` up to ``most``, then stay there: 0.5, 1, 2, 4, 8, 10, 10, ..."""
    pause = first
    while True:
        yield pause
        pause = min(pause * 2, most)
