"""The worker fleet on EC2: :func:`deploy`, :func:`fleet_status`, :func:`undeploy`.

What ``deploy`` makes:

- the project's wheel, with the job modules of ``LABKIT_JOB_MODULES`` beside labkit, uploaded to
  ``artifacts/labkit/<build>/`` in the bucket;
- an IAM role and instance profile (``labkit-worker-…``, path ``/labkit/``) with the inline policy of
  :func:`labkit.fleet.policy.worker_policy`, unless ``instance_profile`` names an existing profile to use;
- a security group with no inbound rule (SSH only with ``ssh_cidr``) and outbound HTTPS only;
- either ``workers`` instances, or (``autoscale=(min, max)``) a launch template, an Auto Scaling group
  and two CloudWatch alarms on the request queues' ``ApproximateNumberOfMessagesVisible``: a backlog
  adds instances (step scaling), 15 idle minutes bring the group back to ``min``;
- user data: ``worker/deploy/bootstrap.sh`` with its settings filled in (names and region, no secret) and the
  worker's dependencies pinned with their hashes; instances terminate when they power off.

Everything carries the tag ``labkit:fleet=<bucket>`` and deterministic names, and the state file
records it under ``fleet``; ``undeploy`` finds it all from the names and tags, state file or not.
Deploying twice converges on the request: it never doubles the fleet.

Each worker writes a heartbeat to ``logs/health/<instance-id>.json``; ``fleet_status`` shows each instance's
worker from it, and ``deploy`` names the instances that are not healthy (``FleetSpec(wait=...)`` first waits
for them).

The modules, one concept each: :mod:`~labkit.fleet.spec` (the request), :mod:`~labkit.fleet.names`,
:mod:`~labkit.fleet.wheel`, :mod:`~labkit.fleet.userdata`, :mod:`~labkit.fleet.policy` (the worker's IAM
policy), :mod:`~labkit.fleet.deployer` (the deployer's, per command), :mod:`~labkit.fleet.roles`,
:mod:`~labkit.fleet.network`, :mod:`~labkit.fleet.instances`, :mod:`~labkit.fleet.autoscale`,
:mod:`~labkit.fleet.health` (the workers' heartbeats), :mod:`~labkit.fleet.coldstart` (why a result is slow on
a group with no worker), :mod:`~labkit.fleet.deployment` (deploy and undeploy, step by step) and
:mod:`~labkit.fleet.status`. They talk to AWS only through :mod:`labkit.aws` (``ec2``, ``iam``, ``ssm``,
``scaling``, ``storage``).
"""

from __future__ import annotations

from labkit.fleet import policy
from labkit.fleet.deployment import deploy, undeploy
from labkit.fleet.instances import AMI_PARAMETERS, LIVE, NOT_TERMINATED
from labkit.fleet.names import BUILD_TAG, FLEET_TAG, MODE_TAG, FleetNames
from labkit.fleet.operation import FleetReport, Progress
from labkit.fleet.roles import IAM_PATH, POLICY_NAME
from labkit.fleet.spec import (
    DEFAULT_INSTANCE_TYPE,
    MAX_INSTANCES,
    FleetSpec,
    is_open_cidr,
    parse_autoscale,
    ssh_network,
)
from labkit.fleet.status import fleet_leftovers, fleet_status, fleet_user_data, format_status, instance_user_data
from labkit.fleet.userdata import DEPLOY_DIR, bootstrap_template, render_user_data, user_data_values
from labkit.fleet.wheel import WHEEL_PREFIX, build_wheel, upload_wheel

__all__ = [
    "AMI_PARAMETERS", "BUILD_TAG", "DEFAULT_INSTANCE_TYPE", "DEPLOY_DIR", "FLEET_TAG", "IAM_PATH", "LIVE",
    "MAX_INSTANCES", "MODE_TAG", "NOT_TERMINATED", "POLICY_NAME", "WHEEL_PREFIX", "FleetNames", "FleetReport",
    "FleetSpec", "Progress", "bootstrap_template", "build_wheel", "deploy", "fleet_leftovers", "fleet_status",
    "fleet_user_data", "format_status", "instance_user_data", "is_open_cidr", "parse_autoscale", "policy",
    "render_user_data", "ssh_network", "undeploy", "upload_wheel", "user_data_values",
]
