"""Provisioning: idempotent ensure and teardown of labkit's queues and bucket.

Request queues (``requestQueue``, ``imageInbox``) each get a dead-letter queue ``<name>-dlq`` and a
redrive policy; every queue long-polls by default. The bucket blocks public access and encrypts
by default. Running :func:`ensure` twice changes nothing the second time.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from labkit.aws.clients import Clients
from labkit.aws.queues import Queue, is_missing_queue
from labkit.aws.storage import Bucket
from labkit.config import DLQ_SUFFIX, PAYLOADS_PREFIX, REPLY_QUEUE_PREFIX, Settings
from labkit.errors import AwsError

TAGS = {"labkit": "true"}
RETENTION = 4 * 24 * 3600  # 4 days: SQS's default, long enough to survive a weekend outage
DLQ_RETENTION = 14 * 24 * 3600  # the SQS maximum: dead letters are there to be looked at
REPLY_RETENTION = 3600
PAYLOAD_EXPIRY_DAYS = 2  # claim-check objects are only needed while their job is in flight


@dataclass
class Report:
    """What :func:`ensure` or :func:`teardown` did."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bucket: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def request_queues(settings: Settings) -> dict[str, str]:
    """Request queue role -> name."""
    return {"numbers": settings.request_queue, "images": settings.image_inbox}


def queue_attributes(settings: Settings) -> dict[str, dict[str, str]]:
    """The attributes each labkit queue should have, by name (dead-letter queues included)."""
    base = {"ReceiveMessageWaitTimeSeconds": str(settings.poll_wait), "MessageRetentionPeriod": str(RETENTION)}
    attrs = {
        settings.request_queue + DLQ_SUFFIX: {**base, "MessageRetentionPeriod": str(DLQ_RETENTION)},
        settings.image_inbox + DLQ_SUFFIX: {**base, "MessageRetentionPeriod": str(DLQ_RETENTION)},
        settings.request_queue: {**base, "VisibilityTimeout": str(settings.visibility_timeout)},
        settings.image_inbox: {**base, "VisibilityTimeout": str(settings.image_visibility_timeout)},
        settings.response_queue: {**base, "VisibilityTimeout": "30"},
        settings.image_outbox: {**base, "VisibilityTimeout": "30"},
    }
    return attrs


def _ensure_queue(sqs: Any, name: str, attrs: dict[str, str], report: Report) -> str:
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if not is_missing_queue(exc):
            raise AwsError.from_client_error(exc, f"looking up queue {name}") from exc
        url = sqs.create_queue(QueueName=name, Attributes=attrs, tags=TAGS)["QueueUrl"]
        report.created.append(f"queue {name}")
        return url
    current = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=list(attrs)).get("Attributes", {})
    differ = {k: v for k, v in attrs.items() if _normal(k, current.get(k)) != _normal(k, v)}
    if differ:
        sqs.set_queue_attributes(QueueUrl=url, Attributes=differ)
        report.updated.append(f"queue {name} ({', '.join(sorted(differ))})")
    else:
        report.unchanged.append(f"queue {name}")
    return url


def _normal(key: str, value: str | None) -> Any:
    if key == "RedrivePolicy" and value:
        policy = json.loads(value)
        return (policy.get("deadLetterTargetArn"), int(policy.get("maxReceiveCount", 0)))
    return value


def ensure_queues(clients: Clients, report: Report | None = None) -> Report:
    """Create or update the four queues and the two dead-letter queues."""
    settings, sqs = clients.settings, clients.sqs
    report = report or Report()
    attrs = queue_attributes(settings)
    try:
        for name, want in attrs.items():
            if name in request_queues(settings).values():
                dlq_url = sqs.get_queue_url(QueueName=name + DLQ_SUFFIX)["QueueUrl"]
                dlq_attrs = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])
                dlq_arn = dlq_attrs["Attributes"]["QueueArn"]
                want = {**want, "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receive_count)})}
            _ensure_queue(sqs, name, want, report)
    except ClientError as exc:
        raise AwsError.from_client_error(exc, "provisioning queues") from exc
    return report


def ensure_bucket(clients: Clients, report: Report | None = None) -> Report:
    """Create the bucket if needed: public access blocked, default encryption, payload expiry."""
    settings, s3 = clients.settings, clients.s3
    report = report or Report()
    name = clients.bucket_name()
    report.bucket = name
    try:
        try:
            s3.head_bucket(Bucket=name)
            report.unchanged.append(f"bucket {name}")
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            kwargs: dict[str, Any] = {"Bucket": name}
            if settings.region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": settings.region}
            s3.create_bucket(**kwargs)
            report.created.append(f"bucket {name}")
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True,
            "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [{
            "ID": "labkit-expire-payloads", "Status": "Enabled", "Filter": {"Prefix": PAYLOADS_PREFIX},
            "Expiration": {"Days": PAYLOAD_EXPIRY_DAYS},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]})
    except ClientError as exc:
        raise AwsError.from_client_error(exc, f"provisioning bucket {name}") from exc
    return report


def ensure(clients: Clients) -> Report:
    """Queues and bucket, as :func:`ensure_queues` and :func:`ensure_bucket` make them."""
    report = ensure_queues(clients)
    return ensure_bucket(clients, report)


def reply_queue_names(clients: Clients) -> list[tuple[str, str]]:
    """(name, url) of every labkit reply queue."""
    resp = clients.sqs.list_queues(QueueNamePrefix=REPLY_QUEUE_PREFIX)
    return [(u.rstrip("/").rsplit("/", 1)[-1], u) for u in resp.get("QueueUrls", [])]


def cleanup_reply_queues(clients: Clients, older_than: float = 0.0) -> list[str]:
    """Delete reply queues left by clients; with ``older_than`` (seconds), only those created before."""
    deleted = []
    now = time.time()
    for name, url in reply_queue_names(clients):
        try:
            if older_than:
                attrs = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["CreatedTimestamp"])
                if now - int(attrs["Attributes"]["CreatedTimestamp"]) < older_than:
                    continue
            clients.sqs.delete_queue(QueueUrl=url)
            deleted.append(name)
        except ClientError as exc:
            if not is_missing_queue(exc):
                raise AwsError.from_client_error(exc, f"deleting reply queue {name}") from exc
    return deleted


def teardown(clients: Clients, delete_bucket: bool = True) -> Report:
    """Delete every queue (dead-letter and reply queues too) and, unless told not to, the bucket."""
    settings, sqs = clients.settings, clients.sqs
    report = Report()
    for name in queue_attributes(settings):
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            sqs.delete_queue(QueueUrl=url)
            report.deleted.append(f"queue {name}")
        except ClientError as exc:
            if not is_missing_queue(exc):
                raise AwsError.from_client_error(exc, f"deleting queue {name}") from exc
    report.deleted += [f"queue {n}" for n in cleanup_reply_queues(clients)]
    if delete_bucket:
        name = clients.bucket_name()
        report.bucket = name
        bucket = Bucket(clients.s3, name)
        try:
            clients.s3.head_bucket(Bucket=name)
        except ClientError:
            return report
        count = bucket.delete_prefix("")
        clients.s3.delete_bucket(Bucket=name)
        report.deleted.append(f"bucket {name} ({count} objects)")
    return report


def status(clients: Clients) -> dict[str, Any]:
    """Endpoint, queues with depths (visible / in flight / dead-letter), bucket and its contents."""
    settings, sqs = clients.settings, clients.sqs
    out: dict[str, Any] = {"endpoint": settings.endpoint_url or f"AWS ({settings.region})",
                           "region": settings.region, "queues": {}, "bucket": None}
    for role, name in settings.queue_names().items():
        try:
            q = Queue.by_name(sqs, name)
            entry: dict[str, Any] = q.depth()
        except AwsError as exc:
            missing = bool(exc.code and "NonExistent" in exc.code)
            out["queues"][name] = {"role": role, "error": "missing" if missing else str(exc)}
            continue
        if name in request_queues(settings).values():
            try:
                entry["dead_letter"] = Queue.by_name(sqs, name + DLQ_SUFFIX).depth()["visible"]
            except AwsError:
                entry["dead_letter"] = None
        out["queues"][name] = {"role": role, **entry}
    out["reply_queues"] = len(reply_queue_names(clients))
    name = clients.bucket_name()
    try:
        clients.s3.head_bucket(Bucket=name)
        objects = Bucket(clients.s3, name).list("")
        prefixes: dict[str, int] = {}
        for o in objects:
            top = "/".join(o.key.split("/")[:2]) + "/" if o.key.startswith("images/") else o.key.split("/")[0] + "/"
            prefixes[top] = prefixes.get(top, 0) + 1
        out["bucket"] = {"name": name, "objects": len(objects), "by_prefix": prefixes}
    except ClientError:
        out["bucket"] = {"name": name, "error": "missing"}
    return out
