"""What a run measured: one :class:`Result` per scenario, the :class:`Target` each ratio is held to, and
the :class:`Measurements` that holds them all (plain data through ``to_dict()`` and ``rows()``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np

from labkit.costs import PRICES, price

N = TypeVar("N", int, float)


@dataclass
class Result:
    """One scenario's figures. ``calls`` counts API calls of every process involved, by operation."""

    name: str
    jobs: int
    seconds: float
    correct: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by process group

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else 0.0

    @property
    def api_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def calls_per_job(self) -> float | None:
        return self.api_calls / self.jobs if self.calls and self.jobs else None

    def percentile(self, q: float) -> float | None:
        """The ``q``-th percentile of the latencies, in seconds (None without latencies)."""
        return float(np.percentile(self.latencies, q)) if self.latencies else None

    @property
    def p50(self) -> float | None:
        return self.percentile(50)

    @property
    def p95(self) -> float | None:
        return self.percentile(95)

    def to_dict(self, latencies: bool = False) -> dict[str, Any]:
        """The figures as plain data; ``latencies`` adds every latency in milliseconds."""
        d = {"name": self.name, "jobs": self.jobs, "seconds": round(self.seconds, 4),
             "jobs_per_s": round(self.jobs_per_s, 2), "correct": self.correct,
             "api_calls": self.api_calls, "calls_per_job": rounded(self.calls_per_job, 3),
             "p50_ms": ms(self.p50), "p95_ms": ms(self.p95), "calls": dict(sorted(self.calls.items())),
             **self.extra}
        if self.cpu and self.jobs:
            d["cpu_ms_per_job"] = {k: round(v * 1000 / self.jobs, 2) for k, v in self.cpu.items()}
        if latencies:
            d["latencies_ms"] = [round(x * 1000, 2) for x in self.latencies]
        return d


def merge(parts: Sequence[Result]) -> Result:
    """Rounds of one scenario as one result (jobs, seconds, calls and latencies added up)."""
    first = parts[0]
    return Result(first.name, sum(p.jobs for p in parts), sum(p.seconds for p in parts),
                  sum(p.correct for p in parts), add(*(p.calls for p in parts)),
                  [x for p in parts for x in p.latencies],
                  {**parts[-1].extra, "rounds": len(parts), "windows": [p.extra.get("window") for p in parts],
                   "round_rates": [round(p.jobs_per_s, 2) for p in parts],
                   "round_p50_ms": [ms(p.p50) for p in parts]},
                  add(*(p.cpu for p in parts)))


@dataclass
class Target:
    """One of the issue's targets: ``value`` measured against ``goal`` (``at_least`` or at most)."""

    name: str
    value: float | None
    goal: float
    at_least: bool
    unit: str = "x"

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        return self.value >= self.goal if self.at_least else self.value <= self.goal

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": rounded(self.value, 3), "goal": ("≥ " if self.at_least else "≤ ")
                + f"{self.goal:g}{self.unit}", "met": self.met}


@dataclass
class Measurements:
    """Everything one run measured: results by scenario name, the run's parameters and environment."""

    where: str
    params: dict[str, Any]
    results: dict[str, Result] = field(default_factory=dict)
    started: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def get(self, name: str) -> Result | None:
        return self.results.get(name)

    def _ratio(self, a: str, b: str, attr: str, inverse: bool = False) -> float | None:
        ra, rb = self.get(a), self.get(b)
        if ra is None or rb is None:
            return None
        va, vb = getattr(ra, attr), getattr(rb, attr)
        if not va or not vb:
            return None
        return vb / va if inverse else va / vb

    def paired(self, a: str, b: str, key: str = "round_rates") -> list[float]:
        """Per-round ratios ``a / b`` of scenarios that ran in alternating rounds (floor and labkit):
        each pair ran side by side in time, so drift in the machine's load hits both alike."""
        ra, rb = self.get(a), self.get(b)
        xs, ys = (ra.extra.get(key), rb.extra.get(key)) if ra and rb else (None, None)
        if not xs or not ys or len(xs) != len(ys):
            return []
        return [x / y for x, y in zip(xs, ys, strict=True) if x and y]

    def _paired_median(self, a: str, b: str, attr: str, key: str) -> float | None:
        """The median of :meth:`paired` ratios; the plain ratio of the totals when the runs were not paired."""
        pairs = self.paired(a, b, key)
        return float(np.median(pairs)) if pairs else self._ratio(a, b, attr)

    def cpu_per_job(self, name: str, group: str = "workers") -> float | None:
        """CPU seconds per job of a scenario's process group (None when not measured)."""
        res = self.get(name)
        if res is None or not res.jobs or group not in res.cpu:
            return None
        return res.cpu[group] / res.jobs

    def ratios(self) -> dict[str, float | None]:
        """labkit / floor throughput (median of paired rounds), the workers' CPU per job against the floor's,
        labkit / original throughput, round trip ratios, big-job and image ratios."""
        big = self.get("big")
        cpu_lab, cpu_floor = self.cpu_per_job("labkit"), self.cpu_per_job("floor")
        return {
            "labkit_vs_floor": self._paired_median("labkit", "floor", "jobs_per_s", "round_rates"),
            "worker_cpu_vs_floor": cpu_lab / cpu_floor if cpu_lab and cpu_floor else None,
            "labkit_vs_original": self._ratio("labkit", "original", "jobs_per_s"),
            "round_trip_vs_floor": self._paired_median("round_trip", "floor_round_trip", "p50", "round_p50_ms"),
            "round_trip_speedup": self._ratio("round_trip", "original_round_trip", "p50", inverse=True),
            "big_vs_direct": self._ratio("big", "big_direct", "seconds"),
            "big_peak_rss_vs_payload": big.extra.get("peak_rss_vs_payload") if big else None,
            "images_vs_inprocess": self._ratio("images", "images_inprocess", "jobs_per_s"),
        }

    def targets(self) -> list[Target]:
        """The issue's targets with the measured values (``met`` is None when not measured)."""
        r = self.ratios()
        lab = self.get("labkit")
        return [
            Target("labkit throughput / floor", r["labkit_vs_floor"], 0.9, True),
            Target("worker CPU per job / floor's", r["worker_cpu_vs_floor"], 1.3, False),
            Target("labkit throughput / original", r["labkit_vs_original"], 5, True),
            Target("API calls per job (labkit)", lab.calls_per_job if lab else None, 0.7, False, ""),
            Target("round trip p50: labkit / floor", r["round_trip_vs_floor"], 1.5, False),
            Target("round trip p50: original / labkit", r["round_trip_speedup"], 20, True),
            Target("big list: end to end / direct", r["big_vs_direct"], 3, False),
            Target("big list: worker peak RSS / payload", r["big_peak_rss_vs_payload"], 3, False),
            Target("images: labkit rate / in-process", r["images_vs_inprocess"], 0.8, True),
        ]

    def costs(self) -> dict[str, dict[str, float]]:
        """Request cost of a million jobs for each throughput scenario, at :data:`PRICES`."""
        return {name: price(res.calls, res.jobs) for name, res in self.results.items()
                if res.calls and name in ("floor", "labkit", "original", "images", "big")}

    def rows(self) -> list[dict[str, Any]]:
        """One plain dict per scenario (for a DataFrame or a plot)."""
        return [res.to_dict() for res in self.results.values()]

    def to_dict(self, latencies: bool = False) -> dict[str, Any]:
        """The whole report as plain data (what ``labkit bench --json`` prints)."""
        return {"started": self.started, "where": self.where, "params": self.params,
                "results": {k: v.to_dict(latencies) for k, v in self.results.items()},
                "ratios": {k: rounded(v, 3) for k, v in self.ratios().items()},
                "targets": [t.to_dict() for t in self.targets()],
                "cost_per_million_jobs": {k: {kk: round(vv, 4) for kk, vv in v.items()}
                                          for k, v in self.costs().items()},
                "prices": PRICES}


def add(*maps: Mapping[str, N]) -> dict[str, N]:
    """Values added up key by key (call counts, CPU seconds)."""
    total: dict[str, Any] = {}
    for m in maps:
        for k, v in m.items():
            total[k] = total.get(k, 0) + v
    return total


def rounded(x: float | None, digits: int) -> float | None:
    """``round(x, digits)``, None for None."""
    return None if x is None else round(x, digits)


def ms(x: float | None) -> float | None:
    """Seconds as milliseconds to 0.1, None for None."""
    return None if x is None else round(x * 1000, 1)
