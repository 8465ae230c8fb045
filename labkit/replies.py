"""One client's replies: its own reply queue (``labkit-reply-<random>``) and the thread that reads it,
resolving each waiting :class:`~labkit.future.Job` by id and dropping duplicates (SQS delivers at least
once). The queue is made on first use and deleted by :meth:`Replies.close`. Replies read are deleted in calls of
ten, the last few within :data:`DELETE_AFTER` seconds (those still held when the Lab closes go with its queue).

While the client runs, the thread also re-tags the queue as seen (:data:`labkit.provision.LAST_SEEN_TAG`,
every :data:`~labkit.provision.REPLY_HEARTBEAT` seconds), so that someone else's ``labkit down`` or
``teardown`` leaves it alone. Should the queue disappear anyway (deleted by anyone), the thread makes a new
one, logs one line, and sends the jobs still waiting again, with the same ids and the new queue as
``reply_to``: the worker answers them there, and a second answer to one id is dropped as a duplicate.
A job this client did not send itself (:meth:`~labkit.client.Lab.track`) cannot be sent again: it fails
with an error that says so, rather than wait for a reply that cannot come. Should AWS refuse the client's
credentials (session keys expired), the jobs waiting fail at once with the one line that says what to do
(:class:`~labkit.errors.CredentialsError`), rather than wait for replies the client may not read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from labkit import provision
from labkit.aws.clients import Clients
from labkit.aws.queues import MAX_BATCH, Queue, is_missing_queue
from labkit.background import Background
from labkit.errors import CredentialsError, LabkitError, ProtocolError, credentials_error
from labkit.future import Job
from labkit.protocol import JobResult, json_loads, read_note
from labkit.timeline import event
from labkit.waiting import doubling, tries

RECEIVE_WAIT = 5  # seconds each receive waits
# Seconds a read reply's delete may wait for others to share its call (SQS deletes up to 10 per call): a student
# sending one job at a time pays one delete per few jobs, not one per job. Well under the reply queue's visibility
# timeout (SQS's default, 30 s), so that a reply read is never handed out again meanwhile.
DELETE_AFTER = 10.0
DONE_KEPT = 10_000  # answered jobs remembered per client, for duplicates and late notes
CLOSE_WAIT = 0.5  # seconds a close waits for the listening thread (a receive under way is not waited out)
RETRY_FIRST, RETRY_MOST = 0.5, 10.0  # seconds between tries of a failed round: doubling from the first to the most
log = logging.getLogger(__name__)


class Replies:
    """The reply queue of one client and the jobs waiting on it."""

    def __init__(self, clients: Clients, heartbeat: float = provision.REPLY_HEARTBEAT,
                 on_done: Callable[[Job], None] | None = None) -> None:
        self.clients = clients
        self.on_done = on_done  # called with each job once its answer has come (the Lab's journal)
        self.heartbeat = heartbeat  # seconds between refreshes of the queue's last-seen tag
        self.duplicates = 0
        self.strays = 0  # answers to ids this client never sent (never expected: counted, for the benchmark)
        self.replaced = 0  # times the queue was found deleted and made anew
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[str, Job] = {}
        self._stale: set[str] = set()  # pending jobs whose request names a reply queue that is gone
        # Answered jobs by id, the newest DONE_KEPT: a second answer is a duplicate (SQS redelivers within
        # minutes, not thousands of jobs later), and a late note still joins its job's timeline.
        self._done: OrderedDict[str, Job] = OrderedDict()
        self._queue: Queue | None = None
        self._next_beat = 0.0
        self._listener: threading.Thread | None = None
        self._closed = False
        self._stopped = threading.Event()  # set by close(): cuts an outage's backoff short
        self._deletes = Background("labkit-reply-deletes")  # replies read are deleted here (see _receive)
        self._held: list[tuple[float, str]] = []  # (when read, receipt) of replies read and not deleted yet
        self.delete_after = DELETE_AFTER

    @property
    def queue(self) -> Queue:
        """The reply queue (created on first use)."""
        with self._lock:
            if self._queue is None:
                if self._closed:
                    raise LabkitError("this Lab is closed")
                self._queue = provision.create_reply_queue(self.clients)
                self._next_beat = time.monotonic() + self.heartbeat
            return self._queue

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: no job can be sent with this reply queue any more."""
        return self._closed

    def track(self, jobs: Iterable[Job]) -> None:
        """Wait for the replies of ``jobs`` (listening starts with the first)."""
        with self._lock:
            current = self._queue.url if self._queue is not None else None
            for job in jobs:
                self._pending[job.id] = job
                if job.request is not None and job.request.reply_to != current:
                    self._stale.add(job.id)  # prepared just before the queue was replaced
            if self._listener is None or not self._listener.is_alive():
                self._listener = threading.Thread(target=self._listen, name="labkit-replies", daemon=True)
                self._listener.start()
            self._wake.notify_all()

    def forget(self, job: Job) -> None:
        """Stop waiting for ``job`` (its request was never sent)."""
        with self._lock:
            self._pending.pop(job.id, None)
            self._stale.discard(job.id)

    def close(self) -> list[Job]:
        """Stop listening, fail the jobs still waiting, delete the reply queue; returns the jobs it failed."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            self._stopped.set()
            self._wake.notify_all()
        if self._listener is not None:
            # Not waiting out a receive under way (up to RECEIVE_WAIT): the queue is deleted under it, and the
            # listener, finding the Lab closed, ends (a daemon thread: it never holds up the interpreter's exit).
            self._listener.join(timeout=CLOSE_WAIT)
        with self._lock:
            left = [job for job in self._pending.values() if not job.done()]
            self._pending.clear()
        for job in left:
            job.set_exception(LabkitError("the Lab was closed before the result arrived"))
        self._deletes.close(timeout=CLOSE_WAIT)  # the queue goes next: replies left in it go with it
        if self._queue is not None:
            try:
                self._queue.delete()
            except Exception:  # unreachable: a later `labkit down` deletes it once it is an hour idle
                pass
            self._queue = None
        return left

    # -- the listening thread ----------------------------------------------------------------------------
    def _listen(self) -> None:
        """Receive replies while jobs are pending, keep the queue marked as in use, replace it if it went. A round
        that fails (an outage: the replies stay in the queue) is tried again after a pause that doubles up to
        :data:`RETRY_MOST` seconds."""
        while True:
            for _ in tries(doubling(RETRY_FIRST, RETRY_MOST), wake=self._stopped):
                with self._lock:
                    while not self._pending and not self._closed and time.monotonic() < min(self._next_beat,
                                                                                             self._flush_at()):
                        self._wake.wait(min(self._next_beat, self._flush_at()) - time.monotonic())
                    if self._closed:
                        return
                    waiting = bool(self._pending)
                queue = None
                try:
                    queue = self.queue
                    self._upkeep(queue)
                    if waiting:
                        self._receive(queue)
                    self._flush(queue)
                    break
                except Exception as exc:
                    if self._closed:
                        return
                    if queue is not None and is_missing_queue(exc) and self._replace(queue):
                        break  # a new queue: the next round at once
                    refused = credentials_error(exc)
                    if refused is not None and not self.clients.renew():
                        self._fail_waiting(refused)

    def _fail_waiting(self, refused: CredentialsError) -> None:
        """AWS refuses this client's credentials: the jobs waiting end with that one line, not a timeout (an
        answer that comes after all, once the credentials are renewed, finds nothing waiting and is dropped)."""
        with self._lock:
            waiting = list(self._pending.values())
            self._pending.clear()
            self._stale.clear()
        for job in waiting:
            job.set_exception(refused)

    def _upkeep(self, queue: Queue) -> None:
        """Refresh the last-seen tag when due; send again the jobs whose reply queue is gone."""
        if time.monotonic() >= self._next_beat:
            self._next_beat = time.monotonic() + self.heartbeat
            try:
                provision.mark_seen(queue)
            except Exception as exc:
                if is_missing_queue(exc):
                    raise
                # An outage (the receive below meets it too) or no sqs:TagQueue permission: replies still
                # come; the queue only looks idle to a teardown an hour from now.
                log.debug("could not mark reply queue %s as seen: %s", queue.name, exc)
        if self._stale:
            self._resend(queue)

    def _receive(self, queue: Queue) -> None:
        messages = queue.receive(10, wait=RECEIVE_WAIT, receive_count=False)  # no attribute: never read
        # Answer the waiting jobs first; the replies' deletes are held and made in tens, on a thread of their own
        # (_flush): neither the jobs nor the next receive wait for a delete call.
        for m in messages:
            self._dispatch(m.body)
        now = time.monotonic()
        with self._lock:
            self._held += [(now, m.receipt) for m in messages]

    def _flush_at(self) -> float:
        """When the oldest reply read is due for deletion (call with the lock held)."""
        return self._held[0][0] + self.delete_after if self._held else float("inf")

    def flush(self) -> None:
        """Delete every reply read so far now, not when due (the benchmark counts these calls before it stops)."""
        with self._lock:
            queue = self._queue
        if queue is not None:
            self._flush(queue, now=True)

    def _flush(self, queue: Queue, now: bool = False) -> None:
        """Delete the replies read, in calls of 10: the full tens now, the rest once the oldest has waited
        ``delete_after`` seconds. A reply whose delete fails comes back later and is dropped as a duplicate."""
        with self._lock:
            due = now or time.monotonic() >= self._flush_at()
            n = len(self._held) if due else len(self._held) - len(self._held) % MAX_BATCH
            receipts = [r for _, r in self._held[:n]]
            del self._held[:n]
        if receipts:
            self._deletes.run(lambda: self._delete(queue, receipts))

    def _delete(self, queue: Queue, receipts: list[str]) -> None:
        try:
            queue.delete_batch(receipts)
        except Exception as exc:  # unreachable, or the queue was deleted (replaced, or the Lab closed)
            log.debug("could not delete %d read replies from %s: %s", len(receipts), queue.name, exc)

    def _replace(self, gone: Queue) -> bool:
        """``gone`` was deleted: make a new reply queue and mark every waiting job to be sent again.

        A new name, since SQS refuses to re-create a name for 60 s after its deletion. False when no queue
        could be made (an outage: the caller backs off and tries again)."""
        try:
            fresh = provision.create_reply_queue(self.clients)
        except Exception:
            return False
        with self._lock:
            closed = self._closed
            if not closed:
                self._held.clear()  # replies read from the queue that is gone: nothing to delete
                self._queue = fresh
                self._next_beat = time.monotonic() + self.heartbeat
                self._stale = set(self._pending)
                self.replaced += 1
                waiting = len(self._pending)
        if closed:
            with contextlib.suppress(Exception):
                fresh.delete()
            return True
        log.warning("labkit: reply queue %s was deleted (someone's teardown?); replies now come to %s; sending "
                    "the %d job(s) in flight again", gone.name, fresh.name, waiting)
        return True

    def _resend(self, queue: Queue) -> None:
        """Send the stale jobs' requests again, addressed to ``queue``. Jobs that cannot be sent again fail
        with the reason; an outage leaves the rest for the next round."""
        with self._lock:
            stale = [self._pending[i] for i in self._stale if i in self._pending]
            self._stale.clear()
        for n, job in enumerate(stale):
            try:
                if job.request is None:
                    raise LabkitError(
                        f"job {job.id}: its reply was addressed to a reply queue that was deleted meanwhile, and "
                        "this client did not send the request itself, so it cannot send it again: send the job again")
                job.request.resend(queue.url)
            except Exception as exc:
                if isinstance(exc, LabkitError) and (is_missing_queue(exc) or job.request is None):
                    self.forget(job)  # its request queue is gone too (a teardown?), or it is not ours to send
                    job.set_exception(exc if job.request is None else LabkitError(
                        f"job {job.id} could not be sent again after its reply queue was deleted, since its request "
                        f"queue is gone too (a teardown?): {exc}; `labkit up` makes the queues again"))
                    continue
                with self._lock:  # an outage: try these again on the next round
                    self._stale.update(j.id for j in stale[n:] if j.id in self._pending)
                return

    def _dispatch(self, body: str) -> None:
        try:
            reply = JobResult.decode(body)
        except ProtocolError:
            self._note(body)
            return
        with self._lock:
            job = self._pending.pop(reply.id, None)
            self._stale.discard(reply.id)
            if job is None:
                done = self._done.get(reply.id)
                if done is not None:
                    self.duplicates += 1
                    done.notes.append(event("duplicate", time.time()))
                else:
                    self.strays += 1
            else:
                done = None
                self._done[reply.id] = job
            if len(self._done) > DONE_KEPT:
                self._done.popitem(last=False)
        if job is not None:
            job.set_result(reply)
        answered = job or done  # a duplicate is recorded again: the journal keeps a job's newest line
        if answered is not None and self.on_done is not None:
            self.on_done(answered)

    def _note(self, body: str) -> None:
        """A worker's note on a job (a delivery it gave back): its events join the job's timeline. Anything
        else that is not an answer is not ours to understand; nothing waits for it."""
        try:
            data = json_loads(body)
        except (ValueError, RecursionError):
            return
        note = read_note(data) if isinstance(data, dict) else None
        if note is not None:
            with self._lock:
                job = self._pending.get(note[0]) or self._done.get(note[0])
            if job is not None:
                job.notes += note[1]
                if job.done() and self.on_done is not None:  # a late note: record the job again
                    self.on_done(job)
