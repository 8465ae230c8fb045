"""Why a result is slow when the workers are an Auto Scaling group that has no worker serving yet.

A group at zero instances starts one only once CloudWatch sees the waiting request (SQS's metrics arrive a few
minutes late, up to 15 minutes for a queue waking up), and the new instance then boots for about three minutes:
a cold start takes 5 to 10 minutes, far past a client's usual wait. :func:`notice` says so, once per client,
instead of leaving it silent (:meth:`labkit.job.Job.result` asks it when a result is slow).
"""

from __future__ import annotations

import time
import weakref
from typing import Any

from labkit.aws.clients import Clients
from labkit.aws.scaling import AutoScaling
from labkit.aws.storage import Bucket
from labkit.config import read_state
from labkit.fleet.health import HEALTHY, STALE_AFTER, heartbeats

COLD_START = "5 to 10 minutes"
RECHECK = 60.0  # seconds a verdict is reused before the group is looked at again
_memo: weakref.WeakKeyDictionary[Clients, dict[str, Any]] = weakref.WeakKeyDictionary()


def _verdict(clients: Clients) -> str | None:
    """The sentence for this fleet now, or None when a worker serves (or there is no Auto Scaling fleet)."""
    record = read_state(clients.settings.state_dir).get("fleet") or {}
    if record.get("mode") != "autoscale" or not record.get("auto_scaling_group"):
        return None  # no AWS call for a client without an Auto Scaling fleet
    group = AutoScaling(clients("autoscaling")).group(record["auto_scaling_group"])
    if group is None:
        return None
    ids = [i["InstanceId"] for i in group.get("Instances", [])]
    beats = heartbeats(Bucket(clients.s3, record.get("name") or clients.bucket_name()), ids)
    if any(b.get("status") == HEALTHY and time.time() - float(b.get("at") or 0) < STALE_AFTER for b in beats.values()):
        return None
    name, lo, hi = group["AutoScalingGroupName"], group["MinSize"], group["MaxSize"]
    now = (f"has {len(ids)} instance(s) starting" if ids else "is at 0 instances")
    return (f"waiting for a scale-out: the Auto Scaling group {name} {now}, and no worker serves yet. It starts "
            f"one once CloudWatch sees the waiting request, then the instance boots: {COLD_START} from cold. The "
            f"job waits in its queue meanwhile; wait longer (result(timeout=900)), or keep a worker warm for "
            f"interactive labs: labkit deploy --autoscale 1:{max(hi, 1)}" + (f" (the group's minimum is {lo})"
                                                                           if lo == 0 else ""))


def notice(clients: Clients) -> tuple[str | None, bool]:
    """(why a result is slow, or None; whether this client hears it for the first time). The group is looked
    at again after :data:`RECHECK` seconds."""
    memo = _memo.setdefault(clients, {"at": float("-inf"), "text": None, "said": False})
    if time.monotonic() - memo["at"] > RECHECK:
        memo["text"], memo["at"] = _verdict(clients), time.monotonic()
    first = memo["text"] is not None and not memo["said"]
    memo["said"] = memo["said"] or first
    return memo["text"], first
