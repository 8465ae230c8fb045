"""Worker logs to S3: a new object per batch of lines, never one growing object rewritten (as the
original lab did)."""

from __future__ import annotations

import logging
import re
import threading
import time

from labkit.aws.storage import Bucket
from labkit.config import LOGS_PREFIX
from worker.outage import short

log = logging.getLogger("labkit.worker")


class LogShipper:
    """Writes log lines to ``logs/<worker>/<time>-<seq>.log`` in batches: a new object per batch,
    never one growing object rewritten (as the original lab did)."""

    def __init__(self, bucket: Bucket, worker: str, max_lines: int = 500, max_age: float = 60.0) -> None:
        self.bucket = bucket
        self.prefix = LOGS_PREFIX + re.sub(r"[^A-Za-z0-9._-]", "_", worker) + "/"
        self.max_lines = max_lines
        self.max_age = max_age
        self._lines: list[str] = []
        self._first = 0.0
        self._seq = 0
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        with self._lock:
            if not self._lines:
                self._first = time.monotonic()
            self._lines.append(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}")
            due = len(self._lines) >= self.max_lines or time.monotonic() - self._first > self.max_age
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
            self._seq += 1
            seq = self._seq
        if not lines:
            return
        key = f"{self.prefix}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{seq:05d}.log"
        try:
            self.bucket.put(key, ("\n".join(lines) + "\n").encode(), "text/plain")
        except Exception as exc:  # logs must never stop the worker
            log.warning("could not ship %d log lines to s3: %s", len(lines), short(exc))
