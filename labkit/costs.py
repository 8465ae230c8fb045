"""What AWS bills for labkit, at list prices of a stated date: the requests a notebook or the benchmark made
(:func:`cost`, :func:`price`), and what keeps billing while it exists (:func:`billing_now`, what ``labkit
status`` and notebook 03 show): instances, their public IPv4 addresses and root volumes, the alarms' metrics, the
workers' own polling and heartbeats, the bucket's storage.

    cost({"sqs.SendMessageBatch": 20, "s3.PutObject": 1})["total_usd"]
    fleet_hourly(status["fleet"])["total_usd"]        # the fleet's cost per hour

Every price is one row of :data:`TABLE`, with its unit, the AWS page it comes from and its date. SQS bills
each 64 KiB chunk of a request's payload as one request (:func:`sqs_requests`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit import kinds
from labkit.config import HEARTBEAT_SECONDS


@dataclass(frozen=True)
class Price:
    """One list price: US dollars per ``unit``, from the AWS pricing page ``source``, as of ``date``."""

    usd: float
    unit: str
    source: str
    date: str


CHECKED = "2026-12-07"  # the day these prices were read from the pages below (us-east-1, free tiers ignored)
_EC2 = "https://aws.amazon.com/ec2/pricing/on-demand/"
# The one table of prices. A date other than CHECKED is the day AWS started to charge that price.
TABLE: dict[str, Price] = {
    "sqs_request": Price(0.40 / 1e6, "SQS request (standard queue, first 100 billion a month); each 64 KiB of "
                         "a request's payload is billed as one request", "https://aws.amazon.com/sqs/pricing/",
                         CHECKED),
    "s3_put": Price(0.005 / 1e3, "S3 Standard PUT, COPY, POST or LIST request", "https://aws.amazon.com/s3/pricing/",
                    CHECKED),
    "s3_get": Price(0.0004 / 1e3, "S3 Standard GET, HEAD or other request (DELETE is free)",
                    "https://aws.amazon.com/s3/pricing/", CHECKED),
    "s3_storage": Price(0.023, "GB-month of S3 Standard storage (first 50 TB)", "https://aws.amazon.com/s3/pricing/",
                        CHECKED),
    "alarm_metric": Price(0.10, "alarm metric-month, standard resolution (an alarm on a metric-math expression is "
                          "billed for each metric it reads)", "https://aws.amazon.com/cloudwatch/pricing/", CHECKED),
    "public_ipv4": Price(0.005, "hour of a public IPv4 address, in use or idle (every instance in a default subnet "
                         "gets one)", "https://aws.amazon.com/vpc/pricing/", "2024-02-01"),
    "ebs_gp3": Price(0.08, "GB-month of an EBS gp3 volume (provisioned size, baseline IOPS and throughput)",
                     "https://aws.amazon.com/ebs/pricing/", CHECKED),
    **{f"ec2.{t}": Price(usd, f"hour of an on-demand Linux {t} instance", _EC2, CHECKED) for t, usd in (
        ("t3.micro", 0.0104), ("t3.small", 0.0208), ("t3.medium", 0.0416), ("t4g.micro", 0.0084),
        ("t4g.small", 0.0168), ("t4g.medium", 0.0336))},
}
AS_OF = max(p.date for p in TABLE.values())  # what a table of costs says its prices date from
# The same prices in the shape the benchmark's reports print (kept for them)
PRICES: dict[str, Any] = {
    "as_of": AS_OF,
    "source": "labkit.costs.TABLE: AWS list prices, us-east-1, read on the date given (free tiers ignored)",
    "sqs_per_million_requests": TABLE["sqs_request"].usd * 1e6,
    "s3_put_per_thousand": TABLE["s3_put"].usd * 1e3,
    "s3_get_per_thousand": TABLE["s3_get"].usd * 1e3,
    "s3_storage_per_gb_month": TABLE["s3_storage"].usd,
    "alarm_per_month": TABLE["alarm_metric"].usd,
    "ec2_per_hour": {k.split(".", 1)[1]: p.usd for k, p in TABLE.items() if k.startswith("ec2.")},
}
SQS_CHUNK = 64 * 1024  # bytes of payload billed as one SQS request
HOURS_PER_MONTH = 730
# labkit's launch data names no block device, so an instance's root volume is its image's: Amazon Linux 2023's
# is 8 GiB of gp3 (labkit.fleet.instances.AMI_PARAMETERS).
ROOT_VOLUME_GB = 8
# How a labkit worker polls when left idle: one long-poll ReceiveMessage at a time per request queue (a lane's
# thread, worker/loop.py), each waiting its poll wait; on EC2 also a heartbeat PutObject every HEARTBEAT_SECONDS
# (worker/health.py). An idle worker ships no log object (worker/shipper.py writes only lines it was given).
LANES = len(kinds.LANES)
LOCAL_POLL_WAIT = 10  # seconds: `labkit worker`'s default, what `labkit up` starts on AWS
UNIT_FILE = Path(__file__).resolve().parent.parent / "worker" / "deploy" / "labkit-worker.service"
_S3_PUT_CLASS = {"PutObject", "CopyObject", "PostObject", "ListObjects", "ListObjectsV2", "DeleteObjects",
                 "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "ListBuckets"}
_S3_FREE = {"DeleteObject", "AbortMultipartUpload", "DeleteBucket"}  # DELETE and CANCEL requests are free


def sqs_requests(payload_bytes: int) -> int:
    """SQS requests billed for one call carrying ``payload_bytes`` (a message, or a batch's messages): one per
    64 KiB chunk, at least one (a 200 KiB message is billed as 4 requests)."""
    return max(1, math.ceil(payload_bytes / SQS_CHUNK))


def unit_price(operation: str) -> float:
    """US dollars for one ``service.Operation`` request (0 for services that do not bill per request:
    STS, IAM, EC2's and Auto Scaling's API, and S3's DELETE)."""
    service, _, op = operation.partition(".")
    if service == "sqs":
        return TABLE["sqs_request"].usd
    if service == "s3" and op in _S3_PUT_CLASS:
        return TABLE["s3_put"].usd
    if service == "s3" and op not in _S3_FREE:
        return TABLE["s3_get"].usd
    return 0.0


def cost(calls: dict[str, float], billed: dict[str, float] | None = None) -> dict[str, float]:
    """US dollars for ``calls`` (``service.Operation`` -> count), by service and in total. ``billed``: the SQS
    requests billed per operation when known (64 KiB chunks: :func:`sqs_requests`), used instead of the calls."""
    sqs = sum(n * unit_price(op) for op, n in {**calls, **(billed or {})}.items() if op.startswith("sqs."))
    s3 = sum(n * unit_price(op) for op, n in calls.items() if op.startswith("s3."))
    return {"sqs_usd": sqs, "s3_usd": s3, "total_usd": sqs + s3}


def price(calls: dict[str, int], jobs: int, per: int = 1_000_000) -> dict[str, float]:
    """US dollars for ``per`` jobs, given ``calls`` made for ``jobs`` jobs (e.g. a benchmark's)."""
    scale = per / jobs if jobs else 0.0
    return {"jobs": per, **{k: v * scale for k, v in cost(calls).items()}}


def rows(calls: dict[str, int], billed: dict[str, int] | None = None) -> list[list[Any]]:
    """One row per operation, most called first: operation, requests, US dollars at :data:`TABLE` (an SQS
    operation whose payloads came to more 64 KiB chunks than calls says so)."""
    billed = billed or {}
    out = []
    for op, n in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0])):
        units = max(n, billed.get(op, n))
        usd = f"${units * unit_price(op):,.6f}" if unit_price(op) else "no charge per request"
        out.append([op, n, usd + (f" (billed as {units:,}: 64 KiB chunks)" if units > n else "")])
    return out


def ec2_poll_wait(unit: Path = UNIT_FILE) -> int:
    """The receive wait of the worker on EC2: its systemd unit's ``--poll-wait`` (20 s, SQS's longest)."""
    found = re.search(r"--poll-wait\s+(\d+)", unit.read_text()) if unit.is_file() else None
    return int(found.group(1)) if found else 20


def idle_requests_per_hour(poll_wait: float, heartbeat: bool, lanes: int = LANES) -> dict[str, float]:
    """The AWS requests one idle worker makes in an hour: a ReceiveMessage per lane every ``poll_wait`` seconds
    (an empty long poll returns when its wait is up) and, with ``heartbeat`` (on EC2), its heartbeat object."""
    out = {"sqs.ReceiveMessage": lanes * 3600 / max(poll_wait, 1)}
    if heartbeat:
        out["s3.PutObject"] = 3600 / HEARTBEAT_SECONDS
    return out


def fleet_hourly(fleet: dict[str, Any] | None, local_workers: int = 0) -> dict[str, Any]:
    """What the fleet (``fleet_status``'s) bills per hour while it runs, line by line: ``rows`` of (what, US
    dollars per hour, how), and ``total_usd``. ``local_workers``: workers on this machine polling AWS too."""
    fleet = fleet or {}
    live = [i for i in fleet.get("instances", []) if i.get("state") in ("pending", "running")]
    out: list[tuple[str, float | None, str]] = []
    for itype in sorted({i["type"] for i in live}):
        n = sum(i["type"] == itype for i in live)
        p = TABLE.get(f"ec2.{itype}")
        out.append((f"{n} EC2 instance(s) {itype}", n * p.usd if p else None,
                    f"${p.usd}/hour each" if p else "see the EC2 price list"))
    addresses = sum(1 for i in live if i.get("public_ip", True))
    if addresses:
        ip = TABLE["public_ipv4"].usd
        out.append((f"{addresses} public IPv4 address(es)", addresses * ip, f"${ip}/hour each"))
    if live:
        gb = len(live) * ROOT_VOLUME_GB
        out.append((f"{len(live)} root volume(s), EBS gp3 {ROOT_VOLUME_GB} GiB each", gb * TABLE["ebs_gp3"].usd
                    / HOURS_PER_MONTH, f"${TABLE['ebs_gp3'].usd}/GB-month"))
    metrics = sum(a.get("metrics", 1) for a in fleet.get("alarms", []))
    if metrics:
        out.append((f"{len(fleet['alarms'])} CloudWatch alarm(s) reading {metrics} metric(s)",
                    metrics * TABLE["alarm_metric"].usd / HOURS_PER_MONTH,
                    f"${TABLE['alarm_metric'].usd:.2f}/alarm metric-month"))
    for what, n, wait, beat in ((f"the {len(live)} instance worker(s)", len(live), ec2_poll_wait(), True),
                                (f"{local_workers} local worker(s) on AWS", local_workers, LOCAL_POLL_WAIT, False)):
        if n:
            calls = {op: n * k for op, k in idle_requests_per_hour(wait, beat).items()}
            said = ", ".join(f"{k:,.0f} {op}" for op, k in calls.items())
            out.append((f"{what}: polling and heartbeats while idle", cost(calls)["total_usd"], f"{said} an hour"))
    return {"rows": out, "total_usd": sum(usd for _, usd, _ in out if usd is not None)}


def billing_now(status: dict[str, Any], local_workers: int = 0) -> list[list[Any]]:
    """What keeps costing money while it exists, from ``Lab.status()`` (with ``fleet`` when deployed): one row
    per thing with its price per hour and per month at :data:`TABLE` (the jobs' requests come on top, per use).
    ``local_workers``: workers running on this machine against AWS (they poll too)."""
    fleet = fleet_hourly(status.get("fleet"), local_workers)
    out = [[what, f"${usd:,.4f}/hour (${usd * HOURS_PER_MONTH:,.2f}/month; {how})" if usd is not None else how]
           for what, usd, how in fleet["rows"]]
    if len(fleet["rows"]) > 1:
        total = fleet["total_usd"]
        out.append(["total while it runs", f"${total:,.4f}/hour (${total * HOURS_PER_MONTH:,.2f}/month)"])
    bucket = status.get("bucket") or {}
    if "bytes" in bucket:
        gb = bucket["bytes"] / 1e9
        out.append([f"bucket {bucket['name']}: {bucket['objects']:,} objects, {bucket['bytes'] / 2**20:,.1f} MiB",
                    f"${gb * TABLE['s3_storage'].usd:,.4f}/month (storage)"])
    queues = [q for q in status.get("queues", {}).values() if "error" not in q]
    if queues:
        out.append([f"{len(queues)} queue(s) (+{status.get('reply_queues', 0)} reply queues)",
                    f"nothing while idle; ${PRICES['sqs_per_million_requests']:.2f} per million requests "
                    "(a 64 KiB chunk each)"])
    return out


def price_table() -> list[list[str]]:
    """:data:`TABLE` as rows: what, price, per, date, source (for docs and ``labkit status --json``)."""
    return [[key, f"${p.usd:.10g}", p.unit, p.date, p.source] for key, p in TABLE.items()]
