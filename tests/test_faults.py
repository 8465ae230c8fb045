"""Faults injected for real: killed and stopped workers, slow and hung jobs, the emulator cut off by a
TCP proxy, reply queues deleted under a running job, concurrent clients and workers, hostile images.

Every test runs real worker processes against the real emulator. The slow job kind (``sleep``) exists
only in workers started with LABKIT_JOB_MODULES=tests/job_kinds.py (see tests/job_kinds.py). Each scenario prints its
counts (jobs sent, results received, duplicates dropped, dead letters) as a ``[fault-report]`` line:
run with ``-s`` to see them.
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from labkit.aws.clients import Clients
from labkit.aws.queues import Message, Queue
from labkit.client import Job, Lab
from labkit.config import DLQ_SUFFIX
from labkit.errors import RemoteJobError, WaitTimeout
from labkit.protocol import JobRequest, JobResult
from labkit.waiting import wait_for
from tests import job_kinds
from tests.conftest import WorkerProcess
from tests.helpers import labkit, truncated_jpeg
from tests.tcp_proxy import TcpProxy
from worker.loop import JobPool, Outcome, Task

JOB_LINE = re.compile(r"job (\S+) kind=(\S+) ok=true")
RUN_LINE = re.compile(r"job (\S+) kind=\S+ ok=true queued=([\d.]+)s")


# -- helpers ------------------------------------------------------------------------------------------

def report(scenario: str, **counts: Any) -> None:
    """One line of figures per scenario (visible with ``pytest -s``)."""
    print(f"\n[fault-report] {scenario}: " + ", ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


def wait_until(condition: Any, timeout: float, what: str, poll: float = 0.1) -> None:
    try:
        wait_for(condition, timeout, what, interval=poll)
    except WaitTimeout as exc:
        raise AssertionError(str(exc)) from None


def count_ok(*workers: WorkerProcess) -> int:
    return sum(len(JOB_LINE.findall(w.output)) for w in workers)


def settle(queue: Queue, timeout: float = 60) -> None:
    """Wait until the queue holds nothing, visible or in flight: nothing is left cycling."""
    wait_until(lambda: queue.depth()["visible"] + queue.depth()["in_flight"] == 0, timeout,
               f"{queue.name} to empty", poll=0.5)


def late_duplicates(lab: Lab, ids: set[str]) -> int:
    """Replies still in the client's reply queue once every job is answered: duplicates of answered jobs
    (the client drops them by id). Call after the request queue settled."""
    extra = 0
    for m in lab.reply_queue.drain(wait=1):
        reply = JobResult.decode(m.body)
        assert reply.id in ids, f"a reply for a job this client never sent: {reply.id}"
        extra += 1
    return extra


class Stream:
    """``n`` number jobs sent by ``lab.submit_many`` (bounded window) on a thread."""

    def __init__(self, lab: Lab, n: int, offset: int = 0) -> None:
        self.lab = lab
        self.payloads = [{"numbers": [offset + i, offset + i + 1, offset + i + 2]} for i in range(n)]
        self.expected = [offset + i + 1 for i in range(n)]
        self.jobs: list[Job] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.jobs = self.lab.submit_many("numbers", self.payloads, progress=False)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout: float = 240) -> list[Any]:
        """Medians in order (every job's result, or the test fails)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the stream did not finish"
        if self.error is not None:
            raise self.error
        return [j.result(timeout=0)["median"] for j in self.jobs]

    @property
    def ids(self) -> set[str]:
        return {j.id for j in self.jobs}


def send_raw(lab: Lab, queue: Queue, kind: str, payloads: list[dict[str, Any]]) -> list[Job]:
    """Send requests straight to the queue (already tracked by ``lab``), all at once."""
    reqs = [JobRequest(kind, p, reply_to=lab.reply_queue.url) for p in payloads]
    jobs = [lab.track(r.id, kind) for r in reqs]
    assert not queue.send_batch([r.encode() for r in reqs])
    return jobs


# -- 1. worker killed ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_worker_killed_mid_stream_then_restarted_loses_nothing(make_settings, start_worker):
    # Given queues whose held messages reappear 5 s after a worker dies, and one worker
    s = make_settings(visibility_timeout=5)
    requests = Queue.by_name(Clients(s).sqs, s.request_queue)
    first = start_worker("--concurrency", "4", s=s)
    with Lab(s) as lab:
        # When 500 jobs stream through and the worker is SIGKILLed in the middle, then restarted
        stream = Stream(lab, 500)
        wait_until(lambda: count_ok(first) >= 150, 120, "150 jobs done by the first worker")
        first.proc.kill()
        first.proc.wait()
        done_before = count_ok(first)
        second = start_worker("--concurrency", "4", s=s)
        medians = stream.join()
        settle(requests)
        duplicates = lab.duplicates + late_duplicates(lab, stream.ids)
    # Then every job has exactly one, right, result at the client
    assert medians == stream.expected
    assert len(stream.ids) == 500
    report("1 worker SIGKILL", sent=500, received=len(medians), duplicates_dropped=duplicates, dead_letters=0,
           done_before_kill=done_before, done_after_restart=count_ok(second))


# -- 2. worker stopped --------------------------------------------------------------------------------

@pytest.mark.slow
def test_worker_sigterm_mid_stream_exits_0_and_holds_nothing(make_settings, start_worker):
    # Given a worker and queues with the default 60 s visibility (a message kept at exit would stay
    # in flight for a minute)
    s = make_settings()
    requests = Queue.by_name(Clients(s).sqs, s.request_queue)
    first = start_worker("--concurrency", "4", s=s)
    with Lab(s) as lab:
        stream = Stream(lab, 500)
        wait_until(lambda: count_ok(first) >= 150, 120, "150 jobs done by the first worker")
        # When it gets SIGTERM mid-stream
        code = first.terminate(timeout=30)
        # Then it exits 0 within its stop timeout, holding no message (finished or released)
        assert code == 0
        assert "stopped after" in first.output
        assert requests.depth()["in_flight"] == 0
        # And a second worker finishes the rest, every job answered once
        second = start_worker("--concurrency", "4", s=s)
        medians = stream.join()
        settle(requests)
        duplicates = lab.duplicates + late_duplicates(lab, stream.ids)
    assert medians == stream.expected
    assert duplicates == 0  # nothing was redelivered: what the first worker held, it answered or released
    report("2 worker SIGTERM", sent=500, received=len(medians), duplicates_dropped=duplicates, dead_letters=0,
           done_by_first=count_ok(first), done_by_second=count_ok(second))


@pytest.mark.slow
def test_sigterm_releases_jobs_not_started(make_settings, start_worker):
    # Given five slow jobs waiting and a worker running one job at a time
    s = make_settings(job_modules=job_kinds.PATH)
    requests = Queue.by_name(Clients(s).sqs, s.request_queue)
    with Lab(s) as lab:
        jobs = send_raw(lab, requests, "sleep", [{"seconds": 1.5}] * 5)
        first = start_worker("--concurrency", "1", s=s)
        first.wait_for("sleep job")
        # When it is stopped while the first job runs
        assert first.terminate(timeout=30) == 0
        # Then the running job was finished and answered, the others released at once (visibility 0)
        finished = len(re.findall(r"kind=sleep ok=true", first.output))
        depth = requests.depth()
        assert finished >= 1
        assert depth["in_flight"] == 0 and depth["visible"] == 5 - finished
        assert "released" in first.output
        # And another worker does the rest
        start_worker("--concurrency", "5", s=s)
        assert [j.result(timeout=60) for j in jobs] == [{"slept": 1.5}] * 5
        settle(requests)
        duplicates = lab.duplicates + late_duplicates(lab, {j.id for j in jobs})
    assert duplicates == 0
    report("2b SIGTERM releases unstarted", sent=5, received=5, finished_before_exit=finished,
           released=5 - finished, duplicates_dropped=duplicates)


# -- 3. slow and hung jobs ----------------------------------------------------------------------------

@pytest.mark.slow
def test_job_longer_than_visibility_timeout_runs_once(make_settings, start_worker):
    # Given a queue with a 3 s visibility timeout
    s = make_settings(visibility_timeout=3, job_modules=job_kinds.PATH)
    requests = Queue.by_name(Clients(s).sqs, s.request_queue)
    first = start_worker(s=s)
    with Lab(s) as lab:
        # When a job takes 8 s (a second worker starts watching once the first runs it)
        job = lab.submit("sleep", {"seconds": 8})
        first.wait_for(f"sleep job {job.id} started")
        workers = [first, start_worker(s=s)]
        assert job.result(timeout=60) == {"slept": 8}
        # Then its message stayed invisible (heartbeat), so the other worker never started it too
        starts = sum(w.output.count(f"sleep job {job.id} started") for w in workers)
        settle(requests)
        duplicates = lab.duplicates + late_duplicates(lab, {job.id})
    assert starts == 1
    assert duplicates == 0
    report("3a slow job (8 s, visibility 3 s)", sent=1, received=1, runs=starts, duplicates_dropped=duplicates)


@pytest.mark.slow
def test_hung_job_is_abandoned_with_an_error_reply(make_settings, start_worker):
    # Given a worker with a 2 s hard limit and a single job thread
    s = make_settings(visibility_timeout=3, job_modules=job_kinds.PATH)
    requests = Queue.by_name(Clients(s).sqs, s.request_queue)
    with Lab(s) as lab:
        # When a job hangs (300 s), with another job queued behind it in the same batch
        hung = lab.submit("sleep", {"seconds": 300})
        behind = lab.numbers([4, 5, 6])
        worker = start_worker("--concurrency", "1", "--job-timeout", "2", s=s)
        # Then it is abandoned with an error reply
        with pytest.raises(RemoteJobError) as info:
            hung.result(timeout=60)
        assert info.value.code == "internal"
        assert "limit of 2 s" in str(info.value)
        # And the worker keeps serving, though its only thread is stuck (a fresh pool took over)
        assert behind.result(timeout=30)["median"] == 5
        assert lab.numbers([1, 2, 3]).result(timeout=30)["median"] == 2
        settle(requests)  # the hung request was answered and deleted, not redelivered
    # And it still stops promptly with status 0, leaving the stuck thread behind
    assert worker.terminate(timeout=20) == 0
    assert "abandoned job(s) behind" in worker.output
    report("3b hung job (hard limit 2 s)", sent=3, received=3, abandoned=1, dead_letters=0)


def test_job_pool_rescues_jobs_stranded_behind_an_abandoned_one():
    # Given a one-thread pool whose thread is stuck, and a job queued behind it
    pool = JobPool(1)
    gate = threading.Event()

    def task(name: str, wait: bool = False) -> Task:
        m = Message(name, f"receipt-{name}", name, 1, None)
        return Task(m, lambda: (gate.wait(30) if wait else None) or Outcome(m, None, None, name))
    stuck = pool.submit(task("stuck", wait=True))
    queued = pool.submit(task("queued"))
    wait_until(lambda: stuck.started is not None, 5, "the stuck job to start")
    # When the stuck one is abandoned and the queued one rescued
    pool.abandon(stuck)
    pool.rescue([queued])
    # Then the queued job runs on the fresh pool, and the stuck one is counted until it ends
    assert queued.future.result(timeout=5).summary == "queued"
    assert pool.stuck() == 1
    gate.set()
    stuck.future.result(timeout=5)
    assert pool.stuck() == 0
    pool.shutdown()


# -- 4. AWS unreachable -------------------------------------------------------------------------------

@pytest.mark.slow
def test_emulator_unreachable_twice_worker_and_client_resume(emulator, make_settings, start_worker):
    # Given a worker and a client that reach the emulator only through a TCP proxy
    s = make_settings(visibility_timeout=10)
    port = int(emulator.url.rsplit(":", 1)[1])
    with TcpProxy(port) as proxy:
        ps = s.replace(endpoint_url=proxy.url)
        requests = Queue.by_name(Clients(ps).sqs, ps.request_queue)
        worker = start_worker("--concurrency", "4", s=ps)
        jobs: list[Job] = []
        with Lab(ps) as lab:
            for outage in range(2):
                # When jobs are in flight and the path is cut for 5 s, then restored
                batch = send_raw(lab, requests, "numbers",
                                 [{"numbers": [i, i + 1, i + 2]} for i in range(100 * outage, 100 * outage + 100)])
                jobs += batch
                wait_until(lambda b=batch: sum(j.done() for j in b) >= 10, 60, "the first results")
                proxy.cut()
                time.sleep(5)
                proxy.restore()
                wait_until(lambda b=batch: all(j.done() for j in b), 120, "every result after the outage", 0.5)
            # Then every job is answered, exactly once at the client
            medians = [j.result(timeout=0)["median"] for j in jobs]
            settle(requests)
            duplicates = lab.duplicates + late_duplicates(lab, {j.id for j in jobs})
        assert medians == [i + 1 for i in range(200)]
        # And the worker lived through it, saying so in one line per outage and one per recovery
        assert worker.proc.poll() is None
        assert worker.terminate() == 0
        out = worker.output
        assert out.count("lost contact with AWS") == 2, out[-3000:]
        assert out.count("contact with AWS restored") == 2, out[-3000:]
        assert "Traceback" not in out
    report("4 emulator unreachable 2x5 s", sent=200, received=len(medians), duplicates_dropped=duplicates,
           dead_letters=0, connections_reset_while_cut=proxy.refused)


# -- 6. reply queue gone ------------------------------------------------------------------------------

@pytest.mark.slow
def test_reply_queue_deleted_mid_job_the_copy_is_answered_and_the_original_dropped(make_settings, start_worker):
    # Note (issue 11): since a Lab makes a new reply queue when its own is deleted and sends the jobs in flight
    # again (tests/test_classroom.py), the client gets its result from that copy. (Issue 20) The original request,
    # addressed to the deleted queue, can never be answered: the worker drops it (one line, the request deleted)
    # instead of running it into the dead-letter queue. A missing *default* reply queue still dead-letters: below.
    # Given queues that dead-letter after 2 receives, and a worker
    s = make_settings(max_receive_count=2, job_modules=job_kinds.PATH)
    sqs = Clients(s).sqs
    requests = Queue.by_name(sqs, s.request_queue)
    dlq = Queue.by_name(sqs, s.request_queue + DLQ_SUFFIX)
    worker = start_worker(s=s)
    with Lab(s) as lab:
        job = lab.submit("sleep", {"seconds": 2})
        reply_name = lab.reply_queue.name
        # When the client's reply queue is deleted while the job runs
        worker.wait_for(f"sleep job {job.id} started")
        sqs.delete_queue(QueueUrl=lab.reply_queue.url)
        # Then the client gets its result through a new reply queue (the job sent again, same id)
        assert job.result(timeout=60) == {"slept": 2}
        assert lab.reply_queue.name != reply_name
        # And the original request is dropped in one line, and deleted: nothing cycles, nothing is dead-lettered
        worker.wait_for(f"reply queue {reply_name} is gone (its client stopped waiting): dropped the answer of "
                        f"1 job(s) ({job.id})", 60)
        settle(requests)
        assert requests.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
        assert dlq.depth()["visible"] == 0
        runs = worker.output.count(f"sleep job {job.id} started")
        assert runs <= 3  # the original (once more when its queue looked missing moments after it was sent), the copy
        assert "lost contact" not in worker.output  # a missing queue is not an outage
    report("6 reply queue deleted", sent=1, received=1, runs=runs, dead_letters=0, duplicates_dropped=lab.duplicates)


@pytest.mark.slow
def test_default_reply_queue_deleted_goes_to_dlq_and_back(make_settings, start_worker):
    # Given queues that dead-letter after 2 receives, a worker, and a request for the default reply queue
    # (no reply_to), which someone deleted: a setup to mend, not a client gone
    s = make_settings(max_receive_count=2)
    sqs = Clients(s).sqs
    requests = Queue.by_name(sqs, s.request_queue)
    dlq = Queue.by_name(sqs, s.request_queue + DLQ_SUFFIX)
    worker = start_worker(s=s)
    sqs.delete_queue(QueueUrl=Queue.by_name(sqs, s.response_queue).url)
    req = JobRequest("numbers", {"numbers": [1, 5, 22]})
    requests.send(req.encode())
    # Then the request is retried, then dead-lettered, not lost
    wait_until(lambda: dlq.depth()["visible"] == 1, 90, "the request in the dead-letter queue", 0.5)
    assert requests.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    assert "lost contact" not in worker.output and "is gone" not in worker.output
    # And `labkit status` shows the dead letter
    status = labkit("status", "--json", s=s)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["queues"][s.request_queue]["dead_letter"] == 1
    text = labkit("status", s=s)
    row = next(line for line in text.stdout.splitlines() if line.startswith(s.request_queue + " "))
    assert row.split()[-1] == "1"
    # And `labkit dlq show` lists it without consuming it
    shown = labkit("dlq", "show", s.request_queue, s=s)
    assert shown.returncode == 0, shown.stderr
    assert f"job {req.id} kind=numbers" in shown.stdout and "1 dead letter(s)" in shown.stdout
    assert dlq.depth()["visible"] == 1
    # And once its reply queue exists again, `labkit dlq redrive` sends it home and it is answered there
    back = Queue.create(sqs, s.response_queue)
    moved = labkit("dlq", "redrive", s.request_queue, s=s)
    assert moved.returncode == 0, moved.stderr
    assert "moved 1 message(s)" in moved.stdout
    answered: list[Message] = []
    wait_until(lambda: bool(answered.extend(back.receive(10, wait=1)) or answered), 60, "the redriven reply")
    assert [(r.id, r.ok, r.result["median"]) for r in map(JobResult.decode, (m.body for m in answered))] == [
        (req.id, True, 5)]
    settle(requests)
    assert dlq.depth()["visible"] == 0
    report("6b default reply queue deleted", sent=1, received=1, dead_letters=1, redriven=1)


# -- 7. concurrency -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_four_clients_three_workers_each_gets_its_own(emulator, make_settings, start_worker):
    # Given three workers sharing a queue
    s = make_settings()
    requests = Queue.by_name(Clients(s).sqs, s.request_queue)
    workers = [start_worker("--concurrency", "4", s=s) for _ in range(3)]
    # When four clients each send 200 jobs at once
    labs = [Lab(s) for _ in range(4)]
    try:
        streams = [Stream(lab, 200, offset=100_000 * k) for k, lab in enumerate(labs)]
        medians = [st.join() for st in streams]
        settle(requests)
        duplicates = sum(lab.duplicates + late_duplicates(lab, st.ids) for lab, st in zip(labs, streams, strict=True))
    finally:
        for lab in labs:
            lab.close()
    # Then each receives exactly its own 200 results
    for st, got in zip(streams, medians, strict=True):
        assert got == st.expected
    # And every worker did a share, no job twice beyond the queue's own duplicates: SQS (and the emulator,
    # whose receive takes no lock) may rarely hand one message to two receivers at the same moment, so
    # both runs were queued equally long; a worker fault (lapsed visibility, lost delete) would redeliver
    # seconds later. The client dropped each extra reply.
    runs: dict[str, list[float]] = defaultdict(list)
    for w in workers:
        for job_id, queued in RUN_LINE.findall(w.output):
            runs[job_id].append(float(queued))
    assert set(runs) == set().union(*(st.ids for st in streams))
    twice = {job_id: q for job_id, q in runs.items() if len(q) > 1}
    assert all(max(q) - min(q) < 1.0 for q in twice.values()), twice
    assert len(twice) <= 8  # rare: at most 1%
    assert duplicates == sum(len(q) - 1 for q in twice.values())
    shares = [len(RUN_LINE.findall(w.output)) for w in workers]
    assert all(n > 0 for n in shares)
    report("7 four clients x 200, three workers", sent=800, received=sum(map(len, medians)),
           duplicates_dropped=duplicates, dead_letters=0, queue_duplicates=len(twice), shares=shares)


# -- 8. hostile images --------------------------------------------------------------------------------

def _png(width: int, height: int, rows: Any, color_type: int = 0) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def decompression_bomb(side: int = 12_000) -> bytes:
    """An RGB PNG of side x side black pixels: a few hundred KB that decode to side*side*3 bytes."""
    z = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * side)
    data = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return _png(side, side, data, color_type=2)


def vm_peak_rss(pid: int) -> int:
    """Peak resident set size of a process, in bytes (VmHWM)."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) * 1024


@pytest.mark.slow
def test_hostile_images_get_quick_error_replies_in_bounded_memory(lab, start_worker):
    # Given a worker that has already processed one ordinary image
    worker = start_worker("--concurrency", "4")
    ok = lab.image(Image.new("RGB", (64, 48), "red"), ["grayscale"], name="fine.png").result(timeout=30)
    assert (ok["width"], ok["height"]) == (64, 48)
    rss_before = vm_peak_rss(worker.proc.pid)
    cases = {
        "bomb.png": (decompression_bomb(), "too_large"),
        "empty.png": (b"", "invalid_input"),
        "truncated.jpg": (truncated_jpeg(), "invalid_input"),
        "huge-header.png": (_png(2**31 - 1, 2**31 - 1, zlib.compress(b"\x00" * 64)), "too_large"),
    }
    # When each is sent as an image job
    jobs = {name: lab.image(data, ["grayscale"], name=name) for name, (data, _) in cases.items()}
    # Then each gets its error reply, and the worker's memory stays bounded
    codes = {}
    for name, job in jobs.items():
        with pytest.raises(RemoteJobError) as info:
            job.result(timeout=30)
        codes[name] = info.value.code
    assert codes == {name: code for name, (_, code) in cases.items()}
    rss_peak = vm_peak_rss(worker.proc.pid)
    assert worker.proc.poll() is None
    # Decoding the bomb alone would take 432 MB (12000 x 12000 x 3).
    assert rss_peak - rss_before < 100 * 2**20
    assert rss_peak < 300 * 2**20
    latencies = {name: round(job.latency or -1, 3) for name, job in jobs.items()}
    report("8 hostile images", sent=4, received=len(codes), bomb_bytes=len(cases["bomb.png"][0]),
           reply_latency_s=latencies, worker_peak_rss_mib_before=round(rss_before / 2**20, 1),
           worker_peak_rss_mib_after=round(rss_peak / 2**20, 1))

