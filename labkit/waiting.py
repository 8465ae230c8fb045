"""One way to wait: look at a condition every ``interval`` seconds until it holds, a deadline passes or
someone asks to stop.

    for elapsed in poll(0.5, timeout=30):         # the loop: yields, then sleeps what is left of the step
        if done():
            break

    url = wait_for(read_url, 30, "the emulator to write its address")   # the common case

Every wait in labkit goes through these two (arq's ``poll`` is the model): a process to start, a queue
to be forgotten, an instance to terminate, a worker to log a line.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
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
