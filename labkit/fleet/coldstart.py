"""Why a result is slow when the workers are an Auto Scaling group that has no worker serving yet, and how long
notebook 03 waits for the fleet's first answer (:func:`first_answer`).

A group at zero instances starts one only once CloudWatch sees the waiting request (SQS's metrics arrive a few
minutes late, up to 15 minutes for a queue waking up), and the new instance then boots for about three minutes:
a cold start takes 5 to 10 minutes, far past a client's usual wait. :func:`notice` says so, once per client,
instead of leaving it silent: a Lab asks it when a result is slow (one of its ``slow_hooks``; the future,
:class:`labkit.future.Job`, knows nothing of fleets).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

from labkit.aws.clients import Clients
from labkit.aws.scaling import AutoScaling
from labkit.aws.storage import Bucket
from labkit.config import Settings, read_state, update_state
from labkit.errors import JobTimeout
from labkit.fleet.health import HEALTHY, STALE_AFTER, heartbeats
from labkit.local import running
from labkit.processes import stop_all
from labkit.waiting import poll

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


# -- notebook 03: the fleet's first answer ---------------------------------------------------------------
EMULATOR_WAIT = 60.0  # seconds: on an emulator nothing boots, a local worker answers at once
BOOT_WAIT = 600.0  # instances launched: about 3 minutes to boot, the bootstrap retrying a step up to 5 minutes
SCALE_OUT_WAIT = 1200.0  # a group from zero: SQS's metrics up to 15 minutes late, then the alarm, launch and boot
LOOK_EVERY = 30.0  # seconds between looks at the fleet while waiting on AWS


def answer_wait(on_aws: bool, status: dict[str, Any] | None) -> tuple[float, str]:
    """How long the fleet's first answer may take, and what that waits for: short on an emulator; on AWS the
    boot of an instance, or a whole scale-out when no worker of an Auto Scaling group serves yet."""
    if not on_aws:
        return EMULATOR_WAIT, "a local worker (on the emulator nothing boots)"
    instances = (status or {}).get("instances", [])
    if any(i.get("health") == HEALTHY for i in instances):
        return EMULATOR_WAIT, "a worker already serving on the fleet"
    if (status or {}).get("group") and not instances:
        return SCALE_OUT_WAIT, ("a scale-out from zero: CloudWatch must first see the waiting request (SQS's "
                                "metrics can come up to 15 minutes late), then an instance boots (about 3 minutes)")
    return BOOT_WAIT, "the instances to boot and their workers to start (about 3 minutes from launch)"


def fleet_phase(status: dict[str, Any] | None) -> str:
    """Where the fleet is, in a few words (for a progress bar)."""
    if status is None:
        return "no fleet"
    instances = [i for i in status["instances"] if i["state"] in ("pending", "running")]
    serving = [i["id"] for i in instances if i.get("health") == HEALTHY]
    if serving:
        return f"{', '.join(serving)} serving"
    if instances:
        return "; ".join(f"{i['id']} {i['state']}, {i.get('health_detail') or i.get('health') or ''}"
                         for i in instances)
    group = status.get("group") or {}
    return f"group at {group.get('desired', 0)} instances, its alarm not fired yet"


def first_answer(job: Any, clients: Clients, on_aws: bool, show: bool = True) -> Any:
    """``job``'s result, waiting as long as the fleet needs (:func:`answer_wait`): on AWS with a progress bar
    that says what it waits for; :class:`JobTimeout` naming where the fleet stands when that is not enough."""
    from labkit.fleet.status import fleet_status
    status = fleet_status(clients) if on_aws else None
    budget, what = answer_wait(on_aws, status)
    if show:
        print(f"waiting up to {budget / 60:.0f} min for {what}")
    bar = _bar(budget, show and on_aws)
    seen, looked = 0.0, 0.0
    for elapsed in poll(1.0 if on_aws else 0.1, budget):
        if job.done():
            break
        if bar is not None:
            bar.update(int(elapsed - seen))
            seen = float(int(elapsed))
            if elapsed - looked >= LOOK_EVERY:
                status, looked = fleet_status(clients), elapsed
                bar.set_description(fleet_phase(status)[:100])
    if bar is not None:
        bar.close()
    if not job.done():
        raise JobTimeout(f"no answer after {budget / 60:.0f} min of waiting for {what}; the fleet now: "
                         f"{fleet_phase(fleet_status(clients))} (`labkit status` shows each instance's worker)")
    return job.result(timeout=1)


def _bar(seconds: float, show: bool) -> Any:
    if not show:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=int(seconds), unit="s", desc="waiting for the fleet")


def quiet_local_workers(settings: Settings) -> list[int]:
    """Stop the local workers this lab's ``labkit up`` started (so that only the fleet can answer); their pids.
    ``labkit up`` starts them again."""
    state = read_state(settings.state_dir)
    alive = running(state.get("workers"))
    stopped = [c.pid for c, was in zip(alive, stop_all(alive), strict=True) if was]
    update_state(settings.state_dir, workers=[r for r in state.get("workers") or [] if running([r])])
    return stopped


def ask_fleet(lab: Any, numbers: list[float], on_aws: bool, stop_local: bool = True,
              say: Callable[[str], None] = print) -> Any:
    """Notebook 03's proof: send one number job, wait for the fleet's answer (:func:`first_answer`) and say who
    answered. On AWS, with ``stop_local``, this lab's local workers are stopped first, so that only an EC2
    instance can answer; an answer from anywhere else is said to be one. Returns the job."""
    from labkit.fleet.status import answered_by
    if on_aws and stop_local:
        stopped = quiet_local_workers(lab.settings)
        if stopped:
            say(f"stopped this lab's local worker(s) (pid {', '.join(map(str, stopped))}) so that only the fleet can "
                "answer; `labkit up` starts them again")
    job = lab.numbers(numbers)
    say(str(first_answer(job, lab.clients, on_aws, show=True)))
    who, from_ec2 = answered_by(lab.clients, job.reply.worker if job.reply else None)
    say(f"answered by {who}")
    if not on_aws:
        say("(a local worker: on the emulator nothing boots, the instances are records only)")
    elif not from_ec2:
        say("NOT by an EC2 instance of the fleet: a worker elsewhere took the job (a local worker of another lab, or "
            "one started by hand, on the same queues); `labkit status` lists this lab's, `labkit down` stops them")
    return job
