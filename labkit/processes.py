"""Child processes on this machine: start one, tell whether it still runs, stop it, and give it the
environment that points it at a set of :class:`~labkit.config.Settings`.

    child = Child.spawn(python_module("worker", "--burst"), env=settings_env(settings), log=path)
    child.wait_log("serving", timeout=30)
    child.stop()                       # SIGTERM, then SIGKILL after the timeout

A child is recorded by its pid *and* its start time (``Child.record()``, kept in the state file), so a
pid reused by another program after a reboot is never taken for ours. ``labkit up``/``down``, the demo,
the benchmark and the tests all start and stop their processes here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from labkit.config import Settings
from labkit.errors import LabkitError
from labkit.waiting import poll, wait_for


def python_module(module: str, *args: str) -> list[str]:
    """The command line that runs ``python -m module args`` with this Python."""
    return [sys.executable, "-m", module, *args]


def settings_env(settings: Settings, extra: Mapping[str, str] | None = None,
                 base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus the variables that point a labkit child
    process at ``settings``: endpoint, region, queue and bucket names, state folder, job modules."""
    env = dict(os.environ if base is None else base)
    env.update({
        "LABKIT_REQUEST_QUEUE": settings.request_queue, "LABKIT_RESPONSE_QUEUE": settings.response_queue,
        "LABKIT_IMAGE_INBOX": settings.image_inbox, "LABKIT_IMAGE_OUTBOX": settings.image_outbox,
        "LABKIT_STATE_DIR": str(settings.state_dir), "AWS_REGION": settings.region, "PYTHONUNBUFFERED": "1",
    })
    # An endpoint or bucket left unset here must not be inherited from the shell either.
    for var, value in (("LABKIT_ENDPOINT_URL", settings.endpoint_url), ("LABKIT_BUCKET", settings.bucket)):
        if value:
            env[var] = value
        else:
            env.pop(var, None)
    # Set even when empty: "none", not the job modules the state file may still name.
    env["LABKIT_JOB_MODULES"] = ",".join(settings.job_modules)
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_DEFAULT_REGION", None)
    env.update(extra or {})
    return env


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (from /proc), or None when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, reaped or not, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(eq=False)
class Child:
    """A process started on this machine (by this process, or found again through its record)."""

    pid: int
    start: str | None = None
    log: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log_file: IO[bytes] | None = field(default=None, repr=False)
    # The log's size when this process started: a log is appended to run after run, and this one's lines follow.
    log_start: int = field(default=0, repr=False)

    @classmethod
    def spawn(cls, args: Sequence[str], env: Mapping[str, str] | None = None, log: str | Path | None = None,
              cwd: str | Path | None = None, detach: bool = True) -> Child:
        """Start ``args`` with stdin closed and output appended to ``log`` (default: discarded).

        ``detach``: a session of its own, so that a Ctrl-C in the terminal reaches only the parent,
        which then stops its children in order.
        """
        log_path = Path(log) if log is not None else None
        out: Any = subprocess.DEVNULL
        log_file = None
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log_file = out = open(log_path, "ab")  # noqa: SIM115 (closed in stop)
        log_start = log_file.tell() if log_file is not None else 0
        proc = subprocess.Popen(list(args), env=dict(env) if env is not None else None, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=detach)
        return cls(proc.pid, start_time(proc.pid), log_path, proc, log_file, log_start)

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Child | None:
        """The child a state-file record names (``{"pid", "start", "log"}``), or None for no record."""
        if not record or not isinstance(record.get("pid"), int) or record["pid"] <= 0:
            return None
        log = record.get("log")
        return cls(record["pid"], record.get("start"), Path(log) if log else None)

    def record(self) -> dict[str, Any]:
        """What the state file keeps of this child (no environment: it may hold credentials)."""
        return {"pid": self.pid, "start": self.start, "log": str(self.log) if self.log else None}

    def alive(self) -> bool:
        """Does this process still run (and is it still ours, not a reused pid)?"""
        if self.proc is not None:
            return self.proc.poll() is None
        if not pid_alive(self.pid):
            return False
        now = start_time(self.pid)
        return self.start is None or now is None or now == self.start

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def signal(self, sig: int) -> bool:
        """Send ``sig`` if the process runs; True when it was sent."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. True when it was running."""
        return stop_all([self], timeout)[0]

    def kill(self) -> None:
        """SIGKILL (no clean-up, nothing handed back), then reap it and close its log."""
        self._finish(kill=True)

    def _finish(self, kill: bool) -> None:
        """After a stop: SIGKILL if still running and ``kill``, reap it, close its log."""
        if kill and self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self.close_log()

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end; its exit status (None when not started by this process)."""
        if self.proc is not None:
            return self.proc.wait(timeout=timeout)
        wait_for(lambda: not self.alive(), timeout if timeout is not None else 1e9, f"process {self.pid} to end")
        return None

    def close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @property
    def output(self) -> str:
        """What the process wrote to its log so far."""
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    @property
    def own_output(self) -> str:
        """What the log holds since this process started (earlier runs' lines left out)."""
        if not self.log or not self.log.exists():
            return ""
        with open(self.log, "rb") as f:
            f.seek(self.log_start)
            return f.read().decode(errors="replace")

    def last_error(self) -> str:
        """The line that says why this process ended: its last ``labkit: error:`` line (the CLI's one line for
        a user's mistake), else its log's last line, else its exit status."""
        lines = [line.strip() for line in self.own_output.splitlines() if line.strip()]
        errors = [line.removeprefix("labkit: error: ") for line in lines if line.startswith("labkit: error: ")]
        return (errors or lines or [f"it ended with exit status {self.returncode}"])[-1]

    def wait_log(self, text: str, timeout: float = 30.0) -> None:
        """Wait until ``text`` appears in the log; :class:`LabkitError` with the log's tail when the
        process ends first or ``timeout`` passes."""
        for _ in poll(0.05, timeout):
            if text in self.output:
                return
            if not self.alive():
                break
        raise LabkitError(f"process {self.pid} never logged {text!r} (exit status {self.returncode}); "
                          f"{self.log}:\n{self.output[-3000:]}")


def stop_all(children: Sequence[Child], timeout: float = 30.0) -> list[bool]:
    """Stop several children at once: SIGTERM to each, then wait for all of them together (each one's
    shutdown, a long poll ending say, overlaps the others'), SIGKILL to those still running after
    ``timeout`` seconds. For each child, True when it was running."""
    running = [c.signal(signal.SIGTERM) for c in children]
    if any(running):
        for _ in poll(0.05, timeout):
            if not any(c.alive() for c, r in zip(children, running, strict=True) if r):
                break
    for c, r in zip(children, running, strict=True):
        c._finish(kill=r)
    return running
