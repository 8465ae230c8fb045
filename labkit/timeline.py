"""A job's life as a list of events: what the client saw (``sent``, ``result``) merged with what the
workers reported in the reply (``received`` once per delivery, ``started``, ``visibility_extended``,
``finished``, ``replied``; ``released`` and ``abandoned`` when they happen), and ``given_up`` when the client
stopped waiting first.

Each event is a small dict ``{"event": name, "at": <epoch seconds>, ...}``; see docs/protocol.md,
"Timelines". Pure module: no AWS, no clock of its own.

    display(presenters.timeline_table(job.timeline(), "a job"))   # what `labkit trace` prints
    # +0.000 s  sent
    # +0.004 s  received     delivery 1, by local worker 812
    # ...
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Sequence
from typing import Any

# The order events of one delivery happen in: it breaks ties between events stamped at the same time.
ORDER = ("sent", "received", "redriven", "started", "visibility_extended", "released", "abandoned", "finished",
         "replied", "result", "duplicate", "given_up")
_RANK = {name: i for i, name in enumerate(ORDER)}
# What an event may carry besides "event" and "at" (anything else from a worker is dropped).
FIELDS = {"received": ("receive_count", "worker", "inferred"), "visibility_extended": ("seconds",),
          "finished": ("ok",), "released": ("worker", "why"), "abandoned": ("worker",), "sent": ("queue",),
          "redriven": ("receive_count",), "started": (), "replied": (), "result": (), "duplicate": (),
          "given_up": ("why",)}


def event(name: str, at: float, **fields: Any) -> dict[str, Any]:
    """One event: ``{"event": name, "at": at, **fields}`` (fields that are None left out). Cheap: the worker
    makes four per job."""
    e = {"event": name, "at": round(float(at), 6)}
    for k, v in fields.items():
        if v is not None:
            e[k] = v
    return e


def clean(events: Any) -> list[dict[str, Any]]:
    """The well-formed events of a reply's ``events`` field (anything else is dropped, never raised)."""
    out = []
    for e in events if isinstance(events, list) else []:
        if not isinstance(e, dict) or e.get("event") not in FIELDS:
            continue
        at = e.get("at")
        if isinstance(at, bool) or not isinstance(at, int | float):
            continue
        out.append(event(e["event"], at, **{k: e.get(k) for k in FIELDS[e["event"]]}))
    return out


def of_job(sent: float, result: float | None, worker_events: Any, notes: Any = ()) -> list[dict[str, Any]]:
    """A job's timeline from its parts: ``sent`` and ``result`` as its client saw them, the events its answer
    carried (``worker_events``, as received: cleaned here) and the client's notes (``duplicate``, ...)."""
    mine = [event("sent", sent)] + ([event("result", result)] if result is not None else [])
    return merge(mine, clean(worker_events), clean(list(notes)))


def merge(*sources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """All events of ``sources`` in time order (ties in the order a delivery goes through)."""
    events = [e for source in sources for e in source]
    return sorted(events, key=lambda e: (e["at"], _RANK.get(e["event"], len(ORDER))))


def deliveries(events: Sequence[dict[str, Any]]) -> int:
    """How many times the request was received by a worker."""
    counts = [e.get("receive_count", 1) for e in events if e["event"] == "received"]
    return max(counts, default=0)


def phases(events: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Seconds spent waiting in the queue (sent → last started), computing (started → finished) and
    coming back (finished → result); None where an end is missing."""
    def last(name: str) -> float | None:
        found = [e["at"] for e in events if e["event"] == name]
        return found[-1] if found else None

    sent, started, finished, result = last("sent"), last("started"), last("finished"), last("result")

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else max(0.0, b - a)
    return {"queue_wait": span(sent, started), "compute": span(started, finished), "return": span(finished, result)}


def rows(events: Sequence[dict[str, Any]]) -> list[list[str]]:
    """One row per event: seconds after the first event, the event, what it says."""
    if not events:
        return []
    t0 = events[0]["at"]
    return [[f"+{e['at'] - t0:.3f} s", e["event"], describe(e)] for e in events]


def describe(e: dict[str, Any]) -> str:
    """What an event says besides its name and time."""
    name = e["event"]
    if name == "received":
        by = f", by {worker_label(e['worker'])}" if e.get("worker") else ""
        text = f"delivery {e.get('receive_count', 1)}{by}"
        if e.get("inferred"):
            text += " (when SQS first handed it out: whoever held it then did not answer)"
        return text
    if name == "visibility_extended":
        return f"kept invisible for another {e.get('seconds', '?')} s (heartbeat)"
    if name == "finished":
        return "ok" if e.get("ok", True) else "with an error"
    if name == "redriven":
        return f"sent back from the dead-letter queue, after {e.get('receive_count', '?')} receives"
    if name == "duplicate":
        return "a second answer with this id, dropped"
    if name in ("released", "abandoned"):
        why = {"released": "handed back unstarted (the worker was stopping)",
               "abandoned": "past the worker's hard limit: an error was answered"}[name]
        return why + (f", by {worker_label(e['worker'])}" if e.get("worker") else "")
    if name == "given_up":
        return (f"the client stopped waiting ({e.get('why', 'closed')}) and deleted its reply queue: a worker that "
                "runs the job drops its answer")
    return ""


# EC2's host names: by IP (ip-10-0-1-23.ec2.internal, ip-10-0-1-23.eu-west-1.compute.internal) or, when the
# subnet names hosts by resource, by instance id (i-0123456789abcdef0.ec2.internal).
_EC2_BY_ID = re.compile(r"(i-[0-9a-f]{8,17})(\.[a-z0-9-]+)*\.(ec2|compute)\.internal")
_EC2_BY_IP = re.compile(r"(ip-\d+-\d+-\d+-\d+)\.([a-z0-9-]+\.)?(ec2|compute)\.internal")


def worker_label(worker: str, instance: str | None = None) -> str:
    """A worker's id as people read it. Ids are ``<host>:<pid>`` (docs/protocol.md): one on this machine is
    ``local worker 14003``, one on an EC2 instance ``EC2 instance i-0abc… (worker 812)`` (``instance``: its id
    when known, say from the fleet's heartbeats; else read from the host name where EC2 puts it there) or
    ``worker 812 on EC2 host ip-10-0-1-23``; another ``worker 812 on <host>``; anything else as it is."""
    host, sep, pid = str(worker).rpartition(":")
    if not (sep and host and pid.isdigit()):
        return f"EC2 instance {instance} (worker {worker})" if instance else str(worker)
    by_id, by_ip = _EC2_BY_ID.fullmatch(host), _EC2_BY_IP.fullmatch(host)
    instance = instance or (by_id.group(1) if by_id else None)
    if instance:
        return f"EC2 instance {instance} (worker {pid})"
    if by_ip:
        return f"worker {pid} on EC2 host {by_ip.group(1)}"
    return f"local worker {pid}" if host == socket.gethostname() else f"worker {pid} on {host}"


def on_ec2(label: str) -> bool:
    """True for a :func:`worker_label` that names an EC2 instance or host."""
    return label.startswith("EC2 instance ") or " on EC2 host " in label
