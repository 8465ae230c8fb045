"""``labkit bench``: throughput, latency and big jobs, measured as ratios against a floor taken in the
same run, on the same endpoint: the embedded emulator, any SQS/S3 service (``endpoint=URL``), or real AWS
(``aws=True``).

Speed here is API calls and waiting, so every figure comes with its reference from the same run:

* ``floor``: a request queue configured like labkit's, driven by the fewest possible calls and no labkit
  code in the message path (only labkit's thin transport wrappers: batched send, long-poll receive,
  batched reply, batched delete, batched client receive and delete, the same window);
* ``labkit``: small number jobs through the client's windowed, batched submission (what
  :meth:`Lab.numbers_many` runs) and real worker processes; floor and labkit alternate in rounds, and
  the ratio is the median of the rounds' ratios (:meth:`Measurements.paired`);
* ``floor_round_trip`` / ``round_trip``: one job at a time through each (p50, p95), in alternating rounds;
* ``original`` / ``original_round_trip``: the original lab's queue settings (1 s delivery delay, 1 s
  polls, 1 s visibility) and call pattern (a queue lookup and a send per job, one send per reply),
  reimplemented for reference;
* ``big`` / ``big_direct``: a random list of 10 million float64 through the claim check, against the
  same bytes uploaded, summarised with numpy and downloaded in one process; the worker's peak RSS;
* ``images`` / ``images_inprocess``: 1080p images through grayscale + thumbnail, against the same
  Pillow work in this process (as many processes as workers);
* the class scenario (:func:`run_class`, ``labkit bench --clients 40``): one heavy client's thousands of jobs
  while the other clients send a few each, one at a time, against each group alone (:mod:`.fairness`).

API calls are counted with botocore's ``before-call`` event in every process (client, workers, servers):
workers report their counts when sent SIGUSR1. :func:`run_bench` returns a :class:`Measurements` (plain data
via ``Measurements.to_dict()`` and ``Measurements.rows()``); :func:`sweep` returns rows of throughput and latency
against the window and the worker count, for plots.

The modules, one concept each::

    report     Result, Target, Measurements (prices: labkit.costs)
    table      format_table, format_sweep        counts   call counts across processes (SIGUSR1), /proc
    rig        Rig: endpoint, queues, children, the call/CPU meter (Calls)
    drive      a window of jobs through a send and a receive function
    floor      the floor: client and server      original the original lab's pattern: client and server
    scenarios  labkit, round trip, big numbers, images    answers  the jobs and independent answers
    run        Plan, run_bench, run_class, sweep child    ``python -m labkit.bench worker|serve|heavy`` (internal)
    fairness   the class scenario (``--clients``: one heavy client, the others light)
    class_report  its table and figure          figures  scenarios_figure, sweep_figure (04_benchmark's)
"""

from labkit.bench.answers import number_lists, plain_stats
from labkit.bench.class_report import class_figure, format_class_table
from labkit.bench.counts import CountedProcess, cpu_seconds
from labkit.bench.fairness import ClassPlan, ClassRun
from labkit.bench.figures import scenarios_figure, sweep_figure
from labkit.bench.floor import floor
from labkit.bench.original import ORIGINAL_ATTRIBUTES, original, original_reply, original_round_trip
from labkit.bench.report import Measurements, Result, Target, merge
from labkit.bench.rig import Calls, Rig
from labkit.bench.scenarios import (
    IMAGE_OPS,
    big_numbers,
    images,
    labkit_throughput,
    photo,
    pillow_work,
    round_trip,
    throughput,
)
from labkit.bench.suite import SCENARIOS, Plan, run_bench, run_class, sweep
from labkit.bench.table import format_sweep, format_table
from labkit.costs import PRICES, price

__all__ = [
    "IMAGE_OPS", "ORIGINAL_ATTRIBUTES", "PRICES", "SCENARIOS", "Calls", "ClassPlan", "ClassRun", "CountedProcess",
    "Plan", "Measurements", "Result", "Rig", "Target", "big_numbers", "class_figure", "cpu_seconds", "floor",
    "format_class_table", "format_sweep", "format_table", "images", "labkit_throughput", "merge", "number_lists",
    "original", "original_reply", "original_round_trip", "photo", "pillow_work", "plain_stats", "price",
    "round_trip", "run_bench", "run_class", "scenarios_figure", "sweep", "sweep_figure", "throughput",
]
