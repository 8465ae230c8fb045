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
  ``s3:ResourceAccount``, ``aws:ResourceTag/...``) are passed, and policy variables (``${aws:userid}``) are never
  filled in. moto 5.2.6's ``IAMRequestBase.check_action_permitted`` does not even hand the request to the
  conditions it could check.

So this emulator is started through :func:`serve` (``python -m tests.iam_emulator``), which replaces moto's
check with :func:`check_action_permitted`: the same walk over the caller's policies (an explicit Deny wins, else
an Allow is needed), where a statement's conditions are evaluated as IAM evaluates them on the keys a student's
isolation rests on: ``aws:userid`` (what STS GetCallerIdentity says of the caller: moto's own answer),
``aws:RequestTag/*`` and ``aws:TagKeys`` (SQS CreateQueue's and TagQueue's tags), ``aws:ResourceTag/*`` (a
queue's tags), ``s3:prefix`` (ListObjects) and ``s3:ResourceAccount`` (the one account), with the ``String*``
operators, ``...IfExists`` and ``ForAllValues:``/``ForAnyValue:``, and ``${...}`` variables filled in. Any other
operator on those keys fails closed (the statement does not apply); keys outside them are passed, as moto does.

:func:`as_moto_sees_it` turns a policy written for AWS into the one that allows the same calls on moto.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

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
                          "Resource": "*", **({"Condition": st["Condition"]} if "Condition" in st else {})})
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


# -- conditions, evaluated as IAM does (moto does not) ---------------------------------------------------------
EVALUATED_KEYS = ("aws:userid", "aws:requesttag/", "aws:tagkeys", "aws:resourcetag/", "s3:prefix",
                  "s3:resourceaccount")
_VARIABLE = re.compile(r"\$\{([^}]+)\}")


def _glob(patterns: list[str], value: str, fold: bool = False) -> bool:
    """IAM's wildcards (``*``, ``?``) in an Action, Resource or StringLike value."""
    rx = (re.compile(fnmatch.translate(p), re.IGNORECASE if fold else 0) for p in patterns)
    return any(r.match(value) for r in rx)


def _operator(op: str, values: list[str] | None, expected: list[str]) -> bool:
    """One condition operator on the request's values of a key (None: the key is not in the request)."""
    qualifier, _, base = op.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    tests = {"StringEquals": lambda v: v in expected, "StringLike": lambda v: _glob(expected, v)}
    negated = base.startswith("StringNot")
    test = tests.get(base.replace("StringNot", "String"))
    if test is None:
        return False  # an operator this layer does not evaluate: fail closed
    if not values:
        return {"ForAllValues": True, "ForAnyValue": False}.get(qualifier, if_exists or negated)
    one = (lambda v: not test(v)) if negated else test
    return all(map(one, values)) if qualifier == "ForAllValues" else any(map(one, values))


def _conditions_hold(condition: dict[str, Any], ctx: dict[str, list[str]]) -> bool:
    for op, pairs in condition.items():
        for key, expected in pairs.items():
            k = key.lower()
            if not k.startswith(EVALUATED_KEYS) or (k.startswith("aws:resourcetag/") and "resource-tags" not in ctx):
                continue  # a key moto passes, and so do we (see the module's docstring)
            filled = [_VARIABLE.sub(lambda m: (ctx.get(m.group(1).lower()) or ["\0"])[0], str(e))
                      for e in _listed(expected)]
            if any("\0" in e for e in filled):
                return False  # a variable with no value: the statement does not apply
            if not _operator(op, ctx.get(k), filled):
                return False
    return True


def statement_applies(st: dict[str, Any], action: str, resource: str, ctx: dict[str, list[str]]) -> bool:
    """Does statement ``st`` (Allow or Deny) cover this call: action, resource and conditions?"""
    if "Action" in st and not _glob(_listed(st["Action"]), action, fold=True):
        return False
    if "NotAction" in st and _glob(_listed(st["NotAction"]), action, fold=True):
        return False
    if "Resource" in st and not _glob(_listed(st["Resource"]), resource):
        return False
    return _conditions_hold(st.get("Condition", {}), ctx)


def request_context(req: Any, resource: str) -> dict[str, list[str]]:
    """The condition keys of a moto request (``IAMRequestBase``), lower-cased."""
    from moto.sqs.models import sqs_backends
    from moto.sts.models import sts_backends
    from moto.utilities.utils import get_partition
    partition = get_partition(req._region)
    who = sts_backends[req.account_id][partition].get_caller_identity(req._access_key._access_key_id, req._region)
    ctx = {"aws:userid": [who[0]], "s3:resourceaccount": [req.account_id]}
    if req._action.startswith("sqs:"):
        try:
            params = json.loads(req._body or b"{}")
        except ValueError:
            params = {}  # the query protocol: botocore speaks JSON to SQS; no tags seen, conditions on them fail
        tags = params.get("tags") or params.get("Tags") or {}
        ctx.update({f"aws:requesttag/{k.lower()}": [v] for k, v in tags.items()})
        if tags:
            ctx["aws:tagkeys"] = list(tags)
        queue = sqs_backends[req.account_id][req._region].queues.get(str(params.get("QueueUrl", "")).split("/")[-1])
        ctx["resource-tags"] = []  # aws:ResourceTag is evaluated for SQS (absent on a queue not yet made)
        ctx.update({f"aws:resourcetag/{k.lower()}": [v] for k, v in (queue.tags if queue else {}).items()})
    if req._action.startswith("s3:"):
        query = parse_qs(urlparse(req._path).query, keep_blank_values=True)
        if "prefix" in query:
            ctx["s3:prefix"] = query["prefix"][:1]
    return ctx


def check_action_permitted(req: Any, resource: str) -> None:
    """moto's ``IAMRequestBase.check_action_permitted``, with conditions evaluated (see the module's docstring)."""
    from moto.iam.access_control import IAMPolicy
    if req._action == "sts:GetCallerIdentity":  # always allowed, as on AWS
        return
    ctx = request_context(req, resource)
    allowed = False
    for policy in req._access_key.collect_policies():
        statements = IAMPolicy(policy)._policy_json["Statement"]
        for st in _listed(statements):
            if statement_applies(st, req._action, resource, ctx):
                if st["Effect"] == "Deny":
                    req._raise_access_denied()
                allowed = True
    if req._is_assuming_role_operation(resource):
        allowed = allowed and req._check_role_trust_relationship(resource)
    if not allowed:
        req._raise_access_denied()


def serve(argv: list[str]) -> int:
    """``labkit emulator ARGV`` with :func:`check_action_permitted` in place of moto's check."""
    from moto.iam.access_control import IAMRequestBase

    from labkit.cli import main
    IAMRequestBase.check_action_permitted = check_action_permitted  # type: ignore[method-assign]
    return main(["emulator", *argv])


@contextmanager
def iam_emulator(log: Path) -> Iterator[IamEmulator]:
    """Start the emulator enforcing IAM after :data:`BOOTSTRAP_CALLS` calls, which make its administrator;
    conditions are evaluated (:func:`check_action_permitted`)."""
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(BOOTSTRAP_CALLS)}
    child = Child.spawn(python_module("tests.iam_emulator", "--port", "0"), env=env, log=log, detach=False,
                        cwd=Path(__file__).resolve().parent.parent)
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


if __name__ == "__main__":
    sys.exit(serve(sys.argv[1:]))
