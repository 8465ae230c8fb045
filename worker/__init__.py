"""The labkit worker: ``python -m worker`` (the same as ``labkit worker``; its command line is :mod:`worker.cli`).
:func:`run_worker` runs one in this process."""

from worker.cli import run_worker

__all__ = ["run_worker"]
