"""The call counter, Lab.stats(), the client's window and the benchmark's correctness on a small run
(real emulator, real worker processes). Nothing here asserts a speed: the benchmark prints those."""

from __future__ import annotations

import json
import math
import threading

import pytest
from botocore.exceptions import ClientError

from labkit import bench
from labkit.aws.clients import CallCounter, Clients
from labkit.client import Lab, Window
from labkit.config import Settings
from labkit.endpoints import Endpoint
from labkit.errors import InvalidInput
from labkit.flow import adaptive_window
from tests.helpers import labkit

# -- the call counter -------------------------------------------------------------------------------


def test_counter_counts_each_call_by_operation(settings):
    # Given a fresh set of clients on the emulator
    clients = Clients(settings)
    sqs = clients.sqs
    # When a few calls are made, one of them failing
    url = sqs.get_queue_url(QueueName=settings.request_queue)["QueueUrl"]
    for _ in range(3):
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])
    with pytest.raises(ClientError):
        sqs.get_queue_url(QueueName="no-such-queue-here")
    clients.s3.list_objects_v2(Bucket=settings.bucket)
    # Then each call counts once, under service.Operation, failures included (no retry for that error); the
    # first S3 call asked STS for the account once (ExpectedBucketOwner), and that call counts too
    assert clients.counter.snapshot() == {"sqs.GetQueueUrl": 2, "sqs.GetQueueAttributes": 3, "s3.ListObjectsV2": 1,
                                          "sts.GetCallerIdentity": 1}
    assert clients.counter.total == 7
    clients.counter.reset()
    assert clients.counter.snapshot() == {} and clients.counter.total == 0


def test_counter_is_exact_under_threads(settings):
    clients = Clients(settings)
    url = clients.sqs.get_queue_url(QueueName=settings.request_queue)["QueueUrl"]
    clients.counter.reset()

    def calls() -> None:
        for _ in range(15):
            clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["VisibilityTimeout"])

    threads = [threading.Thread(target=calls) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert clients.counter.snapshot() == {"sqs.GetQueueAttributes": 60}


def test_one_counter_can_watch_several_clients(settings):
    counter = CallCounter()
    a, b = Clients(settings, counter), Clients(settings, counter)
    a.sqs.list_queues(QueueNamePrefix="x")
    b.sqs.list_queues(QueueNamePrefix="y")
    assert counter.snapshot() == {"sqs.ListQueues": 2}


def test_lab_stats_add_up(lab, start_worker):
    # Given a worker and 25 jobs sent in batches with a window of 10
    start_worker()
    results = lab.numbers_many([[i, i + 1] for i in range(25)], window=10, progress=False)
    assert [r["min"] for r in results] == list(range(25))
    # Then stats() reports what this client did: sends in batches of at most 10, calls per job
    stats = lab.stats()
    calls = stats["calls"]
    assert stats["jobs_sent"] == 25
    assert calls["sqs.SendMessageBatch"] == 3  # 10 + 10 + 5: the window never allows more than 10 at once
    assert "sqs.SendMessage" not in calls  # no single sends
    assert stats["api_calls"] == sum(calls.values())
    assert stats["calls_per_job"] == pytest.approx(stats["api_calls"] / 25)
    # Every received batch of replies is deleted in one call.
    assert calls["sqs.DeleteMessageBatch"] <= calls["sqs.ReceiveMessage"]
    assert lab.last_window == 10


# -- the window -------------------------------------------------------------------------------------


def test_fixed_window_never_moves():
    w = Window(20)
    for latency in [0.01] * 100 + [5.0] * 100:
        w.observe(latency)
    assert w.size == 20


def simulate(w: Window, capacity: float, base: float, epochs: int) -> list[int]:
    """Feed ``w`` the answers of a pipeline that takes ``base`` seconds per job when idle and answers at
    most ``capacity`` jobs/s (Little's law: the rate is min(window / base, capacity)); the sizes it chose."""
    clock, sizes = 0.0, []
    for _ in range(epochs):
        rate = min(w.size / base, capacity)
        for _ in range(w.size):
            clock += 1 / rate
            w.observe(w.size / rate, now=clock)
        sizes.append(w.size)
    return sizes


def test_adaptive_window_widens_while_wider_pays_and_narrows_when_jobs_queue():
    # Given a pipeline bound by latency, not capacity (a remote endpoint: each answer a network round trip)
    w = Window(20, low=10, high=1000)
    # Then every widening raises the rate, and the window grows to its bound
    assert simulate(w, capacity=1e9, base=0.05, epochs=40)[-1] == 1000
    # And when answers then come 10x slower than the fastest (jobs queueing), it narrows to its floor
    for _ in range(40):
        for _ in range(w.size):
            w.observe(10 * w.fastest)
    assert w.size == 10


def test_adaptive_window_steps_back_when_widening_buys_no_throughput():
    # Given a pipeline already at capacity with 20 in flight (workers and endpoint sharing this machine's cores)
    w = Window(20, low=10, high=1000)
    sizes = simulate(w, capacity=1500, base=0.004, epochs=60)
    # Then it tries wider, sees no more answers per second, and comes back: never past one step
    assert set(sizes) <= {20, 30} and sizes[-1] in (20, 30)
    assert sizes.count(20) > sizes.count(30)  # after a failed try it waits before the next


def test_adaptive_window_holds_between_two_and_four_times_the_fastest():
    w = Window(30, low=10, high=100)
    w.observe(0.01)
    for _ in range(200):
        w.observe(0.03)
    assert w.size == 30


def test_window_must_be_positive():
    with pytest.raises(InvalidInput):
        Window(0)


def test_the_window_is_chosen_by_what_answers_at_the_endpoint(lab, fauxqs):
    # Given a Lab on the embedded emulator (moto): its queues slow down as they fill
    assert lab.endpoint.kind == "moto"
    flow = adaptive_window(lab.endpoint)
    # Then its window is narrow and fixed
    assert (flow.size, flow.low, flow.high) == (10, 10, 10) and lab.default_window() == 10
    # And on another service on this machine (fauxqs) it starts as narrow but adapts
    with Lab(Settings.load(env={}, endpoint_url=fauxqs, state_dir=lab.settings.state_dir)) as other:
        assert other.endpoint.kind == "fauxqs"
        flow = adaptive_window(other.endpoint)
        assert (flow.size, flow.low, flow.high) == (20, 10, 1000)
    # And on AWS it starts wide (each answer is a network round trip away)
    flow = adaptive_window(Endpoint(None, "aws"))
    assert (flow.size, flow.low, flow.high) == (200, 10, 1000)


# -- prices -----------------------------------------------------------------------------------------


def test_price_of_a_million_jobs():
    # 0.6 SQS requests per job: 600,000 requests for a million jobs at $0.40 a million.
    cost = bench.price({"sqs.SendMessageBatch": 100, "sqs.ReceiveMessage": 200, "sqs.DeleteMessageBatch": 300}, 1000)
    assert cost["sqs_usd"] == pytest.approx(0.24)
    assert cost["s3_usd"] == 0
    # S3: PUT-class and GET-class requests at their own prices; DELETE is free.
    cost = bench.price({"s3.PutObject": 10, "s3.GetObject": 10, "s3.HeadObject": 10, "s3.DeleteObject": 10}, 10)
    assert cost["s3_usd"] == pytest.approx(1e6 * (0.005 + 2 * 0.0004) / 1000)
    assert cost["total_usd"] == pytest.approx(cost["sqs_usd"] + cost["s3_usd"])


def test_report_targets_and_ratios_from_results():
    report = bench.Measurements("test", {"jobs": 10})
    report.results["floor"] = bench.Result("floor", 100, 1.0, 100, cpu={"workers": 0.02})
    report.results["labkit"] = bench.Result("labkit", 100, 1.25, 100, {"sqs.SendMessageBatch": 60},
                                            cpu={"workers": 0.03})
    targets = {t.name: t for t in report.targets()}
    # Unpaired runs: the ratio of the totals
    assert targets["labkit throughput / floor"].value == pytest.approx(0.8)
    assert targets["labkit throughput / floor"].met is False  # the goal is 0.9
    assert targets["worker CPU per job / floor's"].value == pytest.approx(1.5)
    assert targets["worker CPU per job / floor's"].met is False  # the goal is at most 1.3
    assert targets["API calls per job (labkit)"].value == pytest.approx(0.6)
    assert targets["labkit throughput / original"].met is None  # not measured
    assert "labkit" in bench.format_table(report)


def test_paired_rounds_give_the_median_of_their_ratios():
    # Given floor and labkit in five alternating rounds, one round disturbed (labkit's 2nd ran while the
    # machine was busy), and round trips in the same way
    report = bench.Measurements("test", {})
    report.results["floor"] = bench.Result("floor", 500, 1.0, 500, extra={"round_rates": [100, 100, 50, 100, 100]})
    report.results["labkit"] = bench.Result("labkit", 500, 1.0, 500, extra={"round_rates": [95, 20, 48, 90, 99]})
    report.results["floor_round_trip"] = bench.Result("floor_round_trip", 4, 1.0, 4,
                                                      extra={"round_p50_ms": [5.0, 6.0]})
    report.results["round_trip"] = bench.Result("round_trip", 4, 1.0, 4, extra={"round_p50_ms": [6.0, 6.6]})
    # Then each ratio is taken within its pair, and the median of the pairs is the figure
    assert report.paired("labkit", "floor") == pytest.approx([0.95, 0.2, 0.96, 0.9, 0.99])
    ratios = report.ratios()
    assert ratios["labkit_vs_floor"] == pytest.approx(0.95)
    assert ratios["round_trip_vs_floor"] == pytest.approx(1.15)
    table = bench.format_table(report)
    assert "throughput labkit / floor by round: median 0.95" in table and "over 5 pairs" in table


# -- the benchmark, small -----------------------------------------------------------------------------


@pytest.mark.slow
def test_small_benchmark_answers_every_job_and_counts_plausibly(emulator, settings):
    # Given the emulator (the benchmark makes its own queues and bucket there)
    plan = bench.Plan.quick(jobs=40, round_trips=3, original_jobs=6, original_round_trips=1, big=50_000,
                            images=2, rounds=2)
    # When the whole benchmark runs on it
    report = bench.run_bench(plan, settings=settings)
    r = report.results
    # Then every scenario ran and every job got the right answer
    assert set(r) == {"floor", "labkit", "floor_round_trip", "round_trip", "original", "original_round_trip", "big",
                      "big_direct", "images", "images_inprocess"}
    for res in r.values():
        assert res.correct == res.jobs, f"{res.name}: {res.correct} of {res.jobs} right"
        assert res.seconds > 0
    # Throughput: 40 jobs in two rounds of 20 with a window of 20 -> 2 request batches per round
    for name in ("floor", "labkit"):
        calls = r[name].calls
        assert r[name].jobs == 40 and len(r[name].latencies) == 40
        assert r[name].api_calls == sum(calls.values())
        # client sends (4) + worker replies (at least one batch per 10 answers)
        assert 8 <= calls["sqs.SendMessageBatch"] <= 4 + 40
        assert "sqs.SendMessage" not in calls and "sqs.GetQueueUrl" not in calls
        assert calls["sqs.DeleteMessageBatch"] <= calls["sqs.ReceiveMessage"]
    assert r["labkit"].extra["rounds"] == 2
    # Round trip, one job at a time, through labkit and through the floor: exactly one send, one reply, and two
    # deletes per job, in paired rounds
    for name in ("round_trip", "floor_round_trip"):
        rt = r[name].calls
        assert rt["sqs.SendMessage"] == 3 and rt["sqs.SendMessageBatch"] == 3 and rt["sqs.DeleteMessageBatch"] == 6
    assert len(report.paired("round_trip", "floor_round_trip", "round_p50_ms")) == 3
    # The original pattern: a lookup and a send per job, a send per reply
    orig = r["original"].calls
    assert orig["sqs.SendMessage"] == 2 * 6
    assert orig["sqs.GetQueueUrl"] >= 6
    assert "sqs.SendMessageBatch" not in orig
    # The big list went through S3 as one object each way (put by the client, got by the worker)
    assert r["big"].calls["s3.PutObject"] == 1 and r["big"].calls["s3.GetObject"] == 1
    assert r["big"].extra["peak_rss_mib"] >= r["big"].extra["baseline_rss_mib"] > 0
    # Images: one get and one put per image
    assert r["images"].calls["s3.GetObject"] == 2 and r["images"].calls["s3.PutObject"] == 2
    # The report serialises, and everything the run made is gone
    data = json.loads(json.dumps(report.to_dict()))
    assert len(data["targets"]) == 9 and data["prices"]["as_of"]
    assert data["results"]["labkit"]["calls_per_job"] == pytest.approx(r["labkit"].calls_per_job, abs=1e-3)
    sqs = Clients(settings).sqs
    assert [u for u in sqs.list_queues(QueueNamePrefix="bench-").get("QueueUrls", [])] == []
    assert not [b for b in Clients(settings).s3.list_buckets()["Buckets"] if b["Name"].startswith("labkit-bench-")]


@pytest.mark.slow
def test_cli_bench_json(emulator, settings):
    # Given this test's queues on the emulator
    # When `labkit bench --quick --json` runs two scenarios
    out = labkit("bench", "--quick", "--only", "floor,labkit", "--jobs", "20", "--json", s=settings, timeout=300)
    # Then stdout is one JSON document with both results, right and counted; progress went to stderr
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data["results"]) == {"floor", "labkit"}
    for res in data["results"].values():
        assert res["correct"] == res["jobs"] == 20
        assert res["api_calls"] > 0 and math.isfinite(res["jobs_per_s"])
    assert "bench: floor and labkit" in out.stderr


def test_cli_bench_refuses_unknown_scenario(emulator, settings):
    out = labkit("bench", "--only", "warp", s=settings)
    assert out.returncode == 1
    assert "unknown scenario" in out.stderr and "Traceback" not in out.stderr
