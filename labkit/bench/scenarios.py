"""The scenarios that run labkit itself: small number jobs (:func:`labkit_throughput`, alternating with
the floor in :func:`throughput`), one job at a time (:func:`round_trip`), a big list through the claim
check (:func:`big_numbers`) and 1080p images (:func:`images`), each against its reference."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import io
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from labkit.aws.clients import Clients
from labkit.aws.storage import Bucket
from labkit.bench.answers import close, job_ok, matches, number_lists, plain_stats
from labkit.bench.counts import CountedProcess
from labkit.bench.floor import FloorAsker, floor, floor_servers
from labkit.bench.report import Result, add, merge
from labkit.bench.rig import Rig, settle
from labkit.errors import LabkitError
from labkit.flow import default_window

IMAGE_OPS = [{"op": "grayscale"}, {"op": "thumbnail", "size": 256}]


def throughput(rig: Rig, jobs: int, window: int | None, workers: int = 1, concurrency: int = 4,
               rounds: int = 2) -> tuple[Result, Result]:
    """The floor and labkit on ``jobs`` jobs each, in alternating rounds (floor, labkit, labkit, floor,
    ...), so that drift in the emulator's speed or the machine's load hits both alike."""
    floor_window = window or default_window(rig.endpoint)
    servers = floor_servers(rig, workers)
    procs = rig.workers(workers, "numbers", concurrency)
    sizes = [jobs // rounds + (r < jobs % rounds) for r in range(rounds)]
    floors: list[Result] = []
    labs: list[Result] = []
    try:
        for r, size in enumerate(sizes):
            order = ("floor", "labkit") if r % 2 == 0 else ("labkit", "floor")
            for name in order:
                if name == "floor":
                    floors.append(floor(rig, size, floor_window, workers, servers, seed=10 + r))
                else:
                    labs.append(labkit_throughput(rig, size, window, workers, concurrency, procs, seed=20 + r))
    finally:
        rig.stop([*servers, *procs])
    return merge(floors), merge(labs)


def labkit_throughput(rig: Rig, jobs: int, window: int | None, workers: int = 1, concurrency: int = 4,
                      procs: Sequence[CountedProcess] | None = None, seed: int = 2) -> Result:
    """``jobs`` small number jobs through the client's batched, windowed submission (what
    :meth:`Lab.numbers_many` does; the jobs are kept for their latencies) and real worker processes."""
    from labkit.client import Lab
    lists = number_lists(jobs, seed=seed)
    own = procs is None
    procs = rig.workers(workers, "numbers", concurrency) if procs is None else procs
    try:
        with Lab(rig.settings) as lab:
            lab.numbers([1, 2, 3]).result(timeout=60)  # warm: reply queue made, queue looked up, worker awake
            lab.replies.flush()  # the warm-up's reply deleted now, not inside the count
            settle()
            calls = rig.meter(procs, lab.clients)
            calls.start()
            t0 = time.perf_counter()
            jobs_list = lab.submit_many("numbers", [{"numbers": v} for v in lists], window=window, progress=False)
            seconds = time.perf_counter() - t0
            lab.replies.flush()  # the last replies' deletes, held for company (labkit.replies), counted too
            counted = calls.stop()
            used_window = lab.last_window
    finally:
        if own:
            rig.stop(procs)
    correct = sum(job_ok(j, v) for j, v in zip(jobs_list, lists, strict=True))
    latencies = [j.latency for j in jobs_list if j.latency is not None]
    return Result("labkit", jobs, seconds, correct, counted, latencies,
                  {"window": used_window, "window_mode": "fixed" if window else "adaptive", "workers": len(procs),
                   "concurrency": concurrency}, calls.cpu)


def round_trips(rig: Rig, jobs: int = 50, rounds: int = 5) -> tuple[Result, Result]:
    """One job at a time through the floor and through labkit, ``jobs`` each, in alternating rounds (as
    :func:`throughput` does), with one server and one worker process."""
    from labkit.client import Lab
    servers = floor_servers(rig, 1)
    procs = rig.workers(1, "numbers")
    rounds = max(1, min(rounds, jobs))
    sizes = [jobs // rounds + (r < jobs % rounds) for r in range(rounds)]
    floors: list[Result] = []
    labs: list[Result] = []
    try:
        with Lab(rig.settings) as lab:
            ask_floor = FloorAsker(rig)
            lab.numbers([1]).result(timeout=60)  # warm: reply queues made, connections open
            lab.replies.flush()  # the warm-up's reply deleted now, not inside the count
            ask_floor([1])
            settle()
            def ask_lab(values: list[int]) -> Any:
                return lab.numbers(values).result(timeout=60)

            for r, size in enumerate(sizes):
                lists = number_lists(size, seed=30 + r)
                for name in ("floor", "labkit") if r % 2 == 0 else ("labkit", "floor"):
                    if name == "floor":
                        floors.append(one_at_a_time(rig, "floor_round_trip", ask_floor, lists, servers,
                                                    ask_floor.clients))
                    else:
                        labs.append(one_at_a_time(rig, "round_trip", ask_lab, lists, procs, lab.clients,
                                                  lab.replies.flush))
    finally:
        rig.stop([*servers, *procs])
    return merge(floors), merge(labs)


def round_trip(rig: Rig, jobs: int = 50, procs: Sequence[CountedProcess] | None = None, seed: int = 3) -> Result:
    """One number job at a time through labkit: submit, wait for the answer, next."""
    from labkit.client import Lab
    own = procs is None
    procs = rig.workers(1, "numbers") if procs is None else procs
    try:
        with Lab(rig.settings) as lab:
            lab.numbers([1]).result(timeout=60)
            lab.replies.flush()  # the warm-up's reply deleted now, not inside the count
            settle()
            return one_at_a_time(rig, "round_trip", lambda values: lab.numbers(values).result(timeout=60),
                                 number_lists(jobs, seed=seed), procs, lab.clients, lab.replies.flush)
    finally:
        if own:
            rig.stop(procs)


def one_at_a_time(rig: Rig, name: str, ask: Callable[[list[int]], Any], lists: list[list[int]],
                  procs: Sequence[CountedProcess], clients: Clients, flush: Callable[[], None] | None = None) -> Result:
    """``ask(values)`` for each list in turn, timed and metered (the processes' and the clients' calls; ``flush``
    makes the calls a client still holds before the count stops)."""
    calls = rig.meter(procs, clients)
    calls.start()
    latencies, correct = [], 0
    t0 = time.perf_counter()
    for values in lists:
        t = time.perf_counter()
        result = ask(values)
        latencies.append(time.perf_counter() - t)
        correct += matches(result, plain_stats(values))
    seconds = time.perf_counter() - t0
    if flush is not None:
        flush()
    counted = calls.stop()
    return Result(name, len(lists), seconds, correct, counted, latencies, cpu=calls.cpu)


# -- 10 million numbers ----------------------------------------------------------------------------------

def big_numbers(rig: Rig, n: int = 10_000_000, repeat: int = 2) -> tuple[Result, Result]:
    """A random list of ``n`` float64 through the claim check and a fresh worker, against the same bytes
    uploaded, summarised and downloaded directly; best of ``repeat``. Also the worker's peak RSS."""
    from labkit.client import Lab
    [proc] = rig.workers(1, "numbers", 1)
    bucket = Bucket(rig.clients.s3, rig.settings.bucket or "")
    try:
        with Lab(rig.settings) as lab:
            lab.numbers([1, 2, 3]).result(timeout=60)
            lab.replies.flush()  # the warm-up's reply deleted now, not inside the count
            settle()
            baseline = proc.rss_kb().get("VmRSS", 0)
            values = lab.random_numbers(n, integers=False, seed=6)
            reference = {"count": n, "min": float(values.min()), "max": float(values.max()),
                         "mean": float(values.mean()), "median": float(np.median(values))}
            e2e, direct, correct = [], [], 0
            counted: dict[str, int] = {}
            cpu: dict[str, float] = {}
            for r in range(repeat):
                direct.append(_direct(bucket, f"payloads/bench-direct-{r}.bin", values, reference))
                calls = rig.meter([proc], lab.clients)
                calls.start()
                t = time.perf_counter()
                result = lab.numbers(values).result(timeout=600)
                e2e.append(time.perf_counter() - t)
                lab.replies.flush()
                counted = add(counted, calls.stop())
                cpu = add(cpu, calls.cpu)
                correct += close(result, reference)
            peak = proc.rss_kb().get("VmHWM", 0)
    finally:
        rig.stop([proc])
    payload = values.nbytes
    extra = {"numbers": n, "payload_mib": payload / 2**20, "payload_format": "npy float64",
             "baseline_rss_mib": baseline / 1024, "peak_rss_mib": peak / 1024,
             "peak_rss_vs_payload": peak * 1024 / payload, "growth_vs_payload": (peak - baseline) * 1024 / payload,
             "all_seconds": [round(x, 3) for x in e2e]}
    big = Result("big", 1, min(e2e), int(correct == repeat), {k: v // repeat for k, v in counted.items()}, [], extra,
                 {k: v / repeat for k, v in cpu.items()})
    ref = Result("big_direct", 1, min(direct), 1, {}, [], {"all_seconds": [round(x, 3) for x in direct]})
    return big, ref


def _direct(bucket: Bucket, key: str, values: np.ndarray, reference: dict[str, Any]) -> float:
    """Seconds to upload ``values``, summarise them with numpy and download them again, in this process."""
    t = time.perf_counter()
    bucket.put(key, values.tobytes())
    stats = {"min": values.min(), "max": values.max(), "mean": values.mean(), "median": np.median(values)}
    back = np.frombuffer(bucket.get(key), dtype=np.float64)
    seconds = time.perf_counter() - t
    if back.size != reference["count"] or stats["min"] != reference["min"]:
        raise LabkitError("big_direct: the downloaded bytes differ from the uploaded ones")
    return seconds


# -- images ----------------------------------------------------------------------------------------------

def photo(seed: int, width: int = 1920, height: int = 1080) -> bytes:
    """A photo-like JPEG: smooth gradients with sensor-like noise (about 1 MB at 1080p)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 128 / (width + height) + 20 * (seed % 5)], -1)
    base += rng.normal(0, 18, base.shape).astype(np.float32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB").save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pillow_work(data: bytes) -> tuple[int, int]:
    """The images scenario's work with Pillow alone: decode, grayscale, thumbnail 256, PNG."""
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        out = im.convert("L")
    out.thumbnail((256, 256))
    buf = io.BytesIO()
    out.save(buf, "PNG")
    return out.size


def images(rig: Rig, count: int = 50, workers: int = 1, concurrency: int = 4,
           window: int | None = None) -> tuple[Result, Result]:
    """``count`` 1080p images through grayscale + thumbnail on ``workers`` worker processes, against the
    same Pillow work in ``workers`` local processes. Uploads happen before the clock starts."""
    from labkit.client import Lab
    from labkit.jobs.images import job_payload
    sources = [photo(s) for s in range(min(count, 4))]
    data = [sources[i % len(sources)] for i in range(count)]
    # The in-process reference runs before and after labkit's run (its mean is kept), so that drift in
    # the machine's load hits both alike.
    local: list[float] = []
    procs = rig.workers(workers, "images", concurrency)
    sizes = _pillow_timed(data, workers, local)
    try:
        with Lab(rig.settings) as lab:
            t = time.perf_counter()
            keys = [lab.upload_image(d, name=f"bench-{rig.tag}/{i:04d}.jpg") for i, d in enumerate(data)]
            upload = time.perf_counter() - t
            lab.image(keys[0], IMAGE_OPS, output=f"bench-{rig.tag}/warm.png").result(timeout=60)
            lab.replies.flush()  # the warm-up's reply deleted now, not inside the count
            settle()
            payloads = [job_payload(lab.bucket.name, k, IMAGE_OPS) for k in keys]
            calls = rig.meter(procs, lab.clients)
            calls.start()
            t = time.perf_counter()
            jobs = lab.submit_many("image", payloads, window=window, progress=False)
            seconds = time.perf_counter() - t
            lab.replies.flush()
            counted = calls.stop()
            sizes += _pillow_timed(data, workers, local)
            correct = sum(_image_ok(job) for job in jobs)
    finally:
        rig.stop(procs)
    latencies = [j.latency for j in jobs if j.latency is not None]
    ref = Result("images_inprocess", count, statistics.mean(local), sum(s == (256, 144) for s in sizes) // 2,
                 {}, [], {"processes": workers, "all_seconds": [round(x, 3) for x in local],
                          "labkit_image_code_per_s": round(count / _own_code_seconds(data), 1)})
    return (Result("images", count, seconds, correct, counted, latencies,
                   {"workers": workers, "concurrency": concurrency, "upload_s": upload,
                    "image_bytes": sum(map(len, data)) // count}, calls.cpu), ref)


def _image_ok(job: Any) -> bool:
    with contextlib.suppress(LabkitError):
        res = job.result(timeout=0)
        return (res["width"], res["height"], res["format"]) == (256, 144, "png")
    return False


def _own_code_seconds(data: list[bytes]) -> float:
    """For attribution: seconds of labkit's own image code (``labkit.jobs.images.process``, no AWS) on
    every image, in this process."""
    from labkit.jobs.images import process
    t = time.perf_counter()
    for d in data:
        process(d, IMAGE_OPS, "png")
    return time.perf_counter() - t


def _pillow_timed(data: list[bytes], processes: int, times: list[float]) -> list[tuple[int, int]]:
    """:func:`pillow_work` on every image with ``processes`` processes; appends the seconds to ``times``."""
    if processes > 1:
        import multiprocessing
        with cf.ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(pillow_work, data[:processes]))  # start the processes first
            t = time.perf_counter()
            sizes = list(pool.map(pillow_work, data))
    else:
        pillow_work(data[0])
        t = time.perf_counter()
        sizes = [pillow_work(d) for d in data]
    times.append(time.perf_counter() - t)
    return sizes

