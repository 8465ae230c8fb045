"""An emulator that enforces IAM: ``python -m labkit emulator`` (moto's server on 127.0.0.1) started with
``INITIAL_NO_AUTH_ACTION_COUNT``, so that after the first few calls every request must be signed by a user or
role the emulator knows and is checked against that principal's policies.

What moto checks (moto/core/authorization.py, moto/iam/access_control.py, read for this file):

- the action, named as moto names the call: ``sqs:SendMessageBatch`` for a batch, where AWS authorizes
  ``sqs:SendMessage``; ``s3:HeadObject``, where AWS authorizes ``s3:GetObject``; ... (:data:`MOTO_NAMES`);
- the resource, but only where moto can tell it: S3 buckets and keys; a queue only from a call's
  ``QueueUrl`` (never from ``GetQueueUrl``'s or ``CreateQueue``'s ``QueueName``); an IAM role only once it
  exists; everything else (EC2, Auto Scaling, CloudWatch, SSM, instance profiles) is checked against ``*``;
- conditions only with ``StringEquals`` on keys it knows (``sts:ExternalId``): the others (such as
  ``s3:ResourceAccount``) are passed.

:func:`as_moto_sees_it` turns a policy written for AWS into the one that allows the same calls on moto.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

from labkit.emulator import READY_PREFIX
from labkit.processes import Child, python_module

ACCOUNT = "123456789012"  # moto's account
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
# The calls the emulator lets through unsigned before it starts checking: the three that make the admin.
BOOTSTRAP_CALLS = 3

# moto names some calls differently from the action AWS authorizes them by: AWS action -> moto's names.
# Since moto 5.2.6 (the locked version) every S3 call is checked under its API operation's name (moto's
# ``_get_action`` reads it off the request through the service model; 5.2.5 used its own request map, which
# said ``GetObject`` for a HEAD of a key and ``CreateBucket`` for a PUT of ``?encryption``). The right-hand
# side is AWS's Service Authorization Reference read backwards: the operations each action authorizes.
MOTO_NAMES = {
    # AWS authorizes a batch by its single-message action; moto by the batch call's own name.
    "sqs:SendMessage": ["sqs:SendMessageBatch"],
    "sqs:DeleteMessage": ["sqs:DeleteMessageBatch"],
    "sqs:ChangeMessageVisibility": ["sqs:ChangeMessageVisibilityBatch"],
    # S3: AWS's action -> the operations it authorizes, where their names differ.
    "s3:GetObject": ["s3:HeadObject"],
    "s3:ListBucket": ["s3:HeadBucket", "s3:ListObjects", "s3:ListObjectsV2"],
    "s3:PutObject": ["s3:CreateMultipartUpload", "s3:UploadPart", "s3:CompleteMultipartUpload"],
    "s3:DeleteObject": ["s3:DeleteObjects"],
    "s3:DeleteObjectVersion": ["s3:DeleteObjects"],
    "s3:ListBucketVersions": ["s3:ListObjectVersions"],
    "s3:ListBucketMultipartUploads": ["s3:ListMultipartUploads"],
    "s3:PutBucketPublicAccessBlock": ["s3:PutPublicAccessBlock"],
    "s3:PutEncryptionConfiguration": ["s3:PutBucketEncryption"],
    "s3:PutLifecycleConfiguration": ["s3:PutBucketLifecycleConfiguration"],
    "s3:GetLifecycleConfiguration": ["s3:GetBucketLifecycleConfiguration"],
}
# moto names a service's actions by its signing name where that differs from IAM's prefix.
MOTO_PREFIXES = {"cloudwatch:": "monitoring:"}


def moto_names(action: str) -> list[str]:
    """The names moto checks ``action`` under (besides its own)."""
    out = list(MOTO_NAMES.get(action, []))
    out += [moto + action[len(aws):] for aws, moto in MOTO_PREFIXES.items() if action.startswith(aws)]
    return out
# Actions moto checks against "*" because it cannot tell their resource from the request (see above).
MOTO_UNRESOLVED_PREFIXES = ("ec2:", "autoscaling:", "cloudwatch:", "monitoring:", "ssm:")
MOTO_UNRESOLVED = {"sqs:GetQueueUrl", "sqs:CreateQueue", "sqs:ListQueues", "iam:CreateRole",
                   "iam:GetInstanceProfile", "iam:CreateInstanceProfile", "iam:TagInstanceProfile",
                   "iam:AddRoleToInstanceProfile", "iam:RemoveRoleFromInstanceProfile", "iam:DeleteInstanceProfile",
                   "iam:CreateServiceLinkedRole", "iam:GetRole", "iam:ListInstanceProfilesForRole"}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def as_moto_sees_it(policy: dict[str, Any]) -> dict[str, Any]:
    """``policy`` as moto must read it to allow the same calls as AWS: each action also under moto's names,
    and the actions moto checks against ``*`` also allowed on ``*`` (a statement of their own)."""
    out = copy.deepcopy(policy)
    extra = []
    for st in out["Statement"]:
        actions = _listed(st["Action"])
        st["Action"] = sorted({*actions, *(alias for a in actions for alias in moto_names(a))})
        loose = [a for a in st["Action"] if a in MOTO_UNRESOLVED or a.startswith(MOTO_UNRESOLVED_PREFIXES)]
        if loose and st["Resource"] != "*":
            extra.append({"Sid": st.get("Sid", "") + "AsMotoChecksIt", "Effect": st["Effect"], "Action": loose,
                          "Resource": "*"})
    out["Statement"] += extra
    return out


def keys_env(creds: dict[str, str]) -> dict[str, str]:
    """The variables that make labkit sign its emulator requests with ``creds`` (labkit.aws.clients)."""
    env = {"LABKIT_EMULATOR_ACCESS_KEY_ID": creds["aws_access_key_id"],
           "LABKIT_EMULATOR_SECRET_ACCESS_KEY": creds["aws_secret_access_key"]}
    if creds.get("aws_session_token"):
        env["LABKIT_EMULATOR_SESSION_TOKEN"] = creds["aws_session_token"]
    return env


@dataclass
class IamEmulator:
    """The running emulator, its administrator's keys, and ways to make principals with one policy each."""

    url: str
    child: Child
    admin: dict[str, str]

    def client(self, service: str, creds: dict[str, str] | None = None) -> Any:
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1", **(creds or self.admin))

    def user(self, name: str, policy: dict[str, Any]) -> dict[str, str]:
        """An IAM user whose only policy is ``policy``; returns its access keys."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="only", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}

    def role_session(self, name: str, policy: dict[str, Any]) -> dict[str, str]:
        """Session credentials (with a token, as on an instance or an AWS Academy lab) of a role whose only
        policy is ``policy``."""
        iam = self.client("iam")
        admin_arn = iam.get_user()["User"]["Arn"]
        trust = {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": admin_arn}, "Action": "sts:AssumeRole"}]}
        role = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]
        iam.put_role_policy(RoleName=name, PolicyName="only", PolicyDocument=json.dumps(policy))
        c = self.client("sts").assume_role(RoleArn=role["Arn"], RoleSessionName=name)["Credentials"]
        return {"aws_access_key_id": c["AccessKeyId"], "aws_secret_access_key": c["SecretAccessKey"],
                "aws_session_token": c["SessionToken"]}


@contextmanager
def iam_emulator(log: Path) -> Iterator[IamEmulator]:
    """Start the emulator enforcing IAM after :data:`BOOTSTRAP_CALLS` calls, which make its administrator."""
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_CALLS)}
    child = Child.spawn(python_module("labkit", "emulator", "--port", "0"), env=env, log=log, detach=False)
    try:
        child.wait_log(READY_PREFIX, timeout=60)
        url = child.output.split(READY_PREFIX, 1)[1].split()[0]
        anyone = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1", **anyone)
        iam.create_user(UserName="admin")
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(ADMIN_POLICY))
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        admin = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        yield IamEmulator(url, child, admin)
    finally:
        child.stop(10)
