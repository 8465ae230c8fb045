"""Auto Scaling groups, their scaling policies and scheduled actions, and the CloudWatch alarms that set them off.
Methods raise :class:`~labkit.errors.AwsError`; lookups return None (or nothing) for what does not exist."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from labkit.aws.calls import call, delete

DELETING = "Delete in progress"


class AutoScaling:
    """The Auto Scaling client's calls that a worker fleet needs."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def group(self, name: str, deleting: bool = False) -> dict[str, Any] | None:
        """The group called ``name``, or None; one being deleted counts only with ``deleting``."""
        groups = call(self.client, "describe_auto_scaling_groups", f"looking up auto scaling group {name}",
                      AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return next((g for g in groups if deleting or g.get("Status") != DELETING), None)

    def create_group(self, name: str, template: dict[str, str], size: tuple[int, int], subnets: list[str],
                     warmup: int, tags: list[dict[str, str]]) -> None:
        """A group of ``size`` (min, max) instances, starting at min, in ``subnets``; tags propagate to them.
        ``warmup`` is the group's default instance warm-up (AWS recommends setting one; without it the step
        policies fall back on the default cooldown, which only simple scaling should use)."""
        lo, hi = size
        call(self.client, "create_auto_scaling_group", f"creating auto scaling group {name}",
             AutoScalingGroupName=name, LaunchTemplate=template, MinSize=lo, MaxSize=hi, DesiredCapacity=lo,
             VPCZoneIdentifier=",".join(subnets), HealthCheckType="EC2", DefaultInstanceWarmup=warmup,
             Tags=[{**t, "PropagateAtLaunch": True} for t in tags])

    def resize_group(self, name: str, template: dict[str, str], size: tuple[int, int], desired: int,
                     warmup: int) -> None:
        """New (min, max) and desired sizes; the template and default warm-up brought up to date with them."""
        lo, hi = size
        call(self.client, "update_auto_scaling_group", f"updating auto scaling group {name}",
             AutoScalingGroupName=name, MinSize=lo, MaxSize=hi, DesiredCapacity=desired, LaunchTemplate=template,
             DefaultInstanceWarmup=warmup)

    def delete_group(self, name: str) -> None:
        """Delete the group with its instances and scaling policies (it takes a while: see :meth:`group`)."""
        delete(self.client, "delete_auto_scaling_group", f"deleting auto scaling group {name}",
             AutoScalingGroupName=name, ForceDelete=True)

    def put_stop(self, group: str, name: str, at: datetime) -> None:
        """Create or replace the one-time scheduled action ``name`` that sets the group's minimum, maximum and
        desired capacity to 0 at ``at`` (UTC: a one-time action's StartTime is in UTC, no TimeZone needed)."""
        call(self.client, "put_scheduled_update_group_action", f"scheduling {name} on auto scaling group {group}",
             AutoScalingGroupName=group, ScheduledActionName=name, StartTime=at.astimezone(timezone.utc),
             MinSize=0, MaxSize=0, DesiredCapacity=0)

    def scheduled_action(self, group: str, name: str) -> dict[str, Any] | None:
        """The group's scheduled action ``name``, or None."""
        found = call(self.client, "describe_scheduled_actions", f"looking up scheduled action {name}",
                     AutoScalingGroupName=group, ScheduledActionNames=[name])["ScheduledUpdateGroupActions"]
        return next((a for a in found if a.get("AutoScalingGroupName") in (None, group)), None)

    def delete_scheduled_action(self, group: str, name: str) -> None:
        delete(self.client, "delete_scheduled_action", f"deleting scheduled action {name}",
             AutoScalingGroupName=group, ScheduledActionName=name)

    def put_policy(self, group: str, name: str, **fields: Any) -> str:
        """Create or replace the scaling policy ``name`` of ``group``; returns its ARN."""
        what = f"writing scaling policy {name}"
        arn = call(self.client, "put_scaling_policy", what, AutoScalingGroupName=group, PolicyName=name,
                   **fields).get("PolicyARN")
        if arn:
            return arn
        policies = call(self.client, "describe_policies", what, AutoScalingGroupName=group,
                        PolicyNames=[name])["ScalingPolicies"]
        return policies[0]["PolicyARN"]


class Alarms:
    """CloudWatch metric alarms."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def existing(self, names: list[str]) -> list[dict[str, Any]]:
        """The alarms among ``names`` that exist."""
        return call(self.client, "describe_alarms", "looking up alarms", AlarmNames=names)["MetricAlarms"]

    def put(self, name: str, **fields: Any) -> None:
        """Create or replace the metric alarm ``name``."""
        call(self.client, "put_metric_alarm", f"writing alarm {name}", AlarmName=name, **fields)

    def delete(self, names: list[str]) -> None:
        call(self.client, "delete_alarms", "deleting alarms", AlarmNames=names)
