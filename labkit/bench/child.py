"""The bench's child processes, ``python -m labkit.bench worker|serve|heavy ... --counts FILE`` (internal):
a real labkit worker, a floor/original server, or the class scenario's heavy client, each writing its API call
counts to FILE when sent SIGUSR1 (see :mod:`labkit.bench.counts`)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.bench.counts import CountsFile
from labkit.bench.floor import serve_floor
from labkit.bench.original import serve_original
from labkit.config import Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m labkit.bench", description="bench child processes (internal)")
    p.add_argument("role", choices=["worker", "serve", "heavy"])
    p.add_argument("pattern", nargs="?", choices=["floor", "original"])
    p.add_argument("--counts", required=True, type=Path)
    p.add_argument("--queues", default="numbers")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--poll-wait", type=int, default=1)
    p.add_argument("--queue")
    p.add_argument("--reply")
    p.add_argument("--jobs", type=int, default=0)
    p.add_argument("--window", type=int)
    p.add_argument("--go", type=Path)
    p.add_argument("--result", type=Path)
    p.add_argument("--loop", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one child until SIGTERM; its exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("botocore").setLevel(logging.WARNING)
    settings = Settings.load()
    if args.role == "worker":
        return _worker(settings, args)
    if args.role == "heavy":
        return _heavy(settings, args)
    return _serve(settings, args)


def _heavy(settings: Settings, args: argparse.Namespace) -> int:
    """The class scenario's heavy client (:func:`labkit.bench.fairness.heavy_client`), then idle until SIGTERM, so
    that the bench can still ask for its API calls."""
    from labkit.bench.fairness import heavy_client
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    counts = CountsFile(args.counts, lambda: {})
    counts.install()
    heavy_client(settings, args.jobs, args.go, args.result, args.window, counts, stop, args.loop)
    return 0


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    """The real worker (what ``python -m worker`` runs), plus a report of its API calls."""
    from worker import run_worker
    roles = tuple(r.strip() for r in args.queues.split(",") if r.strip())
    clients = Clients(settings)  # the worker's: the counts are its calls
    counts = CountsFile(args.counts, clients.counter.snapshot)
    counts.install()
    # ready once built: the bench warms every worker up with a job before it counts
    code = run_worker(settings, clients, lambda _: counts.write(), roles=roles, concurrency=args.concurrency,
                      poll_wait=args.poll_wait)
    counts.write()
    return code


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    """A floor or original server: its queues looked up, then ready, then serving until SIGTERM/SIGINT."""
    clients = Clients(settings)
    counts = CountsFile(args.counts, clients.counter.snapshot)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    counts.install()
    requests = Queue.by_name(clients.sqs, args.queue)  # connected before reporting ready
    replies = Queue.by_name(clients.sqs, args.reply) if args.pattern == "original" else None
    counts.write()
    if replies is None:
        serve_floor(requests, stop, args.poll_wait)
    else:
        serve_original(requests, replies, stop)
    counts.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
