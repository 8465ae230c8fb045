"""What a submitted job hands back: a :class:`Job` (a future for the worker's reply) and, for image jobs,
an :class:`ImageResult` naming the processed image in the bucket."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.errors import JobTimeout, LabkitError, RemoteJobError
from labkit.protocol import JobResult, load_result
from labkit.timeline import of_job

if TYPE_CHECKING:
    from labkit.client import Lab

DEFAULT_TIMEOUT = 120.0
NOTICE_AFTER = 10.0  # seconds (at most half the timeout) before a slow result makes the client look for why
log = logging.getLogger("labkit")
# Every job's end is announced on this one condition: a job carries no lock of its own (a client makes
# thousands of jobs a second). A waiter wakes on any end and looks again at its own job. Measured
# (tests/bench_future.py): a condition per job costs 2.2 µs more client CPU per job and 290 -> 1,394 bytes per job.
_ENDED = threading.Condition(threading.Lock())
# Why a result is slow, asked once a wait passes NOTICE_AFTER: (one line, or None when this hook cannot tell;
# whether this client hears it for the first time). The Lab lists them in ``Lab.slow_hooks``: a kind no worker
# loads, a fleet's scale-out from zero (labkit.fleet.coldstart); the future itself knows neither.
SlowHook = Callable[["Job"], "tuple[str | None, bool]"]


@dataclass
class SentRequest:
    """How a job was sent (the queue, the body, the reply queue it names): enough to send it again."""

    queue: Any  # a labkit.aws.queues.Queue
    body: str
    reply_to: str

    def resend(self, reply_to: str) -> None:
        """Send the same request (same id, same payload or claim check) again, its replies to ``reply_to``."""
        request = json.loads(self.body)
        request["reply_to"] = reply_to
        body = json.dumps(request, separators=(",", ":"))
        self.queue.send(body)
        self.body, self.reply_to = body, reply_to


class Job:
    """A submitted job, with the shape of a :class:`concurrent.futures.Future`: ``result(timeout)`` waits for
    the worker's answer; whoever receives it ends the job with :meth:`set_result` or :meth:`set_exception`, and
    :meth:`add_done_callback` says when."""

    __slots__ = ("_callbacks", "_ended", "_error", "finished", "id", "kind", "lab", "notes", "reply", "request",
                 "submitted")
    _ended_on = _ENDED  # the condition its end is announced on (tests/bench_future.py gives each job its own)

    def __init__(self, lab: Lab, job_id: str, kind: str, request: SentRequest | None = None) -> None:
        self.lab = lab
        self.id = job_id
        self.kind = kind
        self.request = request  # None once answered, or when sent by other means (Lab.track)
        self.submitted = time.time()
        self.finished: float | None = None
        self.reply: JobResult | None = None
        self.notes: list[dict[str, Any]] = []  # events the client saw besides the answer (labkit.timeline)
        self._ended = False
        self._error: BaseException | None = None
        self._callbacks: list[Callable[[Job], object]] | None = None  # made by the first add_done_callback

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<Job {self.kind} {self.id[:8]} {state}>"

    def done(self) -> bool:
        """True once the job was answered or failed."""
        return self._ended

    @property
    def latency(self) -> float | None:
        """Seconds from submit to the result's arrival."""
        return None if self.finished is None else self.finished - self.submitted

    def set_result(self, reply: JobResult) -> bool:
        """The worker's answer came: ``result()`` returns (or raises) what it says. The first answer or exception
        wins; a later one is ignored and False returned (concurrent.futures raises InvalidStateError instead, but
        here a duplicate answer and a closing Lab may race to end a job, and neither is an error)."""
        return self._end(reply, None)

    def set_exception(self, exc: BaseException) -> bool:
        """The job cannot be answered: ``result()`` raises ``exc``. False when the job had already ended."""
        return self._end(None, exc)

    def add_done_callback(self, fn: Callable[[Job], object]) -> None:
        """Call ``fn(job)`` once, when the job ends, on the thread that ends it; at once, on this thread, when it
        has already ended. Callbacks run in the order added; one that raises is logged (``labkit`` logger), not
        raised, and the others still run."""
        with self._ended_on:
            if not self._ended:
                if self._callbacks is None:
                    self._callbacks = [fn]
                else:
                    self._callbacks.append(fn)
                return
        self._call(fn)

    def _end(self, reply: JobResult | None, error: BaseException | None) -> bool:
        with self._ended_on:
            if self._ended:
                return False
            if reply is not None:
                self.finished = time.time()
                self.reply = reply
                self.request = None  # not needed any more: free the body
            self._error = error
            self._ended = True
            callbacks, self._callbacks = self._callbacks, None
            self._ended_on.notify_all()
        for fn in callbacks or ():
            self._call(fn)
        return True

    def _call(self, fn: Callable[[Job], object]) -> None:
        try:
            fn(self)
        except Exception:  # the thread that ends jobs (the reply listener) must go on for the other jobs
            log.exception("labkit: a done callback of %r failed", self)

    def _await(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: for ever) for the job to end; True when it has."""
        if self._ended:
            return True
        with self._ended_on:
            return self._ended_on.wait_for(lambda: self._ended, timeout)

    def timeline(self) -> list[dict[str, Any]]:
        """The job's life so far, in time order: ``sent`` and ``result`` as this client saw them, merged with
        the events the workers reported (``received`` once per delivery, ``started``, ``finished``,
        ``replied``; ``visibility_extended``, ``released``, ``abandoned``, ``redriven`` when they happen)
        and ``duplicate`` for a second answer dropped. See docs/protocol.md, "Timelines"."""
        return of_job(self.submitted, self.finished, self.reply.events if self.reply is not None else None, self.notes)

    def result(self, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """The job's result (a dict; an :class:`ImageResult` for image jobs).

        Raises :class:`RemoteJobError` when the worker answered with an error, :class:`CredentialsError` (one line
        that says what to do) as soon as AWS refuses this client's credentials while it waits, and
        :class:`JobTimeout` when nothing arrived within ``timeout`` seconds.
        """
        if not self._wait(timeout):
            why, _ = self._why_slow()
            raise JobTimeout(f"no result for {self.kind} job {self.id} after {timeout:.0f} s: "
                             + (why or "is a worker running? (`labkit status`)")) from None
        if self._error is not None:
            raise self._error
        reply = self.reply
        assert reply is not None
        if not reply.ok:
            err = reply.error or {}
            raise RemoteJobError(err.get("message", "unknown error"), err.get("code", "internal"), self.id)
        content = load_result(reply, self.lab.bucket)
        if self.kind == "image":
            return ImageResult(self.lab, content or {})
        return content

    def _wait(self, timeout: float | None) -> bool:
        """Wait for the end; when it is slow, says once (a warning on the ``labkit`` logger) if the fleet knows
        why. False when ``timeout`` passed first."""
        first = NOTICE_AFTER if timeout is None else min(NOTICE_AFTER, timeout / 2)
        if self._await(first):
            return True
        why, new = self._why_slow()
        if new:
            log.warning("labkit: %s", why)
        return self._await(None if timeout is None else timeout - first)

    def _why_slow(self) -> tuple[str | None, bool]:
        """Why no result has come yet, if one of the Lab's ``slow_hooks`` can tell, and whether it is news."""
        for hook in getattr(self.lab, "slow_hooks", ()):  # a Job made without a Lab (a test) has none
            try:
                why, news = hook(self)
            except LabkitError:  # may not read a queue or the group (a classroom account, say): say nothing of it
                continue
            if why:
                return why, news
        return None, False


@dataclass
class ImageResult:
    """A processed image in the bucket: ``download``, ``open`` or ``url`` it."""

    lab: Lab
    info: dict[str, Any]

    @property
    def key(self) -> str:
        return self.info["key"]

    def __getitem__(self, name: str) -> Any:
        return self.info[name]

    def download(self, dest: str | Path | None = None) -> Path:
        """Save to ``dest`` and return the path. ``dest`` is a file, or a folder (one that exists, or a path
        ending in ``/``: made if missing) to save into under the result's own name (``cat.png``); default:
        the current folder. When it cannot be written, one :class:`LabkitError` says why and where the
        result stays in the bucket (:meth:`labkit.client.Lab.download_image`)."""
        return self.lab.download_image(self.key, dest)

    def open(self) -> Any:
        """The result as a PIL image."""
        from PIL import Image
        img = Image.open(io.BytesIO(self.lab.bucket.get(self.key)))
        img.load()
        return img

    def url(self, expires: int = 900) -> str:
        """A presigned URL that reads the image for ``expires`` seconds."""
        return self.lab.bucket.presign(self.key, expires)


def names_folder(dest: str | Path | None) -> bool:
    """True when ``dest`` means a folder to save into: None (the current folder), a folder that exists, or a
    path written with a trailing ``/`` (which need not exist yet)."""
    return dest is None or str(dest).endswith(("/", os.sep)) or Path(dest).is_dir()


def download_target(dest: str | Path | None, name: str) -> Path:
    """The file a download called ``name`` lands in: ``dest/name`` when ``dest`` names a folder
    (:func:`names_folder`), else ``dest`` itself."""
    folder = Path(".") if dest is None else Path(dest)
    return folder / name if names_folder(dest) else folder


def folder_problem(folder: Path) -> str | None:
    """Make ``folder`` (and its parents) when missing; None when files can then be written in it, else one
    line saying why not."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return f"cannot make the folder {folder}: {blocker} is a file"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot make the folder {folder}: {exc.strerror or exc}"
    if not os.access(folder, os.W_OK | os.X_OK):  # a read-only file system says no even to root
        return f"cannot write into the folder {folder}: it is read-only here"
    return None


def writable_folder(folder: Path) -> Path:
    """``folder``, made when missing; :class:`LabkitError` when files cannot be written in it."""
    problem = folder_problem(folder)
    if problem is not None:
        raise LabkitError(problem)
    return folder
