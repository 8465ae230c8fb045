"""The client's future (:class:`labkit.future.Job`) in the shape of a concurrent.futures.Future: whoever receives an
answer ends the job with ``set_result`` or ``set_exception``; ``add_done_callback`` says when; a slow result asks
the Lab's ``slow_hooks`` why. Pure threads, no worker process; the Lab runs on the emulator but sends nothing."""

from __future__ import annotations

import logging
import threading

import pytest

from labkit import future as job_module
from labkit.client import Lab
from labkit.errors import JobTimeout, LabkitError, RemoteJobError
from labkit.future import Job
from labkit.protocol import JobResult


def _answer(job: Job, **result: object) -> JobResult:
    return JobResult.success(job.id, job.kind, dict(result))


def test_the_first_result_or_exception_wins_and_says_so(lab: Lab) -> None:
    # Given a job of a Lab
    job = Job(lab, "a" * 32, "numbers")
    # When its answer comes, then a failure, then a second answer (a duplicate and a closing Lab race)
    assert job.set_result(_answer(job, count=3)) is True
    assert job.set_exception(LabkitError("too late")) is False
    assert job.set_result(_answer(job, count=4)) is False
    # Then the first end holds
    assert job.done() and job.result(timeout=0) == {"count": 3} and job.latency is not None


def test_set_exception_makes_result_raise_it_and_an_error_answer_raises_the_workers_error() -> None:
    failed = Job(None, "b" * 32, "numbers")  # type: ignore[arg-type]  # never reaches a bucket
    assert failed.set_exception(LabkitError("the Lab was closed before the result arrived"))
    with pytest.raises(LabkitError, match="closed before the result"):
        failed.result(timeout=0)
    refused = Job(None, "c" * 32, "numbers")  # type: ignore[arg-type]
    refused.set_result(JobResult.failure(refused.id, "numbers", "invalid_input", "no numbers"))
    with pytest.raises(RemoteJobError, match="no numbers"):
        refused.result(timeout=0)


def test_done_callbacks_run_once_in_order_on_the_thread_that_ends_the_job() -> None:
    job = Job(None, "d" * 32, "numbers")  # type: ignore[arg-type]
    calls: list[tuple[str, str]] = []
    job.add_done_callback(lambda j: calls.append(("first", threading.current_thread().name)))
    job.add_done_callback(lambda j: calls.append(("second", threading.current_thread().name)))
    assert calls == [], "a callback ran before the job ended"
    ender = threading.Thread(target=job.set_result, args=(_answer(job),), name="replies")
    ender.start()
    ender.join(timeout=10)
    job.set_exception(LabkitError("too late"))
    assert calls == [("first", "replies"), ("second", "replies")]


def test_a_callback_added_after_the_end_runs_at_once_on_the_callers_thread() -> None:
    job = Job(None, "e" * 32, "numbers")  # type: ignore[arg-type]
    job.set_exception(LabkitError("gone"))
    seen: list[tuple[Job, str]] = []
    job.add_done_callback(lambda j: seen.append((j, threading.current_thread().name)))
    assert seen == [(job, threading.current_thread().name)]


def test_a_callback_that_raises_is_logged_not_raised_and_the_others_still_run(caplog) -> None:
    job = Job(None, "f" * 32, "numbers")  # type: ignore[arg-type]
    after: list[Job] = []
    job.add_done_callback(lambda j: 1 / 0)
    job.add_done_callback(after.append)
    with caplog.at_level(logging.ERROR, logger="labkit"):
        assert job.set_result(_answer(job)) is True  # the thread that ends jobs goes on
        job.add_done_callback(lambda j: {}["missing"])  # already done: runs at once, logged too
    assert after == [job]
    failures = [r for r in caplog.records if "a done callback" in r.getMessage()]
    assert [r.exc_info[0] for r in failures if r.exc_info] == [ZeroDivisionError, KeyError]


def test_a_slow_result_asks_the_labs_slow_hooks_and_says_the_news_once(lab: Lab, monkeypatch, caplog) -> None:
    # Given a Lab whose first hook cannot tell (it may not read what it looks at) and whose second can
    monkeypatch.setattr(job_module, "NOTICE_AFTER", 0.05)
    asked: list[str] = []

    def cannot_read(job: Job) -> tuple[str | None, bool]:
        asked.append("cannot_read")
        raise LabkitError("access denied")

    def knows(job: Job) -> tuple[str | None, bool]:
        asked.append("knows")
        return f"the {job.kind} workers are asleep", len(asked) <= 2

    lab.slow_hooks = [cannot_read, knows]
    job = Job(lab, "1" * 32, "numbers")
    # When nothing answers within its timeout
    with caplog.at_level(logging.WARNING, logger="labkit"), pytest.raises(JobTimeout) as info:
        job.result(timeout=0.2)
    # Then it said why while waiting (once: the hook says whether it is news) and its timeout says so too
    assert [r.getMessage() for r in caplog.records] == ["labkit: the numbers workers are asleep"]
    assert str(info.value).endswith(": the numbers workers are asleep")
    assert asked == ["cannot_read", "knows", "cannot_read", "knows"]


def test_a_lab_asks_its_own_hooks_and_the_fleets_by_default(lab: Lab) -> None:
    # A Lab with no Auto Scaling fleet in its state: neither hook has anything to say, and no fleet is asked
    job = Job(lab, "2" * 32, "numbers")
    assert [h.__name__ for h in lab.slow_hooks] == ["_unserved", "_scale_out"]
    assert [h(job) for h in lab.slow_hooks] == [(None, False), (None, False)]
    assert not any(call.startswith("autoscaling.") for call in lab.clients.counter.snapshot())
