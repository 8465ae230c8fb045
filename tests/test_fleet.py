"""The EC2 worker fleet against the real emulator server: what deploy creates (policy checked action by
action, resource by resource), that it converges instead of doubling, and that undeploy leaves nothing."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from labkit import fleet
from labkit.aws.clients import Clients
from labkit.config import (
    ARTIFACTS_PREFIX,
    LOGS_PREFIX,
    PAYLOADS_PREFIX,
    PROCESSED_PREFIX,
    UNPROCESSED_PREFIX,
    Settings,
    read_state,
)
from labkit.errors import ConfigError
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET, ROOT, settings_env
from tests.helpers import labkit

ACCOUNT = "123456789012"  # the emulator's account
AL2023_X86 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"


# -- helpers ---------------------------------------------------------------------------------------

def live_instances(clients: Clients, names: fleet.FleetNames) -> list[dict[str, Any]]:
    resp = clients("ec2").describe_instances(Filters=[
        {"Name": f"tag:{fleet.FLEET_TAG}", "Values": [names.fleet]},
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
    return [i for r in resp["Reservations"] for i in r["Instances"]]


def leftovers(clients: Clients, names: fleet.FleetNames) -> dict[str, Any]:
    """Everything a fleet could leave behind, listed from the emulator (empty values: nothing left)."""
    ec2, iam_client = clients("ec2"), clients("iam")
    roles = [r["RoleName"] for p in iam_client.get_paginator("list_roles").paginate(PathPrefix=fleet.IAM_PATH)
             for r in p["Roles"] if r["RoleName"] == names.role]
    profiles = [p["InstanceProfileName"] for page in iam_client.get_paginator("list_instance_profiles").paginate()
                for p in page["InstanceProfiles"] if p["InstanceProfileName"] == names.profile]
    groups = ec2.describe_security_groups(Filters=[{"Name": f"tag:{fleet.FLEET_TAG}", "Values": [names.fleet]}])
    templates = [t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"]
                 if t["LaunchTemplateName"] == names.launch_template]
    asgs = clients("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[names.group])
    alarms = clients("cloudwatch").describe_alarms(AlarmNamePrefix=names.stem)["MetricAlarms"]
    wheels = []
    if names.fleet in [b["Name"] for b in clients.s3.list_buckets()["Buckets"]]:
        wheels = clients.s3.list_objects_v2(Bucket=names.fleet, Prefix=ARTIFACTS_PREFIX).get("Contents", [])
    return {
        "instances": [i["InstanceId"] for i in live_instances(clients, names)],
        "roles": roles, "profiles": profiles,
        "security_groups": [g["GroupId"] for g in groups["SecurityGroups"]],
        "launch_templates": templates,
        "auto_scaling_groups": [g["AutoScalingGroupName"] for g in asgs["AutoScalingGroups"]],
        "alarms": [a["AlarmName"] for a in alarms],
        "wheels": [o["Key"] for o in wheels],
    }


def nothing_left(found: dict[str, Any]) -> bool:
    return not any(found.values())


def user_data(clients: Clients, instance_id: str) -> str:
    attr = clients("ec2").describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    return base64.b64decode(attr["UserData"]["Value"]).decode()


def expected_grants(s: Settings, bucket: str) -> dict[str, set[str]]:
    q = f"arn:aws:sqs:{s.region}:{ACCOUNT}:"
    b = f"arn:aws:s3:::{bucket}"
    consume = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueUrl",
               "sqs:GetQueueAttributes"}
    return {
        q + s.request_queue: consume,
        q + s.image_inbox: consume,
        # The queues of kinds of one's own (and their dead-letter queues): read, and made by a worker that loads one
        q + s.request_queue + "-kind-*": consume | {"sqs:CreateQueue", "sqs:TagQueue"},
        q + s.response_queue: {"sqs:SendMessage", "sqs:GetQueueUrl"},
        q + s.image_outbox: {"sqs:SendMessage", "sqs:GetQueueUrl"},
        q + "labkit-reply-*": {"sqs:SendMessage"},
        f"{b}/{UNPROCESSED_PREFIX}*": {"s3:GetObject"},
        f"{b}/{PAYLOADS_PREFIX}*": {"s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload"},
        f"{b}/{ARTIFACTS_PREFIX}*": {"s3:GetObject"},
        f"{b}/{PROCESSED_PREFIX}*": {"s3:PutObject", "s3:AbortMultipartUpload"},
        f"{b}/{LOGS_PREFIX}*": {"s3:PutObject", "s3:AbortMultipartUpload"},
        b: {"s3:ListBucket"},
        # The fleet's own group only (its id, in the ARN, is unknown until it exists)
        f"arn:aws:autoscaling:{s.region}:{ACCOUNT}:autoScalingGroup:*:autoScalingGroupName/"
        f"{fleet.FleetNames(bucket).group}": {"autoscaling:SetInstanceHealth", "autoscaling:UpdateAutoScalingGroup"},
        "*": set(fleet.policy.SESSION_MANAGER_ACTIONS),
    }


def assert_least_privilege(policy: dict[str, Any], s: Settings, bucket: str) -> None:
    grants = fleet.policy.grants(policy)
    assert grants == expected_grants(s, bucket)
    for st in policy["Statement"]:
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for action in actions:
            assert "*" not in action, f"wildcard action {action}"
            assert action in fleet.policy.WHY, f"{action} has no documented reason"
            if action.startswith(("sqs:", "s3:", "autoscaling:")):
                assert "*" not in resources, f"{action} on every resource"
                # No dead-letter queue: SQS redrives by itself, the worker never touches them.
                assert not any(r.endswith("-dlq") for r in resources)
            if action.startswith("s3:"):
                # The bucket's name is predictable: only this account's bucket of that name.
                assert st["Condition"] == {"StringEquals": {"s3:ResourceAccount": ACCOUNT}}, st
            if action == "autoscaling:UpdateAutoScalingGroup":
                # Only to stop the group: min and max 0, and no launch template, image, type or subnets changed
                assert st["Condition"]["NumericEquals"] == {"autoscaling:MinSize": "0", "autoscaling:MaxSize": "0"}
                assert st["Condition"]["Null"] == dict.fromkeys(
                    ["autoscaling:LaunchConfigurationName", "autoscaling:LaunchTemplateVersionSpecified",
                     "autoscaling:ImageId", "autoscaling:InstanceTypes", "autoscaling:VPCZoneIdentifiers"], "true")


# -- pure parts ------------------------------------------------------------------------------------

def test_worker_policy_grants_exactly_what_the_worker_does(emulator, tmp_path: Path) -> None:
    # Given settings with non-default names in another region
    s = Settings.load(state_dir=tmp_path, env={}, region="eu-west-1", request_queue="rq", image_inbox="ii",
                      response_queue="rs", image_outbox="io")
    # When the policy is built
    policy = fleet.policy.worker_policy(s, "labkit-test-bucket", ACCOUNT)
    # Then it names every resource, in that region and account, action by action
    assert_least_privilege(policy, s, "labkit-test-bucket")
    assert json.loads(json.dumps(policy)) == policy
    # And the trust policy lets EC2, and only EC2, assume the role
    trust = fleet.policy.trust_policy("eu-west-1")["Statement"]
    assert trust == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    assert fleet.policy.partition("cn-north-1") == "aws-cn"
    assert fleet.policy.partition("us-gov-west-1") == "aws-us-gov"


def test_deployer_policy_names_its_resources_and_gives_each_command_only_its_part(tmp_path: Path) -> None:
    from labkit.fleet.deployer import COMMANDS, deployer_policy
    s = Settings.load(state_dir=tmp_path, env={}, region="eu-west-1")
    # When the policy for `up` alone is built
    up = deployer_policy(s, "labkit-b", ACCOUNT, commands=["up"])
    # Then it holds queue and bucket creation, on labkit's queues and bucket by name, nothing of EC2 or IAM
    actions = {a for st in up["Statement"] for a in st["Action"]}
    assert "sqs:CreateQueue" in actions and "s3:CreateBucket" in actions
    assert not any(a.startswith(("ec2:", "iam:", "autoscaling:")) for a in actions)
    # And every SQS, S3, IAM and SSM statement of the full policy names its resources (listing queues aside)
    full = deployer_policy(s, "labkit-b", ACCOUNT)
    for st in full["Statement"]:
        # (ListQueues and ListAllMyBuckets have no resource narrower than *: AWS's Service Authorization Reference)
        if any(a.split(":")[0] in ("sqs", "s3", "iam", "ssm") for a in st["Action"]) and st["Action"] not in (
                ["sqs:ListQueues"], ["s3:ListAllMyBuckets"]):
            if st["Action"] == ["iam:CreateServiceLinkedRole"]:
                assert st["Condition"] == {"StringEquals": {"iam:AWSServiceName": "autoscaling.amazonaws.com"}}
                continue
            assert st["Resource"] != "*" and all(r != "*" for r in st["Resource"]), st
            assert all(f":{ACCOUNT}:" in r or r.startswith("arn:aws:s3:::labkit-b") or ":ssm:eu-west-1::" in r
                       for r in st["Resource"]), st
    assert [st for st in full["Statement"] if st["Action"] == ["iam:PassRole"]][0]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    # And each command's policy is part of the full one
    for cmd in COMMANDS:
        part = deployer_policy(s, "labkit-b", ACCOUNT, commands=[cmd])["Statement"]
        assert part and all(st in full["Statement"] for st in part)
    with pytest.raises(ConfigError, match="no deployer policy for launch"):
        deployer_policy(s, "labkit-b", ACCOUNT, commands=["launch"])


def test_cli_prints_the_worker_and_deployer_policies(settings: Settings) -> None:
    from labkit.fleet.deployer import deployer_policy
    worker = labkit("policy", "worker", s=settings)
    assert worker.returncode == 0, worker.stderr
    assert json.loads(worker.stdout) == fleet.policy.worker_policy(settings, settings.bucket or "", ACCOUNT)
    up = labkit("policy", "deployer", "--command", "up", "--command", "teardown", s=settings)
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout) == deployer_policy(settings, settings.bucket or "", ACCOUNT,
                                                      commands=["up", "teardown"])
    bad = labkit("policy", "deployer", "--command", "launch", s=settings)
    assert bad.returncode == 1 and "no deployer policy for launch" in bad.stderr and "Traceback" not in bad.stderr


def test_names_are_deterministic_and_fit_iam_limits() -> None:
    long_a, long_b = "labkit-" + "a" * 56, "labkit-" + "a" * 55 + "b"
    assert fleet.FleetNames("labkit-123456789012-us-east-1").role == "labkit-worker-123456789012-us-east-1"
    assert len(fleet.FleetNames(long_a).role) <= 64 and len(fleet.FleetNames(long_b).role) <= 64
    assert fleet.FleetNames(long_a).role != fleet.FleetNames(long_b).role
    assert fleet.FleetNames(long_a).role == fleet.FleetNames(long_a).role


@pytest.mark.parametrize("spec, message", [
    (fleet.FleetSpec(ssh_cidr="0.0.0.0/0", key_name="k"), "whole internet"),
    (fleet.FleetSpec(ssh_cidr="::/0", key_name="k"), "whole internet"),
    (fleet.FleetSpec(ssh_cidr="203.0.113.0/24"), "key pair"),
    (fleet.FleetSpec(ssh_cidr="203.0.113.5/24", key_name="k"), "CIDR"),
    (fleet.FleetSpec(ssh_cidr="everyone", key_name="k"), "CIDR"),
    (fleet.FleetSpec(workers=1000), "workers"),
    (fleet.FleetSpec(autoscale=(3, 2)), "MIN <= MAX"),
    (fleet.FleetSpec(instance_type="t3 micro"), "instance type"),
    (fleet.FleetSpec(instance_profile="bad/name"), "instance profile"),
])
def test_unsafe_or_impossible_requests_are_refused(spec: fleet.FleetSpec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        spec.validate()


def test_open_ssh_passes_only_when_confirmed() -> None:
    fleet.FleetSpec(ssh_cidr="0.0.0.0/0", key_name="k", allow_open_ssh=True).validate()
    assert fleet.is_open_cidr("0.0.0.0/0") and not fleet.is_open_cidr("10.0.0.0/8") and not fleet.is_open_cidr(None)
    assert fleet.parse_autoscale(" 0 : 4 ") == (0, 4)
    with pytest.raises(ConfigError, match="MIN:MAX"):
        fleet.parse_autoscale("4")


def test_user_data_is_the_bootstrap_script_with_its_settings_filled_in(tmp_path: Path) -> None:
    s = Settings.load(state_dir=tmp_path, env={}, bucket="labkit-b")
    values = fleet.user_data_values(s, "labkit-b", "artifacts/labkit/x/labkit-0.1.0-py3-none-any.whl", "ab" * 32, 6)
    text = fleet.render_user_data(values, requirements="# a comment\nsix==1.17.0 \\\n    --hash=sha256:" + "0" * 64)
    template = fleet.userdata.compact(fleet.bootstrap_template())
    # Without its comment lines (EC2's 16 KiB), and with the shebang and shellcheck's directives
    assert text.startswith("#!/bin/bash\n") and "# shellcheck disable=SC2086" in text
    assert not [ln for ln in text.splitlines()[1:] if ln.lstrip().startswith("#") and "shellcheck" not in ln]
    # The pinned requirements (comments dropped) are written into the quoted heredoc, nothing else is added
    block = "PINNED=\"$(cat <<'LABKIT_REQUIREMENTS'\n"
    assert block + "six==1.17.0 \\\n    --hash=sha256:" + "0" * 64 + "\nLABKIT_REQUIREMENTS\n" in text
    pinned = ["six==1.17.0 \\", "    --hash=sha256:" + "0" * 64]
    lines = text.splitlines()
    start = lines.index(block.strip())
    assert lines[start + 1:start + 3] == pinned
    del lines[start + 1:start + 3]
    changed = [(a, b) for a, b in zip(template.splitlines(), lines, strict=True) if a != b]
    # And only the settings lines differ, each now holding its value.
    assert {b for _, b in changed} == {f': "${{{k}:={v}}}"' for k, v in values.items() if v}
    assert ': "${LABKIT_CONCURRENCY:=6}"' in text and ': "${LABKIT_ENDPOINT_URL:=}"' in text
    with pytest.raises(ConfigError, match="cannot go into"):
        fleet.render_user_data({**values, "LABKIT_BUCKET": "b$(reboot)"})
    with pytest.raises(ConfigError, match="cannot go into"):
        fleet.render_user_data(values, requirements="six==1.17.0\nLABKIT_REQUIREMENTS\n$(reboot)")


def test_the_wheel_is_complete_reproducible_and_leaves_no_build_junk(tmp_path: Path) -> None:
    before = {p.name for p in ROOT.iterdir()}
    a = fleet.build_wheel(tmp_path / "a")
    b = fleet.build_wheel(tmp_path / "b")
    assert a.name == "labkit-0.1.0-py3-none-any.whl"
    assert a.read_bytes() == b.read_bytes()  # reproducible: the build id is the content's hash
    with zipfile.ZipFile(a) as zf:
        names = set(zf.namelist())
        assert {"labkit/fleet/__init__.py", "labkit/fleet/policy.py", "worker/__main__.py", "worker/loop.py",
                "worker/deploy/bootstrap.sh", "worker/deploy/labkit-worker.service"} <= names
        assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
        info = "labkit-0.1.0.dist-info/"
        assert "labkit = labkit.cli:main" in zf.read(info + "entry_points.txt").decode()
        metadata = zf.read(info + "METADATA").decode()
        assert "Name: labkit" in metadata and "Requires-Dist: boto3" in metadata
        # RECORD lists every other file with its real hash and size.
        record = {line.split(",")[0]: line.split(",")[1:] for line in zf.read(info + "RECORD").decode().splitlines()}
        assert set(record) == names
        for name, (digest, size) in record.items():
            if name.endswith("RECORD"):
                continue
            data = zf.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            assert int(size) == len(data)
    assert {p.name for p in ROOT.iterdir()} - before == set()  # no build/, dist/ or new egg-info


def test_job_modules_go_into_the_wheel_as_top_level_modules(tmp_path: Path) -> None:
    # Given a job module file, and one named like labkit's own package
    mine = tmp_path / "mykinds.py"
    mine.write_text("KINDS = 1\n")
    clash = tmp_path / "labkit.py"
    clash.write_text("")
    # When the wheel is built with the first one
    wheel = fleet.build_wheel(tmp_path / "w", job_modules=(str(mine),))
    # Then it sits at the top, recorded and named as a top-level module
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("mykinds.py") == b"KINDS = 1\n"
        info = "labkit-0.1.0.dist-info/"
        assert "mykinds.py" in zf.read(info + "RECORD").decode()
        assert zf.read(info + "top_level.txt").decode().split() == ["labkit", "mykinds", "worker"]
    # And the one that labkit's package would hide is refused
    with pytest.raises(ConfigError, match="clash"):
        fleet.build_wheel(tmp_path / "x", job_modules=(str(clash),))


# -- against the emulator --------------------------------------------------------------------------

def test_deploy_creates_a_least_privilege_fleet_converges_and_undeploy_leaves_nothing(settings: Settings) -> None:
    clients = Clients(settings)
    names = fleet.FleetNames(settings.bucket or "")
    # When two workers are deployed
    report = fleet.deploy(clients, fleet.FleetSpec(workers=2))
    assert any(line.startswith("role ") for line in report.created)

    # Then the role trusts EC2 only and its inline policy is exactly the worker's, action by action
    iam_client = clients("iam")
    role = iam_client.get_role(RoleName=names.role)["Role"]
    assert role["Path"] == fleet.IAM_PATH
    assert {"Key": fleet.FLEET_TAG, "Value": names.fleet} in role["Tags"]
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"] == fleet.policy.trust_policy()["Statement"]
    assert iam_client.list_role_policies(RoleName=names.role)["PolicyNames"] == [fleet.POLICY_NAME]
    assert iam_client.list_attached_role_policies(RoleName=names.role)["AttachedPolicies"] == []
    doc = iam_client.get_role_policy(RoleName=names.role, PolicyName=fleet.POLICY_NAME)["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    assert_least_privilege(doc, settings, names.fleet)
    # And the instance profile carries that role
    profile = iam_client.get_instance_profile(InstanceProfileName=names.profile)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [names.role]

    # And the security group lets nothing in, and only HTTPS out
    group = clients("ec2").describe_security_groups(
        Filters=[{"Name": f"tag:{fleet.FLEET_TAG}", "Values": [names.fleet]}])["SecurityGroups"]
    assert len(group) == 1
    assert group[0]["IpPermissions"] == []
    egress = group[0]["IpPermissionsEgress"]
    assert [(p["IpProtocol"], p.get("FromPort"), p.get("ToPort")) for p in egress] == [("tcp", 443, 443)]

    # And two instances run the current Amazon Linux image with the profile, IMDSv2 and the user data
    ami = clients("ssm").get_parameter(Name=AL2023_X86)["Parameter"]["Value"]
    instances = live_instances(clients, names)
    assert len(instances) == 2
    state = read_state(settings.state_dir)["fleet"]
    for inst in instances:
        assert inst["ImageId"] == ami and inst["InstanceType"] == "t3.micro"
        assert inst["IamInstanceProfile"]["Arn"] == profile["Arn"]
        assert [g["GroupId"] for g in inst["SecurityGroups"]] == [group[0]["GroupId"]]
        assert inst["MetadataOptions"]["HttpTokens"] == "required"
        assert "KeyName" not in inst
        script = user_data(clients, inst["InstanceId"])
        values = fleet.user_data_values(settings, names.fleet, state["wheel"],
                                        hashlib.sha256(clients.s3.get_object(
                                            Bucket=names.fleet, Key=state["wheel"])["Body"].read()).hexdigest())
        assert script == fleet.render_user_data(values)
        assert FAKE_KEY_ID not in script and FAKE_SECRET not in script
    # And they are spread over availability zones (one default subnet after the other)
    assert len({i["Placement"]["AvailabilityZone"] for i in instances}) == 2
    # And the state file records the fleet (names only)
    assert state["mode"] == "instances" and state["workers"] == 2 and state["profile_owned"] is True
    assert FAKE_SECRET not in settings.state_file.read_text()

    # When deploy runs again, nothing changes; asking for 3 adds one; asking for 1 terminates two
    again = fleet.deploy(clients, fleet.FleetSpec(workers=2))
    assert not again.created and not again.deleted and not again.updated
    assert sorted(i["InstanceId"] for i in live_instances(clients, names)) == sorted(i["InstanceId"] for i in instances)
    fleet.deploy(clients, fleet.FleetSpec(workers=3))
    assert len(live_instances(clients, names)) == 3
    fleet.deploy(clients, fleet.FleetSpec(workers=1))
    assert len(live_instances(clients, names)) == 1
    assert len(fleet.fleet_status(clients)["instances"]) == 1  # type: ignore[index]

    # When the fleet is undeployed, nothing is left, and a second undeploy is a no-op
    gone = fleet.undeploy(clients)
    assert f"role {names.role}" in gone.deleted and f"instance profile {names.profile}" in gone.deleted
    assert nothing_left(found := leftovers(clients, names)), found
    assert "fleet" not in read_state(settings.state_dir)
    assert fleet.fleet_status(clients) is None
    assert fleet.undeploy(clients).deleted == []


def test_autoscale_group_follows_the_request_queues_backlog(settings: Settings) -> None:
    clients = Clients(settings)
    names = fleet.FleetNames(settings.bucket or "")
    # Given a fleet of fixed instances
    fleet.deploy(clients, fleet.FleetSpec(workers=1))
    # When it is redeployed as an Auto Scaling group of 0 to 3
    report = fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 3), instance_type="t3.small"))
    assert any("replaced by the auto scaling group" in line for line in report.deleted)
    assert live_instances(clients, names) == []

    # Then the launch template carries the image, profile, security group, IMDSv2 and user data
    ec2 = clients("ec2")
    version = ec2.describe_launch_template_versions(LaunchTemplateName=names.launch_template,
                                                    Versions=["$Latest"])["LaunchTemplateVersions"][0]
    data = version["LaunchTemplateData"]
    assert data["ImageId"] == clients("ssm").get_parameter(Name=AL2023_X86)["Parameter"]["Value"]
    assert data["InstanceType"] == "t3.small"
    assert data["IamInstanceProfile"] == {"Name": names.profile}
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    state = read_state(settings.state_dir)["fleet"]
    sha = hashlib.sha256(clients.s3.get_object(Bucket=names.fleet, Key=state["wheel"])["Body"].read()).hexdigest()
    # (and the group's name: a failed bootstrap tells the group, bootstrap.sh's leave_group)
    assert base64.b64decode(data["UserData"]).decode() == fleet.userdata.with_values(fleet.render_user_data(
        fleet.user_data_values(settings, names.fleet, state["wheel"], sha)), {"LABKIT_GROUP": names.group})
    group_sg = ec2.describe_security_groups(GroupIds=data["SecurityGroupIds"])["SecurityGroups"][0]
    assert group_sg["IpPermissions"] == []

    # And the group is sized 0..3 in the default subnets, tagging its instances
    group = clients("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[names.group])["AutoScalingGroups"][0]
    assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 3, 0)
    assert group["LaunchTemplate"]["LaunchTemplateName"] == names.launch_template
    assert {(t["Key"], t["Value"], t["PropagateAtLaunch"]) for t in group["Tags"]} >= {
        (fleet.FLEET_TAG, names.fleet, True), (fleet.MODE_TAG, "autoscale", True)}

    # And a backlog alarm on ApproximateNumberOfMessagesVisible of both request queues adds instances,
    # an idle alarm brings the group back to its minimum
    policies = {p["PolicyName"]: p for p in clients("autoscaling").describe_policies(
        AutoScalingGroupName=names.group)["ScalingPolicies"]}
    out, back = policies[names.policy_out], policies[names.policy_in]
    assert out["PolicyType"] == "StepScaling" and out["AdjustmentType"] == "ChangeInCapacity"
    assert [s["ScalingAdjustment"] for s in out["StepAdjustments"]] == [1, 2, 4]
    assert back["AdjustmentType"] == "ExactCapacity" and back["ScalingAdjustment"] == 0
    alarms = {a["AlarmName"]: a for a in clients("cloudwatch").describe_alarms(
        AlarmNamePrefix=names.stem)["MetricAlarms"]}
    backlog, idle = alarms[names.alarm_backlog], alarms[names.alarm_idle]
    assert backlog["AlarmActions"] == [out["PolicyARN"]] and idle["AlarmActions"] == [back["PolicyARN"]]
    assert backlog["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and backlog["Threshold"] == 1.0

    def watched(alarm: dict[str, Any]) -> set[tuple[str, str]]:
        return {(m["MetricStat"]["Metric"]["MetricName"], m["MetricStat"]["Metric"]["Dimensions"][0]["Value"])
                for m in alarm["Metrics"] if "MetricStat" in m}
    visible = "ApproximateNumberOfMessagesVisible"
    assert watched(backlog) == {(visible, settings.request_queue), (visible, settings.image_inbox)}
    assert watched(idle) == watched(backlog) | {("ApproximateNumberOfMessagesNotVisible", settings.request_queue),
                                                ("ApproximateNumberOfMessagesNotVisible", settings.image_inbox)}
    assert idle["TreatMissingData"] == "breaching" and idle["Threshold"] == 0.0

    # And both fit SQS's metric cadence (a point a minute, minutes late, with gaps): 5-minute windows, a missing
    # window never read as "nothing waiting", idle only after 15 minutes of windows
    for alarm in (backlog, idle):
        assert {m["MetricStat"]["Period"] for m in alarm["Metrics"] if "MetricStat" in m} == {300}
        expression = next(m["Expression"] for m in alarm["Metrics"] if "Expression" in m)
        assert expression.startswith("SUM([") and "FILL" not in expression
    assert (backlog["EvaluationPeriods"], backlog["DatapointsToAlarm"], backlog["TreatMissingData"]) == (1, 1, "ignore")
    assert idle["EvaluationPeriods"] * 300 == 15 * 60 and idle["DatapointsToAlarm"] == idle["EvaluationPeriods"]

    # When deployed again unchanged, nothing changes; a new size only updates the group
    assert not fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 3), instance_type="t3.small")).changed
    resized = fleet.deploy(clients, fleet.FleetSpec(autoscale=(1, 4), instance_type="t3.small"))
    assert resized.updated == [f"auto scaling group {names.group} (min 1, max 4)"] and not resized.created

    # When undeployed, the group, its template and alarms go with the rest
    fleet.undeploy(clients)
    assert nothing_left(found := leftovers(clients, names)), found


def test_a_client_waiting_on_a_group_at_zero_says_it_waits_for_a_scale_out(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    from labkit.client import Lab
    from labkit.errors import JobTimeout
    clients = Clients(settings)
    # Given workers as an Auto Scaling group of 0 to 3, at 0 now, and no worker anywhere
    fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 3)))
    try:
        with Lab(settings) as lab, caplog.at_level(logging.WARNING, logger="labkit"):
            # When a client waits for a result
            with pytest.raises(JobTimeout) as info:
                lab.numbers([1, 2]).result(timeout=2)
            # Then it says, while waiting, that it waits for a scale-out, how long that takes and what to do
            said = [r.getMessage() for r in caplog.records if "scale-out" in r.getMessage()]
            assert len(said) == 1, said
            assert "is at 0 instances" in said[0] and "5 to 10 minutes" in said[0]
            assert "labkit deploy --autoscale 1:3" in said[0]
            # And its timeout says so too
            assert "waiting for a scale-out" in str(info.value)
            # And it says it once per client, not once per job
            with pytest.raises(JobTimeout):
                lab.numbers([3]).result(timeout=2)
            assert len([r for r in caplog.records if "scale-out" in r.getMessage()]) == 1
    finally:
        fleet.undeploy(clients)
    # And a client with no Auto Scaling fleet says nothing of scaling and never asks Auto Scaling
    with Lab(settings) as lab:
        with pytest.raises(JobTimeout) as info:
            lab.numbers([4]).result(timeout=1)
        assert "scale" not in str(info.value) and "is a worker running" in str(info.value)
        assert not any(call.startswith("autoscaling.") for call in lab.clients.counter.snapshot())


def test_deploy_ships_the_job_modules_and_names_them_in_the_user_data(settings: Settings) -> None:
    # Given settings naming a user job module by its path (LABKIT_JOB_MODULES)
    module = ROOT / "notebooks" / "kinds" / "wordcount.py"
    s = settings.replace(job_modules=(str(module),))
    clients = Clients(s)
    # When the fleet is deployed
    fleet.deploy(clients, fleet.FleetSpec(workers=1))
    try:
        # Then the uploaded wheel holds the module, byte for byte, as a top-level module
        key = read_state(s.state_dir)["fleet"]["wheel"]
        data = clients.s3.get_object(Bucket=s.bucket, Key=key)["Body"].read()
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            assert zf.read("wordcount.py") == module.read_bytes()
        # And the instances' user data has the worker load it by its import name
        script = fleet.fleet_user_data(clients)
        assert ': "${LABKIT_JOB_MODULES:=wordcount}"' in script
        assert str(module) not in script
    finally:
        fleet.undeploy(clients)
    assert nothing_left(found := leftovers(clients, fleet.FleetNames(s.bucket or ""))), found


def test_ssh_opens_only_to_the_given_range_and_closes_again(settings: Settings) -> None:
    clients = Clients(settings)
    names = fleet.FleetNames(settings.bucket or "")
    clients("ec2").create_key_pair(KeyName=f"key-{names.fleet}")
    try:
        def ingress() -> list[tuple[str, int, str]]:
            g = clients("ec2").describe_security_groups(
                Filters=[{"Name": f"tag:{fleet.FLEET_TAG}", "Values": [names.fleet]}])["SecurityGroups"][0]
            return [(p["IpProtocol"], p["FromPort"], r["CidrIp"]) for p in g["IpPermissions"] for r in p["IpRanges"]]

        fleet.deploy(clients, fleet.FleetSpec(workers=1, ssh_cidr="203.0.113.0/24", key_name=f"key-{names.fleet}"))
        assert ingress() == [("tcp", 22, "203.0.113.0/24")]
        assert live_instances(clients, names)[0]["KeyName"] == f"key-{names.fleet}"
        # A key that does not exist is a clear error, not an AWS traceback
        with pytest.raises(ConfigError, match="no key pair"):
            fleet.deploy(clients, fleet.FleetSpec(ssh_cidr="203.0.113.0/24", key_name="no-such-key"))
        # Redeployed without --ssh-cidr, the rule goes away
        fleet.deploy(clients, fleet.FleetSpec(workers=1))
        assert ingress() == []
    finally:
        fleet.undeploy(clients)
        clients("ec2").delete_key_pair(KeyName=f"key-{names.fleet}")
    assert nothing_left(found := leftovers(clients, names)), found


def test_an_existing_instance_profile_is_used_and_left_alone(settings: Settings) -> None:
    clients = Clients(settings)
    names = fleet.FleetNames(settings.bucket or "")
    iam_client = clients("iam")
    mine = f"classroom-{names.fleet}"
    iam_client.create_role(RoleName=mine, AssumeRolePolicyDocument=json.dumps(fleet.policy.trust_policy()))
    iam_client.create_instance_profile(InstanceProfileName=mine)
    iam_client.add_role_to_instance_profile(InstanceProfileName=mine, RoleName=mine)
    try:
        report = fleet.deploy(clients, fleet.FleetSpec(workers=1, instance_profile=mine))
        assert not any(line.startswith(("role", "instance profile")) for line in report.created)
        assert leftovers(clients, names)["roles"] == [] and leftovers(clients, names)["profiles"] == []
        assert live_instances(clients, names)[0]["IamInstanceProfile"]["Arn"].endswith(f"/{mine}")
        with pytest.raises(ConfigError, match="no instance profile"):
            fleet.deploy(clients, fleet.FleetSpec(workers=1, instance_profile="nobody-made-this"))
        fleet.undeploy(clients)
        assert nothing_left(found := leftovers(clients, names)), found
        assert iam_client.get_instance_profile(InstanceProfileName=mine)["InstanceProfile"]["Roles"]
    finally:
        iam_client.remove_role_from_instance_profile(InstanceProfileName=mine, RoleName=mine)
        iam_client.delete_instance_profile(InstanceProfileName=mine)
        iam_client.delete_role(RoleName=mine)


def test_cli_deploy_status_undeploy_and_teardown(settings: Settings) -> None:
    clients = Clients(settings)
    names = fleet.FleetNames(settings.bucket or "")
    # Opening SSH to everyone without a terminal to confirm on is refused, and nothing is created
    refused = labkit("deploy", "--ssh-cidr", "0.0.0.0/0", "--key-name", "k", s=settings)
    assert refused.returncode == 1 and "whole internet" in refused.stderr and "Traceback" not in refused.stderr
    assert nothing_left(leftovers(clients, names))

    deployed = labkit("deploy", "--workers", "2", s=settings)
    assert deployed.returncode == 0, deployed.stderr
    assert f"created   role {names.role}" in deployed.stdout
    assert "no instance boots" in deployed.stderr  # the emulator says so
    ids = [i["InstanceId"] for i in live_instances(clients, names)]
    assert len(ids) == 2

    status = labkit("status", s=settings)
    assert status.returncode == 0, status.stderr
    assert "fleet" in status.stdout and all(f"{i}" in status.stdout for i in ids) and "running" in status.stdout
    # and what it would bill on AWS: two t3.micro at list price, the bucket's storage, the queues
    assert "What the same would cost on AWS" in status.stdout
    assert re.search(r"2 EC2 instance\(s\) t3.micro +\$0\.0208/hour \(\$15\.18/month; \$0\.0104/hour each\)",
                     status.stdout)
    assert "(storage)" in status.stdout and "per million requests" in status.stdout
    as_json = json.loads(labkit("status", "--json", s=settings).stdout)
    assert sorted(i["id"] for i in as_json["fleet"]["instances"]) == sorted(ids)

    bad = labkit("deploy", "--autoscale", "three", s=settings)
    assert bad.returncode == 1 and "MIN:MAX" in bad.stderr

    # teardown undeploys first, then deletes queues and (--all) the bucket
    down = labkit("teardown", "--all", s=settings)
    assert down.returncode == 0, down.stderr
    assert f"deleted   role {names.role}" in down.stdout and f"deleted   bucket {names.fleet}" in down.stdout
    assert names.fleet not in [b["Name"] for b in clients.s3.list_buckets()["Buckets"]]
    assert nothing_left(found := leftovers(clients, names)), found


def test_undeploy_cli_when_nothing_was_deployed(settings: Settings) -> None:
    out = labkit("undeploy", s=settings)
    assert out.returncode == 0, out.stderr
    assert "is gone" in out.stdout and "deleted" not in out.stdout


@pytest.mark.slow
def test_notebook_03_deploys_shows_and_undeploys_on_the_emulator(settings: Settings, start_worker, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    import papermill as pm

    from labkit import costs

    # Given a local worker (the one that does the work on the emulator) and the kernel pointed at this test's
    # emulator and names through the environment
    worker = start_worker()
    for key, value in settings_env(settings).items():
        if key.startswith("LABKIT_"):
            monkeypatch.setenv(key, value)
    source = ROOT / "notebooks" / "03_ec2_worker.ipynb"
    committed = nbformat.read(source, as_version=4)
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)  # committed clean
    assert "parameters" in committed.cells[1].metadata.get("tags", [])

    # When papermill runs it, from the notebooks folder as a user would
    target = tmp_path / "03.ipynb"
    pm.execute_notebook(str(source), str(target), kernel_name="python3", cwd=str(source.parent),
                        parameters={"backend": "local", "state_dir": str(settings.state_dir), "workers": 2},
                        progress_bar=False, start_timeout=120)

    # Then its outputs show the policy, the created fleet, the user data, the local worker's answer and the end
    executed = nbformat.read(target, as_version=4)
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in executed.cells for o in c.get("outputs", []))
    names = fleet.FleetNames(settings.bucket or "")
    assert f"arn:aws:sqs:{settings.region}:{ACCOUNT}:{settings.request_queue}" in text
    assert f"created   role {names.role}" in text and "created   2 instance(s)" in text
    assert text.count("running   launched") >= 2
    assert f': "${{LABKIT_BUCKET:={settings.bucket}}}"' in text
    # And the answer names the local worker as people read it, not its raw id (before: "answered by worker vm:812")
    assert f"answered by local worker {worker.proc.pid}" in text and "nothing boots" in text
    # And it waited as the emulator needs (a minute at most), not as EC2 does
    assert "waiting up to 1 min for a local worker" in text
    # And it says what the fleet costs per hour on AWS: 2 t3.micro, 2 public IPv4 addresses, 2 root volumes, the
    # workers' polling; dated (before: no cost at all)
    hourly = costs.fleet_hourly({"instances": [{"type": "t3.micro", "state": "running"}] * 2})["total_usd"]
    assert f"cost     ${hourly:,.4f}/hour on AWS" in text and f"at list prices of {costs.AS_OF}" in text
    assert "2 public IPv4 address(es)" in text and "2 root volume(s), EBS gp3 8 GiB each" in text
    assert "fleet      none" in text
    assert f"summary: deployed 2 instance(s), ${hourly:.4f}/hour on AWS; nothing left" in text
    assert FAKE_KEY_ID not in target.read_text() and FAKE_SECRET not in target.read_text()
    # And nothing is left behind
    assert nothing_left(found := leftovers(Clients(settings), names)), found


def test_burstable_workers_launch_in_standard_credit_mode(settings: Settings) -> None:
    # (AWS: T3 and T4g launch as unlimited by default, and a worker busy for hours bills surplus CPU credits)
    clients = Clients(settings)
    names = fleet.FleetNames(settings.bucket or "")

    def template() -> dict[str, Any]:
        return clients("ec2").describe_launch_template_versions(
            LaunchTemplateName=names.launch_template, Versions=["$Latest"])["LaunchTemplateVersions"][0][
            "LaunchTemplateData"]

    try:
        # When a group of t3.micro workers is deployed, then one of m5.large
        fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 2), instance_type="t3.micro"))
        burstable = template()
        fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 2), instance_type="m5.large"))
        fixed = template()
    finally:
        fleet.undeploy(clients)
    # Then the t3 workers launch in standard mode, and the m5 ones (no credits) without the setting EC2 refuses
    assert burstable["CreditSpecification"] == {"CpuCredits": "standard"}
    assert fixed["InstanceType"] == "m5.large" and "CreditSpecification" not in fixed
    assert fleet.instances.is_burstable("t4g.small") and not fleet.instances.is_burstable("c7g.large")


def test_undeploy_works_in_the_fleets_recorded_region_whatever_aws_region_says_now(settings: Settings) -> None:
    # Given a fleet deployed in us-east-1
    here = Clients(settings)
    fleet.deploy(here, fleet.FleetSpec(workers=1))
    try:
        # When undeploy runs with AWS_REGION set to another region since (a new shell, another profile)
        elsewhere = Clients(settings.replace(region="eu-west-1"))
        fleet.undeploy(elsewhere)
        # Then the fleet's instances in us-east-1 are terminated (before: looked for in eu-west-1, none found,
        # the fleet forgotten, its instance left running and billing)
        left = [i for r in here("ec2").describe_instances(Filters=[
            {"Name": "tag:" + fleet.names.FLEET_TAG, "Values": [fleet.FleetNames(settings.bucket or "").fleet]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])["Reservations"]
            for i in r["Instances"]]
        assert left == []
    finally:
        fleet.undeploy(here)


def test_what_is_left_of_a_fleet_counts_its_launch_template_alarms_role_and_profile(settings: Settings) -> None:
    from labkit import teardown
    # Given a group's fleet of which only the group, its instances and the security group went (a teardown cut
    # short, or someone in the console): alarms, launch template, role and instance profile stay, billing or not
    clients = Clients(settings)
    fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 2)))
    names = fleet.FleetNames(settings.bucket or "")
    try:
        clients("autoscaling").delete_auto_scaling_group(AutoScalingGroupName=names.group, ForceDelete=True)
        sg = fleet.fleet_status(clients)["security_group"]  # type: ignore[index]
        clients("ec2").delete_security_group(GroupId=sg)
        # When a teardown looks at what is left
        left = teardown.leftovers(settings)
        # Then all of them are named (before: nothing, since no instance, group or security group was found)
        assert f"launch template {names.launch_template}" in left
        assert f"role {names.role}" in left and f"instance profile {names.profile}" in left
        assert [x for x in left if x.startswith("alarm ")]
    finally:
        fleet.undeploy(clients)
    assert not [x for x in teardown.leftovers(settings) if not x.startswith(("queue", "bucket"))]
