"""ipywidgets panels for the notebooks: thin front ends that collect input, call :class:`~labkit.Lab`
and show the answer.

Each panel keeps its widgets as attributes (``panel.text.value = "1 5 22"``) and its actions as public
methods (``panel.send()``, ``panel.purge()``), which is what the buttons call. Called from a cell, an
action shows its output under that cell; from a button, in the panel's ``out`` area. Notebooks run
unattended (papermill, ``interactive = False``) call the same methods the buttons do.

    panel = NumbersPanel(lab)
    display(panel)                   # in JupyterLab: type numbers, pick preset or random, press Send
    result = panel.send()            # or the same action from code
"""

from __future__ import annotations

import html
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from labkit import plots
from labkit.client import ARRAY_THRESHOLD, ImageResult, Job, Lab
from labkit.config import PAYLOADS_PREFIX, Settings
from labkit.errors import ConfigError, InvalidInput, LabkitError
from labkit.notebooks import number_or_text

PRESET = [1, 5, 22, 33, 9, 0, -15, 8, 22, 100, 33, 62, 90, 150, 1, 2, 3]  # the original lab's list
BACKENDS = ("local", "aws", "auto")
SAMPLES = ("gradient", "rings", "checkerboard")


# -- display helpers ------------------------------------------------------------------------------------

class Table:
    """A small table that shows as HTML in notebooks and as aligned text everywhere else.

    ``headers=None`` makes a two-column "name: value" table without a header row."""

    def __init__(self, rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None,
                 title: str | None = None) -> None:
        self.headers = None if headers is None else [str(h) for h in headers]
        self.rows = [["" if v is None else _cell(v) for v in row] for row in rows]
        self.title = title

    def __str__(self) -> str:
        lines = ([self.headers] if self.headers else []) + self.rows
        ncols = max((len(r) for r in lines), default=0)
        widths = [max((len(r[i]) for r in lines if i < len(r)), default=0) for i in range(ncols)]

        def line(values: Sequence[str]) -> str:
            return "  ".join(str(v).ljust(w) for v, w in zip(values, widths, strict=False)).rstrip()

        out = [self.title] if self.title else []
        if self.headers:
            out += [line(self.headers), "  ".join("-" * w for w in widths)]
        out += [line(r) for r in self.rows]
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head = ""
        if self.headers:
            head = "<thead><tr>" + "".join(f"<th style='text-align:left'>{html.escape(h)}</th>"
                                           for h in self.headers) + "</tr></thead>"
        body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(v)}</td>" for v in r) + "</tr>"
                       for r in self.rows)
        caption = f"<caption style='text-align:left'><b>{html.escape(self.title)}</b></caption>" if self.title else ""
        return f"<table>{caption}{head}<tbody>{body}</tbody></table>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": str(self), "text/html": self._repr_html_()}


class Message:
    """One line of text: ``kind`` is "info", "ok", "warning" or "error" (colours the HTML)."""

    COLORS = {"info": "inherit", "ok": "#1a7f37", "warning": "#9a6700", "error": "#cf222e"}

    def __init__(self, text: str, kind: str = "info") -> None:
        self.text = text
        self.kind = kind

    def __str__(self) -> str:
        prefix = {"warning": "WARNING: ", "error": "error: "}.get(self.kind, "")
        return prefix + self.text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        color = self.COLORS.get(self.kind, "inherit")
        weight = "bold" if self.kind in ("warning", "error") else "normal"
        body = html.escape(str(self)).replace("\n", "<br>")
        return {"text/plain": str(self), "text/html": f"<div style='color:{color};font-weight:{weight}'>{body}</div>"}


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.6g}"
    return str(value)


def bundle(item: Any) -> dict[str, str]:
    """The display bundle for a Table, a Message, a figure or anything printable."""
    from matplotlib.figure import Figure
    if isinstance(item, Figure):
        return plots.mime_bundle(item)
    if hasattr(item, "_repr_mimebundle_"):
        return item._repr_mimebundle_()
    return {"text/plain": str(item)}


class Panel:
    """Base of the panels: an ``out`` area, and actions that show there when a button runs them."""

    def __init__(self) -> None:
        self.out = W.Output()
        self._to_widget = False
        self.box: W.Widget = W.VBox([self.out])

    def show(self, *items: Any) -> None:
        """Display items under the running cell, or in ``out`` while a button's action runs."""
        for item in items:
            data = bundle(item)
            if self._to_widget:
                self.out.outputs += ({"output_type": "display_data", "data": data, "metadata": {}},)
            else:
                from IPython.display import display
                display(data, raw=True)

    def clear(self) -> None:
        self.out.outputs = ()

    def _button(self, button: W.Button, action: Callable[[], Any]) -> None:
        """Run ``action`` when ``button`` is clicked; errors become a red line in ``out``."""
        def on_click(_: W.Button) -> None:
            self.clear()
            self._to_widget = True
            button.disabled = True
            try:
                action()
            except LabkitError as exc:
                self.show(Message(str(exc), "error"))
            except Exception as exc:  # a button must never fail silently: show what went wrong
                self.show(Message(f"{type(exc).__name__}: {exc}", "error"))
            finally:
                button.disabled = False
                self._to_widget = False
        button.on_click(on_click)

    def _ipython_display_(self) -> None:
        from IPython.display import display
        display(self.box)


# -- setup and teardown ---------------------------------------------------------------------------------

def resolve_backend(backend: str, settings: Settings) -> str:
    """"local" or "aws". "auto": local when the state file points at the emulator or when neither an
    endpoint nor AWS credentials are configured; AWS otherwise."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        from labkit.local import choose_local
        return "local" if settings.is_local or choose_local(settings, None) else "aws"
    return backend


def running_workers(workers: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The recorded local workers whose process still runs."""
    from labkit.emulator import pid_alive
    return [w for w in workers if isinstance(w.get("pid"), int) and w["pid"] > 0 and pid_alive(w["pid"])]


def status_tables(status: dict[str, Any]) -> list[Table]:
    """``Lab.status()`` as tables: queues with their depths, then bucket and workers."""
    queues = []
    for name, q in status["queues"].items():
        if "error" in q:
            queues.append([name, q.get("role", ""), q["error"], "", ""])
            continue
        dl = q.get("dead_letter")
        queues.append([name, q["role"], q["visible"], q["in_flight"], "" if dl is None else dl])
    b = status.get("bucket") or {}
    if b and "error" not in b:
        contents = ", ".join(f"{k} {v}" for k, v in sorted(b["by_prefix"].items())) or "empty"
        bucket_line = f"{b['name']} ({b['objects']} objects: {contents})"
    else:
        bucket_line = f"{b.get('name', '?')} ({b.get('error', 'unknown')})"
    workers = status.get("workers", [])
    alive = running_workers(workers)
    other = [["endpoint", status["endpoint"]], ["bucket", bucket_line],
             ["reply queues", status.get("reply_queues", 0)],
             ["local workers", f"{len(alive)} running" + "".join(f", pid {w['pid']}" for w in alive)]]
    return [Table(queues, ["queue", "role", "visible", "in flight", "dead-letter"], "Queues"),
            Table(other, None, "Resources")]


class SetupPanel(Panel):
    """Choose the backend, start the emulator and local workers if local, provision, show status.

    On real AWS, ``plan()`` warns what will be created (and that it costs money until torn down)
    before ``start()`` creates anything.
    """

    def __init__(self, state_dir: str | Path = ".labkit", backend: str = "local", workers: int = 1,
                 concurrency: int = 4) -> None:
        super().__init__()
        self.state_dir = Path(state_dir)
        self.backend = W.ToggleButtons(options=[("embedded emulator", "local"), ("AWS", "aws")],
                                       value=resolve_backend(backend, self.settings()), description="backend")
        self.workers = W.IntSlider(value=workers, min=0, max=8, description="local workers")
        self.concurrency = concurrency
        self.start_button = W.Button(description="Start", button_style="primary", icon="play",
                                     tooltip="start the emulator (local), provision queues and bucket, start workers")
        self.status_button = W.Button(description="Refresh status", icon="refresh")
        self._button(self.start_button, self.start)
        self._button(self.status_button, self.status)
        self.backend.observe(lambda _: self._label(), "value")
        self._label()
        self.box = W.VBox([self.backend, self.workers, W.HBox([self.start_button, self.status_button]), self.out])

    def _label(self) -> None:
        aws = self.backend.value == "aws"
        self.start_button.description = "Create on AWS" if aws else "Start"
        self.start_button.button_style = "warning" if aws else "primary"

    def settings(self) -> Settings:
        return Settings.load(state_dir=self.state_dir)

    @property
    def is_aws(self) -> bool:
        return self.backend.value == "aws"

    def plan(self) -> dict[str, Any]:
        """What ``start()`` will use and create; on AWS, a warning that it costs money until torn down."""
        from labkit import provision
        s = self.settings()
        names = list(provision.queue_attributes(s))
        if self.is_aws:
            from labkit.aws.clients import Clients
            self._check_aws(s)
            bucket = Clients(s).bucket_name()
            where = f"AWS region {s.region}" + (f" (endpoint {s.endpoint_url})" if s.endpoint_url else "")
        else:
            bucket = s.bucket or "labkit-<account>-<region> (in the emulator)"
            where = "the embedded emulator on 127.0.0.1 (nothing leaves this machine, nothing costs money)"
        plan = {"backend": self.backend.value, "where": where, "queues": names, "bucket": bucket,
                "workers": self.workers.value}
        rows = [["where", where], ["queues", ", ".join(names)], ["bucket", bucket],
                ["local workers", self.workers.value]]
        self.show(Table(rows, None, "Plan"))
        if self.is_aws:
            self.show(Message(
                f"this creates real resources in your AWS account ({s.region}): {len(names)} SQS queues "
                f"({', '.join(names)}) and the S3 bucket {bucket}. They cost money while they exist and hold "
                "data (SQS requests, S3 storage and requests) until you tear them down with "
                "99_teardown.ipynb or `labkit teardown`.", "warning"))
        return plan

    def _check_aws(self, s: Settings) -> None:
        if s.is_local:
            raise ConfigError(f"{s.state_file} points at the embedded emulator ({s.endpoint_url}): stop it "
                              "first (99_teardown.ipynb or `labkit down`), or use backend 'local'")

    def start(self) -> dict[str, Any]:
        """Start (or find running) the emulator and workers, provision; returns what changed."""
        from labkit import local
        s = self.settings()
        if self.is_aws:
            self._check_aws(s)
        out = local.up(s, local=not self.is_aws, workers=self.workers.value, concurrency=self.concurrency)
        report, state = out["report"], out["state"]
        lines = [["created", x] for x in report.created] + [["updated", x] for x in report.updated]
        if report.unchanged:
            lines.append(["already there", f"{len(report.unchanged)} resources"])
        self.show(Table(lines, ["change", "resource"], "Provisioning"))
        where = state.get("endpoint_url") or f"AWS {state['region']}"
        self.show(Message(f"labkit is up on {where}: bucket {state['bucket']}, "
                          f"{len(state['workers'])} local worker(s)", "ok"))
        return {"backend": "local" if state.get("local") else "aws", "endpoint": state.get("endpoint_url"),
                "bucket": state["bucket"], "created": list(report.created), "workers": len(state["workers"])}

    def status(self) -> dict[str, Any]:
        """Show queues (visible / in flight / dead-letter), bucket and workers; returns ``Lab.status()``."""
        with Lab(self.settings()) as lab:
            st = lab.status()
        st["workers_running"] = len(running_workers(st.get("workers", [])))
        self.show(*status_tables(st))
        return st


class TeardownPanel(Panel):
    """Delete every queue and the bucket provisioning made, stop local workers and the emulator, and
    show that nothing is left. On AWS, the notebook asks for a click before anything is deleted."""

    def __init__(self, state_dir: str | Path = ".labkit", backend: str = "local", keep_bucket: bool = False) -> None:
        super().__init__()
        self.state_dir = Path(state_dir)
        self.backend = resolve_backend(backend, self.settings())
        self.keep_bucket = W.Checkbox(value=keep_bucket, description="keep the bucket and its objects")
        self.teardown_button = W.Button(description="Delete everything", button_style="danger", icon="trash")
        self._button(self.teardown_button, self.teardown)
        self.box = W.VBox([self.keep_bucket, self.teardown_button, self.out])

    def settings(self) -> Settings:
        return Settings.load(state_dir=self.state_dir)

    @property
    def is_aws(self) -> bool:
        return self.backend == "aws"

    def _reachable(self, s: Settings) -> bool:
        """Is there anything to talk to? Locally: only while the emulator runs (its resources die with it)."""
        from labkit.notebooks import emulator_answers
        if self.is_aws:
            if s.is_local:
                raise ConfigError(f"{s.state_file} points at the embedded emulator ({s.endpoint_url}): "
                                  "use backend 'local' to tear it down")
            return True
        return s.is_local and emulator_answers(s.endpoint_url)

    def plan(self) -> list[str]:
        """Show and return the resources that exist now (what ``teardown()`` deletes)."""
        s = self.settings()
        left = self.leftovers()
        where = f"AWS {s.region}" if self.is_aws else (s.endpoint_url or "the embedded emulator (not running)")
        self.show(Table([[x] for x in left] or [["(nothing)"]], ["resource"], f"labkit resources on {where}"))
        return left

    def leftovers(self) -> list[str]:
        """labkit's queues (dead-letter and reply queues too) and bucket that exist."""
        from botocore.exceptions import ClientError

        from labkit import provision
        from labkit.aws.clients import Clients
        from labkit.aws.queues import Queue, is_missing_queue
        from labkit.errors import AwsError
        s = self.settings()
        if not self._reachable(s):
            return []
        clients = Clients(s)
        left = []
        for name in provision.queue_attributes(s):
            try:
                Queue.by_name(clients.sqs, name)
                left.append(f"queue {name}")
            except AwsError as exc:
                if not is_missing_queue(exc):
                    raise
        left += [f"queue {name}" for name, _ in provision.reply_queue_names(clients)]
        bucket = clients.bucket_name()
        try:
            clients.s3.head_bucket(Bucket=bucket)
            left.append(f"bucket {bucket}")
        except ClientError:
            pass
        return left

    def teardown(self) -> dict[str, Any]:
        """Delete everything provisioning made and stop local processes; returns what was deleted and
        what is left (``left`` and ``processes_left`` are empty when all went)."""
        from labkit import emulator, local, provision
        from labkit.aws.clients import Clients
        from labkit.config import read_state
        s = self.settings()
        state = read_state(self.state_dir)
        workers = [w for w in state.get("workers", []) if local._ours(w)]
        deleted: list[str] = []
        if self._reachable(s):
            # Workers first, so none of them is left polling a queue that is about to vanish.
            for w in workers:
                emulator.stop_pid(w["pid"], timeout=30)
            deleted = provision.teardown(Clients(s), delete_bucket=not self.keep_bucket.value).deleted
        left = self.leftovers()
        # SQS forgets a deleted queue within 60 s; until then it may still be listed.
        deadline = time.monotonic() + (90 if self.is_aws else 0)
        while left and time.monotonic() < deadline:
            time.sleep(5)
            left = self.leftovers()
        self.show(Table([[x] for x in deleted] or [["(nothing to delete)"]], ["deleted"], "Teardown"))
        emu = state.get("emulator") if local._ours(state.get("emulator") or {}) else None
        local.down(s)
        running = [w["pid"] for w in workers if emulator.pid_alive(w["pid"])]
        if emu and emulator.pid_alive(emu["pid"]):
            running.append(emu["pid"])
        rows = [["labkit queues and bucket", ", ".join(left) if left else "none left"],
                ["local workers", f"{len(workers)} stopped" if not running else "still running"],
                ["emulator", ("stopped" if emu else "was not running") if not running else "still running"]]
        self.show(Table(rows, None, "What is left after teardown"))
        ok = not left and not running
        self.show(Message("nothing is left: no queue, no bucket, no labkit process" if ok else
                          "something is still there: see the table above", "ok" if ok else "warning"))
        return {"deleted": deleted, "left": left, "processes_left": running, "workers_stopped": len(workers),
                "emulator_stopped": bool(emu) and not running}


# -- number jobs ----------------------------------------------------------------------------------------

class NumbersPanel(Panel):
    """The original lab's client options: type numbers, the preset list, or a random list of any length
    (long lists travel through S3). ``send()`` shows the result as a table and a histogram."""

    MODES = (("type numbers", "typed"), ("preset list", "preset"), ("random list", "random"))
    PURGE = (("all four queues", "all"), ("requests", "requests"), ("responses", "responses"),
             ("image inbox", "inbox"), ("image outbox", "outbox"))

    def __init__(self, lab: Lab, text: str = "1, 5, 22, 33, 9", random_length: int = 1000,
                 timeout: float = 120.0) -> None:
        super().__init__()
        self.lab = lab
        self.timeout = timeout
        self.seed: int | None = None
        self.mode = W.ToggleButtons(options=self.MODES, value="typed", description="send")
        self.text = W.Textarea(value=text, placeholder="numbers, separated by commas or spaces: 1, 5, 22.5, -3",
                               description="numbers", layout=W.Layout(width="60%"))
        self.length = W.FloatLogSlider(value=random_length, base=10, min=0, max=7, step=0.01,
                                       description="length", readout_format=",.0f",
                                       layout=W.Layout(width="60%"))
        self.send_button = W.Button(description="Send", button_style="primary", icon="paper-plane")
        self.purge_queue = W.Dropdown(options=self.PURGE, value="all", description="purge")
        self.purge_button = W.Button(description="Purge", button_style="warning", icon="eraser",
                                     tooltip="delete every message in the queue (SQS allows one purge a minute)")
        self._button(self.send_button, self.send)
        self._button(self.purge_button, self.purge)
        self.values_sent: Any = None
        self.result: dict[str, Any] | None = None
        self.job: Job | None = None
        self.figure: Any = None
        self.box = W.VBox([self.mode, self.text, self.length, self.send_button,
                           W.HBox([self.purge_queue, self.purge_button]), self.out])

    @property
    def random_length(self) -> int:
        return max(1, int(round(self.length.value)))

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
        result = job.result(timeout=self.timeout)
        elapsed = time.perf_counter() - t0
        self.result = result
        via = self._route(job)
        rows = [[k, result[k]] for k in ("count", "min", "max", "mean", "median", "sum", "std") if k in result]
        rows += [["sent", via], ["round trip", f"{elapsed * 1000:,.0f} ms"]]
        if job.reply is not None and job.reply.worker:
            rows.append(["worker", job.reply.worker])
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

    def purge(self) -> list[str]:
        """Empty the chosen queue (or all four); SQS allows one purge per queue a minute."""
        names = self.lab.purge(self.purge_queue.value)
        self.show(Message("purged " + ", ".join(names), "ok"))
        return names


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


class BatchPanel(Panel):
    """Send a batch of number jobs with a progress bar; plot round-trip latency."""

    def __init__(self, lab: Lab, jobs: int = 200, list_length: int = 100, window: int | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.lab = lab
        self.seed = seed
        self.jobs = W.IntSlider(value=jobs, min=1, max=5000, description="jobs")
        self.list_length = W.IntSlider(value=list_length, min=1, max=ARRAY_THRESHOLD, description="numbers/job")
        self.window = W.IntSlider(value=window or lab.default_window(), min=1, max=500, description="in flight",
                                  tooltip="jobs sent but not yet answered, at most")
        self.send_button = W.Button(description="Send batch", button_style="primary", icon="paper-plane")
        self.progress = W.IntProgress(value=0, min=0, max=jobs, description="done", bar_style="info")
        self._button(self.send_button, self.send)
        self.batch: BatchResult | None = None
        self.figure: Any = None
        self.box = W.VBox([self.jobs, self.list_length, self.window, self.send_button, self.progress, self.out])

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = total
        self.progress.value = done

    def send(self) -> BatchResult:
        """Send the batch (at most ``window`` jobs in flight), wait for every answer, plot latency."""
        n, length = self.jobs.value, self.list_length.value
        rng = np.random.default_rng(self.seed)
        payloads = [{"numbers": rng.integers(-1000, 1000, size=length, endpoint=True).tolist()} for _ in range(n)]
        self.progress.value, self.progress.bar_style = 0, "info"
        t0 = time.time()
        jobs = self.lab.submit_many("numbers", payloads, window=self.window.value, progress=False,
                                    desc="number jobs", on_progress=self._on_progress)
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
                                 sent_s=np.array([j.submitted - start for j in ok]), window=self.window.value)
        self.progress.bar_style = "success" if not errors else "danger"
        self.show(self.batch.table())
        self.figure = plots.latency_figure(self.batch.latencies_s, self.batch.sent_s,
                                           title=f"Round-trip latency of {n:,} number jobs "
                                                 f"({length:,} numbers each, at most {self.window.value} in flight)")
        self.show(self.figure)
        return self.batch


# -- image jobs -----------------------------------------------------------------------------------------

def sample_image(name: str = "gradient", size: tuple[int, int] = (640, 400)) -> bytes:
    """A generated sample picture as PNG bytes: "gradient", "rings" or "checkerboard"."""
    from PIL import Image, ImageDraw
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    if name == "gradient":
        rgb = np.stack([xx / (w - 1) * 255, yy / (h - 1) * 255, np.full_like(xx, 160)], axis=-1)
    elif name == "rings":
        r = np.hypot(xx - w / 2, yy - h / 2)
        wave = (np.sin(r / 9) + 1) / 2
        rgb = np.stack([wave * 230 + 20, (1 - wave) * 180 + 40, r / r.max() * 255], axis=-1)
    elif name == "checkerboard":
        cells = ((xx // 40 + yy // 40) % 2)[..., None]
        rgb = np.where(cells == 1, [235, 235, 225], [40, 60, 90]) * (0.55 + 0.45 * xx[..., None] / w)
    else:
        raise InvalidInput(f"unknown sample {name!r} (samples: {', '.join(SAMPLES)})")
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse((w * 0.35, h * 0.25, w * 0.65, h * 0.75), fill=(250, 215, 40), outline=(255, 255, 255), width=3)
    d.rectangle((w * 0.06, h * 0.1, w * 0.25, h * 0.4), outline=(255, 255, 255), width=6)
    d.text((w * 0.42, h * 0.85), f"labkit sample: {name}", fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _param_widget(param: dict[str, Any]) -> W.Widget:
    """An input widget for one op parameter (from ``describe_ops()``)."""
    desc, kind = param["name"], param["type"]
    tip = param["doc"]
    if kind == "bool":
        return W.Checkbox(value=bool(param["default"]), description=desc, tooltip=tip, indent=False)
    if param["default"] is None and not param["required"]:
        return W.Text(value="", placeholder="optional", description=desc, tooltip=tip)
    lo = param["min"] if param["min"] is not None else -1e9
    hi = param["max"] if param["max"] is not None else 1e9
    value = param["default"] if param["default"] is not None else max(lo, 0)
    if kind == "int":
        return W.BoundedIntText(value=int(value), min=int(lo), max=int(hi), description=desc, tooltip=tip)
    return W.BoundedFloatText(value=float(value), min=float(lo), max=float(hi), description=desc, tooltip=tip)


def _read_param(widget: W.Widget) -> Any:
    value = widget.value
    if isinstance(widget, W.Text):
        text = value.strip()
        # A blank optional parameter is not sent; anything that is not a number is sent as typed and the
        # op's validation names it as wrong.
        return number_or_text(text) if text else None
    return value


def format_ops(ops: Sequence[dict[str, Any]]) -> str:
    """``grayscale → thumbnail size=128`` (for titles and lists)."""
    parts = []
    for op in ops:
        params = " ".join(f"{k}={v}" for k, v in op.items() if k != "op")
        parts.append(f"{op['op']} {params}".strip())
    return " → ".join(parts) or "(no ops: re-encode)"


class ImagePanel(Panel):
    """Upload an image (or pick a sample), build a list of operations with their parameters, process it
    on a worker, and show original and result side by side; list and download the bucket's images."""

    def __init__(self, lab: Lab, sample: str = "gradient", timeout: float = 120.0) -> None:
        from labkit.jobs.images import describe_ops
        super().__init__()
        self.lab = lab
        self.timeout = timeout
        self.op_specs = {op["name"]: op for op in describe_ops()}
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload image")
        self.sample = W.Dropdown(options=SAMPLES, value=sample, description="or sample")
        self.op = W.Dropdown(options=list(self.op_specs), value="grayscale", description="operation")
        self.op_doc = W.HTML()
        self.params = W.VBox()
        self.param_widgets: dict[str, W.Widget] = {}
        self.add_button = W.Button(description="Add operation", icon="plus")
        self.clear_button = W.Button(description="Clear operations", icon="times")
        self.pipeline_view = W.HTML()
        self.format = W.Dropdown(options=["png", "jpeg", "webp"], value="png", description="format")
        self.process_button = W.Button(description="Process", button_style="primary", icon="cogs")
        self.list_button = W.Button(description="List images", icon="list")
        self.dest = W.Text(value="downloads", description="save to")
        self.download_button = W.Button(description="Download result", icon="download")
        self.pipeline: list[dict[str, Any]] = []
        self.result: ImageResult | None = None
        self.original: Any = None
        self.processed: Any = None
        self.figure: Any = None
        self.op.observe(lambda _: self._build_params(), "value")
        self._button(self.add_button, self.add_op)
        self._button(self.clear_button, self.clear_ops)
        self._button(self.process_button, self.process)
        self._button(self.list_button, self.list_images)
        self._button(self.download_button, self.download)
        self._build_params()
        self._render_pipeline()
        self.box = W.VBox([
            W.HBox([self.upload, self.sample]),
            W.HBox([self.op, self.add_button, self.clear_button]), self.op_doc, self.params, self.pipeline_view,
            W.HBox([self.format, self.process_button]),
            W.HBox([self.list_button, self.dest, self.download_button]), self.out])

    def _build_params(self) -> None:
        spec = self.op_specs[self.op.value]
        self.param_widgets = {p["name"]: _param_widget(p) for p in spec["params"]}
        self.params.children = tuple(self.param_widgets.values())
        self.op_doc.value = f"<i>{html.escape(spec['doc'])}</i>"

    def _render_pipeline(self) -> None:
        self.pipeline_view.value = f"<b>operations:</b> {html.escape(format_ops(self.pipeline))}"

    def add_op(self, op: str | dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Append an operation: a spec like ``"thumbnail:128"`` or ``{"op": "blur", "radius": 3}``, or
        (no argument) the one chosen in the widgets. Validated now, so mistakes show at once."""
        from labkit.jobs.images import parse_op_spec, validate_ops
        if op is None:
            params = {k: _read_param(w) for k, w in self.param_widgets.items()}
            item = {"op": self.op.value, **{k: v for k, v in params.items() if v is not None}}
        elif isinstance(op, str):
            item = parse_op_spec(op)
        else:
            item = dict(op)
        validate_ops([item])
        self.pipeline.append(item)
        self._render_pipeline()
        if self._to_widget:
            self.show(Message(f"operations: {format_ops(self.pipeline)}"))
        return list(self.pipeline)

    def clear_ops(self) -> None:
        """Forget the operations chosen so far."""
        self.pipeline.clear()
        self._render_pipeline()

    def use_file(self, path: str | Path) -> None:
        """Take a picture file as if it had been uploaded with the upload button."""
        import datetime
        path = Path(path)
        if not path.is_file():
            raise InvalidInput(f"no image file at {path}")
        data = path.read_bytes()
        self.upload.value = ({"name": path.name, "type": "", "size": len(data), "content": memoryview(data),
                              "last_modified": datetime.datetime.now(datetime.timezone.utc)},)

    def source(self) -> tuple[bytes, str]:
        """(bytes, name) of the uploaded image, else of the chosen sample."""
        if self.upload.value:
            item = self.upload.value[0]
            return bytes(item["content"]), item["name"]
        return sample_image(self.sample.value), f"sample-{self.sample.value}.png"

    def process(self) -> ImageResult:
        """Upload the image to ``images/unprocessed/``, run the operations on a worker, show both images."""
        from PIL import Image
        data, name = self.source()
        t0 = time.perf_counter()
        job = self.lab.image(data, self.pipeline, format=self.format.value, name=name)
        result = job.result(timeout=self.timeout)
        elapsed = time.perf_counter() - t0
        self.result = result
        self.original = Image.open(io.BytesIO(data))
        self.original.load()
        self.processed = result.open()
        rows = [["operations", format_ops(self.pipeline)],
                ["original", f"s3://{self.lab.bucket.name}/images/unprocessed/{name} "
                             f"({self.original.width} x {self.original.height}, {len(data):,} bytes)"],
                ["result", f"s3://{result['bucket']}/{result.key} ({result['width']} x {result['height']}, "
                           f"{result['format']})"],
                ["round trip", f"{elapsed * 1000:,.0f} ms"]]
        self.show(Table(rows, None, f"Image job {job.id[:8]}"))
        self.figure = plots.images_side_by_side(self.original, self.processed, format_ops(self.pipeline),
                                                title=f"{name}: {format_ops(self.pipeline)}")
        self.show(self.figure)
        return result

    def list_images(self) -> dict[str, list[Any]]:
        """Show and return the objects in ``images/unprocessed/`` and ``images/processed/``."""
        out = {}
        for folder in ("unprocessed", "processed"):
            items = self.lab.list_images(folder)
            out[folder] = items
            rows = [[o.name, f"{o.size / 1024:,.1f}", o.modified.strftime("%Y-%m-%d %H:%M:%S")] for o in items]
            self.show(Table(rows or [["(empty)", "", ""]], ["name", "KiB", "modified"], f"images/{folder}/"))
        return out

    def download(self, dest: str | Path | None = None) -> Path:
        """Save the last result into ``dest`` (default: the ``save to`` field's folder); returns the path."""
        if self.result is None:
            raise InvalidInput("nothing to download yet: process an image first")
        folder = Path(dest if dest is not None else self.dest.value or ".")
        folder.mkdir(parents=True, exist_ok=True)
        path = self.result.download(folder)
        self.show(Message(f"saved {path} ({path.stat().st_size:,} bytes)", "ok"))
        return path
