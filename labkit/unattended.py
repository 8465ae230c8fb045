"""Run the notebooks unattended: what ``labkit run-notebooks`` and ``make run`` do.

``run_notebooks()`` starts the embedded emulator and a local worker (``labkit.local.up``) with a state
folder inside the run folder, executes ``notebooks/[0-9][0-9]_*.ipynb`` in order with papermill into
``runs/<timestamp>/`` (and points ``runs/latest`` at it), gathers the figures the notebooks saved, prints
a summary and always stops what it started, even when a notebook fails or the run is interrupted.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from labkit import costs, local
from labkit.config import Settings
from labkit.errors import ConfigError
from labkit.notebooks import SUMMARY_MIME, number_or_text
from labkit.processes import pid_alive

NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
KERNEL = "python3"
# Folder parameters a notebook may declare, pointed into the run folder (its own defaults are relative
# to notebooks/, for JupyterLab).
RUN_FOLDERS = {"download_dir": "downloads"}
CELL_TIMEOUT = 1800  # seconds one cell may run before the run is declared stuck
# Environment variables the run sets for its kernels and restores afterwards.
_ENV_KEYS = ("LABKIT_ENDPOINT_URL", "AWS_ENDPOINT_URL", "LABKIT_STATE_DIR", "MPLBACKEND", "JUPYTER_PREFER_ENV_PATH")


@dataclass
class NotebookRun:
    """One notebook of a run."""

    name: str
    output: Path | None
    status: str  # "ok", "failed" or "skipped"
    seconds: float = 0.0
    error: str | None = None
    summaries: list[dict[str, Any]] = field(default_factory=list)

    @property
    def jobs(self) -> int:
        return sum(int(s.get("jobs", 0) or 0) for s in self.summaries)


@dataclass
class RunReport:
    """What ``run_notebooks`` did."""

    run_dir: Path
    backend: str
    endpoint: str | None = None
    notebooks: list[NotebookRun] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    seconds: float = 0.0
    stopped: dict[str, Any] = field(default_factory=dict)
    processes_left: list[int] = field(default_factory=list)
    workers_started: int = 0
    latest: Path | None = None

    @property
    def ok(self) -> bool:
        return bool(self.notebooks) and all(n.status == "ok" for n in self.notebooks) and not self.processes_left

    @property
    def jobs(self) -> int:
        return sum(n.jobs for n in self.notebooks)


def find_notebooks(folder: str | Path = NOTEBOOKS_DIR, only: Sequence[str] | None = None) -> list[Path]:
    """``NN_*.ipynb`` in ``folder``, sorted; ``only``: keep those matching any pattern (glob, or a
    substring of the name such as ``01`` or ``numbers``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"no notebooks folder at {folder}")
    books = sorted(folder.glob(NOTEBOOK_PATTERN))
    if only:
        def wanted(p: Path) -> bool:
            return any(fnmatch.fnmatch(p.name, pat) or fnmatch.fnmatch(p.stem, pat) or pat in p.name for pat in only)
        books = [p for p in books if wanted(p)]
    return books


def parse_value(text: str) -> Any:
    """A ``-p NAME VALUE`` value: int, float, bool (true/false), None (none/null), a JSON list or object
    (``'["grayscale", "thumbnail:128"]'``), or the string itself."""
    low = text.strip().lower()
    if low[:1] in ("[", "{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"parameter value {text!r} looks like JSON but is not valid: {exc}") from exc
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    return number_or_text(text)


def declared_parameters(path: Path) -> dict[str, Any]:
    """The parameters a notebook's ``parameters`` cell declares, with their default values (None when
    the default is not a plain literal)."""
    import ast

    from papermill.inspection import inspect_notebook
    out: dict[str, Any] = {}
    for name, p in inspect_notebook(str(path)).items():
        try:
            out[name] = ast.literal_eval(p.get("default", "None"))
        except (ValueError, SyntaxError):
            out[name] = None
    return out


def _coerce(value: Any, default: Any) -> Any:
    """``-p`` values take the type of the notebook's default where that is lossless (1e6 -> 1000000)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return value
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    return value


def read_summaries(path: Path) -> list[dict[str, Any]]:
    """The ``summary(...)`` records an executed notebook displayed, in order."""
    import nbformat
    try:
        nb = nbformat.read(str(path), as_version=4)
    except (OSError, ValueError):
        return []
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if SUMMARY_MIME in data:
                out.append(dict(data[SUMMARY_MIME]))
    return out


def _new_run_dir(out: Path) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = out / stamp
    n = 2
    while run_dir.exists():
        run_dir = out / f"{stamp}-{n}"
        n += 1
    run_dir.mkdir(parents=True)
    return run_dir


def _link_latest(out: Path, run_dir: Path) -> Path | None:
    """Point ``<out>/latest`` at ``run_dir`` (a relative symlink, replaced atomically)."""
    latest = out / "latest"
    if latest.exists() and not latest.is_symlink():
        return None  # a real folder someone made: leave it alone
    tmp = out / f".latest-{os.getpid()}"
    try:
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(run_dir.name, target_is_directory=True)
        os.replace(tmp, latest)
    except OSError:
        return None
    return latest


def check_parameters(books: Sequence[Path], parameters: dict[str, Any]) -> dict[Path, dict[str, Any]]:
    """Each notebook's declared parameters; :class:`ConfigError` for a parameter no notebook declares
    (so that typos do not pass silently)."""
    declared = {p: declared_parameters(p) for p in books}
    known = set().union(*declared.values())
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise ConfigError(f"no notebook takes parameter(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return declared


def run_notebooks(out: str | Path = "runs", aws: bool = False, parameters: dict[str, Any] | None = None,
                  only: Sequence[str] | None = None, folder: str | Path | None = None, workers: int = 1,
                  echo: Callable[[str], None] = print) -> RunReport:
    """Execute the notebooks in order against the embedded emulator (or AWS with ``aws=True``).

    Every notebook gets the common parameters ``backend``, ``state_dir``, ``interactive=False`` and
    ``figures_dir``; each of ``parameters`` goes to the notebooks that declare it (a name no notebook
    declares is an error). Stops what it started before returning.
    """
    books = find_notebooks(folder or NOTEBOOKS_DIR, only)
    if not books:
        raise ConfigError(f"no notebook matches {', '.join(only or [])!r} in {folder or NOTEBOOKS_DIR}")
    parameters = parameters or {}
    declared = check_parameters(books, parameters)
    out = Path(out)
    run_dir = _new_run_dir(out).resolve()
    report = RunReport(run_dir=run_dir, backend="aws" if aws else "local")
    common = {"backend": report.backend, "state_dir": str(run_dir / "state"), "interactive": False,
              "figures_dir": str(run_dir / "figures")}
    started = time.monotonic()
    with _run_environment(run_dir / "state", aws) as sockets, _started(run_dir / "state", aws, workers, report,
                                                                         echo) as settings:
        report.latest = _link_latest(out, run_dir)
        where = f"the embedded emulator ({settings.endpoint_url})" if not aws else f"AWS {settings.region}"
        echo(f"running {len(books)} notebooks against {where} with {workers} local worker(s) into {run_dir}")
        for path in books:
            params = {**common, **{k: str(run_dir / sub) for k, sub in RUN_FOLDERS.items() if k in declared[path]},
                      **({"notebook_dir": str(path.parent)} if "notebook_dir" in declared[path] else {}),
                      **{k: _coerce(v, declared[path].get(k)) for k, v in parameters.items() if k in declared[path]}}
            failed = any(n.status == "failed" for n in report.notebooks)
            run = _execute(path, run_dir, params, sockets, skip=failed and not path.name.startswith("99"))
            report.notebooks.append(run)
            echo(_line(run))
    figures = run_dir / "figures"
    report.figures = sorted(figures.glob("*.png")) if figures.is_dir() else []
    report.seconds = time.monotonic() - started
    return report


def _execute(path: Path, run_dir: Path, params: dict[str, Any], sockets: Path, skip: bool) -> NotebookRun:
    """Run one notebook with papermill into ``run_dir`` (or record it as skipped)."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    if skip:
        return NotebookRun(path.stem, None, "skipped", error="an earlier notebook failed")
    target = run_dir / path.name
    run = NotebookRun(path.stem, target, "ok")
    t0 = time.monotonic()
    try:
        pm.execute_notebook(str(path), str(target), parameters=params, kernel_name=KERNEL, cwd=str(run_dir),
                            progress_bar=False, log_output=False, start_timeout=120,
                            execution_timeout=CELL_TIMEOUT, config=_kernel_config(sockets))
    except PapermillExecutionError as exc:
        run.status, run.error = "failed", f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    except Exception as exc:  # the kernel died or would not start: record it, stop what we started
        run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"
    run.seconds = time.monotonic() - t0
    run.summaries = read_summaries(target)
    return run


@contextmanager
def _run_environment(state_dir: Path, aws: bool) -> Iterator[Path]:
    """The kernels' environment for the run (restored after), SIGTERM as Ctrl-C, and a private folder for
    the kernels' Unix sockets (not TCP; short paths: socket paths are limited to about 100 characters)."""
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    sockets = Path(tempfile.mkdtemp(prefix="labkit-kernel-"))
    previous = _stop_on_sigterm()
    # the venv's own kernelspec first, so the kernel is this Python
    os.environ.update({"MPLBACKEND": "Agg", "LABKIT_STATE_DIR": str(state_dir), "JUPYTER_PREFER_ENV_PATH": "1"})
    if not aws:
        # The emulator's address goes to workers and kernels through the state file and LABKIT_ENDPOINT_URL;
        # an endpoint inherited from the shell must not override it.
        os.environ.pop("AWS_ENDPOINT_URL", None)
        os.environ.pop("LABKIT_ENDPOINT_URL", None)
    try:
        yield sockets
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _started(state_dir: Path, aws: bool, workers: int, report: RunReport,
             echo: Callable[[str], None]) -> Iterator[Settings]:
    """``labkit up`` for the run, and ``labkit down`` after it, whatever happens in between."""
    settings = Settings.load(state_dir=state_dir)
    if aws:
        echo(f"labkit: running against real AWS in {settings.region}: queues and a bucket are created and cost "
             "money until 99_teardown deletes them")
    try:
        up = local.up(settings, local=not aws, workers=workers)
    except BaseException:
        local.stop(settings)
        raise
    settings, state = up["settings"], up["state"]
    pids = [w["pid"] for w in state.get("workers", [])] + ([state["emulator"]["pid"]] if not aws else [])
    report.workers_started = len(state.get("workers", []))
    report.endpoint = settings.endpoint_url
    if not aws:
        os.environ["LABKIT_ENDPOINT_URL"] = settings.endpoint_url or ""
    try:
        yield settings
    finally:
        try:
            report.stopped = local.stop(settings)
        finally:
            report.processes_left = [p for p in pids if pid_alive(p)]


def _stop_on_sigterm() -> Any:
    """Make SIGTERM (a CI timeout, ``kill``) interrupt the run like Ctrl-C, so that what it started is
    stopped; returns the previous handler (None when not in the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, interrupt)


def _kernel_config(sockets: Path) -> Any:
    """Kernel manager settings: IPC transport with its socket files in ``sockets``."""
    from traitlets.config import Config
    return Config({"KernelManager": {"transport": "ipc", "ip": str(sockets / "kernel")}})


def _line(run: NotebookRun) -> str:
    headline = "; ".join(s["headline"] for s in run.summaries if s.get("headline"))
    text = f"  {run.name:<16} {run.status:<7} {run.seconds:6.1f} s"
    if run.error:
        return f"{text}  {run.error}"
    requests = sum(sum((s.get("api_calls") or {}).values()) for s in run.summaries)
    return f"{text}  {headline} [{requests:,} AWS requests]" if headline else text


def format_report(report: RunReport, cwd: Path | None = None) -> str:
    """The summary ``labkit run-notebooks`` prints after a run."""
    cwd = cwd or Path.cwd()

    def rel(p: Path) -> str:
        try:
            return str(p.relative_to(cwd))
        except ValueError:
            return str(p)

    done = sum(n.status == "ok" for n in report.notebooks)
    calls: dict[str, int] = {}
    for s in (s for n in report.notebooks for s in n.summaries):
        for op, count in (s.get("api_calls") or {}).items():
            calls[op] = calls.get(op, 0) + count
    lines = [f"{done} of {len(report.notebooks)} notebooks ran without error in {report.seconds:.1f} s; "
             f"{report.jobs:,} jobs done",
             f"the notebooks made {sum(calls.values()):,} AWS requests: ${costs.cost(calls)['total_usd']:.4f} at the "
             f"list prices of {costs.PRICES['as_of']} (requests only; the workers' own requests not counted)"]
    if report.figures:
        lines.append(f"figures ({len(report.figures)}) in {rel(report.figures[0].parent)}/:")
        lines += [f"  {f.name}" for f in report.figures]
    lines.append(f"executed notebooks: {rel(report.run_dir)}/"
                 + (f" (also {rel(report.latest)})" if report.latest else ""))
    failed = [n for n in report.notebooks if n.status == "failed"]
    for n in failed:
        lines.append(f"FAILED {n.name}: {n.error} (see {rel(n.output) if n.output else '?'})")
    if report.processes_left:
        lines.append(f"WARNING: still running: pid {', '.join(map(str, report.processes_left))}")
    elif report.stopped:
        what = f"{report.workers_started} local worker(s)" + (" and the emulator" if report.backend == "local" else "")
        lines.append(f"{what} stopped: nothing left running")
    if report.backend == "aws" and not any(n.name.startswith("99") and n.status == "ok" for n in report.notebooks):
        lines.append(f"AWS resources are still there (they cost money): run `labkit teardown --state-dir "
                     f"{rel(report.run_dir / 'state')}`")
    return "\n".join(lines)


def parameters_from_pairs(pairs: Iterable[Sequence[str]]) -> dict[str, Any]:
    """``[["random_length", "1000"], ...]`` (from ``-p NAME VALUE``) as a dict with parsed values."""
    return {name: parse_value(value) for name, value in pairs}


def main_run(aws: bool, pairs: Iterable[Sequence[str]], out: str, only: Sequence[str] | None) -> int:
    """``labkit run-notebooks``: run, print the summary; exit status 0 when every notebook ran."""
    report = run_notebooks(out=out, aws=aws, parameters=parameters_from_pairs(pairs), only=only)
    print(format_report(report))
    sys.stdout.flush()
    return 0 if report.ok else 1
