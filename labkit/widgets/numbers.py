"""Panels for number jobs: :class:`NumbersPanel` (one list) and :class:`BatchPanel` (many jobs)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as W
import numpy as np

from labkit import plots
from labkit.aws.queues import PurgeOutcome
from labkit.client import ARRAY_THRESHOLD, Job, Lab
from labkit.config import PAYLOADS_PREFIX
from labkit.errors import LabkitError
from labkit.jobs.numbers import MAX_RANDOM_LENGTH, PRESET
from labkit.presenters import Table, purge_report
from labkit.timeline import worker_label
from labkit.watcher import QueueWatcher, Sample
from labkit.widgets.base import LABELS, TOGGLES, IntField, LabPanel
from labkit.widgets.live import LiveDepth


class NumbersPanel(LabPanel):
    """The original lab's client options: type numbers, the preset list, or a random list of any length
    (long lists travel through S3). ``send()`` shows the result as a table and a histogram."""

    MODES = (("type numbers", "typed"), ("preset list", "preset"), ("random list", "random"))
    PURGE = (("all queues", "all"), ("requests", "requests"), ("responses", "responses"),
             ("image inbox", "inbox"), ("image outbox", "outbox"))
    MAX_LENGTH = MAX_RANDOM_LENGTH  # the CLI's --random stops at the same length

    def __init__(self, lab: Lab, text: str = "1, 5, 22, 33, 9", random_length: int = 1000,
                 timeout: float = 120.0) -> None:
        super().__init__(lab)
        self.timeout = timeout
        self.seed: int | None = None
        self.mode = W.ToggleButtons(options=self.MODES, value="typed", description="send", style=TOGGLES)
        self.text = W.Textarea(value=text, placeholder="numbers, separated by commas or spaces: 1, 5, 22.5, -3",
                               description="numbers", style=LABELS, layout=W.Layout(width="60%"))
        self.length = IntField(random_length, 1, self.MAX_LENGTH, "length",
                               tooltip=f"how many random numbers: 1 to {self.MAX_LENGTH:,} (over "
                                       f"{ARRAY_THRESHOLD:,}, they travel through S3)")
        self.send_button = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self.purge_queue = W.Dropdown(options=self.PURGE, value="all", description="purge", style=LABELS)
        self.purge_button = W.Button(description="Purge", button_style="warning", icon="eraser",
                                     tooltip="delete every message in the queue (SQS allows one purge a minute)")
        self._button(self.send_button, self.send, self._doing)
        self._button(self.purge_button, self.purge, "purging")
        self.values_sent: Any = None
        self.result: dict[str, Any] | None = None
        self.purged: list[PurgeOutcome] = []
        self.job: Job | None = None
        self.figure: Any = None
        self.mode.observe(lambda _: self._refresh(), "value")
        self._refresh()
        self.box = W.VBox([self.mode, self.text, self.length, self.send_button,
                           W.HBox([self.purge_queue, self.purge_button]), self.busy, self.out])

    def _refresh(self) -> None:
        super()._refresh()
        self.text.disabled = self.mode.value != "typed"
        self.length.disabled = self.mode.value != "random"

    def _doing(self) -> str:
        if self.mode.value == "random":
            return f"sending {self.length.value:,} numbers and waiting for the worker"
        return f"sending the {self.mode.value} list and waiting for the worker"

    @property
    def random_length(self) -> int:
        return self.length.checked()

    def values(self) -> list[int | float] | np.ndarray:
        """The list the current choice sends: the typed numbers, the preset, or a new random list."""
        from labkit.jobs.numbers import parse_text
        if self.mode.value == "preset":
            return list(PRESET)
        if self.mode.value == "random":
            return self.lab.random_numbers(self.random_length, seed=self.seed)
        return parse_text(self.text.value)

    def send(self) -> dict[str, Any]:
        """Send the chosen list as a number job; show and return the worker's statistics."""
        values = self.values()
        t0 = time.perf_counter()
        job = self.lab.numbers(values)
        self.job, self.values_sent = job, values
        self.step(f"waiting for the worker's answer to job {job.id[:8]}")
        result = job.result(timeout=self.timeout)
        elapsed = time.perf_counter() - t0
        self.result = result
        via = self._route(job)
        rows = [[k, result[k]] for k in ("count", "min", "max", "mean", "median", "sum", "std") if k in result]
        rows += [["sent", via], ["round trip", f"{elapsed * 1000:,.0f} ms"]]
        if job.reply is not None and job.reply.worker:
            rows.append(["worker", worker_label(job.reply.worker)])  # "local worker 14003", not vm:14003
        self.show(Table(rows, ["statistic", "value"], f"Number job {job.id[:8]} ({self.mode.value} list)"))
        self.figure = plots.numbers_histogram(values, result, title=f"{self._label()} of {len(values):,} numbers: "
                                              "distribution and the worker's statistics")
        self.show(self.figure)
        return result

    def _label(self) -> str:
        return {"typed": "Typed list", "preset": "Preset list", "random": "Random list"}[self.mode.value]

    def _route(self, job: Job) -> str:
        """How the list travelled: inline in the message, or through S3 (claim check)."""
        keys = [o.key for o in self.lab.bucket.list(f"{PAYLOADS_PREFIX}{job.id}")]
        return f"through S3 (s3://{self.lab.bucket.name}/{keys[0]})" if keys else "inline in the SQS message"

    def purge(self) -> list[PurgeOutcome]:
        """Empty the chosen queue (or all: the four and the kinds' queues); show each queue's outcome (SQS allows
        one purge per queue every 60 s: a queue purged less than a minute ago is refused, with the seconds left)."""
        self.purged = self.lab.purge(self.purge_queue.value)
        self.show(*purge_report(self.purged))
        return self.purged


@dataclass
class BatchResult:
    """What a batch of jobs measured: per-job latency and send time, totals."""

    jobs: int
    errors: int
    elapsed_s: float
    latencies_s: np.ndarray = field(repr=False)
    sent_s: np.ndarray = field(repr=False)
    window: int = 0

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_s, q) * 1000) if self.latencies_s.size else float("nan")

    def table(self) -> Table:
        rows = [["jobs", self.jobs], ["errors", self.errors], ["window (jobs in flight)", self.window],
                ["elapsed", f"{self.elapsed_s:,.2f} s"], ["throughput", f"{self.jobs_per_s:,.1f} jobs/s"],
                ["latency median", f"{self.percentile_ms(50):,.0f} ms"],
                ["latency 95th percentile", f"{self.percentile_ms(95):,.0f} ms"],
                ["latency max", f"{self.percentile_ms(100):,.0f} ms"]]
        return Table(rows, None, "Batch")


class BatchPanel(LabPanel):
    """Send a batch of number jobs with a progress bar, watching the request queue meanwhile (a live depth
    plot when shown in JupyterLab); then show round-trip latency, every job's life (queue wait, compute,
    return, by worker) and the queue's depth over the batch."""

    # Seconds between looks at the request queue and its dead-letter queue (a GetQueueAttributes call each).
    # What watching costs: 6-12% of a batch's throughput on the emulator on 2 busy cores (docs/notebooks.md).
    WATCH_EVERY = 0.25
    # Seconds the watcher goes on looking after the last answer, at most, until the request queue looks empty:
    # the worker deletes a request a moment after its answer is sent (QueueWatcher.settle).
    SETTLE = 3.0

    def __init__(self, lab: Lab, jobs: int = 200, list_length: int = 100, window: int | None = None,
                 seed: int = 0) -> None:
        super().__init__(lab)
        self.seed = seed
        self.jobs = IntField(jobs, 1, 5000, "jobs")
        self.list_length = IntField(list_length, 1, ARRAY_THRESHOLD, "numbers per job")
        self.window = IntField(window or lab.default_window(), 1, 500, "jobs in flight",
                               tooltip="jobs sent but not yet answered, at most (1 to 500)")
        self.send_button = W.Button(description="Send batch", button_style="primary", icon="paper-plane")
        self.progress = W.IntProgress(value=0, min=0, max=jobs, description="done", bar_style="info", style=LABELS)
        self._button(self.send_button, self.send, lambda: f"sending {self.jobs.value:,} jobs")
        self.live = LiveDepth("Request queue while the batch runs")
        self.batch: BatchResult | None = None
        self.jobs_sent: list[Job] = []
        self.samples: list[Sample] = []  # the request queue's depth, as the watcher saw it during the batch
        self.figure: Any = None  # round-trip latency
        self.timeline_figure: Any = None  # one bar per job: queue wait, compute, return (plots.job_timeline_figure)
        self.depth_figure: Any = None  # visible, in flight, dead letters over the batch (plots.queue_depth_figure)
        self.box = W.VBox([W.HBox([self.jobs, self.list_length, self.window]), self.send_button, self.progress,
                           self.live.image, self.busy, self.out])

    def _ipython_display_(self) -> None:
        self.live.shown = True  # a person is looking: the depth plot is drawn live
        super()._ipython_display_()

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = total
        self.progress.value = done

    def send(self) -> BatchResult:
        """Send the batch (at most ``window`` jobs in flight) while watching the request queue, wait for every
        answer; show the latency, the jobs' timelines and the queue's depth."""
        n, length, window = self.jobs.checked(), self.list_length.checked(), self.window.checked()
        rng = np.random.default_rng(self.seed)
        payloads = [{"numbers": rng.integers(-1000, 1000, size=length, endpoint=True).tolist()} for _ in range(n)]
        self.progress.value, self.progress.bar_style = 0, "info"
        watch = QueueWatcher.for_lane(self.lab, "numbers", interval=self.WATCH_EVERY, on_sample=self.live.update)
        t0 = time.time()
        try:
            with watch:
                jobs = self.lab.submit_many("numbers", payloads, window=window, progress=False,
                                            desc="number jobs", on_progress=self._on_progress)
                watch.settle(self.SETTLE)
        finally:
            self.live.hide()
        self.jobs_sent, self.samples = jobs, watch.samples
        elapsed = max(j.finished or t0 for j in jobs) - t0
        errors = 0
        for j in jobs:
            try:
                j.result(timeout=0)
            except LabkitError:
                errors += 1
        ok = [j for j in jobs if j.latency is not None]
        start = min(j.submitted for j in jobs)
        self.batch = BatchResult(jobs=n, errors=errors, elapsed_s=elapsed,
                                 latencies_s=np.array([j.latency for j in ok]),
                                 sent_s=np.array([j.submitted - start for j in ok]), window=window)
        self.progress.bar_style = "success" if not errors else "danger"
        self.show(self.batch.table())
        self.figure = plots.latency_figure(self.batch.latencies_s, self.batch.sent_s,
                                           title=f"Round-trip latency of {n:,} number jobs "
                                                 f"({length:,} numbers each, at most {window} in flight)")
        self.timeline_figure = plots.job_timeline_figure([j.timeline() for j in jobs])
        self.depth_figure = plots.queue_depth_figure(
            self.samples, f"Depth of {', '.join(watch.queues)} during the batch (a look every {self.WATCH_EVERY:g} s)")
        self.show(self.figure, self.timeline_figure, self.depth_figure)
        return self.batch
