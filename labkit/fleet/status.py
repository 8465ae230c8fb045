"""The fleet as it is now: :func:`fleet_status`, what its instances were launched with, and a few lines for a
terminal."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from labkit import costs
from labkit.aws.calls import is_denied
from labkit.aws.clients import Clients
from labkit.aws.ec2 import Ec2, decode_user_data
from labkit.aws.storage import Bucket
from labkit.config import read_state
from labkit.errors import AwsError
from labkit.fleet.autoscale import STOP_SUFFIX
from labkit.fleet.health import Health, failed_boots, heartbeats, instance_health
from labkit.fleet.instances import NOT_TERMINATED, instances, tag
from labkit.fleet.names import BUILD_TAG, FleetNames
from labkit.fleet.network import find_security_group
from labkit.fleet.operation import Operation
from labkit.timeline import on_ec2, worker_label


def _names(clients: Clients) -> tuple[FleetNames, dict[str, Any]]:
    """The fleet's names (from the state file's record, else the bucket) and that record."""
    record = read_state(clients.settings.state_dir).get("fleet") or {}
    return FleetNames(record.get("name") or clients.bucket_name()), record


def fleet_status(clients: Clients) -> dict[str, Any] | None:
    """The fleet as it is now: instances (id, type, state, launch time), the group and alarms; None when
    there is no fleet."""
    names, record = _names(clients)
    op = Operation(clients, names)
    found = instances(op, NOT_TERMINATED)
    group = op.scaling.group(names.group)
    alarms = op.alarms.existing(names.alarms)
    sg = find_security_group(op)
    if not (found or group or sg):
        return None  # a record without resources is stale (say, the emulator it was made on has stopped)
    health = instance_health(Bucket(clients.s3, names.fleet), found)
    stop = None if group is None else op.scaling.scheduled_action(names.group, names.group + STOP_SUFFIX)
    return {
        "name": names.fleet, "mode": record.get("mode") or ("autoscale" if group else "instances"),
        "build": record.get("build"), "instance_profile": record.get("instance_profile"),
        "security_group": sg["GroupId"] if sg else None,
        "instances": [_instance(i, health[i["InstanceId"]]) for i in found],
        # A group's failed boots of this build in the last hour, and whether they stopped it (bootstrap.sh)
        "bootstrap": failed_boots(Bucket(clients.s3, names.fleet), record.get("build"), group),
        "group": None if group is None else {"name": group["AutoScalingGroupName"], "min": group["MinSize"],
                                             "max": group["MaxSize"], "desired": group["DesiredCapacity"]},
        "alarms": [{"name": a["AlarmName"], "state": a["StateValue"], "metrics": alarm_metrics(a)} for a in alarms],
        # The cost guard, as the group holds it (AWS runs it, not this machine): when the group goes to 0
        "stop": None if stop is None else {"action": stop["ScheduledActionName"],
                                           "at": stop["StartTime"].astimezone(timezone.utc).isoformat(),
                                           "min": stop.get("MinSize"), "max": stop.get("MaxSize"),
                                           "desired": stop.get("DesiredCapacity")},
    }


def alarm_metrics(alarm: dict[str, Any]) -> int:
    """The metrics an alarm reads (CloudWatch bills each): those of its metric-math expression, else one."""
    return sum(1 for m in alarm.get("Metrics") or [] if m.get("MetricStat")) or 1


def fleet_leftovers(clients: Clients) -> list[str]:
    """Every resource of the fleet that exists now, each as a line: instances, group, alarms, security group,
    and also the launch template and labkit's own role and instance profile (a group or instance gone does not
    mean those are: a teardown's last check looks at all of them). Resources IAM will not show are skipped."""
    status = fleet_status(clients)
    found = [] if status is None else [f"instance {i['id']} ({i['state']})" for i in status["instances"]]
    if status is not None:
        found += [f"auto scaling group {status['group']['name']}"] if status["group"] else []
        found += [f"alarm {a['name']}" for a in status["alarms"]]
        found += [f"security group {status['security_group']}"] if status["security_group"] else []
    names, _ = _names(clients)
    op = Operation(clients, names)
    if status is None:
        found += [f"alarm {a['AlarmName']}" for a in op.alarms.existing(names.alarms)]
    if op.ec2.launch_template(names.launch_template) is not None:
        found.append(f"launch template {names.launch_template}")
    for what, look in (("instance profile", op.iam.profile), ("role", op.iam.role)):
        name = names.profile if what == "instance profile" else names.role
        try:
            item = look(name)
        except AwsError as exc:
            if is_denied(exc):
                continue
            raise
        if item is not None and names.owns(item.get("Tags", [])):
            found.append(f"{what} {name}")
    return found


def instance_of(clients: Clients, worker: str) -> str | None:
    """The fleet's EC2 instance whose worker is ``worker`` (a reply's worker id), read from the heartbeats the
    instances' workers write (they name their worker); None for a worker elsewhere, or when unreadable."""
    names, _ = _names(clients)
    try:
        ids = [i["InstanceId"] for i in instances(Operation(clients, names), NOT_TERMINATED)]
        beats = heartbeats(Bucket(clients.s3, names.fleet), ids)
    except AwsError:
        return None
    return next((iid for iid, beat in beats.items() if beat.get("worker") == worker), None)


def answered_by(clients: Clients, worker: str | None) -> tuple[str, bool]:
    """Who answered, as people read it (``EC2 instance i-0abc… (worker 812)``, ``local worker 14003``), and
    whether that is an EC2 instance."""
    if not worker:
        return "an unnamed worker", False
    label = worker_label(worker, instance_of(clients, worker))
    return label, on_ec2(label)


def _instance(i: dict[str, Any], health: Health) -> dict[str, Any]:
    return {"id": i["InstanceId"], "type": i["InstanceType"], "state": i["State"]["Name"],
            "launched": i["LaunchTime"].isoformat(timespec="seconds"), "public_ip": bool(i.get("PublicIpAddress")),
            "zone": i.get("Placement", {}).get("AvailabilityZone"), "build": tag(i, BUILD_TAG),
            "health": health.state, "health_detail": health.detail}


def instance_user_data(clients: Clients, instance_id: str) -> str:
    """What an instance was launched with: the bootstrap script with its settings (no secret in it)."""
    return Ec2(clients("ec2")).user_data(instance_id)


def fleet_user_data(clients: Clients) -> str:
    """The fleet's user data: the first instance's, else the launch template's ("" when there is neither)."""
    status = fleet_status(clients)
    if status and status["instances"]:
        return instance_user_data(clients, status["instances"][0]["id"])
    names, _ = _names(clients)
    data = Ec2(clients("ec2")).launch_template_data(names.launch_template)
    return decode_user_data((data or {}).get("UserData"))


def format_status(status: dict[str, Any] | None) -> str:
    """A few lines for a terminal: the group, the alarms, one line per instance."""
    if status is None:
        return "fleet      none (labkit deploy starts one)"
    lines = [f"fleet      {status['name']} ({status['mode']}, build {status.get('build') or '?'})"]
    g = status.get("group")
    if g:
        lines.append(f"  group    {g['name']}: min {g['min']}, max {g['max']}, desired {g['desired']}")
    for a in status.get("alarms", []):
        lines.append(f"  alarm    {a['name']}: {a['state']}")
    if status.get("stop") or (g["max"] > 0 if g else status["instances"]):  # a group at max 0 has stopped
        lines.append(stop_line(status.get("stop")))
    if status.get("bootstrap"):
        lines.append(f"  boot     {status['bootstrap']}")
    if not status["instances"]:
        lines.append("  no instances")
    hourly = costs.fleet_hourly(status)["total_usd"]
    if hourly:
        lines.append(f"  cost     ${hourly:,.4f}/hour on AWS while it runs (instances, public IPv4, root volumes, "
                     f"alarms, the workers' polling; list prices of {costs.AS_OF}; `labkit status` itemizes it)")
    for i in status["instances"]:
        lines.append(f"  {i['id']:<21}{i['type']:<11}{i['state']:<10}launched {i['launched']}  {i['zone'] or ''}")
        if i.get("health"):
            lines.append(f"  {'':<21}worker {i['health']}: {i['health_detail']}")
    return "\n".join(lines)


def stop_line(stop: dict[str, Any] | None, now: datetime | None = None) -> str:
    """When the fleet stops by itself (the cost guard's scheduled action), in this machine's time zone, or that
    it does not."""
    if stop is None:
        return "  stops    never by itself: it runs until `labkit undeploy` (`labkit deploy --hours N` sets a stop)"
    now = (now or datetime.now(timezone.utc)).astimezone()
    at = datetime.fromisoformat(stop["at"]).astimezone()
    when = at.strftime("%H:%M %Z") if at.date() == now.date() else at.strftime("%Y-%m-%d %H:%M %Z")
    size = f"min {stop.get('min')}, max {stop.get('max')}, desired {stop.get('desired')}"
    if at <= now:
        return f"  stopped  at {when} ({_span(now - at)} ago): scheduled action {stop['action']} ({size})"
    return f"  stops    at {when} (in {_span(at - now)}): scheduled action {stop['action']} ({size})"


def _span(delta: timedelta) -> str:
    """``1 h 12 min``, ``2 h``, ``4 min`` (to the nearest minute)."""
    hours, minutes = divmod(round(delta.total_seconds() / 60), 60)
    return " ".join(([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if minutes or not hours else []))
