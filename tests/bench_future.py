"""Client CPU per job of the future (:class:`labkit.future.Job`): one condition for all jobs (the code) against a
condition of each job's own (as concurrent.futures.Future has). Prints figures; asserts nothing.

    .venv/bin/python -m tests.bench_future [jobs]

Three paths a client's jobs take, each timed with ``time.process_time`` (all threads of the process) and the
median of five rounds: ``end`` (made and answered, nobody waiting: the reply thread's part), ``submit_many``
(a done callback into a SimpleQueue, as ``Lab.submit_many`` waits) and ``result`` (one job at a time, answered
by another thread while this one waits in ``result()``, as a student's ``lab.numbers(...).result()``). Then what
jobs kept alive cost (a client keeps its answered jobs, and a notebook the list ``submit_many`` returned): the
memory of each (``tracemalloc``) and a full garbage collection's CPU per live job.
"""

from __future__ import annotations

import gc
import queue
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable

from labkit.future import Job
from labkit.protocol import JobResult

ROUNDS = 5


class OwnConditionJob(Job):
    """A job with a condition of its own: what the shared one saves (the rest of the code is Job's)."""

    __slots__ = ("_ended_on",)

    def __init__(self, job_id: str) -> None:
        super().__init__(None, job_id, "numbers")  # type: ignore[arg-type]
        self._ended_on = threading.Condition(threading.Lock())


def shared(job_id: str) -> Job:
    return Job(None, job_id, "numbers")  # type: ignore[arg-type]


def end(make: Callable[[str], Job], ids: list[str], reply: JobResult) -> None:
    for i in ids:
        job = make(i)
        job.set_result(reply)
        job.done()


def submit_many(make: Callable[[str], Job], ids: list[str], reply: JobResult) -> None:
    finished: queue.SimpleQueue[Job] = queue.SimpleQueue()
    for i in ids:
        job = make(i)
        job.add_done_callback(finished.put)
        job.set_result(reply)
        finished.get()


def result(make: Callable[[str], Job], ids: list[str], reply: JobResult) -> None:
    hand: queue.SimpleQueue[Job | None] = queue.SimpleQueue()

    def answer() -> None:
        while (job := hand.get()) is not None:
            job.set_result(reply)

    replies = threading.Thread(target=answer)
    replies.start()
    for i in ids:
        job = make(i)
        hand.put(job)
        job._await(10)  # what result() waits with (result() then decodes the answer: the same for both)
    hand.put(None)
    replies.join()


def per_job_us(path: Callable[..., None], make: Callable[[str], Job], n: int) -> float:
    ids = [f"{i:032x}" for i in range(n)]
    reply = JobResult.success(ids[0], "numbers", {"count": 1})
    rounds = []
    for _ in range(ROUNDS):
        start = time.process_time()
        path(make, ids, reply)
        rounds.append((time.process_time() - start) / n * 1e6)
    return statistics.median(rounds)


def kept(make: Callable[[str], Job], n: int) -> tuple[float, float]:
    """(bytes per live job, µs of one full garbage collection per live job)."""
    gc.collect()
    tracemalloc.start()
    jobs = [make(f"{i:032x}") for i in range(n)]
    size = tracemalloc.get_traced_memory()[0] / n
    tracemalloc.stop()
    rounds = []
    for _ in range(ROUNDS):
        start = time.process_time()
        gc.collect()
        rounds.append((time.process_time() - start) / n * 1e6)
    del jobs
    return size, statistics.median(rounds)


def main(n: int) -> None:
    print(f"client CPU per job (µs, median of {ROUNDS} rounds of {n:,} jobs), Python {sys.version.split()[0]}")
    print(f"{'path':<12} {'one condition':>14} {'own condition':>14} {'difference':>11}")
    for path in (end, submit_many, result):
        one, own = per_job_us(path, shared, n), per_job_us(path, OwnConditionJob, n)
        print(f"{path.__name__:<12} {one:>14.2f} {own:>14.2f} {own - one:>+11.2f}")
    (one_bytes, one_gc), (own_bytes, own_gc) = kept(shared, n), kept(OwnConditionJob, n)
    print(f"{'full gc':<12} {one_gc:>14.2f} {own_gc:>14.2f} {own_gc - one_gc:>+11.2f}")
    print(f"{'bytes/job':<12} {one_bytes:>14.0f} {own_bytes:>14.0f} {own_bytes - one_bytes:>+11.0f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
