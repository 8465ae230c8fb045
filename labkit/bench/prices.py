"""What a million jobs cost in requests, at AWS list prices."""

from __future__ import annotations

from typing import Any

PRICES: dict[str, Any] = {
    "as_of": "2025-06",
    "source": "AWS list prices, us-east-1, as published at that date (not checked on the run date; "
              "free tiers ignored)",
    "sqs_per_million_requests": 0.40,  # standard queue; a batch of up to 10 is one request per 64 KiB
    "s3_put_per_thousand": 0.005,  # PUT, COPY, POST, LIST
    "s3_get_per_thousand": 0.0004,  # GET, HEAD and every other request
}
_S3_PUT_CLASS = {"PutObject", "CopyObject", "PostObject", "ListObjects", "ListObjectsV2", "DeleteObjects",
                 "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
_S3_FREE = {"DeleteObject", "AbortMultipartUpload"}  # DELETE and CANCEL requests are free


def price(calls: dict[str, int], jobs: int, per: int = 1_000_000) -> dict[str, float]:
    """US dollars for ``per`` jobs at :data:`PRICES`, given ``calls`` (``service.Operation`` -> count,
    e.g. ``lab.stats()["calls"]``) made for ``jobs`` jobs. Requests only: storage and transfer are extra."""
    sqs = s3_put = s3_get = 0
    for name, n in calls.items():
        service, _, op = name.partition(".")
        if service == "sqs":
            sqs += n
        elif service == "s3" and op in _S3_PUT_CLASS:
            s3_put += n
        elif service == "s3" and op not in _S3_FREE:
            s3_get += n
    scale = per / jobs if jobs else 0.0
    usd_sqs = sqs * scale * PRICES["sqs_per_million_requests"] / 1e6
    usd_s3 = scale * (s3_put * PRICES["s3_put_per_thousand"] + s3_get * PRICES["s3_get_per_thousand"]) / 1e3
    return {"jobs": per, "sqs_usd": usd_sqs, "s3_usd": usd_s3, "total_usd": usd_sqs + usd_s3}
