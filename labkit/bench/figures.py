"""The benchmark's figures, for 04_benchmark: ``labkit bench``'s scenarios (``Measurements.rows()``) and
:func:`labkit.bench.sweep`'s rows, drawn on :mod:`labkit.plots`' standard figure.

    plots.show(bench.scenarios_figure(report.rows()))
    plots.show(bench.sweep_figure(bench.sweep(windows=(10, 20, 40), workers=(1, 2), jobs=500)))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from labkit.plots import new_figure


def throughput_latency_figure(rows: Sequence[Mapping[str, Any]], x: str, series: str | None = None,
                              throughput: str = "jobs_per_s", latency: str = "p50_ms",
                              latency_high: str | None = "p95_ms", x_label: str | None = None,
                              title: str | None = None, label_format: str = "{series} = {value}") -> Figure:
    """Throughput (left) and latency (right) against ``x``, one line per value of ``series`` (labelled
    with ``label_format``).

    ``rows`` are plain dicts (one per measured point), e.g. ``{"window": 10, "workers": 2,
    "jobs_per_s": 312.0, "p50_ms": 30.1, "p95_ms": 55.2}``.
    """
    if not rows:
        raise ValueError("no benchmark rows to plot")
    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row.get(series) if series else None, []).append(row)
    fig, (left, right) = new_figure(2)
    markers = "osD^v<>"
    has_high = bool(latency_high) and all(latency_high in r and r[latency_high] is not None for r in rows)
    for i, (key, group) in enumerate(sorted(groups.items(), key=lambda kv: (kv[0] is None, str(kv[0])))):
        group = sorted(group, key=lambda r: r[x])
        xs = [r[x] for r in group]
        label = label_format.format(series=series, value=key) if series else None
        m = markers[i % len(markers)]
        line = left.plot(xs, [r[throughput] for r in group], marker=m, label=label)
        color = line[0].get_color()
        right.plot(xs, [r[latency] for r in group], marker=m, color=color)
        if has_high:
            right.plot(xs, [r[latency_high] for r in group], marker=m, linestyle="--", color=color, alpha=0.6)
    xl = x_label or x.replace("_", " ")
    left.set_xlabel(xl)
    left.set_ylabel("throughput (jobs/s)")
    left.set_title("Throughput")
    left.set_ylim(bottom=0)
    right.set_xlabel(xl)
    right.set_ylabel("round-trip latency (ms)")
    right.set_title("Latency")
    right.set_ylim(bottom=0)
    # One legend for the series (left, by colour) and one for the line styles (right).
    if series:
        left.legend(fontsize="small")
    styles = [Line2D([], [], color="#555555", marker="o", label="median")]
    if has_high:
        styles.append(Line2D([], [], color="#555555", marker="o", linestyle="--", alpha=0.6, label="95th percentile"))
    right.legend(handles=styles, fontsize="small", loc="upper left")
    xs_all = sorted({r[x] for r in rows})
    for ax in (left, right):
        ax.grid(alpha=0.3)
        if len(xs_all) > 2 and xs_all[0] > 0 and xs_all[-1] / xs_all[0] >= 4:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs_all, [f"{v:g}" for v in xs_all])
            ax.minorticks_off()
    fig.suptitle(title or f"Throughput and latency against {xl}")
    return fig


SCENARIO_LABELS = {"floor": "floor\n(fewest calls)", "labkit": "labkit", "original": "original lab",
                   "floor_round_trip": "floor", "round_trip": "labkit", "original_round_trip": "original lab"}


def scenarios_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """``labkit bench`` scenarios (``Measurements.rows()``): throughput of floor, labkit and the original
    pattern (left), and round-trip latency one job at a time: the floor, labkit and the original (right)."""
    by_name = {r["name"]: r for r in rows}
    fig, (left, right) = new_figure(2)
    names = [n for n in ("floor", "labkit", "original") if n in by_name]
    if names:
        values = [float(by_name[n]["jobs_per_s"]) for n in names]
        colors = {"floor": "#c7c7c7", "labkit": "#4a6d8c", "original": "#d4a59b"}
        bars = left.bar([SCENARIO_LABELS[n] for n in names], values, color=[colors[n] for n in names],
                        edgecolor="#333333", linewidth=0.6)
        left.bar_label(bars, labels=[f"{v:,.1f}" for v in values], padding=3, fontsize="small")
        left.set_ylim(0, max(values) * 1.18 if max(values) > 0 else 1)
    left.set_ylabel("throughput (jobs/s)")
    left.set_title(f"Throughput, {by_name[names[0]]['jobs']:,} small jobs" if names else "Throughput (not measured)")
    left.grid(axis="y", alpha=0.3)
    trips = [n for n in ("floor_round_trip", "round_trip", "original_round_trip")
             if n in by_name and by_name[n].get("p50_ms")]
    if trips:
        x = np.arange(len(trips))
        p50 = [float(by_name[n]["p50_ms"]) for n in trips]
        p95 = [float(by_name[n].get("p95_ms") or by_name[n]["p50_ms"]) for n in trips]
        b1 = right.bar(x - 0.2, p50, 0.4, label="median", color="#4a6d8c")
        b2 = right.bar(x + 0.2, p95, 0.4, label="95th percentile", color="#9bb7d4")
        right.bar_label(b1, labels=[f"{v:,.0f}" for v in p50], padding=2, fontsize="small")
        right.bar_label(b2, labels=[f"{v:,.0f}" for v in p95], padding=2, fontsize="small")
        right.set_xticks(x, [SCENARIO_LABELS[n] for n in trips])
        if max(p95) / max(min(p50), 1e-9) > 20:
            right.set_yscale("log")
            right.set_ylim(min(p50) / 2, max(p95) * 3)
        else:
            right.set_ylim(0, max(p95) * 1.18)
        right.legend(fontsize="small", loc="upper left")
    right.set_ylabel("round-trip latency (ms)" + (", log scale" if right.get_yscale() == "log" else ""))
    right.set_title("One job at a time" if trips else "Round trip (not measured)")
    right.grid(axis="y", alpha=0.3)
    fig.suptitle(title or "labkit against the fewest-calls floor and the original lab's pattern")
    return fig


def sweep_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> Figure:
    """``labkit.bench.sweep`` rows: throughput and latency against the window, one line per pipeline
    (labkit or floor) and worker configuration."""
    def label(r: Mapping[str, Any]) -> str:
        procs = f"{r['workers']} worker{'s' if r['workers'] != 1 else ''}"
        return f"{r['pipeline']}, {procs}" + (f" x {r['concurrency']}" if r.get("concurrency") else "")

    if not rows:
        raise ValueError("no sweep rows to plot")
    labelled = [{**r, "series": label(r)} for r in rows]
    return throughput_latency_figure(labelled, x="window", series="series", x_label="jobs in flight (window)",
                        label_format="{value}",
                        title=title or f"Throughput and latency against the window ({rows[0]['jobs']:,} jobs a point)")
