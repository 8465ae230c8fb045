"""The class scenario's table and figure (``labkit bench --clients 40``; :mod:`labkit.bench.fairness`)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
from matplotlib.figure import Figure

from labkit.bench.fairness import ClassRun
from labkit.bench.report import Result, ms
from labkit.bench.table import _num

LIGHT_P95_GOAL = 4.0  # "the light clients' p95 round trip stays within a few times their p95 alone"
CALLS_GOAL = 0.8  # API calls per job with forty clients at once

ROWS = (("light_alone", "light clients alone"), ("heavy_alone", "heavy client alone"),
        ("light_with_heavy", "light, heavy running"), ("heavy_with_light", "heavy, light running"))
COLUMNS = ("phase", "jobs", "seconds", "jobs/s", "p50 ms", "p95 ms", "calls/job", "lost", "misdelivered")


def format_class_table(run: ClassRun) -> str:
    """The class scenario as text: one line per phase, then the two targets and where the calls went."""
    p = run.plan
    lines = [f"labkit bench --clients {p.clients}, {datetime.now(timezone.utc).isoformat(timespec='seconds')}, "
             f"{run.where}",
             f"1 heavy client ({p.heavy_jobs} jobs, {'Lab.submit in a loop' if p.heavy_loop else 'submit_many'}, "
             f"window {_window(run)}) and {p.light_clients} light "
             f"clients ({p.light_jobs} jobs each, one at a time, {p.think:g} s apart); {p.workers} worker(s) x "
             f"concurrency {p.concurrency}", "",
             f"{COLUMNS[0]:<22}{COLUMNS[1]:>6}{COLUMNS[2]:>9}{COLUMNS[3]:>8}{COLUMNS[4]:>8}{COLUMNS[5]:>8}"
             f"{COLUMNS[6]:>10}{COLUMNS[7]:>6}{COLUMNS[8]:>14}"]
    for key, label in ROWS:
        r = run.results.get(key)
        if r is not None:
            lines.append(_row(label, r, _calls_per_job(run, key), run.lost.get(key), run.misdelivered.get(key)))
    every = run.results.get("heavy_with_light_all")
    if every is not None:
        lost = sum(run.lost.get(k, 0) for k in ("light_with_heavy", "heavy_with_light"))
        wrong = sum(run.misdelivered.get(k, 0) for k in ("light_with_heavy", "heavy_with_light"))
        lines.append(f"{f'all {p.clients} at once':<22}{every.jobs:>6}{every.seconds:>9.2f}{every.jobs_per_s:>8.0f}"
                     f"{'':>16}{_num(every.calls_per_job, '.3f'):>10}{lost:>6}{wrong:>14}")
    return "\n".join(lines + _targets(run) + _where_calls_go(run))


def _row(label: str, r: Result, calls: float | None, lost: int | None, wrong: int | None) -> str:
    return (f"{label:<22}{r.jobs:>6}{r.seconds:>9.2f}{r.jobs_per_s:>8.0f}{_num(ms(r.p50), '.0f'):>8}"
            f"{_num(ms(r.p95), '.0f'):>8}{_num(calls, '.3f'):>10}{_num(lost, 'd'):>6}{_num(wrong, 'd'):>14}")


def _window(run: ClassRun) -> str:
    windows = {r.extra.get("window") for k, r in run.results.items() if k.startswith("heavy") and "window" in r.extra}
    return "/".join(str(w) for w in sorted(windows, key=str)) or "-"


def _calls_per_job(run: ClassRun, key: str) -> float | None:
    """Calls per job of a phase: every process's calls (workers, clients) over the phase's jobs."""
    if key == "light_alone":
        return run.results[key].calls_per_job
    if key == "heavy_alone":
        return run.results.get("heavy_alone_all", Result("", 0, 0)).calls_per_job
    return None  # the two phases at once share their calls: the "all" line gives them


def _targets(run: ClassRun) -> list[str]:
    ratio = run.light_p95_ratio
    every, one = run.results.get("heavy_with_light_all"), run.results.get("heavy_alone_all")
    cpj, alone = (every.calls_per_job if every else None), (one.calls_per_job if one else None)
    light = run.results.get("light_with_heavy")
    during = light.extra.get("sent_while_heavy_ran") if light else None
    return ["", f"light round trips with the heavy client: the {_num(during, 'd')} of {light.jobs if light else '-'} "
            "sent while it ran",
            f"light clients' p95, heavy running / alone: {_num(ratio, '.2f')}x (goal: within "
            f"{LIGHT_P95_GOAL:g}x){_met(ratio, LIGHT_P95_GOAL)}",
            f"API calls per job, {run.plan.clients} clients at once: {_num(cpj, '.3f')} (goal: at most "
            f"{CALLS_GOAL:g}){_met(cpj, CALLS_GOAL)}; one client alone: {_num(alone, '.3f')}"]


def _met(value: float | None, goal: float) -> str:
    return "" if value is None else ("  met" if value <= goal else "  NOT MET")


def _where_calls_go(run: ClassRun) -> list[str]:
    """The calls of the phase with every client at once, by operation, per job."""
    every = run.results.get("heavy_with_light_all")
    if every is None or not every.jobs:
        return []
    lines = ["", f"where the calls go, all at once (calls per job, over all {every.jobs} jobs):"]
    for who, calls in every.extra.get("calls_by_process", {"every process": every.calls}).items():
        ranked = sorted(calls.items(), key=lambda x: -x[1])
        parts = [f"{op.split('.', 1)[1]} {n / every.jobs:.3f}" for op, n in ranked]
        lines.append(f"  {who:<14}{sum(calls.values()) / every.jobs:.3f}: " + ", ".join(parts))
    return lines


def class_figure(run: ClassRun, title: str | None = None) -> Figure:
    """Left: the light clients' round trips alone and with the heavy client (cumulative). Right: the light
    clients' round trips over time while the heavy client runs, and the heavy client's answers so far."""
    from labkit.plots import new_figure
    fig, (left, right) = new_figure(2)
    for key, label, colour in (("light_alone", "light clients alone", "#2ca02c"),
                               ("light_with_heavy", "heavy client running", "#d62728")):
        lat = sorted(x * 1000 for x in run.results[key].latencies) if key in run.results else []
        if lat:
            left.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=label, color=colour)
    left.set_xlabel("light client's round trip (ms)")
    left.set_ylabel("fraction of jobs")
    left.axhline(0.95, color="grey", lw=0.6, ls=":")
    left.legend(loc="lower right", fontsize=8)
    times = run.light_times.get("light_with_heavy", [])
    if times:
        right.scatter([t for t, _ in times], [x * 1000 for _, x in times], s=6, color="#d62728",
                      label="light round trip")
    right.set_xlabel("seconds since the heavy client started")
    right.set_ylabel("light round trip (ms)")
    right.set_ylim(bottom=0)
    done = run.heavy_done.get("heavy_with_light", [])
    if done:
        twin = right.twinx()
        twin.plot(done, np.arange(1, len(done) + 1), color="#1f77b4", lw=1.2)
        twin.set_ylabel("heavy client's jobs answered", color="#1f77b4")
    fig.suptitle(title or f"{run.plan.clients} clients on one fleet: {run.where.split(' at ')[0]}")
    return fig
