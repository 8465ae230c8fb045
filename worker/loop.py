"""The consumer loop: receive, run, reply, then delete.

One consumer thread per request queue long-polls for up to 10 messages, runs them, sends the replies in
batches (one batch per reply queue), and deletes exactly the requests whose reply was sent: on a thread of
its own (:class:`labkit.background.Background`), so that the next receive does not wait a round trip for
the delete; a warm stop waits for the deletes, a crash only leaves answered requests to come back and be
answered again (a duplicate the client drops by id). Small jobs
(a number job of a few thousand numbers at most: see ``inline_below`` in :mod:`labkit.kinds`) run on the
consumer thread itself, where they take microseconds; the others run on a shared thread pool, watched as
below. A request whose reply cannot be sent stays in its queue and comes back after a short backoff;
after ``max_receive_count`` receives SQS moves it to the dead-letter queue.

Logging: one INFO line every ``REPORT_EVERY`` seconds while jobs flow (how many, how many errors), one
INFO line per error reply or unanswered request, and one DEBUG line per job answered
(``labkit worker -v`` shows them; ``--log-to-s3`` ships them all).

The faults it survives (each has a test in tests/test_faults.py or tests/test_poison.py):

* a long job: its message's visibility is extended while it runs (a heartbeat every third of the
  queue's own visibility timeout); a job past ``job_timeout`` is abandoned with an ``internal`` error
  reply, its thread left behind and a fresh pool taking the new work;
* AWS unreachable: calls are retried with backoff; one log line when contact is lost, one when it is
  back, never a traceback per failed call;
* credentials refused (session keys expired): not an outage. One line says what to do; the loops then wait,
  without calling AWS, for renewed credentials in the usual places (:class:`worker.outage.CredentialWatch`), and
  serve again once they are there (one line), or the worker stops after ``LABKIT_CREDENTIALS_WAIT`` seconds
  (exit status 3). ``labkit status`` shows either (the worker's state file, :func:`labkit.local.worker_notes`).
  Requests held meanwhile are not deleted: they come back to their queue;
* SIGTERM: no more receives; running jobs finish, jobs not started yet are released (visibility 0), the
  answered ones are deleted; exit status 0. A second signal stops at once (held messages come back after
  their visibility timeout);
* bad input or a bug: an error reply wherever a reply queue is known, else the dead-letter queue.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from labkit import kinds
from labkit.aws.clients import Clients
from labkit.aws.queues import NEW_QUEUE_GRACE, Message, Queue, is_missing_queue
from labkit.aws.storage import Bucket
from labkit.background import Background
from labkit.config import REPLY_QUEUE_PREFIX, Settings
from labkit.errors import AwsError, credentials_error
from labkit.local import write_worker_state
from labkit.timeline import event
from labkit.waiting import tries
from worker.answer import Answerer, Outcome, Source, WorkerStats, kind_sources
from worker.health import WorkerHealth
from worker.outage import EXIT_CREDENTIALS, CredentialWatch, OutageLog, credentials_wait, is_transient, short
from worker.pool import JobPool, Task
from worker.shipper import LogShipper

log = logging.getLogger("labkit.worker")
TICK = 0.2  # seconds between looks at a running batch (stop requests, hard limits, heartbeats)
REPORT_EVERY = 10.0  # seconds between the INFO lines that count the jobs answered
DELETE_WAIT = 60  # seconds a warm stop waits for the deletes of answered requests
# A client's reply queue (labkit-reply-*) that does not exist is gone for good once the request is older than SQS
# may take to show a queue just made (the grace its maker gives it too), or on its second delivery.
REPLY_GONE_AFTER = NEW_QUEUE_GRACE
GONE_KEPT = 1024  # reply queues remembered as gone (their later answers are dropped without a call)
_GONE = object()  # what a reply's send returns when its reply queue does not exist


class Worker:
    """A labkit worker, ready once built: its queues looked up (``sources``), its bucket, answerer and health made.
    ``run()`` blocks until stopped (SIGTERM/SIGINT) or, in burst mode, until the queues are empty; ``handle_batch``
    answers one received batch."""

    def __init__(self, settings: Settings, roles: tuple[str, ...] = tuple(kinds.LANES), concurrency: int = 4,
                 burst: bool = False, poll_wait: int = 10, job_timeout: float = 600.0,
                 log_to_s3: bool = False, credentials_limit: float | None = None,
                 clients: Clients | None = None) -> None:
        self.lanes = kinds.lanes(roles)
        self.settings = settings
        self.concurrency = max(1, concurrency)
        self.burst = burst
        self.receive_wait = 1 if burst else max(0, min(poll_wait, 20))  # seconds each receive may wait
        self.job_timeout = job_timeout
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.clients = clients or Clients(settings)
        self.stats = WorkerStats()
        self.pool = JobPool(self.concurrency)
        self.outage = OutageLog(settings.endpoint_url or f"AWS {settings.region}")
        limit = credentials_wait() if credentials_limit is None else credentials_limit
        self.credentials = CredentialWatch(self.clients, limit, self._say_state)
        self._stop = threading.Event()
        self._force = threading.Event()
        self.bucket = Bucket(self.clients.s3, self.clients.bucket_name())
        self.answerer = Answerer(settings, self.bucket, self.name, self.stats, self.outage)
        self.answerer.memory.max_wait = job_timeout  # a job waiting for memory gives up when it is abandoned
        self._shipper = LogShipper(self.bucket, self.name) if log_to_s3 else None
        self._report_lock = threading.Lock()
        self._deletes = Background("deletes")  # answered requests are deleted here (see _finish)
        self._gone: dict[str, None] = {}  # URLs of clients' reply queues found deleted, oldest first
        self._reported = (0, 0, time.monotonic())  # jobs, errors, when: as of the last count logged
        self.sources = self._sources()
        self.health = WorkerHealth.of(self)  # systemd's watchdog and the heartbeat (worker/health.py), from run()

    @property
    def forced(self) -> bool:
        """True after a cold stop (a second SIGTERM/SIGINT)."""
        return self._force.is_set()

    # -- the loop ------------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the process exit status (0 after a warm stop)."""
        sources = self.sources
        self.health.start()
        threads = [threading.Thread(target=self._consume, args=(src,), name=f"consume-{src.label}", daemon=True)
                   for src in sources]
        log.info("worker %s serving %s (concurrency %d%s)", self.name, ", ".join(s.queue.name for s in sources),
                 self.concurrency, ", burst" if self.burst else "")
        self._say_state({"status": "serving", "since": time.time()})  # the ready file labkit waits for (local.py)
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=TICK)
                    if self._force.is_set():
                        log.warning("worker %s: forced stop; unfinished jobs return to their queue", self.name)
                        return 1
            self.pool.shutdown()
            if not self._deletes.close(timeout=DELETE_WAIT):
                log.warning("worker %s: some answered requests could not be deleted in %d s; they come back "
                            "after their visibility timeout and are answered again", self.name, DELETE_WAIT)
        finally:
            self.health.stop()  # systemd hears STOPPING and the heartbeat says stopped, forced stop or not
        if self._shipper:
            self._shipper.flush()
        gone = self.stats.reply_queue_gone
        log.info("worker %s stopped after %d jobs (%d errors)%s", self.name, self.stats.jobs, self.stats.errors,
                 f"; {gone} answer(s) dropped: reply queue gone" if gone else "")
        if self.credentials.gave_up:
            return EXIT_CREDENTIALS
        self._say_state(None)  # stopped as asked: nothing to explain
        return 0

    def _say_state(self, doc: dict[str, Any] | None) -> None:
        """The worker's own state (waiting for credentials, stopped for want of them; None: serving), for
        ``labkit status``."""
        try:
            write_worker_state(self.settings.state_dir, os.getpid(), doc)
        except OSError as exc:
            log.warning("could not record the worker's state in %s: %s", self.settings.state_dir, short(exc))

    def _consume(self, src: Source) -> None:
        """The loop of one request queue: receive, run, reply, delete; until stopped."""
        while not self._stop.is_set():
            self.health.alive(src.label)
            if self.credentials.waiting and not self.credentials.wait(self._stop, lambda: self.health.alive(
                    src.label)):
                self._stop.set()  # gave up (or asked to stop): every lane ends, what is held comes back
                return
            messages = self._guarded(lambda: src.queue.receive(10, wait=self.receive_wait),
                                     f"receiving from {src.queue.name}")
            if messages is None and not self.credentials.waiting:  # AWS unreachable or refusing: wait, poll again
                self._stop.wait(self.outage.backoff())
            elif messages and self._stop.is_set():
                self._release(src, messages)
            elif messages:
                self.handle_batch(src, messages)
                self._report()
            elif self.burst:
                return

    def _sources(self) -> list[Source]:
        """Look up the queues to serve (and their reply queues) once, at start."""
        sqs, s = self.clients.sqs, self.settings
        sources = []
        for lane in self.lanes:
            queue = Queue.by_name(sqs, lane.request_queue(s))
            visibility = self._guarded(queue.visibility_timeout, f"reading {queue.name}'s visibility timeout")
            sources.append(Source(lane, queue, Queue.by_name(sqs, lane.reply_queue(s)),
                                  visibility or lane.visibility(s)))
        # Kinds of one's own: a queue each, which only workers that load the kind read (worker/answer.py).
        return sources + kind_sources(self.clients, sources, lambda q: self._guarded(
            q.visibility_timeout, f"reading {q.name}'s visibility timeout"))

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
        """Run a received batch, reply, delete what was answered, bring the rest back soon.

        Each body is decoded once. Small jobs run here (a hand-off to a job thread would cost more than
        they do) and are answered at once; the others go to the pool first, so that they run meanwhile,
        and are answered when they end (a long job does not hold the small ones' replies)."""
        received = time.time()
        prepared = [self.answerer.prepare(src, m) for m in messages]
        tasks = [self.pool.submit(Task(p.message, lambda p=p: self.answerer.answer(src, p, received), p))
                 for p in prepared if not p.inline]
        self._finish(src, [self.answerer.answer(src, p, received) for p in prepared if p.inline])
        if tasks:
            self._await(src, tasks)

    def _finish(self, src: Source, outcomes: list[Outcome]) -> None:
        """Reply, delete what was answered (or can never be: its reply queue is gone), bring the rest back soon."""
        if not outcomes:
            return
        answered, unanswered, dropped = self._reply(src, outcomes)
        self.stats.answered(answered)
        done = answered + dropped
        if done:  # replies sent: the deletes go on a thread of their own, the next receive need not wait
            self._deletes.run(lambda: self._delete(src, done))
        self._retry_later(src, unanswered)

    def _await(self, src: Source, tasks: list[Task]) -> None:
        """Wait for a batch's pooled jobs, answering each as it ends (one long job holds no other's reply):
        extend the visibility of those still running (heartbeat), abandon those past the hard limit, and
        once a stop is requested release those not started yet."""
        beat = max(1.0, src.visibility / 3)
        next_beat = time.monotonic() + beat
        pending = list(tasks)
        while pending:
            cf.wait([t.future for t in pending], timeout=TICK, return_when=cf.FIRST_COMPLETED)
            done = [t for t in pending if t.future.done()]
            overdue = [t for t in pending if t not in done and self._overdue(t)]
            self._finish(src, [t.future.result() for t in done] + [self._abandon(src, t) for t in overdue])
            pending = [t for t in pending if t not in done and t not in overdue]
            if self._stop.is_set():
                pending = self._release_unstarted(src, pending)
            self.pool.rescue(pending)
            if pending and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat
                self._extend_visibility(src, pending)

    def _overdue(self, task: Task) -> bool:
        return task.started is not None and time.monotonic() - task.started > self.job_timeout

    def _extend_visibility(self, src: Source, tasks: list[Task]) -> None:
        """Heartbeat: keep the messages of running (or queued) jobs invisible for another visibility timeout."""
        receipts = [t.message.receipt for t in tasks]
        if self._guarded(lambda: src.queue.change_visibility(receipts, src.visibility),
                         f"extending visibility on {src.queue.name}", 2) is not None:
            now = time.time()
            for t in tasks:
                t.prepared.events.append(event("visibility_extended", now, seconds=src.visibility))

    def _abandon(self, src: Source, task: Task) -> Outcome:
        """A job past the hard limit: leave its thread, answer with an error."""
        self.pool.abandon(task)
        elapsed = time.monotonic() - (task.started or time.monotonic())
        events = [*task.prepared.events, event("abandoned", time.time(), worker=self.name)]
        return self.answerer.error_outcome(src, task.message, f"the job ran past the worker's limit of "
                                           f"{self.job_timeout:g} s and was abandoned", f"timeout after {elapsed:.1f}s",
                                           events)

    def _release_unstarted(self, src: Source, pending: list[Task]) -> list[Task]:
        """Stopping: give back (visibility 0) the jobs that have not started; returns those still running."""
        unstarted = [t for t in pending if t.future.cancel()]
        if unstarted:
            self._release(src, [t.message for t in unstarted])
            self._send_notes(src, [self.answerer.note(t.prepared, "released", src) for t in unstarted])
        return [t for t in pending if t not in unstarted]

    def _send_notes(self, src: Source, notes: list[tuple[str, str] | None]) -> None:
        """Tell clients about deliveries that ended without an answer (their jobs' timelines show it)."""
        by_target: dict[str, list[str]] = defaultdict(list)
        for note in notes:
            if note is not None:
                by_target[note[0]].append(note[1])
        for url, bodies in by_target.items():
            if url in self._gone:
                continue
            queue = src.default_reply if url == src.default_reply.url else Queue(self.clients.sqs, url)
            self._guarded(lambda q=queue, b=bodies: q.send_batch(b), f"telling {queue.name} of released jobs")

    def _reply(self, src: Source, outcomes: list[Outcome]) -> tuple[list[Outcome], list[Outcome], list[Outcome]]:
        """Send the replies, grouped by reply queue; returns (answered, not answered, dropped: their client's reply
        queue is gone, so no answer can ever be delivered)."""
        by_target: dict[str, list[Outcome]] = defaultdict(list)
        unanswered: list[Outcome] = []
        gone: dict[str, list[Outcome]] = defaultdict(list)
        now = time.time()
        for o in outcomes:
            if o.reply_to in self._gone:  # known gone: no call, and a big answer is not stored for nobody
                gone[o.reply_to].append(o)
                continue
            if o.reply_to and o.result is not None:
                try:
                    self.answerer.seal(o, now)
                except Exception as exc:  # a big result could not reach the bucket: its request comes back
                    o.body = None
                    if self._refused(exc, f"storing the result of job {o.job_id}"):
                        pass
                    elif is_transient(exc):
                        self.outage.lost(exc, f"storing the result of job {o.job_id}")
                    else:
                        log.warning("could not store the result of job %s: %s", o.job_id, short(exc))
            if o.reply_to and o.body is not None:
                by_target[o.reply_to].append(o)
            else:
                unanswered.append(o)
                self._log(o)
        answered: list[Outcome] = []
        for url, group in by_target.items():
            sent = self._send_replies(src, url, group)
            if sent is _GONE:
                unanswered += self._reply_queue_missing(url, group, gone)
                continue
            answered += sent
            if len(sent) < len(group):
                unanswered += [o for o in group if o not in sent]  # Outcome compares by identity
        for o in answered:
            self._log(o)
        dropped = [o for url, group in gone.items() for o in self._drop(url, group)]
        return answered, unanswered, dropped

    def _send_replies(self, src: Source, url: str, group: list[Outcome]) -> Any:
        """Send a group's replies to one queue; returns the outcomes whose reply was sent, or ``_GONE`` when the
        queue is a client's reply queue that does not exist."""
        queue = src.default_reply if url == src.default_reply.url else Queue(self.clients.sqs, url)

        def send() -> Any:
            try:
                return queue.send_batch([o.body for o in group])
            except AwsError as exc:
                # Only a client's own queue can be gone for good: a missing default queue (responseQueue) is a
                # setup to mend, and its requests wait in the dead-letter queue meanwhile.
                if is_missing_queue(exc) and queue.name.startswith(REPLY_QUEUE_PREFIX):
                    return _GONE
                raise
        failures = self._guarded(send, f"replying to {queue.name} ({len(group)} job(s))", 3)
        if failures is None or failures is _GONE:
            return [] if failures is None else _GONE
        bad = {f.index for f in failures}
        for f in failures:
            log.warning("reply to %s for job %s refused: %s", queue.name, group[f.index].job_id, f.message)
        return [o for i, o in enumerate(group) if i not in bad]

    def _reply_queue_missing(self, url: str, group: list[Outcome], gone: dict[str, list[Outcome]]) -> list[Outcome]:
        """``url``, a client's reply queue, does not exist: the answers of requests old enough (or delivered before)
        go to ``gone``, to be dropped; returns the others, to try once more soon (a queue made a moment ago)."""
        now = time.time()
        later = [o for o in group if o.message.receive_count < 2
                 and (o.sent_at is None or now - o.sent_at < REPLY_GONE_AFTER)]
        now_gone = [o for o in group if o not in later]
        if now_gone:
            gone[url] += now_gone
        if later:
            log.info("reply queue %s not found for %d job(s) sent moments ago (%s): trying again shortly",
                     Queue(None, url).name, len(later), ", ".join(str(o.job_id) for o in later[:3]))
        return later

    def _drop(self, url: str, group: list[Outcome]) -> list[Outcome]:
        """Drop the answers of ``group``, whose client's reply queue is gone: its client stopped waiting (closed,
        interrupted) and nobody can ever read them. One line for the queue; their requests are deleted."""
        first = url not in self._gone
        self._gone[url] = None
        if len(self._gone) > GONE_KEPT:
            del self._gone[next(iter(self._gone))]
        self.stats.reply_queue_gone += len(group)
        ids = ", ".join(str(o.job_id) for o in group[:3]) + (", ..." if len(group) > 3 else "")
        log.log(logging.INFO if first else logging.DEBUG,
                "reply queue %s is gone (its client stopped waiting): dropped the answer of %d job(s) (%s) and "
                "deleted the request(s)", Queue(None, url).name, len(group), ids)
        return group

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

    # -- helpers -------------------------------------------------------------------------------------
    def _guarded(self, fn: Callable[[], Any], what: str, attempts: int = 0) -> Any:
        """``fn()``, or None when it failed. AWS unreachable: retried ``attempts`` more times with backoff,
        reported once per outage. AWS refusing the call (a queue that does not exist, say): logged, not
        retried; the caller decides what happens to the messages."""
        for _ in tries((self.outage.backoff() for _ in range(attempts)), wake=self._force):
            started = time.monotonic()
            try:
                out = fn()
            except Exception as exc:
                if self._refused(exc, what):
                    return None
                if not is_transient(exc):
                    log.warning("%s failed: %s", what, short(exc))
                    return None
                self.outage.lost(exc, what)
                continue
            self.outage.restored(started)
            return out
        return None

    def _refused(self, exc: BaseException, what: str) -> bool:
        """True when ``exc`` is AWS refusing the credentials (told to the watch, which says it once)."""
        refused = credentials_error(exc, what)
        if refused is not None:
            self.credentials.refused(refused)
        return refused is not None

    def _log(self, o: Outcome) -> None:
        """A job's line: DEBUG when it was answered with a result, INFO otherwise; shipped when asked."""
        log.log(logging.DEBUG if o.ok else logging.INFO, "%s", o.summary)
        if self._shipper:
            self._shipper.add(o.summary)

    def _report(self) -> None:
        """Every REPORT_EVERY seconds while jobs flow, one INFO line counting them."""
        jobs0, errors0, since = self._reported
        now = time.monotonic()
        if now - since < REPORT_EVERY or not self._report_lock.acquire(blocking=False):
            return
        try:
            jobs, errors, gone = self.stats.jobs, self.stats.errors, self.stats.reply_queue_gone
            if jobs > jobs0:
                log.info("worker %s: %d job(s) answered in the last %.0f s (%d error(s)), %d since start%s%s",
                         self.name, jobs - jobs0, now - since, errors - errors0, jobs,
                         f"; {gone} answer(s) dropped since start: reply queue gone" if gone else "",
                         "" if log.isEnabledFor(logging.DEBUG) else "; one line per job: labkit worker -v")
            self._reported = (jobs, errors, now)
        finally:
            self._report_lock.release()

