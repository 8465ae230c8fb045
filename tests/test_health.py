"""A dead worker is seen: the real worker talks to systemd's watchdog (sd_notify over a real socket) and writes
its heartbeat to the bucket; a lane whose loop stops turning stops the pings; ``labkit status`` and
``labkit deploy`` read the heartbeats and name the instances that never became healthy."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from labkit import fleet
from labkit.aws.clients import Clients
from labkit.aws.storage import Bucket
from labkit.config import HEALTH_PREFIX, Settings
from labkit.fleet.health import BOOT_BUDGET, STALE_AFTER, classify
from labkit.processes import Child, python_module, settings_env
from labkit.waiting import wait_for
from tests.conftest import ROOT
from worker.health import Notifier, WorkerHealth


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, in the abstract namespace ("@name", as systemd may pass)."""
    name = f"labkit-test-notify-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(60)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def messages(sock: socket.socket, until: str) -> list[dict[str, str]]:
    """Datagrams received until one holds ``until`` (``KEY=value``), each as its fields."""
    got: list[dict[str, str]] = []
    while not got or until not in [f"{k}={v}" for k, v in got[-1].items()]:
        got.append(dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines()))
    return got


def heartbeat(bucket: Bucket, instance: str) -> dict:
    return json.loads(bucket.get(f"{HEALTH_PREFIX}{instance}.json"))


def test_the_worker_tells_systemd_it_serves_pings_the_watchdog_and_writes_its_heartbeat(
        settings: Settings, notify_socket: tuple[socket.socket, str], tmp_path: Path) -> None:
    sock, address = notify_socket
    instance = f"i-{uuid.uuid4().hex[:17]}"
    bucket = Bucket(Clients(settings).s3, settings.bucket or "")
    # Given a worker started as systemd starts it: a notification socket, a watchdog of 1.5 s, and (as the
    # bootstrap writes it) its instance's id
    env = settings_env(settings, extra={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1500000",
                                        "LABKIT_INSTANCE_ID": instance})
    worker = Child.spawn(python_module("worker", "--poll-wait", "1"), env=env, log=tmp_path / "worker.log",
                         cwd=ROOT, detach=False)
    try:
        # When it serves, it says READY, then pings the watchdog again and again with its status
        first = messages(sock, "READY=1")
        assert first[-1]["STATUS"].startswith("serving numbers, images")
        pings = [messages(sock, "WATCHDOG=1")[-1] for _ in range(3)]
        assert all(p["STATUS"].startswith("serving") for p in pings)
        # And its heartbeat in the bucket names the instance, the worker and its state
        beat = wait_for(lambda: bucket.exists(f"{HEALTH_PREFIX}{instance}.json") and heartbeat(bucket, instance),
                        30, "the heartbeat")
        assert beat["instance"] == instance and beat["status"] == "serving"
        assert beat["worker"].endswith(f":{worker.pid}") and abs(beat["at"] - time.time()) < 600
    finally:
        # When it is stopped (SIGTERM, as systemd stops it)
        worker.stop(30)
    # Then it says STOPPING, and its last heartbeat says stopped
    assert "STOPPING" in messages(sock, "STOPPING=1")[-1]
    assert heartbeat(bucket, instance)["status"] == "stopped"
    assert "could not" not in worker.output, worker.output


def test_a_lane_that_stops_turning_stops_the_watchdog_pings_and_is_reported_stalled(
        settings: Settings, notify_socket: tuple[socket.socket, str]) -> None:
    sock, address = notify_socket
    bucket = Bucket(Clients(settings).s3, settings.bucket or "")
    # Given the health of a worker with two lanes, a batch limit of 30 s, a watchdog and a heartbeat
    systemd = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "9000000"})
    health = WorkerHealth(["numbers", "images"], 30.0, systemd, bucket, "i-stalled", lambda: {"jobs": 3, "errors": 0})
    start = time.monotonic()
    health.alive("numbers")
    health.alive("images")
    # When both loops turn, the watchdog is pinged and the heartbeat says serving
    health.tick(start + 1)
    assert messages(sock, "WATCHDOG=1")[-1]["STATUS"] == "serving numbers, images: 3 job(s), 0 error(s)"
    assert heartbeat(bucket, "i-stalled")["status"] == "serving"
    # When the numbers loop keeps turning but the images loop has not for longer than a batch may take
    health.alive("numbers", start + 95)
    health.tick(start + 100)
    # Then no ping goes out (the next datagram is the one sent once both loops turn again), and the
    # heartbeat names the stalled lane
    assert heartbeat(bucket, "i-stalled")["status"] == "stalled"
    assert heartbeat(bucket, "i-stalled")["stalled"] == ["images"]
    health.alive("numbers")
    health.alive("images")
    health.tick()
    serving = {"WATCHDOG": "1", "STATUS": "serving numbers, images: 3 job(s), 0 error(s)"}
    assert messages(sock, "WATCHDOG=1") == [serving]


def test_an_instance_is_booting_then_serving_and_counts_as_broken_when_it_never_reports_fails_or_goes_silent():
    launched = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)
    t = launched.timestamp()
    assert classify(launched, None, t + 60).state == "booting"
    assert classify(launched, None, t + BOOT_BUDGET + 1).state == "never healthy"
    assert classify(launched, {"status": "serving", "at": t + 200, "jobs": 4}, t + 230).state == "serving"
    silent = classify(launched, {"status": "serving", "at": t + 200}, t + 200 + STALE_AFTER + 1)
    assert silent.state == "silent" and silent.bad
    failed = classify(launched, {"status": "failed", "step": "installing the pinned dependencies", "attempts": 7},
                      t + 400)
    assert failed.bad and "installing the pinned dependencies" in failed.detail and "7 attempt" in failed.detail
    assert classify(launched, {"status": "stalled", "at": t + 300, "stalled": ["images"]}, t + 310).state == "stalled"
    assert not classify(launched, {"status": "stopped", "at": t + 300}, t + 900).bad


def test_deploy_waits_for_the_workers_and_names_the_instances_that_never_became_healthy(
        settings: Settings, tmp_path: Path) -> None:
    clients = Clients(settings)
    # Given two instances (none boots on the emulator) and a real worker standing in for the first one's
    fleet.deploy(clients, fleet.FleetSpec(workers=2))
    try:
        ids = [i["id"] for i in fleet.fleet_status(clients)["instances"]]  # type: ignore[index]
        env = settings_env(settings, extra={"LABKIT_INSTANCE_ID": ids[0]})
        worker = Child.spawn(python_module("worker", "--poll-wait", "1"), env=env, log=tmp_path / "w.log", cwd=ROOT,
                             detach=False)
        try:
            bucket = Bucket(clients.s3, settings.bucket or "")
            wait_for(lambda: bucket.exists(f"{HEALTH_PREFIX}{ids[0]}.json"), 60, "the first worker's heartbeat")
            # When deploy runs again and waits up to 3 s for the workers
            report = fleet.deploy(clients, fleet.FleetSpec(workers=2, wait=3))
            # Then it names the instance whose worker never reported, and only that one
            assert report.unhealthy == [ids[1]]
            assert any(n.startswith(f"instance {ids[1]} never became healthy within 3 s") for n in report.notes)
            # And status shows each instance's worker
            shown = {i["id"]: i["health"] for i in fleet.fleet_status(clients)["instances"]}  # type: ignore[index]
            assert shown == {ids[0]: "serving", ids[1]: "booting"}
            assert "worker serving" in fleet.format_status(fleet.fleet_status(clients))
        finally:
            worker.stop(30)
    finally:
        fleet.undeploy(clients)
