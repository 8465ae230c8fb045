"""The floor: a request queue configured like labkit's, driven by the fewest possible calls with no
labkit code in the message path: plain JSON bodies, statistics from Python's ``statistics``, and only
labkit's thin transport wrappers (:class:`~labkit.aws.queues.Queue`: one SQS call per method call for a
batch of up to 10, no attributes asked). Client side (:func:`floor`) and serving loop (:func:`serve_floor`).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.bench.answers import matches, number_lists, plain_stats
from labkit.bench.counts import CountedProcess
from labkit.bench.drive import drive
from labkit.bench.report import Result
from labkit.bench.rig import Rig
from labkit.errors import LabkitError
from labkit.waiting import poll

QUEUE = "floor-requests"
COPIED_ATTRIBUTES = ("VisibilityTimeout", "ReceiveMessageWaitTimeSeconds", "MessageRetentionPeriod", "RedrivePolicy")
CLIENT_WAIT = 5  # seconds each receive of the client's reply queue may wait


def floor_queue(rig: Rig) -> Queue:
    """The floor's request queue: labkit's request queue's attributes (dead-letter redrive too)."""
    if QUEUE not in rig.queues:
        like = Queue.by_name(rig.clients.sqs, rig.settings.request_queue).attributes(*COPIED_ATTRIBUTES)
        rig.create_queue(QUEUE, like)
    return rig.queues[QUEUE]


def floor_servers(rig: Rig, n: int) -> list[CountedProcess]:
    """``n`` floor server processes on the floor's request queue."""
    name = floor_queue(rig).name
    return rig.spawn_many([("serve", "floor", "--queue", name)] * n)


def floor(rig: Rig, jobs: int, window: int, workers: int = 1,
          servers: Sequence[CountedProcess] | None = None, seed: int = 1) -> Result:
    """``jobs`` number jobs through the floor with the given window (``workers`` server processes, or
    ``servers`` already running)."""
    lists = number_lists(jobs, seed=seed)
    own = servers is None
    servers = floor_servers(rig, workers) if servers is None else servers
    clients = Clients(rig.settings)  # its own counter: what the meter counts is the floor's alone
    request = Queue(clients.sqs, floor_queue(rig).url)
    reply = Queue(clients.sqs, rig.reply_queue("floor").url)
    answers: dict[int, Any] = {}

    def send(group: list[int]) -> None:
        failed = request.send_batch([json.dumps({"id": i, "reply_to": reply.url, "numbers": lists[i]})
                                     for i in group])
        if failed:
            raise LabkitError(f"floor: send refused: {failed}")

    def receive() -> list[int]:
        msgs = reply.receive(10, wait=CLIENT_WAIT, receive_count=False)
        if not msgs:
            return []
        reply.delete_batch([m.receipt for m in msgs])
        out = []
        for m in msgs:
            body = json.loads(m.body)
            answers[body["id"]] = body["result"]
            out.append(body["id"])
        return out

    try:
        calls = rig.meter(servers, clients)
        calls.start()
        seconds, latencies = drive(jobs, window, send, receive)
        counted = calls.stop()
    finally:
        if own:
            rig.stop(servers)
    correct = sum(matches(answers.get(i), plain_stats(v)) for i, v in enumerate(lists))
    return Result("floor", jobs, seconds, correct, counted, latencies, {"window": window, "workers": len(servers)},
                  calls.cpu)


class FloorAsker:
    """The floor's client one job at a time (``asker(values)`` -> the result): send the job, long-poll a
    reply queue of its own until the answer is there, delete it. Its calls are counted apart."""

    def __init__(self, rig: Rig) -> None:
        self.clients = Clients(rig.settings)
        self.request = Queue(self.clients.sqs, floor_queue(rig).url)
        self.reply = Queue(self.clients.sqs, rig.reply_queue("floor-rt").url)
        self.sent = 0

    def __call__(self, values: list[int]) -> Any:
        self.sent += 1
        self.request.send(json.dumps({"id": self.sent, "reply_to": self.reply.url, "numbers": values}))
        return _await_answer(self.reply, self.sent)


def _await_answer(reply: Queue, job: int, timeout: float = 60.0) -> Any:
    """Long-poll ``reply`` until the answer to job ``job`` arrives; delete what came; return its result."""
    for _ in poll(0.0, timeout):  # each receive waits on its own (long poll)
        msgs = reply.receive(10, wait=CLIENT_WAIT, receive_count=False)
        if msgs:
            reply.delete_batch([m.receipt for m in msgs])
        for m in msgs:
            body = json.loads(m.body)
            if body["id"] == job:
                return body["result"]
    raise LabkitError(f"floor: no answer to round trip job {job} in {timeout:.0f} s")


def serve_floor(requests: Queue, stop: threading.Event, wait: int = 1) -> None:
    """The floor's worker: receive 10, answer, one reply batch per reply queue, one delete batch."""
    while not stop.is_set():
        msgs = requests.receive(10, wait=wait, receive_count=False)
        if not msgs:
            continue
        replies: dict[str, list[str]] = defaultdict(list)
        for m in msgs:
            body = json.loads(m.body)
            replies[body["reply_to"]].append(json.dumps({"id": body["id"], "result": plain_stats(body["numbers"])}))
        for reply_url, bodies in replies.items():
            Queue(requests.sqs, reply_url).send_batch(bodies)
        requests.delete_batch([m.receipt for m in msgs])
