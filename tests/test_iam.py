"""Least privilege, proven: on an emulator that enforces IAM (tests/iam_emulator.py), the real worker runs with
credentials whose only policy is the worker's and does every kind of job, while the calls it must never make
are refused; each of ``up``, ``deploy``, ``undeploy`` and ``teardown`` runs with only its deployer policy; and a
classroom account that may not create roles is told what to do instead."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from labkit import fleet, provision
from labkit.aws.clients import Clients
from labkit.client import Lab
from labkit.config import DLQ_SUFFIX, Settings
from labkit.fleet.deployer import COMMANDS, deployer_policy
from labkit.local import wait_serving
from labkit.processes import Child, python_module, settings_env
from tests.conftest import ROOT
from tests.helpers import labkit
from tests.iam_emulator import ACCOUNT, IamEmulator, as_moto_sees_it, iam_emulator, keys_env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamEmulator]:
    with iam_emulator(tmp_path_factory.mktemp("iam-emulator") / "emulator.log") as emu:
        yield emu


def names(emu: IamEmulator, state_dir: Path) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings.load(state_dir=state_dir, endpoint_url=emu.url, env={}, bucket=f"labkit-iam-{tag}",
                         request_queue=f"requestQueue-{tag}", response_queue=f"responseQueue-{tag}",
                         image_inbox=f"imageInbox-{tag}", image_outbox=f"imageOutbox-{tag}")


def refused(call: Any) -> bool:
    """True when the emulator refuses the call for want of permission (and only then)."""
    try:
        call()
    except ClientError as exc:
        err = exc.response.get("Error", {})
        text = f"{err.get('Code')} {err.get('Message')}"
        assert "denied" in text.lower() or "not authorized" in text.lower() or err.get("Code") == "403", text
        return True
    return False


# -- the worker ----------------------------------------------------------------------------------------------

def test_the_worker_runs_every_job_with_only_its_policy_and_nothing_else_is_allowed(
        iam: IamEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given queues and a bucket made by an administrator, and a role whose only policy is the worker's (as moto
    # must read it: see tests/iam_emulator.py; the AWS document itself is checked in tests/test_fleet.py)
    for var, value in keys_env(iam.admin).items():
        monkeypatch.setenv(var, value)
    s = names(iam, tmp_path / "state")
    provision.ensure(Clients(s))
    worker_creds = iam.role_session(f"worker-{s.bucket}", as_moto_sees_it(fleet.policy.worker_policy(s, s.bucket or "",
                                                                                                      ACCOUNT)))
    # When the real worker runs with those credentials, and number, claim-check (.npy and JSON) and image
    # jobs are sent
    env = settings_env(s, extra=keys_env(worker_creds))
    Path(s.state_dir).mkdir(parents=True, exist_ok=True)  # where it says it serves (its ready file)
    worker = Child.spawn(python_module("worker", "--poll-wait", "1"), env=env, log=tmp_path / "worker.log",
                         cwd=ROOT, detach=False)
    try:
        wait_serving([worker], s.state_dir, 60)
        image = tmp_path / "cat.png"
        Image.new("RGB", (40, 30), "orange").save(image)
        with Lab(s) as lab:
            small = lab.numbers([4, 8, 15, 16, 23, 42])
            as_npy = lab.numbers(np.arange(20_000))
            as_json = lab.submit("numbers", {"numbers": list(range(60_000))})
            picture = lab.image(image, ["grayscale"])
            # Then every job is answered, the image written where the worker may write it
            assert small.result(timeout=60)["median"] == 15.5
            assert as_npy.result(timeout=60)["count"] == 20_000
            assert as_json.result(timeout=60)["max"] == 59_999
            done = picture.result(timeout=60)
            assert done.open().mode == "L"
    finally:
        worker.stop(30)
    # And the worker was refused nothing (a refused call is logged as "... failed: ...")
    assert "failed" not in worker.output and "denied" not in worker.output.lower(), worker.output

    # And the calls it must never make are refused
    must_not = calls_the_worker_must_not_make(iam, s, worker_creds)
    allowed = [what for what, call in must_not.items() if not refused(call)]
    assert allowed == []
    # (while an administrator may make the same calls: the refusals come from the policy)
    admin = calls_the_worker_must_not_make(iam, s, iam.admin)
    assert not refused(admin["read an object outside its prefixes"])
    assert not refused(admin["receive from another queue"])


def calls_the_worker_must_not_make(iam: IamEmulator, s: Settings, creds: dict[str, str]) -> dict[str, Any]:
    """Calls outside the worker's job, as ``creds``, by what they would do."""
    admin_sqs, admin_s3 = iam.client("sqs"), iam.client("s3")
    other = admin_sqs.create_queue(QueueName=f"someone-else-{s.bucket}")["QueueUrl"]
    bucket, other_bucket = s.bucket or "", f"{s.bucket}-other"
    if other_bucket not in [b["Name"] for b in admin_s3.list_buckets()["Buckets"]]:
        admin_s3.create_bucket(Bucket=other_bucket)
    admin_s3.put_object(Bucket=bucket, Key="secret.txt", Body=b"top secret")
    url = {n: admin_sqs.get_queue_url(QueueName=n)["QueueUrl"] for n in
           (s.request_queue, s.response_queue, s.request_queue + DLQ_SUFFIX)}
    sqs, s3 = iam.client("sqs", creds), iam.client("s3", creds)
    return {
        "receive from another queue": lambda: sqs.receive_message(QueueUrl=other, WaitTimeSeconds=0),
        "send to another queue": lambda: sqs.send_message(QueueUrl=other, MessageBody="x"),
        "read the dead-letter queue": lambda: sqs.receive_message(QueueUrl=url[s.request_queue + DLQ_SUFFIX],
                                                                  WaitTimeSeconds=0),
        "send a request": lambda: sqs.send_message(QueueUrl=url[s.request_queue], MessageBody="1,2"),
        "read the replies": lambda: sqs.receive_message(QueueUrl=url[s.response_queue], WaitTimeSeconds=0),
        "purge a queue": lambda: sqs.purge_queue(QueueUrl=url[s.request_queue]),
        "delete a queue": lambda: sqs.delete_queue(QueueUrl=url[s.response_queue]),
        # (Creating a queue is not here: the worker may make its kinds' queues, <requestQueue>-kind-*, and moto does
        # not scope CreateQueue by the queue's ARN, as AWS does. That the worker's grant names only those queues is
        # checked in tests/test_fleet.py's expected_grants, and that its CreateQueue calls fall in it by the IAM proof.)
        "read an object outside its prefixes": lambda: s3.get_object(Bucket=bucket, Key="secret.txt"),
        "read the logs": lambda: s3.get_object(Bucket=bucket, Key="logs/any.log"),
        "write an input image": lambda: s3.put_object(Bucket=bucket, Key="images/unprocessed/x.png", Body=b"x"),
        "write the wheel": lambda: s3.put_object(Bucket=bucket, Key="artifacts/labkit/x.whl", Body=b"x"),
        "delete an object": lambda: s3.delete_object(Bucket=bucket, Key="secret.txt"),
        "delete the bucket": lambda: s3.delete_bucket(Bucket=bucket),
        "read another bucket": lambda: s3.list_objects_v2(Bucket=other_bucket),
        "write another bucket": lambda: s3.put_object(Bucket=other_bucket, Key="payloads/x", Body=b"x"),
        "start an instance": lambda: iam.client("ec2", creds).describe_instances(),
        "read IAM": lambda: iam.client("iam", creds).list_roles(),
    }


# -- the deployer -----------------------------------------------------------------------------------------------

def labkit_as(s: Settings, creds: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """``labkit ARGS`` signed with ``creds`` (a student's, a deployer's) on the IAM-enforcing emulator."""
    return labkit(*args, s=s, env=keys_env(creds), cwd=cwd, timeout=300)


def command_policy(s: Settings, *commands: str) -> dict[str, Any]:
    return as_moto_sees_it(deployer_policy(s, s.bucket or "", ACCOUNT, commands=commands))


def test_each_command_runs_with_only_the_deployer_policy_docs_list_for_it(iam: IamEmulator, tmp_path: Path) -> None:
    # Given one user per command, each holding only that command's deployer policy
    s = names(iam, tmp_path / "state")
    users = {cmd: iam.user(f"{cmd}-{s.bucket}", command_policy(s, cmd)) for cmd in COMMANDS}

    def run(command: str, *args: str) -> str:
        # When that user runs the command
        out = labkit_as(s, users[command], *args)
        # Then it succeeds
        assert out.returncode == 0, f"labkit {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
        assert "Traceback" not in out.stderr
        return out.stdout

    run("up", "up", "--workers", "0")
    run("deploy", "deploy", "--workers", "1")
    # (a worker's heartbeat, as one on the instance writes it: deploy reads it to tell a healthy instance)
    instance = iam.client("ec2").describe_instances(Filters=[
        {"Name": f"tag:{fleet.FLEET_TAG}", "Values": [s.bucket or ""]}])["Reservations"][0]["Instances"][0]
    beat = {"v": 1, "instance": instance["InstanceId"], "status": "serving", "at": time.time(), "jobs": 0}
    iam.client("s3").put_object(Bucket=s.bucket, Key=f"logs/health/{instance['InstanceId']}.json",
                                Body=json.dumps(beat).encode())
    assert "worker serving" in run("deploy", "deploy", "--workers", "1")
    run("deploy", "deploy", "--autoscale", "0:2")
    run("undeploy", "undeploy")
    run("deploy", "deploy", "--workers", "1")
    # (a client's reply queue, last seen two hours ago: teardown reads its tag before deleting it)
    idle = {provision.LAST_SEEN_TAG: str(int(time.time()) - 7200)}
    iam.client("sqs").create_queue(QueueName=f"labkit-reply-{s.bucket[-8:]}", tags=idle)
    assert f"queue labkit-reply-{s.bucket[-8:]}" in run("teardown", "teardown", "--yes")
    # And everything that bills is gone: the bucket stays, empty, until `teardown --all`
    assert not iam.client("s3").list_objects_v2(Bucket=s.bucket).get("Contents")
    assert f"bucket {s.bucket} (" in run("teardown", "teardown", "--yes", "--all")
    assert s.bucket not in [b["Name"] for b in iam.client("s3").list_buckets()["Buckets"]]
    # And the emulator did enforce the policies: the `up` user may not deploy
    out = labkit_as(s, users["up"], "deploy", "--workers", "1")
    assert out.returncode != 0 and "Traceback" not in out.stderr


# -- classroom accounts ---------------------------------------------------------------------------------------

def classroom_policy(s: Settings) -> dict[str, Any]:
    """A classroom role (AWS Academy style): deploy and undeploy allowed, creating IAM roles explicitly denied."""
    policy = command_policy(s, "up", "deploy", "undeploy")
    policy["Statement"].append({"Sid": "NoRoles", "Effect": "Deny", "Action": ["iam:CreateRole"], "Resource": "*"})
    return policy


def test_a_classroom_account_that_may_not_create_roles_is_told_to_pass_an_instance_profile(
        iam: IamEmulator, tmp_path: Path) -> None:
    # Given session credentials (as AWS Academy gives) of a role that may deploy but not create IAM roles, and the
    # instance profile the lab provides
    s = names(iam, tmp_path / "state")
    student = iam.role_session(f"voclabs-{s.bucket}", classroom_policy(s))
    admin_iam = iam.client("iam")
    lab_role, lab_profile = f"LabRole-{s.bucket}", f"LabInstanceProfile-{s.bucket}"
    admin_iam.create_role(RoleName=lab_role, AssumeRolePolicyDocument=json.dumps(fleet.policy.trust_policy()))
    admin_iam.create_instance_profile(InstanceProfileName=lab_profile)
    admin_iam.add_role_to_instance_profile(InstanceProfileName=lab_profile, RoleName=lab_role)
    assert labkit_as(s, student, "up", "--workers", "0").returncode == 0

    # When the student deploys
    out = labkit_as(s, student, "deploy", "--workers", "1")
    # Then it fails with one line that says what to do: --instance-profile, how to find one, AWS Academy's name
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    error = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(error) == 1, out.stderr
    for words in ("may not create IAM roles", "--instance-profile", "aws iam list-instance-profiles",
                  "LabInstanceProfile"):
        assert words in error[0], error[0]

    # When the student deploys with the lab's instance profile
    out = labkit_as(s, student, "deploy", "--workers", "1", "--instance-profile", lab_profile)
    # Then the fleet is deployed with it, and undeploy removes it but leaves the lab's profile alone
    assert out.returncode == 0, out.stdout + out.stderr
    instances = iam.client("ec2").describe_instances(Filters=[
        {"Name": f"tag:{fleet.FLEET_TAG}", "Values": [s.bucket or ""]},
        {"Name": "instance-state-name", "Values": ["running"]}])["Reservations"]
    profiles = [i["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1] for r in instances for i in r["Instances"]]
    assert profiles == [lab_profile]
    assert labkit_as(s, student, "undeploy").returncode == 0
    assert admin_iam.get_instance_profile(InstanceProfileName=lab_profile)["InstanceProfile"]["Roles"]
