"""The consumer loop: receive, run, reply, then delete.

One consumer thread per request queue long-polls for up to 10 messages, runs them on a shared thread
pool, sends the replies in batches (one batch per reply queue), and deletes exactly the requests
whose reply was sent. A request whose reply cannot be sent stays in its queue and comes back after a
short backoff; after ``max_receive_count`` receives SQS moves it to the dead-letter queue.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import re
import signal
import socket
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from labkit.aws.clients import Clients
from labkit.aws.queues import Message, Queue
from labkit.aws.storage import Bucket
from labkit.config import LOGS_PREFIX, REPLY_QUEUE_PREFIX, Settings
from labkit.errors import INTERNAL, UNKNOWN_KIND, JobError, LabkitError, ProtocolError
from labkit.jobs.numbers import format_legacy_error
from labkit.protocol import JobRequest, JobResult, encode_result, is_legacy
from worker.handlers import HANDLERS, Context, legacy_image, legacy_numbers

log = logging.getLogger("labkit.worker")
QUEUE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,80}(\.fifo)?$")
ROLES = ("numbers", "images")


@dataclass
class Outcome:
    """What to do with one received message once its job has run."""

    message: Message
    reply_to: str | None  # queue URL; None: no reply can be sent (the message goes to dead letters)
    body: str | None
    summary: str  # the job's log line
    job_id: str | None = None


@dataclass
class Source:
    """A request queue this worker consumes, with its default reply queue."""

    role: str
    queue: Queue
    default_reply: Queue
    visibility: int


@dataclass
class WorkerStats:
    jobs: int = 0
    errors: int = 0
    unanswerable: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))


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
        self._stop = threading.Event()
        self._force = threading.Event()
        self._allowed_replies: set[str] = {settings.response_queue, settings.image_outbox}
        self._pool = cf.ThreadPoolExecutor(self.concurrency, thread_name_prefix="job")
        self._shipper: LogShipper | None = None
        self._log_to_s3 = log_to_s3
        self._outage_since: float | None = None
        self._outage_lock = threading.Lock()

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the process exit status (0 after a warm stop)."""
        sqs = self.clients.sqs
        s = self.settings
        self.bucket = Bucket(self.clients.s3, self.clients.bucket_name())
        self.ctx = Context(s, self.bucket)
        replies = {"numbers": Queue.by_name(sqs, s.response_queue), "images": Queue.by_name(sqs, s.image_outbox)}
        sources = [
            Source("numbers", Queue.by_name(sqs, s.request_queue), replies["numbers"], s.visibility_timeout),
            Source("images", Queue.by_name(sqs, s.image_inbox), replies["images"], s.image_visibility_timeout),
        ]
        if self._log_to_s3:
            self._shipper = LogShipper(self.bucket, self.name)
        threads = [threading.Thread(target=self._consume, args=(src,), name=f"consume-{src.role}", daemon=True)
                   for src in sources if src.role in self.roles]
        log.info("worker %s serving %s (concurrency %d%s)", self.name,
                 ", ".join(src.queue.name for src in sources if src.role in self.roles),
                 self.concurrency, ", burst" if self.burst else "")
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.2)
                if self._force.is_set():
                    log.warning("worker %s: forced stop; unfinished jobs return to their queue", self.name)
                    return 1
        self._pool.shutdown(wait=True)
        if self._shipper:
            self._shipper.flush()
        log.info("worker %s stopped after %d jobs (%d errors)", self.name, self.stats.jobs, self.stats.errors)
        return 0

    def request_stop(self) -> None:
        """Warm stop: receive no more, finish what is held."""
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

    def _consume(self, src: Source) -> None:
        while not self._stop.is_set():
            messages = self._guarded(lambda: src.queue.receive(10, wait=self.poll_wait),
                                     f"receiving from {src.queue.name}")
            if messages is None:
                continue
            if self._stop.is_set():
                self._release(src, messages)
                return
            if not messages:
                if self.burst:
                    return
                continue
            self.handle_batch(src, messages)

    # -- one batch -----------------------------------------------------------------------------------
    def handle_batch(self, src: Source, messages: list[Message]) -> None:
        """Run a received batch, reply, and delete what was answered."""
        received = time.time()
        futures = {self._pool.submit(self.process, src, m, received): m for m in messages}
        outcomes = self._await(src, futures)
        by_target: dict[str, list[Outcome]] = defaultdict(list)
        unanswerable = []
        for o in outcomes:
            (by_target[o.reply_to] if o.reply_to and o.body is not None else unanswerable).append(o)
        answered: list[Outcome] = []
        for url, group in by_target.items():
            answered += self._send_replies(src, url, group)
        if answered:
            receipts = [o.message.receipt for o in answered]
            failed = self._guarded(lambda: src.queue.delete_batch(receipts), f"deleting from {src.queue.name}", 3)
            for f in failed or []:
                log.warning("could not delete answered request %s: %s", answered[f.index].job_id, f.message)
        for o in answered:
            self._log(o.summary)
        for o in unanswerable:
            self.stats.unanswerable += 1
            self._log(o.summary + " reply=none (will go to the dead-letter queue)")
        # Bring unanswerable requests back soon (not after the full visibility timeout), so that
        # redrive moves them to the dead-letter queue after max_receive_count receives.
        back = [o for o in unanswerable] + [o for g in by_target.values() for o in g if o not in answered]
        if back:
            delays = {min(2 ** o.message.receive_count, 30) for o in back}
            for delay in delays:
                receipts = [o.message.receipt for o in back if min(2 ** o.message.receive_count, 30) == delay]
                self._guarded(lambda r=receipts, d=delay: src.queue.change_visibility(r, d), "releasing requests", 2)

    def _await(self, src: Source, futures: dict[cf.Future[Outcome], Message]) -> list[Outcome]:
        """Wait for the batch, extending visibility of running jobs (heartbeat) and enforcing the hard limit."""
        start = time.monotonic()
        beat = max(1.0, src.visibility / 3)
        pending = set(futures)
        outcomes: list[Outcome] = []
        while pending:
            done, pending = cf.wait(pending, timeout=beat)
            outcomes += [f.result() for f in done]
            if not pending:
                break
            elapsed = time.monotonic() - start
            if elapsed > self.job_timeout:
                for f in pending:
                    m = futures[f]
                    outcomes.append(self._timeout_outcome(src, m, elapsed))
                    f.cancel()
                break
            receipts = [futures[f].receipt for f in pending]
            self._guarded(lambda r=receipts: src.queue.change_visibility(r, src.visibility), "extending visibility", 2)
        return outcomes

    def _timeout_outcome(self, src: Source, m: Message, elapsed: float) -> Outcome:
        msg = f"the job ran past the worker's limit of {self.job_timeout:.0f} s and was abandoned"
        if is_legacy(m.body):
            return Outcome(m, src.default_reply.url, format_legacy_error(msg),
                           f"job legacy ok=false timeout {elapsed:.1f}s")
        try:
            req = JobRequest.decode(m.body)
            url = self._reply_url(req.reply_to, src)
            res = JobResult.failure(req.id, req.kind, INTERNAL, msg, worker=self.name)
            return Outcome(m, url, res.encode(), f"job {req.id} kind={req.kind} ok=false code=internal (timeout)",
                           req.id)
        except (ProtocolError, JobError):
            return Outcome(m, None, None, "job ? timeout")

    def _send_replies(self, src: Source, url: str, group: list[Outcome]) -> list[Outcome]:
        """Send a group's replies to one queue; returns the outcomes whose reply was sent."""
        queue = src.default_reply if url == src.default_reply.url else Queue(self.clients.sqs, url)
        failures = self._guarded(lambda: queue.send_batch([o.body for o in group]), f"replying to {queue.name}", 3)
        if failures is None:
            return []
        bad = {f.index for f in failures}
        for f in failures:
            log.warning("reply to %s for job %s refused: %s", queue.name, group[f.index].job_id, f.message)
        return [o for i, o in enumerate(group) if i not in bad]

    def _release(self, src: Source, messages: list[Message]) -> None:
        """Give messages back at once (visibility 0): received during a stop, not started."""
        self._guarded(lambda: src.queue.change_visibility([m.receipt for m in messages], 0), "releasing", 2)
        log.info("released %d unstarted request(s) on %s", len(messages), src.queue.name)

    # -- one job -------------------------------------------------------------------------------------
    def process(self, src: Source, m: Message, received: float) -> Outcome:
        """Run one message's job. Never raises: every failure becomes an error reply (or none)."""
        try:
            if is_legacy(m.body):
                return self._legacy(src, m)
            return self._job(src, m, received)
        except Exception as exc:  # a bug: answer "internal" rather than lose the message or the worker
            log.exception("unexpected error on message %s", m.message_id)
            return Outcome(m, None, None, f"job ? ok=false internal error {type(exc).__name__}: {exc}")

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
            url = self._reply_url(p.get("reply_to"), src, p.get("kind"))
            job_id = p.get("id") or f"sqs:{m.message_id}"
            res = JobResult.failure(job_id, p.get("kind"), exc.code, str(exc), worker=self.name)
            self.stats.errors += 1
            return Outcome(m, url, res.encode(), f"job {job_id} ok=false code={exc.code} {exc}", job_id)
        url = self._reply_url(req.reply_to, src, req.kind)
        sent = m.sent_at or req.sent_at
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
        summary = f"job {req.id} kind={req.kind} {status} queued={queued:.3f}s compute={dt:.4f}s"
        return Outcome(m, url, encode_result(res, self.bucket, self.settings.max_inline_bytes), summary, req.id)

    def _reply_url(self, reply_to: str | None, src: Source, kind: str | None = None) -> str | None:
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
    def _guarded(self, fn: Any, what: str, attempts: int = 0) -> Any:
        """Call ``fn``; on failure log one line per outage and back off. ``attempts=0``: try once and
        return None on failure (the loop will come back); otherwise retry up to ``attempts`` times."""
        tries = 0
        while True:
            try:
                out = fn()
            except Exception as exc:
                tries += 1
                self._outage(exc, what)
                if self._force.is_set() or tries > attempts:
                    return None
                time.sleep(min(2 ** tries, 10))
                continue
            self._recovered()
            return out

    def _outage(self, exc: Exception, what: str) -> None:
        with self._outage_lock:
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                log.error("lost contact with AWS while %s: %s; retrying with backoff", what, _short(exc))
        if not self._stop.is_set():
            self._stop.wait(min(5.0, 1.0 + (time.monotonic() - (self._outage_since or 0)) / 4))

    def _recovered(self) -> None:
        if self._outage_since is None:
            return
        with self._outage_lock:
            if self._outage_since is not None:
                log.warning("contact with AWS restored after %.1f s", time.monotonic() - self._outage_since)
                self._outage_since = None

    def _log(self, line: str) -> None:
        log.info(line)
        if self._shipper:
            self._shipper.add(line)


def _short(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 300 else text[:300] + "…"


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
    w = Worker(settings, **kwargs)
    w.install_signal_handlers()
    return w.run()
