"""What AWS requests cost, at list prices of a stated date: for a notebook's summary (the calls it made) and
the benchmark (a million jobs). Requests only: storage, transfer, instances and alarms are billed apart
(docs/aws.md, "What it costs"); `labkit status` on AWS says what is billing now.

    cost({"sqs.SendMessageBatch": 20, "s3.PutObject": 1})["total_usd"]
"""

from __future__ import annotations

from typing import Any

PRICES: dict[str, Any] = {
    "as_of": "2025-06",
    "source": "AWS list prices, us-east-1, as published at that date (not checked on the run date; "
              "free tiers ignored)",
    "sqs_per_million_requests": 0.40,  # standard queue; a batch of up to 10 is one request per 64 KiB
    "s3_put_per_thousand": 0.005,  # PUT, COPY, POST, LIST
    "s3_get_per_thousand": 0.0004,  # GET, HEAD and every other request
    "s3_storage_per_gb_month": 0.023,  # S3 Standard, first 50 TB
    "alarm_per_month": 0.10,  # a standard-resolution CloudWatch alarm
    # On-demand Linux instances: what `labkit deploy` suggests (others: the EC2 price list)
    "ec2_per_hour": {"t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416, "t4g.micro": 0.0084,
                     "t4g.small": 0.0168, "t4g.medium": 0.0336},
}
_S3_PUT_CLASS = {"PutObject", "CopyObject", "PostObject", "ListObjects", "ListObjectsV2", "DeleteObjects",
                 "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "ListBuckets"}
_S3_FREE = {"DeleteObject", "AbortMultipartUpload", "DeleteBucket"}  # DELETE and CANCEL requests are free


def unit_price(operation: str) -> float:
    """US dollars for one ``service.Operation`` request (0 for services that do not bill per request:
    STS, IAM, EC2's and Auto Scaling's API, and S3's DELETE)."""
    service, _, op = operation.partition(".")
    if service == "sqs":
        return PRICES["sqs_per_million_requests"] / 1e6
    if service == "s3" and op in _S3_PUT_CLASS:
        return PRICES["s3_put_per_thousand"] / 1e3
    if service == "s3" and op not in _S3_FREE:
        return PRICES["s3_get_per_thousand"] / 1e3
    return 0.0


def cost(calls: dict[str, int]) -> dict[str, float]:
    """US dollars for ``calls`` (``service.Operation`` -> count), by service and in total."""
    sqs = sum(n * unit_price(op) for op, n in calls.items() if op.startswith("sqs."))
    s3 = sum(n * unit_price(op) for op, n in calls.items() if op.startswith("s3."))
    return {"sqs_usd": sqs, "s3_usd": s3, "total_usd": sqs + s3}


def price(calls: dict[str, int], jobs: int, per: int = 1_000_000) -> dict[str, float]:
    """US dollars for ``per`` jobs, given ``calls`` made for ``jobs`` jobs (e.g. a benchmark's)."""
    scale = per / jobs if jobs else 0.0
    return {"jobs": per, **{k: v * scale for k, v in cost(calls).items()}}


def rows(calls: dict[str, int]) -> list[list[Any]]:
    """One row per operation, most called first: operation, requests, US dollars at :data:`PRICES`."""
    return [[op, n, f"${n * unit_price(op):,.6f}" if unit_price(op) else "no charge per request"]
            for op, n in sorted(calls.items(), key=lambda kv: (-kv[1], kv[0]))]


HOURS_PER_MONTH = 730


def billing_now(status: dict[str, Any]) -> list[list[Any]]:
    """What keeps costing money while it exists, from ``Lab.status()`` (with ``fleet`` when deployed): one row
    per thing, with its price per month at :data:`PRICES` (requests come on top, per use)."""
    out: list[list[Any]] = []
    fleet = status.get("fleet") or {}
    running = [i for i in fleet.get("instances", []) if i.get("state") in ("pending", "running")]
    for itype in sorted({i["type"] for i in running}):
        n = sum(i["type"] == itype for i in running)
        hourly = PRICES["ec2_per_hour"].get(itype)
        price = (f"${n * hourly * HOURS_PER_MONTH:,.2f}/month (${hourly}/hour each)" if hourly
                 else "see the EC2 price list")
        out.append([f"{n} EC2 instance(s) {itype} running", price])
    if fleet.get("alarms"):
        n = len(fleet["alarms"])
        out.append([f"{n} CloudWatch alarm(s)", f"${n * PRICES['alarm_per_month']:.2f}/month"])
    bucket = status.get("bucket") or {}
    if "bytes" in bucket:
        gb = bucket["bytes"] / 1e9
        out.append([f"bucket {bucket['name']}: {bucket['objects']:,} objects, {bucket['bytes'] / 2**20:,.1f} MiB",
                    f"${gb * PRICES['s3_storage_per_gb_month']:,.4f}/month (storage)"])
    queues = [q for q in status.get("queues", {}).values() if "error" not in q]
    if queues:
        out.append([f"{len(queues)} queue(s) (+{status.get('reply_queues', 0)} reply queues)",
                    f"nothing while idle; ${PRICES['sqs_per_million_requests']:.2f} per million requests"])
    return out
