"""Figures: produced, saved at the standard size, labelled (axes with units, titles, legends)."""

from __future__ import annotations

import base64
import io
import socket
import statistics

import numpy as np
import pytest
from PIL import Image

from labkit import plots
from labkit.bench import figures


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def _labels(ax) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def test_numbers_histogram_marks_the_workers_statistics(tmp_path):
    # Given a short typed list and the worker's answer for it
    values = [1, 5, 22, 33, 9, 0, -15, 8, 22]
    stats = {"min": -15, "max": 33, "mean": sum(values) / len(values), "median": statistics.median(values)}
    # When it is plotted and saved
    fig = plots.numbers_histogram(values, stats)
    path = plots.save(fig, tmp_path / "figs", "01 numbers/typed")
    # Then the PNG is 800 x 450 and the four statistics are marked with their values
    assert path == tmp_path / "figs" / "01-numbers-typed.png"
    assert path.stat().st_size > 5_000
    assert _png_size(path) == (800, 450)
    ax = fig.axes[0]
    labels = _labels(ax)
    assert labels[0] == "9 numbers"
    assert {"min -15", "max 33", "mean 9.444", "median 8"} <= set(labels)
    assert "unitless" in ax.get_xlabel() and "count" in ax.get_ylabel()
    assert plots.title_of(fig) == "9 numbers: distribution and the worker's statistics"
    # One bar per integer value for a short integer list, and the bars hold every number
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights) == len(values)


def test_numbers_histogram_of_a_million_numbers_uses_bins(tmp_path):
    values = np.random.default_rng(1).integers(-1000, 1000, size=1_000_000, endpoint=True)
    fig = plots.numbers_histogram(values)  # no worker answer: the marks are computed here
    ax = fig.axes[0]
    assert 10 <= len(ax.patches) <= 60
    assert sum(p.get_height() for p in ax.patches) == 1_000_000
    assert f"min {-1000:,}" in _labels(ax) and "max 1,000" in _labels(ax)
    assert _png_size(plots.save(fig, tmp_path, "random")) == (800, 450)


def test_numbers_histogram_refuses_nothing():
    with pytest.raises(ValueError, match="no values"):
        plots.numbers_histogram([])


def test_latency_figure_has_distribution_and_time_axes(tmp_path):
    rng = np.random.default_rng(2)
    lat = rng.gamma(4, 0.01, size=200)
    sent = np.sort(rng.uniform(0, 3, size=200))
    fig = plots.latency_figure(lat, sent, title="Round-trip latency of 200 jobs")
    left, right = fig.axes
    assert left.get_xlabel() == "round-trip latency (ms)"
    assert right.get_ylabel() == "round-trip latency (ms)"
    assert "(s)" in right.get_xlabel()
    p50 = np.percentile(lat * 1000, 50)
    assert f"median {p50:,.0f} ms" in _labels(left)
    assert plots.title_of(fig) == "Round-trip latency of 200 jobs"
    path = plots.save(fig, tmp_path, "latency")
    assert _png_size(path) == (800, 450) and path.stat().st_size > 10_000


@pytest.mark.parametrize("mode", ["RGB", "L", "1", "RGBA", "P"])
def test_images_side_by_side_any_mode(tmp_path, mode):
    original = Image.new("RGB", (64, 40), (200, 30, 30))
    result = original.convert(mode).resize((32, 20))
    fig = plots.images_side_by_side(original, result, "grayscale → thumbnail size=32")
    left, right = fig.axes
    assert left.get_title() == "original: 64 x 40 px, RGB"
    assert right.get_title() == f"result: 32 x 20 px, {mode}"
    assert left.get_xlabel() == "x (px)" and left.get_ylabel() == "y (px)"
    assert _png_size(plots.save(fig, tmp_path, f"img-{mode}")) == (800, 450)


def test_sweep_figure_one_line_per_series(tmp_path):
    rows = [{"window": w, "workers": k, "jobs_per_s": 100.0 * k + w, "p50_ms": 20.0 + w, "p95_ms": 40.0 + w}
            for k in (1, 2) for w in (5, 10, 20)]
    fig = figures.throughput_latency_figure(rows, x="window", series="workers", x_label="jobs in flight (window)")
    left, right = fig.axes
    assert left.get_ylabel() == "throughput (jobs/s)" and right.get_ylabel() == "round-trip latency (ms)"
    assert _labels(left) == ["workers = 1", "workers = 2"]
    assert len(right.get_lines()) == 4  # median and 95th percentile per series
    assert _labels(right) == ["median", "95th percentile"]
    # the lines carry the data, sorted by x
    assert list(left.get_lines()[1].get_ydata()) == [205.0, 210.0, 220.0]
    assert _png_size(plots.save(fig, tmp_path, "sweep")) == (800, 450)


def test_bar_figure_writes_values(tmp_path):
    fig = plots.bar_figure(["floor", "labkit", "original"], [410.2, 388.0, 9.5], "throughput (jobs/s)",
                           "Throughput by scenario")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["410.2", "388", "9.5"]
    assert _png_size(plots.save(fig, tmp_path, "bars")) == (800, 450)


def test_mime_bundle_is_a_png_with_a_text_line():
    fig = plots.numbers_histogram([1, 2, 3], title="three numbers")
    bundle = plots.mime_bundle(fig)
    assert bundle["text/plain"] == "<figure: three numbers>"
    with Image.open(io.BytesIO(base64.b64decode(bundle["image/png"]))) as im:
        assert im.size == (800, 450)


def _life(t: float, worker: str, redelivered: bool = False) -> list[dict]:
    first = [{"event": "received", "at": t + 0.1, "receive_count": 1, "inferred": True}] if redelivered else []
    again = 3.0 if redelivered else 0.0
    return [{"event": "sent", "at": t}, *first,
            {"event": "received", "at": t + 0.2 + again, "receive_count": 2 if redelivered else 1, "worker": worker},
            {"event": "started", "at": t + 0.25 + again}, {"event": "finished", "at": t + 0.4 + again},
            {"event": "replied", "at": t + 0.41 + again}, {"event": "result", "at": t + 0.5 + again}]


def test_job_timeline_bars_by_phase_coloured_by_worker(tmp_path):
    # Given the timelines of four jobs on two workers, one of them delivered twice
    here = f"{socket.gethostname()}:14003"  # a worker on this machine, and one elsewhere
    lives = [_life(100.0, here), _life(100.1, "b:2"), _life(100.2, here, redelivered=True), _life(100.3, "b:2")]
    # When they are plotted
    fig = plots.job_timeline_figure(lives)
    # Then one bar row per job, a colour per worker (named as people say it), the redelivery's held stretch named,
    # titled and saved 800x450
    ax = fig.axes[0]
    assert _labels(ax) == ["waiting in the queue", "held by a delivery that did not answer",
                           "computing on local worker 14003", "computing on worker 2 on b", "reply coming back"]
    assert plots.title_of(fig) == "The life of 4 jobs (1 delivered more than once)"
    assert ax.get_xlabel() == "seconds since the first job was sent"
    held = [p for p in ax.patches if p.get_hatch() == "///"]
    assert len(held) == 1 and held[0].get_width() == pytest.approx(3.1)  # first delivery to the second
    assert _png_size(plots.save(fig, tmp_path, "01-job-timeline")) == (800, 450)


def test_queue_depth_steps_for_each_count(tmp_path):
    from labkit.watcher import Sample
    # Given samples of a queue draining, then a message dead-lettered
    samples = [Sample(50.0 + i, "requestQueue", max(0, 4 - i), min(i, 2), int(i >= 5)) for i in range(7)]
    # When they are plotted
    fig = plots.queue_depth_figure(samples)
    ax = fig.axes[0]
    # Then three step lines with their meanings, time from the first sample
    assert _labels(ax) == ["in flight (received, not yet deleted)", "visible", "in the dead-letter queue"]
    assert [list(line.get_xdata())[:2] for line in ax.get_lines()] == [[0.0, 1.0]] * 3
    assert plots.title_of(fig) == "Queue depth: requestQueue"
    assert _png_size(plots.save(fig, tmp_path, "01-queue-depth")) == (800, 450)


def test_queue_depth_names_moments_with_numbered_lines(tmp_path):
    from labkit.watcher import Sample
    # Given a queue's samples and three moments, two of them close together
    samples = [Sample(10.0 + i, "q", int(i < 3), int(i >= 3), 0) for i in range(6)]
    marks = [(11.0, "worker 12 killed, holding 1"), (14.0, "visible again"), (14.05, "worker 13 started")]
    # When they are plotted
    fig = plots.queue_depth_figure(samples, "a title", marks)
    ax = fig.axes[0]
    # Then each moment is a dotted line at its time, named in the legend by its number
    assert _labels(ax)[3:] == ["1: worker 12 killed, holding 1", "2: visible again", "3: worker 13 started"]
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in dotted] == pytest.approx([1.0, 4.0, 4.05])
    # And the numbers stand above the axes, the close one a row higher than its neighbour
    numbers = {t.get_text(): t.get_position() for t in ax.texts}
    assert list(numbers) == ["1", "2", "3"] and numbers["3"][1] > numbers["2"][1] == numbers["1"][1] > 1.0
    assert plots.title_of(fig) == "a title"
    assert _png_size(plots.save(fig, tmp_path, "05-depth")) == (800, 450)


def test_job_timeline_ticks_heartbeats_and_dots_computes_too_short_to_see(tmp_path):
    # Given a long job with two heartbeats, and a job that computed in 10 microseconds
    long = [{"event": "sent", "at": 0.0}, {"event": "received", "at": 0.1, "receive_count": 1, "worker": "a:1"},
            {"event": "started", "at": 0.1}, {"event": "visibility_extended", "at": 2.0, "seconds": 6},
            {"event": "visibility_extended", "at": 4.0, "seconds": 6}, {"event": "finished", "at": 5.0},
            {"event": "replied", "at": 5.0}, {"event": "result", "at": 5.1}]
    short = [{"event": "sent", "at": 0.2}, {"event": "received", "at": 0.3, "receive_count": 1, "worker": "b:2"},
             {"event": "started", "at": 0.3}, {"event": "finished", "at": 0.30001}, {"event": "result", "at": 0.4}]
    # When they are plotted
    fig = plots.job_timeline_figure([long, short])
    ax = fig.axes[0]
    # Then the heartbeats are ticks on the long job's bar, and the short job's compute is a dot of its worker's colour
    ticks = [line for line in ax.get_lines() if line.get_marker() == "|"]
    assert [list(t.get_xdata()) for t in ticks if len(t.get_xdata())] == [[2.0, 4.0]]
    [dots] = ax.collections
    assert dots.get_offsets().tolist() == [[0.3, 1.0]]
    assert _labels(ax)[-2:] == ["visibility extended (heartbeat)", "computing, too short for a bar"]
    assert _png_size(plots.save(fig, tmp_path, "timeline")) == (800, 450)


def test_the_benchmarks_figures_live_in_the_bench_and_draw_its_rows(tmp_path):
    from labkit import bench
    rows = [{"name": "floor", "jobs": 500, "jobs_per_s": 410.2}, {"name": "labkit", "jobs": 500, "jobs_per_s": 388.0},
            {"name": "floor_round_trip", "p50_ms": 4.0, "p95_ms": 6.0}, {"name": "round_trip", "p50_ms": 5.0}]
    left, right = bench.scenarios_figure(rows).axes
    assert left.get_title() == "Throughput, 500 small jobs" and right.get_title() == "One job at a time"
    sweep = [{"pipeline": "labkit", "workers": k, "window": w, "jobs": 500, "jobs_per_s": 100.0 * k + w,
              "p50_ms": 20.0 + w, "p95_ms": 40.0 + w} for k in (1, 2) for w in (10, 20, 40)]
    fig = bench.sweep_figure(sweep)
    assert _labels(fig.axes[0]) == ["labkit, 1 worker", "labkit, 2 workers"]
    assert _png_size(plots.save(fig, tmp_path, "sweep")) == (800, 450)
    assert not hasattr(plots, "scenarios_figure") and not hasattr(plots, "bench_sweep_figure")
