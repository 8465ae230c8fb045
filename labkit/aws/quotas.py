"""EC2's capacity for a fleet: the account's vCPU quota for On-Demand standard instances (Service Quotas), the
vCPUs of an instance type, the zones that offer it and the vCPUs already running. Thin calls for
:mod:`labkit.doctor`; they raise :class:`~labkit.errors.AwsError` (AWS's code in ``.code``)."""

from __future__ import annotations

from typing import Any

from labkit.aws.calls import call, pages
from labkit.errors import AwsError, aws_error_code

# "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances", in vCPUs, per region (Service Quotas, ec2).
STANDARD_QUOTA = "L-1216C47A"
STANDARD_QUOTA_NAME = "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"
# Families whose first letter is standard but that count against quotas of their own.
OTHER_BUCKETS = ("inf", "hpc", "dl", "trn", "u-", "mac", "vt")
NO_SUCH_QUOTA = ("NoSuchResourceException", "NoSuchResource")


def is_standard(instance_type: str) -> bool:
    """Does ``instance_type`` count against :data:`STANDARD_QUOTA` (t3.micro, m7g.large: yes; g5, p4d: no)?"""
    family = instance_type.split(".", 1)[0]
    return family[:1] in "acdhimrtz" and not family.startswith(OTHER_BUCKETS)


def standard_vcpu_quota(client: Any) -> float | None:
    """The account's vCPU quota for On-Demand standard instances in the client's region (the ``service-quotas``
    client); None where Service Quotas does not know it (an emulator)."""
    try:
        quota = call(client, "get_service_quota", "reading the EC2 vCPU quota", ServiceCode="ec2",
                     QuotaCode=STANDARD_QUOTA)
    except AwsError as exc:
        if aws_error_code(exc) in NO_SUCH_QUOTA:
            return None
        raise
    return float(quota["Quota"]["Value"])


def vcpus(ec2: Any, instance_type: str) -> int | None:
    """The default vCPUs of ``instance_type``; None when EC2 does not describe it in this region."""
    try:
        types = call(ec2, "describe_instance_types", f"looking up instance type {instance_type}",
                     InstanceTypes=[instance_type])["InstanceTypes"]
    except AwsError as exc:
        if aws_error_code(exc) in ("InvalidInstanceType", "InvalidParameterValue"):
            return None
        raise
    return int(types[0]["VCpuInfo"]["DefaultVCpus"]) if types else None


def zones(ec2: Any) -> list[str]:
    """The region's availability zones that are available to this account, sorted."""
    found = call(ec2, "describe_availability_zones", "listing the availability zones")["AvailabilityZones"]
    return sorted(z["ZoneName"] for z in found if z.get("State", "available") == "available")


def offered_in(ec2: Any, instance_type: str) -> list[str]:
    """The availability zones that offer ``instance_type``, sorted."""
    found = pages(ec2, "describe_instance_type_offerings", "InstanceTypeOfferings",
                  f"listing the zones that offer {instance_type}", LocationType="availability-zone",
                  Filters=[{"Name": "instance-type", "Values": [instance_type]}])
    return sorted({o["Location"] for o in found})


def running_standard_vcpus(ec2: Any) -> int:
    """vCPUs of the standard On-Demand instances pending or running in the region now (what the quota counts)."""
    reservations = pages(ec2, "describe_instances", "Reservations", "counting the running instances",
                         Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    total = 0
    for inst in (i for r in reservations for i in r["Instances"]):
        if inst.get("InstanceLifecycle") == "spot" or not is_standard(inst.get("InstanceType", "")):
            continue
        cpu = inst.get("CpuOptions") or {}
        total += int(cpu.get("CoreCount", 1)) * int(cpu.get("ThreadsPerCore", 1))
    return total
