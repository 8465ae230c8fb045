"""labkit on a second, independent SQS/S3 emulator (fauxqs): what works here does not lean on moto.

The commands run as a user runs them (``python -m labkit ...`` with ``LABKIT_ENDPOINT_URL`` set), against
the ``fauxqs`` fixture's server on 127.0.0.1. Teardown on fauxqs has tests of its own elsewhere.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

from labkit import endpoints, provision
from labkit.aws.clients import Clients
from labkit.aws.storage import Bucket
from labkit.client import Lab
from labkit.config import Settings
from tests.conftest import settings_env
from tests.helpers import labkit, unique_settings


def test_number_job_end_to_end_on_fauxqs(fauxqs: str, tmp_path: Path, start_worker) -> None:
    # Given labkit's queues and bucket provisioned on fauxqs
    s = Settings.load(state_dir=tmp_path / "state", endpoint_url=fauxqs, env={}, bucket="labkit-portable")
    report = provision.ensure(Clients(s))
    assert "queue requestQueue" in report.created
    # When a real worker serves them and a client sends a number job
    start_worker(s=s)
    with Lab(s) as lab:
        result = lab.numbers([1, 5, 22]).result(timeout=60)
    # Then the result is the same as on moto
    assert (result["count"], result["min"], result["max"], result["median"]) == (3, 1, 22, 5)


def checked(env: dict[str, str], *args: str, ok: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``python -m labkit <args>`` as a user runs it, in ``env``; checks its exit status."""
    r = labkit(*args, base=env, timeout=timeout)
    assert (r.returncode == 0) == ok, f"labkit {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_up_status_submit_down_on_fauxqs(fauxqs: str, tmp_path: Path) -> None:
    # Given only LABKIT_ENDPOINT_URL (and names of this test's own) pointing at fauxqs
    s = unique_settings(fauxqs, tmp_path / "state")
    env = settings_env(s)
    # When labkit comes up there with a worker
    up = checked(env, "up", "--workers", "1")
    # Then it says where it goes, by what answers there, and never that it will use real AWS
    assert f"using fauxqs at {fauxqs}" in up.stderr and "AWS" not in up.stderr
    assert f"labkit is up on {fauxqs}" in up.stdout
    try:
        # And status shows its queues and the running worker
        status = json.loads(checked(env, "status", "--json").stdout)
        assert status["endpoint"] == fauxqs and status["bucket"]["name"] == s.bucket
        assert all("error" not in q for q in status["queues"].values()) and s.request_queue in status["queues"]
        assert "1 local running" in checked(env, "status").stdout
        # And number jobs are answered: a typed list, and a list of 2,000,000 (16 MB through S3, in parts)
        small = json.loads(checked(env, "submit", "numbers", "1", "5", "22").stdout)
        assert (small["count"], small["min"], small["max"], small["median"]) == (3, 1, 22, 5)
        big = json.loads(checked(env, "submit", "numbers", "--random", "2000000").stdout)
        assert big["count"] == 2_000_000
        uploads = [o for o in Bucket(Clients(s).s3, s.bucket).list("payloads/") if o.size > 8 << 20]
        assert uploads, "the big list did not travel through S3"
        # And an image job: the image up, processed by the worker, the result down
        Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "red.png")
        checked(env, "submit", "image", str(tmp_path / "red.png"), "--op", "grayscale", "--op", "resize:32x24",
               "--out", str(tmp_path / "out.png"))
        with Image.open(tmp_path / "out.png") as out:
            assert (out.size, out.mode) == ((32, 24), "L")
        # And a reply queue left behind by a client that died (last seen two hours ago) is there for `down`
        leftover = provision.create_reply_queue(Clients(s))
        leftover.tag({provision.LAST_SEEN_TAG: str(int(time.time()) - 7200)})
    finally:
        # When labkit goes down
        down = checked(env, "down")
    # Then it stopped the worker and deleted the leftover reply queue
    assert "stopped 1 worker(s)" in down.stdout and "deleted 1 leftover reply queue(s)" in down.stdout
    assert not [u for u in Clients(s).sqs.list_queues(QueueNamePrefix=leftover.name).get("QueueUrls", [])]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_up_on_an_endpoint_where_nothing_answers_says_so(tmp_path: Path) -> None:
    # Given an endpoint where nothing listens
    url = f"http://127.0.0.1:{_free_port()}"
    env = settings_env(Settings.load(state_dir=tmp_path / "state", endpoint_url=url, env={}))
    # When labkit is asked to come up there
    r = checked(env, "up", ok=False)
    # Then it says that nothing answers, in one line, and never that it will use real AWS
    assert f"nothing answers at {url}" in r.stderr
    assert "AWS" not in r.stderr and "Traceback" not in r.stderr


def test_endpoints_are_named_by_what_answers_there(fauxqs: str, emulator) -> None:
    # Given moto, fauxqs, a port where nothing answers, and AWS's own endpoints
    closed = f"http://127.0.0.1:{_free_port()}"
    # Then each is named by what it is
    assert endpoints.identify(emulator.url).kind == "moto"
    assert endpoints.identify(fauxqs).label == f"fauxqs at {fauxqs}"
    assert endpoints.identify(closed).label == f"an SQS/S3 endpoint at {closed}"
    assert endpoints.identify(None).label == "AWS"
    assert endpoints.identify("https://sqs.eu-west-1.amazonaws.com").kind == "aws"
    # And only moto's queues are known to slow down as they fill
    assert [endpoints.identify(u).slows_as_queues_fill for u in (emulator.url, fauxqs, None)] == [True, False, False]
    assert endpoints.reachable(fauxqs) and not endpoints.reachable(closed)


@pytest.mark.parametrize("which", ["moto", "fauxqs"])
def test_objects_larger_than_a_part_go_up_in_parts(which: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # Given a bucket on either emulator (fauxqs refuses a PutObject body over 11 MiB)
    url = request.getfixturevalue("emulator").url if which == "moto" else request.getfixturevalue("fauxqs")
    s = unique_settings(url, tmp_path / "state")
    clients = Clients(s)
    provision.ensure(clients)
    bucket = Bucket(clients.s3, s.bucket)
    data = bytes(range(256)) * (18 << 12)  # 18 MiB
    # When 18 MiB are written
    clients.counter.reset()
    bucket.put("payloads/big.bin", data, "application/octet-stream")
    # Then they went up as a multipart upload of 8 MiB parts, and read back the same
    calls = clients.counter.snapshot()
    assert calls.get("s3.CreateMultipartUpload") == 1 and calls.get("s3.UploadPart") == 3
    assert "s3.PutObject" not in calls
    assert bucket.get("payloads/big.bin") == data
    assert bucket.head("payloads/big.bin")["ContentType"] == "application/octet-stream"


def test_bench_measures_the_endpoint_it_is_given(fauxqs: str, tmp_path: Path) -> None:
    # Given fauxqs named with --endpoint (and no endpoint in the environment)
    env = settings_env(Settings.load(state_dir=tmp_path / "state", env={}))
    # When a quick benchmark runs (smaller still: the scenarios this test reads, few jobs)
    r = checked(env, "bench", "--quick", "--jobs", "40", "--images", "2", "--big", "50000",
               "--only", "floor,labkit,round_trip,big,images", "--endpoint", fauxqs, "--json", timeout=600)
    data = json.loads(r.stdout)
    # Then it measured fauxqs, said so, and every job of every scenario came back right
    assert data["where"] == f"fauxqs at {fauxqs}"
    assert f"bench: fauxqs at {fauxqs}" in r.stderr
    assert set(data["results"]) >= {"floor", "labkit", "floor_round_trip", "round_trip", "big", "images"}
    for res in data["results"].values():
        assert res["correct"] == res["jobs"], res["name"]
    # And fauxqs's own CPU time was read (the process listening on its port), beside the workers'
    assert "emulator" in data["results"]["labkit"]["cpu_ms_per_job"]
    # And what the run made there is gone
    sqs = Clients(Settings.load(env={}, endpoint_url=fauxqs, state_dir=tmp_path / "state")).sqs
    assert not sqs.list_queues(QueueNamePrefix="bench-").get("QueueUrls")
