"""The cost guard (issue 21, item 2): ``labkit deploy --hours N`` / ``--until HH:MM`` puts a one-time scheduled
action on the fleet's Auto Scaling group that sets its minimum, maximum and desired capacity to 0 at the deadline.
AWS runs it, so the fleet stops with the instructor's laptop closed; ``labkit status`` says when.

What is tested against the real emulator server, with the real ``labkit`` command: the action labkit puts in the
group (its name, its StartTime, its sizes), read back with DescribeScheduledActions; what ``status`` prints; that a
later deploy moves or removes it; that ``--workers N --hours H`` makes the instances a group of fixed size; that
undeploy deletes it. The emulator (moto) keeps scheduled actions but never runs them: the last test applies the
action's effect as AWS documents it ("the desired capacity, minimum and maximum size ... at the specified time",
PutScheduledUpdateGroupAction) and replays the backlog alarm's policy after it (tests/test_scaling.py's model of
AWS's step-scaling rule): a model, said as such, of why the alarms cannot start instances after the deadline.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from labkit import fleet
from labkit.aws.clients import Clients
from labkit.config import Settings, read_state
from labkit.errors import ConfigError
from labkit.fleet import autoscale
from labkit.fleet.spec import parse_stop
from labkit.fleet.status import stop_line
from tests.helpers import labkit
from tests.test_fleet import leftovers, live_instances, nothing_left
from tests.test_scaling import replay


def stops(clients: Clients, names: fleet.FleetNames) -> list[dict[str, Any]]:
    """The group's scheduled actions, as the emulator holds them."""
    return clients("autoscaling").describe_scheduled_actions(
        AutoScalingGroupName=names.group)["ScheduledUpdateGroupActions"]


def group_of(clients: Clients, names: fleet.FleetNames) -> dict[str, Any] | None:
    found = clients("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[names.group])
    return next(iter(found["AutoScalingGroups"]), None)


def test_deploy_hours_puts_a_stop_in_the_group_and_status_says_when(settings: Settings) -> None:
    clients, names = Clients(settings), fleet.FleetNames(settings.bucket or "")
    stop = names.group + autoscale.STOP_SUFFIX
    # When an autoscaling fleet is deployed with a cost guard of 2 hours
    before = datetime.now(timezone.utc)
    out = labkit("deploy", "--autoscale", "0:3", "--hours", "2", s=settings)
    after = datetime.now(timezone.utc)
    assert out.returncode == 0, out.stderr

    # Then the group holds a one-time scheduled action that sets it to 0 instances two hours from now
    [action] = stops(clients, names)
    assert action["ScheduledActionName"] == stop and action["AutoScalingGroupName"] == names.group
    assert (action["MinSize"], action["MaxSize"], action["DesiredCapacity"]) == (0, 0, 0)
    assert not action.get("Recurrence")  # once, not every day
    at = action["StartTime"]
    assert before + timedelta(hours=2) - timedelta(seconds=1) <= at <= after + timedelta(hours=2)
    # And deploy says it made it, and when the fleet stops (this machine's time zone, named)
    local = at.astimezone()
    assert f"created   scheduled action {stop} (group to 0 at {local:%Y-%m-%d %H:%M %Z})" in out.stdout
    assert re.search(rf"stops    at {local:%H:%M %Z}|stops    at {local:%Y-%m-%d %H:%M %Z}", out.stdout), out.stdout
    # And the state file records it
    assert datetime.fromisoformat(read_state(settings.state_dir)["fleet"]["stop_at"]) == at

    # When the instructor looks at the fleet
    status = labkit("status", s=settings)
    assert status.returncode == 0, status.stderr
    # Then it says when the fleet stops, how long from now, and which scheduled action does it
    assert re.search(rf"  stops    at [^\n]*{local:%H:%M %Z} \(in (1 h 59 min|2 h)\): scheduled action {stop} "
                     r"\(min 0, max 0, desired 0\)", status.stdout), status.stdout
    as_json = json.loads(labkit("status", "--json", s=settings).stdout)["fleet"]["stop"]
    assert as_json["action"] == stop and datetime.fromisoformat(as_json["at"]) == at

    # When it is deployed again with --until, the stop moves there (this machine's local time)
    until = (datetime.now().astimezone() + timedelta(hours=3)).strftime("%H:%M")
    moved = labkit("deploy", "--autoscale", "0:3", "--until", until, s=settings)
    assert moved.returncode == 0, moved.stderr
    [action] = stops(clients, names)
    assert action["StartTime"].astimezone().strftime("%H:%M") == until
    assert f"updated   scheduled action {stop}" in moved.stdout

    # When it is deployed without a guard, the guard goes (deploy converges on the request), and status says so
    plain = labkit("deploy", "--autoscale", "0:3", s=settings)
    assert plain.returncode == 0, plain.stderr
    assert stops(clients, names) == []
    assert f"deleted   scheduled action {stop} (no --hours or --until given)" in plain.stdout
    assert "stops    never by itself: it runs until `labkit undeploy`" in plain.stdout

    # When undeployed with a guard in place, the scheduled action goes too (the emulator, unlike what the group's
    # deletion may do on AWS, keeps a group's scheduled actions: labkit deletes it first)
    assert labkit("deploy", "--autoscale", "0:3", "--hours", "1", s=settings).returncode == 0
    down = labkit("undeploy", s=settings)
    assert down.returncode == 0, down.stderr
    assert f"deleted   scheduled action {stop}" in down.stdout
    assert stops(clients, names) == []
    assert nothing_left(found := leftovers(clients, names)), found


def test_workers_with_hours_become_a_group_of_fixed_size_that_stops_itself(settings: Settings) -> None:
    clients, names = Clients(settings), fleet.FleetNames(settings.bucket or "")
    # Given lone instances (a plain deploy: nothing stops them but undeploy)
    assert labkit("deploy", "--workers", "2", s=settings).returncode == 0
    assert group_of(clients, names) is None and len(live_instances(clients, names)) == 2
    # When deployed with a guard
    out = labkit("deploy", "--workers", "2", "--hours", "1.5", s=settings)
    assert out.returncode == 0, out.stderr
    # Then the instances are a group of exactly 2 (only a group scales itself with the laptop closed), with the
    # stop, and no alarm (none could change a group of fixed size; each would bill)
    group = group_of(clients, names)
    assert group is not None and (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (2, 2, 2)
    assert "replaced by the auto scaling group" in out.stdout
    [action] = stops(clients, names)
    assert (action["MinSize"], action["MaxSize"], action["DesiredCapacity"]) == (0, 0, 0)
    assert clients("cloudwatch").describe_alarms(AlarmNames=names.alarms)["MetricAlarms"] == []
    assert read_state(settings.state_dir)["fleet"]["workers"] == 2
    # When deployed again without a guard, they are lone instances again and the group and its stop are gone
    back = labkit("deploy", "--workers", "2", s=settings)
    assert back.returncode == 0, back.stderr
    assert group_of(clients, names) is None and stops(clients, names) == []
    assert labkit("undeploy", s=settings).returncode == 0


@pytest.mark.parametrize("args, message", [
    (("--hours", "2", "--until", "17:00"), "give --hours or --until, not both"),
    (("--hours", "0"), "--hours must be more than 0"),
    (("--hours", "200"), "at most 168"),
    (("--until", "25:00"), "--until wants a time of day HH:MM"),
    (("--hours", "0.05"), "5 minutes to 7 days ahead"),
    (("--workers", "0", "--hours", "1"), "nothing to stop"),
])
def test_a_guard_that_cannot_work_is_one_line_and_nothing_is_made(settings: Settings, args: tuple[str, ...],
                                                                 message: str) -> None:
    out = labkit("deploy", *args, s=settings)
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert nothing_left(leftovers(Clients(settings), fleet.FleetNames(settings.bucket or "")))


def test_until_is_the_next_time_the_local_clock_shows_it() -> None:
    now = datetime(2026, 12, 7, 16, 0, tzinfo=timezone.utc).astimezone()
    later = parse_stop(until=(now + timedelta(minutes=90)).strftime("%H:%M"), now=now)
    assert later == (now + timedelta(minutes=90)).astimezone(timezone.utc)
    earlier = parse_stop(until=(now - timedelta(hours=1)).strftime("%H:%M"), now=now)
    assert earlier is not None and timedelta(hours=22) <= earlier - now <= timedelta(hours=24)  # tomorrow
    assert parse_stop(hours=2, now=now) == now + timedelta(hours=2) and parse_stop(now=now) is None
    with pytest.raises(ConfigError):
        parse_stop(until="5pm", now=now)


def test_status_line_before_and_after_the_deadline() -> None:
    at = datetime(2026, 12, 7, 16, 0, tzinfo=timezone.utc)
    stop = {"action": "labkit-worker-x-stop", "at": at.isoformat(), "min": 0, "max": 0, "desired": 0}
    local = at.astimezone()
    assert stop_line(stop, now=at - timedelta(minutes=72)) == (
        f"  stops    at {local:%H:%M %Z} (in 1 h 12 min): scheduled action labkit-worker-x-stop "
        "(min 0, max 0, desired 0)")
    assert stop_line(stop, now=at + timedelta(minutes=4)).startswith(f"  stopped  at {local:%H:%M %Z} (4 min ago)")
    assert "never by itself" in stop_line(None)
    # And a group already at max 0 (stopped by its failed boots, bootstrap.sh) is not said to run until undeploy
    stopped = {"name": "labkit-x", "mode": "autoscale", "instances": [], "alarms": [], "stop": None,
               "group": {"name": "labkit-worker-x", "min": 0, "max": 0, "desired": 0}}
    assert "stops" not in fleet.format_status(stopped)
    assert "never by itself" in fleet.format_status({**stopped, "group": {**stopped["group"], "max": 4}})


def test_after_the_deadline_the_backlog_alarm_starts_nothing(settings: Settings) -> None:
    """A model: moto never runs a scheduled action, so its effect is applied here as AWS documents it."""
    clients, names = Clients(settings), fleet.FleetNames(settings.bucket or "")
    scaling = clients("autoscaling")
    # Given a group of 1 to 4 with a guard, as labkit deploys it
    fleet.deploy(clients, fleet.FleetSpec(autoscale=(1, 4), stop_at=parse_stop(hours=2)))
    try:
        [action] = stops(clients, names)
        # When the deadline comes: the action sets the group's minimum, maximum and desired capacity
        scaling.update_auto_scaling_group(AutoScalingGroupName=names.group, MinSize=action["MinSize"],
                                          MaxSize=action["MaxSize"], DesiredCapacity=action["DesiredCapacity"])
        group = group_of(clients, names)
        assert group is not None and group["DesiredCapacity"] == 0
        assert live_instances(clients, names) == []
        # Then a backlog (a class still sending jobs) keeps the backlog alarm in ALARM for an hour, and its step
        # policy, bounded by the group's maximum, adds nothing
        policy = scaling.describe_policies(AutoScalingGroupName=names.group,
                                           PolicyNames=[names.policy_out])["ScalingPolicies"][0]
        assert replay(policy, group, [200.0] * 60) == [0] * 60
        # (before the deadline the same backlog would have started instances)
        assert replay(policy, {**group, "MinSize": 1, "MaxSize": 4, "DesiredCapacity": 1}, [200.0] * 60)[-1] == 4
        # And the idle alarm's policy (back to MIN, exact capacity) is bounded the same way: it cannot exceed 0
        back = scaling.describe_policies(AutoScalingGroupName=names.group,
                                         PolicyNames=[names.policy_in])["ScalingPolicies"][0]
        assert min(max(back["ScalingAdjustment"], group["MinSize"]), group["MaxSize"]) == 0
    finally:
        fleet.undeploy(clients)
