"""IAM: roles, their inline policies and instance profiles. Methods raise :class:`~labkit.errors.AwsError`;
lookups return None for what does not exist."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from labkit.aws.calls import call, delete, find, pages
from labkit.errors import aws_error_code


def is_propagating(exc: BaseException) -> bool:
    """EC2 or Auto Scaling refused an instance profile that IAM has not propagated yet (IAM is eventually
    consistent: a profile made seconds ago is often refused once or twice)."""
    msg = str(exc).lower()
    return aws_error_code(exc) in ("InvalidParameterValue", "ValidationError") and (
        "instance profile" in msg or "iaminstanceprofile" in msg)


class Iam:
    """The IAM client's calls that a worker fleet needs."""

    def __init__(self, client: Any) -> None:
        self.client = client

    # -- roles ---------------------------------------------------------------------------------------------
    def role(self, name: str) -> dict[str, Any] | None:
        """The role (with its tags and trust policy), or None."""
        return find(self.client, "get_role", "Role", f"looking up role {name}", RoleName=name)

    def create_role(self, name: str, path: str, trust: dict[str, Any], description: str,
                    tags: list[dict[str, str]]) -> None:
        call(self.client, "create_role", f"creating role {name}", Path=path, RoleName=name,
             AssumeRolePolicyDocument=json.dumps(trust), Description=description, Tags=tags)

    def update_trust(self, name: str, trust: dict[str, Any]) -> None:
        call(self.client, "update_assume_role_policy", f"updating the trust policy of role {name}",
             RoleName=name, PolicyDocument=json.dumps(trust))

    def role_policy(self, role: str, policy: str) -> Any:
        """The inline policy's document (as IAM returns it: a dict or URL-encoded JSON), or None."""
        return find(self.client, "get_role_policy", "PolicyDocument", f"reading the policy of role {role}",
                          RoleName=role, PolicyName=policy)

    def put_role_policy(self, role: str, policy: str, document: dict[str, Any]) -> None:
        call(self.client, "put_role_policy", f"writing policy {policy} of role {role}", RoleName=role,
             PolicyName=policy, PolicyDocument=json.dumps(document))

    def delete_role(self, name: str) -> None:
        """Delete the role after what IAM wants gone first: inline and attached policies, profile links."""
        what = f"deleting role {name}"
        for policy in pages(self.client, "list_role_policies", "PolicyNames", what, RoleName=name):
            delete(self.client, "delete_role_policy", what, RoleName=name, PolicyName=policy)
        for policy in pages(self.client, "list_attached_role_policies", "AttachedPolicies", what, RoleName=name):
            call(self.client, "detach_role_policy", what, RoleName=name, PolicyArn=policy["PolicyArn"])
        for profile in pages(self.client, "list_instance_profiles_for_role", "InstanceProfiles", what,
                             RoleName=name):
            self.remove_role(profile["InstanceProfileName"], name)
        delete(self.client, "delete_role", what, RoleName=name)

    # -- instance profiles ---------------------------------------------------------------------------------
    def profile(self, name: str) -> dict[str, Any] | None:
        """The instance profile (with its roles and tags), or None."""
        return find(self.client, "get_instance_profile", "InstanceProfile", f"looking up instance profile {name}",
                          InstanceProfileName=name)

    def create_profile(self, name: str, path: str, tags: list[dict[str, str]]) -> dict[str, Any]:
        return call(self.client, "create_instance_profile", f"creating instance profile {name}",
                    InstanceProfileName=name, Path=path, Tags=tags)["InstanceProfile"]

    def add_role(self, profile: str, role: str) -> None:
        call(self.client, "add_role_to_instance_profile", f"adding role {role} to instance profile {profile}",
             InstanceProfileName=profile, RoleName=role)

    def remove_role(self, profile: str, role: str) -> None:
        delete(self.client, "remove_role_from_instance_profile",
             f"removing role {role} from instance profile {profile}", InstanceProfileName=profile, RoleName=role)

    def delete_profile(self, name: str, roles: Iterable[str]) -> None:
        """Delete the instance profile after taking ``roles`` (its roles) out of it."""
        for role in roles:
            self.remove_role(name, role)
        delete(self.client, "delete_instance_profile", f"deleting instance profile {name}", InstanceProfileName=name)
