"""A small local journal of the jobs this machine's clients sent: their timelines, kept under the state
folder (``<state_dir>/journal.jsonl``, one JSON object per line) so that ``labkit trace JOB_ID`` can print
a job's life after the notebook or script that sent it has ended.

A line keeps a job's parts (sent, result, the events its answer carried, the client's notes), merged into
its timeline when read (:meth:`Journal.find`). A job has a line when it is sent and another once answered or
given up (:meth:`labkit.client.Lab.close`). Lines are appended in batches (a file write per
``FLUSH_EVERY`` jobs and on close, not one per job), and the file is cut to its newer half when it grows
past ``MAX_BYTES``. No payload, result or credential is written: ids, kinds, times and events only.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from labkit.timeline import of_job

FILE = "journal.jsonl"
FLUSH_EVERY = 200
MAX_BYTES = 8 * 1024 * 1024


class Journal:
    """Appends job timelines to ``<state_dir>/journal.jsonl`` and finds them again."""

    def __init__(self, state_dir: str | Path) -> None:
        self.path = Path(state_dir) / FILE
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._lines: list[str] = []

    def record(self, job_id: str, kind: str, sent: float, result: float | None, worker_events: Any,
               notes: list[dict[str, Any]]) -> None:
        """Keep one job's timeline (written with the next flush) as its parts: merged when read (:meth:`find`),
        since most are never read and a client answers thousands of jobs a second."""
        line = json.dumps({"id": job_id, "kind": kind, "sent": sent, "result": result, "worker": worker_events,
                           "notes": notes}, separators=(",", ":"))
        with self._lock:
            self._lines.append(line)
            due = len(self._lines) >= FLUSH_EVERY
        if due:
            self.flush()

    def flush(self) -> None:
        """Write what was recorded; never raises (a journal must not break a job)."""
        with self._lock:
            lines, self._lines = self._lines, []
        if not lines:
            return
        with self._write_lock:  # an append and a trim (which rewrites the file) never overlap
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write("\n".join(lines) + "\n")
                if self.path.stat().st_size > MAX_BYTES:
                    self._trim()
            except OSError:
                pass

    def _trim(self) -> None:
        data = self.path.read_bytes()
        keep = data[len(data) // 2:]
        keep = keep[keep.find(b"\n") + 1:]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(keep)
        os.replace(tmp, self.path)

    def find(self, job_id: str) -> dict[str, Any] | None:
        """The newest record of ``job_id`` (a unique prefix of at least 6 characters is enough). A job is
        recorded when sent and again when answered (or given up); the line written at send may land after its
        answer's (two threads), so a record without a result never replaces one with a result."""
        self.flush()
        found = None
        try:
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    if job_id[:6] in line:
                        try:
                            record = json.loads(line)
                        except ValueError:
                            continue
                        if record.get("id", "").startswith(job_id) and (
                                found is None or record.get("result") is not None or found.get("result") is None):
                            found = record
        except FileNotFoundError:
            return None
        if found is not None and "events" not in found:  # its timeline, from the parts kept
            parts = [found.pop(k, None) for k in ("sent", "result", "worker", "notes")]
            found["events"] = of_job(float(parts[0] or 0), parts[1], parts[2], parts[3] or [])
        return found
