"""One message in, one answer out: decode the body once (:meth:`Answerer.prepare`, which also says whether
the job is small enough to run on the receiving thread), run its kind's handler (:meth:`Answerer.answer`),
and say what to reply and where. Never raises: every failure becomes an error reply, or (no usable reply
queue, AWS unreachable) no reply, so that the request comes back and, in the end, goes to its dead-letter
queue.
"""

from __future__ import annotations

import logging
import re
import sysconfig
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from labkit import kinds, provision
from labkit.aws.clients import Clients
from labkit.aws.queues import Message, Queue
from labkit.aws.storage import Bucket
from labkit.config import REPLY_QUEUE_PREFIX, Settings
from labkit.errors import INTERNAL, UNKNOWN_KIND, JobError, ProtocolError
from labkit.jobs.numbers import format_legacy_error
from labkit.protocol import JobRequest, JobResult, encode_result, load_payload, note_body, peek, read_request
from labkit.timeline import clean, event
from worker.memory import MemoryBudget
from worker.outage import OutageLog, is_transient, short

log = logging.getLogger("labkit.worker")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}(\.fifo)?$")
# SQS's hosts on AWS, each naming its region: sqs.<region>.amazonaws.com (and .com.cn, api.aws, -fips), and the
# legacy <region>.queue.amazonaws.com and queue.amazonaws.com (us-east-1).
AWS_SQS_HOST = re.compile(r"^(?:sqs(?:-fips)?\.(?P<a>[a-z0-9-]+)\.(?:amazonaws\.com(?:\.cn)?|api\.aws)"
                          r"|(?P<b>[a-z0-9-]+)\.queue\.amazonaws\.com(?:\.cn)?|queue\.amazonaws\.com)$")
REPLY_URLS_KEPT = 4096  # reply queue URLs remembered as checked


@dataclass
class Source:
    """A queue this worker consumes: a lane's request queue, or the queue of a kind of one's own on that lane (its
    ``kind``); its default reply queue, its visibility timeout."""

    lane: kinds.Lane
    queue: Queue
    default_reply: Queue
    visibility: int  # the queue's own visibility timeout, read at start
    kind: str | None = None  # a kind queue's kind (docs/protocol.md, "Your own job kinds")

    @property
    def label(self) -> str:
        """The name its loop goes by (threads, health): the lane's, or ``<lane>:<kind>``."""
        return self.lane.name if self.kind is None else f"{self.lane.name}:{self.kind}"


def kind_sources(clients: Clients, lanes: list[Source], visibility: Callable[[Queue], int | None]) -> list[Source]:
    """The queues of the kinds of one's own this worker loaded whose lane it serves (one of ``lanes``), each made
    when missing (:func:`labkit.provision.ensure_kind_queue`): only workers that load a kind read its queue.
    ``visibility`` reads a queue's own visibility timeout (None: the lane's)."""
    by_lane = {src.lane.name: src for src in lanes}
    out = []
    for kind in kinds.own_kinds(by_lane):
        lane = by_lane[kind.lane]
        queue, _ = provision.ensure_kind_queue(clients, kind.name)
        out.append(Source(lane.lane, queue, lane.default_reply, visibility(queue) or lane.visibility, kind.name))
    return out


@dataclass(eq=False, slots=True)
class Prepared:
    """A received message, its body decoded once: the request (None for the original lab's plain text),
    or why it cannot be read. ``inline``: small enough to run on the receiving thread."""

    message: Message
    request: JobRequest | None = None
    error: Exception | None = None  # a ProtocolError, or a bug met while decoding
    inline: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)  # this delivery's life so far (labkit.timeline)


@dataclass(eq=False, slots=True)  # compared by identity: the loop sorts outcomes into answered and not
class Outcome:
    """What to do with one received message once its job has run."""

    message: Message
    reply_to: str | None  # queue URL; None: no reply can be sent (the message goes back, then to dead letters)
    body: str | None
    summary: str  # the job's log line
    job_id: str | None = None
    ok: bool = False  # answered with a result (its log line is DEBUG); error replies and no reply are INFO
    result: JobResult | None = None  # a v1 answer, sealed into ``body`` (``replied`` stamped) when it is sent
    ran: bool = False  # a handler ran: a job, counted once its answer is sent (WorkerStats.answered)
    sent_at: float | None = None  # when the client sent the request (its clock), if it said


@dataclass
class WorkerStats:
    """What a worker did. ``jobs`` and ``errors`` count answers sent (a job run again after a failed reply counts
    once); ``reply_queue_gone``: answers dropped because their client's reply queue no longer exists."""

    jobs: int = 0
    errors: int = 0
    reply_queue_gone: int = 0

    def answered(self, outcomes: list[Outcome]) -> None:
        """Count the outcomes whose answers were sent."""
        for o in outcomes:
            self.jobs += o.ran
            self.errors += not o.ok


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
        self._reply_urls: dict[str, str | None] = {}  # reply_to -> checked URL (see reply_url)

    def prepare(self, src: Source, m: Message) -> Prepared:
        """Decode ``m`` once and say whether its job may run inline: a kind (or a lane's plain text) that
        declares ``inline_below``, a body no longer than that, its payload in the message. Errors run
        inline too (an error reply costs microseconds). Never raises."""
        events = self.received(m)
        try:
            req = read_request(m.body)
        except Exception as exc:  # a ProtocolError, or a bug: answer() turns either into an error reply
            return Prepared(m, None, exc, inline=True, events=events)
        if req is None:
            return Prepared(m, None, None, len(m.body) <= src.lane.inline_below, events)
        kind = kinds.find_kind(req.kind)
        small = kind is None or (req.payload_ref is None and len(m.body) <= kind.inline_below)
        return Prepared(m, req, None, small, events if req.history is None else events + clean(req.history))

    def received(self, m: Message) -> list[dict[str, Any]]:
        """This delivery's ``received`` event, after one for the first delivery when this is a later one
        (its time from SQS; whoever held it then did not answer)."""
        now = event("received", time.time(), receive_count=m.receive_count, worker=self.name)
        if m.receive_count > 1 and m.first_received_at:
            return [event("received", m.first_received_at, receive_count=1, inferred=True), now]
        return [now]

    def answer(self, src: Source, p: Prepared, received: float) -> Outcome:
        """Run a prepared message's job. Never raises: every failure becomes an error reply (or none)."""
        m = p.message
        try:
            if isinstance(p.error, ProtocolError):
                return self._undecodable(src, m, p.error, p.events)
            if p.error is not None:
                raise p.error
            return self._legacy(src, m) if p.request is None else self._job(src, p, p.request, received)
        except Exception as exc:
            if is_transient(exc):  # AWS unreachable mid-job (S3, say): no answer now; the job runs again
                self.outage.lost(exc, f"running the job of message {m.message_id}")
                return Outcome(m, None, None, f"job sqs:{m.message_id} not done: AWS unreachable "
                               "(it will be retried)")
            # A bug: answer "internal" rather than leave the sender waiting.
            log.exception("unexpected error on message %s", m.message_id)
            return self.error_outcome(src, m, f"the worker failed unexpectedly: {short(exc, 200)}",
                                      f"unexpected {type(exc).__name__}", p.events)

    def _legacy(self, src: Source, m: Message) -> Outcome:
        t0 = time.perf_counter()
        try:
            body, ok = src.lane.legacy_handler()(m.body, self.ctx), True
        except JobError as exc:
            body, ok = format_legacy_error(str(exc)), False
        dt = time.perf_counter() - t0
        return Outcome(m, src.default_reply.url, body, f"job legacy-{src.lane.name} ok={str(ok).lower()} "
                       f"compute={dt:.4f}s reply={src.default_reply.name}", ok=ok, ran=True)

    def _undecodable(self, src: Source, m: Message, exc: ProtocolError, events: list[dict[str, Any]]) -> Outcome:
        p = exc.partial
        url = self.reply_url(p.get("reply_to"), src)
        job_id = p.get("id") or f"sqs:{m.message_id}"
        res = JobResult.failure(job_id, p.get("kind"), exc.code, str(exc), worker=self.name, events=events)
        return Outcome(m, url, None, _summary(job_id, p.get("kind"), f"ok=false code={exc.code} {exc}", url),
                       job_id, result=res)

    def _job(self, src: Source, p: Prepared, req: JobRequest, received: float) -> Outcome:
        m, events = p.message, p.events
        url = self.reply_url(req.reply_to, src)
        if url is None:  # nowhere this worker may answer: not run at all, and left for the dead-letter queue
            return Outcome(m, None, None, _summary(req.id, req.kind, f"not run: reply_to {req.reply_to!r} is "
                                                   "not a labkit reply queue of this account and region", None),
                           req.id)
        sent = req.sent_at or m.sent_at
        queued = max(0.0, received - sent) if sent else 0.0
        t0 = time.perf_counter()
        events.append(event("started", time.time()))
        try:
            handler = self.known_kind(req.kind, src).handler()
            with self.memory.hold(req, self.bucket):
                payload = load_payload(req, self.bucket, self.settings.max_payload_bytes)
                try:
                    result = handler(payload, kinds.Context(self.settings, self.bucket, req.id))
                except JobError:
                    raise
                except Exception as exc:
                    if is_transient(exc):  # AWS unreachable from inside the handler: the job runs again later
                        raise
                    raise handler_failed(req.kind, req.id, exc) from exc
            dt = time.perf_counter() - t0
            events.append(event("finished", time.time(), ok=True))
            res = JobResult.success(req.id, req.kind, result, worker=self.name, events=events,
                                    timings={"queued_s": round(queued, 6), "compute_s": round(dt, 6)})
        except JobError as exc:
            dt = time.perf_counter() - t0
            events.append(event("finished", time.time(), ok=False))
            res = JobResult.failure(req.id, req.kind, exc.code, str(exc), worker=self.name, events=events,
                                    timings={"queued_s": round(queued, 6), "compute_s": round(dt, 6)})
        status = "ok=true" if res.error is None else f"ok=false code={res.error['code']}"
        line = _summary(req.id, req.kind, f"{status} queued={queued:.3f}s compute={dt:.4f}s", url)
        return Outcome(m, url, None, line, req.id, res.ok, res, True, req.sent_at or None)

    def known_kind(self, name: str, src: Source) -> kinds.Kind:
        """The kind called ``name``, or the ``unknown_kind`` error. On a lane's shared queue a kind of one's own
        comes only from a client older than kind queues (or a hand-made body): the error says where such kinds
        travel now, so that its sender learns at once (rather than the request being passed from worker to worker
        until it is dead-lettered)."""
        try:
            return kinds.get_kind(name)
        except JobError as exc:
            if src.kind is not None or not kinds.valid_name(name):
                raise
            raise JobError(f"{exc}. A kind of one's own travels on a queue of its own "
                           f"({kinds.kind_queue(self.settings, name)}), read only by the workers that load it: send "
                           "it with a current labkit client", UNKNOWN_KIND) from None

    def seal(self, o: Outcome, now: float) -> None:
        """Give ``o``'s answer its ``replied`` event and encode it into ``o.body`` (a big result goes to the
        bucket: the call may fail, and the answer then waits for the request's next delivery)."""
        if o.result is not None and o.body is None:
            if o.result.events is not None:
                o.result.events.append(event("replied", now))
            o.body = encode_result(o.result, self.bucket, self.settings.max_inline_bytes)

    def note(self, p: Prepared, what: str, src: Source) -> tuple[str, str] | None:
        """(reply URL, note body) telling a job's client that this delivery ended without an answer
        (``released``: handed back unstarted on a stop); None when no client can be told."""
        url = self.reply_url(p.request.reply_to, src) if p.request is not None else None
        if url is None or p.request is None or p.request.reply_to is None:
            return None
        return url, note_body(p.request.id, [*p.events, event(what, time.time(), worker=self.name)])

    def error_outcome(self, src: Source, m: Message, message: str, why: str,
                      events: list[dict[str, Any]] | None = None) -> Outcome:
        """An ``internal`` error reply to whatever address can be read from the message (best effort)."""
        fields = peek(m.body)
        if fields is None:  # plain text: the original lab's error form, on the default reply queue
            return Outcome(m, src.default_reply.url, format_legacy_error(message),
                           f"job legacy-{src.lane.name} ok=false code=internal ({why})")
        job_id = fields.get("id") or f"sqs:{m.message_id}"
        url = self.reply_url(fields.get("reply_to"), src)
        res = JobResult.failure(job_id, fields.get("kind"), INTERNAL, message, worker=self.name, events=events)
        return Outcome(m, url, None, _summary(job_id, fields.get("kind"), f"ok=false code=internal ({why})", url),
                       job_id, result=res)

    def reply_url(self, reply_to: str | None, src: Source) -> str | None:
        """Where a reply goes: ``reply_to`` if it names a labkit reply queue at home, else the default.

        Only labkit's own response queues and ``labkit-reply-*`` queues are accepted, so a message
        cannot make the worker write into any other queue (its own request queue, say), and only in the
        worker's own account and region (:func:`home`, as its own response queue's URL says), so a message
        cannot make it answer into another account's queue of that name. An unusable ``reply_to`` gives
        None: the request cannot be answered and goes to the dead-letter queue.
        """
        if reply_to is None:
            return src.default_reply.url
        if reply_to in self._reply_urls:  # a client's many jobs name the same queue: check it once
            return self._reply_urls[reply_to]
        url = self._check_reply_url(reply_to, src.default_reply.url)
        if len(self._reply_urls) >= REPLY_URLS_KEPT:
            self._reply_urls.clear()  # bounded: a worker lives long and sees many clients
        self._reply_urls[reply_to] = url
        return url

    def _check_reply_url(self, reply_to: str, own: str) -> str | None:
        try:
            parsed = urlparse(reply_to)
        except ValueError:
            return None
        name = parsed.path.rstrip("/").rsplit("/", 1)[-1]
        if parsed.scheme not in ("http", "https") or not QUEUE_NAME.match(name):
            return None
        where = home(reply_to)
        if where is None or where != home(own):
            return None
        if name in self._allowed_replies or name.startswith(REPLY_QUEUE_PREFIX):
            return reply_to
        return None


def home(queue_url: str) -> tuple[str, str] | None:
    """Where a queue lives, as its URL says: (its region on AWS, else its endpoint's host and port; its account).
    Two URLs of one queue may differ in host (SQS's legacy hosts): both give one home. None for a URL that is not
    ``scheme://host/account/name``."""
    try:
        parsed = urlparse(queue_url)
        host = (parsed.hostname or "").lower()
        port = parsed.port
    except ValueError:
        return None
    parts = parsed.path.strip("/").split("/")
    if len(parts) != 2 or not parts[0]:
        return None
    aws = AWS_SQS_HOST.match(host)
    where = f"aws:{aws['a'] or aws['b'] or 'us-east-1'}" if aws else f"{parsed.scheme}://{host}:{port}"
    return where, parts[0]


def handler_failed(kind: str, job_id: str, exc: Exception) -> JobError:
    """The ``internal`` error a handler's own exception (a bug, or input it does not check) becomes: it names the
    kind, the exception and where it was raised, so a student sees their ``KeyError`` rather than "the worker
    failed". The traceback goes to the worker's log."""
    log.warning("job %s kind=%s: the handler raised %s", job_id, kind, short(exc), exc_info=exc)
    hint = "" if kind in kinds.BUILTIN else " (a handler raises labkit.errors.InvalidInput for input it cannot use)"
    return JobError(f"the {kind} handler raised {short(exc, 200)} ({raised_at(exc)}){hint}", INTERNAL)


def raised_at(exc: BaseException) -> str:
    """Where ``exc`` was raised: the innermost frame outside Python's own library and installed packages (the
    handler's line, not the dict's), as ``file.py, line N, in function``."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "no traceback"
    libraries = tuple({sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")})
    frame = next((f for f in reversed(frames) if not f.filename.startswith(libraries)), frames[-1])
    return f"{Path(frame.filename).name}, line {frame.lineno}, in {frame.name}"


def _summary(job_id: str, kind: str | None, status: str, reply_url: str | None) -> str:
    text = f"job {job_id} kind={kind or '?'} {status}"
    return text if reply_url else text + " reply=none (it goes to the dead-letter queue after its last receive)"
