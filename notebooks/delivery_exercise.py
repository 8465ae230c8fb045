"""A delivery exercise: SQS's at-least-once delivery, seen by doing it, on queues of its own. It lives beside
the notebook that runs it, 05_delivery (which imports it from its own folder, ``notebook_dir``), not in the
library a student reads (docs/architecture.md, "What a student's import loads").

    ex = DeliveryExercise.start(settings, job_modules=["notebooks/kinds/nap.py"])
    story = ex.redelivery()   # a worker killed mid-batch: its messages come back, a new worker answers them
    dup = ex.duplicate()      # one request sent twice: two answers, the client keeps one
    dead = ex.poison()        # a request no worker can answer ends in the dead-letter queue; fixed, redriven
    beat = ex.heartbeat()     # a job longer than the visibility timeout, kept invisible by heartbeats
    ex.close()                # its worker stopped, its queues deleted

It makes three queues, ``labkit-delivery-<tag>`` (a short visibility timeout, and a redrive to its dead-letter
queue after a few receives), ``labkit-delivery-<tag>-dlq`` and ``labkit-delivery-<tag>-replies`` (the
worker's default reply queue, which a worker needs to start), a fourth in the poison step (the reply queue
``labkit-delivery-<tag>-later`` it lacked: one of the worker's own response queues, its image outbox, since a
client's ``labkit-reply-*`` queue found missing is taken as gone and its answer dropped), and runs a local
worker of its own
(``python -m worker`` with the ``nap`` kind loaded through ``LABKIT_JOB_MODULES``), which it kills and starts
again. Nothing of the other notebooks (their queues, their workers) is touched. What it made goes at
:meth:`DeliveryExercise.close`, at exit, and at the next start in the same state folder when a kernel died
before closing (the state file records it under ``delivery_exercise``).

What it knows of its worker it reads from interfaces, never from the worker's log lines: the worker's ready file
(:func:`labkit.local.wait_serving`), the jobs' answers and timelines (:mod:`labkit.timeline`), the queues.
"""

from __future__ import annotations

import atexit
import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit import plots, provision, timeline
from labkit.aws.calls import is_denied
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue, redrive_policy
from labkit.client import Lab
from labkit.config import DLQ_SUFFIX, REPLY_QUEUE_PREFIX, Settings, read_state, update_state
from labkit.dlq import DeadLetter, DeadLetters, RedriveReport
from labkit.errors import AwsError, ConfigError, InvalidInput
from labkit.future import Job
from labkit.local import WORKER_START, wait_serving
from labkit.processes import Child, python_module, settings_env, stop_all
from labkit.protocol import JobRequest, JobResult
from labkit.waiting import wait_for
from labkit.watcher import QueueWatcher, Sample

PREFIX = "labkit-delivery-"
STATE_KEY = "delivery_exercise"
SETTLE_WAIT = 30.0  # seconds a step waits at most, at its end, for its queues to look empty
DWELL_LOOKS = 4  # looks of the watcher that see a dead letter before it is redriven
OnSample = Callable[[list[Sample]], None] | None


@dataclass
class Watched:
    """What a step saw of the exercise's queue (visible, in flight, dead letters) and the moments it named."""

    samples: list[Sample]
    marks: list[tuple[float, str]]

    def depth_figure(self, title: str | None = None) -> Any:
        """The queue's depth over the step, its moments named (a matplotlib figure)."""
        return plots.queue_depth_figure(self.samples, title, self.marks)


@dataclass
class Redelivery(Watched):
    """A batch whose worker was killed mid-batch, answered by the next worker."""

    jobs: list[Job]
    killed: int  # the killed worker's pid
    held: int  # messages in flight (held by the killed worker) just after the kill
    restarted: int  # the pid of the worker that answered them

    def deliveries(self) -> list[int]:
        """How many times each job was received, in the order sent."""
        return [timeline.deliveries(j.timeline()) for j in self.jobs]

    @property
    def redelivered(self) -> list[Job]:
        return [j for j, n in zip(self.jobs, self.deliveries(), strict=True) if n > 1]

    def timeline_figure(self, title: str | None = None) -> Any:
        return plots.job_timeline_figure([j.timeline() for j in self.jobs], title)


@dataclass
class Duplicate:
    """One request sent twice: the answer the client kept, and how many it dropped."""

    job: Job
    result: dict[str, Any]
    dropped: int


@dataclass
class Poison(Watched):
    """A request no worker could answer: what the dead-letter queue held, the redrive, the answer after it."""

    job_id: str
    letters: list[DeadLetter]
    redrive: RedriveReport
    answer: JobResult
    events: list[dict[str, Any]]


@dataclass
class Heartbeat(Watched):
    """A job that ran longer than its queue's visibility timeout."""

    job: Job
    visibility: int

    @property
    def beats(self) -> list[dict[str, Any]]:
        return [e for e in self.job.timeline() if e["event"] == "visibility_extended"]

    @property
    def deliveries(self) -> int:
        return timeline.deliveries(self.job.timeline())


@dataclass
class DeliveryExercise:
    """Queues of its own, a worker it can kill, and a :class:`Lab` on them. Build it with :meth:`start`."""

    settings: Settings
    clients: Clients
    lab: Lab
    requests: Queue
    dead: Queue
    made: list[Queue]
    concurrency: int = 2
    interval: float = 0.25  # seconds between looks at the queue
    workers: list[Child] = field(default_factory=list)  # every worker started, the current one last
    sent_by_hand: int = 0  # jobs sent without Lab.submit (the duplicate, the poison message)
    results: dict[str, Any] = field(default_factory=dict)  # each step's last result, by step
    deleted: list[str] = field(default_factory=list)  # the queues close() deleted

    @classmethod
    def start(cls, settings: Settings, job_modules: Sequence[str | Path] = (), visibility: int = 5,
              max_receive_count: int = 3, concurrency: int = 2) -> DeliveryExercise:
        """Make the exercise's queues (``visibility`` seconds, dead letters after ``max_receive_count``
        receives) next to ``settings``' resources; its worker loads ``job_modules`` (the nap kind)."""
        if not 1 <= visibility <= 60:
            raise InvalidInput(f"visibility must be between 1 and 60 seconds, got {visibility}")
        if not 1 <= max_receive_count <= 10:
            raise InvalidInput(f"max_receive_count must be between 1 and 10, got {max_receive_count}")
        missing = [str(m) for m in job_modules if str(m).endswith(".py") and not Path(m).is_file()]
        if missing:
            raise ConfigError(f"no job module at {', '.join(missing)}: the exercise's worker needs the nap kind "
                              "(notebooks/kinds/nap.py)")
        cleanup_leftovers(settings)
        name = PREFIX + uuid.uuid4().hex[:8]
        mine = settings.replace(request_queue=name, response_queue=name + "-replies", image_outbox=name + "-later",
                                visibility_timeout=visibility,
                                max_receive_count=max_receive_count,
                                job_modules=tuple(str(Path(m).resolve()) for m in job_modules))
        clients = Clients(mine)
        made = make_queues(clients, mine)
        ex = cls(mine, clients, Lab(mine), made[-1], made[-2], made, concurrency=concurrency)
        ex._record()
        atexit.register(ex.close)
        return ex

    def __post_init__(self) -> None:
        self.visibility = self.settings.visibility_timeout  # seconds a received message stays hidden
        self.local = self.settings.is_local  # on the embedded emulator: the kill step runs (not on AWS)

    @property
    def worker(self) -> Child | None:
        """The worker running now, if any."""
        return self.workers[-1] if self.workers and self.workers[-1].alive() else None

    # -- the worker ------------------------------------------------------------------------------------
    def start_worker(self) -> Child:
        """Start a worker on the exercise's queue and wait until it serves."""
        tag = self.settings.request_queue[len(PREFIX):]
        log = Path(self.settings.state_dir) / "logs" / f"delivery-{tag}-worker-{len(self.workers)}.log"
        args = python_module("worker", "--queues", "numbers", "--concurrency", str(self.concurrency),
                             "--poll-wait", "2", "--verbose")
        child = Child.spawn(args, env=settings_env(self.settings), log=log)
        self.workers.append(child)
        self._record()
        wait_serving([child], self.settings.state_dir)
        return child

    @property
    def jobs(self) -> int:
        """Jobs the exercise sent (a request sent twice counts once)."""
        return self.lab.jobs_sent + self.sent_by_hand

    def ensure_worker(self) -> Child:
        """The running worker, or a new one."""
        return self.worker or self.start_worker()

    def kill_worker(self) -> int:
        """SIGKILL the running worker (it answers nothing it holds, releases nothing); returns its pid."""
        child = self.worker
        if child is None:
            raise InvalidInput("no exercise worker is running")
        child.kill()
        return child.pid

    def stop_worker(self) -> None:
        """Stop the running worker the polite way (SIGTERM: it finishes or hands back what it holds)."""
        if self.worker is not None:
            self.worker.stop(30)

    def watcher(self, on_sample: OnSample = None) -> QueueWatcher:
        """A watcher of the exercise's queue and its dead-letter queue (use it as a context manager)."""
        name = self.requests.name
        return QueueWatcher({name: self.requests}, {name: self.dead}, interval=self.interval, on_sample=on_sample)

    # -- the steps -------------------------------------------------------------------------------------
    def redelivery(self, jobs: int = 6, seconds: float = 1.0, on_sample: OnSample = None) -> Redelivery:
        """Send ``jobs`` naps, start a worker (it receives the whole batch at once), SIGKILL it in the middle of
        the batch (once its first naps are done and answered, and the next ones have started: it holds those and
        the ones not started yet), wait until the messages it held are visible again (after the visibility
        timeout), then start a new worker, which answers them: their timelines show two deliveries."""
        if not self.concurrency < jobs <= 10:
            raise InvalidInput(f"jobs must be between {self.concurrency + 1} (more than the worker runs at once) "
                               f"and 10 (one receive takes them all), got {jobs}")
        self.stop_worker()  # the batch waits in the queue, so that the next worker receives all of it
        with self.watcher(on_sample) as watch:
            batch = [self.lab.submit("nap", {"seconds": seconds}) for _ in range(jobs)]
            first = self.start_worker()
            marks = [(time.time(), f"worker {first.pid} started")]
            # Its first round answered: its job threads took the next naps as those ended, before replying.
            wait_for(lambda: sum(j.done() for j in batch) >= self.concurrency, WORKER_START + 2 * seconds,
                     "the worker's first round of naps to be answered")
            killed = self.kill_worker()
            held = self.requests.depth()["in_flight"]
            marks.append((time.time(), f"worker {killed} killed, holding {held}"))
            # Nobody deletes or extends them now: after the visibility timeout they are visible again.
            wait_for(lambda: self.requests.depth()["in_flight"] == 0, 3 * self.visibility + 30,
                     "the killed worker's messages to come back", interval=self.interval)
            marks.append((time.time(), "visible again"))
            second = self.start_worker()
            marks.append((time.time(), f"worker {second.pid} started"))
            for job in batch:
                job.result(timeout=WORKER_START + jobs * seconds)
            watch.settle(SETTLE_WAIT)
        self.results["redelivery"] = Redelivery(watch.samples, marks, batch, killed, held, second.pid)
        return self.results["redelivery"]

    def duplicate(self, numbers: Sequence[float] = (3, 1, 4, 1, 5, 9)) -> Duplicate:
        """Send one request twice with the same id, as a sender retrying after a lost acknowledgement would:
        the worker answers both, the client keeps the first answer and drops the second (``lab.duplicates``)."""
        self.ensure_worker()
        request = JobRequest("numbers", {"numbers": list(numbers)}, reply_to=self.lab.reply_queue.url)
        job = self.lab.track(request.id, "numbers")
        body = request.encode()
        self.requests.send(body)
        self.requests.send(body)
        self.sent_by_hand += 1
        # A client reads its reply queue while it waits for a job: a short nap sent after the two copies (and
        # so answered after both) keeps it reading until the second answer has come.
        keeper = self.lab.submit("nap", {"seconds": 1})
        result = job.result(timeout=WORKER_START)
        keeper.result(timeout=WORKER_START)

        def dropped() -> int:  # this job's (a late duplicate of an earlier step's job is not)
            return sum(e["event"] == "duplicate" for e in job.timeline())
        wait_for(dropped, WORKER_START, "the second answer to the same id")
        self.results["duplicate"] = Duplicate(job, result, dropped())
        return self.results["duplicate"]

    def poison(self, numbers: Sequence[float] = (4, 8, 15, 16, 23, 42), on_sample: OnSample = None) -> Poison:
        """Send a request whose reply queue does not exist yet: no worker can answer it, so it is received
        ``max_receive_count`` times and SQS moves it to the dead-letter queue. Look at it there, make its reply
        queue (the fix), redrive it, and read its answer: its timeline tells the whole story."""
        later = self.settings.image_outbox  # a labkit response queue: missing, it is a setup to mend (dead letters)
        request = JobRequest("numbers", {"numbers": list(numbers)},
                             reply_to=self.requests.url.rsplit("/", 1)[0] + "/" + later)
        letters = DeadLetters(self.clients, self.requests.name)
        # the worker brings an unanswered request back after 2, 4, 8 ... s (worker/loop.py, _retry_later)
        patience = sum(min(2 ** n, 30) for n in range(1, self.settings.max_receive_count + 1)) + 60
        self.ensure_worker()
        with self.watcher(on_sample) as watch:
            self.requests.send(request.encode())
            self.sent_by_hand += 1
            marks = [(time.time(), "sent, its reply queue missing")]
            wait_for(lambda: letters.count() >= 1, patience, "the request to reach the dead-letter queue",
                     interval=self.interval)
            marks.append((time.time(), f"in the dead-letter queue, after {self.settings.max_receive_count} receives"))
            shown = letters.show()
            marks.append((time.time(), "read and left there (hidden while read)"))
            # Left there for a few of the watcher's looks (as long as a person takes to read the table), so
            # that the plot shows it in the dead-letter queue before the fix.
            wait_for(lambda: sum(1 for x in watch.samples if x.dead_letter) >= DWELL_LOOKS, WORKER_START,
                     "the watcher to see the dead letter", interval=self.interval)
            replies = Queue.create(self.clients.sqs, later, tags={**provision.TAGS, "labkit:exercise": "delivery"})
            self.made.append(replies)
            self._record()
            report = letters.redrive()
            marks.append((time.time(), "reply queue made, redriven"))
            message = wait_for(lambda: replies.receive(1, wait=1), WORKER_START, "the answer after the redrive")[0]
            got = time.time()
            marks.append((got, "answered"))
            replies.delete_batch([message.receipt])
            watch.settle(SETTLE_WAIT)
        answer = JobResult.decode(message.body)
        events = timeline.of_job(request.sent_at, got, answer.events)
        # Its first receive, as SQS recorded it: the redrive wrote it into the request, its answer carries it.
        marks += [(e["at"], "receive 1: no reply queue, given back") for e in events
                  if e["event"] == "received" and e.get("inferred")]
        self.results["poison"] = Poison(watch.samples, sorted(marks), request.id, shown, report, answer, events)
        return self.results["poison"]

    def heartbeat(self, seconds: float | None = None, on_sample: OnSample = None) -> Heartbeat:
        """One nap longer than the visibility timeout (default: twice as long): the worker extends its
        message's visibility every third of the timeout, so it is never delivered twice."""
        seconds = 2 * self.visibility if seconds is None else seconds
        self.ensure_worker()
        with self.watcher(on_sample) as watch:
            job = self.lab.submit("nap", {"seconds": seconds})
            job.result(timeout=WORKER_START + seconds)
            watch.settle(SETTLE_WAIT)
        events = job.timeline()
        got = [e["at"] for e in events if e["event"] == "received"]
        marks = [(got[-1] + self.visibility, f"its first {self.visibility} s of visibility would end")] if got else []
        marks += [(e["at"], f"heartbeat: hidden {e.get('seconds', self.visibility)} s more") for e in events
                  if e["event"] == "visibility_extended"]
        self.results["heartbeat"] = Heartbeat(watch.samples, sorted(marks), job, self.visibility)
        return self.results["heartbeat"]

    def summary(self) -> tuple[str, dict[str, Any]]:
        """A headline and JSON-ready data of what the steps showed, for ``notebooks.summary(headline, **data)``."""
        r, d, p, h = (self.results.get(k) for k in ("redelivery", "duplicate", "poison", "heartbeat"))
        data: dict[str, Any] = {"jobs": self.jobs, "workers": [w.pid for w in self.workers], "deleted": self.deleted}
        said = []
        if r is not None:
            data["redelivery"] = {"killed": r.killed, "held": r.held, "restarted": r.restarted,
                                  "deliveries": r.deliveries()}
            said.append(f"a killed worker's {r.held} messages delivered again")
        if d is not None:
            data["duplicate"] = {"dropped": d.dropped, "timeline": [e["event"] for e in d.job.timeline()]}
            said.append(f"{d.dropped} duplicate dropped")
        if p is not None:
            data["dead_letter"] = {"letters": len(p.letters), "receives": [x.receives for x in p.letters],
                                   "moved": p.redrive.moved, "ok": p.answer.ok,
                                   "median": (p.answer.result or {}).get("median"),
                                   "timeline": [e["event"] for e in p.events]}
            said.append(f"{p.redrive.moved} dead letter redriven and answered")
        if h is not None:
            data["heartbeat"] = {"beats": len(h.beats), "deliveries": h.deliveries}
            said.append(f"{len(h.beats)} heartbeats kept a job longer than its visibility timeout in flight")
        return "; ".join(said) or "no step ran", data

    # -- clean-up --------------------------------------------------------------------------------------
    def close(self) -> list[str]:
        """Stop the exercise's workers, close its Lab, delete its queues; returns the queues deleted."""
        atexit.unregister(self.close)
        stop_all(self.workers, 30)
        self.lab.close()
        self.deleted += [q.name for q in self.made if _delete(q)]
        self.made = []
        with contextlib.suppress(Exception):  # the state folder may be gone (a run folder removed)
            update_state(self.settings.state_dir, **{STATE_KEY: None})
        return self.deleted

    def __enter__(self) -> DeliveryExercise:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _record(self) -> None:
        """Note in the state file what to clean up should this kernel die before :meth:`close`."""
        update_state(self.settings.state_dir, **{STATE_KEY: {
            "queues": [q.url for q in self.made], "workers": [c.record() for c in self.workers]}})


def make_queues(clients: Clients, settings: Settings) -> list[Queue]:
    """The exercise's dead-letter queue, request queue (redriving to it) and default reply queue, made as
    provisioning makes labkit's own, with the exercise's visibility timeout and receive count; then the nap kind's
    dead-letter queue and queue, which the exercise watches (the last two)."""
    attrs = provision.queue_attributes(settings)
    name, tags = settings.request_queue, {**provision.TAGS, "labkit:exercise": "delivery"}
    made: list[Queue] = []
    try:
        made.append(Queue.create(clients.sqs, name + DLQ_SUFFIX, attrs[name + DLQ_SUFFIX], tags))
        policy = redrive_policy(made[0].arn(), settings.max_receive_count)
        made.append(Queue.create(clients.sqs, name, {**attrs[name], "RedrivePolicy": policy}, tags))
        made.append(Queue.create(clients.sqs, settings.response_queue, attrs[settings.response_queue], tags))
        # Naps travel on a queue of their own, as every kind of one's own (docs/protocol.md): the exercise sends all
        # its requests there (numbers too), so that its worker meets them in the order they were sent.
        naps, _ = provision.ensure_kind_queue(clients, "nap")
        made += [Queue.by_name(clients.sqs, naps.name + DLQ_SUFFIX), naps]
    except AwsError as exc:
        for queue in made:  # none left half made
            _delete(queue)
        if is_denied(exc):
            raise ConfigError("your AWS credentials may not make the exercise's queues (access denied): it needs "
                              f"sqs:* on the queues named {PREFIX}* and {REPLY_QUEUE_PREFIX}* (the deployer "
                              "policy of docs/aws.md covers labkit's own queues only); run it on the emulator "
                              "(backend \"local\") otherwise") from exc
        raise
    return made


def cleanup_leftovers(settings: Settings) -> list[str]:
    """Stop the workers and delete the queues of an exercise whose kernel died before closing it (the state
    file's record); returns the queues deleted."""
    record = read_state(settings.state_dir).get(STATE_KEY)
    if not isinstance(record, dict):
        return []
    stop_all([c for c in map(Child.from_record, record.get("workers") or []) if c is not None], 10)
    sqs = Clients(settings).sqs
    deleted = [Queue(sqs, url).name for url in record.get("queues") or [] if _delete(Queue(sqs, url))]
    update_state(settings.state_dir, **{STATE_KEY: None})
    return deleted


def _delete(queue: Queue) -> bool:
    try:
        return queue.delete()
    except Exception:  # an emulator already stopped: its queues went with it
        return False
