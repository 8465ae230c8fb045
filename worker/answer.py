"""One message in, one answer out: decode the body once, run its kind's handler, and say what to reply
and where. Never raises: every failure becomes an error reply, or (no usable reply queue, AWS
unreachable) no reply, so that the request comes back and, in the end, goes to its dead-letter queue.
"""

from __future__ import annotations

import logging
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlparse

from labkit import kinds
from labkit.aws.queues import Message, Queue
from labkit.aws.storage import Bucket
from labkit.config import REPLY_QUEUE_PREFIX, Settings
from labkit.errors import INTERNAL, JobError, ProtocolError
from labkit.jobs.numbers import format_legacy_error
from labkit.protocol import JobRequest, JobResult, encode_result, load_payload, peek, read_request
from worker.memory import MemoryBudget
from worker.outage import OutageLog, is_transient, short

log = logging.getLogger("labkit.worker")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}(\.fifo)?$")


@dataclass
class Source:
    """A lane this worker consumes: its request queue, its default reply queue, its visibility timeout."""

    lane: kinds.Lane
    queue: Queue
    default_reply: Queue
    visibility: int  # the queue's own visibility timeout, read at start


@dataclass
class Outcome:
    """What to do with one received message once its job has run."""

    message: Message
    reply_to: str | None  # queue URL; None: no reply can be sent (the message goes back, then to dead letters)
    body: str | None
    summary: str  # the job's log line
    job_id: str | None = None


@dataclass
class WorkerStats:
    jobs: int = 0
    errors: int = 0
    unanswerable: int = 0
    abandoned: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Answerer:
    """Turns a message into an :class:`Outcome` for the worker called ``name``."""

    def __init__(self, settings: Settings, bucket: Bucket, name: str, stats: WorkerStats, outage: OutageLog) -> None:
        self.settings = settings
        self.bucket = bucket
        self.name = name
        self.stats = stats
        self.outage = outage
        self.ctx = kinds.Context(settings, bucket)
        self.memory = MemoryBudget.detect()  # claim-check payloads are held to it (worker/memory.py)
        self._allowed_replies = set(kinds.reply_queues(settings).values())

    def process(self, src: Source, m: Message, received: float) -> Outcome:
        """Run one message's job. Never raises: every failure becomes an error reply (or none)."""
        try:
            try:
                req = read_request(m.body)
            except ProtocolError as exc:
                return self._undecodable(src, m, exc)
            return self._legacy(src, m) if req is None else self._job(src, m, req, received)
        except Exception as exc:
            if is_transient(exc):  # AWS unreachable mid-job (S3, say): no answer now; the job runs again
                self.outage.lost(exc, f"running the job of message {m.message_id}")
                return Outcome(m, None, None, f"job sqs:{m.message_id} not done: AWS unreachable "
                               "(it will be retried)")
            # A bug: answer "internal" rather than leave the sender waiting.
            log.exception("unexpected error on message %s", m.message_id)
            return self.error_outcome(src, m, f"the worker failed unexpectedly: {short(exc, 200)}",
                                      f"unexpected {type(exc).__name__}")

    def _legacy(self, src: Source, m: Message) -> Outcome:
        t0 = time.perf_counter()
        try:
            body, ok = src.lane.legacy_handler()(m.body, self.ctx), True
        except JobError as exc:
            body, ok = format_legacy_error(str(exc)), False
        dt = time.perf_counter() - t0
        self.stats.jobs += 1
        self.stats.errors += not ok
        return Outcome(m, src.default_reply.url, body, f"job legacy-{src.lane.name} ok={str(ok).lower()} "
                       f"compute={dt:.4f}s reply={src.default_reply.name}")

    def _undecodable(self, src: Source, m: Message, exc: ProtocolError) -> Outcome:
        p = exc.partial
        url = self.reply_url(p.get("reply_to"), src)
        job_id = p.get("id") or f"sqs:{m.message_id}"
        res = JobResult.failure(job_id, p.get("kind"), exc.code, str(exc), worker=self.name)
        self.stats.errors += 1
        return Outcome(m, url, res.encode(), _summary(job_id, p.get("kind"), f"ok=false code={exc.code} {exc}", url),
                       job_id)

    def _job(self, src: Source, m: Message, req: JobRequest, received: float) -> Outcome:
        url = self.reply_url(req.reply_to, src)
        sent = req.sent_at or m.sent_at
        queued = max(0.0, received - sent) if sent else 0.0
        t0 = time.perf_counter()
        try:
            handler = kinds.get_kind(req.kind).handler()
            with self.memory.hold(req, self.bucket):
                payload = load_payload(req, self.bucket, self.settings.max_payload_bytes)
                result = handler(payload, kinds.Context(self.settings, self.bucket, req.id))
            dt = time.perf_counter() - t0
            res = JobResult.success(req.id, req.kind, result, worker=self.name,
                                    timings={"queued_s": round(queued, 6), "compute_s": round(dt, 6)})
        except JobError as exc:
            dt = time.perf_counter() - t0
            res = JobResult.failure(req.id, req.kind, exc.code, str(exc), worker=self.name,
                                    timings={"queued_s": round(queued, 6), "compute_s": round(dt, 6)})
        self.stats.jobs += 1
        self.stats.errors += not res.ok
        self.stats.by_kind[req.kind] += 1
        status = "ok=true" if res.ok else f"ok=false code={res.error['code']}"  # type: ignore[index]
        summary = _summary(req.id, req.kind, f"{status} queued={queued:.3f}s compute={dt:.4f}s", url)
        return Outcome(m, url, encode_result(res, self.bucket, self.settings.max_inline_bytes), summary, req.id)

    def error_outcome(self, src: Source, m: Message, message: str, why: str) -> Outcome:
        """An ``internal`` error reply to whatever address can be read from the message (best effort)."""
        fields = peek(m.body)
        if fields is None:  # plain text: the original lab's error form, on the default reply queue
            return Outcome(m, src.default_reply.url, format_legacy_error(message),
                           f"job legacy-{src.lane.name} ok=false code=internal ({why})")
        job_id = fields.get("id") or f"sqs:{m.message_id}"
        url = self.reply_url(fields.get("reply_to"), src)
        res = JobResult.failure(job_id, fields.get("kind"), INTERNAL, message, worker=self.name)
        self.stats.errors += 1
        return Outcome(m, url, res.encode(), _summary(job_id, fields.get("kind"), f"ok=false code=internal ({why})",
                                                      url), job_id)

    def reply_url(self, reply_to: str | None, src: Source) -> str | None:
        """Where a reply goes: ``reply_to`` if it names a labkit reply queue, else the default.

        Only labkit's own response queues and ``labkit-reply-*`` queues are accepted, so a message
        cannot make the worker write into any other queue (its own request queue, say). An unusable
        ``reply_to`` gives None: the request cannot be answered and goes to the dead-letter queue.
        """
        if reply_to is None:
            return src.default_reply.url
        try:
            parsed = urlparse(reply_to)
        except ValueError:
            return None
        name = parsed.path.rstrip("/").rsplit("/", 1)[-1]
        if parsed.scheme not in ("http", "https") or not QUEUE_NAME.match(name):
            return None
        if name in self._allowed_replies or name.startswith(REPLY_QUEUE_PREFIX):
            return reply_to
        return None


def _summary(job_id: str, kind: str | None, status: str, reply_url: str | None) -> str:
    text = f"job {job_id} kind={kind or '?'} {status}"
    return text if reply_url else text + " reply=none (it goes to the dead-letter queue after its last receive)"
