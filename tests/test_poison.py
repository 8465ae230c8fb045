"""Poison input: 150 bad messages mixed into 500 good ones, sent to real workers through the emulator.

Every good job gets its right result; every poison message gets an error reply where a reply queue is
known (its ``reply_to``, or the kind's default queue), and otherwise lands in the dead-letter queue
after the redrive count, never cycling (or, addressed to a client's reply queue that is gone, is dropped:
its answer can never be read); the workers never exit.

Invalid UTF-8 cannot travel in an SQS body (the API takes text; real SQS refuses invalid characters,
and moto stores a lone surrogate and then fails every receive on that queue with HTTP 500), so it
reaches the worker the way raw bytes can: in an S3 claim-check payload.
"""

from __future__ import annotations

import io
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.aws.storage import Bucket
from labkit.config import DLQ_SUFFIX
from labkit.errors import InvalidInput
from labkit.jobs.numbers import compute
from labkit.protocol import JobRequest, JobResult

GOOD = 500
POISON = 150  # 30% of 500
WINDOW = 40  # answerable messages outstanding at most (the emulator slows down as queues fill)
KIB = 1024


@dataclass
class Case:
    """One message to send and what must come of it."""

    body: str
    queue: str  # "numbers" or "images"
    expect: str  # "result", "error" (JSON reply), "legacy_error" (text reply), "dead_letter", "dropped"
    reply: str = "mine"  # where the JSON reply goes: "mine" (reply_to) or "default"
    codes: tuple[str, ...] = ()
    job_id: str | None = None  # None: the worker names it sqs:<message id>
    median: int | None = None
    name: str = ""


@dataclass
class World:
    """What the poison templates need to know."""

    reply_to: str
    missing_reply_to: str
    request_url: str
    bucket: Bucket
    seq: int = 0

    def next_id(self) -> str:
        self.seq += 1
        return f"poison-{self.seq}"


def _req(w: World, job_id: str | None, **fields: Any) -> str:
    d: dict[str, Any] = {"v": 1, "kind": "numbers", "reply_to": w.reply_to, "payload": {"numbers": [1, 2]}}
    if job_id is not None:
        d["id"] = job_id
    d.update(fields)
    return json.dumps({k: v for k, v in d.items() if v is not DROP})


DROP = object()


def _error(code: str | tuple[str, ...], reply: str = "mine", queue: str = "numbers",
           with_id: bool = True, **fields: Any) -> Callable[[World], Case]:
    codes = (code,) if isinstance(code, str) else code

    def make(w: World) -> Case:
        job_id = w.next_id() if with_id else None
        return Case(_req(w, job_id, **fields), queue, "error", reply, codes, job_id)
    return make


def _legacy(text: str, queue: str = "numbers") -> Callable[[World], Case]:
    return lambda w: Case(text, queue, "legacy_error")


def _dead(**fields: Any) -> Callable[[World], Case]:
    return lambda w: Case(_req(w, w.next_id(), **fields), "numbers", "dead_letter")


def _literal(numbers: str, codes: tuple[str, ...] = ("invalid_input",)) -> Callable[[World], Case]:
    """A request whose numbers list is written as raw JSON text (literals json.dumps would never write)."""
    def make(w: World) -> Case:
        job_id = w.next_id()
        body = _req(w, job_id, payload={"numbers": "LITERAL"}).replace('"LITERAL"', f"[{numbers}]")
        return Case(body, "numbers", "error", "mine", codes, job_id)
    return make


def _bad_utf8_payload(w: World) -> Case:
    job_id = w.next_id()
    key = f"payloads/{job_id}.json"
    w.bucket.put(key, b'{"numbers": [1, "\xff\xfe\xfa"]}', "application/json")
    return Case(_req(w, job_id, payload=DROP, payload_ref={"bucket": w.bucket.name, "key": key}),
                "numbers", "error", codes=("invalid_input",), job_id=job_id)


def _image(key: str, code: str = "invalid_input", **extra: Any) -> Callable[[World], Case]:
    def make(w: World) -> Case:
        job_id = w.next_id()
        payload = {"bucket": w.bucket.name, "key": key, "ops": [{"op": "grayscale"}], **extra}
        return Case(_req(w, job_id, kind="image", payload=payload), "images", "error", codes=(code,), job_id=job_id)
    return make


TEMPLATES: list[Callable[[World], Case]] = [
    # Not a JSON object: the original lab's plain-text form, answered with "?Error" on the default queue.
    _legacy('{"v": 1, "id": "cut-short", "kind": "numbers"'),
    _legacy('["a", "b"]'),
    _legacy('"just a string"'),
    _legacy("null"),
    _legacy("   "),
    _legacy("[" * 100_000),  # deeper than any JSON parser recursion
    _legacy("x" * 900 * KIB),  # a 900 KiB body
    _legacy("../../etc/passwd", queue="images"),  # a plain image name escaping its prefix
    # JSON objects that are not valid requests: an error reply, correlated by id.
    _error("invalid_input", v=DROP),
    _error("unsupported_version", v=2),
    _error("unsupported_version", v="1"),
    _error("invalid_input", with_id=False),
    _error("invalid_input", with_id=False, id=12345),
    _error("invalid_input", kind=DROP),
    _error("invalid_input", kind=["numbers"]),
    _error("unknown_kind", kind="teapot"),
    _error("invalid_input", payload=[1, 2]),
    _error("invalid_input", payload={"numbers": {"a": 1}}),
    _error("invalid_input", payload={"numbers": ["1", "2", "3"]}),  # numbers as strings
    _error("invalid_input", payload={"numbers": [1, 10**400]}),  # beyond 64 bits
    # An integer literal beyond Python's 4300-digit conversion limit: still a clear invalid_input.
    _literal("9" * 5000),
    _literal("1, NaN"),
    _literal("-Infinity"),
    _error("invalid_input", payload={"numbers": ["9" * (900 * KIB)]}),  # a 900 KiB request
    _error("invalid_input", reply="default", reply_to=42),  # reply_to of the wrong type
    _error("invalid_input", reply="default", with_id=False, reply_to=DROP, v=True, id=[], kind={}, payload="x"),
    _bad_utf8_payload,
    _error("not_found", payload=DROP, payload_ref={"bucket": "BUCKET", "key": "payloads/nothing-here.json"}),
    _error("invalid_input", payload=DROP, payload_ref={"bucket": "b", "key": "images/unprocessed/x.json"}),
    _error("invalid_input", payload=DROP, payload_ref={"bucket": "b", "key": "payloads/../secret.json"}),
    _image("images/unprocessed/../../payloads/x.json"),
    _image("../secret.txt"),
    _image("images/unprocessed/cat.png", output="../../logs/evil.png"),
    _image("images/unprocessed/never-uploaded.png", code="not_found"),
    # No usable reply queue: retried, then dead-lettered.
    _dead(reply_to="not a url"),
    _dead(reply_to="ftp://127.0.0.1/123456789012/labkit-reply-x"),
    # A labkit reply queue's name, at home in another account, or in another region: not run, dead-lettered (before:
    # answered, into the queue of that name in the worker's own account).
    lambda w: Case(_req(w, w.next_id(), reply_to=w.reply_to.replace("/123456789012/", "/210987654321/")), "numbers",
                   "dead_letter"),
    lambda w: Case(_req(w, w.next_id(), reply_to="https://sqs.eu-west-1.amazonaws.com/123456789012/"
                        + w.reply_to.rsplit("/", 1)[-1]), "numbers", "dead_letter"),
    # A client's reply queue that is gone: the answer is dropped, the request deleted (no dead letter).
    lambda w: Case(_req(w, w.next_id(), reply_to=w.missing_reply_to), "numbers", "dropped"),
    lambda w: Case(_req(w, w.next_id(), reply_to=w.request_url), "numbers", "dead_letter"),
]


def _tiny_png() -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buf, "PNG")
    return buf.getvalue()


def build_cases(w: World) -> list[Case]:
    rng = random.Random(6)
    cases = [Case(_req(w, f"good-{i}", payload={"numbers": [i, i + 1, i + 2]}), "numbers", "result",
                  job_id=f"good-{i}", median=i + 1, name="good") for i in range(GOOD)]
    for n in range(POISON):
        template = TEMPLATES[n % len(TEMPLATES)]
        case = template(w)
        case.body = case.body.replace('"BUCKET"', json.dumps(w.bucket.name))
        case.name = f"template {n % len(TEMPLATES)}"
        cases.append(case)
    rng.shuffle(cases)
    return cases


class Collector:
    """Consumes a reply queue on a thread, keeping every body."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.bodies: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = self.queue.receive(10, wait=1)
            if msgs:
                with self._lock:
                    self.bodies += [m.body for m in msgs]
                self.queue.delete_batch([m.receipt for m in msgs])

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.bodies)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.slow
def test_poison_mixed_into_good_jobs(make_settings, start_worker):
    # Given queues that dead-letter after 2 receives, two workers, and our own reply queue
    s = make_settings(max_receive_count=2)
    clients = Clients(s)
    sqs = clients.sqs
    queues = {"numbers": Queue.by_name(sqs, s.request_queue), "images": Queue.by_name(sqs, s.image_inbox)}
    dlqs = {k: Queue.by_name(sqs, q.name + DLQ_SUFFIX) for k, q in queues.items()}
    mine = Queue(sqs, sqs.create_queue(QueueName=f"labkit-reply-poison-{s.bucket}")["QueueUrl"])
    defaults = {"numbers": Queue.by_name(sqs, s.response_queue), "images": Queue.by_name(sqs, s.image_outbox)}
    world = World(mine.url, mine.url.rsplit("/", 1)[0] + "/labkit-reply-gone-long-ago", queues["numbers"].url,
                  Bucket(clients.s3, s.bucket))
    world.bucket.put("images/unprocessed/cat.png", _tiny_png(), "image/png")  # a real source for the bad output
    workers = [start_worker("--concurrency", "4", s=s) for _ in range(2)]
    collectors = {"mine": Collector(mine), "numbers": Collector(defaults["numbers"]),
                  "images": Collector(defaults["images"])}
    cases = build_cases(world)
    before = {o.key for o in world.bucket.list("")}
    answerable = [c for c in cases if c.expect not in ("dead_letter", "dropped")]

    # When they are all sent, at most WINDOW unanswered at a time
    def answered() -> int:
        return sum(len(c.snapshot()) for c in collectors.values())

    sent_answerable = 0
    for case in cases:
        while sent_answerable - answered() >= WINDOW:
            time.sleep(0.02)
        mid = queues[case.queue].send(case.body)
        if case.job_id is None:
            case.job_id = f"sqs:{mid}"
        sent_answerable += case.expect not in ("dead_letter", "dropped")
    dead = [c for c in cases if c.expect == "dead_letter"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        depths = [q.depth() for q in queues.values()]
        if (answered() >= len(answerable) and dlqs["numbers"].depth()["visible"] >= len(dead)
                and all(d["visible"] + d["in_flight"] == 0 for d in depths)):
            break
        time.sleep(0.5)
    time.sleep(1)  # let a late duplicate show
    for c in collectors.values():
        c.stop()

    # Then every good job has its right result and every answerable poison its error reply, once
    replies: dict[str, list[JobResult]] = {}
    for where in ("mine", "numbers", "images"):
        for body in collectors[where].snapshot():
            if body.startswith("?Error"):
                continue
            reply = JobResult.decode(body)
            replies.setdefault(reply.id, []).append(reply)
    by_id = {c.job_id: c for c in answerable if c.expect in ("result", "error")}
    assert set(replies) == set(by_id), f"unexpected: {set(replies) - set(by_id)}, missing: {set(by_id) - set(replies)}"
    duplicates = sum(len(r) - 1 for r in replies.values())
    for job_id, case in by_id.items():
        reply = replies[job_id][0]
        if case.expect == "result":
            assert reply.ok and reply.result["median"] == case.median, (case.name, reply)
        else:
            assert not reply.ok and reply.error["code"] in case.codes, (case.name, case.body[:200], reply.error)
    # And where no reply queue was given, the error went to the kind's default queue
    defaulted = {JobResult.decode(b).id for b in collectors["numbers"].snapshot() if not b.startswith("?Error")}
    assert defaulted == {c.job_id for c in answerable if c.expect == "error" and c.reply == "default"}
    # And plain-text poison got the original lab's "?Error" replies on the default queues
    for kind in ("numbers", "images"):
        texts = [b for b in collectors[kind].snapshot() if b.startswith("?Error")]
        assert len(texts) >= sum(1 for c in answerable if c.expect == "legacy_error" and c.queue == kind)
        assert all(len(t) < 1000 for t in texts)  # the error names the bad item, it does not echo 900 KiB
    # And the unanswerable ones are in the dead-letter queue (all, and only them), and nothing is left cycling
    in_dlq = Counter(m.body for m in dlqs["numbers"].drain(max_messages=100))
    assert set(in_dlq) == {c.body for c in dead}
    assert dlqs["images"].depth()["visible"] == 0
    # And the ones addressed to a gone reply queue were dropped, each counted once in the workers' logs
    dropped = re.findall(r"dropped the answer of (\d+) job", "".join(w.output for w in workers))
    assert sum(map(int, dropped)) == sum(1 for c in cases if c.expect == "dropped")
    for q in queues.values():
        assert q.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    # And nothing was written outside images/processed/ (no bad key got through)
    written = {o.key for o in world.bucket.list("")} - before
    assert all(k.startswith("images/processed/") for k in written), written
    # And the workers never exited; any traceback is the catch-all's (an "internal" reply), not a crash
    for w in workers:
        assert w.proc.poll() is None
        out = w.output
        assert out.count("Traceback") == out.count("unexpected error on message")
    internal = sum(1 for r in replies.values() if not r[0].ok and r[0].error["code"] == "internal")
    legacy_errors = sum(1 for k in ("numbers", "images") for b in collectors[k].snapshot() if b.startswith("?Error"))
    print(f"\n[fault-report] 5 poison: sent={len(cases)} (good={GOOD}, poison={POISON}), "
          f"results_received={len(replies) + legacy_errors}, duplicates_dropped={duplicates}, "
          f"dead_letters={sum(in_dlq.values())}, internal_errors={internal}", flush=True)


def test_huge_integer_literal_is_decoded_and_refused_by_name():
    # Python's int() refuses literals over 4300 digits; the request must still decode (so it can be
    # answered on its reply queue) and the job must name the bad item.
    body = '{"v": 1, "id": "a", "kind": "numbers", "payload": {"numbers": [1, %s]}}' % ("9" * 5000)
    req = JobRequest.decode(body)
    with pytest.raises(InvalidInput, match="item 2 is an integer too large for 64 bits"):
        compute(req.payload["numbers"])

