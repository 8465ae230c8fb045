"""The ``autoscale=(min, max)`` fleet: a launch template, an Auto Scaling group in the default subnets, and two
CloudWatch alarms on the request queues: a backlog adds instances (step scaling), idle minutes bring the
group back to its minimum. The cost guard (``FleetSpec(stop_at=...)``, ``deploy --hours``) is a one-time
scheduled action of the group that sets its minimum, maximum and desired capacity to 0: AWS runs it, with the
laptop closed, and the alarms cannot undo it (a group's maximum bounds every scaling policy)."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from labkit import kinds
from labkit.config import Settings
from labkit.errors import ConfigError
from labkit.fleet.names import MODE_TAG
from labkit.fleet.operation import Operation
from labkit.fleet.policy import normal_doc
from labkit.fleet.spec import FleetSpec

BOOT = 180  # seconds from launch to a serving worker (dnf, venv, wheels): an estimate, not a measurement
IDLE_MINUTES = 15
# SQS sends its CloudWatch metrics once a minute, a few minutes late, with gaps; after six idle hours it stops,
# and a queue waking up reports again only up to 15 minutes later. So the alarms look at 5-minute windows
# (their maximum catches any minute's point that has arrived), a missing window never counts as "nothing
# waiting" (which made the backlog alarm miss or flap when gaps were filled with 0), and a scale-out from zero
# takes minutes: the client says so while it waits (labkit.fleet.coldstart).
METRIC_PERIOD = 300
LATE_POINTS = 120  # SQS's points arrive a minute or two late: the alarm sees the queue empty that much later
# An alarm in ALARM runs its Auto Scaling action again every minute, and AWS counts an instance as capacity only
# once its warm-up is over: until then a breach in the same step adds nothing ("multiple alarm breaches that
# fall in the range of the same step adjustment result in a single scaling activity"). One job keeps the backlog
# alarm in ALARM until the new worker has taken it (BOOT) and a whole window without it has reached CloudWatch
# (METRIC_PERIOD, LATE_POINTS): the warm-up covers that, so one job starts one instance (with 180 s, three).
# A bigger backlog (a higher step) still adds instances while others warm up. tests/test_scaling.py replays it.
WARMUP = BOOT + METRIC_PERIOD + LATE_POINTS
# Scale out by backlog (visible requests, both queues): 1-9 → +1 instance, 10-99 → +2, 100 or more → +4.
SCALE_OUT_STEPS = [(0, 9, 1), (9, 99, 2), (99, None, 4)]
VERSION_NOTE = "labkit deploy"
STOP_SUFFIX = "-stop"  # the cost guard's scheduled action: the group's name and this (unique per fleet)


# -- the launch template --------------------------------------------------------------------------------

def ensure_launch_template(op: Operation, launch: dict[str, Any]) -> None:
    """The launch template with ``launch`` as its default version (a new version only when it differs)."""
    name = op.names.launch_template
    data = {**launch, "UserData": base64.b64encode(launch["UserData"].encode()).decode()}
    current = op.ec2.launch_template_data(name) if op.ec2.launch_template(name) else None
    if current is None:
        op.ec2.create_launch_template(name, data, op.names.tags(), VERSION_NOTE)
        op.report.created.append(f"launch template {name}")
    elif normal_doc(_comparable(current)) == normal_doc(_comparable(data)):
        op.report.unchanged.append(f"launch template {name}")
    else:
        version = op.ec2.add_launch_template_version(name, data, VERSION_NOTE)
        op.report.updated.append(f"launch template {name} (version {version}: new instances use it)")


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    keys = ("ImageId", "InstanceType", "SecurityGroupIds", "IamInstanceProfile", "UserData", "KeyName",
            "InstanceInitiatedShutdownBehavior", "CreditSpecification")
    out = {k: data.get(k) for k in keys}
    tags = {(t["Key"], t["Value"]) for spec in data.get("TagSpecifications", []) for t in spec.get("Tags", [])}
    out["Tags"] = sorted(tags)
    out["HttpTokens"] = (data.get("MetadataOptions") or {}).get("HttpTokens")
    return out


def delete_launch_template(op: Operation) -> None:
    if op.ec2.launch_template(op.names.launch_template) is not None:
        op.ec2.delete_launch_template(op.names.launch_template)
        op.report.deleted.append(f"launch template {op.names.launch_template}")


# -- the group ------------------------------------------------------------------------------------------

def ensure_group(op: Operation, spec: FleetSpec, subnets: list[str]) -> None:
    """The group, sized ``spec.group_size``, launching from the template."""
    name = op.names.group
    size = spec.group_size or (0, 1)
    template = {"LaunchTemplateName": op.names.launch_template, "Version": "$Latest"}
    group = op.scaling.group(name)
    if group is None:
        if not subnets:
            raise ConfigError("the default VPC has no default subnets to launch instances in")
        tags = op.names.tags(Name=op.names.stem, **{MODE_TAG: "autoscale"})
        op.after_propagation(lambda: op.scaling.create_group(name, template, size, subnets, WARMUP, tags),
                              "creating the Auto Scaling group")
        op.report.created.append(f"auto scaling group {name} (min {size[0]}, max {size[1]})")
    elif (group["MinSize"], group["MaxSize"]) != size:
        desired = min(max(group["DesiredCapacity"], size[0]), size[1])
        op.scaling.resize_group(name, template, size, desired, WARMUP)
        op.report.updated.append(f"auto scaling group {name} (min {size[0]}, max {size[1]})")
    else:
        op.report.unchanged.append(f"auto scaling group {name} (min {size[0]}, max {size[1]})")


def delete_group(op: Operation, why: str = "") -> bool:
    """Delete the Auto Scaling group (its instances and scaling policies with it, its cost guard just before);
    wait until gone."""
    name = op.names.group
    if op.scaling.group(name) is None:
        return False
    delete_stop(op)
    op.scaling.delete_group(name)
    op.wait(lambda: op.scaling.group(name, deleting=True) is None, 900,
             f"auto scaling group {name} to terminate its instances")
    op.report.deleted.append(f"auto scaling group {name}{why}")
    return True


# -- scaling policies and alarms ------------------------------------------------------------------------

def _queue_metrics(settings: Settings, metric_names: list[str]) -> tuple[list[dict[str, Any]], str]:
    """CloudWatch metric queries for the request queues, and an expression summing the points that arrived
    (a queue with no point in a window adds nothing; a window with no point at all stays missing)."""
    queries, ids = [], []
    for i, (metric, queue) in enumerate((m, q) for m in metric_names
                                        for q in kinds.request_queues(settings).values()):
        qid = f"m{i}"
        ids.append(qid)
        queries.append({"Id": qid, "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": "AWS/SQS", "MetricName": metric,
                       "Dimensions": [{"Name": "QueueName", "Value": queue}]},
            "Period": METRIC_PERIOD, "Stat": "Maximum"}})
    return queries, f"SUM([{', '.join(ids)}])"


def _scaling_policies(op: Operation, spec: FleetSpec) -> tuple[str, str]:
    """Step scaling out on the backlog (with the warm-up that keeps one breach from adding an instance a minute),
    back to MIN in one step; returns their ARNs (out, in)."""
    lo, _ = spec.group_size or (0, 1)
    group = op.names.group
    steps = [{"MetricIntervalLowerBound": float(a), **({"MetricIntervalUpperBound": float(b)} if b else {}),
              "ScalingAdjustment": n} for a, b, n in SCALE_OUT_STEPS]
    out = op.scaling.put_policy(group, op.names.policy_out, PolicyType="StepScaling",
                                 AdjustmentType="ChangeInCapacity", MetricAggregationType="Maximum",
                                 EstimatedInstanceWarmup=WARMUP, StepAdjustments=steps)
    back = op.scaling.put_policy(group, op.names.policy_in, PolicyType="SimpleScaling",
                                  AdjustmentType="ExactCapacity", ScalingAdjustment=lo, Cooldown=300)
    return out, back


def ensure_scaling(op: Operation, spec: FleetSpec) -> list[str]:
    """Step scaling on the backlog, back to MIN after idle minutes; returns the alarm names. A group of fixed
    size (MIN = MAX: ``--workers N --hours H``) gets no alarm: none could change it, and each bills."""
    settings, names = op.clients.settings, op.names
    lo, hi = spec.group_size or (0, 1)
    if lo == hi:
        delete_alarms(op)
        return []
    out_arn, in_arn = _scaling_policies(op, spec)
    existing = {a["AlarmName"] for a in op.alarms.existing(names.alarms)}
    backlog, backlog_expr = _queue_metrics(settings, ["ApproximateNumberOfMessagesVisible"])
    op.alarms.put(
        names.alarm_backlog, AlarmActions=[out_arn], Tags=names.tags(),
        AlarmDescription="labkit: requests are waiting: add worker instances (step scaling)",
        Metrics=[*backlog, {"Id": "backlog", "Expression": backlog_expr, "Label": "requests waiting",
                            "ReturnData": True}],
        ComparisonOperator="GreaterThanOrEqualToThreshold", Threshold=1.0, EvaluationPeriods=1,
        # A late or missing window keeps the alarm as it is: neither a scale-out missed nor one cut short.
        DatapointsToAlarm=1, TreatMissingData="ignore")
    work, work_expr = _queue_metrics(settings, ["ApproximateNumberOfMessagesVisible",
                                                "ApproximateNumberOfMessagesNotVisible"])
    # No data at all means an inactive queue (SQS stops reporting after six silent hours): idle, too.
    windows = IDLE_MINUTES * 60 // METRIC_PERIOD
    op.alarms.put(
        names.alarm_idle, AlarmActions=[in_arn], Tags=names.tags(),
        AlarmDescription=f"labkit: no request waiting or running for {IDLE_MINUTES} minutes: back to MIN workers",
        Metrics=[*work, {"Id": "work", "Expression": work_expr, "Label": "requests waiting or running",
                         "ReturnData": True}],
        ComparisonOperator="LessThanOrEqualToThreshold", Threshold=0.0, EvaluationPeriods=windows,
        DatapointsToAlarm=windows, TreatMissingData="breaching")
    for alarm in names.alarms:
        (op.report.unchanged if alarm in existing else op.report.created).append(f"alarm {alarm}")
    return names.alarms


def delete_alarms(op: Operation) -> None:
    found = [a["AlarmName"] for a in op.alarms.existing(op.names.alarms)]
    if found:
        op.alarms.delete(found)
        op.report.deleted += [f"alarm {n}" for n in found]


# -- the cost guard -------------------------------------------------------------------------------------

def stop_action(op: Operation) -> str:
    """The name of the fleet's cost-guard scheduled action."""
    return op.names.group + STOP_SUFFIX


def ensure_stop(op: Operation, at: datetime | None) -> None:
    """The group scales itself to zero at ``at`` (a one-time scheduled action, min = max = desired = 0); with
    None there is no stop: an earlier one is deleted (deploy converges on the request)."""
    group, name = op.names.group, stop_action(op)
    current = op.scaling.scheduled_action(group, name)
    if at is None:
        if current is not None:
            op.scaling.delete_scheduled_action(group, name)
            op.report.deleted.append(f"scheduled action {name} (no --hours or --until given)")
        return
    when = at.astimezone().strftime("%Y-%m-%d %H:%M %Z")
    if current is not None and current.get("StartTime") == at and not any(
            current.get(k) for k in ("MinSize", "MaxSize", "DesiredCapacity")):
        op.report.unchanged.append(f"scheduled action {name} (group to 0 at {when})")
        return
    op.scaling.put_stop(group, name, at)
    (op.report.updated if current else op.report.created).append(f"scheduled action {name} (group to 0 at {when})")


def delete_stop(op: Operation) -> None:
    """Delete the cost guard's scheduled action, if there is one. :func:`delete_group` calls it first: AWS's
    DeleteAutoScalingGroup names the policies and alarms it deletes, not scheduled actions, and the emulator keeps
    them after their group."""
    group, name = op.names.group, stop_action(op)
    if op.scaling.scheduled_action(group, name) is not None:
        op.scaling.delete_scheduled_action(group, name)
        op.report.deleted.append(f"scheduled action {name}")
