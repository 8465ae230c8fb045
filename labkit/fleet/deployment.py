"""The two verbs that change a fleet: :func:`deploy` (create, or converge on the request) and :func:`undeploy`
(delete all of it, found by names and tags)."""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from labkit import provision
from labkit.aws.clients import Clients
from labkit.config import read_state, update_state
from labkit.errors import ConfigError
from labkit.fleet import autoscale, health, instances, network, roles
from labkit.fleet.names import FleetNames
from labkit.fleet.operation import FleetReport, Operation, Progress
from labkit.fleet.policy import worker_policy
from labkit.fleet.spec import FleetSpec
from labkit.fleet.userdata import render_user_data, user_data_values
from labkit.fleet.wheel import WHEEL_PREFIX, build_wheel, delete_wheels, upload_wheel


def deploy(clients: Clients, spec: FleetSpec | None = None, progress: Progress | None = None) -> FleetReport:
    """Create or converge the worker fleet for ``clients.settings``; record it in the state file."""
    spec = spec or FleetSpec()
    spec.validate()
    settings = clients.settings
    report = FleetReport()
    provision.ensure_queues(clients, report)
    provision.ensure_bucket(clients, report)
    op = Operation(clients, FleetNames(clients.bucket_name()), report, progress)
    if spec.key_name and not op.ec2.key_pair_exists(spec.key_name):
        raise ConfigError(f"there is no key pair named {spec.key_name!r} in {settings.region}")
    ami = instances.latest_ami(op, spec.instance_type)
    key, sha = _ship_wheel(op)
    profile = _instance_profile(op, spec)
    vpc, subnets = network.default_vpc(op)
    gid = network.ensure_security_group(op, spec, vpc)
    user_data = render_user_data(user_data_values(settings, op.names.fleet, key, sha, spec.concurrency))
    build = sha[:16]
    mode = "autoscale" if spec.group_size else "instances"
    launch = instances.launch_data(op, spec, ami, gid, user_data, profile, build, mode)
    if spec.group_size:
        alarms = _as_group(op, spec, launch, subnets)
    else:
        alarms = _as_instances(op, spec, launch, build, subnets)
    report.unhealthy = health.review(op, spec.wait)
    report.fleet = {
        **_record(op, spec, profile), "mode": mode, "security_group": gid, "alarms": alarms,
        "ami": ami, "wheel": key, "build": build,
        "stop_at": spec.stop_at.isoformat() if spec.stop_at else None,
        "deployed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    update_state(settings.state_dir, fleet=report.fleet)
    return report


def _ship_wheel(op: Operation) -> tuple[str, str]:
    """Build the wheel (labkit, worker, the job modules) and upload it; returns its key and SHA-256."""
    op.say("building the labkit wheel")
    with tempfile.TemporaryDirectory(prefix="labkit-wheel-") as tmp:
        wheel = build_wheel(tmp, op.clients.settings.job_modules)
        key, sha, uploaded = upload_wheel(op.clients, wheel)
    (op.report.created if uploaded else op.report.unchanged).append(f"wheel s3://{op.names.fleet}/{key}")
    return key, sha


def _instance_profile(op: Operation, spec: FleetSpec) -> str:
    """The profile the instances get: the user's own (checked), or labkit's role and profile (converged)."""
    if spec.instance_profile:
        roles.check_existing_profile(op, spec.instance_profile)
        return spec.instance_profile
    document = worker_policy(op.clients.settings, op.names.fleet, op.clients.account_id())
    roles.ensure_role(op, document)
    roles.ensure_profile(op)
    return op.names.profile


def _as_group(op: Operation, spec: FleetSpec, launch: dict[str, Any], subnets: list[str]) -> list[str]:
    """An Auto Scaling group replaces the fixed instances; returns its alarms. With ``spec.stop_at`` the group
    scales itself to zero then (the cost guard)."""
    instances.terminate(op, instances.instances(op, instances.LIVE, "instances"),
                        "replaced by the auto scaling group")
    autoscale.ensure_launch_template(op, launch)
    autoscale.ensure_group(op, spec, subnets)
    alarms = autoscale.ensure_scaling(op, spec)
    autoscale.ensure_stop(op, spec.stop_at)
    return alarms


def _as_instances(op: Operation, spec: FleetSpec, launch: dict[str, Any], build: str, subnets: list[str]) -> list[str]:
    """Fixed instances replace an Auto Scaling group; no alarms."""
    autoscale.delete_alarms(op)
    autoscale.delete_group(op, " (replaced by instances)")
    autoscale.delete_launch_template(op)
    instances.converge_instances(op, spec, launch, build, subnets)
    return []


def _record(op: Operation, spec: FleetSpec, profile: str) -> dict[str, Any]:
    """The parts of the state file's record that follow from the request."""
    names, owned, size = op.names, not spec.instance_profile, spec.group_size
    return {
        "name": names.fleet, "region": op.clients.settings.region, "instance_type": spec.instance_type,
        "workers": None if spec.autoscale else spec.workers,
        "autoscale": list(size) if size else None, "concurrency": spec.concurrency,
        "role": names.role if owned else None, "instance_profile": profile, "profile_owned": owned,
        "ssh_cidr": spec.ssh_cidr, "key_name": spec.key_name,
        "launch_template": names.launch_template if size else None,
        "auto_scaling_group": names.group if size else None,
    }


def undeploy(clients: Clients, progress: Progress | None = None) -> FleetReport:
    """Delete everything :func:`deploy` made for this bucket: group, alarms, instances, launch template,
    security group, role and profile (only labkit's own), the wheels. Safe to run when nothing exists."""
    settings = clients.settings
    record = read_state(settings.state_dir).get("fleet") or {}
    if record.get("region") and record["region"] != settings.region:
        # The fleet lives where it was deployed, whatever AWS_REGION says now: looking elsewhere would find
        # nothing, forget the fleet and leave its instances billing.
        clients = Clients(settings.replace(region=record["region"]))
        settings = clients.settings
    bucket = clients.bucket_name()
    op = Operation(clients, FleetNames(record.get("name") or bucket), FleetReport(fleet=record), progress)
    autoscale.delete_group(op)
    autoscale.delete_alarms(op)
    autoscale.delete_launch_template(op)
    _terminate_all(op)
    network.delete_security_group(op)
    roles.delete_roles(op)
    count = delete_wheels(clients, bucket)
    if count:
        op.report.deleted.append(f"{count} wheel(s) under s3://{bucket}/{WHEEL_PREFIX}")
    if Path(settings.state_dir).exists():
        update_state(settings.state_dir, fleet=None)
    return op.report


def _terminate_all(op: Operation) -> None:
    """Terminate every instance of the fleet and wait until they are gone."""
    found = instances.instances(op, instances.NOT_TERMINATED)
    if found:
        instances.terminate(op, found, "undeploy")
        op.wait(lambda: not instances.instances(op, instances.NOT_TERMINATED), 900,
                 f"{len(found)} instance(s) to terminate")
