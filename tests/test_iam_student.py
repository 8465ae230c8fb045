"""A class on one account (issue 19, item 1): on an emulator that enforces IAM (tests/iam_emulator.py), two
students hold only ``labkit policy student`` and an instructor everything. The students send number and image jobs
with the real CLI, answered by a real worker that holds only the worker policy; they download a result and read
the queues' depths; ``labkit purge`` says in one line that the shared queues are the instructor's, while the
instructor's purges the four. A student is refused what would hurt the class: purging or deleting the shared
queues, receiving their requests, deleting the bucket or its objects, deploying.

Students apart (issue 19, item 1): ada (an IAM user) and bob (a role session, as SSO and AWS Academy give) each run
their number, claim-check and image jobs; bob is refused receiving from, purging, deleting and re-tagging ada's
reply queue, and listing her uploads (each lists its own: images/unprocessed/<its id>/). The emulator evaluates
the policy's conditions and ${aws:userid} (tests/iam_emulator.py: moto alone passes them), and a student holding
the policy without those conditions is let through: the check can fail."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from PIL import Image

from labkit import Lab, fleet, provision
from labkit.aws.clients import Clients
from labkit.config import Settings
from labkit.fleet.student import student_policy
from labkit.local import wait_serving
from labkit.processes import Child, python_module, settings_env
from tests.conftest import ROOT
from tests.helpers import labkit
from tests.iam_emulator import ACCOUNT, IamEmulator, as_moto_sees_it, iam_emulator, keys_env
from tests.test_iam import labkit_as, names, refused
from tests.test_iam_proof import CLIENT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamEmulator]:
    with iam_emulator(tmp_path_factory.mktemp("iam-emulator") / "emulator.log") as emu:
        yield emu


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
    policy = student_policy(s, s.bucket or "", ACCOUNT)
    people["ada"] = iam.user(f"ada{tag}", as_moto_sees_it(policy))  # an IAM user
    people["bob"] = iam.role_session(f"bob{tag}", as_moto_sees_it(policy))  # a role session (SSO, AWS Academy)
    unconditional = {**policy, "Statement": [{k: v for k, v in st.items() if k != "Condition"}
                                             for st in policy["Statement"]]}
    people["eve"] = iam.user(f"eve{tag}", as_moto_sees_it(unconditional))  # the policy without its conditions
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
    # (its first refusal: looking at the bucket, which a student may not list as a whole)
    assert len(errors) == 1 and "your credentials may not create or configure the bucket" in errors[0], out.stderr
    assert not iam.client("ec2").describe_instances(Filters=[
        {"Name": f"tag:{fleet.FLEET_TAG}", "Values": [s.bucket or ""]}])["Reservations"]


def class_and_student(iam: IamEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, dict]:
    """The instructor's lab (queues and bucket, no worker), and a student holding only `labkit policy student`."""
    for var, value in keys_env(iam.admin).items():
        monkeypatch.setenv(var, value)
    s = names(iam, tmp_path / "state")
    provision.ensure(Clients(s))
    policy = as_moto_sees_it(student_policy(s, s.bucket or "", ACCOUNT))
    return s, iam.user(f"cy{uuid.uuid4().hex[:6]}", policy)


def test_a_students_purge_leaves_the_kind_queues_too_to_the_instructor(
        iam: IamEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a class whose kind queue (a kind of the instructor's own) holds a job
    s, cy = class_and_student(iam, tmp_path, monkeypatch)
    kind_queue, _ = provision.ensure_kind_queue(Clients(s), "wordcount")
    kind_queue.send('{"kind": "wordcount"}')
    # When a student purges what it may (no queue)
    text = ok(labkit_as(s, cy, "purge"))
    # Then nothing of the class's is purged: one line names the four and the kind queue as the instructor's
    shared = [*s.queue_names().values(), kind_queue.name]
    assert text.strip().splitlines() == [f"nothing purged; purging {', '.join(shared[:-1])} and {shared[-1]} is the "
                                         "instructor's: your credentials may not (AccessDenied)"], text
    assert kind_queue.depth()["visible"] == 1


def test_a_students_deploy_says_in_one_line_its_credentials_may_not_make_the_bucket_and_points_to_doctor(
        iam: IamEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the instructor's lab (queues and bucket), and a student holding only `labkit policy student`
    s, cy = class_and_student(iam, tmp_path, monkeypatch)
    # When the student runs `labkit deploy`
    out = labkit_as(s, cy, "deploy", "--workers", "1")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    # (stderr also has the emulator's note that no instance boots on it)
    [line] = [line for line in out.stderr.splitlines() if line.startswith("labkit: error:")]
    # Then one line says its credentials may not make the bucket ready, the action S3 refused (HeadBucket is
    # s3:ListBucket to IAM), and where to see what they may do (before: "the bucket name ... is taken by another
    # AWS account, or your credentials may not use it (S3 answered 403)")
    assert line.startswith(f"labkit: error: your credentials may not create or configure the bucket {s.bucket} "
                           "(S3 refused s3:ListBucket, 403): `labkit doctor` shows what they may do"), line
    assert "taken by another" not in line
    # And nothing was launched
    assert not iam.client("ec2").describe_instances(Filters=[
        {"Name": f"tag:{fleet.FLEET_TAG}", "Values": [s.bucket or ""]}])["Reservations"]


def test_the_student_policy_names_its_resources_and_grants_no_purge_or_delete_of_what_is_shared(
        settings: Settings) -> None:
    # Given the student policy `labkit policy student` prints for a class (on the emulator: its account)
    s = settings
    out = labkit("policy", "student", s=s)
    assert out.returncode == 0, out.stderr
    policy = json.loads(out.stdout)
    assert policy == student_policy(s, s.bucket or "", ACCOUNT)
    by_sid = {st["Sid"]: st for st in policy["Statement"]}
    # Then only listing queues uses "*" (it has no narrower resource)
    assert [sid for sid, st in by_sid.items() if st["Resource"] == "*"] == ["ListQueues"]
    # And reply queues are granted by their prefix
    replies = [f"arn:aws:sqs:{s.region}:{ACCOUNT}:labkit-reply-*"]
    own = {"StringEquals": {"aws:ResourceTag/labkit:owner": "${aws:userid}"}}
    assert by_sid["MakeOwnReplyQueues"] == {
        "Sid": "MakeOwnReplyQueues", "Effect": "Allow", "Action": ["sqs:CreateQueue", "sqs:TagQueue"],
        "Resource": replies, "Condition": {"StringEquals": {"aws:RequestTag/labkit:owner": "${aws:userid}"},
                                           "StringEqualsIfExists": {"aws:ResourceTag/labkit:owner": "${aws:userid}"}}}
    assert by_sid["UseOwnReplyQueues"]["Resource"] == replies and by_sid["UseOwnReplyQueues"]["Condition"] == own
    assert by_sid["MarkOwnReplyQueuesSeen"]["Condition"] == {
        **own, "ForAllValues:StringEquals": {"aws:TagKeys": ["labkit:last-seen"]}}
    # And nothing purges or deletes a shared queue, an object or the bucket, or touches the fleet or IAM
    for sid, st in by_sid.items():
        for action in st["Action"]:
            assert action.split(":")[0] in ("sqs", "s3"), action
            if action in ("sqs:PurgeQueue", "sqs:DeleteQueue", "sqs:DeleteMessage", "sqs:ReceiveMessage"):
                assert sid == "UseOwnReplyQueues", (sid, action)
            assert action not in ("s3:DeleteObject", "s3:DeleteBucket", "sqs:SetQueueAttributes"), action


def student_clients(s: Settings, creds: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Clients:
    """labkit's clients signing as ``creds`` (they read the keys when their first client is built)."""
    monkeypatch.delenv("LABKIT_EMULATOR_SESSION_TOKEN", raising=False)
    for var, value in keys_env(creds).items():
        monkeypatch.setenv(var, value)
    clients = Clients(s)
    clients.sqs, clients.s3  # noqa: B018 (built now, with these keys)
    return clients


def let_through(calls: dict[str, Any]) -> list[str]:
    """The calls IAM let through: those that did not fail for want of permission (another error, such as a
    made-up receipt handle or a gone queue, comes after the permission check)."""
    out = []
    for what, call in calls.items():
        try:
            call()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("AccessDenied", "403"):
                continue
        out.append(what)
    return out


def listings(s3: Any, bucket: str, owner: str) -> dict[str, Any]:
    """Ways to list another student's uploads."""
    return {"the whole bucket": lambda: s3.list_objects_v2(Bucket=bucket),
            "everyone's uploads": lambda: s3.list_objects_v2(Bucket=bucket, Prefix="images/unprocessed/"),
            "ada's uploads": lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"images/unprocessed/{owner}/"),
            "the payloads": lambda: s3.list_objects_v2(Bucket=bucket, Prefix="payloads/")}


def meddling(iam: IamEmulator, creds: dict[str, str], queue_url: str, caller_id: str) -> dict[str, Any]:
    """What a student could do to another's reply queue; each call as ``creds``."""
    sqs = iam.client("sqs", creds)
    return {
        "receive its replies": lambda: sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0),
        "delete a reply": lambda: sqs.delete_message(QueueUrl=queue_url, ReceiptHandle="x"),
        "purge it": lambda: sqs.purge_queue(QueueUrl=queue_url),
        "delete it": lambda: sqs.delete_queue(QueueUrl=queue_url),
        "tag it as its own": lambda: sqs.tag_queue(QueueUrl=queue_url, Tags={provision.OWNER_TAG: caller_id}),
        "mark it seen": lambda: sqs.tag_queue(QueueUrl=queue_url, Tags={provision.LAST_SEEN_TAG: "1"}),
        "untag it": lambda: sqs.untag_queue(QueueUrl=queue_url, TagKeys=[provision.OWNER_TAG]),
    }


def test_two_students_run_their_own_jobs_and_neither_can_touch_the_others_reply_queue(
        iam: IamEmulator, lab: tuple[Settings, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s, people = lab
    # When ada (an IAM user) and bob (a role session) each run number, claim-check and image jobs
    for who in ("ada", "bob"):
        out = subprocess.run([sys.executable, "-c", CLIENT],
                             env=settings_env(s, extra=keys_env(people[who])), cwd=tmp_path, capture_output=True,
                             text=True, stdin=subprocess.DEVNULL, timeout=180)
        # Then each gets its answers (its reply queue was its own: made, read, marked seen and deleted by it)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert out.stdout.split() == ["8", "20000", "L"], out.stdout
    # Given ada's reply queue, made by labkit as ada, tagged with her id (STS UserId: ${aws:userid})
    ada = student_clients(s, people["ada"], monkeypatch)
    queue = provision.create_reply_queue(ada)
    ada_id = ada.caller_id()
    assert ada_id and iam.client("sqs").list_queue_tags(QueueUrl=queue.url)["Tags"][provision.OWNER_TAG] == ada_id
    bob_id = student_clients(s, people["bob"], monkeypatch).caller_id()
    assert bob_id and ":" in bob_id and bob_id != ada_id  # a role session: AROA...:session
    # When bob tries to receive from, purge, delete or re-tag it: refused, every one
    assert let_through(meddling(iam, people["bob"], queue.url, bob_id)) == []
    # And ada may still use her own: mark it seen, purge it, delete it (labkit's calls, as ada)
    provision.mark_seen(queue)
    assert queue.purge_outcome().purged
    assert queue.delete()
    # Given a student holding the same policy without its conditions: the same calls go through (this test
    # can fail: the emulator does evaluate the conditions)
    # When ada uploads an image with labkit, and lists her uploads
    monkeypatch.setenv("LABKIT_EMULATOR_ACCESS_KEY_ID", people["ada"]["aws_access_key_id"])
    monkeypatch.setenv("LABKIT_EMULATOR_SECRET_ACCESS_KEY", people["ada"]["aws_secret_access_key"])
    monkeypatch.delenv("LABKIT_EMULATOR_SESSION_TOKEN", raising=False)
    with Lab(s) as ada_lab:
        key = ada_lab.upload_image(Image.new("RGB", (8, 8), "teal"), "mine.png")
        listed = [o.key for o in ada_lab.list_images()]
    # Then it is under her id, and she sees hers only (the cat of her jobs above, and this one)
    assert key.startswith(f"images/unprocessed/{ada_id}/") and key in listed and len(listed) == 2, listed
    assert all(k.startswith(f"images/unprocessed/{ada_id}/") for k in listed), listed
    # And bob may list his own uploads, never ada's nor everyone's
    bob_s3 = iam.client("s3", people["bob"])
    assert bob_s3.list_objects_v2(Bucket=s.bucket, Prefix=f"images/unprocessed/{bob_id}/")["KeyCount"] == 1
    assert let_through(listings(bob_s3, s.bucket or "", ada_id)) == []
    # (and the policy without its conditions would let eve list them all)
    assert let_through(listings(iam.client("s3", people["eve"]), s.bucket or "", ada_id)) == list(
        listings(bob_s3, s.bucket or "", ada_id))
    other = provision.create_reply_queue(ada)
    calls = meddling(iam, people["eve"], other.url, "eve")
    calls["delete it"] = calls.pop("delete it")  # last, so that the others find it there
    assert let_through(calls) == ["receive its replies", "delete a reply", "purge it", "tag it as its own",
                                  "mark it seen", "delete it"]  # (untagging is granted to no student)


def test_a_students_doctor_finds_the_class_bucket_usable_though_it_may_list_only_its_own_uploads(
        iam: IamEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the instructor's lab, and a student holding only `labkit policy student` (which lists its own uploads
    # only: HeadBucket, which IAM checks as s3:ListBucket with no prefix, is refused)
    s, cy = class_and_student(iam, tmp_path, monkeypatch)
    # When the student runs the doctor for a student
    out = labkit_as(s, cy, "doctor", "--student", "--json")
    assert "Traceback" not in out.stderr, out.stderr
    got = {r["check"]: r for r in json.loads(out.stdout)}
    # Then the bucket is not a blocker: it is the account's own, and a student needs no listing of it (before: "taken
    # by another AWS account, or your credentials may not use it (S3 answered 403)", a blocker)
    assert got["bucket"]["status"] == "ok", got["bucket"]
    assert "your own uploads" in got["bucket"]["found"], got["bucket"]
