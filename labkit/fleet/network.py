"""Where the instances run: the default VPC's subnets, and a security group with no inbound rule (SSH only
when asked for) and outbound HTTPS only."""

from __future__ import annotations

from typing import Any

from labkit.aws.ec2 import tag_filter
from labkit.errors import ConfigError
from labkit.fleet.names import FLEET_TAG
from labkit.fleet.operation import Operation
from labkit.fleet.spec import FleetSpec

# Outbound HTTPS is all a worker needs (SQS, S3, SSM, the package repositories). DNS, the instance
# metadata service and time sync are link-local services that security groups do not filter.
EGRESS = [("tcp", 443, 443, "0.0.0.0/0")]
Rule = tuple[str, int | None, int | None, str]  # protocol, from port, to port, CIDR


def default_vpc(op: Operation) -> tuple[str, list[str]]:
    """The default VPC and its default subnets (one per availability zone)."""
    vpc = op.ec2.default_vpc()
    if vpc is None:
        raise ConfigError(f"this account has no default VPC in {op.clients.settings.region}: create one "
                          "(aws ec2 create-default-vpc) and deploy again")
    return vpc, op.ec2.default_subnets(vpc)


def find_security_group(op: Operation) -> dict[str, Any] | None:
    return op.ec2.security_group(op.names.security_group, tag_filter(FLEET_TAG, op.names.fleet))


def _rules(perms: list[dict[str, Any]]) -> set[Rule]:
    out = set()
    for p in perms:
        for r in p.get("IpRanges", []):
            out.add((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIp"]))
        for r in p.get("Ipv6Ranges", []):
            out.add((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIpv6"]))
    return out


def _perms(rules: set[Rule], description: str) -> list[dict[str, Any]]:
    perms = []
    for proto, lo, hi, cidr in sorted(rules, key=str):
        p: dict[str, Any] = {"IpProtocol": proto}
        if lo is not None:
            p["FromPort"], p["ToPort"] = lo, hi
        if ":" in cidr:
            p["Ipv6Ranges"] = [{"CidrIpv6": cidr, "Description": description}]
        else:
            p["IpRanges"] = [{"CidrIp": cidr, "Description": description}]
        perms.append(p)
    return perms


def _converge_rules(op: Operation, gid: str, direction: str, have: set[Rule], want: set[Rule],
                    description: str) -> None:
    """Revoke the rules not wanted, authorize the missing ones."""
    if have - want:
        op.ec2.revoke(gid, direction, _perms(have - want, ""))
    if want - have:
        op.ec2.authorize(gid, direction, _perms(want - have, description))


def ensure_security_group(op: Operation, spec: FleetSpec, vpc: str) -> str:
    """The fleet's security group with exactly the rules ``spec`` asks for; returns its id."""
    name = op.names.security_group
    group = find_security_group(op)
    fresh = group is None
    if group is None:
        gid = op.ec2.create_security_group(
            name, vpc, "labkit workers: no inbound rule (use Session Manager), outbound HTTPS only",
            op.names.tags(Name=name))
        group = op.ec2.security_group_by_id(gid)
        op.report.created.append(f"security group {name} ({gid})")
    gid = group["GroupId"]
    have_in = _rules(group.get("IpPermissions", []))
    want_in: set[Rule] = {("tcp", 22, 22, spec.ssh_cidr)} if spec.ssh_cidr else set()
    changes = []
    if have_in - want_in:
        changes.append("inbound rule removed")
    if want_in - have_in:
        changes.append(f"SSH from {spec.ssh_cidr}")
    _converge_rules(op, gid, "ingress", have_in, want_in, "labkit: SSH")
    _converge_rules(op, gid, "egress", _rules(group.get("IpPermissionsEgress", [])), set(EGRESS), "labkit: HTTPS")
    if not fresh:
        (op.report.updated if changes else op.report.unchanged).append(
            f"security group {name} ({gid})" + (f": {', '.join(changes)}" if changes else ""))
    return gid


def delete_security_group(op: Operation) -> None:
    """Delete the fleet's security group, waiting while the network interfaces of terminated instances
    still hold it."""
    group = find_security_group(op)
    if group is None:
        return
    gid = group["GroupId"]
    op.wait(lambda: op.ec2.delete_security_group(gid), 300, f"security group {gid} to be free")
    op.report.deleted.append(f"security group {op.names.security_group} ({gid})")
