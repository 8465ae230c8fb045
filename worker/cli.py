"""The worker's command line: ``python -m worker`` runs :func:`main`, and ``labkit worker`` hands its arguments
to it. :func:`run_worker` is what both run, and what the bench runs in its own worker processes."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from labkit.errors import run_command

if TYPE_CHECKING:
    from labkit.aws.clients import Clients
    from labkit.config import Settings
    from worker.loop import Worker

PROG = "labkit worker"  # one help text and one usage line for both ways in
DESCRIPTION = "run a worker in the foreground (same as `python -m worker`)"
log = logging.getLogger("labkit.worker")


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    """The worker's options (``labkit worker --help``)."""
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    p.add_argument("--state-dir", metavar="DIR", help="where state.json and logs live (default .labkit)")
    p.add_argument("--region", help="AWS region (default: AWS_REGION, else us-east-1)")
    p.add_argument("--queues", default="numbers,images", help="which request queues to serve: numbers, "
                   "images or both (default numbers,images)")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="jobs at once (default 4)")
    p.add_argument("--burst", action="store_true", help="exit once the queues are empty")
    p.add_argument("--poll-wait", type=int, default=10, metavar="S",
                   help="long-poll seconds per receive, 0-20 (default 10; a stop waits at most this long)")
    p.add_argument("--job-timeout", type=float, default=600, metavar="S",
                   help="abandon a job with an error reply after S seconds (default 600)")
    p.add_argument("--log-to-s3", action="store_true", help="also write job log lines to the bucket under logs/")
    p.add_argument("-v", "--verbose", action="store_true", help="log one line per job answered (by default: "
                   "a count every 10 s, and a line per error reply)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m worker [options]``: run a worker until stopped; its exit status (0 after a warm stop, 1 and
    one line for a user's mistake, 3 when it stopped for want of valid credentials)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: _serve(args), args.state_dir)


def _serve(args: argparse.Namespace) -> int:
    from labkit.config import Settings
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    if args.verbose:
        logging.getLogger("labkit").setLevel(logging.DEBUG)
    lanes = tuple(r.strip() for r in args.queues.split(",") if r.strip())
    return run_worker(Settings.load(state_dir=args.state_dir, region=args.region), roles=lanes,
                      concurrency=args.concurrency, burst=args.burst, poll_wait=args.poll_wait,
                      job_timeout=args.job_timeout, log_to_s3=args.log_to_s3)


def run_worker(settings: Settings, clients: Clients | None = None, ready: Callable[[Worker], Any] | None = None,
               **options: Any) -> int:
    """Load the job modules, build a worker (``options``: :class:`worker.loop.Worker`'s), install its signal
    handlers and run it until stopped; its exit status. ``clients`` (whose calls the bench counts) and ``ready``
    (called with the worker once it is built, before it serves) are for the bench."""
    from labkit import kinds
    from worker.loop import Worker
    added = kinds.load_modules(settings.job_modules)
    if added:
        log.info("job modules %s add the kind(s) %s", ", ".join(settings.job_modules), ", ".join(added))
    w = Worker(settings, clients=clients, **options)
    w.install_signal_handlers()
    if ready is not None:
        ready(w)
    code = w.run()
    stuck = w.pool.stuck()
    if stuck or w.forced:
        # Python waits for every pool thread at exit, and an abandoned job's thread may never end.
        log.warning("worker %s exits leaving %d abandoned job(s) behind", w.name, stuck)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
