"""A job's life as a list of events: what the client saw (``sent``, ``result``) merged with what the
workers reported in the reply (``received`` once per delivery, ``started``, ``visibility_extended``,
``finished``, ``replied``; ``released`` and ``abandoned`` when they happen).

Each event is a small dict ``{"event": name, "at": <epoch seconds>, ...}``; see docs/protocol.md,
"Timelines". Pure module: no AWS, no clock of its own.

    for line in format_timeline(job.timeline()):
        print(line)
    # +0.000 s  sent
    # +0.004 s  received     delivery 1, by vm:812
    # ...
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# The order events of one delivery happen in: it breaks ties between events stamped at the same time.
ORDER = ("sent", "received", "started", "visibility_extended", "released", "abandoned", "finished", "replied",
         "result")
_RANK = {name: i for i, name in enumerate(ORDER)}
# What an event may carry besides "event" and "at" (anything else from a worker is dropped).
FIELDS = {"received": ("receive_count", "worker", "inferred"), "visibility_extended": ("seconds",),
          "finished": ("ok",), "released": ("worker", "why"), "abandoned": ("worker",), "sent": ("queue",),
          "started": (), "replied": (), "result": ("duplicates",)}


def event(name: str, at: float, **fields: Any) -> dict[str, Any]:
    """One event: ``{"event": name, "at": at, **fields}`` (fields that are None left out)."""
    return {"event": name, "at": round(float(at), 6), **{k: v for k, v in fields.items() if v is not None}}


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


def format_timeline(events: Sequence[dict[str, Any]]) -> list[str]:
    """One line per event, times relative to the first: what ``labkit trace`` prints."""
    if not events:
        return ["(no events)"]
    t0 = events[0]["at"]
    lines = []
    for e in events:
        details = []
        if e["event"] == "received":
            details.append(f"delivery {e.get('receive_count', 1)}")
            if e.get("worker"):
                details.append(f"by {e['worker']}")
            if e.get("inferred"):
                details.append("(from SQS's first-receive time: the worker of that delivery did not answer)")
        elif e["event"] == "visibility_extended":
            details.append(f"for another {e.get('seconds', '?')} s")
        elif e["event"] == "finished":
            details.append("ok" if e.get("ok", True) else "with an error")
        elif e["event"] in ("released", "abandoned") and e.get("worker"):
            details.append(f"by {e['worker']}" + (f": {e['why']}" if e.get("why") else ""))
        lines.append(f"+{e['at'] - t0:8.3f} s  {e['event']:<20}{' '.join(details)}".rstrip())
    return lines
