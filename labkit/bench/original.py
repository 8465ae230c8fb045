"""The original lab's pattern, reimplemented for reference: its queue settings (1 s delivery delay, 1 s
polls, 1 s visibility) and call pattern (a queue lookup and a send per job, one send per reply, plain-text
bodies without ids). Client side (:func:`original`, :func:`original_round_trip`) and serving loop
(:func:`serve_original`); like the floor, it uses only labkit's thin transport wrappers."""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict

from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.bench.answers import number_lists
from labkit.bench.counts import CountedProcess
from labkit.bench.drive import drive
from labkit.bench.report import Result
from labkit.bench.rig import Rig
from labkit.waiting import poll

# The original lab's queue attributes (its create-queue.json).
ORIGINAL_ATTRIBUTES = {"DelaySeconds": "1", "MessageRetentionPeriod": "3600",
                       "ReceiveMessageWaitTimeSeconds": "1", "VisibilityTimeout": "1"}
ANSWER_TIMEOUT = 60  # seconds the round trip polls for one answer


def original_reply(text: str) -> str:
    """The original worker's answer to ``1,5,22``."""
    values = sorted(int(x) for x in text.split(","))
    return (f"The list minimum is : {values[0]} \nThe list maximum is : {values[-1]} \n"
            f"The list average is : {statistics.mean(values)} \nThe list median is : {statistics.median(values)}")


class OriginalClient:
    """The original client's calls: a queue lookup and a send per job; a lookup, a receive (the queue's
    1 s wait) and a batched delete per poll. Replies carry no id: they are matched by content."""

    def __init__(self, clients: Clients, request_name: str, response_name: str) -> None:
        self.sqs = clients.sqs
        self.request_name = request_name
        self.response_name = response_name

    def send(self, body: str) -> None:
        Queue.by_name(self.sqs, self.request_name).send(body, delay=None)

    def poll(self) -> list[str]:
        queue = Queue.by_name(self.sqs, self.response_name)
        msgs = queue.receive(10, wait=None, receive_count=False)
        if msgs:
            queue.delete_batch([m.receipt for m in msgs])
        return [m.body for m in msgs]


def _start(rig: Rig) -> tuple[CountedProcess, Clients, OriginalClient]:
    """The original queues (made once per run), a server process on them and a client of its own."""
    req = rig.create_queue("orig-requestQueue", ORIGINAL_ATTRIBUTES)
    resp = rig.create_queue("orig-responseQueue", ORIGINAL_ATTRIBUTES)
    server = rig.spawn("serve", "original", "--queue", req.name, "--reply", resp.name)
    clients = Clients(rig.settings)
    return server, clients, OriginalClient(clients, req.name, resp.name)


def original(rig: Rig, jobs: int, window: int) -> Result:
    """The original pattern with the same window, for reference."""
    lists = number_lists(jobs, seed=4)
    server, clients, client = _start(rig)
    # No correlation id in the original replies: any reply whose text matches a pending job's answer
    # completes one such job (identical answers are interchangeable).
    pending: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()
    expected = [original_reply(",".join(map(str, v))) for v in lists]
    unexpected: list[str] = []

    def send(group: list[int]) -> None:
        for i in group:
            with lock:
                pending[expected[i]].append(i)
            client.send(",".join(map(str, lists[i])))

    def receive() -> list[int]:
        out = []
        for body in client.poll():
            with lock:
                waiting = pending.get(body)
                if waiting:
                    out.append(waiting.pop(0))
                else:
                    unexpected.append(body)
        return out

    try:
        calls = rig.meter([server], clients)
        calls.start()
        seconds, latencies = drive(jobs, window, send, receive, batch=1)
        counted = calls.stop()
    finally:
        rig.stop([server])
    correct = jobs - sum(x != x for x in latencies)
    return Result("original", jobs, seconds, correct, counted, latencies,
                  {"window": window, "unexpected_replies": len(unexpected)}, calls.cpu)


def original_round_trip(rig: Rig, jobs: int) -> Result:
    """The original client: send one job, poll until its answer arrives, next."""
    lists = number_lists(jobs, seed=5)
    server, clients, client = _start(rig)
    try:
        calls = rig.meter([server], clients)
        calls.start()
        latencies, correct = [], 0
        t0 = time.perf_counter()
        for values in lists:
            t = time.perf_counter()
            client.send(",".join(map(str, values)))
            bodies: list[str] = []
            for _ in poll(0, ANSWER_TIMEOUT):  # each poll waits up to the queue's 1 s itself
                bodies = client.poll()
                if bodies:
                    break
            latencies.append(time.perf_counter() - t)
            correct += bodies == [original_reply(",".join(map(str, values)))]
        seconds = time.perf_counter() - t0
        counted = calls.stop()
    finally:
        rig.stop([server])
    return Result("original_round_trip", jobs, seconds, correct, counted, latencies, cpu=calls.cpu)


def serve_original(requests: Queue, replies: Queue, stop: threading.Event) -> None:
    """The original worker: receive up to 10 (the queue's 1 s wait), delete them, one send per reply."""
    while not stop.is_set():
        msgs = requests.receive(10, wait=None, receive_count=False)
        if not msgs:
            continue
        requests.delete_batch([m.receipt for m in msgs])
        for m in msgs:
            replies.send(original_reply(m.body), delay=None)
