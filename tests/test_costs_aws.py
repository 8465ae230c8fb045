"""Costs counted against real requests (issue 18, item 8), and notebook 03's proof that an EC2 instance answered
(item 7): on the emulator, with real worker processes; a worker given an instance's id (as the bootstrap gives
it) stands in for the worker on that instance, since no instance boots there."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from labkit import costs, fleet
from labkit.aws.clients import CallCounter, Clients
from labkit.aws.queues import Queue
from labkit.aws.storage import Bucket
from labkit.bench.counts import CountedProcess
from labkit.client import Lab
from labkit.config import HEALTH_PREFIX, Settings, read_state, update_state
from labkit.fleet import coldstart
from labkit.local import running, spawn_worker, wait_serving
from labkit.processes import Child, python_module, settings_env
from labkit.timeline import worker_label
from labkit.waiting import wait_for
from tests.conftest import ROOT
from worker.health import Notifier, WorkerHealth


def test_a_200_kib_message_is_billed_as_4_requests_sent_and_received(settings: Settings) -> None:
    # Given a client whose calls are counted, and a 200 KiB message
    clients = Clients(settings, CallCounter())
    queue = Queue.by_name(clients.sqs, settings.request_queue)
    body = "x" * (200 * 1024)
    # When it is sent and received once
    queue.send(body)
    got = wait_for(lambda: queue.receive(1, wait=1), 30, "the message")
    assert got[0].body == body
    calls, billed = clients.counter.snapshot(), clients.counter.billed()
    # Then each of the two calls is billed as 4 requests (64 KiB chunks), and priced so (before: as 1 each)
    assert calls["sqs.SendMessage"] == 1 and billed["sqs.SendMessage"] == 4
    assert billed["sqs.ReceiveMessage"] == calls["sqs.ReceiveMessage"] + 3
    assert "sqs.GetQueueUrl" not in billed  # small calls are billed as what they are
    requests = sum(billed.get(op, n) for op, n in calls.items() if op.startswith("sqs."))
    assert costs.cost(calls, billed)["sqs_usd"] == pytest.approx(requests * 0.40e-6)


def test_an_idle_worker_polls_as_the_estimate_says(settings: Settings, tmp_path: Path) -> None:
    # Given a real worker (both queues, a 1 s receive wait) whose AWS calls are counted, and nothing to do
    wait = 1
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)  # where it says it serves (its ready file)
    worker = CountedProcess.spawn(["worker", "--queues", "numbers,images", "--poll-wait", str(wait)],
                                  settings_env(settings), tmp_path / "w.log", tmp_path / "counts.json")
    try:
        worker.wait_ready()
        wait_serving([worker.child], settings.state_dir)
        # When it is left idle for a while
        before, t0 = worker.snapshot(), time.monotonic()
        wait_for(lambda: time.monotonic() - t0 >= 8, 30, "eight idle seconds", interval=0.5)
        after, elapsed = worker.snapshot(), time.monotonic() - t0
    finally:
        worker.stop()
    # Then it made only the receives the estimate counts: one long poll per queue per receive wait (an empty
    # one returns when its wait is up), and no other request at all
    made = {op: after.get(op, 0) - before.get(op, 0) for op in after if after.get(op, 0) != before.get(op, 0)}
    predicted = costs.idle_requests_per_hour(wait, heartbeat=False)["sqs.ReceiveMessage"] * elapsed / 3600
    assert set(made) == {"sqs.ReceiveMessage"}, made
    # at most one receive per queue more than the estimate (one in flight at each end); a slow machine only
    # makes fewer, never more
    assert predicted / 3 <= made["sqs.ReceiveMessage"] <= predicted + costs.LANES, (made, predicted)


def test_a_worker_on_ec2_writes_the_heartbeats_the_estimate_counts(settings: Settings) -> None:
    # Given the health of a worker as it runs on an instance (an instance id: heartbeats on), its calls counted
    clients = Clients(settings, CallCounter())
    health = WorkerHealth(["numbers", "images"], 600.0, Notifier({}), Bucket(clients.s3, settings.bucket or ""),
                          "i-0costs0000000001", lambda: {"jobs": 0, "errors": 0})
    # When its watch looks every 15 s (worker/health.py's MAX_LOOK) for an hour of its clock
    start = time.monotonic()
    for k in range(3600 // 15):
        health.alive("numbers", start + k * 15)
        health.alive("images", start + k * 15)
        health.tick(start + k * 15)
    # Then it wrote as many heartbeats as the estimate says an hour holds (and asked once whose account it is in,
    # for S3's ExpectedBucketOwner: STS is free)
    calls = clients.counter.snapshot()
    assert calls.pop("s3.PutObject") == costs.idle_requests_per_hour(20, True)["s3.PutObject"]
    assert set(calls) <= {"sts.GetCallerIdentity"}


def test_labkit_status_shows_the_fleets_public_ipv4_root_volumes_and_alarm_metrics(settings: Settings) -> None:
    from tests.helpers import labkit
    clients = Clients(settings)
    fleet.deploy(clients, fleet.FleetSpec(workers=2))
    try:
        # When `labkit status` runs with two t3.micro workers deployed
        fixed = labkit("status", s=settings)
        fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 2)))
        group = labkit("status", s=settings)
    finally:
        fleet.undeploy(clients)
    # Then it prices each instance's public IPv4 address and root volume, and the workers' own polling, per hour
    assert fixed.returncode == 0, fixed.stderr
    out = fixed.stdout
    assert "2 public IPv4 address(es)" in out and "$0.0100/hour ($7.30/month; $0.005/hour each)" in out
    assert "2 root volume(s), EBS gp3 8 GiB each" in out and "$0.08/GB-month" in out
    assert "the 2 instance worker(s): polling and heartbeats while idle" in out
    assert "720 sqs.ReceiveMessage, 120 s3.PutObject an hour" in out
    assert "total while it runs" in out and f"at list prices of {costs.AS_OF}" in out
    assert "cost     $0.0334/hour on AWS while it runs" in out
    # And a group at zero instances still bills its alarms: each metric they read (2 + 4)
    assert "2 CloudWatch alarm(s) reading 6 metric(s)" in group.stdout and "($0.60/month;" in group.stdout


def test_how_long_notebook_03_waits_follows_the_backend_and_the_fleet():
    serving = {"instances": [{"id": "i-1", "state": "running", "health": "serving"}], "group": None}
    booting = {"instances": [{"id": "i-1", "state": "pending", "health": "booting"}], "group": None}
    at_zero = {"instances": [], "group": {"name": "g", "min": 0, "max": 2, "desired": 0}}
    assert coldstart.answer_wait(False, at_zero)[0] == 60  # the emulator: nothing boots
    assert coldstart.answer_wait(True, serving)[0] == 60
    assert coldstart.answer_wait(True, booting)[0] == 600
    seconds, what = coldstart.answer_wait(True, at_zero)
    assert seconds == 1200 and "15 minutes late" in what and "3 minutes" in what
    assert coldstart.fleet_phase(at_zero) == "group at 0 instances, its alarm not fired yet"


def test_the_answer_names_the_ec2_instance_and_no_local_worker_can_take_it(settings: Settings, tmp_path: Path) -> None:
    clients = Clients(settings)
    # Given one instance (none boots on the emulator: a worker given its id stands in for its worker) and a
    # local worker of this lab recorded by `labkit up`, both serving the same queues
    fleet.deploy(clients, fleet.FleetSpec(workers=1))
    stand_in = None
    try:
        iid = fleet.fleet_status(clients)["instances"][0]["id"]  # type: ignore[index]
        local = spawn_worker(settings, 0, poll_wait=1)
        update_state(settings.state_dir, workers=[local.record()])
        wait_serving([local], settings.state_dir)
        stand_in = Child.spawn(python_module("worker", "--poll-wait", "1"),
                               env=settings_env(settings, extra={"LABKIT_INSTANCE_ID": iid}),
                               log=tmp_path / "ec2.log", cwd=ROOT, detach=False)
        bucket = Bucket(clients.s3, settings.bucket or "")
        wait_for(lambda: bucket.exists(f"{HEALTH_PREFIX}{iid}.json"), 60, "the instance worker's heartbeat")
        said: list[str] = []
        # When notebook 03's proof runs on the AWS path
        with Lab(settings) as lab:
            job = coldstart.ask_fleet(lab, [1, 2, 3], on_aws=True, say=said.append)
        # Then the local worker was stopped first and the state file no longer lists it
        assert not running([local.record()]) and read_state(settings.state_dir)["workers"] == []
        assert said[0].startswith(f"stopped this lab's local worker(s) (pid {local.pid})")
        # And the answer names the instance (before: the raw worker id, host:pid, whoever answered)
        assert job.reply is not None and job.reply.worker.endswith(f":{stand_in.pid}")
        assert f"answered by EC2 instance {iid} (worker {stand_in.pid})" in said
        assert not any("NOT by an EC2 instance" in line for line in said)
    finally:
        if stand_in is not None:
            stand_in.stop(30)
        fleet.undeploy(clients)
    # And a worker that is no instance's is said to be so
    assert fleet.status.answered_by(clients, f"elsewhere:{stand_in.pid}") == (f"worker {stand_in.pid} on elsewhere",
                                                                               False)
    assert worker_label("ip-172-31-16-5.ec2.internal:812") == "worker 812 on EC2 host ip-172-31-16-5"
