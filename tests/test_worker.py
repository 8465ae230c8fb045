"""The worker end to end: a real worker process, the real emulator, real queues."""

from __future__ import annotations

import json
import statistics
import threading

import numpy as np
import pytest

from labkit import provision
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.client import Lab
from labkit.config import DLQ_SUFFIX
from labkit.errors import RemoteJobError
from labkit.protocol import JobRequest, JobResult
from tests.conftest import unique_settings
from worker.loop import Worker

PRESET = [1, 5, 22, 33, 9, 0, -15, 8, 22, 100, 33, 62, 90, 150, 1, 2, 3]


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
    (["a", 1], "item 0"),
    ([1, True], "item 1"),
    ([1, 2, float("nan")], None),  # NaN cannot be sent as JSON: checked separately below
    ([[1, 2], 3], "item 0"),
    ("1,2,x", "item 2"),
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
        assert "item 1" in str(info.value) and "finite" in str(info.value)


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


def test_unanswerable_request_goes_to_dead_letter_queue(emulator, tmp_path, start_worker):
    # Given queues that dead-letter after 2 receives, and a request whose reply_to is not a labkit
    # reply queue (it names the request queue itself)
    settings = unique_settings(emulator, tmp_path / "state", max_receive_count=2)
    provision.ensure(Clients(settings))
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
