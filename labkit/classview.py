"""The instructor's view of a class (``labkit status --class``, ``SetupPanel.class_view()``): every student's reply
queue with its last activity, each lane's jobs waiting, in flight and dead, the fleet's size and health, and what
the day has cost so far. :func:`class_view` returns it as plain data (``--json``); :func:`labkit.presenters.
class_tables` renders it for the terminal and the notebook alike.

One pass, no wait: a ListQueues, then per reply queue one ListQueueTags (its last-seen tag) and one
GetQueueAttributes (messages waiting, its creation time), per lane two GetQueueUrl and two GetQueueAttributes (the lane
and its dead-letter queue), and ``labkit status``'s fleet reads. Forty students: about 90 SQS requests, $0.00004 at
list prices. The view counts and prices its own requests.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any

from labkit import costs, kinds, provision
from labkit.aws.calls import is_denied
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue, is_missing_queue
from labkit.config import DLQ_SUFFIX, read_state
from labkit.errors import AwsError
from labkit.fleet.health import BAD, HEALTHY

QUIET_AFTER = provision.REPLY_IDLE_AGE  # unseen this long: the client is gone (and `down` may delete its queue)
DEPTHS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible")
NOT_COUNTED = [
    "the students' job requests (SQS $0.40 per million, S3 per request): labkit does not count another "
    "machine's calls, and CloudWatch's per-queue metrics would cost a request each",
    "instances already terminated (EC2 describes them for about an hour; `aws autoscaling "
    "describe-scaling-activities` lists the group's launches and terminations)",
    "the bucket's storage (`labkit status` prices it; a class's images are cents a month)",
    "Cost Explorer has the billed figure, a day late and at $0.01 per API request: this view does not ask it",
]


def class_view(clients: Clients, now: float | None = None) -> dict[str, Any]:
    """The class as it is now: ``reply_queues`` (one per client, newest activity first), ``lanes``, ``fleet``
    (None without one), ``cost`` (the day so far, an estimate) and ``requests`` (what this view itself asked)."""
    now = time.time() if now is None else now
    calls: dict[str, int] = {}
    replies, refused = _reply_queues(clients, now, calls)
    fleet = _fleet(clients)
    return {"at": datetime.fromtimestamp(now, timezone.utc).isoformat(timespec="seconds"),
            "endpoint": clients.settings.endpoint_url or f"AWS ({clients.settings.region})",
            "local": clients.settings.is_local, "quiet_after": QUIET_AFTER, "reply_queues": replies,
            "refused": refused, "lanes": _lanes(clients, calls), "fleet": fleet,
            "cost": day_cost(fleet, now), "requests": {"calls": calls, "usd": costs.cost(calls)["total_usd"]}}


def _count(calls: dict[str, int], op: str) -> None:
    calls[f"sqs.{op}"] = calls.get(f"sqs.{op}", 0) + 1


def _reply_queues(clients: Clients, now: float, calls: dict[str, int]) -> tuple[list[dict[str, Any]], str | None]:
    """Each reply queue: name, last seen (its tag, else its creation), seconds since, gone quiet, messages
    waiting and in flight. A queue deleted meanwhile (its client closed) is left out. When IAM refuses the reads
    (a student's credentials), the rest are listed unread and the refusal is returned."""
    found = provision.reply_queues(clients)
    _count(calls, "ListQueues")
    out: list[dict[str, Any]] = []
    refused = None
    for queue in found:
        row: dict[str, Any] = {"name": queue.name, "last_seen": None, "ago": None,
                               "quiet": None, "waiting": None, "in_flight": None}
        if refused is None:
            try:
                _read_reply_queue(queue, row, now, calls)
            except AwsError as exc:
                if is_missing_queue(exc):
                    continue
                if not is_denied(exc):
                    raise
                refused = (f"your credentials may not read the reply queues ({exc.code}): the class view is the "
                           "instructor's (`labkit policy deployer --command teardown` allows sqs:ListQueueTags and "
                           "sqs:GetQueueAttributes on labkit-reply-*)")
        out.append(row)
    out.sort(key=lambda r: (r["last_seen"] is None, -(r["last_seen"] or 0), r["name"]))
    return out, refused


def _read_reply_queue(queue: Queue, row: dict[str, Any], now: float, calls: dict[str, int]) -> None:
    tags = queue.tags()
    _count(calls, "ListQueueTags")
    attrs = queue.attributes(*DEPTHS, "CreatedTimestamp")
    _count(calls, "GetQueueAttributes")
    seen = tags.get(provision.LAST_SEEN_TAG) or attrs.get("CreatedTimestamp")  # an older client's: made then
    try:
        row["last_seen"] = float(seen) if seen is not None else None
    except ValueError:
        row["last_seen"] = None
    if row["last_seen"] is not None:
        row["ago"] = max(0.0, now - row["last_seen"])
        row["quiet"] = row["ago"] >= QUIET_AFTER
    row["waiting"], row["in_flight"] = (int(attrs.get(k, 0)) for k in DEPTHS)


def _lanes(clients: Clients, calls: dict[str, int]) -> list[dict[str, Any]]:
    """Each lane's request queue, then each kind queue: jobs waiting (visible), in flight (a worker holds them),
    delayed, and dead letters (its dead-letter queue's visible messages). The age of the oldest message is a
    CloudWatch metric (ApproximateAgeOfOldestMessage), not a queue attribute: not read."""
    settings, sqs = clients.settings, clients.sqs
    wanted = [(lane.name, lane.request_queue(settings)) for lane in kinds.LANES.values()]
    kind_queues = {q.name for q in provision.kind_queues(clients)}
    _count(calls, "ListQueues")
    for name in sorted(kind_queues):
        kind = kinds.kind_of_queue(settings, name)  # None for a kind's dead-letter queue
        if kind is not None:
            wanted.append((f"kind {kind}", name))
    out = []
    for lane, name in wanted:
        row: dict[str, Any] = {"lane": lane, "queue": name}
        try:
            _count(calls, "GetQueueUrl")
            row.update(Queue.by_name(sqs, name).depth())
            _count(calls, "GetQueueAttributes")
            _count(calls, "GetQueueUrl")
            dlq = Queue.find(sqs, name + DLQ_SUFFIX)
            row["dead_letter"] = dlq.depth()["visible"] if dlq else None
            _count(calls, "GetQueueAttributes")
        except AwsError as exc:
            if not is_missing_queue(exc):
                raise
            row["error"] = "missing (`labkit up` makes it)"
        out.append(row)
    return out


def _fleet(clients: Clients) -> dict[str, Any] | None:
    """``labkit status``'s fleet (:func:`labkit.fleet.fleet_status`) summed up: size, healthy, unhealthy,
    booting, the group's sizes, failed boots, when it stops; None when this lab records no fleet."""
    record = read_state(clients.settings.state_dir).get("fleet")
    if not record:
        return None
    from labkit import fleet
    status = fleet.fleet_status(clients)
    if status is None:
        return None
    live = [i for i in status["instances"] if i["state"] in ("pending", "running")]
    return {**status, "size": len(live), "healthy": sum(i.get("health") == HEALTHY for i in live),
            "unhealthy": sum(i.get("health") in BAD for i in live),
            "deployed_at": record.get("deployed_at")}


def day_start(now: float) -> datetime:
    """Midnight of ``now``'s day in this machine's time zone (the instructor's day)."""
    return datetime.fromtimestamp(now).astimezone().replace(hour=0, minute=0, second=0, microsecond=0)


def day_cost(fleet: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """What the fleet has cost since midnight (this machine's), at :data:`labkit.costs.TABLE`'s list prices: each
    live instance from its launch (or midnight) to now, with its public IPv4 address, root volume and a worker's
    polling and heartbeats (:func:`labkit.costs.fleet_hourly` for that one instance); the alarms from the deploy (or
    midnight). An estimate: ``not_counted`` says what it leaves out."""
    start = day_start(now)
    since = start.timestamp()
    rows: list[list[Any]] = []
    by_type: dict[str, list[float]] = {}  # instance type -> [instances, instance-hours, US dollars]
    for inst in (fleet or {}).get("instances", []):
        if inst["state"] not in ("pending", "running"):
            continue  # a stopped instance bills its volume only: left out with the terminated ones
        launched = datetime.fromisoformat(inst["launched"]).timestamp()
        hours = max(0.0, now - max(launched, since)) / 3600
        got = by_type.setdefault(inst["type"], [0.0, 0.0, 0.0])
        got[0] += 1
        got[1] += hours
        got[2] += costs.fleet_hourly({"instances": [inst]})["total_usd"] * hours
    for itype, (n, hours, usd) in sorted(by_type.items()):
        rows.append([f"{n:.0f} instance(s) {itype}: {hours:,.2f} instance-hours today", usd,
                     "the instance, its public IPv4 address, its root volume, its worker's polling"])
    alarms = (fleet or {}).get("alarms") or []
    if alarms:
        deployed = (fleet or {}).get("deployed_at")
        begun = max(since, datetime.fromisoformat(deployed).timestamp()) if deployed else since
        hours = max(0.0, now - begun) / 3600
        rows.append([f"{len(alarms)} CloudWatch alarm(s), {hours:,.2f} hours today",
                     costs.fleet_hourly({"alarms": alarms})["total_usd"] * hours, "per alarm metric-month, pro rata"])
    return {"since": start.isoformat(timespec="minutes"), "usd": sum(r[1] for r in rows), "rows": rows,
            "label": f"estimate, list prices of {costs.AS_OF}", "not_counted": NOT_COUNTED}
