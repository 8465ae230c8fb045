"""The report and the sweep as text tables (what ``labkit bench`` prints)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from labkit.bench.report import Measurements, ms
from labkit.costs import PRICES


def format_table(report: Measurements) -> str:
    """The report as text: one line per scenario, then ratios, targets and prices."""
    p = report.params
    lines = [f"labkit bench, {report.started}, {report.where}",
             f"jobs {p.get('jobs')}, window {p.get('window')}, workers {p.get('workers')} x concurrency "
             f"{p.get('concurrency')}, {p.get('cores')} cores", "",
             f"{'scenario':<21}{'jobs':>6}{'seconds':>9}{'jobs/s':>9}{'calls/job':>10}{'p50 ms':>9}"
             f"{'p95 ms':>9}  ok"]
    for r in report.results.values():
        lines.append(f"{r.name:<21}{r.jobs:>6}{r.seconds:>9.2f}{r.jobs_per_s:>9.1f}"
                     f"{_num(r.calls_per_job, '.3f'):>10}{_num(ms(r.p50), '.1f'):>9}{_num(ms(r.p95), '.1f'):>9}"
                     f"  {r.correct}/{r.jobs}")
    return "\n".join(lines + _cpu(report) + _notes(report) + _targets(report) + _costs(report))


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _cpu(report: Measurements) -> list[str]:
    """CPU milliseconds per job by process group, for the scenarios that measured it."""
    with_cpu = [r for r in report.results.values() if r.cpu and r.jobs]
    if not with_cpu:
        return []
    lines = ["", f"{'CPU ms per job':<21}{'client':>9}{'workers':>9}{'emulator':>10}"]
    for r in with_cpu:
        c = {k: v * 1000 / r.jobs for k, v in r.cpu.items()}
        lines.append(f"{r.name:<21}{c.get('client', 0):>9.2f}{c.get('workers', 0):>9.2f}"
                     f"{_num(c.get('emulator'), '.2f'):>10}")
    return lines


def _notes(report: Measurements) -> list[str]:
    """The paired rounds, the big list's memory and the images' upload and reference rates."""
    lines = [""] if report.paired("labkit", "floor") or report.paired("round_trip", "floor_round_trip",
                                                                      "round_p50_ms") else []
    for a, b, key, what in (("labkit", "floor", "round_rates", "throughput labkit / floor"),
                            ("round_trip", "floor_round_trip", "round_p50_ms", "round trip p50 labkit / floor")):
        pairs = report.paired(a, b, key)
        if pairs:
            q1, q2, q3 = np.percentile(pairs, [25, 50, 75])
            lines.append(f"{what} by round: median {q2:.2f}, IQR {q1:.2f}-{q3:.2f}, range {min(pairs):.2f}-"
                         f"{max(pairs):.2f} over {len(pairs)} pairs")
    big = report.get("big")
    if big is not None and "peak_rss_mib" in big.extra:
        e = big.extra
        lines += ["", f"{e['numbers']:,} numbers: payload {e['payload_mib']:.1f} MiB ({e['payload_format']}), worker "
                  f"peak RSS {e['peak_rss_mib']:.0f} MiB (idle {e['baseline_rss_mib']:.0f} MiB) = "
                  f"{e['peak_rss_vs_payload']:.2f}x the payload"]
    images = report.get("images")
    if images is not None and "upload_s" in images.extra:
        lines.append(f"images: upload of {images.jobs} took {images.extra['upload_s']:.2f} s (not in the rate)")
        ref = report.get("images_inprocess")
        if ref is not None and "labkit_image_code_per_s" in ref.extra:
            lines.append(f"images: labkit's image code alone (no AWS, 1 process): "
                         f"{ref.extra['labkit_image_code_per_s']:.1f}/s; plain Pillow: {ref.jobs_per_s:.1f}/s")
    return lines


def _targets(report: Measurements) -> list[str]:
    lines = ["", f"{'target':<42}{'measured':>10}{'goal':>9}  met"]
    for t in report.targets():
        met = {True: "yes", False: "NO", None: "-"}[t.met]
        lines.append(f"{t.name:<42}{_num(t.value, '.2f'):>10}{t.to_dict()['goal']:>9}  {met}")
    return lines


def _costs(report: Measurements) -> list[str]:
    costs = report.costs()
    if not costs:
        return []
    lines = ["", f"request cost of 1,000,000 jobs at list prices ({PRICES['as_of']}: SQS "
             f"${PRICES['sqs_per_million_requests']:.2f}/million requests, S3 PUT "
             f"${PRICES['s3_put_per_thousand']}/1000, GET ${PRICES['s3_get_per_thousand']}/1000)"]
    for name, c in costs.items():
        lines.append(f"  {name:<19}${c['total_usd']:>10,.2f}  (SQS ${c['sqs_usd']:,.2f}, S3 ${c['s3_usd']:,.2f})")
    return lines


def format_sweep(rows: Sequence[dict[str, Any]]) -> str:
    """Sweep rows (from :func:`labkit.bench.sweep`) as text: one line per pipeline and point."""
    lines = [f"{'pipeline':<9}{'window':>7}{'workers':>8}{'conc':>6}{'jobs/s':>9}{'p50 ms':>9}{'p95 ms':>9}"
             f"{'calls/job':>10}"]
    for r in rows:
        lines.append(f"{r['pipeline']:<9}{r['window']:>7}{r['workers']:>8}{r['concurrency'] or '-':>6}"
                     f"{r['jobs_per_s']:>9.1f}{r['p50_ms'] or 0:>9.1f}{r['p95_ms'] or 0:>9.1f}"
                     f"{r['calls_per_job'] or 0:>10.3f}")
    return "\n".join(lines)
