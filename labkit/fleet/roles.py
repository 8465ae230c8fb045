"""The instance role and profile: labkit's own (tagged, converged to :mod:`labkit.fleet.policy`), or one the
user names and labkit never changes."""

from __future__ import annotations

from typing import Any

from labkit.aws.calls import is_denied
from labkit.errors import AwsError, ConfigError
from labkit.fleet import policy
from labkit.fleet.names import FLEET_TAG
from labkit.fleet.operation import Operation

IAM_PATH = "/labkit/"
POLICY_NAME = "labkit-worker"
# Classroom accounts (AWS Academy, Learner Lab, ...) often may not create IAM roles but provide an instance profile.
NO_ROLES_HINT = ("these credentials may not create IAM roles (classroom accounts often cannot): deploy with an "
                 "instance profile that already exists, `labkit deploy --instance-profile NAME`; list them with "
                 "`aws iam list-instance-profiles --query 'InstanceProfiles[].InstanceProfileName'` (in AWS Academy "
                 "labs it is LabInstanceProfile); see 'Classroom accounts' in docs/aws.md")


def no_roles(exc: AwsError) -> ConfigError:
    """The user's error when IAM refuses to create or read labkit's role: what to do instead."""
    return ConfigError(f"{exc.operation or 'IAM'} was refused ({exc.code}): {NO_ROLES_HINT}")


def ensure_role(op: Operation, document: dict[str, Any]) -> None:
    """labkit's role, trusting EC2, with ``document`` as its inline policy."""
    name = op.names.role
    trust = policy.trust_policy(op.clients.settings.region)
    try:
        role = op.iam.role(name)
    except AwsError as exc:
        if is_denied(exc):
            raise no_roles(exc) from exc
        raise
    if role is None:
        _create_role(op, trust, document)
        return
    if not op.names.owns(role.get("Tags", [])):
        raise ConfigError(f"a role named {name} exists but is not tagged {FLEET_TAG}={op.names.fleet}: "
                          "labkit will not take it over")
    changed = []
    if policy.normal_doc(role.get("AssumeRolePolicyDocument")) != policy.normal_doc(trust):
        op.iam.update_trust(name, trust)
        changed.append("trust policy")
    if policy.normal_doc(op.iam.role_policy(name, POLICY_NAME)) != policy.normal_doc(document):
        op.iam.put_role_policy(name, POLICY_NAME, document)
        changed.append(f"policy {POLICY_NAME}")
    (op.report.updated if changed else op.report.unchanged).append(
        f"role {name}" + (f" ({', '.join(changed)})" if changed else ""))


def _create_role(op: Operation, trust: dict[str, Any], document: dict[str, Any]) -> None:
    name = op.names.role
    try:
        op.iam.create_role(name, IAM_PATH, trust, "labkit worker instances: their queues and bucket, nothing else",
                            op.names.tags())
        op.iam.put_role_policy(name, POLICY_NAME, document)
    except AwsError as exc:
        if is_denied(exc):
            raise no_roles(exc) from exc
        raise
    op.report.created.append(f"role {name} (policy {POLICY_NAME})")


def ensure_profile(op: Operation) -> None:
    """labkit's instance profile, holding labkit's role and no other."""
    name, role = op.names.profile, op.names.role
    profile = op.iam.profile(name)
    created = profile is None
    if profile is None:
        profile = op.iam.create_profile(name, IAM_PATH, op.names.tags())
    attached = [r["RoleName"] for r in profile.get("Roles", [])]
    for other in attached:
        if other != role:
            op.iam.remove_role(name, other)
    if role not in attached:
        op.iam.add_role(name, role)
    if created:
        op.report.created.append(f"instance profile {name}")
    elif role not in attached:
        op.report.updated.append(f"instance profile {name} (role attached)")
    else:
        op.report.unchanged.append(f"instance profile {name}")


def check_existing_profile(op: Operation, name: str) -> None:
    """The user's own instance profile: it must exist and hold a role (when IAM lets us look)."""
    try:
        profile = op.iam.profile(name)
    except AwsError as exc:
        if is_denied(exc):  # classroom accounts often cannot read IAM: trust the name, EC2 will check it
            op.report.notes.append(f"could not read instance profile {name} (access denied): using it as given")
            return
        raise
    if profile is None:
        raise ConfigError(f"there is no instance profile named {name!r}")
    if not profile.get("Roles"):
        raise ConfigError(f"instance profile {name!r} has no role: the workers would have no credentials")
    op.report.unchanged.append(f"instance profile {name} (existing, not managed by labkit)")


def delete_roles(op: Operation) -> None:
    """Delete labkit's own profile and role (tagged for this fleet); never a profile the user gave."""
    names = op.names
    try:
        profile = op.iam.profile(names.profile)
    except AwsError as exc:
        if not is_denied(exc):
            raise
        op.report.notes.append(f"could not check instance profile {names.profile} (access denied)")
        return
    if profile is not None and names.owns(profile.get("Tags", [])):
        op.iam.delete_profile(names.profile, [r["RoleName"] for r in profile.get("Roles", [])])
        op.report.deleted.append(f"instance profile {names.profile}")
    role = op.iam.role(names.role)
    if role is None:
        return
    if not names.owns(role.get("Tags", [])):
        op.report.notes.append(f"role {names.role} is not tagged {FLEET_TAG}={names.fleet}: left alone")
        return
    op.iam.delete_role(names.role)
    op.report.deleted.append(f"role {names.role}")
