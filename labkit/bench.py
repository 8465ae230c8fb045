"""``labkit bench``: throughput, latency and big jobs, measured as ratios against a floor taken in the
same run, on the same emulator (or on real AWS with ``aws=True``).

Speed here is API calls and waiting, so every figure comes with its reference from the same run:

* ``floor``: a request queue configured like labkit's, driven by the fewest possible calls and no labkit
  code in the message path (batched send, long-poll receive, batched reply, batched delete, batched
  client receive and delete, the same window);
* ``labkit``: small number jobs through the client's windowed, batched submission (what
  :meth:`Lab.numbers_many` runs) and real worker processes; floor and labkit alternate in rounds;
* ``round_trip``: one job at a time (p50, p95);
* ``original`` / ``original_round_trip``: the original lab's queue settings (1 s delivery delay, 1 s
  polls, 1 s visibility) and call pattern (a queue lookup and a send per job, one send per reply),
  reimplemented for reference;
* ``big`` / ``big_direct``: a random list of 10 million float64 through the claim check, against the
  same bytes uploaded, summarised with numpy and downloaded in one process; the worker's peak RSS;
* ``images`` / ``images_inprocess``: 1080p images through grayscale + thumbnail, against the same
  Pillow work in this process (as many processes as workers).

API calls are counted with botocore's ``before-call`` event in every process (client, workers, servers):
workers report their counts when sent SIGUSR1. :func:`run_bench` returns a :class:`Report` (plain data
via ``Report.to_dict()`` and ``Report.rows()``); :func:`sweep` returns rows of throughput and latency
against the window and the worker count, for plots.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import dataclasses
import io
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from labkit import emulator, provision
from labkit.aws.clients import Clients, credentials_configured
from labkit.config import REPLY_QUEUE_PREFIX, Settings, read_state
from labkit.errors import ConfigError, JobTimeout, LabkitError

# -- prices -----------------------------------------------------------------------------------------

PRICES: dict[str, Any] = {
    "as_of": "2025-06",
    "source": "AWS list prices, us-east-1, as published at that date (not checked on the run date; "
              "free tiers ignored)",
    "sqs_per_million_requests": 0.40,  # standard queue; a batch of up to 10 is one request per 64 KiB
    "s3_put_per_thousand": 0.005,  # PUT, COPY, POST, LIST
    "s3_get_per_thousand": 0.0004,  # GET, HEAD and every other request
}
_S3_PUT_CLASS = {"PutObject", "CopyObject", "PostObject", "ListObjects", "ListObjectsV2", "DeleteObjects",
                 "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
_S3_FREE = {"DeleteObject", "AbortMultipartUpload"}  # DELETE and CANCEL requests are free


def price(calls: dict[str, int], jobs: int, per: int = 1_000_000) -> dict[str, float]:
    """US dollars for ``per`` jobs at :data:`PRICES`, given ``calls`` (``service.Operation`` -> count,
    e.g. ``lab.stats()["calls"]``) made for ``jobs`` jobs. Requests only: storage and transfer are extra."""
    sqs = s3_put = s3_get = 0
    for name, n in calls.items():
        service, _, op = name.partition(".")
        if service == "sqs":
            sqs += n
        elif service == "s3" and op in _S3_PUT_CLASS:
            s3_put += n
        elif service == "s3" and op not in _S3_FREE:
            s3_get += n
    scale = per / jobs if jobs else 0.0
    usd_sqs = sqs * scale * PRICES["sqs_per_million_requests"] / 1e6
    usd_s3 = scale * (s3_put * PRICES["s3_put_per_thousand"] + s3_get * PRICES["s3_get_per_thousand"]) / 1e3
    return {"jobs": per, "sqs_usd": usd_sqs, "s3_usd": usd_s3, "total_usd": usd_sqs + usd_s3}


# -- results ----------------------------------------------------------------------------------------

@dataclass
class Result:
    """One scenario's figures. ``calls`` counts API calls of every process involved, by operation."""

    name: str
    jobs: int
    seconds: float
    correct: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process group

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    @property
    def api_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def calls_per_job(self) -> float | None:
        return self.api_calls / self.jobs if self.calls and self.jobs else None

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile of the latencies, in seconds (None without latencies)."""
        return float(np.percentile(self.latencies, q)) if self.latencies else None

    @property
    def p50(self) -> float | None:
        return self.percentile(50)

    @property
    def p95(self) -> float | None:
        return self.percentile(95)

    def to_dict(self, latencies: bool = False) -> dict[str, Any]:
        d = {"name": self.name, "jobs": self.jobs, "seconds": round(self.seconds, 4),
             "jobs_per_s": round(self.jobs_per_s, 2), "correct": self.correct,
             "api_calls": self.api_calls, "calls_per_job": _round(self.calls_per_job, 3),
             "p50_ms": _ms(self.p50), "p95_ms": _ms(self.p95), "calls": dict(sorted(self.calls.items())),
             **self.extra}
        if self.cpu and self.jobs:
            d["cpu_ms_per_job"] = {k: round(v * 1000 / self.jobs, 2) for k, v in self.cpu.items()}
        if latencies:
            d["latencies_ms"] = [round(x * 1000, 2) for x in self.latencies]
        return d


@dataclass
class Target:
    """One of the issue's targets: ``value`` measured against ``goal`` (``at_least`` or at most)."""

    name: str
    value: float | None
    goal: float
    at_least: bool
    unit: str = "x"

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _round(self.value, 3), "goal": ("≥ " if self.at_least else "≤ ")
                + f"{self.goal:g}{self.unit}", "met": self.met}


@dataclass
class Report:
    """Everything one run measured: results by scenario name, the run's parameters and environment."""

    where: str
    params: dict[str, Any]
    results: dict[str, Result] = field(default_factory=dict)
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def get(self, name: str) -> Result | None:
        return self.results.get(name)

    def _ratio(self, a: str, b: str, attr: str, inverse: bool = False) -> float | None:
        ra, rb = self.get(a), self.get(b)
        if ra is None or rb is None:
            return None
        va, vb = getattr(ra, attr), getattr(rb, attr)
        if not va or not vb:
            return None
        return vb / va if inverse else va / vb

    def ratios(self) -> dict[str, float | None]:
        """labkit / floor and labkit / original throughput, round trip speed-up, big-job and image ratios."""
        big = self.get("big")
        return {
            "labkit_vs_floor": self._ratio("labkit", "floor", "jobs_per_s"),
            "labkit_vs_original": self._ratio("labkit", "original", "jobs_per_s"),
            "round_trip_speedup": self._ratio("round_trip", "original_round_trip", "p50", inverse=True),
            "big_vs_direct": self._ratio("big", "big_direct", "seconds"),
            "big_peak_rss_vs_payload": big.extra.get("peak_rss_vs_payload") if big else None,
            "images_vs_inprocess": self._ratio("images", "images_inprocess", "jobs_per_s"),
        }

    def targets(self) -> list[Target]:
        """The issue's targets with the measured values (``met`` is None when not measured)."""
        r = self.ratios()
        lab = self.get("labkit")
        return [
            Target("labkit throughput / floor", r["labkit_vs_floor"], 0.8, True),
            Target("labkit throughput / original", r["labkit_vs_original"], 5, True),
            Target("API calls per job (labkit)", lab.calls_per_job if lab else None, 0.7, False, ""),
            Target("round trip p50: original / labkit", r["round_trip_speedup"], 20, True),
            Target("big list: end to end / direct", r["big_vs_direct"], 3, False),
            Target("big list: worker peak RSS / payload", r["big_peak_rss_vs_payload"], 3, False),
            Target("images: labkit rate / in-process", r["images_vs_inprocess"], 0.6, True),
        ]

    def costs(self) -> dict[str, dict[str, float]]:
        """Request cost of a million jobs for each throughput scenario, at :data:`PRICES`."""
        return {name: price(res.calls, res.jobs) for name, res in self.results.items()
                if res.calls and name in ("floor", "labkit", "original", "images", "big")}

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per scenario (for a DataFrame or a plot)."""
        return [res.to_dict() for res in self.results.values()]

    def to_dict(self, latencies: bool = False) -> dict[str, Any]:
        return {"started": self.started, "where": self.where, "params": self.params,
                "results": {k: v.to_dict(latencies) for k, v in self.results.items()},
                "ratios": {k: _round(v, 3) for k, v in self.ratios().items()},
                "targets": [t.to_dict() for t in self.targets()],
                "cost_per_million_jobs": {k: {kk: round(vv, 4) for kk, vv in v.items()}
                                          for k, v in self.costs().items()},
                "prices": PRICES}


def _round(x: float | None, digits: int) -> float | None:
    return None if x is None else round(x, digits)


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 1)


# -- the table --------------------------------------------------------------------------------------

def format_table(report: Report) -> str:
    """The report as text: one line per scenario, then ratios, targets and prices."""
    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    p = report.params
    lines = [f"labkit bench, {report.started}, {report.where}",
             f"jobs {p.get('jobs')}, window {p.get('window')}, workers {p.get('workers')} x concurrency "
             f"{p.get('concurrency')}, {p.get('cores')} cores", "",
             f"{'scenario':<21}{'jobs':>6}{'seconds':>9}{'jobs/s':>9}{'calls/job':>10}{'p50 ms':>9}"
             f"{'p95 ms':>9}  ok"]
    for r in report.results.values():
        lines.append(f"{r.name:<21}{r.jobs:>6}{r.seconds:>9.2f}{r.jobs_per_s:>9.1f}"
                     f"{num(r.calls_per_job, '.3f'):>10}{num(_ms(r.p50), '.1f'):>9}{num(_ms(r.p95), '.1f'):>9}"
                     f"  {r.correct}/{r.jobs}")
    with_cpu = [r for r in report.results.values() if r.cpu and r.jobs]
    if with_cpu:
        lines += ["", f"{'CPU ms per job':<21}{'client':>9}{'workers':>9}{'emulator':>10}"]
        for r in with_cpu:
            c = {k: v * 1000 / r.jobs for k, v in r.cpu.items()}
            lines.append(f"{r.name:<21}{c.get('client', 0):>9.2f}{c.get('workers', 0):>9.2f}"
                         f"{num(c.get('emulator'), '.2f'):>10}")
    big = report.get("big")
    if big is not None and "peak_rss_mib" in big.extra:
        e = big.extra
        lines += ["", f"{e['numbers']:,} numbers: payload {e['payload_mib']:.1f} MiB ({e['payload_format']}), worker "
                  f"peak RSS {e['peak_rss_mib']:.0f} MiB (idle {e['baseline_rss_mib']:.0f} MiB) = "
                  f"{e['peak_rss_vs_payload']:.2f}x the payload"]
    images = report.get("images")
    if images is not None and "upload_s" in images.extra:
        lines.append(f"images: upload of {images.jobs} took {images.extra['upload_s']:.2f} s (not in the rate)")
        ref = report.get("images_inprocess")
        if ref is not None and "labkit_image_code_per_s" in ref.extra:
            lines.append(f"images: labkit's image code alone (no AWS, 1 process): "
                         f"{ref.extra['labkit_image_code_per_s']:.1f}/s; plain Pillow: {ref.jobs_per_s:.1f}/s")
    lines += ["", f"{'target':<42}{'measured':>10}{'goal':>9}  met"]
    for t in report.targets():
        met = {True: "yes", False: "NO", None: "-"}[t.met]
        lines.append(f"{t.name:<42}{num(t.value, '.2f'):>10}{t.to_dict()['goal']:>9}  {met}")
    costs = report.costs()
    if costs:
        lines += ["", f"request cost of 1,000,000 jobs at list prices ({PRICES['as_of']}: SQS "
                  f"${PRICES['sqs_per_million_requests']:.2f}/million requests, S3 PUT "
                  f"${PRICES['s3_put_per_thousand']}/1000, GET ${PRICES['s3_get_per_thousand']}/1000)"]
        for name, c in costs.items():
            lines.append(f"  {name:<19}${c['total_usd']:>10,.2f}  (SQS ${c['sqs_usd']:,.2f}, S3 ${c['s3_usd']:,.2f})")
    return "\n".join(lines)


# -- processes: workers and reference servers that report their API calls ---------------------------

class CountedProcess:
    """A child process (a labkit worker, or a floor/original server) that writes its API call counts to
    a JSON file when sent SIGUSR1, and once more on exit."""

    def __init__(self, args: Sequence[str], env: dict[str, str], log: Path, counts: Path) -> None:
        self.log_path = log
        self.counts_path = counts
        self._log = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([sys.executable, "-m", "labkit.bench", *args, "--counts", str(counts)],
                                     env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the process has written its first counts (it does once it serves)."""
        deadline = time.monotonic() + timeout
        while not self.counts_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabkitError(f"bench process {self.pid} did not start; see {self.log_path}:\n"
                                  + self.log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.02)

    def wait_log(self, text: str, timeout: float = 15) -> bool:
        """Wait until the process's log shows ``text``; False after ``timeout`` (not an error)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if text in self.log_path.read_text(errors="replace"):
                return True
            time.sleep(0.05)
        return False

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.counts_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {"seq": -1, "calls": {}}

    def snapshot(self, timeout: float = 10) -> dict[str, int]:
        """API calls so far, by operation (asks the process, waits for its answer)."""
        seq = self._read().get("seq", -1)
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while True:
            data = self._read()
            if data.get("seq", -1) > seq:
                return data["calls"]
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabkitError(f"bench process {self.pid} did not report its API calls; see {self.log_path}")
            time.sleep(0.01)

    def rss_kb(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (peak) of the process, in KiB (Linux)."""
        out = {}
        with contextlib.suppress(OSError), open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
        return out

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


def _diff(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


def _addf(*values: dict[str, float]) -> dict[str, float]:
    total: dict[str, float] = defaultdict(float)
    for v in values:
        for k, x in v.items():
            total[k] += x
    return dict(total)


def _add(*counts: dict[str, int]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return dict(total)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux; 0.0 when unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Calls:
    """API calls of a group of processes plus this process's counters, between :meth:`start` and
    :meth:`stop`; also the CPU time spent meanwhile by this process, the processes and the emulator
    (when it is a process of its own: ``emulator_pid``)."""

    def __init__(self, procs: Sequence[CountedProcess], *clients: Clients, emulator_pid: int | None = None) -> None:
        self.procs = procs
        self.clients = clients
        self.emulator_pid = emulator_pid
        self.cpu: dict[str, float] = {}
        self._before: list[dict[str, int]] = []
        self._cpu0: dict[str, float] = {}

    def _now(self) -> list[dict[str, int]]:
        return [p.snapshot() for p in self.procs] + [c.counter.snapshot() for c in self.clients]

    def _cpu(self) -> dict[str, float]:
        out = {"client": time.process_time(), "workers": sum(cpu_seconds(p.pid) for p in self.procs)}
        if self.emulator_pid:
            out["emulator"] = cpu_seconds(self.emulator_pid)
        return out

    def start(self) -> None:
        self._before = self._now()
        self._cpu0 = self._cpu()

    def stop(self) -> dict[str, int]:
        """Calls since :meth:`start`, once the last answers' deletes have landed."""
        self.cpu = {k: v - self._cpu0.get(k, 0.0) for k, v in self._cpu().items()}
        _settle()
        return _add(*(_diff(a, b) for a, b in zip(self._now(), self._before, strict=True)))


# -- the rig: this run's resources ------------------------------------------------------------------

class Rig:
    """Queues and a bucket of this run's own (unique names) on one endpoint, and its child processes.

    ``Rig.open()`` reuses the emulator of ``labkit up`` when one runs, else starts a private one (a
    separate process, so that it does not share this process's interpreter lock) and stops it at the end.
    """

    def __init__(self, settings: Settings, work_dir: Path, log: Callable[[str], None] = lambda s: None,
                 owns_endpoint: bool = False) -> None:
        self.work_dir = work_dir
        self.log = log
        self.tag = uuid.uuid4().hex[:8]
        self.owns_endpoint = owns_endpoint
        names = {role: f"bench-{self.tag}-{name}" for role, name in settings.queue_names().items()}
        bucket = f"labkit-bench-{self.tag}"
        if not settings.is_local:
            bucket = f"labkit-bench-{Clients(settings).account_id()}-{settings.region}-{self.tag}"
        self.settings = settings.replace(bucket=bucket, state_dir=work_dir / "state", **names)
        self.clients = Clients(self.settings)
        self.extra_queues: list[str] = []
        self._procs: list[CountedProcess] = []
        self._spawned = 0
        self._floor_queue: str | None = None
        self._replies: dict[str, str] = {}
        self._emulator_pid: int | None = None

    @classmethod
    @contextlib.contextmanager
    def open(cls, settings: Settings | None = None, aws: bool = False,
             log: Callable[[str], None] = lambda s: None) -> Iterator[Rig]:
        """A provisioned rig; everything it created is deleted (or stopped) on exit."""
        with tempfile.TemporaryDirectory(prefix="labkit-bench-") as tmp:
            work = Path(tmp)
            emu_pid = None
            if settings is None:
                settings, emu_pid = _resolve_endpoint(aws, work, log)
            rig = cls(settings, work, log, owns_endpoint=emu_pid is not None)
            rig._emulator_pid = emu_pid
            try:
                provision.ensure(rig.clients)
                yield rig
            finally:
                rig.close()

    def close(self) -> None:
        for p in self._procs:
            p.stop()
        self._procs.clear()
        if self._emulator_pid is not None:
            emulator.stop_pid(self._emulator_pid, 10)  # its resources go with it
            return
        with contextlib.suppress(Exception):
            self._delete_resources()

    def _delete_resources(self) -> None:
        sqs = self.clients.sqs
        for name in [*provision.queue_attributes(self.settings), *self.extra_queues]:
            with contextlib.suppress(Exception):
                sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
        from labkit.aws.storage import Bucket
        bucket = Bucket(self.clients.s3, self.settings.bucket or "")
        bucket.delete_prefix("")
        self.clients.s3.delete_bucket(Bucket=bucket.name)

    def env(self) -> dict[str, str]:
        """The environment that points a child process at this rig."""
        s = self.settings
        env = {**os.environ, "LABKIT_REQUEST_QUEUE": s.request_queue, "LABKIT_RESPONSE_QUEUE": s.response_queue,
               "LABKIT_IMAGE_INBOX": s.image_inbox, "LABKIT_IMAGE_OUTBOX": s.image_outbox,
               "LABKIT_BUCKET": s.bucket or "", "LABKIT_STATE_DIR": str(s.state_dir), "AWS_REGION": s.region,
               "PYTHONUNBUFFERED": "1"}
        env.pop("AWS_ENDPOINT_URL", None)
        env.pop("LABKIT_ENDPOINT_URL", None)
        if s.endpoint_url:
            env["LABKIT_ENDPOINT_URL"] = s.endpoint_url
        return env

    def spawn(self, *args: str) -> CountedProcess:
        """Start ``python -m labkit.bench <args>`` and wait until it serves."""
        self._spawned += 1
        i = self._spawned
        proc = CountedProcess(args, self.env(), self.work_dir / f"proc-{i}.log", self.work_dir / f"counts-{i}.json")
        self._procs.append(proc)
        proc.wait_ready()
        return proc

    def workers(self, n: int, roles: str = "numbers", concurrency: int = 4) -> list[CountedProcess]:
        """``n`` real labkit worker processes (``worker.loop.Worker``, ``--poll-wait 1``)."""
        procs = [self.spawn("worker", "--queues", roles, "--concurrency", str(concurrency), "--poll-wait", "1")
                 for _ in range(n)]
        for p in procs:
            p.wait_log(" serving ")  # its queues looked up: what is measured next is not its start-up
        return procs

    def stop(self, procs: Sequence[CountedProcess]) -> None:
        for p in procs:
            p.stop()
            self._procs.remove(p)

    def meter(self, procs: Sequence[CountedProcess], *clients: Clients) -> Calls:
        """A :class:`Calls` meter that also reads the emulator's CPU time when it is this rig's process."""
        return Calls(procs, *clients, emulator_pid=self._emulator_pid)

    def floor_queue(self) -> str:
        """The floor's request queue: labkit's request queue's attributes (dead-letter redrive too)."""
        if self._floor_queue is None:
            sqs = self.clients.sqs
            url = sqs.get_queue_url(QueueName=self.settings.request_queue)["QueueUrl"]
            attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
                "VisibilityTimeout", "ReceiveMessageWaitTimeSeconds", "MessageRetentionPeriod", "RedrivePolicy"])
            self._floor_queue = self.create_queue("floor-requests", attrs.get("Attributes", {}))
        return self._floor_queue

    def floor_servers(self, n: int) -> list[CountedProcess]:
        """``n`` floor server processes on the floor's request queue."""
        name = self.floor_queue().rsplit("/", 1)[-1]
        return [self.spawn("serve", "floor", "--queue", name) for _ in range(n)]

    def create_queue(self, suffix: str, attributes: dict[str, str] | None = None) -> str:
        """A queue of this run's own; returns its URL (deleted with the rig)."""
        name = f"bench-{self.tag}-{suffix}"
        self.extra_queues.append(name)
        return self.clients.sqs.create_queue(QueueName=name, Attributes=attributes or {},
                                             tags=provision.TAGS)["QueueUrl"]

    def reply_queue(self, suffix: str) -> str:
        """A reply queue named and configured like a Lab's own (made once per suffix)."""
        name = f"{REPLY_QUEUE_PREFIX}bench-{self.tag}-{suffix}"
        if name not in self._replies:
            self.extra_queues.append(name)
            attrs = {"MessageRetentionPeriod": str(provision.REPLY_RETENTION), "ReceiveMessageWaitTimeSeconds": "20"}
            self._replies[name] = self.clients.sqs.create_queue(QueueName=name, Attributes=attrs,
                                                                tags=provision.TAGS)["QueueUrl"]
        return self._replies[name]


def _resolve_endpoint(aws: bool, work: Path, log: Callable[[str], None]) -> tuple[Settings, int | None]:
    """Settings for the run and the pid of a private emulator started for it (None if reused or AWS)."""
    if aws:
        env = {k: v for k, v in os.environ.items() if k not in ("LABKIT_ENDPOINT_URL", "AWS_ENDPOINT_URL")}
        settings = Settings.load(env=env).replace(endpoint_url=None)
        if not credentials_configured():
            raise ConfigError("--aws needs AWS credentials (aws configure, AWS_PROFILE)")
        log(f"bench: real AWS in {settings.region}: this run creates queues and a bucket and deletes them at the end")
        return settings, None
    settings = Settings.load()
    url = settings.endpoint_url
    if url is None:
        emu = read_state(settings.state_dir).get("emulator") or {}
        url = emu.get("url")
    if url and settings.replace(endpoint_url=url).is_local and emulator.healthy(url):
        log(f"bench: using the running emulator at {url}")
        return settings.replace(endpoint_url=url), None
    if settings.endpoint_url and not settings.is_local:
        raise ConfigError(f"the endpoint {settings.endpoint_url} is not the local emulator; use --aws for AWS")
    pid, url = emulator.spawn(work)
    log(f"bench: started a private emulator at {url}")
    return Settings.load(env={}, state_dir=work / "state", endpoint_url=url, region=settings.region), pid


# -- number jobs used by the throughput scenarios ---------------------------------------------------

def number_lists(n: int, seed: int = 0) -> list[list[int]]:
    """``n`` small lists of integers (5 to 20 items each)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(-1000, 1000, size=int(rng.integers(5, 21))).tolist() for _ in range(n)]


def plain_stats(values: Sequence[int | float]) -> dict[str, Any]:
    """count/min/max/mean/median with the standard library: an independent reference."""
    return {"count": len(values), "min": min(values), "max": max(values),
            "mean": sum(values) / len(values), "median": statistics.median(values)}


def _matches(result: Any, expected: dict[str, Any]) -> bool:
    if not isinstance(result, dict):
        return False
    return all(result.get(k) == expected[k] for k in ("count", "min", "max", "median")) and \
        abs(result.get("mean", float("nan")) - expected["mean"]) <= 1e-9 * max(1.0, abs(expected["mean"]))


# -- scenario: the floor ----------------------------------------------------------------------------

def _drive(n: int, window: int, send: Callable[[list[int]], None], receive: Callable[[], list[int]],
           batch: int = 10, timeout: float = 120.0) -> tuple[float, list[float]]:
    """Send jobs ``0..n-1`` (``batch`` at a time, at most ``window`` unanswered) while a thread calls
    ``receive`` (which returns the indexes answered); returns (seconds, latencies by job)."""
    sent_at = [0.0] * n
    latencies = [float("nan")] * n
    room = threading.Semaphore(window)
    done = threading.Event()
    failure: list[BaseException] = []

    def receiver() -> None:
        got = 0
        try:
            while got < n and not done.is_set():
                for i in receive():
                    if latencies[i] != latencies[i]:  # NaN: first answer for this job
                        latencies[i] = time.perf_counter() - sent_at[i]
                        got += 1
                        room.release()
        except BaseException as exc:  # noqa: BLE001 (reported to the sender)
            failure.append(exc)
            for _ in range(window):
                room.release()
        done.set()

    t = threading.Thread(target=receiver, name="bench-receiver", daemon=True)
    t0 = time.perf_counter()
    t.start()
    i = 0
    deadline = time.monotonic() + timeout
    while i < n and not failure:
        group = list(range(i, min(n, i + min(batch, window))))
        for _ in group:
            if not room.acquire(timeout=max(0.0, deadline - time.monotonic())):
                done.set()
                raise JobTimeout(f"no answer within {timeout:.0f} s ({i} sent)")
        now = time.perf_counter()
        for j in group:
            sent_at[j] = now
        send(group)
        i += len(group)
    if not done.wait(timeout=max(0.0, deadline - time.monotonic())):
        done.set()
        raise JobTimeout(f"{sum(x != x for x in latencies)} of {n} jobs unanswered after {timeout:.0f} s")
    if failure:
        raise failure[0]
    return time.perf_counter() - t0, latencies


def floor(rig: Rig, jobs: int, window: int, workers: int = 1,
          servers: Sequence[CountedProcess] | None = None, seed: int = 1) -> Result:
    """A request queue configured like labkit's, driven by the fewest calls and no labkit code in the
    message path (raw boto3 calls, plain JSON, plain Python statistics), with the same window."""
    lists = number_lists(jobs, seed=seed)
    own = servers is None
    servers = rig.floor_servers(workers) if servers is None else servers
    clients = Clients(rig.settings)
    sqs = clients.sqs
    request = rig.floor_queue()
    reply = rig.reply_queue("floor")
    answers: dict[int, Any] = {}

    def send(group: list[int]) -> None:
        entries = [{"Id": str(k), "MessageBody": json.dumps({"id": i, "reply_to": reply, "numbers": lists[i]})}
                   for k, i in enumerate(group)]
        resp = sqs.send_message_batch(QueueUrl=request, Entries=entries)
        if resp.get("Failed"):
            raise LabkitError(f"floor: send refused: {resp['Failed']}")

    def receive() -> list[int]:
        msgs = sqs.receive_message(QueueUrl=reply, MaxNumberOfMessages=10, WaitTimeSeconds=5).get("Messages", [])
        if not msgs:
            return []
        sqs.delete_message_batch(QueueUrl=reply, Entries=[{"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]}
                                                          for k, m in enumerate(msgs)])
        out = []
        for m in msgs:
            body = json.loads(m["Body"])
            answers[body["id"]] = body["result"]
            out.append(body["id"])
        return out

    try:
        calls = rig.meter(servers, clients)
        calls.start()
        seconds, latencies = _drive(jobs, window, send, receive)
        counted = calls.stop()
    finally:
        if own:
            rig.stop(servers)
    correct = sum(_matches(answers.get(i), plain_stats(v)) for i, v in enumerate(lists))
    return Result("floor", jobs, seconds, correct, counted, latencies, {"window": window, "workers": len(servers)},
                  calls.cpu)


def merge(parts: Sequence[Result]) -> Result:
    """Rounds of one scenario as one result (jobs, seconds, calls and latencies added up)."""
    first = parts[0]
    return Result(first.name, sum(p.jobs for p in parts), sum(p.seconds for p in parts),
                  sum(p.correct for p in parts), _add(*(p.calls for p in parts)),
                  [x for p in parts for x in p.latencies],
                  {**parts[-1].extra, "rounds": len(parts), "windows": [p.extra.get("window") for p in parts]},
                  _addf(*(p.cpu for p in parts)))


def throughput(rig: Rig, jobs: int, window: int | None, workers: int = 1, concurrency: int = 4,
               rounds: int = 2) -> tuple[Result, Result]:
    """The floor and labkit on ``jobs`` jobs each, in alternating rounds (floor, labkit, labkit, floor,
    ...), so that drift in the emulator's speed or the machine's load hits both alike."""
    from labkit.client import Lab
    floor_window = window
    if floor_window is None:
        with Lab(rig.settings) as probe:
            floor_window = probe.default_window()
    servers = rig.floor_servers(workers)
    procs = rig.workers(workers, "numbers", concurrency)
    sizes = [jobs // rounds + (r < jobs % rounds) for r in range(rounds)]
    floors: list[Result] = []
    labs: list[Result] = []
    try:
        for r, size in enumerate(sizes):
            order = ("floor", "labkit") if r % 2 == 0 else ("labkit", "floor")
            for name in order:
                if name == "floor":
                    floors.append(floor(rig, size, floor_window, workers, servers, seed=10 + r))
                else:
                    labs.append(labkit_throughput(rig, size, window, workers, concurrency, procs, seed=20 + r))
    finally:
        rig.stop([*servers, *procs])
    return merge(floors), merge(labs)


def _serve_floor(clients: Clients, queue_name: str, stop: threading.Event, wait: int = 1) -> None:
    """The floor's worker: receive 10, answer, one reply batch per reply queue, one delete batch."""
    sqs = clients.sqs
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    while not stop.is_set():
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait).get("Messages", [])
        if not msgs:
            continue
        replies: dict[str, list[dict[str, str]]] = defaultdict(list)
        for m in msgs:
            body = json.loads(m["Body"])
            entries = replies[body["reply_to"]]
            entries.append({"Id": str(len(entries)),
                            "MessageBody": json.dumps({"id": body["id"], "result": plain_stats(body["numbers"])})})
        for reply_url, entries in replies.items():
            sqs.send_message_batch(QueueUrl=reply_url, Entries=entries)
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]}
                                                        for k, m in enumerate(msgs)])


# -- scenario: labkit -------------------------------------------------------------------------------

def labkit_throughput(rig: Rig, jobs: int, window: int | None, workers: int = 1, concurrency: int = 4,
                      procs: Sequence[CountedProcess] | None = None, seed: int = 2) -> Result:
    """``jobs`` small number jobs through the client's batched, windowed submission (what
    :meth:`Lab.numbers_many` does; the jobs are kept for their latencies) and real worker processes."""
    from labkit.client import Lab
    lists = number_lists(jobs, seed=seed)
    own = procs is None
    procs = rig.workers(workers, "numbers", concurrency) if procs is None else procs
    try:
        with Lab(rig.settings) as lab:
            lab.numbers([1, 2, 3]).result(timeout=60)  # warm: reply queue made, queue looked up, worker awake
            _settle()
            calls = rig.meter(procs, lab.clients)
            calls.start()
            t0 = time.perf_counter()
            jobs_list = lab.submit_many("numbers", [{"numbers": v} for v in lists], window=window, progress=False)
            seconds = time.perf_counter() - t0
            counted = calls.stop()
            used_window = lab.last_window
    finally:
        if own:
            rig.stop(procs)
    correct = sum(_job_ok(j, v) for j, v in zip(jobs_list, lists, strict=True))
    latencies = [j.latency for j in jobs_list if j.latency is not None]
    return Result("labkit", jobs, seconds, correct, counted, latencies,
                  {"window": used_window, "window_mode": "fixed" if window else "adaptive", "workers": len(procs),
                   "concurrency": concurrency}, calls.cpu)


def _settle() -> None:
    """Let a warm-up job's last calls (the deletes after its answer) land before counting starts."""
    time.sleep(0.3)


def _job_ok(job: Any, values: Sequence[int]) -> bool:
    try:
        return _matches(job.result(timeout=0), plain_stats(values))
    except LabkitError:
        return False


def round_trip(rig: Rig, jobs: int = 50, procs: Sequence[CountedProcess] | None = None) -> Result:
    """One number job at a time: submit, wait for the answer, next."""
    from labkit.client import Lab
    lists = number_lists(jobs, seed=3)
    own = procs is None
    procs = rig.workers(1, "numbers") if procs is None else procs
    try:
        with Lab(rig.settings) as lab:
            lab.numbers([1]).result(timeout=60)
            _settle()
            calls = rig.meter(procs, lab.clients)
            calls.start()
            latencies, correct = [], 0
            t0 = time.perf_counter()
            for values in lists:
                t = time.perf_counter()
                result = lab.numbers(values).result(timeout=60)
                latencies.append(time.perf_counter() - t)
                correct += _matches(result, plain_stats(values))
            seconds = time.perf_counter() - t0
            counted = calls.stop()
    finally:
        if own:
            rig.stop(procs)
    return Result("round_trip", jobs, seconds, correct, counted, latencies, cpu=calls.cpu)


# -- scenario: the original lab's pattern -----------------------------------------------------------

# The original lab's queue attributes (its create-queue.json).
ORIGINAL_ATTRIBUTES = {"DelaySeconds": "1", "MessageRetentionPeriod": "3600",
                       "ReceiveMessageWaitTimeSeconds": "1", "VisibilityTimeout": "1"}


def original_reply(text: str) -> str:
    """The original worker's answer to ``1,5,22``."""
    values = sorted(int(x) for x in text.split(","))
    return (f"The list minimum is : {values[0]} \nThe list maximum is : {values[-1]} \n"
            f"The list average is : {statistics.mean(values)} \nThe list median is : {statistics.median(values)}")


def _original_queues(rig: Rig) -> tuple[str, str]:
    if not hasattr(rig, "_original"):
        rig._original = (rig.create_queue("orig-requestQueue", ORIGINAL_ATTRIBUTES),  # type: ignore[attr-defined]
                         rig.create_queue("orig-responseQueue", ORIGINAL_ATTRIBUTES))
    return rig._original  # type: ignore[attr-defined]


class _OriginalClient:
    """The original client's calls: a queue lookup and a send per job; a lookup, a receive (the queue's
    1 s wait) and a batched delete per poll. Replies carry no id: they are matched by content."""

    def __init__(self, clients: Clients, request_name: str, response_name: str) -> None:
        self.sqs = clients.sqs
        self.request_name = request_name
        self.response_name = response_name

    def send(self, body: str) -> None:
        url = self.sqs.get_queue_url(QueueName=self.request_name)["QueueUrl"]
        self.sqs.send_message(QueueUrl=url, MessageBody=body)

    def poll(self) -> list[str]:
        url = self.sqs.get_queue_url(QueueName=self.response_name)["QueueUrl"]
        msgs = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if msgs:
            self.sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]} for k, m in enumerate(msgs)])
        return [m["Body"] for m in msgs]


def original(rig: Rig, jobs: int, window: int) -> Result:
    """The original pattern with the same window, for reference."""
    lists = number_lists(jobs, seed=4)
    req, resp = _original_queues(rig)
    server = rig.spawn("serve", "original", "--queue", req.rsplit("/", 1)[-1], "--reply", resp.rsplit("/", 1)[-1])
    clients = Clients(rig.settings)
    client = _OriginalClient(clients, req.rsplit("/", 1)[-1], resp.rsplit("/", 1)[-1])
    # No correlation id in the original replies: any reply whose text matches a pending job's answer
    # completes one such job (identical answers are interchangeable).
    pending: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()
    expected = [original_reply(",".join(map(str, v))) for v in lists]
    unexpected: list[str] = []

    def send(group: list[int]) -> None:
        for i in group:
            with lock:
                pending[expected[i]].append(i)
            client.send(",".join(map(str, lists[i])))

    def receive() -> list[int]:
        out = []
        for body in client.poll():
            with lock:
                waiting = pending.get(body)
                if waiting:
                    out.append(waiting.pop(0))
                else:
                    unexpected.append(body)
        return out

    calls = rig.meter([server], clients)
    calls.start()
    seconds, latencies = _drive(jobs, window, send, receive, batch=1)
    counted = calls.stop()
    rig.stop([server])
    correct = jobs - sum(x != x for x in latencies)
    return Result("original", jobs, seconds, correct, counted, latencies,
                  {"window": window, "unexpected_replies": len(unexpected)}, calls.cpu)


def original_round_trip(rig: Rig, jobs: int) -> Result:
    """The original client: send one job, poll until its answer arrives, next."""
    lists = number_lists(jobs, seed=5)
    req, resp = _original_queues(rig)
    server = rig.spawn("serve", "original", "--queue", req.rsplit("/", 1)[-1], "--reply", resp.rsplit("/", 1)[-1])
    clients = Clients(rig.settings)
    client = _OriginalClient(clients, req.rsplit("/", 1)[-1], resp.rsplit("/", 1)[-1])
    calls = rig.meter([server], clients)
    calls.start()
    latencies, correct = [], 0
    t0 = time.perf_counter()
    for values in lists:
        t = time.perf_counter()
        client.send(",".join(map(str, values)))
        bodies: list[str] = []
        while not bodies and time.perf_counter() - t < 60:
            bodies = client.poll()
        latencies.append(time.perf_counter() - t)
        correct += bodies == [original_reply(",".join(map(str, values)))]
    seconds = time.perf_counter() - t0
    counted = calls.stop()
    rig.stop([server])
    return Result("original_round_trip", jobs, seconds, correct, counted, latencies, cpu=calls.cpu)


def _serve_original(clients: Clients, queue_name: str, reply_name: str, stop: threading.Event) -> None:
    """The original worker: receive up to 10 (the queue's 1 s wait), delete them, one send per reply."""
    sqs = clients.sqs
    url = sqs.get_queue_url(QueueName=queue_name)["QueueUrl"]
    reply = sqs.get_queue_url(QueueName=reply_name)["QueueUrl"]
    while not stop.is_set():
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
        if not msgs:
            continue
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]}
                                                        for k, m in enumerate(msgs)])
        for m in msgs:
            sqs.send_message(QueueUrl=reply, MessageBody=original_reply(m["Body"]))


# -- scenario: 10 million numbers -------------------------------------------------------------------

def big_numbers(rig: Rig, n: int = 10_000_000, repeat: int = 2) -> tuple[Result, Result]:
    """A random list of ``n`` float64 through the claim check and a fresh worker, against the same bytes
    uploaded, summarised and downloaded directly; best of ``repeat``. Also the worker's peak RSS."""
    from labkit.aws.storage import Bucket
    from labkit.client import Lab
    [proc] = rig.workers(1, "numbers", 1)
    bucket = Bucket(rig.clients.s3, rig.settings.bucket or "")
    try:
        with Lab(rig.settings) as lab:
            lab.numbers([1, 2, 3]).result(timeout=60)
            _settle()
            baseline = proc.rss_kb().get("VmRSS", 0)
            values = lab.random_numbers(n, integers=False, seed=6)
            reference = {"count": n, "min": float(values.min()), "max": float(values.max()),
                         "mean": float(values.mean()), "median": float(np.median(values))}
            e2e, direct, correct = [], [], 0
            counted: dict[str, int] = {}
            cpu: dict[str, float] = {}
            for r in range(repeat):
                t = time.perf_counter()
                bucket.put(f"payloads/bench-direct-{r}.bin", values.tobytes())
                stats = {"min": values.min(), "max": values.max(), "mean": values.mean(), "median": np.median(values)}
                back = np.frombuffer(bucket.get(f"payloads/bench-direct-{r}.bin"), dtype=np.float64)
                direct.append(time.perf_counter() - t)
                if back.size != n or stats["min"] != reference["min"]:
                    raise LabkitError("big_direct: the downloaded bytes differ from the uploaded ones")
                del back
                calls = rig.meter([proc], lab.clients)
                calls.start()
                t = time.perf_counter()
                result = lab.numbers(values).result(timeout=600)
                e2e.append(time.perf_counter() - t)
                counted = _add(counted, calls.stop())
                cpu = _addf(cpu, calls.cpu)
                correct += _close(result, reference)
            peak = proc.rss_kb().get("VmHWM", 0)
    finally:
        rig.stop([proc])
    payload = values.nbytes
    extra = {"numbers": n, "payload_mib": payload / 2**20, "payload_format": "npy float64",
             "baseline_rss_mib": baseline / 1024, "peak_rss_mib": peak / 1024,
             "peak_rss_vs_payload": peak * 1024 / payload, "growth_vs_payload": (peak - baseline) * 1024 / payload,
             "all_seconds": [round(x, 3) for x in e2e]}
    big = Result("big", 1, min(e2e), int(correct == repeat), {k: v // repeat for k, v in counted.items()}, [], extra,
                 {k: v / repeat for k, v in cpu.items()})
    ref = Result("big_direct", 1, min(direct), 1, {}, [], {"all_seconds": [round(x, 3) for x in direct]})
    return big, ref


def _close(result: Any, ref: dict[str, Any]) -> bool:
    """Exact count/min/max; mean and median within float rounding of numpy's."""
    if not isinstance(result, dict) or any(result.get(k) != ref[k] for k in ("count", "min", "max")):
        return False
    scale = max(abs(ref["min"]), abs(ref["max"]), 1.0)
    return all(abs(float(result.get(k, np.inf)) - ref[k]) <= 1e-9 * scale for k in ("mean", "median"))


# -- scenario: images -------------------------------------------------------------------------------

IMAGE_OPS = [{"op": "grayscale"}, {"op": "thumbnail", "size": 256}]


def photo(seed: int, width: int = 1920, height: int = 1080) -> bytes:
    """A photo-like JPEG: smooth gradients with sensor-like noise (about 1 MB at 1080p)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 128 / (width + height) + 20 * (seed % 5)], -1)
    base += rng.normal(0, 18, base.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pillow_work(data: bytes) -> tuple[int, int]:
    """The images scenario's work with Pillow alone: decode, grayscale, thumbnail 256, PNG."""
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        out = im.convert("L")
    out.thumbnail((256, 256))
    buf = io.BytesIO()
    out.save(buf, "PNG")
    return out.size


def images(rig: Rig, count: int = 50, workers: int = 1, concurrency: int = 4,
           window: int | None = None) -> tuple[Result, Result]:
    """``count`` 1080p images through grayscale + thumbnail on ``workers`` worker processes, against the
    same Pillow work in ``workers`` local processes. Uploads happen before the clock starts."""
    from labkit.client import Lab
    sources = [photo(s) for s in range(min(count, 4))]
    data = [sources[i % len(sources)] for i in range(count)]
    # The in-process reference runs before and after labkit's run (its mean is kept), so that drift in
    # the machine's load hits both alike.
    local: list[float] = []
    procs = rig.workers(workers, "images", concurrency)
    sizes = _pillow_timed(data, workers, local)
    try:
        with Lab(rig.settings) as lab:
            t = time.perf_counter()
            keys = [lab.upload_image(d, name=f"bench-{rig.tag}/{i:04d}.jpg") for i, d in enumerate(data)]
            upload = time.perf_counter() - t
            lab.image(keys[0], IMAGE_OPS, output=f"bench-{rig.tag}/warm.png").result(timeout=60)
            _settle()
            payloads = [{"bucket": lab.bucket.name, "key": k, "ops": IMAGE_OPS, "format": "png"} for k in keys]
            calls = rig.meter(procs, lab.clients)
            calls.start()
            t = time.perf_counter()
            jobs = lab.submit_many("image", payloads, window=window, progress=False)
            seconds = time.perf_counter() - t
            counted = calls.stop()
            sizes += _pillow_timed(data, workers, local)
            correct = 0
            for job in jobs:
                with contextlib.suppress(LabkitError):
                    res = job.result(timeout=0)
                    correct += (res["width"], res["height"], res["format"]) == (256, 144, "png")
    finally:
        rig.stop(procs)
    latencies = [j.latency for j in jobs if j.latency is not None]
    # For attribution: labkit's own image code (labkit.jobs.images.process, no AWS) on one process.
    from labkit.jobs.images import process
    t = time.perf_counter()
    for d in data:
        process(d, IMAGE_OPS, "png")
    own_code = time.perf_counter() - t
    ref = Result("images_inprocess", count, statistics.mean(local), sum(s == (256, 144) for s in sizes) // 2,
                 {}, [], {"processes": workers, "all_seconds": [round(x, 3) for x in local],
                          "labkit_image_code_per_s": round(count / own_code, 1)})
    return (Result("images", count, seconds, correct, counted, latencies,
                   {"workers": workers, "concurrency": concurrency, "upload_s": upload,
                    "image_bytes": sum(map(len, data)) // count}, calls.cpu), ref)


def _pillow_timed(data: list[bytes], processes: int, times: list[float]) -> list[tuple[int, int]]:
    """:func:`pillow_work` on every image with ``processes`` processes; appends the seconds to ``times``."""
    if processes > 1:
        import multiprocessing
        with cf.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(pillow_work, data[:processes]))  # start the processes first
            t = time.perf_counter()
            sizes = list(pool.map(pillow_work, data))
    else:
        pillow_work(data[0])
        t = time.perf_counter()
        sizes = [pillow_work(d) for d in data]
    times.append(time.perf_counter() - t)
    return sizes


# -- the whole run ----------------------------------------------------------------------------------

SCENARIOS = ("floor", "labkit", "round_trip", "original", "big", "images")


@dataclass
class Plan:
    """Sizes of one run. :meth:`quick` is a small run for tests and notebooks."""

    jobs: int = 2000
    window: int | None = None  # None: the client's default for the endpoint
    workers: int = 1
    concurrency: int = 4
    round_trips: int = 50
    original_jobs: int = 300
    original_round_trips: int = 6
    big: int = 10_000_000
    images: int = 50
    rounds: int = 2  # floor and labkit alternate in this many rounds each
    only: tuple[str, ...] = SCENARIOS

    @classmethod
    def full(cls, **changes: Any) -> Plan:
        """The default run (about 2 minutes on 2 cores), with ``changes`` (None values ignored)."""
        return dataclasses.replace(cls(), **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def quick(cls, **changes: Any) -> Plan:
        """A small run (about 30 s), with ``changes`` (None values ignored)."""
        base = cls(jobs=200, round_trips=10, original_jobs=30, original_round_trips=2, big=200_000, images=4)
        return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


def run_bench(plan: Plan | None = None, settings: Settings | None = None, aws: bool = False,
              log: Callable[[str], None] = lambda s: None) -> Report:
    """Run the scenarios of ``plan`` in one process on one endpoint and return the :class:`Report`.

    ``settings``: an endpoint to use (its queue and bucket names are ignored: the run makes its own);
    default: the emulator of ``labkit up`` if it runs, else a private one (or real AWS with ``aws``).
    """
    plan = plan or Plan()
    unknown = set(plan.only) - set(SCENARIOS)
    if unknown:
        raise ConfigError(f"unknown scenario(s) {', '.join(sorted(unknown))}: choose from {', '.join(SCENARIOS)}")
    with Rig.open(settings, aws, log) as rig:
        from labkit.client import Lab
        with Lab(rig.settings) as probe:
            window = plan.window or probe.default_window()
            flow = probe.adaptive_window()
            described = str(window) if plan.window or flow.low == flow.high else \
                f"adaptive from {window} ({flow.low}-{flow.high})"
        where = ("AWS " + rig.settings.region) if not rig.settings.is_local else \
            f"emulator (moto {_moto_version()}) at {rig.settings.endpoint_url}"
        params = {"jobs": plan.jobs, "window": described, "workers": plan.workers, "concurrency": plan.concurrency,
                  "cores": os.cpu_count(), "plan": plan.__dict__ | {"only": list(plan.only)}}
        report = Report(where, params)

        def run(name: str, fn: Callable[[], Result | tuple[Result, ...]]) -> None:
            log(f"bench: {name} ...")
            out = fn()
            for res in out if isinstance(out, tuple) else (out,):
                report.results[res.name] = res
                log(f"bench:   {res.name}: {res.jobs} job(s) in {res.seconds:.2f} s ({res.jobs_per_s:.1f}/s), "
                    f"{res.correct} correct")

        if "floor" in plan.only and "labkit" in plan.only:
            run("floor and labkit", lambda: throughput(rig, plan.jobs, plan.window, plan.workers,
                                                       plan.concurrency, plan.rounds))
        elif "floor" in plan.only:
            run("floor", lambda: floor(rig, plan.jobs, window, plan.workers))
        elif "labkit" in plan.only:
            run("labkit", lambda: labkit_throughput(rig, plan.jobs, plan.window, plan.workers, plan.concurrency))
        if "round_trip" in plan.only:
            run("round trip", lambda: round_trip(rig, plan.round_trips))
        if "original" in plan.only:
            run("original", lambda: original(rig, plan.original_jobs, window))
            run("original round trip", lambda: original_round_trip(rig, plan.original_round_trips))
        if "big" in plan.only:
            run(f"{plan.big:,} numbers", lambda: big_numbers(rig, plan.big))
        if "images" in plan.only:
            run("images", lambda: images(rig, plan.images, plan.workers, plan.concurrency))
    return report


def sweep(windows: Sequence[int] = (10, 20, 40, 80), workers: Sequence[int] = (1, 2),
          concurrency: Sequence[int] = (4,), jobs: int = 500, settings: Settings | None = None,
          aws: bool = False, log: Callable[[str], None] = lambda s: None) -> list[dict[str, Any]]:
    """Throughput and latency of labkit and of the floor against the window, the number of worker
    processes and their concurrency: one plain dict per pipeline and point, e.g. for ``labkit.plots``."""
    rows: list[dict[str, Any]] = []
    with Rig.open(settings, aws, log) as rig:
        for k in workers:
            for c in concurrency:
                for w in windows:
                    fl, lab = throughput(rig, jobs, w, k, c, rounds=1)
                    rows += [_point("floor", fl, w, k, None), _point("labkit", lab, w, k, c)]
                    log(f"sweep: window {w}, workers {k}x{c}: labkit {lab.jobs_per_s:.1f} jobs/s, "
                        f"floor {fl.jobs_per_s:.1f} jobs/s")
    return rows


def _point(pipeline: str, res: Result, window: int, workers: int, concurrency: int | None) -> dict[str, Any]:
    return {"pipeline": pipeline, "window": window, "workers": workers, "concurrency": concurrency,
            "jobs": res.jobs, "correct": res.correct, "jobs_per_s": round(res.jobs_per_s, 2),
            "p50_ms": _ms(res.p50), "p95_ms": _ms(res.p95), "calls_per_job": _round(res.calls_per_job, 3)}


def format_sweep(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'pipeline':<9}{'window':>7}{'workers':>8}{'conc':>6}{'jobs/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
             f"{'calls/job':>10}"]
    for r in rows:
        lines.append(f"{r['pipeline']:<9}{r['window']:>7}{r['workers']:>8}{r['concurrency'] or '-':>6}"
                     f"{r['jobs_per_s']:>9.1f}{r['p50_ms'] or 0:>9.1f}{r['p95_ms'] or 0:>9.1f}"
                     f"{r['calls_per_job'] or 0:>10.3f}")
    return "\n".join(lines)


def _moto_version() -> str:
    try:
        from importlib.metadata import version
        return version("moto")
    except Exception:
        return "?"


# -- child processes: `python -m labkit.bench worker|serve ... --counts FILE` ------------------------

class _CountsFile:
    """Writes a counter's snapshot to ``path`` (atomically, with a sequence number) on SIGUSR1."""

    def __init__(self, path: Path, snapshot: Callable[[], dict[str, int]]) -> None:
        self.path = path
        self.snapshot = snapshot
        self.seq = 0
        self._lock = threading.Lock()

    def write(self, *_: Any) -> None:
        with self._lock:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"seq": self.seq, "pid": os.getpid(), "calls": self.snapshot()}))
            os.replace(tmp, self.path)
            self.seq += 1

    def install(self) -> None:
        # Written from a thread: the signal may arrive while the main thread holds the counter's lock.
        signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=self.write, daemon=True).start())


def _child_main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m labkit.bench", description="bench child processes (internal)")
    p.add_argument("role", choices=["worker", "serve"])
    p.add_argument("pattern", nargs="?", choices=["floor", "original"])
    p.add_argument("--counts", required=True, type=Path)
    p.add_argument("--queues", default="numbers")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--poll-wait", type=int, default=1)
    p.add_argument("--queue")
    p.add_argument("--reply")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    settings = Settings.load()
    if args.role == "worker":
        # The real worker (what `python -m worker` runs), plus a report of its API calls.
        from worker.loop import Worker
        roles = tuple(r.strip() for r in args.queues.split(",") if r.strip())
        w = Worker(settings, roles=roles, concurrency=args.concurrency, poll_wait=args.poll_wait)
        counts = _CountsFile(args.counts, w.clients.counter.snapshot)
        w.install_signal_handlers()
        counts.install()
        counts.write()  # ready: the bench warms every worker up with a job before it counts
        code = w.run()
        counts.write()
        return code
    clients = Clients(settings)
    counts = _CountsFile(args.counts, clients.counter.snapshot)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    counts.install()
    clients.sqs.get_queue_url(QueueName=args.queue)  # connect before reporting ready
    counts.write()
    if args.pattern == "floor":
        _serve_floor(clients, args.queue, stop, args.poll_wait)
    else:
        _serve_original(clients, args.queue, args.reply, stop)
    counts.write()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
