"""The worker end to end: a real worker process, the real emulator, real queues."""

from __future__ import annotations

import json
import statistics
import threading

import numpy as np
import pytest

from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.client import Lab
from labkit.config import DLQ_SUFFIX
from labkit.errors import RemoteJobError
from labkit.jobs.numbers import PRESET
from labkit.protocol import JobRequest, JobResult
from labkit.waiting import wait_for
from worker.loop import Worker


def test_number_job_round_trip(lab, start_worker):
    # Given a running worker
    start_worker()
    # When a typed list is sent
    result = lab.numbers([1, 5, 22]).result(timeout=30)
    # Then its statistics come back, integers exact
    assert result["count"] == 3
    assert (result["min"], result["max"], result["median"]) == (1, 22, 5)
    assert result["mean"] == pytest.approx(28 / 3)
    assert type(result["min"]) is int


def test_preset_list(lab, start_worker):
    start_worker()
    result = lab.numbers(PRESET).result(timeout=30)
    assert result["median"] == statistics.median(PRESET)
    assert result["mean"] == sum(PRESET) / len(PRESET)
    assert (result["min"], result["max"]) == (-15, 150)


def test_random_100k_through_claim_check(lab, start_worker, settings):
    # Given a worker and a list far larger than one SQS message
    start_worker()
    values = lab.random_numbers(100_000, seed=7)
    # When it is sent
    job = lab.numbers(values)
    result = job.result(timeout=60)
    # Then the stats are exact and the payload travelled through S3 as .npy
    assert result["count"] == 100_000
    assert result["min"] == int(values.min()) and result["max"] == int(values.max())
    assert result["median"] == statistics.median(values.tolist())
    keys = [o.key for o in lab.bucket.list("payloads/")]
    assert f"payloads/{job.id}.npy" in keys


BAD_INPUTS = [
    ([], "empty"),
    (["a", 1], "item 1"),
    ([1, True], "item 2"),
    ([1, 2, float("nan")], None),  # NaN cannot be sent as JSON: checked separately below
    ([[1, 2], 3], "item 1"),
    ("1,2,x", "item 3"),
    ({"a": 1}, "list"),
]


@pytest.mark.parametrize("values, fragment", [b for b in BAD_INPUTS if b[1]])
def test_bad_input_gets_error_reply_and_worker_keeps_serving(lab, start_worker, values, fragment):
    start_worker()
    with pytest.raises(RemoteJobError) as info:
        lab.numbers(values).result(timeout=30)
    assert info.value.code == "invalid_input"
    assert fragment in str(info.value)
    # The worker is still there for the next job.
    assert lab.numbers([4, 2]).result(timeout=30)["median"] == 3


def test_nan_and_infinity_literals_get_error_reply(lab, start_worker, settings):
    start_worker()
    requests = lab.queue(settings.request_queue)
    for literal in ("NaN", "Infinity", "-Infinity"):
        job_id = f"nan-{literal}"
        body = (f'{{"v":1,"id":"{job_id}","kind":"numbers","reply_to":"{lab.reply_queue.url}",'
                f'"payload":{{"numbers":[1,{literal}]}}}}')
        job = lab.track(job_id, "numbers")
        requests.send(body)
        with pytest.raises(RemoteJobError) as info:
            job.result(timeout=30)
        assert "item 2" in str(info.value) and "finite" in str(info.value)


def test_malformed_bodies_get_error_replies(settings, start_worker):
    # Given bodies that are JSON objects but not valid requests, without reply_to
    start_worker()
    clients = Clients(settings)
    requests = Queue.by_name(clients.sqs, settings.request_queue)
    responses = Queue.by_name(clients.sqs, settings.response_queue)
    bodies = ['{"v": 2, "id": "a", "kind": "numbers", "payload": {}}',
              '{"v": 1, "kind": "numbers", "payload": {"numbers": [1]}}',
              '{"v": 1, "id": "c", "kind": "teapot", "payload": {}}',
              '{"v": 1, "id": "d", "kind": "numbers", "payload": "1,2"}']
    # When they are sent
    requests.send_batch(bodies)
    # Then each gets an error reply on the default response queue
    replies = _collect(responses, 4)
    codes = sorted(JobResult.decode(r).error["code"] for r in replies)
    assert codes == ["invalid_input", "invalid_input", "unknown_kind", "unsupported_version"]


def test_legacy_plain_text_round_trip(settings, start_worker):
    # Given the original lab's client pattern: a plain body on requestQueue
    start_worker()
    sqs = Clients(settings).sqs
    requests = Queue.by_name(sqs, settings.request_queue)
    responses = Queue.by_name(sqs, settings.response_queue)
    requests.send("1,5,22,33,9,0,-15,8,22,100,33,62,90,150,1,2,3")
    requests.send("1,2,x")
    # Then the replies are human-readable text
    replies = _collect(responses, 2)
    good = next(r for r in replies if not r.startswith("?Error"))
    bad = next(r for r in replies if r.startswith("?Error"))
    for word in ("minimum: -15", "maximum: 150", "median: 9", "average"):
        assert word in good
    assert "'x'" in bad


def test_two_clients_get_only_their_own_results(settings, start_worker):
    start_worker("--concurrency", "4")
    results: dict[str, list] = {}

    def client(name: str, offset: int) -> None:
        with Lab(settings) as lab:
            results[name] = lab.numbers_many([[offset + i, offset + i + 2] for i in range(40)], progress=False)

    threads = [threading.Thread(target=client, args=(n, o)) for n, o in (("a", 0), ("b", 10_000))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert [r["median"] for r in results["a"]] == [i + 1 for i in range(40)]
    assert [r["median"] for r in results["b"]] == [10_000 + i + 1 for i in range(40)]


def test_sigterm_during_batch_loses_no_job(settings, start_worker):
    # Given a stream of jobs in the queue and a worker working through it
    sqs = Clients(settings).sqs
    requests = Queue.by_name(sqs, settings.request_queue)
    with Lab(settings) as lab:
        reqs = [JobRequest("numbers", {"numbers": [i, i + 1, i + 2]}, reply_to=lab.reply_queue.url) for i in range(200)]
        jobs = [lab.track(r.id, "numbers") for r in reqs]
        requests.send_batch([r.encode() for r in reqs])
        first = start_worker()
        # When it gets SIGTERM mid-stream
        first.wait_for("ok=true")
        assert first.terminate() == 0
        assert "stopped after" in first.output
        # And a second worker finishes the rest
        start_worker()
        # Then every job has exactly its result
        medians = [j.result(timeout=60)["median"] for j in jobs]
    assert medians == [i + 1 for i in range(200)]


def test_burst_worker_in_process_drains_and_returns(settings):
    # Given jobs waiting and no worker
    with Lab(settings) as lab:
        jobs = [lab.numbers([i, 2 * i]) for i in range(15)]
        # When a burst worker runs in this process
        code = Worker(settings, burst=True).run()
        # Then it returns once the queue is empty, every job answered
        assert code == 0
        assert [j.result(timeout=10)["max"] for j in jobs] == [2 * i for i in range(15)]


def test_a_worker_that_has_not_run_answers_a_batch(settings):
    # Given a worker built and never run, and two jobs in its queue: one small (run inline), one for the job threads
    w = Worker(settings, roles=("numbers",))
    src = w.sources[0]
    with Lab(settings) as lab:
        small, large = lab.numbers([1, 5, 22]), lab.numbers(list(range(5000)))
        received: list = []
        wait_for(lambda: received.extend(src.queue.receive(10, wait=1)) or len(received) == 2, 30, "both requests")
        # When handle_batch answers the batch
        w.handle_batch(src, received)
        # Then both clients have their results, and both requests are deleted
        assert small.result(timeout=10)["count"] == 3 and large.result(timeout=10)["max"] == 4999
        wait_for(lambda: src.queue.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}, 30, "the deletes")
    assert w.stats.jobs == 2 and w.stats.errors == 0
    w.pool.shutdown()


@pytest.mark.spawns  # runs python -m worker and python -m labkit: not in the fast tier
def test_the_worker_owns_its_command_line():
    import subprocess
    import sys

    from tests.conftest import ROOT
    # Given the worker's two ways in
    pm = subprocess.run([sys.executable, "-X", "importtime", "-m", "worker", "--help"], capture_output=True,
                        text=True, cwd=ROOT)
    lk = subprocess.run([sys.executable, "-m", "labkit", "worker", "--help"], capture_output=True, text=True,
                        cwd=ROOT)
    # Then both print the worker's one help, with every option
    assert pm.returncode == lk.returncode == 0 and pm.stdout == lk.stdout
    assert pm.stdout.startswith("usage: labkit worker") and all(o in pm.stdout for o in (
        "--state-dir", "--region", "--queues", "--concurrency", "--burst", "--poll-wait", "--job-timeout",
        "--log-to-s3", "--verbose"))
    # And `python -m worker` does not enter through labkit's command line
    assert " worker.cli" in pm.stderr and " labkit.cli" not in pm.stderr


def test_unanswerable_request_goes_to_dead_letter_queue(make_settings, start_worker):
    # Given queues that dead-letter after 2 receives, and a request whose reply_to is not a labkit
    # reply queue (it names the request queue itself)
    settings = make_settings(max_receive_count=2)
    sqs = Clients(settings).sqs
    requests = Queue.by_name(sqs, settings.request_queue)
    body = JobRequest("numbers", {"numbers": [1]}, reply_to=requests.url).encode()
    requests.send(body)
    start_worker(s=settings)
    # Then it is not answered into that queue, and redrive moves it to the dead-letter queue
    dlq = Queue.by_name(sqs, settings.request_queue + DLQ_SUFFIX)
    got = _collect(dlq, 1, timeout=120)
    assert json.loads(got[0])["reply_to"] == requests.url


def _collect(queue: Queue, n: int, timeout: float = 30) -> list[str]:
    import time
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        msgs = queue.receive(10, wait=1)
        out += [m.body for m in msgs]
        if msgs:
            queue.delete_batch([m.receipt for m in msgs])
    assert len(out) >= n, f"only {len(out)} of {n} messages arrived on {queue.name}"
    return out


def test_numbers_many_reports_calls(lab, start_worker):
    start_worker()
    results = lab.numbers_many([[i] for i in range(30)], progress=False)
    assert [r["max"] for r in results] == list(range(30))
    stats = lab.stats()
    assert stats["jobs_sent"] == 30
    assert stats["calls"]["sqs.SendMessageBatch"] >= 3
    assert np.isfinite(stats["calls_per_job"])


# -- small jobs on the receiving thread, and the log -------------------------------------------------


def _source(settings, lane: str):
    from labkit import kinds
    from worker.answer import Source
    ln = kinds.get_lane(lane)
    base = settings.endpoint_url + "/000000000000/"
    return Source(ln, Queue(None, base + ln.request_queue(settings)), Queue(None, base + ln.reply_queue(settings)), 60)


def test_small_jobs_are_marked_to_run_inline_and_the_rest_go_to_the_job_threads(settings):
    from labkit.aws.queues import Message
    from labkit.aws.storage import Bucket
    from labkit.kinds import INLINE_NUMBERS
    from worker.answer import Answerer, WorkerStats
    from worker.outage import OutageLog

    # Given an answerer and messages of every sort
    answerer = Answerer(settings, Bucket(None, settings.bucket), "h:1", WorkerStats(), OutageLog("x"))
    numbers, images = _source(settings, "numbers"), _source(settings, "images")
    reply = numbers.default_reply.url

    def inline(src, body: str) -> bool:
        return answerer.prepare(src, Message(body, "r", "m", 1, None)).inline

    def request(kind: str, payload=None, **kw) -> str:
        return JobRequest(kind, payload if payload is not None else {}, reply_to=reply, **kw).encode()

    big = list(range(INLINE_NUMBERS // 4))  # a body well over the inline limit
    # Then small number jobs, plain-text number lists, errors and unknown kinds run inline
    assert inline(numbers, request("numbers", {"numbers": [1, 5, 22]}))
    assert inline(numbers, "1,5,22")
    assert inline(numbers, "{not json") and inline(numbers, '{"v": 2}') and inline(numbers, request("teapot"))
    # And large ones, claim checks, images and kinds that did not ask for it go to the job threads
    assert not inline(numbers, request("numbers", {"numbers": big}))
    assert not inline(numbers, ",".join(map(str, big)))
    assert not inline(numbers, request("numbers", None, payload_ref={"bucket": settings.bucket,
                                                                      "key": "payloads/x.npy", "format": "npy"}))
    assert not inline(images, request("image", {"key": "images/unprocessed/cat.png", "ops": []}))
    assert not inline(images, "cat.jpg")


def test_a_long_job_does_not_hold_back_the_small_jobs_of_its_batch(make_settings, start_worker):
    from tests import job_kinds
    # Given a slow job and small number jobs waiting together (one receive takes them all)
    s = make_settings(job_modules=job_kinds.PATH)
    requests = Queue.by_name(Clients(s).sqs, s.request_queue)
    with Lab(s) as lab:
        slow = JobRequest("sleep", {"seconds": 8}, reply_to=lab.reply_queue.url)
        small = [JobRequest("numbers", {"numbers": [i, i + 1]}, reply_to=lab.reply_queue.url) for i in range(5)]
        jobs = [lab.track(r.id, r.kind) for r in (slow, *small)]
        requests.send_batch([r.encode() for r in (slow, *small)])
        # When a worker takes the batch
        worker = start_worker("--concurrency", "2", s=s)
        worker.wait_for(f"sleep job {slow.id} started")
        # Then the small jobs are answered while the slow one still runs
        assert [j.result(timeout=30)["max"] for j in jobs[1:]] == [i + 1 for i in range(5)]
        assert not jobs[0].done()
        # And the slow one is answered when it ends, each request deleted after its reply
        assert jobs[0].result(timeout=60) == {"slept": 8}
        assert lab.duplicates == 0
    # (the worker deletes a request a moment after its reply is sent, off its receive path)
    wait_for(lambda: requests.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}, 30,
             "the answered requests to be deleted")


def test_one_line_per_job_with_verbose_and_a_count_without(settings, start_worker):
    # Given two workers, one started with -v, each serving 20 good jobs and 1 bad one
    for verbose in (True, False):
        worker = start_worker(verbose=verbose)
        with Lab(settings) as lab:
            lab.numbers_many([[i, i + 1] for i in range(20)], progress=False)
            with pytest.raises(RemoteJobError):
                lab.numbers([1, "x"]).result(timeout=30)
        assert worker.terminate() == 0
        out = worker.output
        # Then with -v each job has its line; without, none does (the error reply always has one)
        assert out.count("ok=true") == (20 if verbose else 0)
        assert out.count("ok=false code=invalid_input") == 1
        assert "stopped after 21 jobs (1 errors)" in out


def test_the_worker_counts_its_jobs_in_one_info_line_a_while(settings, caplog, monkeypatch):
    import logging

    import worker.loop
    # Given jobs waiting, and the worker's count due after every batch (10 s in service)
    monkeypatch.setattr(worker.loop, "REPORT_EVERY", 0.0)
    with Lab(settings) as lab:
        jobs = [lab.numbers([i]) for i in range(12)]
        # When a burst worker answers them, logging at INFO
        with caplog.at_level(logging.INFO, logger="labkit.worker"):
            assert Worker(settings, burst=True).run() == 0
        assert all(j.result(timeout=10) for j in jobs)
    # Then the jobs were counted at INFO, and no job has a line of its own there
    counts = [r.getMessage() for r in caplog.records if "answered in the last" in r.getMessage()]
    assert counts and all(r.levelno == logging.INFO for r in caplog.records if "answered in the last" in r.getMessage())
    assert sum(int(c.split(": ")[1].split(" job")[0]) for c in counts) == 12
    assert not [r for r in caplog.records if r.levelno >= logging.INFO and "ok=true" in r.getMessage()]
