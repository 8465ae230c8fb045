"""A job's timeline (labkit/timeline.py, docs/protocol.md "Timelines"): the client's events merged with
the ones the workers put in their replies. The contract on the clean path, after a redelivery (a worker
killed mid-job), when a stopping worker hands a job back, when a job outlives its visibility timeout or
its hard limit, and for a request that went to the dead-letter queue and was redriven. Real emulator,
real worker processes."""

from __future__ import annotations

import signal

import pytest

from labkit import timeline
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.client import Lab
from labkit.config import DLQ_SUFFIX
from labkit.dlq import DeadLetters
from labkit.errors import RemoteJobError
from labkit.protocol import JobRequest, JobResult
from labkit.waiting import wait_for
from tests import job_kinds
from tests.conftest import event_names as names
from tests.helpers import labkit


def test_the_events_merge_in_time_order_and_junk_is_dropped():
    # Given a client's events and a reply's, out of order, one of them malformed
    mine = [timeline.event("sent", 10.0), timeline.event("result", 10.5)]
    theirs = [{"event": "finished", "at": 10.3, "ok": True}, {"event": "received", "at": 10.1, "receive_count": 1},
              {"event": "started", "at": 10.1}, {"event": "hacked", "at": 1}, {"event": "replied", "at": "soon"},
              "not an event", {"event": "received", "at": 10.0, "receive_count": 1, "secret": "x"}]
    # When they are merged
    events = timeline.merge(mine, timeline.clean(theirs))
    # Then the order is by time (a tie in the order a delivery goes through), unknown events and fields dropped
    assert names(events) == ["sent", "received", "received", "started", "finished", "result"]
    assert all("secret" not in e for e in events)
    assert timeline.phases(events) == {"queue_wait": pytest.approx(0.1), "compute": pytest.approx(0.2),
                                       "return": pytest.approx(0.2)}


@pytest.mark.slow
def test_clean_path_timeline_and_labkit_trace(settings, start_worker, tmp_path):
    # Given a worker and a client
    worker = start_worker()
    with Lab(settings) as lab:
        # When a number job is answered
        job = lab.numbers([3, 1, 2])
        assert job.result(timeout=60)["median"] == 2
        events = job.timeline()
    # Then its life is sent, received (once, by that worker), started, finished, replied, result: in order
    assert names(events) == ["sent", "received", "started", "finished", "replied", "result"]
    received = events[1]
    assert received["receive_count"] == 1 and received["worker"] == job.reply.worker
    assert worker.proc.pid == int(received["worker"].rsplit(":", 1)[1])
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)
    p = timeline.phases(events)
    assert sum(p.values()) == pytest.approx(job.latency, abs=1e-3)
    # And `labkit trace` prints it from the journal after the client has gone
    out = labkit("trace", job.id[:8], s=settings)
    assert out.returncode == 0, out.stderr
    assert f"job {job.id} (numbers)" in out.stdout and "delivery 1, by " in out.stdout
    assert "1 delivery; queue wait" in out.stdout
    missing = labkit("trace", "ffffffffff", s=settings)
    assert missing.returncode == 1 and "no job 'ffffffffff'" in missing.stderr


@pytest.mark.slow
def test_a_job_redelivered_after_its_worker_died_shows_both_deliveries(make_settings, start_worker):
    # Given requests that reappear 3 s after their worker dies, and a worker running a slow job
    s = make_settings(job_modules=job_kinds.PATH, visibility_timeout=3)
    first = start_worker(s=s)
    with Lab(s) as lab:
        job = lab.submit("sleep", {"seconds": 2})
        first.wait_for(f"sleep job {job.id} started")
        # When that worker is killed mid-job and another one starts
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
        second = start_worker(s=s)
        assert job.result(timeout=60) == {"slept": 2}
        events = job.timeline()
    # Then the timeline shows two deliveries: the first (its time from SQS), then the one that answered
    received = [e for e in events if e["event"] == "received"]
    assert [e["receive_count"] for e in received] == [1, 2]
    assert received[0].get("inferred") and received[1]["worker"].endswith(f":{second.proc.pid}")
    assert received[1]["at"] - received[0]["at"] >= 2.5  # it came back after the visibility timeout
    assert timeline.deliveries(events) == 2


@pytest.mark.slow
def test_a_stopping_worker_says_which_jobs_it_handed_back(make_settings, start_worker):
    # Given three slow jobs and a worker that runs one at a time
    s = make_settings(job_modules=job_kinds.PATH)
    with Lab(s) as lab:
        jobs = [lab.submit("sleep", {"seconds": 1.5}) for _ in range(3)]
        first = start_worker("--concurrency", "1", s=s)
        first.wait_for("sleep job")
        # When it is stopped, and another worker does the rest
        assert first.terminate() == 0
        start_worker("--concurrency", "3", s=s)
        assert [j.result(timeout=60) for j in jobs] == [{"slept": 1.5}] * 3
        handed_back = [j.timeline() for j in jobs if "released" in names(j.timeline())]
    # Then the jobs it handed back say so, by which worker, before their second delivery
    assert handed_back, "no job was handed back: the stop came too late to test anything"
    for events in handed_back:
        released = next(e for e in events if e["event"] == "released")
        assert released["worker"].endswith(f":{first.proc.pid}")
        later = [e for e in events if e["event"] == "received" and e["at"] > released["at"]]
        assert later and later[-1]["receive_count"] == 2


@pytest.mark.slow
def test_a_long_job_shows_its_heartbeats_and_a_hung_one_its_abandonment(make_settings, start_worker):
    # Given a queue with a 3 s visibility timeout and a worker with a 6 s hard limit
    s = make_settings(job_modules=job_kinds.PATH, visibility_timeout=3)
    start_worker("--job-timeout", "6", s=s)
    with Lab(s) as lab:
        # When a 4 s job runs, and a job that would take 60 s
        slow = lab.submit("sleep", {"seconds": 4})
        assert slow.result(timeout=60) == {"slept": 4}
        hung = lab.submit("sleep", {"seconds": 60})
        with pytest.raises(RemoteJobError):
            hung.result(timeout=60)
    # Then the slow one's visibility was extended while it ran (every third of the timeout)
    beats = [e for e in slow.timeline() if e["event"] == "visibility_extended"]
    assert len(beats) >= 2 and all(e["seconds"] == 3 for e in beats)
    started = next(e["at"] for e in slow.timeline() if e["event"] == "started")
    finished = next(e["at"] for e in slow.timeline() if e["event"] == "finished")
    assert all(started < e["at"] < finished for e in beats)
    # And the hung one was abandoned: the error answer says when, and no "finished" came
    assert "abandoned" in names(hung.timeline()) and "finished" not in names(hung.timeline())


@pytest.mark.slow
def test_a_dead_letter_redriven_carries_its_story_into_the_answer(make_settings, start_worker):
    # Given a request for the default reply queue, which someone deleted: its worker cannot answer it (a client's own
    # reply queue found gone would have its answer dropped instead: docs/protocol.md, "Delivery")
    s = make_settings(job_modules=job_kinds.PATH, max_receive_count=2)
    clients = Clients(s)
    requests = Queue.by_name(clients.sqs, s.request_queue)
    start_worker(s=s)
    Queue.by_name(clients.sqs, s.response_queue).delete()
    req = JobRequest("numbers", {"numbers": [4, 5, 6]})
    requests.send(req.encode())
    # When it has been received twice and gone to the dead-letter queue, its reply queue made again, and redriven
    dlq = Queue.by_name(clients.sqs, s.request_queue + DLQ_SUFFIX)
    wait_for(lambda: dlq.depth()["visible"] == 1, 60, "the request to reach the dead-letter queue", interval=0.5)
    replies = Queue.create(clients.sqs, s.response_queue)
    assert DeadLetters(clients, "requests").redrive().moved == 1
    # Then its answer comes, and its timeline tells the whole story in order
    answer = wait_for(lambda: replies.receive(1, wait=1), 60, "the answer after the redrive")[0]
    result = JobResult.decode(answer.body)
    assert result.ok and result.result["median"] == 5
    events = timeline.merge(timeline.clean(result.events))
    assert names(events) == ["received", "redriven", "received", "started", "finished", "replied"]
    first, redriven, again = events[0], events[1], events[2]
    assert first["inferred"] and first["receive_count"] == 1
    assert redriven["receive_count"] >= 2  # its receives, as SQS counted them
    assert again["receive_count"] == 1 and again["worker"] == result.worker  # a new message after the redrive


@pytest.mark.slow
def test_a_long_pooled_job_holds_back_no_other_reply_of_its_batch(make_settings, start_worker):
    # Given a short and a long job on the job threads, received in one batch
    s = make_settings(job_modules=job_kinds.PATH)
    requests = Queue.by_name(Clients(s).sqs, s.request_queue)
    with Lab(s) as lab:
        reqs = [JobRequest("sleep", {"seconds": 0.2}, reply_to=lab.reply_queue.url),
                JobRequest("sleep", {"seconds": 3}, reply_to=lab.reply_queue.url)]
        short, long = (lab.track(r.id, "sleep") for r in reqs)
        assert not requests.send_batch([r.encode() for r in reqs])
        start_worker("--concurrency", "2", s=s)
        # When both are answered
        assert short.result(timeout=60) == {"slept": 0.2} and long.result(timeout=60) == {"slept": 3}
    # Then the short one was in the same batch, and its reply went while the long one still ran
    at = {name: {e["event"]: e["at"] for e in job.timeline()} for name, job in (("short", short), ("long", long))}
    assert abs(at["short"]["received"] - at["long"]["received"]) < 0.5
    assert at["short"]["replied"] < at["long"]["finished"] - 2
