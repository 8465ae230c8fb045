"""The worker's memory: a claim-check payload too big for this worker is refused with ``too_large`` before it
is read (the worker's peak memory stays under its limit, and it goes on serving); the limit is read from the
cgroup the systemd unit sets; big jobs wait for each other instead of running side by side."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import numpy as np
import pytest

from labkit.aws.clients import Clients
from labkit.aws.storage import Bucket
from labkit.client import Lab
from labkit.config import PAYLOADS_PREFIX, Settings
from labkit.errors import ConfigError, RemoteJobError, TooLarge
from labkit.protocol import JobRequest
from labkit.waiting import wait_for
from worker.memory import EXPANSION, MIB, MemoryBudget, cgroup_limit, parse_size

LIMIT = 256 * MIB


def peak_memory(pid: int) -> int:
    """A process's peak resident memory (VmHWM), in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.M).group(1)) * 1024  # type: ignore[union-attr]


def json_payload(size: int) -> dict:
    """A numbers payload whose JSON text is about ``size`` bytes (short numbers: the costliest to decode)."""
    count = size // 4  # "1.5," is four characters
    return {"numbers": [1.5] * count}


@pytest.mark.slow
def test_a_payload_too_big_for_the_workers_memory_is_refused_and_the_worker_keeps_serving(
        lab: Lab, start_worker, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a worker whose memory limit is 256 MiB (set by its variable here; on EC2 the unit's MemoryHigh=)
    monkeypatch.setenv("LABKIT_MEMORY_LIMIT", str(LIMIT))
    w = start_worker("--concurrency", "2")
    capacity = int(re.search(r"memory budget for payloads (\d+) MiB", w.output).group(1)) * MIB  # type: ignore
    assert capacity > 8 * MIB, w.output
    # When it is sent a JSON claim-check payload that would take three times its budget, one that fits, a .npy
    # one larger than the budget and one that fits, then a plain number job
    too_big = lab.submit("numbers", json_payload(int(capacity * 3 / EXPANSION["json"])))
    fits = lab.submit("numbers", json_payload(int(capacity * 0.3 / EXPANSION["json"])))
    npy_big = lab.numbers(np.ones(int(capacity * 1.2 / 8)))  # float64: 8 bytes a number
    npy_fits = lab.numbers(np.ones(int(capacity * 0.3 / 8)))
    after = lab.numbers([1, 2, 3])
    # Then the ones too big get too_large, saying how much memory they would take and what to do
    for job, fmt in ((too_big, "json"), (npy_big, "npy")):
        with pytest.raises(RemoteJobError) as info:
            job.result(timeout=120)
        assert info.value.code == "too_large", str(info.value)
        assert f"MiB of {fmt}" in str(info.value) and "more memory" in str(info.value)
    # And the others are answered, by the same worker, still running
    assert fits.result(timeout=120)["count"] == len(json_payload(int(capacity * 0.3 / EXPANSION["json"]))["numbers"])
    assert npy_fits.result(timeout=120)["count"] == int(capacity * 0.3 / 8)
    assert after.result(timeout=60)["median"] == 2
    assert w.proc.poll() is None
    # And its memory never went past its limit: the big payloads were refused before they were read
    assert peak_memory(w.proc.pid) < LIMIT, f"peak {peak_memory(w.proc.pid) / MIB:.0f} MiB"


def test_sizes_and_the_cgroup_limit_are_read_as_systemd_and_the_kernel_write_them(tmp_path: Path) -> None:
    assert parse_size("512M") == 512 * MIB and parse_size("2GiB") == 2048 * MIB and parse_size("1000") == 1000
    with pytest.raises(ConfigError, match="not a size"):
        parse_size("lots")
    # Given a cgroup v2 tree: the service's memory.high (MemoryHigh=) under a slice with a larger memory.max
    root = tmp_path
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text("0::/system.slice/labkit-worker.service\n")
    service = root / "sys/fs/cgroup/system.slice/labkit-worker.service"
    service.mkdir(parents=True)
    (service / "memory.high").write_text("734003200\n")
    (service / "memory.max").write_text("max\n")
    (service.parent / "memory.max").write_text("900000000\n")
    # Then the lowest limit wins, and says where it came from
    limit, source = cgroup_limit(root)  # type: ignore[misc]
    assert limit == 734003200 and source.endswith("labkit-worker.service/memory.high")
    # And with no limit anywhere (v1's "unlimited" is a huge number), there is none
    (service / "memory.high").write_text("max\n")
    (service.parent / "memory.max").write_text("max\n")
    assert cgroup_limit(root) is None
    (root / "proc/self/cgroup").write_text("4:memory:/docker/abc\n")
    v1 = root / "sys/fs/cgroup/memory/docker/abc"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_limit(root) is None
    (v1 / "memory.limit_in_bytes").write_text("536870912\n")
    assert cgroup_limit(root) == (536870912, str(v1 / "memory.limit_in_bytes"))
    # And the budget takes the variable first, then the cgroup
    (root / "proc/meminfo").write_text("MemTotal:        1000000 kB\n")
    (root / "proc/self/status").write_text("VmRSS:   51200 kB\n")
    assert MemoryBudget.detect({"LABKIT_MEMORY_LIMIT": "100M"}, root).source == "LABKIT_MEMORY_LIMIT"
    budget = MemoryBudget.detect({}, root)
    assert budget.limit == 536870912 and budget.capacity == int(536870912 * 0.9) - 50 * MIB


def test_big_jobs_wait_for_each_other_and_one_that_never_fits_is_refused(settings: Settings) -> None:
    bucket = Bucket(Clients(settings).s3, settings.bucket or "")
    for name, size in (("a", 40), ("b", 40), ("c", 200)):
        buf = io.BytesIO()
        np.save(buf, np.zeros(size * MIB // 8))
        bucket.put(f"{PAYLOADS_PREFIX}{name}.npy", buf.getvalue())

    def request(name: str) -> JobRequest:
        return JobRequest("numbers", None, payload_ref={"bucket": bucket.name, "key": f"{PAYLOADS_PREFIX}{name}.npy",
                                                        "format": "npy"})
    # Given a budget of 64 MiB for payloads
    budget = MemoryBudget(int(64 * MIB / 0.9) + 1, "a test")
    # When one 40 MiB job holds its share and a second asks for its own
    entered = threading.Event()

    def second() -> None:
        with budget.hold(request("b"), bucket):
            entered.set()
    with budget.hold(request("a"), bucket):
        waiter = threading.Thread(target=second)
        waiter.start()
        # Then the second waits while the first runs
        wait_for(lambda: budget.waiting == 1, 30, "the second job to wait for memory")
        assert not entered.is_set() and budget.held >= 40 * MIB
    # And runs once the first is done
    waiter.join(30)
    assert entered.is_set() and budget.held == 0 and budget.waiting == 0
    # And one that waits longer than the worker's hard limit gives up instead of running after its abandonment
    budget.max_wait = 0.5
    with budget.hold(request("a"), bucket), pytest.raises(TooLarge, match=r"waited 0\.5 s for 44 MiB"), \
            budget.hold(request("b"), bucket):
        pass
    assert budget.held == 0 and budget.waiting == 0
    budget.max_wait = None
    # And a payload larger than the whole budget is refused at once, naming its size
    with pytest.raises(TooLarge, match=r"200\.0 MiB of npy"), budget.hold(request("c"), bucket):
        pass
    # And an inline payload holds nothing
    with budget.hold(JobRequest("numbers", {"numbers": [1]}), bucket):
        assert budget.held == 0
