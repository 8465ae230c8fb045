"""API call counts across processes: a bench child writes its counter to a JSON file when sent SIGUSR1
(:class:`CountsFile`, the child's side); :class:`CountedProcess` asks and reads (the parent's side).
Also what /proc tells of a process: CPU time and resident memory."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labkit.errors import LabkitError
from labkit.processes import Child, python_module
from labkit.waiting import wait_for

CHILD_MODULE = "labkit.bench"  # `python -m labkit.bench worker|serve ... --counts FILE`


class CountsFile:
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
        """Answer SIGUSR1 with a fresh snapshot."""
        # Written from a thread: the signal may arrive while the main thread holds the counter's lock.
        signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=self.write, daemon=True).start())


class CountedProcess:
    """A bench child process (a labkit worker, or a floor/original server) that writes its API call counts
    to a JSON file when sent SIGUSR1, and once more on exit."""

    def __init__(self, child: Child, counts: Path) -> None:
        self.child = child
        self.counts_path = counts

    @classmethod
    def spawn(cls, args: Sequence[str], env: dict[str, str], log: Path, counts: Path) -> CountedProcess:
        """Start ``python -m labkit.bench <args> --counts <counts>`` (not waiting for it: see :meth:`wait_ready`)."""
        child = Child.spawn(python_module(CHILD_MODULE, *args, "--counts", str(counts)), env=env, log=log)
        return cls(child, counts)

    @property
    def pid(self) -> int:
        return self.child.pid

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait until the process has written its first counts (it does once it serves)."""
        def ready() -> bool:
            if not self.child.alive():
                raise LabkitError(f"bench process {self.pid} did not start; see {self.child.log}:\n"
                                  + self.child.output[-2000:])
            return self.counts_path.exists()
        wait_for(ready, timeout, f"bench process {self.pid} to start (see {self.child.log})", interval=0.02)

    def wait_log(self, text: str, timeout: float = 15) -> None:
        """Wait until the process's log shows ``text`` (:class:`LabkitError` when it ends or times out first)."""
        self.child.wait_log(text, timeout)

    def _read(self) -> dict[str, Any]:
        try:
            return json.loads(self.counts_path.read_text())
        except (OSError, json.JSONDecodeError):
            return {"seq": -1, "calls": {}}

    def snapshot(self, timeout: float = 10) -> dict[str, int]:
        """API calls so far, by operation (asks the process, waits for its answer)."""
        seq = self._read().get("seq", -1)
        self.child.signal(signal.SIGUSR1)

        def answered() -> dict[str, Any] | None:
            data = self._read()
            if data.get("seq", -1) > seq:
                return data
            if not self.child.alive():
                raise LabkitError(f"bench process {self.pid} ended before reporting its API calls; "
                                  f"see {self.child.log}")
            return None
        return wait_for(answered, timeout, f"bench process {self.pid} to report its API calls (see "
                        f"{self.child.log})", interval=0.01)["calls"]

    def rss_kb(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (peak) of the process, in KiB (Linux)."""
        return rss_kb(self.pid)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (the process writes its counts a last time and exits), SIGKILL after ``timeout``."""
        self.child.stop(timeout)


def rss_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak) of a process, in KiB (Linux; empty when unknown)."""
    out = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux; 0.0 when unknown)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def listening_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` of this machine (Linux, a process of ours to see), or None:
    to read the CPU time of an emulator the bench did not start."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in list(f)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        return int(pid)
    return None
