"""The worker's IAM policy: exactly what ``python -m worker`` does on an EC2 instance, and no more.

Pure functions (no AWS calls), so the documents can be read and tested on their own::

    worker_policy(settings, bucket="labkit-123456789012-us-east-1", account="123456789012")

Every SQS, S3 and Auto Scaling statement names its resources; only the Session Manager statement uses ``*``
(those actions do not support resource-level permissions). :data:`WHY` says why each action is there.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote

from labkit import kinds
from labkit.aws.arns import bucket_arn, partition, queue_arn
from labkit.config import (
    ARTIFACTS_PREFIX,
    LOGS_PREFIX,
    PAYLOADS_PREFIX,
    PROCESSED_PREFIX,
    REPLY_QUEUE_PREFIX,
    UNPROCESSED_PREFIX,
    Settings,
)
from labkit.fleet.names import FleetNames

VERSION = "2012-10-17"
SESSION_MANAGER_ACTIONS = [
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
]

# Action -> why the worker needs it (docs/aws.md and the closing note repeat this table).
WHY = {
    "sqs:GetQueueUrl": "the worker looks its request and response queues up by name when it starts",
    "sqs:GetQueueAttributes": "on the request queues only: the worker reads their visibility timeout when it "
                              "starts, to time its heartbeat on long jobs",
    "sqs:ReceiveMessage": "long-poll the two request queues for jobs, and the queues of the job kinds it loads "
                          "(<requestQueue>-kind-*)",
    "sqs:CreateQueue": "on <requestQueue>-kind-* only: a worker that loads a kind of one's own makes its queue (and "
                       "dead-letter queue) when it starts, if no client made it first",
    "sqs:TagQueue": "on <requestQueue>-kind-* only: the kind queues it makes carry labkit's tag (tag-on-create)",
    "sqs:ChangeMessageVisibility": "keep a long job invisible while it runs (heartbeat), and hand unstarted or "
                                   "unanswerable requests back early on a stop or a failed reply",
    "sqs:DeleteMessage": "delete a request once its reply is sent (never before: nothing is lost)",
    "sqs:SendMessage": "send replies: to responseQueue/imageOutbox and to the clients' labkit-reply-* queues",
    "s3:GetObject": "read input images (images/unprocessed/), claim-check payloads (payloads/) and, at boot, "
                    "the labkit wheel (artifacts/)",
    "s3:PutObject": "write processed images (images/processed/), large results (payloads/), job logs and the "
                    "worker's health heartbeat (logs/)",
    "s3:AbortMultipartUpload": "where it writes only: a large result goes up in parts, and a failed upload is "
                               "abandoned at once instead of leaving its parts to bill until the bucket's lifecycle "
                               "rule aborts them a day later",
    "s3:ListBucket": "on the bucket only: without it S3 answers a missing object with 403 instead of 404, and "
                     "the worker could not tell the sender 'not_found'",
    "autoscaling:SetInstanceHealth": "on the fleet's own group only: a bootstrap that fails tells the group its "
                                     "instance is unhealthy, so that the group replaces it at once (a group ignores "
                                     "the launch template's terminate-on-shutdown)",
    "autoscaling:UpdateAutoScalingGroup": "on the fleet's own group only, and only to set its min and max size to 0 "
                                          "(conditions): after 3 failed bootstraps of a build within an hour the "
                                          "group stops instead of booting broken instances forever",
    "ssm:UpdateInstanceInformation": "register the instance with Systems Manager, so Session Manager can reach "
                                     "it with no inbound port open",
    "ssmmessages:CreateControlChannel": "Session Manager: open a shell session over HTTPS instead of SSH",
    "ssmmessages:CreateDataChannel": "Session Manager (as above)",
    "ssmmessages:OpenControlChannel": "Session Manager (as above)",
    "ssmmessages:OpenDataChannel": "Session Manager (as above)",
}


def trust_policy(region: str = "us-east-1") -> dict[str, Any]:
    """Who may assume the worker role: EC2 instances, nothing else."""
    service = "ec2.amazonaws.com.cn" if partition(region) == "aws-cn" else "ec2.amazonaws.com"
    return {"Version": VERSION, "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}


def worker_policy(settings: Settings, bucket: str, account: str, region: str | None = None,
                  session_manager: bool = True) -> dict[str, Any]:
    """The worker role's inline policy for ``settings``' queues and ``bucket`` in ``account``.

    Dead-letter queues are deliberately absent: SQS moves a message there by itself after
    ``max_receive_count`` receives, the worker never reads or writes them (a kind queue's dead-letter queue,
    ``<requestQueue>-kind-<name>-dlq``, shares its prefix: IAM names no narrower pattern). Every S3 statement holds only
    while the bucket belongs to ``account`` (``s3:ResourceAccount``): the bucket's name
    (``labkit-<account>-<region>``) is predictable, and a bucket of that name in another account must
    never receive the worker's results or logs.
    """
    region = region or settings.region
    own_bucket = {"StringEquals": {"s3:ResourceAccount": account}}

    def q(name: str) -> str:
        return queue_arn(region, account, name)

    def obj(prefix: str) -> str:
        return bucket_arn(region, bucket, prefix + "*")

    kind_queues = q(kinds.kind_queue_prefix(settings) + "*")  # the kinds' own queues (and dead-letter queues)
    statements: list[dict[str, Any]] = [
        {"Sid": "ConsumeRequests", "Effect": "Allow",
         "Action": ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
                    "sqs:ReceiveMessage"],
         "Resource": [q(settings.request_queue), q(settings.image_inbox), kind_queues]},
        {"Sid": "MakeKindQueues", "Effect": "Allow", "Action": ["sqs:CreateQueue", "sqs:TagQueue"],
         "Resource": [kind_queues]},
        {"Sid": "SendReplies", "Effect": "Allow",
         "Action": ["sqs:GetQueueUrl", "sqs:SendMessage"],
         "Resource": [q(settings.response_queue), q(settings.image_outbox)]},
        {"Sid": "SendToClientReplyQueues", "Effect": "Allow",
         "Action": ["sqs:SendMessage"],
         "Resource": [q(REPLY_QUEUE_PREFIX + "*")]},
        {"Sid": "ReadInputsAndArtifacts", "Effect": "Allow",
         "Action": ["s3:GetObject"],
         "Resource": [obj(UNPROCESSED_PREFIX), obj(PAYLOADS_PREFIX), obj(ARTIFACTS_PREFIX)], "Condition": own_bucket},
        {"Sid": "WriteOutputsAndLogs", "Effect": "Allow",
         "Action": ["s3:AbortMultipartUpload", "s3:PutObject"],
         "Resource": [obj(PROCESSED_PREFIX), obj(PAYLOADS_PREFIX), obj(LOGS_PREFIX)], "Condition": own_bucket},
        {"Sid": "TellMissingFromForbidden", "Effect": "Allow",
         "Action": ["s3:ListBucket"],
         "Resource": [bucket_arn(region, bucket)], "Condition": own_bucket},
    ]
    statements += _own_group(region, account, FleetNames(bucket).group)
    if session_manager:
        statements.append({"Sid": "SessionManager", "Effect": "Allow", "Action": list(SESSION_MANAGER_ACTIONS),
                           "Resource": "*"})
    return {"Version": VERSION, "Statement": statements}


def group_arn(region: str, account: str, group: str) -> str:
    """The ARN of the Auto Scaling group ``group`` (its id, part of the ARN, is not known before it exists)."""
    return f"arn:{partition(region)}:autoscaling:{region}:{account}:autoScalingGroup:*:autoScalingGroupName/{group}"


def _own_group(region: str, account: str, group: str) -> list[dict[str, Any]]:
    """What a failed bootstrap may do to its own group: mark its instance unhealthy; stop the group, which is
    UpdateAutoScalingGroup with min and max 0 and nothing else (no template, image, type or subnets: the keys
    of those must be absent). SuspendProcesses would also stop launches, but cannot be limited to Launch: it
    would let the role suspend Terminate or HealthCheck too, keeping broken instances billing."""
    arn = group_arn(region, account, group)
    untouched = ["autoscaling:LaunchConfigurationName", "autoscaling:LaunchTemplateVersionSpecified",
                 "autoscaling:ImageId", "autoscaling:InstanceTypes", "autoscaling:VPCZoneIdentifiers"]
    return [
        {"Sid": "ReplaceFailedInstance", "Effect": "Allow", "Action": ["autoscaling:SetInstanceHealth"],
         "Resource": [arn]},
        {"Sid": "StopGroupAfterFailedBoots", "Effect": "Allow", "Action": ["autoscaling:UpdateAutoScalingGroup"],
         "Resource": [arn],
         "Condition": {"NumericEquals": {"autoscaling:MinSize": "0", "autoscaling:MaxSize": "0"},
                       "Null": {key: "true" for key in untouched}}},
    ]


def grants(policy: dict[str, Any]) -> dict[str, set[str]]:
    """Resource -> the set of actions a policy allows on it (for reading and testing policies)."""
    out: dict[str, set[str]] = {}
    for st in policy.get("Statement", []):
        if st.get("Effect") != "Allow":
            continue
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        for r in resources:
            out.setdefault(r, set()).update(actions)
    return out


def normal_doc(doc: Any) -> str | None:
    """A JSON document in one comparable form: IAM returns policies as dicts or URL-encoded JSON text."""
    if doc is None:
        return None
    if isinstance(doc, str):
        doc = json.loads(unquote(doc) if doc.startswith("%") else doc)
    return json.dumps(doc, sort_keys=True)
