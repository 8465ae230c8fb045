"""One job on an Auto Scaling group at zero starts one instance, not three (issue 18, item 5).

A CloudWatch alarm in ALARM runs its Auto Scaling action again every minute, whatever its period ("an alarm
invokes an Auto Scaling action once each minute when the alarm remains in a new state, regardless of the
configured time period": https://repost.aws/knowledge-center/autoscaling-policy-cloudwatch-alarm). What stops a
step scaling policy from adding an instance each of those minutes is the instance warm-up: "While scaling out,
Amazon EC2 Auto Scaling considers instances that are warming up as part of the current capacity of the group
when determining how many instances to add ... multiple alarm breaches that require adding a similar amount of
capacity result in a single scaling activity"; the current capacity counts the instances "that have passed their
warmup and cooldown periods" (https://docs.aws.amazon.com/autoscaling/ec2/userguide/as-scaling-simple-step.html,
https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-default-instance-warmup.html). The policy's
EstimatedInstanceWarmup applies; without one, the group's DefaultInstanceWarmup; without that, its DefaultCooldown
(PutScalingPolicy, EstimatedInstanceWarmup, in the Auto Scaling API reference).

moto keeps scaling policies but never evaluates an alarm, so :func:`replay` models that documented rule and
replays "the alarm is in ALARM for N minutes, evaluated each minute" against the policy and group labkit actually
wrote to the emulator, read back with describe_policies and describe_auto_scaling_groups.
"""

from __future__ import annotations

from typing import Any

import pytest

from labkit import fleet
from labkit.aws.clients import Clients
from labkit.config import Settings
from labkit.fleet import autoscale

BOOT_MINUTES = 3  # launch to a serving worker (docs/aws.md): the job waits that long for the first instance
WINDOW_MINUTES = autoscale.METRIC_PERIOD // 60
# One job keeps the backlog alarm in ALARM until the worker has taken it and a whole 5-minute window without it
# has been reported: 8 minutes, and up to two more while SQS's late points arrive.
ONE_JOB_ALARM_MINUTES = BOOT_MINUTES + WINDOW_MINUTES
LATE_MINUTES = 2
WARMUP_BEFORE = 180  # what labkit sent before issue 18


def replay(policy: dict[str, Any], group: dict[str, Any], backlog: list[float]) -> list[int]:
    """The group's desired capacity after each minute of ``backlog`` (the alarm's value that minute; below the
    threshold the alarm is OK and nothing runs), under AWS's rule for a ChangeInCapacity step policy: each
    minute in ALARM, the step for the breach is added to the instances past their warm-up, and the group grows
    to that if it is more than it already has (launched instances still warming up are not launched twice)."""
    assert policy["PolicyType"] == "StepScaling" and policy["AdjustmentType"] == "ChangeInCapacity"
    warmup = policy.get("EstimatedInstanceWarmup") or group.get("DefaultInstanceWarmup") or group["DefaultCooldown"]
    threshold = 1.0  # the backlog alarm's (tests/test_fleet.py checks it)
    launched = [float("-inf")] * group["DesiredCapacity"]  # minute each instance was launched
    desired, out = group["DesiredCapacity"], []
    for minute, value in enumerate(backlog):
        if value >= threshold:
            above = value - threshold  # AWS: above the threshold, the lower bound is inclusive, the upper exclusive
            step = next(s for s in policy["StepAdjustments"]
                        if s.get("MetricIntervalLowerBound", float("-inf")) <= above
                        < s.get("MetricIntervalUpperBound", float("inf")))
            current = sum(1 for t in launched if (minute - t) * 60 >= warmup)
            target = min(max(current + step["ScalingAdjustment"], group["MinSize"]), group["MaxSize"])
            if target > desired:
                launched += [minute] * (target - desired)
                desired = target
        out.append(desired)
    return out


def written(clients: Clients, names: fleet.FleetNames) -> tuple[dict[str, Any], dict[str, Any]]:
    """The scale-out policy and the group as the emulator holds them."""
    scaling = clients("autoscaling")
    policy = scaling.describe_policies(AutoScalingGroupName=names.group,
                                       PolicyNames=[names.policy_out])["ScalingPolicies"][0]
    group = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[names.group])["AutoScalingGroups"][0]
    return policy, group


@pytest.fixture
def group_of_0_to_4(settings: Settings) -> Any:
    clients = Clients(settings)
    fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 4)))
    try:
        yield clients, fleet.FleetNames(settings.bucket or "")
    finally:
        fleet.undeploy(clients)


def test_one_job_on_a_group_at_zero_starts_one_instance(group_of_0_to_4: Any) -> None:
    clients, names = group_of_0_to_4
    # Given the scale-out policy labkit wrote for a 0:4 group
    policy, group = written(clients, names)
    assert (group["MinSize"], group["DesiredCapacity"]) == (0, 0)
    assert policy["MetricAggregationType"] == "Maximum"
    # When one job keeps the backlog alarm in ALARM for as long as it does (and two minutes more, for late points)
    for minutes in range(1, ONE_JOB_ALARM_MINUTES + LATE_MINUTES + 1):
        # Then the group starts one instance, once
        assert replay(policy, group, [1.0] * minutes)[-1] == 1, f"{minutes} minute(s) in ALARM"
    # Because the warm-up outlasts the alarm: boot, a whole metric window, late points
    assert policy["EstimatedInstanceWarmup"] >= (ONE_JOB_ALARM_MINUTES + LATE_MINUTES) * 60


def test_before_issue_18_the_same_job_started_three_instances(group_of_0_to_4: Any) -> None:
    # Given the policy as labkit wrote it before (EstimatedInstanceWarmup 180 s), put into the emulator
    clients, names = group_of_0_to_4
    policy, group = written(clients, names)
    clients("autoscaling").put_scaling_policy(
        AutoScalingGroupName=names.group, PolicyName=names.policy_out, PolicyType="StepScaling",
        AdjustmentType="ChangeInCapacity", MetricAggregationType="Maximum", EstimatedInstanceWarmup=WARMUP_BEFORE,
        StepAdjustments=policy["StepAdjustments"])
    before, _ = written(clients, names)
    # When the same job keeps the alarm in ALARM for 8 minutes
    desired = replay(before, group, [1.0] * ONE_JOB_ALARM_MINUTES)
    # Then each 3-minute warm-up that ended in ALARM added an instance: three for one job
    assert desired == [1, 1, 1, 2, 2, 2, 3, 3]


def test_a_bigger_backlog_still_adds_instances_while_the_first_warms_up(group_of_0_to_4: Any) -> None:
    clients, names = group_of_0_to_4
    policy, group = written(clients, names)
    # Given one job, then 50 more two minutes later, then 500 (steps +1, +2, +4 of a 0:4 group)
    backlog = [1.0, 1.0, 50.0, 50.0, 500.0, 500.0]
    # Then the group grows with each higher step at once, without waiting for the warm-up, up to its maximum
    assert replay(policy, group, backlog) == [1, 1, 2, 2, 4, 4]
