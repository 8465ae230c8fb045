"""A class on one fleet (``labkit bench --clients 40``): one heavy client sending thousands of jobs at once while
the others (light clients) send a few each, one at a time, as students do; against the light clients alone and the
heavy one alone, on the same worker processes.

The heavy client is a process of its own (``python -m labkit.bench heavy``: :func:`labkit.bench.child.main`), so
that its work does not hold the interpreter lock of the light clients, whose round trips are what is measured;
the light clients are threads of this process, each with a :class:`~labkit.client.Lab` of its own (its own reply
queue and MessageGroupId, as forty students' notebooks have): forty Python processes would crowd two cores
with forty interpreters and measure start-up more than the queue. Every job's answer is checked against an
independent computation, so an answer given to the wrong client counts as misdelivered, and a job never
answered as lost.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labkit.bench.answers import job_ok, matches, number_lists, plain_stats
from labkit.bench.report import Result, add
from labkit.bench.rig import Rig, settle
from labkit.errors import LabkitError
from labkit.waiting import wait_for

LIGHT_TIMEOUT = 300.0  # seconds a light client waits for one answer before counting the job lost


@dataclass
class ClassPlan:
    """Sizes of the class scenario: ``clients`` in all, one of them heavy."""

    clients: int = 40
    heavy_jobs: int = 5000
    light_jobs: int = 5  # per light client, one at a time
    # Seconds a light client waits between an answer and its next job (jittered +-50%); None: the heavy client's
    # time alone over light_jobs, so that the light clients' jobs spread over the heavy client's whole run.
    think: float | None = None
    lead: float = 1.0  # seconds the heavy client sends before the light ones start
    workers: int = 1
    concurrency: int = 4
    window: int | None = None  # the heavy client's window (None: the client's own for the endpoint)
    heavy_loop: bool = False  # the heavy client calls Lab.submit in a loop (no window) instead of submit_many

    @property
    def light_clients(self) -> int:
        return max(1, self.clients - 1)


@dataclass
class ClassRun:
    """What the class scenario measured: the light clients alone and with the heavy one, the heavy one alone
    and with the others (Results), plus what went wrong and when each job ran (for the figure)."""

    plan: ClassPlan
    where: str
    results: dict[str, Result] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    misdelivered: dict[str, int] = field(default_factory=dict)
    light_times: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # (sent s, latency s)
    heavy_done: dict[str, list[float]] = field(default_factory=dict)  # seconds after the heavy start, per answer

    @property
    def light_p95_ratio(self) -> float | None:
        """Light clients' p95 round trip with the heavy client over their p95 alone."""
        alone, crowded = self.results.get("light_alone"), self.results.get("light_with_heavy")
        if alone is None or crowded is None or not alone.p95 or crowded.p95 is None:
            return None
        return crowded.p95 / alone.p95

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "plan": self.plan.__dict__, "results": {k: v.to_dict() for k, v in
                                                                           self.results.items()},
                "lost": self.lost, "misdelivered": self.misdelivered, "light_p95_ratio": self.light_p95_ratio}


def class_scenario(rig: Rig, plan: ClassPlan, log: Any = lambda s: None) -> ClassRun:
    """Run the four phases on ``rig``'s endpoint with ``plan.workers`` worker processes: light clients alone,
    heavy alone, both at once (the heavy client starting ``plan.lead`` seconds first)."""
    from labkit.client import Lab
    run = ClassRun(plan, rig.where)
    procs = rig.workers(plan.workers, "numbers", plan.concurrency)
    labs: list[Lab] = []
    try:
        with cf.ThreadPoolExecutor(16) as pool:  # the light clients' start-up: reply queues made, workers warm
            labs = list(pool.map(lambda _: _warm_lab(rig), range(plan.light_clients)))
        log(f"bench: {len(labs)} light clients ready")
        _heavy_phase(rig, run, "heavy_alone", plan, procs, labs=[], log=log)
        if plan.think is None:
            plan.think = round(run.results["heavy_alone"].seconds / plan.light_jobs, 2)
        calls = rig.meter(procs, *(lab.clients for lab in labs))
        calls.start()
        _light_phase(run, "light_alone", labs, plan, seed=100, t0=time.time())
        _finish(run, "light_alone", calls.stop(), calls.cpu)
        log(f"bench: light clients alone: p95 {_ms(run.results['light_alone'].p95)}")
        _heavy_phase(rig, run, "heavy_with_light", plan, procs, labs=labs, log=log)
    finally:
        for lab in labs:
            lab.close()
        rig.stop(procs)
    return run


def _warm_lab(rig: Rig) -> Any:
    from labkit.client import Lab
    lab = Lab(rig.settings)
    lab.numbers([1, 2, 3]).result(timeout=120)
    lab.replies.flush()  # the warm-up's reply deleted now, not inside the count
    return lab


def _heavy_phase(rig: Rig, run: ClassRun, name: str, plan: ClassPlan, procs: list[Any], labs: list[Any],
                 log: Any) -> None:
    """The heavy client's jobs (a process of its own), with the light clients' round trips meanwhile if ``labs``."""
    go = rig.work_dir / f"{name}.go"
    out = rig.work_dir / f"{name}.json"
    args = ["heavy", "--jobs", str(plan.heavy_jobs), "--go", str(go), "--result", str(out)]
    args += ["--loop"] if plan.heavy_loop else []
    heavy = rig.spawn(*args, *(["--window", str(plan.window)] if plan.window else []))
    try:
        settle()
        calls = rig.meter([*procs, heavy], *(lab.clients for lab in labs))
        calls.start()
        t0, t = time.time(), time.perf_counter()
        go.touch()
        if labs:
            time.sleep(plan.lead)
            _light_phase(run, "light_with_heavy", labs, plan, seed=200, t0=t0)
        data = wait_for(lambda: _read_json(out), 600, f"the heavy client's {plan.heavy_jobs} jobs (see "
                        f"{heavy.child.log})", interval=0.1)
        seconds = time.perf_counter() - t
        counted, cpu = calls.stop(), calls.cpu
        n = len(procs)
        who = {"workers": add(*calls.parts[:n]), "heavy client": calls.parts[n],
               "light clients": add(*calls.parts[n + 1:])}
    finally:
        rig.stop([heavy])
    if "error" in data:
        raise LabkitError(f"the heavy client stopped: {data['error']}")
    res = Result(name, data["jobs"], data["seconds"], data["correct"], {}, data["latencies"],
                 {"window": data["window"], "clients": 1 + len(labs)})
    run.results[name] = res
    run.lost[name] = data["jobs"] - data["answered"]
    run.misdelivered[name] = data["answered"] - data["correct"] + data["strays"]
    run.heavy_done[name] = [x - t0 for x in data["finished"]]
    log(f"bench: {name}: {res.jobs} jobs in {res.seconds:.1f} s ({res.jobs_per_s:.0f}/s)")
    if labs:
        _only_while_heavy(run, max(run.heavy_done[name], default=0.0))
    # The calls of every process in the phase (workers, heavy client, light clients), over all its jobs.
    total_jobs = res.jobs + (run.results["light_with_heavy"].jobs if labs else 0)
    run.results[f"{name}_all"] = Result(f"{name}_all", total_jobs, seconds, 0, counted, [],
                                        {"calls_by_process": who}, cpu)


def _only_while_heavy(run: ClassRun, end: float) -> None:
    """The light clients' round trips with the heavy client are those sent while it ran: a job sent after its
    last answer met no heavy client (it still counts for lost and misdelivered)."""
    light = run.results["light_with_heavy"]
    during = [(sent, lat) for sent, lat in run.light_times["light_with_heavy"] if sent < end]
    light.latencies = [lat for _, lat in during]
    light.extra["sent_while_heavy_ran"] = len(during)


def _light_phase(run: ClassRun, name: str, labs: list[Any], plan: ClassPlan, seed: int, t0: float) -> None:
    """Every light client's jobs, one at a time with a think time between, all clients at once."""
    rng = random.Random(seed)
    starts = [rng.uniform(0, plan.think) for _ in labs]  # not all at the same instant
    strays0 = sum(lab.replies.strays for lab in labs)
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(len(labs)) as pool:
        per_client = list(pool.map(lambda a: _light_client(*a, plan=plan, t0=t0),
                                   [(lab, seed + i, starts[i]) for i, lab in enumerate(labs)]))
    seconds = time.perf_counter() - t
    for lab in labs:
        lab.replies.flush()  # the deletes each still holds (labkit.replies.DELETE_AFTER): counted in this phase
    rows = [r for rs in per_client for r in rs]
    answered = [r for r in rows if r[2] is not None]
    correct = sum(1 for r in answered if r[2])
    run.results[name] = Result(name, len(rows), seconds, correct, {}, [r[1] for r in answered],
                               {"clients": len(labs), "jobs_each": plan.light_jobs})
    run.lost[name] = len(rows) - len(answered)
    run.misdelivered[name] = len(answered) - correct + sum(lab.replies.strays for lab in labs) - strays0
    run.light_times[name] = [(r[0], r[1]) for r in answered]


def _light_client(lab: Any, seed: int, start: float, plan: ClassPlan,
                  t0: float) -> list[tuple[float, float, bool | None]]:
    """One light client: ``plan.light_jobs`` number jobs one at a time; (sent, latency, right answer or None)."""
    rng = random.Random(seed)
    lists = number_lists(plan.light_jobs, seed=seed)
    out: list[tuple[float, float, bool | None]] = []
    time.sleep(start)
    for n, values in enumerate(lists):
        if n:
            time.sleep(plan.think * rng.uniform(0.5, 1.5))  # a student reads the answer, then sends the next
        sent = time.time()
        t = time.perf_counter()
        try:
            result = lab.numbers(values).result(timeout=LIGHT_TIMEOUT)
            out.append((sent - t0, time.perf_counter() - t, matches(result, plain_stats(values))))
        except LabkitError:
            out.append((sent - t0, time.perf_counter() - t, None))
    return out


def _finish(run: ClassRun, name: str, counted: dict[str, int], cpu: dict[str, float]) -> None:
    res = run.results[name]
    res.calls, res.cpu = counted, cpu


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.0f} ms"


def heavy_client(settings: Any, jobs: int, go: Path, result: Path, window: int | None, counts: Any,
                 stop: threading.Event, loop: bool = False) -> None:
    """The heavy client's side (in its own process): warm up, report ready, wait for ``go``, send ``jobs`` number
    jobs through :meth:`Lab.submit_many`, write what came back to ``result`` (JSON), and keep its Lab (its
    reply queue) until ``stop``, so that the closing calls fall outside what the bench counts."""
    from labkit.client import Lab
    lists = number_lists(jobs, seed=7)
    with Lab(settings) as lab:
        lab.numbers([1, 2, 3]).result(timeout=120)
        lab.replies.flush()
        counts.snapshot = lab.clients.counter.snapshot
        counts.write()  # ready
        wait_for(go.exists, 600, "the bench's go", interval=0.01)
        t = time.perf_counter()
        try:
            if loop:  # every job sent at once, as `[lab.numbers(v) for v in lists]` does, then awaited
                done = [lab.numbers(v) for v in lists]
                for job in done:
                    job.result(timeout=600)
            else:
                done = lab.submit_many("numbers", [{"numbers": v} for v in lists], window=window, progress=False)
        except LabkitError as exc:  # no answer for too long: the bench says so instead of waiting on
            _write_json(result, {"error": str(exc)})
            stop.wait()
            return
        seconds = time.perf_counter() - t
        lab.replies.flush()  # its last deletes now, to be counted with the rest
        answered = [j for j in done if j.finished is not None]
        correct = sum(1 for j, v in zip(done, lists, strict=True) if j.finished is not None and job_ok(j, v))
        doc = {"jobs": jobs, "seconds": seconds, "answered": len(answered), "correct": correct,
               "latencies": [j.latency for j in answered], "finished": sorted(j.finished for j in answered),
               "window": "none" if loop else lab.last_window, "strays": lab.replies.strays}
        _write_json(result, doc)
        stop.wait()
        counts.write()


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)
