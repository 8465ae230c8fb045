"""EC2: the default network, security groups, instances and launch templates. Methods raise
:class:`~labkit.errors.AwsError`; lookups return None (or nothing) for what does not exist."""

from __future__ import annotations

import base64
from typing import Any

from labkit.aws.calls import call, delete, find, is_missing, pages
from labkit.errors import AwsError, aws_error_code


def filters(**by: list[str]) -> list[dict[str, Any]]:
    """EC2's ``Filters`` from keyword arguments: ``filters(vpc_id=[v])`` -> ``[{"Name": "vpc-id", ...}]``."""
    return [{"Name": name.replace("_", "-"), "Values": values} for name, values in by.items()]


def tag_filter(key: str, value: str) -> dict[str, Any]:
    """The filter that matches resources tagged ``key=value``."""
    return {"Name": f"tag:{key}", "Values": [value]}


def decode_user_data(value: str | None) -> str:
    """User data as EC2 returns it (base64) as text; "" for none."""
    return base64.b64decode(value).decode() if value else ""


class Ec2:
    """The EC2 client's calls that a worker fleet needs."""

    def __init__(self, client: Any) -> None:
        self.client = client

    # -- the account and region --------------------------------------------------------------------------
    def key_pair_exists(self, name: str) -> bool:
        return bool(find(self.client, "describe_key_pairs", "KeyPairs", f"looking up key pair {name}",
                         KeyNames=[name]))

    def architectures(self, instance_type: str) -> list[str]:
        """The processor architectures of ``instance_type`` ([] when EC2 does not describe it)."""
        types = call(self.client, "describe_instance_types", f"looking up instance type {instance_type}",
                     InstanceTypes=[instance_type])["InstanceTypes"]
        return types[0]["ProcessorInfo"]["SupportedArchitectures"] if types else []

    def default_vpc(self) -> str | None:
        vpcs = call(self.client, "describe_vpcs", "looking up the default VPC",
                    Filters=filters(isDefault=["true"]))["Vpcs"]
        return vpcs[0]["VpcId"] if vpcs else None

    def default_subnets(self, vpc: str) -> list[str]:
        """The VPC's default subnets (one per availability zone), sorted."""
        subnets = call(self.client, "describe_subnets", f"listing the subnets of {vpc}",
                       Filters=filters(vpc_id=[vpc], default_for_az=["true"]))["Subnets"]
        return sorted(s["SubnetId"] for s in subnets)

    # -- security groups ---------------------------------------------------------------------------------
    def security_group(self, name: str, tag: dict[str, Any]) -> dict[str, Any] | None:
        """The security group called ``name`` that carries ``tag`` (a :func:`tag_filter`), or None."""
        groups = call(self.client, "describe_security_groups", f"looking up security group {name}",
                      Filters=[*filters(group_name=[name]), tag])["SecurityGroups"]
        return groups[0] if groups else None

    def security_group_by_id(self, gid: str) -> dict[str, Any]:
        return call(self.client, "describe_security_groups", f"reading security group {gid}",
                    GroupIds=[gid])["SecurityGroups"][0]

    def create_security_group(self, name: str, vpc: str, description: str, tags: list[dict[str, str]]) -> str:
        """Create the group; returns its id."""
        return call(self.client, "create_security_group", f"creating security group {name}", GroupName=name,
                    VpcId=vpc, Description=description,
                    TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}])["GroupId"]

    def authorize(self, gid: str, direction: str, permissions: list[dict[str, Any]]) -> None:
        """Add rules; ``direction`` is ``"ingress"`` or ``"egress"``."""
        call(self.client, f"authorize_security_group_{direction}", f"adding {direction} rules to {gid}",
             GroupId=gid, IpPermissions=permissions)

    def revoke(self, gid: str, direction: str, permissions: list[dict[str, Any]]) -> None:
        """Remove rules; ``direction`` is ``"ingress"`` or ``"egress"``."""
        call(self.client, f"revoke_security_group_{direction}", f"removing {direction} rules from {gid}",
             GroupId=gid, IpPermissions=permissions)

    def delete_security_group(self, gid: str) -> bool:
        """Delete the group; False while network interfaces still use it (those of terminated instances
        linger a while), True once it is deleted or gone."""
        try:
            call(self.client, "delete_security_group", f"deleting security group {gid}", GroupId=gid)
        except AwsError as exc:
            if aws_error_code(exc) == "DependencyViolation":
                return False
            if is_missing(exc):
                return True
            raise
        return True

    # -- instances ---------------------------------------------------------------------------------------
    def instances(self, *where: dict[str, Any]) -> list[dict[str, Any]]:
        """Every instance matching the filters ``where`` (all pages)."""
        reservations = pages(self.client, "describe_instances", "Reservations", "listing instances",
                             Filters=list(where))
        return [i for r in reservations for i in r["Instances"]]

    def run_instance(self, launch: dict[str, Any], subnet: str | None = None) -> str:
        """Launch one instance with the ``run_instances`` fields ``launch``; returns its id."""
        where = {"SubnetId": subnet} if subnet else {}
        resp = call(self.client, "run_instances", "launching an instance", MinCount=1, MaxCount=1, **where, **launch)
        return resp["Instances"][0]["InstanceId"]

    def terminate(self, ids: list[str]) -> None:
        call(self.client, "terminate_instances", f"terminating {', '.join(ids)}", InstanceIds=ids)

    def user_data(self, instance_id: str) -> str:
        """What the instance was launched with, as text."""
        attr = call(self.client, "describe_instance_attribute", f"reading the user data of {instance_id}",
                    InstanceId=instance_id, Attribute="userData")
        return decode_user_data(attr.get("UserData", {}).get("Value"))

    # -- launch templates --------------------------------------------------------------------------------
    def launch_template(self, name: str) -> dict[str, Any] | None:
        found = find(self.client, "describe_launch_templates", "LaunchTemplates",
                     f"looking up launch template {name}", LaunchTemplateNames=[name])
        return found[0] if found else None

    def launch_template_data(self, name: str) -> dict[str, Any] | None:
        """The latest version's data (user data in base64), or None when there is no such template."""
        versions = find(self.client, "describe_launch_template_versions", "LaunchTemplateVersions",
                        f"reading launch template {name}", LaunchTemplateName=name, Versions=["$Latest"])
        return versions[0]["LaunchTemplateData"] if versions else None

    def create_launch_template(self, name: str, data: dict[str, Any], tags: list[dict[str, str]],
                               description: str) -> None:
        call(self.client, "create_launch_template", f"creating launch template {name}", LaunchTemplateName=name,
             LaunchTemplateData=data, VersionDescription=description,
             TagSpecifications=[{"ResourceType": "launch-template", "Tags": tags}])

    def add_launch_template_version(self, name: str, data: dict[str, Any], description: str) -> int:
        """A new version of the template, made its default; returns its number."""
        what = f"updating launch template {name}"
        new = call(self.client, "create_launch_template_version", what, LaunchTemplateName=name,
                   LaunchTemplateData=data, VersionDescription=description)
        version = new["LaunchTemplateVersion"]["VersionNumber"]
        call(self.client, "modify_launch_template", what, LaunchTemplateName=name, DefaultVersion=str(version))
        return version

    def delete_launch_template(self, name: str) -> None:
        delete(self.client, "delete_launch_template", f"deleting launch template {name}", LaunchTemplateName=name)
