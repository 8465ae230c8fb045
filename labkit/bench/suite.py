"""A whole run: the :class:`Plan` (sizes), :func:`run_bench` (every scenario, one :class:`Measurements`) and
:func:`sweep` (throughput and latency against the window and the worker count)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from labkit.bench.fairness import ClassPlan, ClassRun, class_scenario
from labkit.bench.floor import floor
from labkit.bench.original import original, original_round_trip
from labkit.bench.report import Measurements, Result, ms, rounded
from labkit.bench.rig import Rig
from labkit.bench.scenarios import big_numbers, images, labkit_throughput, round_trips, throughput
from labkit.config import Settings
from labkit.errors import ConfigError
from labkit.flow import adaptive_window, default_window

SCENARIOS = ("floor", "labkit", "round_trip", "original", "big", "images")


@dataclass
class Plan:
    """Sizes of one run. :meth:`quick` is a small run for tests and notebooks."""

    jobs: int | None = None  # None: 2,400 on moto and AWS, 48,000 on a fast service on this machine
    window: int | None = None  # None: the client's default for the endpoint
    workers: int = 1
    concurrency: int = 4
    round_trips: int = 100
    original_jobs: int = 300
    original_round_trips: int = 6
    big: int = 10_000_000
    images: int = 50
    rounds: int = 8  # floor and labkit alternate in this many rounds each (a ratio per pair: its median)
    only: tuple[str, ...] = SCENARIOS

    @classmethod
    def full(cls, **changes: Any) -> Plan:
        """The default run (about 2 minutes on 2 cores), with ``changes`` (None values ignored)."""
        return dataclasses.replace(cls(), **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def quick(cls, **changes: Any) -> Plan:
        """A small run (about 30 s), with ``changes`` (None values ignored)."""
        base = cls(jobs=200, round_trips=10, original_jobs=30, original_round_trips=2, big=200_000, images=4,
                   rounds=2)
        return dataclasses.replace(base, **{k: v for k, v in changes.items() if v is not None})


Step = Callable[[], Result | tuple[Result, ...]]


def throughput_jobs(rig: Rig) -> int:
    """Jobs for the throughput rounds by default: about 10 s of each pipeline on moto (200 jobs/s), 30 s on a
    fast service on this machine (fauxqs: about 1,600 jobs/s). There, rounds of 1,500 jobs (a second each)
    spread too much to tell 0.85 from 0.9: interquartile ranges of the paired ratios about 0.10 wide,
    against about 0.04 for rounds of 6,000 (measured on fauxqs, eight runs of each)."""
    return 48_000 if rig.settings.is_local and not rig.endpoint.slows_as_queues_fill else 2_400


def run_bench(plan: Plan | None = None, settings: Settings | None = None, aws: bool = False,
              log: Callable[[str], None] = lambda s: None, endpoint: str | None = None) -> Measurements:
    """Run the scenarios of ``plan`` in one process on one endpoint and return the :class:`Measurements`.

    ``settings``: an endpoint to use (its queue and bucket names are ignored: the run makes its own);
    else ``endpoint`` (any SQS/S3 service's URL), ``LABKIT_ENDPOINT_URL``, the endpoint of ``labkit up``,
    or a private emulator started for the run (or real AWS with ``aws``).
    """
    plan = plan or Plan()
    unknown = set(plan.only) - set(SCENARIOS)
    if unknown:
        raise ConfigError(f"unknown scenario(s) {', '.join(sorted(unknown))}: choose from {', '.join(SCENARIOS)}")
    with Rig.open(settings, aws, log, endpoint) as rig:
        if plan.jobs is None:
            plan = dataclasses.replace(plan, jobs=throughput_jobs(rig))
        report = Measurements(rig.where, _params(plan, rig))
        for name, step in _steps(plan, rig):
            log(f"bench: {name} ...")
            out = step()
            for res in out if isinstance(out, tuple) else (out,):
                report.results[res.name] = res
                log(f"bench:   {res.name}: {res.jobs} job(s) in {res.seconds:.2f} s ({res.jobs_per_s:.1f}/s), "
                    f"{res.correct} correct")
    return report


def _steps(plan: Plan, rig: Rig) -> list[tuple[str, Step]]:
    """What ``plan`` runs, in order, each with the name the log gives it."""
    window = plan.window or default_window(rig.endpoint)
    steps: list[tuple[str, Step]] = []
    if "floor" in plan.only and "labkit" in plan.only:
        steps.append(("floor and labkit", lambda: throughput(rig, plan.jobs, plan.window, plan.workers,
                                                             plan.concurrency, plan.rounds)))
    elif "floor" in plan.only:
        steps.append(("floor", lambda: floor(rig, plan.jobs, window, plan.workers)))
    elif "labkit" in plan.only:
        steps.append(("labkit", lambda: labkit_throughput(rig, plan.jobs, plan.window, plan.workers,
                                                          plan.concurrency)))
    if "round_trip" in plan.only:
        steps.append(("round trip (floor and labkit)", lambda: round_trips(rig, plan.round_trips)))
    if "original" in plan.only:
        steps.append(("original", lambda: original(rig, plan.original_jobs, window)))
        steps.append(("original round trip", lambda: original_round_trip(rig, plan.original_round_trips)))
    if "big" in plan.only:
        steps.append((f"{plan.big:,} numbers", lambda: big_numbers(rig, plan.big)))
    if "images" in plan.only:
        steps.append(("images", lambda: images(rig, plan.images, plan.workers, plan.concurrency)))
    return steps




def _params(plan: Plan, rig: Rig) -> dict[str, Any]:
    """The run's parameters as the report keeps them (the window described as the client will use it)."""
    window = plan.window or default_window(rig.endpoint)
    flow = adaptive_window(rig.endpoint)
    described = str(window) if plan.window or flow.low == flow.high else \
        f"adaptive from {window} ({flow.low}-{flow.high})"
    return {"jobs": plan.jobs, "window": described, "workers": plan.workers, "concurrency": plan.concurrency,
            "cores": os.cpu_count(), "plan": plan.__dict__ | {"only": list(plan.only)}}


def run_class(plan: ClassPlan | None = None, settings: Settings | None = None, aws: bool = False,
              log: Callable[[str], None] = lambda s: None, endpoint: str | None = None) -> ClassRun:
    """The class scenario (one heavy client, the others light: :mod:`labkit.bench.fairness`) on one endpoint,
    found as :func:`run_bench` finds it."""
    with Rig.open(settings, aws, log, endpoint) as rig:
        return class_scenario(rig, plan or ClassPlan(), log)


def sweep(windows: Sequence[int] = (10, 20, 40, 80), workers: Sequence[int] = (1, 2),
          concurrency: Sequence[int] = (4,), jobs: int = 500, settings: Settings | None = None,
          aws: bool = False, log: Callable[[str], None] = lambda s: None,
          endpoint: str | None = None) -> list[dict[str, Any]]:
    """Throughput and latency of labkit and of the floor against the window, the number of worker
    processes and their concurrency: one plain dict per pipeline and point, e.g. for ``labkit.plots``."""
    rows: list[dict[str, Any]] = []
    with Rig.open(settings, aws, log, endpoint) as rig:
        for k in workers:
            for c in concurrency:
                for w in windows:
                    fl, lab = throughput(rig, jobs, w, k, c, rounds=1)
                    rows += [_point("floor", fl, w, k, None), _point("labkit", lab, w, k, c)]
                    log(f"sweep: window {w}, workers {k}x{c}: labkit {lab.jobs_per_s:.1f} jobs/s, "
                        f"floor {fl.jobs_per_s:.1f} jobs/s")
    return rows


def _point(pipeline: str, res: Result, window: int, workers: int, concurrency: int | None) -> dict[str, Any]:
    return {"pipeline": pipeline, "window": window, "workers": workers, "concurrency": concurrency,
            "jobs": res.jobs, "correct": res.correct, "jobs_per_s": round(res.jobs_per_s, 2),
            "p50_ms": ms(res.p50), "p95_ms": ms(res.p95), "calls_per_job": rounded(res.calls_per_job, 3)}

