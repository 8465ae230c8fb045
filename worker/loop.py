"""The consumer loop: receive, run, reply, then delete.

One consumer thread per request queue long-polls for up to 10 messages, runs them on a shared thread
pool, sends the replies in batches (one batch per reply queue), and deletes exactly the requests
whose reply was sent. A request whose reply cannot be sent stays in its queue and comes back after a
short backoff; after ``max_receive_count`` receives SQS moves it to the dead-letter queue.

The faults it survives (each has a test in tests/test_faults.py or tests/test_poison.py):

* a long job: its message's visibility is extended while it runs (a heartbeat every third of the
  queue's own visibility timeout); a job past ``job_timeout`` is abandoned with an ``internal`` error
  reply, its thread left behind and a fresh pool taking the new work;
* AWS unreachable: calls are retried with backoff; one log line when contact is lost, one when it is
  back, never a traceback per failed call;
* SIGTERM: no more receives; running jobs finish, jobs not started yet are released (visibility 0);
  exit status 0. A second signal stops at once (held messages come back after their visibility timeout);
* bad input or a bug: an error reply wherever a reply queue is known, else the dead-letter queue.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import os
import re
import signal
import socket
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import ClientError, HTTPClientError, IncompleteReadError
from botocore.exceptions import ConnectionError as BotoConnectionError

from labkit.aws.clients import Clients
from labkit.aws.queues import Message, Queue
from labkit.aws.storage import Bucket
from labkit.config import LOGS_PREFIX, REPLY_QUEUE_PREFIX, Settings
from labkit.errors import INTERNAL, UNKNOWN_KIND, JobError, LabkitError, ProtocolError
from labkit.jobs.numbers import format_legacy_error
from labkit.protocol import JobRequest, JobResult, encode_result, is_legacy
from worker.handlers import HANDLERS, TEST_KINDS_ENV, Context, legacy_image, legacy_numbers, register_test_kinds

log = logging.getLogger("labkit.worker")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}(\.fifo)?$")
ROLES = ("numbers", "images")
TICK = 0.2  # seconds between looks at a running batch (stop requests, hard limits, heartbeats)
# AWS error codes that mean "come back later" rather than "no".
TRANSIENT_CODES = {"Throttling", "ThrottlingException", "RequestThrottled", "SlowDown", "ServiceUnavailable",
                   "InternalError", "InternalFailure", "RequestTimeout", "500", "502", "503", "504"}


def is_transient(exc: BaseException | None) -> bool:
    """True when AWS could not be reached or asked to be called again later (worth a retry)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
            return True
        code = getattr(exc, "code", None) or (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
        if code in TRANSIENT_CODES:
            return True
        seen.add(id(exc))
        exc = exc.__cause__
    return False


@dataclass
class Outcome:
    """What to do with one received message once its job has run."""

    message: Message
    reply_to: str | None  # queue URL; None: no reply can be sent (the message goes back, then to dead letters)
    body: str | None
    summary: str  # the job's log line
    job_id: str | None = None


@dataclass
class Source:
    """A request queue this worker consumes, with its default reply queue."""

    role: str
    queue: Queue
    default_reply: Queue
    visibility: int  # the queue's own visibility timeout, read at start


@dataclass
class WorkerStats:
    jobs: int = 0
    errors: int = 0
    unanswerable: int = 0
    abandoned: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))


@dataclass(eq=False)
class Task:
    """One message's job on the pool."""

    message: Message
    run: Callable[[], Outcome]
    future: cf.Future[Outcome] = field(init=False, repr=False)  # set by JobPool.submit
    pool: cf.ThreadPoolExecutor = field(init=False, repr=False)
    started: float | None = None  # time.monotonic() when the job began to run (set by its thread)


class JobPool:
    """The job threads. Python cannot kill a thread, so a job past its hard limit is *abandoned*: its
    thread is left to finish on its own and a fresh pool of ``size`` threads takes the work from then on."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._pool = self._new()
        self._abandoned: list[Task] = []

    def _new(self) -> cf.ThreadPoolExecutor:
        return cf.ThreadPoolExecutor(self.size, thread_name_prefix="job")

    def submit(self, task: Task) -> Task:
        def run() -> Outcome:
            task.started = time.monotonic()
            return task.run()
        with self._lock:
            task.pool = self._pool
            task.future = self._pool.submit(run)
        return task

    def abandon(self, task: Task) -> None:
        """Give up on a running job; its pool is retired if it is still the current one."""
        with self._lock:
            self._abandoned.append(task)
            if task.pool is self._pool:
                retired, self._pool = self._pool, self._new()
                retired.shutdown(wait=False)  # queued jobs still run there unless rescued

    def rescue(self, tasks: list[Task]) -> None:
        """Move jobs not started yet off a retired pool (whose threads may all be stuck)."""
        for task in tasks:
            if task.pool is not self._pool and task.future.cancel():
                task.started = None
                self.submit(task)

    def stuck(self) -> int:
        """Abandoned jobs still running."""
        return sum(1 for t in self._abandoned if not t.future.done())

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class OutageLog:
    """Reports an AWS outage once when it starts and once when it ends, not once per failed call."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._since: float | None = None

    @property
    def active(self) -> bool:
        return self._since is not None

    def lost(self, exc: BaseException, what: str) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                log.error("lost contact with AWS (%s) while %s: %s; retrying with backoff",
                          self.endpoint, what, _short(exc))

    def restored(self, call_started: float) -> None:
        """A call that began at ``call_started`` succeeded: the outage is over if it began before the call."""
        if self._since is None:
            return
        with self._lock:
            if self._since is not None and call_started >= self._since:
                log.warning("contact with AWS restored after %.1f s", time.monotonic() - self._since)
                self._since = None

    def backoff(self) -> float:
        """Seconds to wait before the next try: growing with the outage, at most 5."""
        since = self._since
        return 5.0 if since is None else min(5.0, 1.0 + (time.monotonic() - since) / 4)


class Worker:
    """A labkit worker. ``run()`` blocks until stopped (SIGTERM/SIGINT) or, in burst mode, until the
    queues are empty."""

    def __init__(self, settings: Settings, roles: tuple[str, ...] = ROLES, concurrency: int = 4,
                 burst: bool = False, poll_wait: int = 10, job_timeout: float = 600.0,
                 log_to_s3: bool = False) -> None:
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise LabkitError(f"unknown queue role(s) {', '.join(sorted(unknown))}: choose from numbers, images")
        self.settings = settings
        self.roles = roles
        self.concurrency = max(1, concurrency)
        self.burst = burst
        self.poll_wait = 1 if burst else max(0, min(poll_wait, 20))
        self.job_timeout = job_timeout
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.clients = Clients(settings)
        self.stats = WorkerStats()
        self.pool = JobPool(self.concurrency)
        self.outage = OutageLog(settings.endpoint_url or f"AWS {settings.region}")
        self._stop = threading.Event()
        self._force = threading.Event()
        self._allowed_replies: set[str] = {settings.response_queue, settings.image_outbox}
        self._shipper: LogShipper | None = None
        self._log_to_s3 = log_to_s3

    @property
    def forced(self) -> bool:
        """True after a cold stop (a second SIGTERM/SIGINT)."""
        return self._force.is_set()

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the process exit status (0 after a warm stop)."""
        sources = self._sources()
        threads = [threading.Thread(target=self._consume, args=(src,), name=f"consume-{src.role}", daemon=True)
                   for src in sources]
        log.info("worker %s serving %s (concurrency %d%s)", self.name, ", ".join(s.queue.name for s in sources),
                 self.concurrency, ", burst" if self.burst else "")
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=TICK)
                if self._force.is_set():
                    log.warning("worker %s: forced stop; unfinished jobs return to their queue", self.name)
                    return 1
        self.pool.shutdown()
        if self._shipper:
            self._shipper.flush()
        log.info("worker %s stopped after %d jobs (%d errors)", self.name, self.stats.jobs, self.stats.errors)
        return 0

    def _consume(self, src: Source) -> None:
        """The loop of one request queue: receive, run, reply, delete; until stopped."""
        while not self._stop.is_set():
            messages = self._guarded(lambda: src.queue.receive(10, wait=self.poll_wait),
                                     f"receiving from {src.queue.name}")
            if messages is None:  # AWS unreachable or refusing: wait, then poll again
                self._stop.wait(self.outage.backoff())
            elif messages and self._stop.is_set():
                self._release(src, messages)
            elif messages:
                self.handle_batch(src, messages)
            elif self.burst:
                return

    def _sources(self) -> list[Source]:
        """Look up the queues to serve (and their reply queues) once, at start."""
        sqs, s = self.clients.sqs, self.settings
        self.bucket = Bucket(self.clients.s3, self.clients.bucket_name())
        self.ctx = Context(s, self.bucket)
        if self._log_to_s3:
            self._shipper = LogShipper(self.bucket, self.name)
        sources = []
        if "numbers" in self.roles:
            q = Queue.by_name(sqs, s.request_queue)
            sources.append(Source("numbers", q, Queue.by_name(sqs, s.response_queue),
                                  _visibility(q, s.visibility_timeout)))
        if "images" in self.roles:
            q = Queue.by_name(sqs, s.image_inbox)
            sources.append(Source("images", q, Queue.by_name(sqs, s.image_outbox),
                                  _visibility(q, s.image_visibility_timeout)))
        return sources

    def request_stop(self) -> None:
        """Warm stop: receive no more, finish what is held; a second call stops at once."""
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """First SIGTERM/SIGINT: warm stop; second: cold stop."""
        def on_signal(signum: int, _frame: Any) -> None:
            log.info("worker %s: %s received, %s", self.name, signal.Signals(signum).name,
                     "stopping now" if self._stop.is_set() else "finishing in-flight jobs")
            self.request_stop()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    # -- one batch -----------------------------------------------------------------------------------
    def handle_batch(self, src: Source, messages: list[Message]) -> None:
        """Run a received batch, reply, delete what was answered, bring the rest back soon."""
        received = time.time()
        tasks = [self.pool.submit(Task(m, lambda m=m: self.process(src, m, received))) for m in messages]
        outcomes = self._await(src, tasks)
        answered, unanswered = self._reply(src, outcomes)
        self._delete(src, answered)
        self._retry_later(src, unanswered)

    def _await(self, src: Source, tasks: list[Task]) -> list[Outcome]:
        """Wait for a batch's jobs: extend the visibility of those still running (heartbeat), abandon
        those past the hard limit, and once a stop is requested release those not started yet."""
        beat = max(1.0, src.visibility / 3)
        next_beat = time.monotonic() + beat
        pending, outcomes = list(tasks), []
        while pending:
            cf.wait([t.future for t in pending], timeout=TICK)
            done = [t for t in pending if t.future.done()]
            overdue = [t for t in pending if t not in done and self._overdue(t)]
            outcomes += [t.future.result() for t in done] + [self._abandon(src, t) for t in overdue]
            pending = [t for t in pending if t not in done and t not in overdue]
            if self._stop.is_set():
                pending = self._release_unstarted(src, pending)
            self.pool.rescue(pending)
            if pending and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat
                self._extend_visibility(src, pending)
        return outcomes

    def _overdue(self, task: Task) -> bool:
        return task.started is not None and time.monotonic() - task.started > self.job_timeout

    def _extend_visibility(self, src: Source, tasks: list[Task]) -> None:
        """Heartbeat: keep the messages of running (or queued) jobs invisible for another visibility timeout."""
        receipts = [t.message.receipt for t in tasks]
        self._guarded(lambda: src.queue.change_visibility(receipts, src.visibility),
                      f"extending visibility on {src.queue.name}", 2)

    def _abandon(self, src: Source, task: Task) -> Outcome:
        """A job past the hard limit: leave its thread, answer with an error."""
        self.pool.abandon(task)
        self.stats.abandoned += 1
        elapsed = time.monotonic() - (task.started or time.monotonic())
        return self._error_outcome(src, task.message, f"the job ran past the worker's limit of "
                                   f"{self.job_timeout:g} s and was abandoned", f"timeout after {elapsed:.1f}s")

    def _release_unstarted(self, src: Source, pending: list[Task]) -> list[Task]:
        """Stopping: give back (visibility 0) the jobs that have not started; returns those still running."""
        unstarted = [t for t in pending if t.future.cancel()]
        if unstarted:
            self._release(src, [t.message for t in unstarted])
        return [t for t in pending if t not in unstarted]

    def _reply(self, src: Source, outcomes: list[Outcome]) -> tuple[list[Outcome], list[Outcome]]:
        """Send the replies, grouped by reply queue; returns (answered, not answered)."""
        by_target: dict[str, list[Outcome]] = defaultdict(list)
        unanswered = []
        for o in outcomes:
            if o.reply_to and o.body is not None:
                by_target[o.reply_to].append(o)
            else:
                unanswered.append(o)
                self.stats.unanswerable += 1
                self._log(o.summary)
        answered: list[Outcome] = []
        for url, group in by_target.items():
            sent = self._send_replies(src, url, group)
            answered += sent
            unanswered += [o for o in group if o not in sent]
        for o in answered:
            self._log(o.summary)
        return answered, unanswered

    def _send_replies(self, src: Source, url: str, group: list[Outcome]) -> list[Outcome]:
        """Send a group's replies to one queue; returns the outcomes whose reply was sent."""
        queue = src.default_reply if url == src.default_reply.url else Queue(self.clients.sqs, url)
        failures = self._guarded(lambda: queue.send_batch([o.body for o in group]),
                                 f"replying to {queue.name} ({len(group)} job(s))", 3)
        if failures is None:
            return []
        bad = {f.index for f in failures}
        for f in failures:
            log.warning("reply to %s for job %s refused: %s", queue.name, group[f.index].job_id, f.message)
        return [o for i, o in enumerate(group) if i not in bad]

    def _delete(self, src: Source, answered: list[Outcome]) -> None:
        """Delete the answered requests (a failure here only means a duplicate reply later)."""
        if not answered:
            return
        receipts = [o.message.receipt for o in answered]
        failed = self._guarded(lambda: src.queue.delete_batch(receipts), f"deleting from {src.queue.name}", 3)
        for f in failed or []:
            log.warning("could not delete answered request %s: %s", answered[f.index].job_id, f.message)

    def _retry_later(self, src: Source, unanswered: list[Outcome]) -> None:
        """Bring unanswered requests back soon (not after the full visibility timeout), so that redrive
        moves the unanswerable ones to the dead-letter queue after max_receive_count receives."""
        by_delay: dict[int, list[str]] = defaultdict(list)
        for o in unanswered:
            by_delay[min(2 ** o.message.receive_count, 30)].append(o.message.receipt)
        for delay, receipts in by_delay.items():
            self._guarded(lambda r=receipts, d=delay: src.queue.change_visibility(r, d),
                          f"releasing requests on {src.queue.name}", 2)

    def _release(self, src: Source, messages: list[Message]) -> None:
        """Give messages back at once (visibility 0): received or queued during a stop, not started."""
        self._guarded(lambda: src.queue.change_visibility([m.receipt for m in messages], 0), "releasing", 2)
        log.info("released %d unstarted request(s) on %s", len(messages), src.queue.name)

    # -- one job -------------------------------------------------------------------------------------
    def process(self, src: Source, m: Message, received: float) -> Outcome:
        """Run one message's job. Never raises: every failure becomes an error reply (or none)."""
        try:
            if is_legacy(m.body):
                return self._legacy(src, m)
            return self._job(src, m, received)
        except Exception as exc:
            if is_transient(exc):  # AWS unreachable mid-job (S3, say): no answer now; the job runs again
                self.outage.lost(exc, f"running the job of message {m.message_id}")
                return Outcome(m, None, None, f"job sqs:{m.message_id} not done: AWS unreachable "
                               "(it will be retried)")
            # A bug: answer "internal" rather than leave the sender waiting.
            log.exception("unexpected error on message %s", m.message_id)
            return self._error_outcome(src, m, f"the worker failed unexpectedly: {_short(exc, 200)}",
                                       f"unexpected {type(exc).__name__}")

    def _legacy(self, src: Source, m: Message) -> Outcome:
        t0 = time.perf_counter()
        try:
            body = legacy_numbers(m.body) if src.role == "numbers" else legacy_image(self.ctx, m.body)
            ok = True
        except JobError as exc:
            body, ok = format_legacy_error(str(exc)), False
        dt = time.perf_counter() - t0
        self.stats.jobs += 1
        self.stats.errors += not ok
        return Outcome(m, src.default_reply.url, body,
                       f"job legacy-{src.role} ok={str(ok).lower()} compute={dt:.4f}s reply={src.default_reply.name}")

    def _job(self, src: Source, m: Message, received: float) -> Outcome:
        try:
            req = JobRequest.decode(m.body)
        except ProtocolError as exc:
            p = exc.partial
            url = self._reply_url(p.get("reply_to"), src)
            job_id = p.get("id") or f"sqs:{m.message_id}"
            res = JobResult.failure(job_id, p.get("kind"), exc.code, str(exc), worker=self.name)
            self.stats.errors += 1
            return Outcome(m, url, res.encode(), _summary(job_id, p.get("kind"), f"ok=false code={exc.code} {exc}",
                                                          url), job_id)
        url = self._reply_url(req.reply_to, src)
        sent = req.sent_at or m.sent_at
        queued = max(0.0, received - sent) if sent else 0.0
        t0 = time.perf_counter()
        fn = HANDLERS.get(req.kind)
        try:
            if fn is None:
                raise JobError(f"unknown job kind {req.kind!r}; this worker knows {', '.join(sorted(HANDLERS))}",
                               UNKNOWN_KIND)
            result = fn(self.ctx, req)
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

    def _error_outcome(self, src: Source, m: Message, message: str, why: str) -> Outcome:
        """An ``internal`` error reply to whatever address can be read from the message (best effort)."""
        fields = _lenient_fields(m.body)
        if fields is None:  # plain text: the original lab's error form, on the default reply queue
            return Outcome(m, src.default_reply.url, format_legacy_error(message),
                           f"job legacy-{src.role} ok=false code=internal ({why})")
        job_id = fields.get("id") or f"sqs:{m.message_id}"
        url = self._reply_url(fields.get("reply_to"), src)
        res = JobResult.failure(job_id, fields.get("kind"), INTERNAL, message, worker=self.name)
        self.stats.errors += 1
        return Outcome(m, url, res.encode(), _summary(job_id, fields.get("kind"), f"ok=false code=internal ({why})",
                                                      url), job_id)

    def _reply_url(self, reply_to: str | None, src: Source) -> str | None:
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

    # -- helpers -------------------------------------------------------------------------------------
    def _guarded(self, fn: Callable[[], Any], what: str, attempts: int = 0) -> Any:
        """``fn()``, or None when it failed. AWS unreachable: retried ``attempts`` more times with backoff,
        reported once per outage. AWS refusing the call (a queue that does not exist, say): logged, not
        retried; the caller decides what happens to the messages."""
        for tries in range(attempts + 1):
            started = time.monotonic()
            try:
                out = fn()
            except Exception as exc:
                if not is_transient(exc):
                    log.warning("%s failed: %s", what, _short(exc))
                    return None
                self.outage.lost(exc, what)
                if tries < attempts:
                    self._force.wait(self.outage.backoff())
                continue
            self.outage.restored(started)
            return out
        return None

    def _log(self, line: str) -> None:
        log.info(line)
        if self._shipper:
            self._shipper.add(line)


def _summary(job_id: str, kind: str | None, status: str, reply_url: str | None) -> str:
    text = f"job {job_id} kind={kind or '?'} {status}"
    return text if reply_url else text + " reply=none (it goes to the dead-letter queue after its last receive)"


def _visibility(queue: Queue, default: int) -> int:
    """The queue's own visibility timeout: it decides when a message still held reappears."""
    try:
        attrs = queue.sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["VisibilityTimeout"])
        return max(1, int(attrs["Attributes"]["VisibilityTimeout"]))
    except (ClientError, KeyError, ValueError):
        return default


def _lenient_fields(body: str) -> dict[str, str] | None:
    """``id``, ``kind`` and ``reply_to`` of a JSON object body, read without ever failing (numbers are
    left as text); None when the body is not a JSON object."""
    try:
        data = json.loads(body, parse_int=str, parse_float=str, parse_constant=str)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    return {k: data[k] for k in ("id", "kind", "reply_to") if isinstance(data.get(k), str)}


def _short(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < limit else text[:limit] + "…"


class LogShipper:
    """Writes log lines to ``logs/<worker>/<time>-<seq>.log`` in batches: a new object per batch,
    never one growing object rewritten (as the original lab did)."""

    def __init__(self, bucket: Bucket, worker: str, max_lines: int = 500, max_age: float = 60.0) -> None:
        self.bucket = bucket
        self.prefix = LOGS_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "_", worker) + "/"
        self.max_lines = max_lines
        self.max_age = max_age
        self._lines: list[str] = []
        self._first = 0.0
        self._seq = 0
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        with self._lock:
            if not self._lines:
                self._first = time.monotonic()
            self._lines.append(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}")
            due = len(self._lines) >= self.max_lines or time.monotonic() - self._first > self.max_age
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
            self._seq += 1
            seq = self._seq
        if not lines:
            return
        key = f"{self.prefix}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{seq:05d}.log"
        try:
            self.bucket.put(key, ("\n".join(lines) + "\n").encode(), "text/plain")
        except Exception as exc:  # logs must never stop the worker
            log.warning("could not ship %d log lines to s3: %s", len(lines), _short(exc))


def run_worker(settings: Settings, **kwargs: Any) -> int:
    """Build a worker, install signal handlers and run it (``labkit worker``, ``python -m worker``)."""
    if os.environ.get(TEST_KINDS_ENV) == "1":
        register_test_kinds()
        log.warning("%s=1: test-only job kinds are enabled; never set this in production", TEST_KINDS_ENV)
    w = Worker(settings, **kwargs)
    w.install_signal_handlers()
    code = w.run()
    stuck = w.pool.stuck()
    if stuck or w.forced:
        # Python waits for every pool thread at exit, and an abandoned job's thread may never end.
        log.warning("worker %s exits leaving %d abandoned job(s) behind", w.name, stuck)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
