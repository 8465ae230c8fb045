"""The client: ``Lab`` sends jobs and hands back futures.

    with Lab() as lab:                       # settings from the environment / state file
        job = lab.numbers([1, 5, 22])
        print(job.result(timeout=30))        # {'count': 3, 'min': 1, ...}
        lab.numbers_many([[1, 2], [3, 4]])   # in order, with a progress bar

Each Lab owns a reply queue (``labkit-reply-<random>``), deleted on ``close()``, so two clients
never see each other's results. Duplicate replies (SQS delivers at least once) are dropped by id.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import io
import math
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from botocore.exceptions import ClientError

from labkit import provision
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.aws.storage import Bucket, ObjectInfo, safe_key
from labkit.config import PROCESSED_PREFIX, REPLY_QUEUE_PREFIX, UNPROCESSED_PREFIX, Settings, read_state
from labkit.errors import AwsError, InvalidInput, JobTimeout, LabkitError, ProtocolError, RemoteJobError
from labkit.jobs import numbers as numbers_job
from labkit.protocol import JobRequest, JobResult, encode_request, load_result

DEFAULT_TIMEOUT = 120.0
# Above this many items a number list travels as a compact .npy object through S3.
ARRAY_THRESHOLD = 10_000


class Job:
    """A submitted job: ``result(timeout)`` waits for the worker's answer."""

    def __init__(self, lab: Lab, job_id: str, kind: str) -> None:
        self.lab = lab
        self.id = job_id
        self.kind = kind
        self.submitted = time.time()
        self.finished: float | None = None
        self.reply: JobResult | None = None
        self._future: cf.Future[JobResult] = cf.Future()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<Job {self.kind} {self.id[:8]} {state}>"

    def done(self) -> bool:
        return self._future.done()

    @property
    def latency(self) -> float | None:
        """Seconds from submit to the result's arrival."""
        return None if self.finished is None else self.finished - self.submitted

    def _resolve(self, reply: JobResult) -> None:
        self.finished = time.time()
        self.reply = reply
        if not self._future.done():
            self._future.set_result(reply)

    def _fail(self, exc: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(exc)

    def result(self, timeout: float | None = DEFAULT_TIMEOUT) -> Any:
        """The job's result (a dict; an :class:`ImageResult` for image jobs).

        Raises :class:`RemoteJobError` when the worker answered with an error, and
        :class:`JobTimeout` when nothing arrived within ``timeout`` seconds.
        """
        try:
            reply = self._future.result(timeout=timeout)
        except cf.TimeoutError:
            raise JobTimeout(f"no result for {self.kind} job {self.id} after {timeout:.0f} s: is a worker "
                             "running? (`labkit status`)") from None
        if not reply.ok:
            err = reply.error or {}
            raise RemoteJobError(err.get("message", "unknown error"), err.get("code", "internal"), self.id)
        content = load_result(reply, self.lab.bucket)
        if self.kind == "image":
            return ImageResult(self.lab, content or {})
        return content


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
        """Save to ``dest`` (a file or a folder; default: the current folder); returns the path."""
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


class Window:
    """How many jobs :meth:`Lab.submit_many` keeps unanswered: ``size``, fixed unless ``low < high``.

    Adaptive, it widens while answers come back about as fast as the fastest seen (under 2x: the workers
    keep up, more in flight means more throughput) and narrows when they come back over 4x slower (jobs
    wait in the queue: more in flight only adds latency and, on the emulator, slows its queues down).
    It decides once per ``size`` answers.
    """

    def __init__(self, size: int, low: int | None = None, high: int | None = None) -> None:
        if size < 1:
            raise InvalidInput(f"the window must be at least 1 job, got {size}")
        self.low = min(size, low or size)
        self.high = max(size, high or size)
        self.size = size
        self.fastest = math.inf
        self._epoch: list[float] = []

    def __repr__(self) -> str:
        return f"Window({self.size}, low={self.low}, high={self.high})"

    def observe(self, latency: float) -> None:
        """One answered job's latency (seconds from submit to answer)."""
        if self.low == self.high:
            return
        self.fastest = min(self.fastest, latency)
        self._epoch.append(latency)
        if len(self._epoch) < self.size:
            return
        typical = statistics.median(self._epoch)
        self._epoch.clear()
        if typical < 2 * self.fastest:
            self.size = min(self.high, self.size + max(10, self.size // 2))
        elif typical > 4 * self.fastest:
            self.size = max(self.low, self.size - max(10, self.size // 4))


class Lab:
    """A labkit client: submit jobs, await results, purge queues, show status."""

    def __init__(self, settings: Settings | None = None, **overrides: Any) -> None:
        self.settings = settings or Settings.load(**overrides)
        self.clients = Clients(self.settings)
        self._lock = threading.Lock()
        self._pending: dict[str, Job] = {}
        self._done_ids: set[str] = set()
        self.duplicates = 0
        self.jobs_sent = 0
        self.last_window: int | None = None  # the window the last submit_many ended with
        self._queues: dict[str, Queue] = {}
        self._reply: Queue | None = None
        self._bucket: Bucket | None = None
        self._listener: threading.Thread | None = None
        self._wake = threading.Condition(self._lock)
        self._closed = False
        atexit.register(self.close)

    # -- lifecycle -----------------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and delete this client's reply queue."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        atexit.unregister(self.close)
        if self._listener is not None:
            self._listener.join(timeout=10)
        for job in list(self._pending.values()):
            job._fail(LabkitError("the Lab was closed before the result arrived"))
        if self._reply is not None:
            try:
                self.clients.sqs.delete_queue(QueueUrl=self._reply.url)
            except Exception:  # the queue may be gone already; `labkit down` cleans leftovers
                pass
            self._reply = None

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
        with self._lock:
            if self._reply is None:
                if self._closed:
                    raise LabkitError("this Lab is closed")
                name = REPLY_QUEUE_PREFIX + uuid.uuid4().hex[:16]
                attrs = {"MessageRetentionPeriod": str(provision.REPLY_RETENTION),
                         "ReceiveMessageWaitTimeSeconds": "20"}
                try:
                    resp = self.clients.sqs.create_queue(QueueName=name, Attributes=attrs, tags=provision.TAGS)
                    url = resp["QueueUrl"]
                except ClientError as exc:
                    raise AwsError.from_client_error(exc, "creating this client's reply queue") from exc
                self._reply = Queue(self.clients.sqs, url, name)
            return self._reply

    # -- submitting ----------------------------------------------------------------------------------
    def _request_queue(self, kind: str) -> Queue:
        return self.queue(self.settings.image_inbox if kind == "image" else self.settings.request_queue)

    def _prepare(self, kind: str, payload: dict[str, Any]) -> tuple[Job, str]:
        req = JobRequest(kind=kind, payload=payload, reply_to=self.reply_queue.url)
        body = encode_request(req, self.bucket, self.settings.max_inline_bytes)
        return Job(self, req.id, kind), body

    def _track(self, jobs: Iterable[Job]) -> None:
        with self._lock:
            for job in jobs:
                self._pending[job.id] = job
            self._ensure_listener()
            self._wake.notify_all()

    def track(self, job_id: str, kind: str) -> Job:
        """A :class:`Job` for a request sent by other means with ``reply_to`` set to this client's
        reply queue (raw bodies, other tools): its reply resolves the returned job."""
        job = Job(self, job_id, kind)
        self._track([job])
        return job

    def submit(self, kind: str, payload: dict[str, Any]) -> Job:
        """Send one job of any kind; returns its :class:`Job`."""
        job, body = self._prepare(kind, payload)
        self._track([job])
        try:
            self._request_queue(kind).send(body)
        except Exception:
            with self._lock:
                self._pending.pop(job.id, None)
            raise
        self.jobs_sent += 1
        return job

    def submit_many(self, kind: str, payloads: Sequence[dict[str, Any]], window: int | None = None,
                    progress: bool | None = None, desc: str | None = None,
                    on_progress: Callable[[int, int], None] | None = None) -> list[Job]:
        """Send many jobs in batches of 10, keeping at most ``window`` unanswered; returns when all are
        answered (or failed). ``window`` None: adaptive within bounds (:class:`Window`; the size it ended
        with is kept in ``last_window``). ``progress``: a tqdm bar (None: only for 50 jobs or more).
        ``on_progress(done, total)`` is called as jobs finish (e.g. to move a progress widget)."""
        flow = Window(window) if window else self.adaptive_window()
        queue = self._request_queue(kind)
        jobs: list[Job] = []
        outstanding: list[Job] = []
        done = 0
        bar = _progress(len(payloads), desc or f"{kind} jobs", progress)
        try:
            i = 0
            while i < len(payloads) or outstanding:
                room = flow.size - len(outstanding)
                if i < len(payloads) and room >= min(10, flow.size):
                    batch = [self._prepare(kind, p) for p in payloads[i:i + min(10, room)]]
                    self._track(j for j, _ in batch)
                    failures = queue.send_batch([b for _, b in batch])
                    for f in failures:
                        job = batch[f.index][0]
                        with self._lock:
                            self._pending.pop(job.id, None)
                        job._fail(AwsError(f"sending job failed: {f.message}", code=f.code))
                    jobs += [j for j, _ in batch]
                    outstanding += [j for j, _ in batch]
                    self.jobs_sent += len(batch) - len(failures)
                    i += len(batch)
                else:
                    cf.wait([j._future for j in outstanding], timeout=DEFAULT_TIMEOUT, return_when=cf.FIRST_COMPLETED)
                    if all(not j.done() for j in outstanding):
                        raise JobTimeout(f"no result for {len(outstanding)} job(s) in {DEFAULT_TIMEOUT:.0f} s: "
                                         "is a worker running? (`labkit status`)")
                still = []
                for j in outstanding:
                    if not j.done():
                        still.append(j)
                        continue
                    done += 1
                    if j.latency is not None:
                        flow.observe(j.latency)
                outstanding = still
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
        """Outstanding jobs to start with: narrow on the emulator (its queues slow down as they fill),
        wide on real SQS (where depth costs nothing)."""
        return 20 if self.settings.is_local else 200

    def adaptive_window(self) -> Window:
        """The window :meth:`submit_many` uses by default. On real SQS it adapts from
        :meth:`default_window` within 10-1000 jobs. On the emulator it stays at 20: there every call
        costs more as a queue fills, and measured (docs/benchmark.md) a fixed 10-20 beat the adaptive
        window, which wandered between 10 and 30."""
        if self.settings.is_local:
            return Window(self.default_window())
        return Window(self.default_window(), low=10, high=1000)

    # -- number jobs ---------------------------------------------------------------------------------
    def numbers(self, values: Sequence[Any] | np.ndarray | str) -> Job:
        """Send a number job. Long lists (and arrays) travel as compact binary through S3."""
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
        if n < 1:
            raise InvalidInput(f"a random list needs a length of at least 1, got {n}")
        rng = np.random.default_rng(seed)
        if integers:
            return rng.integers(int(low), int(high), size=n, endpoint=True, dtype=np.int64)
        return rng.uniform(low, high, size=n)

    # -- image jobs ----------------------------------------------------------------------------------
    def upload_image(self, image: str | Path | bytes | Any, name: str | None = None) -> str:
        """Put an image (path, bytes or PIL image) under ``images/unprocessed/``; returns its key."""
        data, default_name, ctype = _image_bytes(image)
        key = safe_key(UNPROCESSED_PREFIX, name or default_name)
        self.bucket.put(key, data, ctype)
        return key

    def list_images(self, folder: str = "unprocessed") -> list[ObjectInfo]:
        """The images in ``unprocessed`` or ``processed`` (name, size, modified)."""
        prefixes = {"unprocessed": UNPROCESSED_PREFIX, "processed": PROCESSED_PREFIX}
        if folder not in prefixes:
            raise InvalidInput(f"folder must be 'unprocessed' or 'processed', got {folder!r}")
        return self.bucket.list(prefixes[folder])

    def image(self, image: str | Path | bytes | Any, ops: Sequence[dict[str, Any] | str] = (),
              format: str = "png", quality: int | None = None, name: str | None = None,
              output: str | None = None) -> Job:
        """Process an image: uploads it first unless it names an object already in the bucket."""
        from labkit.jobs import images
        op_list = images.validate_ops([images.parse_op_spec(o) if isinstance(o, str) else o for o in ops])
        key = self._image_key(image, name)
        payload: dict[str, Any] = {"bucket": self.bucket.name, "key": key, "ops": op_list, "format": format}
        if quality is not None:
            payload["quality"] = quality
        if output is not None:
            payload["output"] = output
        return self.submit("image", payload)

    def _image_key(self, image: Any, name: str | None) -> str:
        if isinstance(image, str) and not Path(image).exists():
            key = safe_key(UNPROCESSED_PREFIX, image)
            if not self.bucket.exists(key):
                raise InvalidInput(f"{image!r} is neither a file here nor an image in the bucket")
            return key
        return self.upload_image(image, name)

    def download_image(self, name: str, dest: str | Path | None = None) -> Path:
        """Fetch ``images/processed/<name>`` (or any full key) to ``dest``; returns the path."""
        key = name if name.startswith("images/") else safe_key(PROCESSED_PREFIX, name)
        data = self.bucket.get(key)
        target = Path(dest) if dest is not None else Path(".")
        if target.is_dir():
            target = target / Path(key).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def image_url(self, name: str, expires: int = 900) -> str:
        """A presigned URL for a processed image (short expiry)."""
        key = name if name.startswith("images/") else safe_key(PROCESSED_PREFIX, name)
        return self.bucket.presign(key, expires)

    # -- queues and status ---------------------------------------------------------------------------
    def purge(self, which: str = "all") -> list[str]:
        """Empty a queue (by name or role: requests, responses, inbox, outbox) or ``all`` four."""
        roles = {"requests": "request_queue", "responses": "response_queue", "inbox": "image_inbox",
                 "outbox": "image_outbox"}
        names = self.settings.queue_names()
        if which == "all":
            targets = list(names.values())
        elif which in roles:
            targets = [names[roles[which]]]
        else:
            targets = [which]
        for name in targets:
            try:
                self.queue(name).purge()
            except AwsError as exc:
                if exc.code and "PurgeQueueInProgress" in exc.code:
                    raise AwsError(f"queue {name} was purged less than 60 s ago; SQS allows one purge a minute",
                                   code=exc.code) from exc
                raise
        return targets

    def status(self) -> dict[str, Any]:
        """Endpoint, queues and depths, bucket, and the local workers recorded by ``labkit up``."""
        out = provision.status(self.clients)
        state = read_state(self.settings.state_dir)
        out["workers"] = state.get("workers", [])
        return out

    # -- the EC2 worker fleet (labkit.fleet) ---------------------------------------------------------
    def deploy(self, workers: int = 1, instance_type: str = "t3.micro", autoscale: tuple[int, int] | str | None = None,
               ssh_cidr: str | None = None, key_name: str | None = None, instance_profile: str | None = None,
               concurrency: int = 4, allow_open_ssh: bool = False, progress: Any = None) -> Any:
        """Run workers on EC2 (``autoscale=(min, max)`` for an Auto Scaling group); see :func:`labkit.fleet.deploy`.

        Returns a :class:`labkit.fleet.FleetReport` (created / updated / unchanged / deleted, and the record).
        """
        from labkit import fleet
        if isinstance(autoscale, str):
            autoscale = fleet.parse_autoscale(autoscale)
        spec = fleet.FleetSpec(workers=workers, instance_type=instance_type, autoscale=autoscale, ssh_cidr=ssh_cidr,
                               key_name=key_name, instance_profile=instance_profile, concurrency=concurrency,
                               allow_open_ssh=allow_open_ssh)
        return fleet.deploy(self.clients, spec, progress=progress)

    def undeploy(self, progress: Any = None) -> Any:
        """Delete the EC2 worker fleet and everything ``deploy`` made for it; see :func:`labkit.fleet.undeploy`."""
        from labkit import fleet
        return fleet.undeploy(self.clients, progress=progress)

    def fleet(self) -> dict[str, Any] | None:
        """The EC2 worker fleet now (instances, states, launch times), or None when there is none."""
        from labkit import fleet
        return fleet.fleet_status(self.clients)

    def stats(self) -> dict[str, Any]:
        """AWS API calls made by this client so far, by operation, and per job sent."""
        calls = self.clients.counter.snapshot()
        total = sum(calls.values())
        return {"jobs_sent": self.jobs_sent, "api_calls": total, "calls": calls,
                "calls_per_job": total / self.jobs_sent if self.jobs_sent else None,
                "duplicates_dropped": self.duplicates}

    # -- receiving -----------------------------------------------------------------------------------
    def _ensure_listener(self) -> None:
        if self._listener is None or not self._listener.is_alive():
            self._listener = threading.Thread(target=self._listen, name="labkit-replies", daemon=True)
            self._listener.start()

    def _listen(self) -> None:
        """Receive replies while jobs are pending; resolve them by id, drop duplicates."""
        queue = self.reply_queue
        backoff = 0.5
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._wake.wait()
                if self._closed:
                    return
            try:
                messages = queue.receive(10, wait=5)
                # Answer the waiting jobs first, then delete: a reply whose delete fails comes back
                # later and is dropped as a duplicate, and nobody waits for the delete call.
                for m in messages:
                    self._dispatch(m.body)
                if messages:
                    queue.delete_batch([m.receipt for m in messages])
                backoff = 0.5
            except Exception:
                # An outage: the replies stay in the queue; try again with backoff.
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue

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


def _numbers_payload(values: Any) -> Any:
    if isinstance(values, np.ndarray) or (isinstance(values, Sequence) and not isinstance(values, str)
                                          and len(values) > ARRAY_THRESHOLD):
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
        return path.read_bytes(), path.name, _content_type(path.name)
    if isinstance(image, bytes | bytearray):
        return bytes(image), f"upload-{uuid.uuid4().hex[:8]}.bin", "application/octet-stream"
    if hasattr(image, "save") and hasattr(image, "mode"):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        return buf.getvalue(), f"image-{uuid.uuid4().hex[:8]}.png", "image/png"
    raise InvalidInput(f"cannot upload a {type(image).__name__}: give a path, bytes or a PIL image")


def _content_type(name: str) -> str:
    ext = os.path.splitext(name)[1].lower()
    return {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
            ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff"}.get(
        ext, "application/octet-stream")


def _progress(total: int, desc: str, show: bool | None) -> Any:
    if show is False or (show is None and total < 50):
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="job")
