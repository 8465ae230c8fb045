"""The instances: the current Amazon Linux image, what each is launched with, and exactly ``workers`` of them
(or none, when an Auto Scaling group runs them)."""

from __future__ import annotations

from typing import Any

from labkit.aws import ssm
from labkit.aws.ec2 import filters, tag_filter
from labkit.errors import AwsError, ConfigError
from labkit.fleet.names import BUILD_TAG, FLEET_TAG, MODE_TAG
from labkit.fleet.operation import Operation
from labkit.fleet.spec import FleetSpec
from labkit.fleet.userdata import with_values

BURSTABLE_FAMILIES = ("t2", "t3", "t3a", "t4g")  # EC2 types that earn and spend CPU credits

AMI_PARAMETERS = {
    "x86_64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    "arm64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
}
LIVE = ["pending", "running"]
NOT_TERMINATED = ["pending", "running", "stopping", "stopped", "shutting-down"]
SKIP_ZONE = ("Unsupported", "InsufficientInstanceCapacity")  # try the next subnet


def latest_ami(op: Operation, instance_type: str) -> str:
    """The current Amazon Linux 2023 image for the instance type's architecture (public SSM parameter)."""
    try:
        archs = op.ec2.architectures(instance_type) or ["x86_64"]
    except AwsError as exc:
        if exc.code in ("InvalidInstanceType", "InvalidParameterValue"):
            raise ConfigError(f"instance type {instance_type!r} does not exist in "
                              f"{op.clients.settings.region}") from exc
        raise
    arch = "x86_64" if "x86_64" in archs else "arm64"
    return ssm.parameter(op.clients("ssm"), AMI_PARAMETERS[arch])


def instances(op: Operation, states: list[str], mode: str | None = None) -> list[dict[str, Any]]:
    """The fleet's instances in ``states`` (of one ``mode`` when given), oldest first."""
    where = [tag_filter(FLEET_TAG, op.names.fleet), *filters(instance_state_name=states)]
    if mode:
        where.append(tag_filter(MODE_TAG, mode))
    return sorted(op.ec2.instances(*where), key=lambda i: (i["LaunchTime"], i["InstanceId"]))


def tag(instance: dict[str, Any], key: str) -> str | None:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), None)


def launch_data(op: Operation, spec: FleetSpec, ami: str, gid: str, user_data: str, profile: str,
                build: str, mode: str) -> dict[str, Any]:
    """What every worker instance is launched with (the run_instances / launch template fields)."""
    tags = op.names.tags(Name=op.names.stem, **{MODE_TAG: mode, BUILD_TAG: build})
    data: dict[str, Any] = {
        "ImageId": ami, "InstanceType": spec.instance_type, "SecurityGroupIds": [gid],
        "IamInstanceProfile": {"Name": profile},
        # IMDSv2 only, one hop: the role's credentials stay on the instance.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                              {"ResourceType": "volume", "Tags": tags}],
        # In a group, the bootstrap tells the group when it fails (bootstrap.sh: leave_group).
        "UserData": with_values(user_data, {"LABKIT_GROUP": op.names.group}) if mode == "autoscale" else user_data,
        # A worker that cannot serve powers its instance off (bootstrap.sh, the unit's FailureAction): that ends
        # it for good, so that it stops billing and an Auto Scaling group replaces it.
        "InstanceInitiatedShutdownBehavior": "terminate",
    }
    if spec.key_name:
        data["KeyName"] = spec.key_name
    if is_burstable(spec.instance_type):
        # T3 and T4g launch in unlimited mode by default: a worker busy for hours runs past its CPU credits and
        # the surplus credits bill on top of the hourly price. Standard mode throttles to the baseline instead.
        data["CreditSpecification"] = {"CpuCredits": "standard"}
    return data


def is_burstable(instance_type: str) -> bool:
    """A burstable type (t2, t3, t3a, t4g): CPU credits, standard or unlimited."""
    return instance_type.split(".", 1)[0] in BURSTABLE_FAMILIES


def converge_instances(op: Operation, spec: FleetSpec, launch: dict[str, Any], build: str, subnets: list[str]) -> None:
    """Exactly ``spec.workers`` running instances of this build and type: launch the missing ones,
    replace outdated ones (new first), terminate extras."""
    current = instances(op, LIVE, "instances")
    outdated = [i for i in current if tag(i, BUILD_TAG) != build or i["InstanceType"] != spec.instance_type]
    keep = [i for i in current if i not in outdated]
    extra = keep[spec.workers:] if len(keep) > spec.workers else []
    keep = keep[:spec.workers]
    need = spec.workers - len(keep)
    if need > 0:
        op.say(f"launching {need} {spec.instance_type} instance(s)")
        ids = [_launch_one(op, launch, subnets, len(keep) + n) for n in range(need)]
        op.report.created.append(f"{need} instance(s) {', '.join(ids)}")
    if keep:
        op.report.unchanged.append(f"{len(keep)} instance(s) {', '.join(i['InstanceId'] for i in keep)}")
    terminate(op, outdated, "outdated build or type")
    terminate(op, extra, "more than asked for")


def _launch_one(op: Operation, launch: dict[str, Any], subnets: list[str], index: int) -> str:
    """Launch one instance, in the default subnets in turn (spread over availability zones); a zone that
    does not offer the instance type is skipped."""
    order: list[str | None] = [subnets[(index + k) % len(subnets)] for k in range(len(subnets))] or [None]
    for subnet in order[:-1]:
        try:
            return op.after_propagation(lambda s=subnet: op.ec2.run_instance(launch, s), "launching an instance")
        except AwsError as exc:
            if exc.code not in SKIP_ZONE:
                raise
    return op.after_propagation(lambda: op.ec2.run_instance(launch, order[-1]), "launching an instance")


def terminate(op: Operation, found: list[dict[str, Any]], why: str) -> None:
    """Terminate the instances ``found`` (no call when there are none)."""
    if not found:
        return
    ids = [i["InstanceId"] for i in found]
    op.ec2.terminate(ids)
    op.report.deleted.append(f"{len(ids)} instance(s) {', '.join(ids)} ({why})")
