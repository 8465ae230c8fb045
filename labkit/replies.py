"""One client's replies: its own reply queue (``labkit-reply-<random>``) and the thread that reads it,
resolving each waiting :class:`~labkit.job.Job` by id and dropping duplicates (SQS delivers at least
once). The queue is made on first use and deleted by :meth:`Replies.close`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from labkit import provision
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.errors import LabkitError, ProtocolError
from labkit.job import Job
from labkit.protocol import JobResult

RECEIVE_WAIT = 5  # seconds each receive waits: short enough to notice a close soon


class Replies:
    """The reply queue of one client and the jobs waiting on it."""

    def __init__(self, clients: Clients) -> None:
        self.clients = clients
        self.duplicates = 0
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._pending: dict[str, Job] = {}
        self._done_ids: set[str] = set()
        self._queue: Queue | None = None
        self._listener: threading.Thread | None = None
        self._closed = False
        self._stopped = threading.Event()  # set by close(): cuts an outage's backoff short

    @property
    def queue(self) -> Queue:
        """The reply queue (created on first use)."""
        with self._lock:
            if self._queue is None:
                if self._closed:
                    raise LabkitError("this Lab is closed")
                self._queue = provision.create_reply_queue(self.clients)
            return self._queue

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran: no job can be sent with this reply queue any more."""
        return self._closed

    def track(self, jobs: Iterable[Job]) -> None:
        """Wait for the replies of ``jobs`` (listening starts with the first)."""
        with self._lock:
            for job in jobs:
                self._pending[job.id] = job
            if self._listener is None or not self._listener.is_alive():
                self._listener = threading.Thread(target=self._listen, name="labkit-replies", daemon=True)
                self._listener.start()
            self._wake.notify_all()

    def forget(self, job: Job) -> None:
        """Stop waiting for ``job`` (its request was never sent)."""
        with self._lock:
            self._pending.pop(job.id, None)

    def close(self) -> None:
        """Stop listening, fail the jobs still waiting, delete the reply queue."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stopped.set()
            self._wake.notify_all()
        if self._listener is not None:
            self._listener.join(timeout=RECEIVE_WAIT + 5)
        for job in list(self._pending.values()):
            job._fail(LabkitError("the Lab was closed before the result arrived"))
        if self._queue is not None:
            try:
                self._queue.delete()
            except Exception:  # unreachable: `labkit down` cleans leftovers
                pass
            self._queue = None

    def _listen(self) -> None:
        """Receive replies while jobs are pending; resolve them by id, drop duplicates."""
        queue = self.queue
        backoff = 0.5
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
            try:
                messages = queue.receive(10, wait=RECEIVE_WAIT)
                # Answer the waiting jobs first, then delete: a reply whose delete fails comes back
                # later and is dropped as a duplicate, and nobody waits for the delete call.
                for m in messages:
                    self._dispatch(m.body)
                if messages:
                    queue.delete_batch([m.receipt for m in messages])
                backoff = 0.5
            except Exception:
                # An outage: the replies stay in the queue; try again with backoff.
                self._stopped.wait(backoff)
                backoff = min(backoff * 2, 10)

    def _dispatch(self, body: str) -> None:
        try:
            reply = JobResult.decode(body)
        except ProtocolError:
            return  # not ours to understand; nothing waits for it
        with self._lock:
            job = self._pending.pop(reply.id, None)
            if job is None:
                if reply.id in self._done_ids:
                    self.duplicates += 1
                return
            self._done_ids.add(reply.id)
        job._resolve(reply)
