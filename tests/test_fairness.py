"""A class on one fleet (issue 19, items 4 and 5): each client's requests carry its own MessageGroupId (what SQS
fair queues share a standard queue's delivery by), and the class scenario of ``labkit bench --clients N`` answers
every job, to its own client, and reports its table and figure. Correctness only: the benchmark prints the speeds
(docs/benchmark.md, "A class on one fleet")."""

from __future__ import annotations

import threading

from labkit import bench
from labkit.aws.queues import Queue
from labkit.client import Lab
from labkit.plots import png_bytes
from labkit.protocol import JobResult
from labkit.waiting import wait_for
from tests.helpers import labkit


def peek_groups(queue: Queue, n: int) -> dict[str, str]:
    """The MessageGroupId of the first ``n`` messages in ``queue``, by body, left in the queue (visibility 0)."""
    seen: dict[str, str] = {}

    def more() -> bool:
        resp = queue.sqs.receive_message(QueueUrl=queue.url, MaxNumberOfMessages=10, VisibilityTimeout=0,
                                         WaitTimeSeconds=1, MessageSystemAttributeNames=["MessageGroupId"])
        for m in resp.get("Messages", []):
            seen[m["Body"]] = m.get("Attributes", {}).get("MessageGroupId", "")
        return len(seen) >= n
    wait_for(more, 30, f"{n} requests in {queue.name}")
    return seen


def test_every_request_carries_its_clients_group_id(settings, start_worker):
    # Given two clients on one request queue, and no worker yet
    with Lab(settings) as a, Lab(settings) as b:
        # When one sends a job alone and the other a batch (submit_many, waiting on a thread of its own)
        a.numbers([1, 2, 3])
        many: list = []
        sender = threading.Thread(target=lambda: many.extend(
            b.submit_many("numbers", [{"numbers": [i, i + 1]} for i in range(3)], window=10, progress=False)))
        sender.start()
        # Then every request in the queue carries the MessageGroupId of the client that sent it: its reply queue's
        # name, one group per client (the emulator keeps the id on a standard queue, as SQS does)
        groups = peek_groups(a.queue(settings.request_queue), 4)
        by_client = {g: sum(1 for x in groups.values() if x == g) for g in set(groups.values())}
        assert by_client == {a.reply_queue.name: 1, b.reply_queue.name: 3}
        assert a.group_id != b.group_id
        # And the jobs are answered as before
        start_worker()
        sender.join(timeout=60)
        assert [j.result(timeout=0)["min"] for j in many] == [0, 1, 2]


def test_an_answer_to_an_id_never_sent_is_counted_as_a_stray(lab):
    # Given a client waiting for one job of its own
    job = lab.track("mine", "numbers")
    # When its reply queue gets an answer for an id it never sent, then its own answer
    lab.reply_queue.send(JobResult.success("someone-elses", "numbers", {"count": 1}).encode())
    lab.reply_queue.send(JobResult.success("mine", "numbers", {"count": 2}).encode())
    # Then its own job resolves, and the other answer is counted as a stray (what the class scenario calls
    # misdelivered), not as a duplicate
    assert job.result(timeout=30) == {"count": 2}
    wait_for(lambda: lab.replies.strays == 1, 10, "the stray answer to be counted")
    assert lab.duplicates == 0


def test_class_scenario_answers_every_job_to_its_own_client(emulator, settings):
    # Given a small class: 1 heavy client (a process of its own) and 5 light ones (threads, a Lab each)
    plan = bench.ClassPlan(clients=6, heavy_jobs=150, light_jobs=3, think=0.05, lead=0.2)
    # When the scenario runs on the emulator
    run = bench.run_class(plan, settings=settings)
    # Then every phase ran, every job was answered, each to the client that sent it
    assert set(run.results) == {"light_alone", "heavy_alone", "heavy_alone_all", "light_with_heavy",
                                "heavy_with_light", "heavy_with_light_all"}
    for name in ("light_alone", "heavy_alone", "light_with_heavy", "heavy_with_light"):
        res = run.results[name]
        assert res.correct == res.jobs, f"{name}: {res.correct} of {res.jobs} right"
        assert run.lost[name] == 0 and run.misdelivered[name] == 0
    assert run.results["light_alone"].jobs == 5 * 3 and run.results["heavy_with_light"].jobs == 150
    # And the phase with everyone counted the calls of every process, by who made them
    every = run.results["heavy_with_light_all"]
    assert every.jobs == 150 + 15
    who = every.extra["calls_by_process"]
    assert set(who) == {"workers", "heavy client", "light clients"}
    assert sum(sum(c.values()) for c in who.values()) == every.api_calls
    assert who["light clients"]["sqs.SendMessage"] == 15  # a light client sends one job at a time
    # And the table has its columns and both targets; the figure renders
    table = bench.format_class_table(run)
    for column in ("phase", "jobs", "p50 ms", "p95 ms", "calls/job", "lost", "misdelivered"):
        assert column in table
    for row in ("light clients alone", "heavy client alone", "light, heavy running", "heavy, light running",
                "all 6 at once", "heavy running / alone", "API calls per job, 6 clients at once"):
        assert row in table
    assert png_bytes(bench.class_figure(run)).startswith(b"\x89PNG")


def test_bench_clients_needs_two(settings, tmp_path):
    # A class of one is a user mistake: one line, exit status 1, no traceback
    out = labkit("bench", "--clients", "1", s=settings)
    assert out.returncode == 1
    assert "--clients needs at least 2" in out.stderr and "Traceback" not in out.stderr


def test_a_client_deletes_the_replies_it_read_in_tens_not_one_by_one(lab, start_worker):
    # Given a worker, and a client that holds the deletes of the replies it read for up to 5 s
    start_worker()
    lab.replies.delete_after = 5.0
    lab.numbers([0]).result(timeout=60)  # its reply queue made, the worker warm
    wait_for(lambda: lab.reply_queue.depth()["in_flight"] == 0, 30, "the warm-up reply to be deleted")
    before = lab.clients.counter.snapshot().get("sqs.DeleteMessageBatch", 0)
    # When it sends three jobs one at a time, as a student does
    for i in range(3):
        assert lab.numbers([i, i + 1]).result(timeout=60)["min"] == i
    # Then the three replies are deleted by one call, once the first has waited its 5 s
    wait_for(lambda: lab.reply_queue.depth()["in_flight"] == 0, 30, "the replies read to be deleted")
    assert lab.clients.counter.snapshot().get("sqs.DeleteMessageBatch", 0) - before == 1
    assert lab.reply_queue.depth()["visible"] == 0 and lab.duplicates == 0
