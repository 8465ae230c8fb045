"""The fleet commands and the instructor's views while AWS throttles: ``labkit deploy --autoscale 0:2``,
``status``, ``status --class``, ``doctor``, ``undeploy`` and ``teardown`` run as real processes against the
emulator with every process throttled now and then, as AWS sheds load: SQS ``ThrottlingException`` and S3 503
``SlowDown`` (tests/aws_faults.py), EC2 ``RequestLimitExceeded`` and IAM / Auto Scaling / CloudWatch ``Throttling``
(tests/fleet_faults.py, loaded beside it). Both plugins answer at botocore's ``before-send``, inside its retry loop,
so labkit meets the answers as it would meet AWS's; the emulator itself is not changed. Each command must still
succeed, the faults must have happened (counted in their folder), and undeploy and teardown must leave nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit import fleet
from labkit.aws.clients import Clients
from labkit.config import Settings
from tests.aws_faults import injected
from tests.fleet_faults import THROTTLED, throttled_env
from tests.helpers import labkit
from tests.test_fleet import leftovers, live_instances, nothing_left

pytestmark = pytest.mark.slow  # real processes through fault plugins, as tests/test_aws_realism.py

# Every 4th EC2/IAM/Auto Scaling/CloudWatch request and every 5th SQS/S3 request a process sends is throttled: each
# command meets several, and botocore's 5 attempts always get through (a retry is never the next one throttled).
# Each throttle costs a backoff of up to a second (botocore's standard mode): more would only make the test slower.
FLEET_EVERY, DATA_EVERY = 4, 5
# And every 7th SQS/S3 request is answered 500 after it was done (InternalFailure, InternalError): its retry does it
# again (a queue or an object deleted twice).
SERVER_ERROR_EVERY = 7
FAULT_CODES = (*THROTTLED.values(), "ThrottlingException", "SlowDown", "InternalFailure", "InternalError",
               "Rate exceeded")


def rows(doctor_table: str) -> list[str]:
    """Each check of ``labkit doctor``'s table with its status (ok, warn, blocker)."""
    return [" ".join(line.split()[:3]) for line in doctor_table.splitlines()[3:] if line.strip()]


def test_fleet_commands_and_instructor_views_succeed_while_aws_throttles(settings: Settings, tmp_path: Path) -> None:
    clients, names = Clients(settings), fleet.FleetNames(settings.bucket or "")
    faults = tmp_path / "faults"
    env = throttled_env(faults, FLEET_EVERY, throttle_every=DATA_EVERY, error_5xx_every=SERVER_ERROR_EVERY)

    def run(*args: str) -> str:
        """The command, which must succeed having met at least one fault."""
        before = len(list(faults.glob("answered-*")))  # every fault answered so far, any code
        out = labkit(*args, s=settings, env=env)
        assert out.returncode == 0, f"labkit {' '.join(args)}: {out.stdout}{out.stderr}"
        assert "Traceback" not in out.stderr, out.stderr
        # and no part of it gave up on a fault (doctor, for one, would turn a check into "could not check")
        said = out.stdout + out.stderr
        assert not [code for code in FAULT_CODES if code in said], said
        assert len(list(faults.glob("answered-*"))) > before, f"labkit {' '.join(args)} met no fault"
        return out.stdout

    # When an autoscaling fleet of 0 to 2 is deployed while every service throttles now and then
    deployed = run("deploy", "--autoscale", "0:2")
    # Then it is all there: the role, the group of 0 to 2 and its alarms
    assert f"created   role {names.role}" in deployed, deployed
    [group] = clients("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[names.group])["AutoScalingGroups"]
    assert (group["MinSize"], group["MaxSize"]) == (0, 2)
    assert {a["AlarmName"] for a in clients("cloudwatch").describe_alarms(AlarmNames=names.alarms)["MetricAlarms"]} \
        == set(names.alarms)

    # And the instructor's views answer: the fleet, the class, the preflight
    status = run("status")
    assert names.group in status, status
    run("status", "--class")
    # (doctor's checks come out as they do without faults: none "could not check")
    assert rows(run("doctor")) == rows(labkit("doctor", s=settings).stdout)

    # When it is undeployed, nothing of the fleet is left
    run("undeploy")
    assert nothing_left(found := leftovers(clients, names)), found
    # When it is deployed again (without faults: what is tested is the teardown) and the lab torn down (--all)
    assert labkit("deploy", "--autoscale", "0:2", s=settings).returncode == 0
    run("teardown", "--all")
    # Then nothing is left, queues and bucket included
    assert nothing_left(found := leftovers(clients, names)), found
    assert live_instances(clients, names) == []
    queues = clients.sqs.list_queues(QueueNamePrefix=settings.request_queue).get("QueueUrls", [])
    assert queues == [], queues
    assert settings.bucket not in [b["Name"] for b in clients.s3.list_buckets()["Buckets"]]

    # And the faults did happen, every kind of them
    per_service = [f"{code}-{service}" for service, code in THROTTLED.items()]
    for code in (*per_service, "ThrottlingException", "SlowDown", "InternalFailure", "InternalError"):
        assert injected(faults, code) > 0, code


# Deletes of teardown --all whose answer may be lost after AWS did the work: their retry hears "not found", which
# labkit counts as done (labkit.aws.calls.delete; S3's NoSuchBucket in labkit.aws.storage). Not here, for the
# emulator's sake only: EC2's DeleteLaunchTemplate (moto answers a second delete MissingParameter; AWS's
# InvalidLaunchTemplateName.NotFoundException is counted as done) and IAM's RemoveRoleFromInstanceProfile (moto
# fails with a 500 of its own, ValueError from list.remove; AWS answers NoSuchEntity, counted as done).
LOST_DELETES = ["sqs.DeleteQueue", "s3.DeleteObjects", "s3.DeleteBucket", "ec2.DeleteSecurityGroup",
                "cloudwatch.DeleteAlarms", "autoscaling.DeleteAutoScalingGroup", "autoscaling.DeleteScheduledAction",
                "iam.DeleteRole", "iam.DeleteRolePolicy", "iam.DeleteInstanceProfile"]


def test_teardown_counts_a_delete_done_whose_answer_was_lost_as_done(settings: Settings, tmp_path: Path) -> None:
    clients, names = Clients(settings), fleet.FleetNames(settings.bucket or "")
    faults = tmp_path / "faults"
    # Given a fleet, and the first answer of each of these deletes lost in each process after AWS did the work (a
    # 500 that botocore retries; the retry finds it done: S3 answers NoSuchBucket)
    assert labkit("deploy", "--autoscale", "0:2", "--hours", "2", s=settings).returncode == 0  # a cost guard too
    env = throttled_env(faults, lost_answers=LOST_DELETES)
    # When the lab is torn down (--all: the fleet, the queues and the bucket)
    down = labkit("teardown", "--all", s=settings, env=env)
    # Then it succeeds, says what it deleted, and nothing is left
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"deleted   bucket {settings.bucket}" in down.stdout, down.stdout
    assert nothing_left(found := leftovers(clients, names)), found
    assert settings.bucket not in [b["Name"] for b in clients.s3.list_buckets()["Buckets"]]
    # And the answers were lost
    for code in ("InternalError-s3", "InternalFailure-sqs", "InternalError-ec2", "InternalFailure-cloudwatch",
                 "InternalFailure-autoscaling", "ServiceFailure-iam"):
        assert injected(faults, code) > 0, code
