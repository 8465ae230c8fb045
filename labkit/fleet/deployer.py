"""What the person running ``labkit up``, ``deploy``, ``undeploy`` and ``teardown`` may need: an IAM policy
per command, built from the queue and bucket names like the worker's (:mod:`labkit.fleet.policy`).

Pure functions, no AWS call::

    deployer_policy(settings, bucket="labkit-123456789012-us-east-1", account="123456789012",
                    commands=("up", "deploy"))

``labkit policy deployer`` prints it; docs/aws.md lists it; tests/test_iam.py runs each command with
credentials that hold nothing else, on an emulator that enforces IAM. SQS, S3, IAM and SSM statements name
their resources. EC2, Auto Scaling and CloudWatch ones use ``*``: their create calls cannot be narrowed by
name (the resources do not exist yet, or their ids are chosen by AWS), and labkit finds what it deletes by its
``labkit:fleet`` tag; the cost guard's scheduled actions, which AWS authorizes on their group, name labkit's
groups.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from labkit import kinds
from labkit.config import ARTIFACTS_PREFIX, DLQ_SUFFIX, HEALTH_PREFIX, REPLY_QUEUE_PREFIX, Settings
from labkit.errors import ConfigError
from labkit.fleet.instances import AMI_PARAMETERS
from labkit.fleet.policy import VERSION, bucket_arn, partition, queue_arn
from labkit.fleet.roles import IAM_PATH

COMMANDS = ("up", "deploy", "undeploy", "teardown")


@dataclass(frozen=True)
class Names:
    """The ARNs a deployer statement may name, for one set of settings, bucket, account and region."""

    settings: Settings
    bucket: str
    account: str
    region: str

    def queues(self) -> list[str]:
        """labkit's queues (request, reply, dead-letter), the kinds' own queues and the clients' reply queues."""
        s, names = self.settings, list(self.settings.queue_names().values())
        names += [lane.request_queue(s) + DLQ_SUFFIX for lane in kinds.LANES.values()]
        names += [kinds.kind_queue_prefix(s) + "*"]  # teardown deletes them (docs/protocol.md, "Your own job kinds")
        return [queue_arn(self.region, self.account, n) for n in [*names, REPLY_QUEUE_PREFIX + "*"]]

    def bucket_only(self) -> list[str]:
        return [bucket_arn(self.region, self.bucket)]

    def objects(self, prefix: str = "") -> list[str]:
        return [bucket_arn(self.region, self.bucket, prefix + "*")]

    def iam(self) -> list[str]:
        """labkit's worker roles and instance profiles (path /labkit/, names labkit-worker-*)."""
        base = f"arn:{partition(self.region)}:iam::{self.account}:"
        return [f"{base}role{IAM_PATH}labkit-worker-*", f"{base}instance-profile{IAM_PATH}labkit-worker-*"]

    def roles(self) -> list[str]:
        return self.iam()[:1]

    def groups(self) -> list[str]:
        """labkit's Auto Scaling groups (labkit-worker-*; the group's id in the ARN is AWS's choice)."""
        return [f"arn:{partition(self.region)}:autoscaling:{self.region}:{self.account}:autoScalingGroup:*:"
                "autoScalingGroupName/labkit-worker-*"]

    def images(self) -> list[str]:
        """The public SSM parameters naming the current Amazon Linux images."""
        return [f"arn:{partition(self.region)}:ssm:{self.region}::parameter{p}" for p in AMI_PARAMETERS.values()]

    def academy_profile(self) -> list[str]:
        """AWS Academy's ready-made instance profile, which `labkit doctor` looks for."""
        return [f"arn:{partition(self.region)}:iam::{self.account}:instance-profile/LabInstanceProfile"]

    def principals(self) -> list[str]:
        """The account's users and roles: whoever runs `labkit doctor` (its policy simulator takes a principal)."""
        base = f"arn:{partition(self.region)}:iam::{self.account}:"
        return [f"{base}user/*", f"{base}role/*"]

    def everything(self) -> str:
        return "*"


@dataclass(frozen=True)
class Grant:
    """One statement: which commands need it, what it allows, on what (a :class:`Names` method), and why."""

    sid: str
    commands: tuple[str, ...]
    actions: tuple[str, ...]
    resources: Callable[[Names], Any]
    why: str
    condition: Callable[[Names], dict[str, Any]] | None = None


def _pass_to_ec2(names: Names) -> dict[str, Any]:
    return {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def _autoscaling_role(names: Names) -> dict[str, Any]:
    return {"StringEquals": {"iam:AWSServiceName": "autoscaling.amazonaws.com"}}


GRANTS = (
    Grant("QueuesCreate", ("up", "deploy"),
          ("sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SetQueueAttributes", "sqs:TagQueue"),
          Names.queues, "create the queues and their dead-letter queues, or bring their settings up to date"),
    Grant("BucketCreate", ("up", "deploy"),
          ("s3:CreateBucket", "s3:ListBucket", "s3:PutBucketPublicAccessBlock", "s3:PutEncryptionConfiguration",
           "s3:GetLifecycleConfiguration", "s3:PutLifecycleConfiguration", "s3:GetBucketPolicy",
           "s3:PutBucketPolicy"),
          Names.bucket_only, "create the bucket: public access blocked, encrypted, payloads expiring, TLS only"),
    Grant("BucketNames", ("up", "deploy"), ("s3:ListAllMyBuckets",), Names.everything,
          "tell a bucket name another account holds from a bucket of this account's that these credentials may not "
          "look at (ListBuckets: names only; it has no narrower resource)"),
    Grant("WheelShip", ("deploy",), ("s3:GetObject", "s3:PutObject"), lambda n: n.objects(ARTIFACTS_PREFIX),
          "upload the labkit wheel the instances install (artifacts/)"),
    Grant("HealthRead", ("deploy",), ("s3:GetObject",), lambda n: n.objects(HEALTH_PREFIX),
          "read the workers' heartbeats (logs/health/), to report the instances that are not healthy"),
    Grant("FleetRead", ("deploy", "undeploy", "teardown"),
          ("ec2:DescribeInstances", "ec2:DescribeInstanceTypes", "ec2:DescribeKeyPairs", "ec2:DescribeLaunchTemplates",
           "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets",
           "ec2:DescribeVpcs", "ec2:DescribeInstanceAttribute", "autoscaling:DescribeAutoScalingGroups",
           "autoscaling:DescribePolicies", "autoscaling:DescribeScheduledActions", "cloudwatch:DescribeAlarms"),
          Names.everything, "find the fleet's instances, group, its stop time, alarms and network by name and tag; "
          "read what an instance was launched with (its user data: notebook 03)"),
    Grant("Preflight", ("deploy",),
          ("ec2:DescribeAvailabilityZones", "ec2:DescribeInstanceTypeOfferings", "servicequotas:GetServiceQuota"),
          Names.everything, "`labkit doctor`, the day before: the region's zones, where the instance type is offered "
          "and the EC2 vCPU quota (no narrower resource exists for these reads)"),
    Grant("PreflightAcademy", ("deploy",), ("iam:GetInstanceProfile",), Names.academy_profile,
          "`labkit doctor`: is this an AWS Academy lab (its ready-made LabInstanceProfile, for --instance-profile)?"),
    Grant("PreflightSimulate", ("deploy",), ("iam:SimulatePrincipalPolicy",), Names.principals,
          "`labkit doctor`: put each command's actions to IAM's policy simulator for the caller (a user or the role "
          "behind a session: which one is not known beforehand, so any of the account's)"),
    Grant("ImagesRead", ("deploy",), ("ssm:GetParameter",), Names.images,
          "read the current Amazon Linux 2023 image id"),
    Grant("WorkerRoleManage", ("deploy",),
          ("iam:GetRole", "iam:CreateRole", "iam:TagRole", "iam:GetRolePolicy", "iam:PutRolePolicy",
           "iam:UpdateAssumeRolePolicy", "iam:GetInstanceProfile", "iam:CreateInstanceProfile",
           "iam:TagInstanceProfile", "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile"),
          Names.iam, "create the worker's role (path /labkit/) with its inline policy, and its instance profile"),
    Grant("WorkerRolePass", ("deploy",), ("iam:PassRole",), Names.roles,
          "hand the worker role to the instances (to EC2 only)", _pass_to_ec2),
    Grant("FleetLaunch", ("deploy",),
          ("ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupEgress",
           "ec2:RevokeSecurityGroupIngress", "ec2:RevokeSecurityGroupEgress", "ec2:CreateTags", "ec2:RunInstances",
           "ec2:TerminateInstances", "ec2:CreateLaunchTemplate", "ec2:CreateLaunchTemplateVersion",
           "ec2:ModifyLaunchTemplate", "ec2:DeleteLaunchTemplate", "autoscaling:CreateAutoScalingGroup",
           "autoscaling:UpdateAutoScalingGroup", "autoscaling:DeleteAutoScalingGroup",
           "autoscaling:PutScalingPolicy", "cloudwatch:PutMetricAlarm", "cloudwatch:TagResource",
           "cloudwatch:DeleteAlarms"),
          Names.everything, "the security group, the instances or the launch template, group, scaling policies and "
          "alarms (tagged as made: PutMetricAlarm with tags needs cloudwatch:TagResource), and replacing an older "
          "build or mode"),
    Grant("FleetStop", ("deploy",),
          ("autoscaling:PutScheduledUpdateGroupAction", "autoscaling:DeleteScheduledAction"), Names.groups,
          "the cost guard (deploy --hours/--until): the group's scheduled action that scales it to zero, moved or "
          "removed by a later deploy"),
    Grant("AutoScalingServiceRole", ("deploy",), ("iam:CreateServiceLinkedRole",), Names.everything,
          "an account's first Auto Scaling group creates AWSServiceRoleForAutoScaling", _autoscaling_role),
    Grant("FleetRemove", ("undeploy", "teardown"),
          ("ec2:TerminateInstances", "ec2:DeleteSecurityGroup", "ec2:DeleteLaunchTemplate",
           "autoscaling:DeleteAutoScalingGroup", "cloudwatch:DeleteAlarms"),
          Names.everything, "terminate the instances, delete the group, alarms, launch template and security group"),
    Grant("FleetStopRemove", ("undeploy", "teardown"), ("autoscaling:DeleteScheduledAction",), Names.groups,
          "delete the cost guard's scheduled action before its group"),
    Grant("WorkerRoleRemove", ("undeploy", "teardown"),
          ("iam:GetRole", "iam:GetInstanceProfile", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
           "iam:ListInstanceProfilesForRole", "iam:DeleteRolePolicy", "iam:DetachRolePolicy",
           "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile", "iam:DeleteRole"),
          Names.iam, "delete labkit's own role and instance profile (never one passed with --instance-profile)"),
    Grant("WheelsRemove", ("undeploy",), ("s3:ListBucket", "s3:DeleteObject"),
          lambda n: n.bucket_only() + n.objects(ARTIFACTS_PREFIX), "delete the uploaded wheels"),
    Grant("QueuesRemove", ("teardown",), ("sqs:ListQueues",), Names.everything,
          "list the clients' leftover labkit-reply-* queues (listing has no narrower resource)"),
    Grant("QueuesDelete", ("teardown",),
          ("sqs:GetQueueUrl", "sqs:DeleteQueue", "sqs:ListQueueTags", "sqs:GetQueueAttributes"), Names.queues,
          "delete the queues, the dead-letter queues and reply queues idle for an hour (their last-seen tag, else, "
          "for a queue an older client made, its creation time)"),
    Grant("BucketRemove", ("teardown",), ("s3:ListBucket", "s3:ListBucketVersions", "s3:DeleteObject",
                                          "s3:DeleteObjectVersion", "s3:ListBucketMultipartUploads",
                                          "s3:AbortMultipartUpload", "s3:DeleteBucket"),
          lambda n: n.bucket_only() + n.objects(), "empty the bucket (unfinished uploads aborted), then delete it"),
)


def deployer_policy(settings: Settings, bucket: str, account: str, region: str | None = None,
                    commands: Iterable[str] = COMMANDS) -> dict[str, Any]:
    """The IAM policy that lets its holder run ``commands`` (of :data:`COMMANDS`) for these names."""
    wanted = tuple(commands)
    unknown = sorted(set(wanted) - set(COMMANDS))
    if unknown:
        raise ConfigError(f"no deployer policy for {', '.join(unknown)}: choose from {', '.join(COMMANDS)}")
    names = Names(settings, bucket, account, region or settings.region)
    statements = []
    for g in GRANTS:
        if not set(g.commands) & set(wanted):
            continue
        st: dict[str, Any] = {"Sid": g.sid, "Effect": "Allow", "Action": sorted(g.actions),
                              "Resource": g.resources(names)}
        if g.condition:
            st["Condition"] = g.condition(names)
        statements.append(st)
    return {"Version": VERSION, "Statement": statements}


def why(commands: Iterable[str] = COMMANDS) -> list[tuple[str, str, str]]:
    """(statement id, its actions, why) for ``commands``: the table docs/aws.md shows."""
    wanted = set(commands)
    return [(g.sid, ", ".join(sorted(g.actions)), g.why) for g in GRANTS if set(g.commands) & wanted]
