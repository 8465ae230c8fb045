"""The client: ``Lab`` sends jobs and hands back futures (:class:`~labkit.future.Job`).

    with Lab() as lab:                       # settings from the environment / state file
        job = lab.numbers([1, 5, 22])
        print(job.result(timeout=30))        # {'count': 3, 'min': 1, ...}
        lab.numbers_many([[1, 2], [3, 4]])   # in order, with a progress bar

Each Lab owns a reply queue (``labkit-reply-<random>``, :mod:`labkit.replies`), deleted on ``close()``,
so two clients never see each other's results; it is marked as in use while the Lab runs, and made anew
(the jobs in flight sent again) if anyone deletes it. The EC2 fleet is :mod:`labkit.fleet`'s business.

Every job is journaled when it is sent (``labkit trace`` knows it even if no answer ever comes). A Lab closed
with jobs still unanswered (Ctrl-C while waiting, a timeout, the end of a script) gives them up: each gets a
``given_up`` event in the journal, one warning line names them, and their claim-check objects are deleted (the
reply queue goes with the Lab, so a worker that runs them later drops the answer: docs/protocol.md, "Delivery").
"""

from __future__ import annotations

import atexit
import contextlib
import io
import logging
import queue as queue_module
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labkit import kinds, provision
from labkit.aws.clients import Clients
from labkit.aws.queues import PurgeOutcome, Queue, is_missing_queue
from labkit.aws.storage import Bucket, ObjectInfo
from labkit.config import DLQ_SUFFIX, PROCESSED_PREFIX, UNPROCESSED_PREFIX, Settings, read_state
from labkit.endpoints import Endpoint, identify
from labkit.errors import AwsError, InvalidInput, JobTimeout, LabkitError, RemoteJobError
from labkit.flow import Window, adaptive_window, default_window
from labkit.future import DEFAULT_TIMEOUT, ImageResult, Job, SentRequest, SlowHook, download_target, folder_problem
from labkit.journal import Journal
from labkit.keys import content_type, format_for_key, safe_key, upload_key, upload_prefix
from labkit.protocol import JobRequest, encode_request, json_loads
from labkit.replies import Replies
from labkit.timeline import event

if TYPE_CHECKING:
    from labkit.jobs.image_pipeline import Pipeline  # imported when used: Pillow loads only for image jobs

# Above this many items a number list (or numpy array) travels as a compact .npy object through S3; up to it,
# inline in the message as JSON (docs/protocol.md, "Claim check").
ARRAY_THRESHOLD = 10_000
__all__ = ["ARRAY_THRESHOLD", "ImageResult", "Job", "Lab", "Window"]
log = logging.getLogger("labkit")


class Lab:
    """A labkit client: submit jobs, await results, purge queues, show status."""

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = settings or Settings.load(**overrides)
        self.clients = Clients(self.settings)
        self.journal = Journal(self.settings.state_dir)  # job timelines, for `labkit trace`
        self.replies = Replies(self.clients, on_done=self._record)
        self.jobs_sent = 0
        self.last_window: int | None = None  # the window the last submit_many ended with
        self._queues: dict[str, Queue] = {}
        self._unserved_said: set[str] = set()  # kinds this client said no worker loads (Job.result, when slow)
        self.slow_hooks: list[SlowHook] = [_unserved, _scale_out]  # asked in turn when a result is slow
        self._bucket: Bucket | None = None
        atexit.register(self._exiting)

    # -- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        why = "interrupted" if exc_type is KeyboardInterrupt else "timed out" if exc_type is JobTimeout else \
            "closed after an error" if exc_type is not None else "closed"
        self.close(why)

    def close(self, why: str = "closed") -> None:
        """Stop listening and delete this client's reply queue. Jobs still unanswered are given up (``why``
        says how the client ended, for their timelines): see the module's docstring."""
        atexit.unregister(self._exiting)
        left = self.replies.close()
        try:
            if left:
                self._give_up(left, why)
        finally:
            self.journal.flush()

    def _exiting(self) -> None:
        self.close("the program ended")

    def _record(self, job: Job) -> None:
        self.journal.record(job.id, job.kind, job.submitted, job.finished,
                            job.reply.events if job.reply is not None else None, job.notes)

    def _give_up(self, jobs: list[Job], why: str) -> None:
        """Journal the jobs left unanswered, say so in one line, delete their claim-check objects."""
        now = time.time()
        for job in jobs:
            job.notes.append(event("given_up", now, why=why))
            self._record(job)
        self.journal.flush()  # before anything slow: a second Ctrl-C must not lose the journal
        first = jobs[0].id
        log.warning("labkit: %s not answered when this client stopped waiting (%s); a worker that runs %s later drops "
                    "the answer; `labkit trace %s` shows %s", f"job {first} was" if len(jobs) == 1 else
                    f"{len(jobs)} jobs were (the first: {first})", why, "it" if len(jobs) == 1 else "them",
                    first[:12], "what is known" if len(jobs) == 1 else "the first")
        for job in jobs:
            if job.request is not None:
                self._delete_claim_check(job.request.body)

    def _delete_claim_check(self, body: str) -> None:
        """Delete the S3 object a request's payload travelled in, if it did (no one will read it now)."""
        with contextlib.suppress(Exception):  # best effort: the bucket's lifecycle rule expires it anyway
            ref = json_loads(body).get("payload_ref")
            if isinstance(ref, dict) and ref.get("bucket") == self.bucket.name:
                self.bucket.delete(ref["key"])

    # -- resources -----------------------------------------------------------------------------------
    @property
    def bucket(self) -> Bucket:
        if self._bucket is None:
            self._bucket = Bucket(self.clients.s3, self.clients.bucket_name())
        return self._bucket

    def queue(self, name: str) -> Queue:
        """A queue by name, looked up once."""
        q = self._queues.get(name)
        if q is None:
            q = self._queues[name] = Queue.by_name(self.clients.sqs, name)
        return q

    @property
    def reply_queue(self) -> Queue:
        """This client's own reply queue (created on first use)."""
        return self.replies.queue

    @property
    def duplicates(self) -> int:
        """Duplicate replies dropped so far (SQS delivers at least once)."""
        return self.replies.duplicates

    # -- submitting ----------------------------------------------------------------------------------
    @property
    def group_id(self) -> str:
        """The MessageGroupId of this client's requests: its reply queue's name, one per client. On a standard
        queue, SQS fair queues share the fleet between these groups, so that one client's thousands of jobs do
        not hold back another's few (docs/aws.md, "Running a class"); elsewhere it is carried and ignored."""
        return self.reply_queue.name

    def _request_queue(self, kind: str) -> Queue:
        """The queue ``kind``'s jobs are sent to: a lane's for a built-in kind; for a kind of one's own, its own
        queue (docs/protocol.md, "Your own job kinds"), made on first use when no worker that loads it made it yet."""
        name = kinds.request_queue_for(self.settings, kind)
        if kind in kinds.BUILTIN or name in self._queues:
            return self.queue(name)
        queue, made = provision.ensure_kind_queue(self.clients, kind)
        if made:  # a worker that loads the kind makes its queue when it starts: none did
            log.warning("labkit: no worker loads job kind %r yet: its jobs wait in the queue %s until a worker "
                        "starts with LABKIT_JOB_MODULES naming its module", kind, queue.name)
        self._queues[name] = queue
        return queue

    def unserved(self, kind: str) -> tuple[str | None, bool]:
        """Why a job of ``kind`` (a kind of one's own) waits, when its queue shows that no worker takes from it (jobs
        visible, none in flight), and whether that is news to this client; (None, False) otherwise."""
        queue = None if kind in kinds.BUILTIN else self._queues.get(kinds.request_queue_for(self.settings, kind))
        depth = queue.depth() if queue is not None else {"visible": 0, "in_flight": 0}
        if queue is None or depth["in_flight"] or not depth["visible"]:
            return None, False
        news = kind not in self._unserved_said
        self._unserved_said.add(kind)
        return (f"no worker loads job kind {kind!r}: its queue {queue.name} holds {depth['visible']} job(s) that no "
                "worker takes; start one with LABKIT_JOB_MODULES naming its module"), news

    def _prepare(self, kind: str, payloads: Sequence[dict[str, Any]]) -> list[tuple[Job, str]]:
        """Jobs and request bodies for ``payloads`` (the queues looked up once for all)."""
        reply_to = self.reply_queue.url
        queue = self._request_queue(kind)
        store, max_inline = self.bucket, self.settings.max_inline_bytes
        out = []
        for payload in payloads:
            req = JobRequest(kind=kind, payload=payload, reply_to=reply_to)
            body = encode_request(req, store, max_inline)
            # The job keeps its request until answered: should the reply queue vanish, Replies sends it again.
            out.append((Job(self, req.id, kind, SentRequest(queue, body, reply_to)), body))
        return out

    def track(self, job_id: str, kind: str) -> Job:
        """A :class:`Job` for a request sent by other means with ``reply_to`` set to this client's
        reply queue (raw bodies, other tools): its reply resolves the returned job. (Should the reply queue
        be deleted before the reply arrives, this client cannot send the request again: the job fails.)"""
        job = Job(self, job_id, kind)
        self.replies.track([job])
        return job

    def submit(self, kind: str, payload: dict[str, Any]) -> Job:
        """Send one job of any kind (built in, or added with :func:`labkit.kinds.job_kind`)."""
        [(job, body)] = self._prepare(kind, [payload])
        self.replies.track([job])
        try:
            self._request_queue(kind).send(body, group=self.group_id)
        except Exception:
            self.replies.forget(job)
            self._delete_claim_check(body)  # never sent: nobody will read it
            raise
        self.jobs_sent += 1
        self._record(job)  # journaled at send: `labkit trace` knows a job whose answer never comes
        self.journal.flush()
        return job

    def submit_many(self, kind: str, payloads: Sequence[dict[str, Any]], window: int | None = None,
                    progress: bool | None = None, desc: str | None = None,
                    on_progress: Callable[[int, int], None] | None = None) -> list[Job]:
        """Send many jobs in batches of 10, keeping at most ``window`` unanswered; returns when all are
        answered (or failed). ``window`` None: adaptive within bounds (:class:`Window`; the size it ended
        with is kept in ``last_window``). ``progress``: a tqdm bar (None: only for 50 jobs or more).
        ``on_progress(done, total)`` is called as jobs finish (e.g. to move a progress widget)."""
        flow = Window(window) if window else adaptive_window(self.endpoint)
        queue = self._request_queue(kind)
        jobs: list[Job] = []
        finished: queue_module.SimpleQueue[Job] = queue_module.SimpleQueue()  # jobs as they end, in that order
        outstanding = 0
        done = 0
        bar = _progress(len(payloads), desc or f"{kind} jobs", progress)
        try:
            i = 0
            while i < len(payloads) or outstanding:
                room = flow.size - outstanding
                if i < len(payloads) and room >= min(10, flow.size):
                    batch = self._prepare(kind, payloads[i:i + min(10, room)])
                    for job, _ in batch:  # each job tells when it ends: no wait over every outstanding job
                        job.add_done_callback(finished.put)
                    self.replies.track(j for j, _ in batch)
                    failures = queue.send_batch([b for _, b in batch], group=self.group_id)
                    for f in failures:
                        job, body = batch[f.index]
                        self.replies.forget(job)
                        self._delete_claim_check(body)
                        job.set_exception(AwsError(f"sending job failed: {f.message}", code=f.code))
                    for job, _ in batch:
                        if not job.done():
                            self._record(job)  # journaled at send (written with the journal's next flush)
                    jobs += [j for j, _ in batch]
                    outstanding += len(batch)
                    self.jobs_sent += len(batch) - len(failures)
                    i += len(batch)
                    ended = _drain(finished)
                else:
                    try:
                        ended = [finished.get(timeout=DEFAULT_TIMEOUT)] + _drain(finished)
                    except queue_module.Empty:
                        raise JobTimeout(f"no result for {outstanding} job(s) in {DEFAULT_TIMEOUT:.0f} s: "
                                         "is a worker running? (`labkit status`)") from None
                for j in ended:
                    if j.latency is not None:
                        flow.observe(j.latency)
                outstanding -= len(ended)
                done += len(ended)
                if bar is not None:
                    bar.n = done
                    bar.refresh()
                if on_progress is not None:
                    on_progress(done, len(payloads))
        finally:
            self.last_window = flow.size
            if bar is not None:
                bar.close()
        return jobs

    def default_window(self) -> int:
        """Outstanding jobs to start with (see :func:`labkit.flow.default_window`)."""
        return default_window(self.endpoint)

    @property
    def endpoint(self) -> Endpoint:
        """What answers at this Lab's endpoint (AWS, moto, fauxqs, ...): the window is chosen by it."""
        return identify(self.settings.endpoint_url)

    # -- number jobs ---------------------------------------------------------------------------------
    def numbers(self, values: Sequence[Any] | np.ndarray | str) -> Job:
        """Send a number job. Lists and arrays of more than :data:`ARRAY_THRESHOLD` (10,000) numbers travel as
        compact binary (.npy) through S3; shorter ones inline in the message."""
        return self.submit("numbers", {"numbers": _numbers_payload(values)})

    def numbers_many(self, lists: Sequence[Sequence[Any]], window: int | None = None,
                     progress: bool | None = None, errors: str = "raise") -> list[Any]:
        """Run many number jobs; results in order. ``errors="return"`` puts exceptions in the list
        instead of raising the first one."""
        jobs = self.submit_many("numbers", [{"numbers": _numbers_payload(v)} for v in lists], window, progress)
        out: list[Any] = []
        for job in jobs:
            try:
                out.append(job.result(timeout=0))
            except (RemoteJobError, AwsError, JobTimeout) as exc:
                if errors == "raise":
                    raise
                out.append(exc)
        return out

    def random_numbers(self, n: int, low: float = -1000, high: float = 1000, integers: bool = True,
                       seed: int | None = None) -> np.ndarray:
        """A random list of length ``n`` (the original lab's third option)."""
        from labkit.jobs import numbers as numbers_job  # here: the job's own code loads when a path needs it
        if not 1 <= n <= numbers_job.MAX_RANDOM_LENGTH:
            raise InvalidInput(f"a random list needs a length of at least 1 and at most "
                               f"{numbers_job.MAX_RANDOM_LENGTH:,}, got {n:,}: for more, send several jobs")
        rng = np.random.default_rng(seed)
        if integers:
            return rng.integers(int(low), int(high), size=n, endpoint=True, dtype=np.int64)
        return rng.uniform(low, high, size=n)

    # -- image jobs ----------------------------------------------------------------------------------
    def upload_image(self, image: str | Path | bytes | Any, name: str | None = None) -> str:
        """Put an image (path, bytes or PIL image) at ``images/unprocessed/[<caller id>/]<hash>/<name>``; returns
        its key.

        ``<hash>`` comes from the content (:func:`labkit.keys.upload_key`): another file with the same
        name, uploaded by anyone sharing the bucket, never replaces this one. ``<caller id>`` where IAM tells
        callers apart (on AWS): the prefix a student may list on a class's bucket."""
        data, default_name, ctype = _image_bytes(image)
        key = upload_key(data, name or default_name, owner=self.clients.caller_id())
        self.bucket.put(key, data, ctype)
        return key

    def list_images(self, folder: str = "unprocessed") -> list[ObjectInfo]:
        """The images in ``unprocessed`` or ``processed`` (name, size, modified). A student on a class's bucket
        may list its own uploads only (``labkit policy student``): then those."""
        prefixes = {"unprocessed": UNPROCESSED_PREFIX, "processed": PROCESSED_PREFIX}
        if folder not in prefixes:
            raise InvalidInput(f"folder must be 'unprocessed' or 'processed', got {folder!r}")
        try:
            return self.bucket.list(prefixes[folder])
        except AwsError as exc:
            own = self.clients.caller_id()
            if folder != "unprocessed" or exc.code not in ("AccessDenied", "403") or own is None:
                raise
            return self.bucket.list(upload_prefix(own))

    def image(self, image: str | Path | bytes | Any, ops: Sequence[dict[str, Any] | str] | Pipeline = (),
              format: str = "png", quality: int | None = None, name: str | None = None,
              output: str | None = None) -> Job:
        """Process an image: uploads it first unless it names an object already in the bucket.

        ``ops`` are specs (``"resize:256x"``), protocol dicts, or a pipeline from ``validate_ops``; they,
        ``format`` and ``quality`` are checked once here, so mistakes fail before anything is uploaded
        (the worker checks them again: it trusts no message)."""
        from labkit.jobs import images
        pipeline = images.parse_ops(ops)
        images.check_output(format, quality)
        key = self._image_key(image, name)
        return self.submit("image", images.job_payload(self.bucket.name, key, pipeline, format, quality, output))

    def _image_key(self, image: Any, name: str | None) -> str:
        if isinstance(image, str) and not Path(image).exists():
            key = safe_key(UNPROCESSED_PREFIX, image)
            if not self.bucket.exists(key):
                raise InvalidInput(f"{image!r} is neither a file here nor an image in the bucket")
            return key
        return self.upload_image(image, name)

    def download_image(self, name: str, dest: str | Path | None = None) -> Path:
        """Fetch ``images/processed/<name>`` (or any full key, such as ``ImageResult.key``) to ``dest``: a file, or
        a folder (one that exists, or a path ending in ``/``, made if missing) to save into under the key's last
        part (``cat.png``); returns the path. A place that cannot be written is one :class:`LabkitError` that
        says why and where the result stays in the bucket."""
        key = name if name.startswith("images/") else safe_key(PROCESSED_PREFIX, name)
        target = download_target(dest, Path(key).name)  # "out/" or an existing folder: into it, as out/cat.png
        problem = folder_problem(target.parent)  # before the download: nothing fetched for nowhere to put it
        if problem is None:
            data = self.bucket.get(key)
            try:
                target.write_bytes(data)
                return target
            except OSError as exc:
                problem = f"cannot write {target}: {exc.strerror or exc}"
        raise LabkitError(f"{problem}; the result stays in the bucket as s3://{self.bucket.name}/{key}: fetch it "
                          f"with `labkit download {key} --out PATH` (in Python: .download(PATH) on the result)")

    # -- queues and status ---------------------------------------------------------------------------
    def purge(self, which: str | None = "all") -> list[PurgeOutcome]:
        """Empty a queue (by name or role: requests, responses, inbox, outbox) or ``all``: the four and the kind
        queues of one's own that exist (not the dead-letter queues); returns
        each queue's outcome: purged, refused (SQS allows one purge per queue every 60 s; ``retry_in``
        says how long is left when this Lab made the last purge) or failed. Every queue is tried. A name that
        is none of labkit's queues and does not exist raises :class:`InvalidInput` naming labkit's queues.
        ``None``: what the caller may purge: those of ``all``, of which those its credentials may not purge (a
        student's, in a class) come back failed with AWS's AccessDenied (:func:`labkit.presenters.purge_denied`),
        and this Lab's own reply queue if it made one."""
        every = which in ("all", None)
        kind_queues = provision.kind_queues(self.clients) if every else []  # dead letters stay, as the lanes'
        known = [*self.settings.queue_names().values(), *sorted(q.name for q in kind_queues
                                                               if not q.name.endswith(DLQ_SUFFIX))]
        targets = known if every else [kinds.queue_name(self.settings, str(which))]
        outcomes = []
        for name in targets:
            try:
                outcomes.append(self.queue(name).purge_outcome())
            except AwsError as exc:  # the queue cannot be looked up (it does not exist)
                if is_missing_queue(exc) and name not in known:  # not one of labkit's: a typo, say
                    choices = kinds.queue_choices(self.settings)
                    raise InvalidInput(f"there is no queue {name!r}: labkit's queues are {choices}; give one, "
                                       "a short name, or all") from None
                outcomes.append(PurgeOutcome(name, False, error=str(exc)))
        made = self.replies._queue  # this Lab's reply queue, if it made one (asking .queue would make one)
        if which is None and made is not None:
            outcomes.append(made.purge_outcome())
        return outcomes

    def status(self) -> dict[str, Any]:
        """Endpoint, queues and depths, bucket, the credentials in use (kind, expiry where known), and the local
        workers recorded by ``labkit up`` with what they said of themselves (waiting for renewed credentials,
        stopped for want of them)."""
        from labkit.local import worker_notes  # here: the local stack (emulator, processes) loads for status only
        out = provision.status(self.clients)
        state = read_state(self.settings.state_dir)
        out["workers"] = state.get("workers", [])
        out["worker_notes"] = worker_notes(self.settings.state_dir, out["workers"])
        return out

    def stats(self) -> dict[str, Any]:
        """AWS API calls made by this client so far, by operation, and per job sent."""
        calls = self.clients.counter.snapshot()
        total = sum(calls.values())
        return {"jobs_sent": self.jobs_sent, "api_calls": total, "calls": calls,
                "calls_per_job": total / self.jobs_sent if self.jobs_sent else None,
                "duplicates_dropped": self.replies.duplicates}


def _numbers_payload(values: Any) -> Any:
    """A list of more than ARRAY_THRESHOLD numbers, or such an array, as an array (it travels as .npy); a shorter
    array as a list (checked first, so that it is refused here as a long one is), to travel inline."""
    from labkit.jobs import numbers as numbers_job  # here: the job's own code loads with the first numbers job
    if isinstance(values, np.ndarray):
        array = numbers_job.to_array(values)
        return array if array.size > ARRAY_THRESHOLD else array.tolist()
    if isinstance(values, Sequence) and not isinstance(values, str) and len(values) > ARRAY_THRESHOLD:
        return numbers_job.to_array(values)
    if isinstance(values, tuple):
        return list(values)
    return values


def _image_bytes(image: Any) -> tuple[bytes, str, str]:
    """(data, default name, content type) for a path, bytes or PIL image."""
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise InvalidInput(f"no image file at {path}")
        return path.read_bytes(), path.name, content_type(format_for_key(path.name))
    if isinstance(image, bytes | bytearray):
        return bytes(image), "upload.bin", "application/octet-stream"  # the key's hash tells uploads apart
    if hasattr(image, "save") and hasattr(image, "mode"):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue(), "image.png", "image/png"
    raise InvalidInput(f"cannot upload a {type(image).__name__}: give a path, bytes or a PIL image")


def _progress(total: int, desc: str, show: bool | None) -> Any:
    if show is False or (show is None and total < 50):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="job")


def _drain(finished: queue_module.SimpleQueue[Job]) -> list[Job]:
    """What ``finished`` holds now, without waiting."""
    out = []
    while True:
        try:
            out.append(finished.get_nowait())
        except queue_module.Empty:
            return out


def _unserved(job: Job) -> tuple[str | None, bool]:
    """A slow result's kind that no worker loads (:meth:`Lab.unserved`): one of :attr:`Lab.slow_hooks`."""
    return job.lab.unserved(job.kind)


def _scale_out(job: Job) -> tuple[str | None, bool]:
    """A slow result waiting for a fleet's scale-out from zero: the fleet's word (:func:`labkit.fleet.coldstart.notice`,
    loaded only when a result is slow; it asks AWS nothing when the state names no Auto Scaling fleet)."""
    from labkit.fleet import coldstart
    return coldstart.notice(job.lab.clients)
