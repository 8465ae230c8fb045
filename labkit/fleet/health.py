"""Is each instance's worker alive? Read from the heartbeat every EC2 worker writes to
``s3://<bucket>/logs/health/<instance-id>.json`` (worker/health.py; the bootstrap writes one with status
``failed`` before it powers an instance off).

An instance is *serving* when its heartbeat says so and is fresh. It is *booting* while it has not
reported yet and is younger than :data:`BOOT_BUDGET`; past that it *never became healthy*. A worker whose
heartbeats stopped coming is *silent* (hung, or its instance is going away); one that reports a loop that
stopped turning is *stalled*; *failed* is a bootstrap that gave up. ``labkit status`` shows these, and
``labkit deploy`` reports the instances that never became healthy.

In an Auto Scaling group a failed bootstrap also leaves ``logs/health/failed/<build>/<epoch>-<instance-id>.json``
and, the third time within an hour, stops its group (bootstrap.sh's ``leave_group``): :func:`failed_boots` says so.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from labkit.aws.storage import Bucket
from labkit.config import HEALTH_PREFIX, HEARTBEAT_SECONDS
from labkit.errors import AwsError, NotFound, WaitTimeout
from labkit.fleet.instances import LIVE, instances
from labkit.fleet.names import BUILD_TAG
from labkit.fleet.operation import Operation

# Launch to a serving worker is about three minutes; the bootstrap retries each step for up to five minutes
# before it gives up and powers the instance off. Past this, an instance that never reported is broken.
BOOT_BUDGET = 900.0
STALE_AFTER = 3 * HEARTBEAT_SECONDS  # a worker writes its heartbeat every HEARTBEAT_SECONDS (worker/health.py)
FAILED_PREFIX = HEALTH_PREFIX + "failed/"  # bootstrap.sh writes one object per failed boot in a group here
STOP_AFTER = 3  # bootstrap.sh's: this many failed boots of a build within STOP_WINDOW stop the group
STOP_WINDOW = 3600.0
HEALTHY = "serving"
BAD = ("never healthy", "failed", "silent", "stalled")


@dataclass(frozen=True)
class Health:
    """One instance's state (:data:`HEALTHY`, ``booting``, ``stopped`` or one of :data:`BAD`) and a phrase."""

    state: str
    detail: str

    @property
    def bad(self) -> bool:
        return self.state in BAD


def heartbeat_key(instance_id: str) -> str:
    return f"{HEALTH_PREFIX}{instance_id}.json"


def classify(launched: datetime | float, beat: dict[str, Any] | None, now: float | None = None) -> Health:
    """The health of an instance launched at ``launched`` whose last heartbeat is ``beat`` (None: none yet)."""
    now = time.time() if now is None else now
    since = launched.timestamp() if isinstance(launched, datetime) else float(launched)
    age = max(0.0, now - since)
    if not beat:
        if age < BOOT_BUDGET:
            return Health("booting", f"launched {_span(age)} ago, no heartbeat yet")
        return Health("never healthy", f"launched {_span(age)} ago and never reported a serving worker")
    status, quiet = beat.get("status"), max(0.0, now - float(beat.get("at") or 0))
    if status == "failed":
        return Health("failed", f"bootstrap gave up at '{beat.get('step', '?')}' after {beat.get('attempts', '?')} "
                                "attempt(s) and powered the instance off")
    if status == "stopped":
        return Health("stopped", f"worker stopped {_span(quiet)} ago")
    if quiet > STALE_AFTER:
        return Health("silent", f"no heartbeat for {_span(quiet)} (the worker hung or the instance is going away)")
    if status == "stalled":
        return Health("stalled", f"the worker's loop on {', '.join(beat.get('stalled') or ['?'])} stopped turning")
    return Health(HEALTHY, f"{beat.get('jobs', 0)} job(s), last heartbeat {_span(quiet)} ago")


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def heartbeats(bucket: Bucket, instance_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The latest heartbeat of each of ``instance_ids`` that has one (a missing bucket, or an object that is
    gone or not JSON, counts as none). :class:`AwsError` when S3 refuses to show them (say, access denied)."""
    out: dict[str, dict[str, Any]] = {}
    try:
        present = {o.key for o in bucket.list(HEALTH_PREFIX)} if instance_ids else set()
    except NotFound:
        return out
    for iid in instance_ids:
        if heartbeat_key(iid) not in present:
            continue
        try:
            data = json.loads(bucket.get(heartbeat_key(iid), max_bytes=64 * 1024))
        except (NotFound, ValueError):
            continue
        if isinstance(data, dict):
            out[iid] = data
    return out


def instance_health(bucket: Bucket, instances: list[dict[str, Any]], now: float | None = None) -> dict[str, Health]:
    """Instance id -> :class:`Health`, for EC2's descriptions of ``instances`` (state ``unknown`` for all when
    the heartbeats cannot be read: an instance is never called broken for want of permission)."""
    try:
        beats = heartbeats(bucket, [i["InstanceId"] for i in instances])
    except AwsError as exc:
        why = f"cannot read the heartbeats in s3://{bucket.name}/{HEALTH_PREFIX} ({exc.code or exc})"
        return {i["InstanceId"]: Health("unknown", why) for i in instances}
    return {i["InstanceId"]: classify(i["LaunchTime"], beats.get(i["InstanceId"]), now) for i in instances}


def failed_boots(bucket: Bucket, build: str | None, group: dict[str, Any] | None,
                 now: float | None = None) -> str | None:
    """A line on the failed boots of ``build`` in the group within the last hour, or None when there were none
    (or the records cannot be read). ``group`` is the group as Auto Scaling describes it (None: no group)."""
    if not build or group is None:
        return None
    prefix, now = f"{FAILED_PREFIX}{build}/", time.time() if now is None else now
    try:
        keys = sorted(o.key for o in bucket.list(prefix))
    except (AwsError, NotFound):
        return None
    recent = [k for k in keys if _epoch(k[len(prefix):]) >= now - STOP_WINDOW]
    if not recent:
        return None
    try:
        last = json.loads(bucket.get(recent[-1], max_bytes=64 * 1024))
        step = f", last at '{last.get('step', '?')}' on {last.get('instance', '?')}"
    except (AwsError, NotFound, ValueError, AttributeError):
        step = ""
    name = group["AutoScalingGroupName"]
    if group["MaxSize"] == 0:
        stopped = f": the group {name} stopped itself (max 0)"
    elif len(recent) >= STOP_AFTER:
        stopped = f": the group {name} had stopped itself and was started again; one more failure stops it"
    else:
        stopped = f" (after {STOP_AFTER}, the group {name} stops itself)"
    return (f"bootstrap failed {len(recent)} time(s) in the last hour{step}{stopped}; see s3://{bucket.name}/{prefix} "
            "and the boot log (aws ec2 get-console-output), fix and deploy again")


def _epoch(name: str) -> float:
    head = name.split("-", 1)[0]
    return float(head) if head.isdigit() else 0.0


def template_build(op: Operation) -> str | None:
    """The build the group's launch template launches (its instances' build tag), or None."""
    data = op.ec2.launch_template_data(op.names.launch_template) if op.ec2.launch_template(
        op.names.launch_template) else None
    tags = [t for spec in (data or {}).get("TagSpecifications", []) for t in spec.get("Tags", [])]
    return next((t["Value"] for t in tags if t["Key"] == BUILD_TAG), None)


def review(op: Operation, wait: float = 0.0) -> list[str]:
    """Note in the operation's report each live instance of the fleet that is not healthy; returns their ids.

    With ``wait`` seconds, first wait for every instance's worker to serve (or to fail): one still not serving
    then did not become healthy within the wait. Without, only the instances that are past their boot budget,
    failed, silent or stalled are reported.
    """
    bucket = Bucket(op.clients.s3, op.names.fleet)

    def look() -> dict[str, Health]:
        return instance_health(bucket, instances(op, LIVE))

    if wait > 0:
        def settled() -> bool:
            return all(h.state == HEALTHY or h.bad for h in look().values())
        try:
            op.wait(settled, wait, "the workers on the instances to report healthy")
        except WaitTimeout:
            pass
    bad = {iid: h for iid, h in look().items() if h.bad or (wait > 0 and h.state != HEALTHY)}
    for iid, h in bad.items():
        if h.state in ("booting", "never healthy"):
            within = f" within {wait:g} s" if h.state == "booting" else ""
            op.report.notes.append(f"instance {iid} never became healthy{within}: {h.detail}")
        else:
            op.report.notes.append(f"instance {iid} is {h.state}: {h.detail}")
    if bad:
        op.report.notes.append("see its boot log: aws ec2 get-console-output --latest --output text --instance-id "
                                f"{next(iter(bad))}; a failed instance powers itself off and is replaced")
    group = op.scaling.group(op.names.group)
    boots = failed_boots(bucket, template_build(op), group) if group else None
    if boots:
        op.report.notes.append(boots)
    return list(bad)
