"""What the CLI prints and the notebook panels show, built once: tables and one-line notes that render
as aligned text in a terminal and as HTML in a notebook.

    for table in status_tables(lab.status()):
        print(table)                 # the CLI
    panel.show(*status_tables(st))   # a widget: the same tables, as HTML
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from labkit.errors import credentials_line
from labkit.local import running

# JupyterLab typesets $...$ in HTML output as math: "$0.02/hour ($15.18/month)" would show as italics without its
# dollars. These classes tell its MathJax (and the classic notebook's) to leave a table or a note as it is.
NO_MATH = "mathjax_ignore tex2jax_ignore"

if TYPE_CHECKING:
    from labkit.aws.queues import PurgeOutcome
    from labkit.dlq import DeadLetter


class Table:
    """A small table that shows as HTML in notebooks and as aligned text everywhere else.

    ``headers=None`` makes a two-column "name: value" table without a header row."""

    def __init__(self, rows: Sequence[Sequence[Any]], headers: Sequence[str] | None = None,
                 title: str | None = None) -> None:
        self.headers = None if headers is None else [str(h) for h in headers]
        self.rows = [["" if v is None else cell(v) for v in row] for row in rows]
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
        return f"<table class='{NO_MATH}'>{caption}{head}<tbody>{body}</tbody></table>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": str(self), "text/html": self._repr_html_()}


class Note:
    """One line (or a few) of text: ``kind`` is "info", "ok", "warning" or "error" (colours the HTML)."""

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
        return {"text/plain": str(self),
                "text/html": f"<div class='{NO_MATH}' style='color:{color};font-weight:{weight}'>{body}</div>"}


def cell(value: Any) -> str:
    """A table cell: thousands separators, six significant digits, yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return f"{int(value):,}"
        return f"{value:,.6g}"
    return str(value)


def status_tables(status: dict[str, Any]) -> list[Table]:
    """``Lab.status()`` as tables: queues with their depths, then endpoint, bucket and workers."""
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
    alive = running(status.get("workers", []))
    workers = f"{len(alive)} local running" + "".join(f", pid {c.pid} (log {c.log})" for c in alive)
    other = [["endpoint", status["endpoint"]], ["credentials", credentials_line(status.get("credentials"))],
             ["bucket", bucket_line], ["reply queues", status.get("reply_queues", 0)], ["workers", workers]]
    other += [["", note] for note in status.get("worker_notes", [])]
    if not queues and (status.get("credentials") or {}).get("problem"):
        queues = [["(not looked at)", "", "", "", ""]]
    return [Table(queues, ["queue", "role", "visible", "in flight", "dead-letter"], "Queues"),
            Table(other, None, "Resources")]


def changes_table(title: str, **lines: Iterable[str]) -> Table:
    """What a provisioning, deploy or teardown step did: one row per resource, by kind of change
    (``changes_table("Provisioning", created=[...], updated=[...])``)."""
    rows = [[change, line] for change, items in lines.items() for line in items]
    return Table(rows or [["-", "nothing to do"]], ["change", "resource"], title)


# AWS's codes for a call IAM refuses (SQS's query and JSON protocols), and the HTTP status that carries them (all
# botocore can tell when a server answers SQS's JSON protocol in XML, as moto does): a purge the policy refuses.
ACCESS_DENIED = ("AccessDenied", "AccessDeniedException", "403")


def purge_denied(outcome: PurgeOutcome) -> str | None:
    """AWS's code when IAM refused this purge (a student's, on a class's shared queues: the instructor's to purge),
    else None. An :class:`~labkit.errors.AwsError`'s text ends with the code in brackets."""
    code = (outcome.error or "").rstrip().rpartition("(")[2].rstrip(")")
    if not outcome.error or code not in ACCESS_DENIED:
        return None
    return "AccessDenied" if code == "403" else code


def purge_outcome(outcome: PurgeOutcome) -> str:
    """One queue's purge, in words: purged, refused with the seconds left, or failed with the reason."""
    if outcome.purged:
        return "purged"
    if outcome.error:
        return f"failed: {outcome.error}"
    wait = "try again within 60 s" if outcome.retry_in is None else f"try again in {math.ceil(outcome.retry_in)} s"
    return f"refused: purged less than 60 s ago (SQS allows one purge per queue every 60 s); {wait}"


def purge_report(outcomes: Sequence[PurgeOutcome], asked: bool = True) -> tuple[Table, Note]:
    """``Lab.purge()``'s outcomes as a table (one row per queue, with its reason) and one short line that sums
    them up without repeating the rows: "ok" when every queue was purged, "warning" when some were refused,
    "error" when some failed. Queues IAM refused are no rows: one line names them, the instructor's to purge;
    an "error" when they were ``asked`` for by name (or ``all``), else ("info") what the purge of what the caller
    may purge left."""
    denied = [o for o in outcomes if purge_denied(o)]
    rest = [o for o in outcomes if not purge_denied(o)]
    table = Table([[o.queue, purge_outcome(o)] for o in rest], ["queue", "outcome"], "Purge")
    purged = [o.queue for o in rest if o.purged]
    refused = [o for o in rest if o.refused]
    failed = [o for o in rest if not o.purged and not o.refused]
    left = _instructors(denied)
    if not refused and not failed:
        done = "purged " + ", ".join(purged) if purged else "nothing purged"
        if not denied:
            return table, Note(done, "ok")
        return table, Note(left if asked and not purged else f"{done}; {left}", "error" if asked else "info")
    parts = [f"purged {len(purged)} of {len(outcomes)} queue(s)" + (f" ({', '.join(purged)})" if purged else "")]
    if refused:
        waits = [o.retry_in for o in refused]
        when = "within 60 s" if None in waits else f"in {math.ceil(max(w for w in waits if w is not None))} s"
        parts.append(f"{', '.join(o.queue for o in refused)} refused (SQS allows one purge per queue every 60 s): "
                     f"try again {when}")
    if len(failed) == 1:
        parts.append(f"{failed[0].queue} failed: {failed[0].error}")
    elif failed:
        parts.append(f"{', '.join(o.queue for o in failed)} failed (the table says why)")
    if denied:
        parts.append(left)
    return table, Note("; ".join(parts), "error" if failed or (denied and asked) else "warning")


def _instructors(denied: Sequence[PurgeOutcome]) -> str:
    """The one line for the queues IAM would not let the caller purge."""
    if not denied:
        return ""
    names = [o.queue for o in denied]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    codes = sorted({purge_denied(o) or "" for o in denied})
    return f"purging {listed} is the instructor's: your credentials may not ({', '.join(codes)})"


def dead_letters_table(letters: Sequence[DeadLetter], title: str = "Dead letters") -> Table:
    """What ``DeadLetters.show()`` read: one row per dead letter (its job, its receives, where its answer was
    to go, when it was first sent)."""
    def when(at: float | None) -> str:
        return time.strftime("%H:%M:%S UTC", time.gmtime(at)) if at else ""
    rows = [[d.message_id[:8], d.job_id[:8] if d.job_id else "(none: plain text or malformed)", d.kind or "",
             d.receives, (d.reply_to or "").rstrip("/").rsplit("/", 1)[-1], when(d.sent_at)] for d in letters]
    return Table(rows or [["", "(none)", "", "", "", ""]],
                 ["message", "job", "kind", "receives (this look too)", "reply queue", "sent"], title)


def timeline_table(events: Sequence[dict[str, Any]], title: str = "Timeline") -> Table:
    """A job's life (``Job.timeline()``): one row per event, with the time spent in each phase below."""
    from labkit.timeline import deliveries, phases, rows
    p = phases(events)
    spent = ", ".join(f"{name.replace('_', ' ')} {value * 1000:,.1f} ms" for name, value in p.items()
                      if value is not None)
    n = deliveries(events)
    summary = f"{n} deliver{'y' if n == 1 else 'ies'}; {spent}"
    table_rows = rows(events) + ([["", "", summary]] if spent else [])
    return Table(table_rows or [["", "(no events)", ""]], ["at", "event", ""], title)


def calls_table(calls: dict[str, int], title: str = "AWS requests", billed: dict[str, int] | None = None) -> Table:
    """AWS requests by operation with their price at list prices (dated), and the total. ``billed``: the SQS
    requests billed per operation (64 KiB chunks), when more than the calls."""
    from labkit import costs
    total = costs.cost(calls, billed)["total_usd"]
    rows = costs.rows(calls, billed) + [["total", sum(calls.values()), f"${total:,.6f}"]]
    return Table(rows, ["operation", "requests", f"at list prices of {costs.AS_OF}"], title)


def billing_table(status: dict[str, Any], local: bool = False) -> Table:
    """What is billing now on AWS (instances with their public IPv4 addresses and root volumes, alarms' metrics,
    the workers' own polling, bucket storage, queues) per hour and month at list prices (dated); on an emulator,
    what the same would cost there."""
    from labkit import costs
    title = "What the same would cost on AWS" if local else "What costs money while it exists"
    workers = 0 if local else len(running(status.get("workers", [])))
    return Table(costs.billing_now(status, workers) or [["nothing", ""]],
                 ["billing now" if not local else "on AWS", f"at list prices of {costs.AS_OF}"], title)


# -- the class view (labkit status --class) ----------------------------------------------------------------------

def ago(seconds: float) -> str:
    """``12 s``, ``4 min``, ``2 h 5 min``: how long ago, for people."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    hours = f"{minutes // 60} h" + (f" {minutes % 60} min" if minutes % 60 else "")
    return f"{minutes} min" if minutes < 60 else hours


def dollars(usd: float) -> str:
    """``$1.2345``; below a cent, six decimals (a fleet that just started has cost a fraction of a cent)."""
    return f"${usd:,.4f}" if usd >= 0.01 or usd == 0 else f"${usd:.6f}"


def class_tables(view: dict[str, Any]) -> list[Table | Note]:
    """:func:`labkit.classview.class_view` as the terminal and the notebook show it: the students' reply queues,
    the lanes, then the fleet and the day's cost; a note for each thing it could not or would not read."""
    replies = view["reply_queues"]
    quiet = sum(1 for r in replies if r["quiet"])
    rows = []
    for r in replies:
        seen = "(not read)" if r["last_seen"] is None else time.strftime(
            "%H:%M:%S %Z", time.localtime(r["last_seen"])) + f" ({ago(r['ago'])} ago)"
        rows.append([r["name"], seen + ("  GONE QUIET" if r["quiet"] else ""), r["waiting"], r["in_flight"]])
    title = (f"Students' reply queues: {len(replies)} ({len(replies) - quiet} active, {quiet} gone quiet: unseen for "
             f"{ago(view['quiet_after'])} or more)")
    out: list[Table | Note] = [Table(rows or [["(none: no client runs)", "", "", ""]],
                                     ["reply queue", "last seen", "answers waiting", "in flight"], title)]
    lanes = [[ln["lane"], ln["queue"], ln["error"], "", "", ""] if "error" in ln else
             [ln["lane"], ln["queue"], ln["visible"], ln["in_flight"], ln["delayed"],
              "" if ln["dead_letter"] is None else ln["dead_letter"]] for ln in view["lanes"]]
    out.append(Table(lanes, ["lane", "queue", "jobs waiting", "in flight", "delayed", "dead letters"], "Lanes"))
    out.append(Table(_fleet_rows(view.get("fleet")) + _cost_rows(view), None, "The fleet and the day"))
    if view.get("refused"):
        out.append(Note(view["refused"], "error"))
    dead = sum(ln.get("dead_letter") or 0 for ln in view["lanes"])
    if dead:
        out.append(Note(f"{dead} dead letter(s): `labkit dlq show` lists them (requests no worker could answer)",
                        "warning"))
    return out


def _fleet_rows(fleet: dict[str, Any] | None) -> list[list[Any]]:
    """The fleet's size, health, group, failed boots and stop, as rows."""
    from labkit.fleet.status import stop_line
    if fleet is None:
        return [["fleet", "none recorded in this lab (`labkit deploy` starts one)"]]
    other = fleet["size"] - fleet["healthy"] - fleet["unhealthy"]
    rows = [["fleet", f"{fleet['name']}: {fleet['size']} instance(s) running, {fleet['healthy']} healthy, "
                      f"{fleet['unhealthy']} unhealthy" + (f", {other} booting or unknown" if other else "")]]
    g = fleet.get("group")
    if g:
        rows.append(["group", f"{g['name']}: desired {g['desired']} (min {g['min']}, max {g['max']})"])
    rows.append(["failed boots", fleet.get("bootstrap") or "none in the last hour"])
    if g or fleet["instances"]:
        word, _, rest = stop_line(fleet.get("stop")).strip().partition(" ")
        rows.append([word, rest.strip()])
    return rows


def _cost_rows(view: dict[str, Any]) -> list[list[Any]]:
    """The day's cost so far (an estimate, dated list prices), its parts, what it leaves out, and this view's own
    requests."""
    c = view["cost"]
    since = datetime.fromisoformat(c["since"]).strftime("%H:%M %Z on %Y-%m-%d")
    where = "what the same would have cost on AWS" if view.get("local") else "spent"
    rows = [["cost today", f"{dollars(c['usd'])} {where} since {since} ({c['label']})"]]
    rows += [["", f"{what}: {dollars(usd)} ({how})"] for what, usd, how in c["rows"]]
    rows += [["not counted", c["not_counted"][0]]] + [["", line] for line in c["not_counted"][1:]]
    n = sum(view["requests"]["calls"].values())
    rows.append(["this view", f"{n} SQS requests (${view['requests']['usd']:,.6f}), one pass; the age of a lane's "
                              "oldest job is a CloudWatch metric (ApproximateAgeOfOldestMessage), not read"])
    return rows


# -- labkit doctor ------------------------------------------------------------------------------------------------

def doctor_table(checks: Sequence[Any]) -> Table:
    """``labkit doctor``'s rows (:class:`labkit.doctor.Check`) as one table: the CLI prints it, 00_setup shows it."""
    return Table([[c.check, c.status, c.found, c.todo] for c in checks], ["check", "status", "found", "what to do"],
                 "labkit doctor")


def doctor_note(checks: Sequence[Any]) -> Note:
    """One line under the doctor's table: the blockers, else the warnings, else all ok."""
    stops = [c.check for c in checks if c.status == "blocker"]
    warns = [c.check for c in checks if c.status == "warn"]
    if stops:
        return Note(f"{len(stops)} blocker(s): {', '.join(stops)}; fix them before class (the table says how)",
                    "error")
    if warns:
        return Note(f"no blocker; {len(warns)} warning(s): {', '.join(warns)}", "warning")
    return Note(f"all {len(checks)} checks ok", "ok")
