"""A class on one account (issue 19, item 1): on an emulator that enforces IAM (tests/iam_emulator.py), two
students hold only ``labkit policy student`` and an instructor everything. The students send number and image jobs
with the real CLI, answered by a real worker that holds only the worker policy; they download a result and read
the queues' depths; ``labkit purge`` says in one line that the shared queues are the instructor's, while the
instructor's purges the four. A student is refused what would hurt the class: purging or deleting the shared
queues, receiving their requests, deleting the bucket or its objects, deploying. (Reply queues are granted by
their prefix, labkit-reply-*: see labkit/fleet/student.py on keeping students apart there.)"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from labkit import fleet, provision
from labkit.aws.clients import Clients
from labkit.config import Settings
from labkit.fleet.student import student_policy
from labkit.local import wait_serving
from labkit.processes import Child, python_module, settings_env
from tests.conftest import ROOT
from tests.iam_emulator import ACCOUNT, IamEmulator, as_moto_sees_it, iam_emulator, keys_env
from tests.test_iam import names, refused

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamEmulator]:
    with iam_emulator(tmp_path_factory.mktemp("iam-emulator") / "emulator.log") as emu:
        yield emu


def labkit_as(s: Settings, creds: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``labkit ARGS`` signed with ``creds`` (a student's or the instructor's), as a real process."""
    return subprocess.run(python_module("labkit", *args), env=settings_env(s, extra=keys_env(creds)), cwd=cwd,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    return out.stdout


def one_line_refusal(out: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exactly one line on stderr, no traceback; that line."""
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    return lines[0]


@pytest.fixture
def lab(iam: IamEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, dict]]:
    """The instructor's lab (queues and bucket made with the instructor's credentials), a worker that holds only
    the worker policy, and a student, ada, an IAM user holding only the student policy."""
    for var, value in keys_env(iam.admin).items():
        monkeypatch.setenv(var, value)
    s = names(iam, tmp_path / "state")
    provision.ensure(Clients(s))
    tag = uuid.uuid4().hex[:6]
    people = {"instructor": iam.admin}
    for who in ("ada",):
        user = f"{who}{tag}"
        people[who] = iam.user(user, as_moto_sees_it(student_policy(s, s.bucket or "", ACCOUNT)))
    worker_creds = iam.role_session(f"worker-{s.bucket}", as_moto_sees_it(
        fleet.policy.worker_policy(s, s.bucket or "", ACCOUNT)))
    Path(s.state_dir).mkdir(parents=True, exist_ok=True)  # where it says it serves (its ready file)
    worker = Child.spawn(python_module("worker", "--poll-wait", "1"), env=settings_env(s, extra=keys_env(worker_creds)),
                         log=tmp_path / "worker.log", cwd=ROOT, detach=False)
    try:
        wait_serving([worker], s.state_dir, 60)
        yield s, people
    finally:
        worker.stop(30)
    assert "denied" not in worker.output.lower(), worker.output


def test_a_student_sends_jobs_and_purges_its_own_and_is_refused_what_is_the_instructors(
        iam: IamEmulator, lab: tuple[Settings, dict], tmp_path: Path) -> None:
    s, people = lab
    ada, instructor = people["ada"], people["instructor"]
    # When a student sends a number job and an image job with the CLI
    numbers = json.loads(ok(labkit_as(s, ada, "submit", "numbers", "4", "8", "15", "16", "23", "42")))
    Image.new("RGB", (40, 30), "orange").save(tmp_path / "cat.png")
    image = json.loads(ok(labkit_as(s, ada, "submit", "image", str(tmp_path / "cat.png"), "--op", "grayscale",
                                    cwd=tmp_path)))
    # Then the worker answers both, and the student downloads the result by its key
    assert numbers["median"] == 15.5
    key = image["key"]
    got = Path(ok(labkit_as(s, ada, "download", key, "--out", str(tmp_path / "out") + "/")).strip())
    with Image.open(got) as im:
        assert im.mode == "L"
    # And the student sees the queues' depths
    assert s.request_queue in ok(labkit_as(s, ada, "status"))

    # When the student purges without naming a queue
    text = ok(labkit_as(s, ada, "purge"))
    # Then one line says the shared queues are the instructor's (exit 0: it purged what it may)
    shared = list(s.queue_names().values())
    line = (f"purging {', '.join(shared[:-1])} and {shared[-1]} is the instructor's: your credentials may not "
            "(AccessDenied)")
    assert text.strip().splitlines() == [f"nothing purged; {line}"], text
    # When the student purges a shared queue by name: one line, exit 1
    assert one_line_refusal(labkit_as(s, ada, "purge", "requests")) == (
        f"labkit: error: purging {s.request_queue} is the instructor's: your credentials may not (AccessDenied)")
    # When the instructor purges without naming a queue: the four, as before
    assert ok(labkit_as(s, instructor, "purge")).count("purged") == 4

    # And the student is refused what would hurt the class, as its own calls
    admin_sqs = iam.client("sqs")
    queue_url = {n: admin_sqs.get_queue_url(QueueName=n)["QueueUrl"] for n in shared}
    student_sqs, student_s3 = iam.client("sqs", ada), iam.client("s3", ada)
    must_not = {
        "purge a shared queue": lambda: student_sqs.purge_queue(QueueUrl=queue_url[s.image_inbox]),
        "delete a shared queue": lambda: student_sqs.delete_queue(QueueUrl=queue_url[s.request_queue]),
        "receive the class's requests": lambda: student_sqs.receive_message(QueueUrl=queue_url[s.request_queue],
                                                                            WaitTimeSeconds=0),
        "delete a result": lambda: student_s3.delete_object(Bucket=s.bucket, Key=key),
        "delete the bucket": lambda: student_s3.delete_bucket(Bucket=s.bucket),
        "read the workers' logs": lambda: student_s3.get_object(Bucket=s.bucket, Key="logs/any.log"),
    }
    allowed = [what for what, call in must_not.items() if not refused(call)]
    assert allowed == []
    # And deploying is refused in one error line, nothing launched
    out = labkit_as(s, ada, "deploy", "--workers", "1")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("labkit: error:")]
    assert len(errors) == 1 and "AccessDenied" in errors[0], out.stderr
    assert not iam.client("ec2").describe_instances(Filters=[
        {"Name": f"tag:{fleet.FLEET_TAG}", "Values": [s.bucket or ""]}])["Reservations"]


def test_the_student_policy_names_its_resources_and_grants_no_purge_or_delete_of_what_is_shared(
        settings: Settings) -> None:
    # Given the student policy `labkit policy student` prints for a class (on the emulator: its account)
    s = settings
    out = subprocess.run(python_module("labkit", "policy", "student"), env=settings_env(s), cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    policy = json.loads(out.stdout)
    assert policy == student_policy(s, s.bucket or "", ACCOUNT)
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    # Then only listing queues uses "*" (it has no narrower resource)
    assert [sid for sid, st in by_sid.items() if st["Resource"] == "*"] == ["ListQueues"]
    # And reply queues are granted by their prefix
    assert by_sid["OwnReplyQueues"]["Resource"] == [f"arn:aws:sqs:{s.region}:{ACCOUNT}:labkit-reply-*"]
    # And nothing purges or deletes a shared queue, an object or the bucket, or touches the fleet or IAM
    for sid, st in by_sid.items():
        for action in st["Action"]:
            assert action.split(":")[0] in ("sqs", "s3"), action
            if action in ("sqs:PurgeQueue", "sqs:DeleteQueue", "sqs:DeleteMessage", "sqs:ReceiveMessage"):
                assert sid == "OwnReplyQueues", (sid, action)
            assert action not in ("s3:DeleteObject", "s3:DeleteBucket", "sqs:SetQueueAttributes"), action
