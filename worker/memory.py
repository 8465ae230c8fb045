"""How much memory this worker may use, and a job's share of it, held before its payload is loaded.

A claim-check payload is decoded in the worker's memory: a ``.npy`` one into an array of about its own size;
a JSON one into Python numbers, which takes up to twelve times the text (measured with
labkit/bench/payload_memory.py: 4.2x for long floats, 8-12.3x for short ints and floats; docs/aws.md). So
before a job's payload is read,
:meth:`MemoryBudget.hold` asks S3 for its size and

- refuses the job with ``too_large`` when it could never fit (more than the whole budget): a clear error to
  the sender, and the worker goes on serving, instead of being killed for want of memory;
- waits while jobs already running hold the memory it needs: big jobs run one after the other, small ones
  side by side, whatever ``--concurrency`` says.

The budget is the worker's memory limit (``LABKIT_MEMORY_LIMIT``, else its cgroup's ``memory.high`` or
``memory.max``, which the systemd unit sets with ``MemoryHigh=``/``MemoryMax=``, else the machine's memory),
less what the worker itself used when it started and a tenth for headroom.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from labkit.aws.storage import Bucket
from labkit.errors import ConfigError, TooLarge
from labkit.protocol import JobRequest

log = logging.getLogger("labkit.worker")
LIMIT_VAR = "LABKIT_MEMORY_LIMIT"
# Bytes of worker memory per byte of payload, by format: the worst cases measured (JSON: short numbers, 12.3x;
# .npy: 1.04x), with a little room.
EXPANSION = {"json": 12.5, "npy": 1.1}
HEADROOM = 0.10  # of the limit, kept free for the interpreter, buffers and images
MIB = 1 << 20
UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"512M"``, ``"2G"``, ``"1048576"`` (binary units, optional ``i``/``B``) -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ConfigError(f"{LIMIT_VAR}={text!r} is not a size (like 512M or 2G)")
    return int(float(m.group(1)) * UNITS[m.group(2)])


def _read_number(path: Path) -> int | None:
    """A cgroup limit file's value; None for ``max``, an absent file or the huge "no limit" of cgroup v1."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) < 1 << 60 else None


def cgroup_limit(root: Path = Path("/")) -> tuple[int, str] | None:
    """The lowest memory limit on this process's cgroup and its parents (v2: ``memory.high``/``memory.max``;
    v1: ``memory.limit_in_bytes``), and where it came from; None when there is none."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    found: list[tuple[int, str]] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2, the unified hierarchy
            base, names = root / "sys/fs/cgroup", ("memory.high", "memory.max")
        elif "memory" in controllers.split(","):
            base, names = root / "sys/fs/cgroup/memory", ("memory.limit_in_bytes",)
        else:
            continue
        here = base / path.lstrip("/")
        while True:
            found += [(n, f"{here / name}") for name in names if (n := _read_number(here / name)) is not None]
            if here == base or base not in here.parents:
                break
            here = here.parent
    return min(found) if found else None


def machine_memory(root: Path = Path("/")) -> int:
    """The machine's memory (``MemTotal``), in bytes."""
    for line in (root / "proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise ConfigError("cannot read the machine's memory from /proc/meminfo")


def resident(root: Path = Path("/")) -> int:
    """This process's resident memory (``VmRSS``), in bytes (0 when unknown)."""
    try:
        for line in (root / "proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class MemoryBudget:
    """The memory jobs may hold at once, and what they hold now."""

    def __init__(self, limit: int, source: str, in_use: int = 0) -> None:
        self.limit = limit
        self.source = source
        self.capacity = max(0, int(limit * (1 - HEADROOM)) - in_use)
        self.held = 0
        self.waiting = 0  # jobs waiting for memory that running jobs hold
        self.max_wait: float | None = None  # seconds a job waits for memory at most (the worker's hard limit)
        self._cond = threading.Condition()

    @classmethod
    def detect(cls, env: Mapping[str, str] | None = None, root: Path = Path("/")) -> MemoryBudget:
        """The budget of this process: ``LABKIT_MEMORY_LIMIT``, else its cgroup's limit, else the machine's."""
        env = os.environ if env is None else env
        if env.get(LIMIT_VAR):
            limit, source = parse_size(env[LIMIT_VAR]), LIMIT_VAR
        else:
            limit, source = cgroup_limit(root) or (machine_memory(root), "the machine's memory")
        budget = cls(limit, source, resident(root))
        log.info("memory budget for payloads %d MiB (limit %d MiB from %s): JSON payloads up to %d MiB, .npy up "
                 "to %d MiB", budget.capacity // MIB, limit // MIB, source, budget.largest("json") // MIB,
                 budget.largest("npy") // MIB)
        return budget

    def largest(self, fmt: str) -> int:
        """The largest payload of format ``fmt`` this worker can hold, in bytes."""
        return int(self.capacity / EXPANSION.get(fmt, EXPANSION["json"]))

    def need(self, fmt: str, size: int) -> int:
        return int(size * EXPANSION.get(fmt, EXPANSION["json"]))

    def hold(self, req: JobRequest, bucket: Bucket) -> AbstractContextManager[None]:
        """Hold the memory ``req``'s claim-check payload needs while the job runs (nothing for an inline one,
        at no cost: most jobs are small and inline).

        :class:`TooLarge` when it could never fit; waits while running jobs hold what it needs (``max_wait``
        seconds at most, then :class:`TooLarge` too).
        """
        ref: dict[str, Any] | None = req.payload_ref
        if ref is None or ref.get("bucket") != bucket.name:  # inline, or refused by load_payload anyway
            return nullcontext()
        return self._hold(ref, bucket)

    @contextmanager
    def _hold(self, ref: dict[str, Any], bucket: Bucket) -> Iterator[None]:
        fmt = ref.get("format", "json")
        size = int(bucket.head(ref["key"]).get("ContentLength", 0))
        need = self.need(fmt, size)
        if need > self.capacity:
            raise TooLarge(
                f"payload {ref['key']} is {size / MIB:.1f} MiB of {fmt}, which takes about {need / MIB:.0f} MiB in "
                f"the worker: more than this worker's {self.capacity / MIB:.0f} MiB for payloads ({self.source}). "
                "Send numbers as .npy (Lab does for lists of over 10,000), split the job, or run workers with "
                "more memory (labkit deploy --instance-type t3.small)")
        with self._cond:
            self.waiting += 1
            fits = self._cond.wait_for(lambda: self.held + need <= self.capacity, self.max_wait)
            self.waiting -= 1
            if not fits:  # past the hard limit the job is abandoned: it must not run (and hold memory) later
                raise TooLarge(f"payload {ref['key']} waited {self.max_wait:g} s for {need / MIB:.0f} MiB that "
                               "running jobs held; send it again, or run workers with more memory")
            self.held += need
        try:
            yield
        finally:
            with self._cond:
                self.held -= need
                self._cond.notify_all()
