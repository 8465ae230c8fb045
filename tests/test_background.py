"""labkit.background (the thread that deletes answered messages for the worker and the client) and the
completion of a Job (one condition for all jobs, no future per job): ordering, room, draining, closing,
and waiting on a job from several threads. Pure threads: no AWS."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from labkit.background import Background
from labkit.errors import LabkitError
from labkit.future import Job
from labkit.protocol import JobResult


def test_calls_run_in_the_order_given_and_drain_waits_for_them():
    done: list[int] = []
    bg = Background("test")
    for i in range(50):
        bg.run(lambda i=i: (time.sleep(0.001), done.append(i)))
    assert bg.drain(timeout=10)
    assert done == list(range(50))
    assert bg.close(timeout=10)


def test_run_waits_for_room_once_limit_calls_are_queued():
    gate = threading.Event()
    bg = Background("test", limit=2)
    bg.run(gate.wait)  # running: holds the thread
    time.sleep(0.05)
    bg.run(lambda: None)
    bg.run(lambda: None)  # two queued: the limit
    third = threading.Thread(target=bg.run, args=(lambda: None,))
    third.start()
    third.join(timeout=0.3)
    assert third.is_alive(), "run() returned although `limit` calls were waiting"
    gate.set()
    third.join(timeout=10)
    assert not third.is_alive()
    assert bg.close(timeout=10)


def test_a_failing_call_is_logged_and_the_next_ones_run(caplog):
    done: list[str] = []
    bg = Background("test")
    with caplog.at_level(logging.ERROR, logger="labkit"):
        bg.run(lambda: 1 / 0)
        bg.run(lambda: done.append("after"))
        assert bg.drain(timeout=10)
    assert done == ["after"]
    assert "test: a background call failed" in caplog.text and "ZeroDivisionError" in caplog.text


def test_close_runs_what_was_queued_and_later_calls_run_on_the_callers_thread():
    ran_on: list[str] = []
    gate = threading.Event()
    bg = Background("test")
    bg.run(gate.wait)
    bg.run(lambda: ran_on.append(threading.current_thread().name))
    assert not bg.close(timeout=0.1)  # the first call still runs: not everything has run yet
    gate.set()
    assert bg.drain(timeout=10)
    bg.run(lambda: ran_on.append(threading.current_thread().name))
    assert ran_on == ["test", threading.current_thread().name]


def _reply(job_id: str) -> JobResult:
    return JobResult.success(job_id, "numbers", {"count": 1})


def test_a_job_ends_once_the_first_answer_or_failure_wins():
    job = Job(None, "a" * 32, "numbers")  # type: ignore[arg-type]
    ended: list[Job] = []
    job.add_done_callback(ended.append)
    assert not job.done() and job.latency is None
    job.set_result(_reply(job.id))
    job.set_exception(LabkitError("too late"))
    job.set_result(_reply(job.id))
    assert job.done() and ended == [job]
    assert job.reply is not None and job.reply.ok and job.latency is not None and job.latency >= 0

    failed = Job(None, "b" * 32, "numbers")  # type: ignore[arg-type]
    failed.set_exception(LabkitError("the Lab was closed before the result arrived"))
    failed.set_result(_reply(failed.id))
    with pytest.raises(LabkitError, match="closed before the result"):
        failed.result(timeout=1)
    assert failed.reply is None


def test_threads_waiting_on_different_jobs_each_wake_for_their_own():
    jobs = [Job(None, f"{i:032x}", "numbers") for i in range(4)]  # type: ignore[arg-type]
    woke: dict[int, bool] = {}

    def wait(i: int) -> None:
        woke[i] = jobs[i]._await(10)

    threads = [threading.Thread(target=wait, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    jobs[2].set_result(_reply(jobs[2].id))
    threads[2].join(timeout=5)
    assert woke == {2: True}, "only the thread of the job that ended returns"
    for j in (jobs[0], jobs[1], jobs[3]):
        j.set_result(_reply(j.id))
    for t in threads:
        t.join(timeout=5)
    assert woke == dict.fromkeys(range(4), True)
    assert not Job(None, "c" * 32, "numbers")._await(0.05)  # type: ignore[arg-type]
