"""Commands that run the whole kit: run-notebooks, bench, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from labkit.cli.common import int_list, print_json

Add = Any


def cmd_run_notebooks(args: argparse.Namespace) -> int:
    from labkit.unattended import main_run
    return main_run(aws=args.aws, pairs=args.parameter, out=args.out, only=args.only)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_bench(args: argparse.Namespace) -> int:
    from labkit import bench
    if args.clients is not None:
        return _bench_class(args)
    if args.sweep:
        rows = bench.sweep(windows=args.sweep_windows, workers=args.sweep_workers, jobs=args.jobs or 500,
                           aws=args.aws, log=_log, endpoint=args.endpoint)
        if args.json:
            print_json(rows)
        else:
            print(bench.format_sweep(rows))
        return 0
    only = tuple(x.strip() for x in args.only.split(",") if x.strip()) if args.only else None
    sizes = {"jobs": args.jobs, "window": args.window, "workers": args.workers, "concurrency": args.concurrency,
             "big": args.big, "images": args.images, "only": only}
    plan = bench.Plan.quick(**sizes) if args.quick else bench.Plan.full(**sizes)
    report = bench.run_bench(plan, aws=args.aws, log=_log, endpoint=args.endpoint)
    if args.json:
        print_json(report.to_dict())
    else:
        print(bench.format_table(report))
    wrong = [f"{r.name} ({r.jobs - r.correct} of {r.jobs})" for r in report.results.values() if r.correct < r.jobs]
    if wrong:
        print("labkit: error: wrong or missing results in " + ", ".join(wrong), file=sys.stderr)
        return 1
    return 0


def _bench_class(args: argparse.Namespace) -> int:
    """``labkit bench --clients N``: the class scenario (docs/benchmark.md, "A class on one fleet")."""
    from labkit import bench
    from labkit.errors import InvalidInput
    if args.clients < 2:
        raise InvalidInput(f"--clients needs at least 2 (one heavy, the others light), got {args.clients}")
    sizes = {"clients": args.clients, "heavy_jobs": args.jobs, "light_jobs": args.light_jobs, "window": args.window,
             "workers": args.workers, "concurrency": args.concurrency, "heavy_loop": args.heavy_loop or None}
    plan = bench.ClassPlan(**{k: v for k, v in sizes.items() if v is not None})
    run = bench.run_class(plan, aws=args.aws, log=_log, endpoint=args.endpoint)
    if args.json:
        print_json(run.to_dict())
    else:
        print(bench.format_class_table(run))
    if args.figure:
        from labkit.plots import save
        path = save(bench.class_figure(run), args.figure.parent, args.figure.name)
        _log(f"bench: figure saved to {path}")
    wrong = sum(run.lost.values()) + sum(run.misdelivered.values())
    if wrong:
        print(f"labkit: error: {wrong} job(s) lost or answered to the wrong client", file=sys.stderr)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from labkit.demo import run_demo
    return run_demo(random_length=args.random_length)


def register(add: Add) -> None:
    sp = add("run-notebooks", cmd_run_notebooks, "execute the notebooks in order with papermill (emulator and a "
             "local worker started and stopped for you); executed notebooks and figures go to runs/<time>/",
             parents=[])
    sp.add_argument("--aws", action="store_true", help="run against real AWS with your credentials (creates queues "
                    "and a bucket that cost money; 99_teardown deletes them)")
    sp.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="set a notebook parameter, repeatable (e.g. -p random_length 1000000 -p batch_jobs 500); "
                    "it goes to the notebooks that declare it")
    sp.add_argument("--out", default="runs", metavar="DIR", help="where run folders go (default runs/; "
                    "runs/latest points at the newest)")
    sp.add_argument("--only", action="append", metavar="PATTERN", help="run only the notebooks matching PATTERN "
                    "(a glob or part of the name, e.g. 01 or numbers), repeatable")

    sp = add("bench", cmd_bench, "measure throughput, latency and big jobs against a floor taken in the same run "
             "(see docs/benchmark.md)", parents=[])
    sp.add_argument("--jobs", type=int, metavar="N", help="small number jobs for throughput, in 8 paired rounds "
                    "(default 2400 on moto and AWS, 48000 on another service on this machine; --quick 200)")
    sp.add_argument("--window", type=int, metavar="W", help="jobs in flight (default: the client's own for the "
                    "endpoint: 10 on moto, adaptive elsewhere; see docs/benchmark.md)")
    sp.add_argument("--workers", type=int, metavar="K", help="worker processes (default 1)")
    sp.add_argument("--concurrency", type=int, metavar="C", help="jobs at once per worker (default 4)")
    sp.add_argument("--big", type=int, metavar="N", help="length of the big random list (default 10000000)")
    sp.add_argument("--images", type=int, metavar="N", help="1080p images to process (default 50)")
    sp.add_argument("--only", metavar="LIST", help="scenarios to run, comma-separated: floor, labkit, round_trip "
                    "(labkit's and the floor's), original, big, images (default all)")
    sp.add_argument("--quick", action="store_true", help="a small run (seconds, for tests and notebooks)")
    sp.add_argument("--json", action="store_true", help="print the results as JSON")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--aws", action="store_true", help="run on real AWS (creates and deletes its own queues and "
                   "bucket; costs a few cents)")
    g.add_argument("--endpoint", metavar="URL", help="run on this SQS/S3 endpoint (another emulator, LocalStack; "
                   "default: LABKIT_ENDPOINT_URL, else the emulator of `labkit up`, else a private one)")
    sp.add_argument("--clients", type=int, metavar="N", help="instead: a class on one fleet, N clients at once: one "
                    "sends --jobs (default 5000) with submit_many, the others --light-jobs each, one at a time; "
                    "against each group alone (see docs/benchmark.md)")
    sp.add_argument("--light-jobs", type=int, metavar="N", help="with --clients: jobs per light client (default 10)")
    sp.add_argument("--heavy-loop", action="store_true", help="with --clients: the heavy client calls Lab.submit in "
                    "a loop (every job sent at once) instead of submit_many (at most its window in flight)")
    sp.add_argument("--figure", type=Path, metavar="PNG", help="with --clients: save its figure there")
    sp.add_argument("--sweep", action="store_true", help="instead: throughput and latency against the window "
                    "and the number of workers")
    sp.add_argument("--sweep-windows", type=int_list, default=(10, 20, 40, 80), metavar="LIST",
                    help="windows for --sweep (default 10,20,40,80)")
    sp.add_argument("--sweep-workers", type=int_list, default=(1, 2), metavar="LIST",
                    help="worker counts for --sweep (default 1,2)")

    sp = add("demo", cmd_demo, "the whole thing on the embedded emulator: start, send jobs, print, stop",
             parents=[])
    sp.add_argument("--random-length", type=int, default=100_000, metavar="N",
                    help="length of the random list (default 100000)")
