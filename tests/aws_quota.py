"""An EC2 vCPU quota on the emulator, answered as AWS answers it: a botocore plugin (loaded like tests/aws_faults.py,
through ``BOTOCORE_EXPERIMENTAL__PLUGINS``, comma-separated with others). moto's Service Quotas knows only VPC
quotas and its EC2 launches anything; this plugin makes a process meet the quota a new AWS account has.

``LABKIT_TEST_VCPU_QUOTA``, a number of vCPUs:

Service Quotas ``GetServiceQuota`` (ServiceCode ``ec2``, QuotaCode ``L-1216C47A``)
    answers the quota as AWS does (the Service Quotas API Reference, GetServiceQuota; the AWS CLI's example
    output for L-1216C47A): ``{"Quota": {"ServiceCode": "ec2", "QuotaCode": "L-1216C47A", "QuotaName":
    "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", "Value": N, "Unit": "None", ...}}``.
    Other quotas go to the emulator.

EC2 ``RunInstances``
    with ``DryRun``: passed to the emulator, which answers as AWS does ("If you have the required permissions,
    the error response is DryRunOperation. Otherwise, it is UnauthorizedOperation"; an emulator that enforces IAM
    refuses first). A dry run does not check the quota. A real launch of a standard type whose vCPUs
    (MinCount x the type's vCPUs) exceed the quota is answered ``VcpuLimitExceeded`` (HTTP 400, EC2's client
    errors) with AWS's message; nothing is launched. (AWS also counts the vCPUs running already; the tests that
    load this plugin launch nothing before.)

Every answer given is counted in ``LABKIT_TEST_FAULTS_DIR`` when set (tests/aws_faults.py's :func:`injected`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from botocore.awsrequest import AWSResponse

PLUGINS = "BOTOCORE_EXPERIMENTAL__PLUGINS"
QUOTA = "LABKIT_TEST_VCPU_QUOTA"
FOLDER = "LABKIT_TEST_FAULTS_DIR"
ME = "labkit_quota=tests.aws_quota"
CODE = "L-1216C47A"
NAME = "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"
# vCPUs of the types the tests launch (EC2's DescribeInstanceTypes: DefaultVCpus).
VCPUS = {"t3.nano": 2, "t3.micro": 2, "t3.small": 2, "t3.medium": 2, "t3.large": 2, "t3.xlarge": 4,
         "t4g.micro": 2, "m5.large": 2, "m5.xlarge": 4, "c5.large": 2, "c5.xlarge": 4}


def quota_env(vcpus: float, env: dict[str, str] | None = None) -> dict[str, str]:
    """The variables that make a process meet a vCPU quota of ``vcpus``, keeping the plugins ``env`` (else this
    process's environment) already names."""
    base = os.environ if env is None else env
    plugins = [p for p in (base.get(PLUGINS) or "").split(",") if p and p != ME]
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, base.get("PYTHONPATH", "")) if p)
    return {PLUGINS: ",".join([*plugins, ME]), QUOTA: repr(float(vcpus)), "PYTHONPATH": path}


def _answer(status: int, body: dict[str, Any], code: str) -> Any:
    folder = os.environ.get(FOLDER)
    if folder:
        (Path(folder) / f"answered-{code}-{os.getpid()}-{time.monotonic_ns()}").touch()
    body.setdefault("ResponseMetadata", {"HTTPStatusCode": status, "HTTPHeaders": {}})
    return AWSResponse("https://aws.invalid/", status, {}, None), body


class Quota:
    def __init__(self, vcpus: float) -> None:
        self.vcpus = vcpus

    def name_the_call(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        """before-parameter-build: keep the parameters (before-call is not told them as given)."""
        context["labkit_quota_params"] = dict(params)

    def answer_quota(self, context: dict[str, Any], **_: Any) -> Any:
        """before-call, GetServiceQuota: EC2's standard On-Demand vCPUs."""
        p = context.get("labkit_quota_params", {})
        if p.get("ServiceCode") != "ec2" or p.get("QuotaCode") != CODE:
            return None
        return _answer(200, {"Quota": {
            "ServiceCode": "ec2", "ServiceName": "Amazon Elastic Compute Cloud (Amazon EC2)",
            "QuotaArn": f"arn:aws:servicequotas:{p.get('Region', 'us-east-1')}:123456789012:ec2/{CODE}",
            "QuotaCode": CODE, "QuotaName": NAME, "Value": self.vcpus, "Unit": "None", "Adjustable": True,
            "GlobalQuota": False, "UsageMetric": {
                "MetricNamespace": "AWS/Usage", "MetricName": "ResourceCount", "MetricStatisticRecommendation":
                "Maximum", "MetricDimensions": {"Class": "Standard/OnDemand", "Resource": "vCPU", "Service": "EC2",
                                                "Type": "Resource"}}}}, "GetServiceQuota")

    def answer_launch(self, context: dict[str, Any], **_: Any) -> Any:
        """before-call, RunInstances: a real launch past the quota is refused; a dry run goes to the emulator."""
        p = context.get("labkit_quota_params", {})
        kind = p.get("InstanceType", "m1.small")
        if p.get("DryRun") or kind.split(".")[0][:1] not in "acdhimrtz":
            return None
        asked = VCPUS.get(kind, 2) * int(p.get("MinCount", 1))
        if asked <= self.vcpus:
            return None
        return _answer(400, {"Error": {"Code": "VcpuLimitExceeded", "Message": (
            f"You have requested more vCPU capacity than your current vCPU limit of {self.vcpus:g} allows for the "
            "instance bucket that the specified instance type belongs to. Please visit "
            "http://aws.amazon.com/contact-us/ec2-request to request an adjustment to this limit.")}},
            "VcpuLimitExceeded")


def initialize_client_plugin(client: Any) -> None:
    """botocore's plugin entry point: called for every client this process builds."""
    if not os.environ.get(QUOTA):
        return
    quota = Quota(float(os.environ[QUOTA]))
    service, events = client.meta.service_model.service_name, client.meta.events
    if service == "service-quotas":
        events.register("before-parameter-build.service-quotas.GetServiceQuota", quota.name_the_call)
        events.register("before-call.service-quotas.GetServiceQuota", quota.answer_quota)
    elif service == "ec2":
        events.register("before-parameter-build.ec2.RunInstances", quota.name_the_call)
        events.register("before-call.ec2.RunInstances", quota.answer_launch)
