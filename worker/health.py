"""The worker's health signals: systemd's watchdog, and a heartbeat object that ``labkit status`` and
``labkit deploy`` read.

- **systemd** (``$NOTIFY_SOCKET``, the unit's ``WatchdogSec=``): ``READY=1`` once serving, ``WATCHDOG=1``
  every few seconds for as long as every lane's loop keeps turning, a ``STATUS=`` line for
  ``systemctl status``, ``STOPPING=1`` on the way out. A loop that stops turning (a call that never
  returns, a deadlock) stops the pings; systemd then kills and restarts the worker, and after too many
  restarts powers the instance off (``FailureAction=poweroff``), which terminates it, so that its Auto
  Scaling group starts a healthy one.
- **the heartbeat** (when ``LABKIT_INSTANCE_ID`` is set: the bootstrap writes it into the worker's
  environment): ``s3://<bucket>/logs/health/<instance-id>.json`` every minute, status ``serving``,
  ``stalled`` or, at the end, ``stopped`` (read by :mod:`labkit.fleet.health`).

A lane's loop may legitimately stay away for a whole batch: ten messages at the job time limit, ``concurrency``
at a time, plus a long poll. Only past that does it count as stalled.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from labkit.aws.storage import Bucket
from labkit.config import HEALTH_PREFIX, HEARTBEAT_SECONDS
from labkit.waiting import poll
from worker.outage import short

log = logging.getLogger("labkit.worker")
INSTANCE_VAR = "LABKIT_INSTANCE_ID"
SLACK = 60.0  # seconds beyond the longest legitimate batch before a lane counts as stalled
MAX_LOOK = 15.0  # seconds between looks at the lanes (and watchdog pings) at most


class Notifier:
    """systemd's notification protocol (sd_notify): datagrams to ``$NOTIFY_SOCKET``; silent without one."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address  # "@": the abstract namespace
        mine = env.get("WATCHDOG_PID") in (None, str(os.getpid()))
        self.watchdog = float(env.get("WATCHDOG_USEC") or 0) / 1e6 if mine else 0.0

    def send(self, *fields: str) -> None:
        """Send ``KEY=value`` fields in one datagram (errors are logged, never raised)."""
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.warning("could not notify systemd: %s", short(exc))


class WorkerHealth:
    """Watches the lanes' loops (:meth:`alive`), pings systemd's watchdog and writes the heartbeat."""

    def __init__(self, lanes: list[str], stall_after: float, notifier: Notifier, bucket: Bucket | None = None,
                 instance_id: str | None = None, describe: Callable[[], dict[str, Any]] | None = None) -> None:
        self.stall_after = stall_after
        self.notifier = notifier
        self.bucket = bucket if instance_id else None
        self.instance_id = instance_id
        self.describe = describe or dict
        self.started = time.time()
        self._last = dict.fromkeys(lanes, time.monotonic())
        self._next_beat = 0.0
        self._said: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def of(cls, worker: Any, env: Mapping[str, str] | None = None) -> WorkerHealth:
        """The health of a :class:`worker.loop.Worker` (silent until :meth:`start`)."""
        env = os.environ if env is None else env
        batch = worker.job_timeout * math.ceil(10 / worker.concurrency) + worker.receive_wait
        return cls([lane.name for lane in worker.lanes], batch + SLACK, Notifier(env), worker.bucket,
                   env.get(INSTANCE_VAR) or None,
                   lambda: {"worker": worker.name, "jobs": worker.stats.jobs, "errors": worker.stats.errors})

    def start(self) -> None:
        """The worker serves: say READY and start watching."""
        self.notifier.send("READY=1", f"STATUS={self.status_line()}")
        if self.notifier.address or self.bucket is not None:
            self._thread = threading.Thread(target=self._watch, name="health", daemon=True)
            self._thread.start()

    @property
    def interval(self) -> float:
        """Seconds between looks: a third of the watchdog's limit, at most :data:`MAX_LOOK`."""
        return min(MAX_LOOK, self.notifier.watchdog / 3) if self.notifier.watchdog else MAX_LOOK

    def alive(self, lane: str, now: float | None = None) -> None:
        """Lane ``lane``'s loop turned (called once per turn)."""
        self._last[lane] = time.monotonic() if now is None else now

    def stalled(self, now: float | None = None) -> list[str]:
        """The lanes whose loop has not turned for longer than a batch may take."""
        now = time.monotonic() if now is None else now
        return [lane for lane, last in self._last.items() if now - last > self.stall_after]

    def status_line(self, stalled: list[str] | None = None) -> str:
        info = self.describe()
        state = f"stalled on {', '.join(stalled)}" if stalled else "serving " + ", ".join(self._last)
        return f"{state}: {info.get('jobs', 0)} job(s), {info.get('errors', 0)} error(s)"

    def tick(self, now: float | None = None) -> None:
        """One look: ping the watchdog while every lane turns, and write the heartbeat when one is due."""
        now = time.monotonic() if now is None else now
        stalled = self.stalled(now)
        if stalled and stalled != self._said:
            log.error("worker loop on %s has not turned for over %.0f s: the watchdog will restart the worker",
                      ", ".join(stalled), self.stall_after)
        self._said = stalled
        if not stalled:
            self.notifier.send("WATCHDOG=1", f"STATUS={self.status_line()}")
        if now >= self._next_beat:
            self._next_beat = now + HEARTBEAT_SECONDS
            self.beat("stalled" if stalled else "serving", stalled=stalled)

    def beat(self, status: str, **extra: Any) -> None:
        """Write the heartbeat object (nothing without an instance id; failures are logged, never raised)."""
        if self.bucket is None or self.instance_id is None:
            return
        doc = {"v": 1, "instance": self.instance_id, "status": status, "at": time.time(), "started": self.started,
               **self.describe(), **extra}
        try:
            self.bucket.put(f"{HEALTH_PREFIX}{self.instance_id}.json", json.dumps(doc).encode(), "application/json")
        except Exception as exc:  # health reporting must never stop the worker
            log.warning("could not write the health heartbeat: %s", short(exc))

    def _watch(self) -> None:
        for _ in poll(self.interval, stop=self._stop):
            self.tick()

    def stop(self) -> None:
        """The worker is stopping: tell systemd, write a last heartbeat."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.notifier.send("STOPPING=1", f"STATUS=stopped: {self.status_line()}")
        self.beat("stopped")
