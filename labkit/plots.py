"""Figures for the notebooks: number histograms, round-trip latency, images side by side, a job's life, a queue's
depth (the benchmark's own figures are :mod:`labkit.bench.figures`).

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (no global state, no
GUI backend needed, nothing to close), sized :data:`FIGSIZE` inches at :data:`DPI` dots per inch, so
a saved PNG is always 800 x 450 pixels. ``save`` writes one, ``show`` displays one in a notebook.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from labkit.timeline import worker_label

FIGSIZE = (8.0, 4.5)
DPI = 100
# Colours for the marked statistics (colour-blind safe, from matplotlib's tab palette).
MARKS = {"min": "#1f77b4", "max": "#d62728", "mean": "#2ca02c", "median": "#ff7f0e"}
_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def new_figure(ncols: int = 1) -> tuple[Figure, Any]:
    """A blank figure of the standard size with ``ncols`` axes side by side."""
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    axes = fig.subplots(1, ncols)
    return fig, axes


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes, at the standard size."""
    fig.set_size_inches(*FIGSIZE)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save(fig: Figure, folder: str | Path, name: str) -> Path:
    """Write ``<folder>/<name>.png`` (800 x 450 px) and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = _NAME.sub("-", name).strip("-") or "figure"
    path = folder / (stem if stem.endswith(".png") else stem + ".png")
    path.write_bytes(png_bytes(fig))
    return path


def title_of(fig: Figure) -> str:
    """The figure's title (suptitle, else the first axes' title), for text-only displays."""
    sup = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) is not None else ""
    if sup:
        return sup
    for ax in fig.axes:
        if ax.get_title():
            return ax.get_title()
    return "figure"


def mime_bundle(fig: Figure) -> dict[str, str]:
    """A display bundle: the PNG for notebooks and a one-line text for logs and plain terminals."""
    return {"image/png": base64.b64encode(png_bytes(fig)).decode("ascii"),
            "text/plain": f"<figure: {title_of(fig)}>"}


def show(fig: Figure) -> None:
    """Display the figure in a notebook (works with any matplotlib backend, Agg included)."""
    from IPython.display import display
    display(mime_bundle(fig), raw=True)


# -- number jobs ----------------------------------------------------------------------------------------

def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}"


def numbers_histogram(values: Sequence[float] | np.ndarray, stats: Mapping[str, Any] | None = None,
                      title: str | None = None) -> Figure:
    """Histogram of ``values`` with min, max, mean and median marked.

    ``stats`` is a number job's result (the worker's answer); without it the marks are computed here.
    """
    arr = np.asarray(values, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("no values to plot")
    if stats is None:
        stats = {"min": arr.min(), "max": arr.max(), "mean": arr.mean(), "median": float(np.median(arr))}
    fig, ax = new_figure()
    span = float(arr.max() - arr.min())
    integer = bool(np.all(np.mod(arr, 1) == 0))
    if integer and span < 60:
        # One bar per integer value: easy to read for short typed lists.
        edges = np.arange(arr.min() - 0.5, arr.max() + 1.5)
    else:
        edges = np.histogram_bin_edges(arr, bins=int(np.clip(2 * np.sqrt(arr.size), 10, 60)))
    counts, edges = np.histogram(arr, bins=edges)
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="#9bb7d4", edgecolor="#4a6d8c",
           linewidth=0.6, label=f"{arr.size:,} numbers")
    styles = {"min": "--", "max": "--", "mean": "-", "median": ":"}
    for name in ("min", "max", "mean", "median"):
        if name in stats and stats[name] is not None:
            ax.axvline(float(stats[name]), color=MARKS[name], linestyle=styles[name], linewidth=2,
                       label=f"{name} {_fmt(float(stats[name]))}")
    ax.set_xlabel("value (unitless)")
    ax.set_ylabel("count (numbers per bin)" if not (integer and span < 60) else "count (numbers per value)")
    # A figure title (not the axes' one): the legend beside the axes leaves them too narrow for it.
    fig.suptitle(title or f"{arr.size:,} numbers: distribution and the worker's statistics")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.margins(x=0.04)
    handles, labels = ax.get_legend_handles_labels()
    order = [len(handles) - 1, *range(len(handles) - 1)]  # the bars first, then the marks
    ax.legend([handles[i] for i in order], [labels[i] for i in order], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              borderaxespad=0, fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    return fig


# -- latency --------------------------------------------------------------------------------------------

def latency_figure(latencies_s: Sequence[float] | np.ndarray, sent_s: Sequence[float] | np.ndarray,
                   title: str | None = None) -> Figure:
    """Round-trip latency of a batch: its distribution (left) and over the run (right).

    ``latencies_s``: seconds from submit to result, per job; ``sent_s``: when each job was sent, in
    seconds since the first one.
    """
    lat = np.asarray(latencies_s, dtype=float) * 1000.0
    sent = np.asarray(sent_s, dtype=float)
    if lat.size == 0:
        raise ValueError("no latencies to plot")
    p50, p95 = np.percentile(lat, [50, 95])
    fig, (left, right) = new_figure(2)
    left.hist(lat, bins=int(np.clip(np.sqrt(lat.size) * 2, 5, 50)), color="#9bb7d4", edgecolor="#4a6d8c",
              linewidth=0.6)
    left.axvline(p50, color=MARKS["median"], linestyle="-", linewidth=2, label=f"median {p50:,.0f} ms")
    left.axvline(p95, color=MARKS["max"], linestyle="--", linewidth=2, label=f"95th percentile {p95:,.0f} ms")
    left.set_xlabel("round-trip latency (ms)")
    left.set_ylabel("jobs")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_title("Distribution")
    left.legend(fontsize="small")
    left.grid(axis="y", alpha=0.3)

    # Each job at the moment its result arrived: jobs sent together in one batch spread out.
    arrived = sent + lat / 1000.0
    order = np.argsort(arrived)
    right.scatter(arrived[order], lat[order], s=10, alpha=0.6, color="#4a6d8c", label="one job")
    if lat.size >= 5:
        k = max(3, lat.size // 20)
        kernel = np.ones(k) / k
        smooth = np.convolve(lat[order], kernel, mode="valid")
        right.plot(arrived[order][k - 1:], smooth, color=MARKS["median"], linewidth=2,
                   label=f"mean of the last {k} jobs")
    right.set_xlabel("result arrived, since the first job was sent (s)")
    right.set_ylabel("round-trip latency (ms)")
    right.set_title("Over the run")
    right.set_ylim(bottom=0)
    right.legend(fontsize="small")
    right.grid(alpha=0.3)
    fig.suptitle(title or f"Round-trip latency of {lat.size:,} jobs")
    return fig


# -- images ---------------------------------------------------------------------------------------------

def _displayable(img: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixels and imshow options for a PIL image of any mode."""
    mode = img.mode
    if mode in ("1", "L", "I", "I;16", "F"):
        return np.asarray(img.convert("L")), {"cmap": "gray", "vmin": 0, "vmax": 255}
    if mode in ("LA", "PA", "RGBA", "P") and ("A" in mode or "transparency" in img.info):
        return np.asarray(img.convert("RGBA")), {}
    return np.asarray(img.convert("RGB")), {}


def images_side_by_side(original: Any, result: Any, ops: str = "", title: str | None = None) -> Figure:
    """The original image (left) and the processed one (right), each titled with its size."""
    fig, (left, right) = new_figure(2)
    for ax, img, label in ((left, original, "original"), (right, result, "result")):
        pixels, opts = _displayable(img)
        ax.imshow(pixels, interpolation="antialiased", **opts)
        ax.set_title(f"{label}: {img.width} x {img.height} px, {img.mode}")
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        ax.tick_params(labelsize="small")
    fig.suptitle(title or (f"Image job: {ops}" if ops else "Image job"))
    return fig


def bar_figure(labels: Sequence[str], values: Sequence[float], ylabel: str, title: str,
               errors: Sequence[float] | None = None) -> Figure:
    """One bar per label (e.g. jobs/s per benchmark scenario), each with its value written on it."""
    fig, ax = new_figure()
    bars = ax.bar(list(labels), list(values), yerr=None if errors is None else list(errors), capsize=4,
                  color="#9bb7d4", edgecolor="#4a6d8c")
    ax.bar_label(bars, labels=[_fmt(round(v, 1)) for v in values], padding=3, fontsize="small")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(0, max(values) * 1.15 if len(values) and max(values) > 0 else 1)
    ax.grid(axis="y", alpha=0.3)
    ax.tick_params(axis="x", labelsize="small")
    return fig


# -- a message's life -------------------------------------------------------------------------------------

PHASE_COLORS = {"queue_wait": "#c7c7c7", "held": "#f7c6c5", "return": "#9edae5"}
WORKER_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def job_timeline_figure(timelines: Sequence[Sequence[Mapping[str, Any]]], title: str | None = None) -> Figure:
    """One bar per job (``Job.timeline()`` each): waiting in the queue (grey), held by a delivery that did
    not answer (hatched red: a worker died or handed it back, and the message came back), computing
    (coloured by the worker that answered; a dot of its colour when too short to see), coming back (light
    blue); a tick at each heartbeat that kept the message invisible. Seconds from the batch's first send."""
    fig, ax = new_figure()
    starts = [e["at"] for t in timelines for e in t if e["event"] == "sent"]
    t0 = min(starts) if starts else 0.0
    workers: dict[str, str] = {}
    redelivered = heartbeats = 0
    ends = [e["at"] - t0 for t in timelines for e in t]
    tiny = 0.004 * (max(ends) if ends else 1.0)  # a compute bar narrower than this (about 2 px) gets a dot too
    dots: dict[str, list[tuple[float, int]]] = {}
    for y, events in enumerate(timelines):
        at = {e["event"]: e["at"] - t0 for e in events}  # the last of each name
        got = [e for e in events if e["event"] == "received"]
        worker = got[-1].get("worker", "?") if got else "?"
        color = workers.setdefault(worker, WORKER_COLORS[len(workers) % len(WORKER_COLORS)])
        marks = [at.get("sent")] + [e["at"] - t0 for e in got] + [at.get("started")]
        for k, (a, b) in enumerate(zip(marks, marks[1:], strict=False)):
            if a is not None and b is not None:
                held = 0 < k < len(got)  # from an unanswered delivery to the next one
                ax.barh(y, b - a, left=a, height=0.8, color=PHASE_COLORS["held" if held else "queue_wait"],
                        hatch="///" if held else None, edgecolor="#d62728" if held else None, linewidth=0)
        redelivered += len(got) > 1
        if "started" in at and "finished" in at:
            ax.barh(y, max(at["finished"] - at["started"], 1e-4), left=at["started"], color=color, height=0.8)
            if at["finished"] - at["started"] < tiny:
                dots.setdefault(color, []).append((at["started"], y))
        if "finished" in at and "result" in at:
            ax.barh(y, at["result"] - at["finished"], left=at["finished"], color=PHASE_COLORS["return"], height=0.8)
        beats = [e["at"] - t0 for e in events if e["event"] == "visibility_extended"]
        heartbeats += len(beats)
        ax.plot(beats, [y] * len(beats), linestyle="none", marker="|", markersize=12, color="#333333")
    for color, points in dots.items():  # a job that computed in microseconds still shows by whom
        ax.scatter([x for x, _ in points], [y for _, y in points], marker="D", s=10, color=color, zorder=3)
    handles = [Line2D([0], [0], color=PHASE_COLORS["queue_wait"], lw=6, label="waiting in the queue"),
               *[Line2D([0], [0], color=c, lw=6, label=f"computing on {worker_label(w)}") for w, c in workers.items()],
               Line2D([0], [0], color=PHASE_COLORS["return"], lw=6, label="reply coming back")]
    if redelivered:
        handles.insert(1, Line2D([0], [0], color=PHASE_COLORS["held"], lw=6,
                                 label="held by a delivery that did not answer"))
    if heartbeats:
        handles.append(Line2D([0], [0], color="#333333", linestyle="none", marker="|", markersize=12,
                              label="visibility extended (heartbeat)"))
    if dots:
        handles.append(Line2D([0], [0], color="#555555", linestyle="none", marker="D", markersize=4,
                              label="computing, too short for a bar"))
    # Beside the axes, not on them: inside, it hid the last jobs' bars.
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    ax.set_xlabel("seconds since the first job was sent")
    ax.set_ylabel("job (in the order sent)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.invert_yaxis()
    # A figure title (not the axes' one): the legend beside the axes leaves them too narrow for it.
    fig.suptitle(title or f"The life of {len(timelines)} jobs" + (f" ({redelivered} delivered more than once)"
                                                                  if redelivered else ""))
    ax.grid(axis="x", alpha=0.3)
    return fig


def queue_depth_figure(samples: Sequence[Any], title: str | None = None,
                       marks: Sequence[tuple[float, str]] = ()) -> Figure:
    """Messages visible, in flight and in the dead-letter queue over time (``QueueWatcher.samples``).

    ``marks``: moments to name on the plot, ``(epoch seconds, what happened)`` ("worker killed"), each a
    dotted line with its text."""
    fig, ax = new_figure()
    t0 = samples[0].at if samples else 0.0
    queues = sorted({s.queue for s in samples})
    styles = {"visible": ("#1f77b4", "-"), "in flight": ("#ff7f0e", "-"), "dead-letter": ("#d62728", "--")}
    for q in queues:
        mine = [s for s in samples if s.queue == q]
        x = [s.at - t0 for s in mine]
        suffix = f" ({q})" if len(queues) > 1 else ""
        # A dot at each look: between two looks the counts are not known (a fast batch changes them often).
        # In flight drawn wide and first, visible narrow on top: where both are equal, both still show.
        dot = {"marker": "o", "markersize": 2.5}
        ax.step(x, [s.in_flight for s in mine], where="post", color=styles["in flight"][0], linewidth=3.5,
                label="in flight (received, not yet deleted)" + suffix, **dot)
        ax.step(x, [s.visible for s in mine], where="post", color=styles["visible"][0], label="visible" + suffix,
                linewidth=1.5, **dot)
        if any(s.dead_letter is not None for s in mine):
            ax.step(x, [s.dead_letter or 0 for s in mine], where="post", color=styles["dead-letter"][0],
                    linestyle="--", label="in the dead-letter queue" + suffix)
    ax.set_xlabel("seconds since watching began (a dot per look)")
    ax.set_ylabel("messages (SQS's approximate counts)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    _name_moments(ax, [(at - t0, text) for at, text in marks])
    if samples:  # beside the axes: inside, it hid the curves' tops (and the named moments' texts are long)
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle(title or f"Queue depth: {', '.join(queues)}")
    return fig


def _name_moments(ax: Any, marks: Sequence[tuple[float, str]]) -> None:
    """A dotted vertical line at each mark, numbered above the axes (a number close to the previous one a
    row higher, so both can be read); the legend says what each number is."""
    if not marks:
        return
    ax.set_ylim(top=max(ax.get_ylim()[1], 1) * 1.08)  # the curves' top off the frame
    lo, hi = ax.get_xlim()
    last, row = None, 0
    for i, (x, text) in enumerate(marks, 1):
        ax.axvline(x, color="#555555", linestyle=":", linewidth=1.2, label=f"{i}: {text}")
        row = row + 1 if last is not None and x - last < 0.03 * (hi - lo) else 0
        last = x
        ax.text(x, 1.01 + 0.05 * row, str(i), transform=ax.get_xaxis_transform(), ha="center", va="bottom",
                fontsize="small", fontweight="bold", color="#333333")
