"""SQS queues: batched send, receive, delete and visibility changes, with clear errors."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from labkit.aws.arns import queue_arn
from labkit.errors import AwsError, aws_error_code
from labkit.waiting import tries

MAX_BATCH = 10  # SQS: entries per batch call
MAX_BATCH_BYTES = 1024 * 1024  # SQS: bytes per batch call (and per message) since 2025
NON_EXISTENT = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
PURGE_INTERVAL = 60  # SQS: one purge per queue every 60 s
PURGE_IN_PROGRESS = "PurgeQueueInProgress"  # the end of the error code SQS refuses a second purge with
# SQS, CreateQueue: "wait at least one second after the queue is created to be able to use the queue". A queue this
# process made answers "does not exist" for that long (or longer: eventual consistency); calls on it are tried
# again, a moment apart, for up to NEW_QUEUE_GRACE seconds after it was made, instead of taking it for deleted.
NEW_QUEUE_GRACE = 10.0
NEW_QUEUE_RETRY = 0.25


def is_missing_queue(exc: BaseException) -> bool:
    """SQS says the queue does not exist."""
    return aws_error_code(exc) in NON_EXISTENT


def redrive_policy(dead_letter_arn: str, max_receives: int) -> str:
    """A queue's ``RedrivePolicy`` attribute: a message received ``max_receives`` times moves to the dead-letter
    queue ``dead_letter_arn``."""
    return json.dumps({"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(max_receives)})


def read_redrive_policy(value: str | None) -> tuple[str | None, int] | None:
    """(dead-letter queue's ARN, receives) of a ``RedrivePolicy`` attribute (SQS may answer the count as a number
    or a string); None when the queue has none."""
    if not value:
        return None
    policy = json.loads(value)
    return policy.get("deadLetterTargetArn"), int(policy.get("maxReceiveCount", 0))


@dataclass(frozen=True)
class Message:
    """One received message."""

    body: str
    receipt: str
    message_id: str
    receive_count: int
    sent_at: float | None  # seconds since the epoch, from SQS's SentTimestamp
    first_received_at: float | None = None  # when SQS first handed it out (ApproximateFirstReceiveTimestamp)


@dataclass(frozen=True)
class Failure:
    """A batch entry that SQS refused: ``index`` into the batch given to the call."""

    index: int
    code: str
    message: str
    sender_fault: bool


@dataclass(frozen=True)
class PurgeOutcome:
    """What purging one queue did: ``purged``; or refused, because SQS allows one purge per queue every
    60 s (``retry_in``: the seconds left, None when the last purge was not made here); or ``error``."""

    queue: str
    purged: bool
    retry_in: float | None = None
    error: str | None = None

    @property
    def refused(self) -> bool:
        """Refused by SQS's one-purge-a-minute rule (not another failure)."""
        return not self.purged and self.error is None


def chunks(items: Sequence[Any], sizes: Sequence[int] | None = None) -> Iterator[list[int]]:
    """Indexes of ``items`` grouped in batches of at most 10 entries and 1 MiB (when sizes are given)."""
    batch: list[int] = []
    total = 0
    for i in range(len(items)):
        size = sizes[i] if sizes else 0
        if batch and (len(batch) == MAX_BATCH or total + size > MAX_BATCH_BYTES):
            yield batch
            batch, total = [], 0
        batch.append(i)
        total += size
    if batch:
        yield batch


class Queue:
    """A queue by URL. All methods raise :class:`AwsError` for failures of the call itself."""

    def __init__(self, sqs: Any, url: str, name: str | None = None) -> None:
        self.sqs = sqs
        self.url = url
        self.name = name or url.rstrip("/").rsplit("/", 1)[-1]
        self.purged_at: float | None = None  # time.monotonic() of the last purge made through this object
        self.made_at: float | None = None  # time.monotonic() of its creation, when this object made it

    def __repr__(self) -> str:
        return f"Queue({self.name!r})"

    @classmethod
    def by_name(cls, sqs: Any, name: str) -> Queue:
        """Look a queue up by name (one GetQueueUrl call: do it once, then keep the object)."""
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if is_missing_queue(exc):
                raise AwsError(
                    f"queue {name!r} does not exist: run `labkit up` (or provision) first",
                    code="AWS.SimpleQueueService.NonExistentQueue",
                ) from exc
            raise AwsError.from_client_error(exc, f"looking up queue {name!r}") from exc
        return cls(sqs, url, name)

    @classmethod
    def find(cls, sqs: Any, name: str) -> Queue | None:
        """The queue called ``name``, or None when there is none."""
        try:
            return cls.by_name(sqs, name)
        except AwsError as exc:
            if is_missing_queue(exc):
                return None
            raise

    @classmethod
    def create(cls, sqs: Any, name: str, attributes: dict[str, str] | None = None,
               tags: dict[str, str] | None = None) -> Queue:
        """Create the queue (SQS returns the existing one when its attributes are the same)."""
        try:
            url = sqs.create_queue(QueueName=name, Attributes=attributes or {}, tags=tags or {})["QueueUrl"]
        except ClientError as exc:
            raise AwsError.from_client_error(exc, f"creating queue {name}") from exc
        queue = cls(sqs, url, name)
        queue.made_at = time.monotonic()
        return queue

    def is_new(self) -> bool:
        """True while a queue this process made may still be unknown to SQS (:data:`NEW_QUEUE_GRACE`)."""
        return self.made_at is not None and time.monotonic() - self.made_at < NEW_QUEUE_GRACE

    def _call(self, op: str, **kwargs: Any) -> Any:
        # A queue made moments ago that SQS does not know everywhere yet is tried again, until it is not new.
        for _ in tries(itertools.repeat(NEW_QUEUE_RETRY)):
            try:
                return getattr(self.sqs, op)(QueueUrl=self.url, **kwargs)
            except ClientError as exc:
                if not (is_missing_queue(exc) and self.is_new()):
                    raise AwsError.from_client_error(exc, f"{op} on {self.name}") from exc

    # -- sending ------------------------------------------------------------------------------------
    def send(self, body: str, delay: int | None = 0, group: str | None = None) -> str:
        """Send one message; returns its SQS message id. ``delay`` None: the queue's own delivery delay.
        ``group``: its MessageGroupId (on a standard queue, the tenant SQS's fair queues share delivery by)."""
        kwargs: dict[str, Any] = {} if delay is None else {"DelaySeconds": delay}
        if group is not None:
            kwargs["MessageGroupId"] = group
        return self._call("send_message", MessageBody=body, **kwargs)["MessageId"]

    def send_batch(self, bodies: Sequence[str], group: str | None = None) -> list[Failure]:
        """Send many messages in as few calls as possible, each with MessageGroupId ``group`` when given (see
        :meth:`send`). Returns the entries SQS refused."""
        failures: list[Failure] = []
        sizes = [len(b.encode()) for b in bodies]
        extra = {} if group is None else {"MessageGroupId": group}
        for indexes in chunks(bodies, sizes):
            entries = [{"Id": str(i), "MessageBody": bodies[i], **extra} for i in indexes]
            resp = self._call("send_message_batch", Entries=entries)
            failures += [_failure(f) for f in resp.get("Failed", [])]
        return failures

    # -- receiving ----------------------------------------------------------------------------------
    def receive(self, max_messages: int = MAX_BATCH, wait: int | None = 20, visibility: int | None = None,
                sent_times: bool = False, receive_count: bool = True) -> list[Message]:
        """Long-poll for up to ``max_messages`` (≤ 10) messages, waiting at most ``wait`` seconds (None:
        the queue's own ReceiveMessageWaitTimeSeconds).

        ``sent_times`` also asks for each message's SentTimestamp (``Message.sent_at``); off by default,
        since every attribute asked for costs the server time on every message (on the emulator, dropping
        it moved labkit's throughput from 0.76-0.89x to 0.84-0.97x of the floor, over runs of 1,000 jobs).
        ``receive_count=False`` asks for no attribute at all (``Message.receive_count`` is then 1): for
        readers that never look at it, such as the benchmark's reference pipelines.
        """
        # The first receive's time comes with the count: a redelivered job's timeline shows both deliveries
        # (measured on the emulator: no cost in receive time next to the count alone).
        attributes = (["ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp"] if receive_count else []) \
            + (["SentTimestamp"] if sent_times else [])
        kwargs: dict[str, Any] = {"MaxNumberOfMessages": max(1, min(max_messages, MAX_BATCH))}
        if wait is not None:
            kwargs["WaitTimeSeconds"] = wait
        if attributes:
            kwargs["MessageSystemAttributeNames"] = attributes
        if visibility is not None:
            kwargs["VisibilityTimeout"] = visibility
        resp = self._call("receive_message", **kwargs)
        out = []
        for m in resp.get("Messages", []):
            attrs = m.get("Attributes", {})
            sent, first = attrs.get("SentTimestamp"), attrs.get("ApproximateFirstReceiveTimestamp")
            out.append(Message(
                body=m.get("Body", ""),
                receipt=m["ReceiptHandle"],
                message_id=m["MessageId"],
                receive_count=int(attrs.get("ApproximateReceiveCount", "1")),
                sent_at=int(sent) / 1000 if sent else None,
                first_received_at=int(first) / 1000 if first else None,
            ))
        return out

    def delete_batch(self, receipts: Sequence[str]) -> list[Failure]:
        """Delete messages by receipt handle, in batches of 10."""
        failures: list[Failure] = []
        for group in chunks(receipts):
            entries = [{"Id": str(i), "ReceiptHandle": receipts[i]} for i in group]
            resp = self._call("delete_message_batch", Entries=entries)
            failures += [_failure(f) for f in resp.get("Failed", [])]
        return failures

    def change_visibility(self, receipts: Sequence[str], timeout: int) -> list[Failure]:
        """Set the visibility timeout of received messages (0 releases them at once)."""
        failures: list[Failure] = []
        for group in chunks(receipts):
            entries = [{"Id": str(i), "ReceiptHandle": receipts[i], "VisibilityTimeout": timeout} for i in group]
            resp = self._call("change_message_visibility_batch", Entries=entries)
            failures += [_failure(f) for f in resp.get("Failed", [])]
        return failures

    # -- housekeeping -------------------------------------------------------------------------------
    def purge(self) -> None:
        """Delete every message (SQS refuses a second purge of a queue within 60 s)."""
        self._call("purge_queue")
        self.purged_at = time.monotonic()

    def purge_outcome(self) -> PurgeOutcome:
        """Purge, and say how it went instead of raising: purged, refused (with the seconds left when this
        object made the last purge) or failed."""
        try:
            self.purge()
        except AwsError as exc:
            if not (exc.code or "").endswith(PURGE_IN_PROGRESS):
                return PurgeOutcome(self.name, False, error=str(exc))
            last = self.purged_at
            left = None if last is None else max(0.0, PURGE_INTERVAL - (time.monotonic() - last))
            return PurgeOutcome(self.name, False, retry_in=left)
        return PurgeOutcome(self.name, True)

    def depth(self) -> dict[str, int]:
        """Approximate counts: visible, in flight (received, not deleted), delayed."""
        names = [
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ]
        attrs = self._call("get_queue_attributes", AttributeNames=names).get("Attributes", {})
        return {
            "visible": int(attrs.get(names[0], 0)),
            "in_flight": int(attrs.get(names[1], 0)),
            "delayed": int(attrs.get(names[2], 0)),
        }

    def set_attributes(self, attributes: dict[str, str]) -> None:
        self._call("set_queue_attributes", Attributes=attributes)

    def arn(self) -> str:
        """The queue's ARN, built from its URL (``…/<account>/<name>``) and the client's region where the URL has
        that form, as on AWS: no call, so a queue made moments ago has one too. Else asked of SQS."""
        *_, account, name = self.url.rstrip("/").split("/")
        region = getattr(getattr(self.sqs, "meta", None), "region_name", None)
        if account.isdigit() and len(account) == 12 and name == self.name and region:
            return queue_arn(region, account, name)
        return self.attributes("QueueArn")["QueueArn"]

    def delete(self) -> bool:
        """Delete the queue; False when it was gone already."""
        try:
            self._call("delete_queue")
        except AwsError as exc:
            if is_missing_queue(exc):
                return False
            raise
        return True

    def attributes(self, *names: str) -> dict[str, str]:
        """The queue's attributes called ``names`` (all of them when none is named)."""
        return self._call("get_queue_attributes", AttributeNames=list(names) or ["All"]).get("Attributes", {})

    def tags(self) -> dict[str, str]:
        """The queue's tags (ListQueueTags)."""
        return self._call("list_queue_tags").get("Tags", {})

    def tag(self, tags: dict[str, str]) -> None:
        """Add or overwrite tags (TagQueue)."""
        self._call("tag_queue", Tags=tags)

    def visibility_timeout(self) -> int:
        """The queue's own visibility timeout: it decides when a message still held reappears."""
        return max(1, int(self.attributes("VisibilityTimeout")["VisibilityTimeout"]))

    def drain(self, max_messages: int = 1000, wait: int = 1) -> Iterable[Message]:
        """Receive (without deleting) until the queue looks empty or ``max_messages`` were seen."""
        seen = 0
        while seen < max_messages:
            batch = self.receive(min(MAX_BATCH, max_messages - seen), wait=wait)
            if not batch:
                return
            seen += len(batch)
            yield from batch


def list_queues(sqs: Any, prefix: str) -> list[Queue]:
    """Every queue whose name starts with ``prefix`` (all pages)."""
    out: list[Queue] = []
    try:
        for page in sqs.get_paginator("list_queues").paginate(QueueNamePrefix=prefix):
            out += [Queue(sqs, url) for url in page.get("QueueUrls", [])]
    except ClientError as exc:
        raise AwsError.from_client_error(exc, f"listing queues named {prefix}*") from exc
    return out


def _failure(entry: dict[str, Any]) -> Failure:
    return Failure(int(entry["Id"]), entry.get("Code", ""), entry.get("Message", ""), bool(entry.get("SenderFault")))
