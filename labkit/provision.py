"""Provisioning: idempotent ensure and teardown of labkit's queues and bucket, and their status.

Each lane's request queue (``requestQueue``, ``imageInbox``, see :mod:`labkit.kinds`) gets a dead-letter
queue ``<name>-dlq`` and a redrive policy; every queue long-polls by default. So does each kind of one's own on
its queue ``<requestQueue>-kind-<name>`` (:func:`ensure_kind_queue`), made on first use by a client or a
worker. The bucket blocks public access, encrypts by default and refuses requests not made over TLS. Running
:func:`ensure` twice changes nothing the second time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit import kinds
from labkit.aws.arns import partition
from labkit.aws.clients import Clients
from labkit.aws.queues import (
    NEW_QUEUE_GRACE,
    NEW_QUEUE_RETRY,
    Queue,
    is_missing_queue,
    list_queues,
    read_redrive_policy,
    redrive_policy,
)
from labkit.aws.storage import Bucket
from labkit.config import DLQ_SUFFIX, PAYLOADS_PREFIX, REPLY_QUEUE_PREFIX, Settings
from labkit.errors import AwsError, ConfigError, CredentialsError, credentials_error
from labkit.waiting import poll

TAGS = {"labkit": "true"}
RETENTION = 4 * 24 * 3600  # 4 days: SQS's default, long enough to survive a weekend outage
DLQ_RETENTION = 14 * 24 * 3600  # the SQS maximum: dead letters are there to be looked at
REPLY_RETENTION = 3600
PAYLOAD_EXPIRY_DAYS = 2  # claim-check objects are only needed while their job is in flight
# SQS: the name of a deleted queue cannot be used again for 60 s (CreateQueue answers QueueDeletedRecently,
# and the old queue may still be listed and answer for a while). Provisioning waits it out.
SQS_NAME_REUSE_WAIT = 60
DELETED_RECENTLY = ("AWS.SimpleQueueService.QueueDeletedRecently", "QueueDeletedRecently")
QUEUE_EXISTS = ("QueueAlreadyExists", "QueueNameExists", "AWS.SimpleQueueService.QueueNameExists")
RECREATE_POLL = 5.0  # seconds between attempts while SQS refuses the name
RECREATE_TIMEOUT = 120.0
# What S3 answers about a bucket that exists but is not this account's (ExpectedBucketOwner, or the name is
# taken: bucket names are global).
NOT_OUR_BUCKET = ("403", "AccessDenied", "Forbidden", "BucketAlreadyExists")
# The IAM action of each S3 call that makes the bucket ready, to name the one refused (HeadBucket is s3:ListBucket).
BUCKET_ACTIONS = {"HeadBucket": "s3:ListBucket", "CreateBucket": "s3:CreateBucket", "PutPublicAccessBlock":
                  "s3:PutBucketPublicAccessBlock", "PutBucketEncryption": "s3:PutEncryptionConfiguration",
                  "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration", "PutBucketLifecycleConfiguration":
                  "s3:PutLifecycleConfiguration", "GetBucketPolicy": "s3:GetBucketPolicy", "PutBucketPolicy":
                  "s3:PutBucketPolicy"}
Progress = Callable[[str], None] | None


@dataclass
class ProvisionReport:
    """What :func:`ensure` or :func:`delete_resources` did."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # left on purpose: other clients' reply queues in use
    bucket: str | None = None

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


def queue_attributes(settings: Settings) -> dict[str, dict[str, str]]:
    """The attributes each labkit queue should have, by name (dead-letter queues first)."""
    base = {"ReceiveMessageWaitTimeSeconds": str(settings.queue_wait), "MessageRetentionPeriod": str(RETENTION)}
    lanes = list(kinds.LANES.values())
    attrs = {ln.request_queue(settings) + DLQ_SUFFIX: {**base, "MessageRetentionPeriod": str(DLQ_RETENTION)}
             for ln in lanes}
    attrs.update({ln.request_queue(settings): {**base, "VisibilityTimeout": str(ln.visibility(settings))}
                  for ln in lanes})
    attrs.update({ln.reply_queue(settings): {**base, "VisibilityTimeout": "30"} for ln in lanes})
    return attrs


def _ensure_queue(sqs: Any, name: str, attrs: dict[str, str], report: ProvisionReport, progress: Progress) -> Queue:
    queue = Queue.find(sqs, name)
    if queue is not None:
        try:
            current = queue.attributes(*attrs)
        except AwsError as exc:
            if not is_missing_queue(exc):
                raise
            queue = None  # SQS still knew its name, yet it is gone: deleted moments ago, not fine
    if queue is None:
        report.created.append(f"queue {name}")
        return _create_queue(sqs, name, attrs, progress)
    differ = {k: v for k, v in attrs.items() if _normal(k, current.get(k)) != _normal(k, v)}
    if differ:
        queue.set_attributes(differ)
        report.updated.append(f"queue {name} ({', '.join(sorted(differ))})")
    else:
        report.unchanged.append(f"queue {name}")
    return queue


def _create_queue(sqs: Any, name: str, attrs: dict[str, str], progress: Progress) -> Queue:
    """Create the queue; while SQS refuses a name deleted less than 60 s ago, wait and say so."""
    for elapsed in poll(RECREATE_POLL, RECREATE_TIMEOUT):
        try:
            return Queue.create(sqs, name, attrs, TAGS)
        except AwsError as exc:
            if exc.code not in DELETED_RECENTLY:
                raise
        if progress is not None:
            progress(f"queue {name} was deleted less than {SQS_NAME_REUSE_WAIT} s ago and SQS does not take its "
                     f"name back before then: waiting ({elapsed:.0f} s so far)")
    raise AwsError(f"creating queue {name}: SQS still refuses the name of a queue deleted moments ago after "
                   f"{RECREATE_TIMEOUT:.0f} s; run `labkit up` again in a minute", code=DELETED_RECENTLY[0])


def _normal(key: str, value: str | None) -> Any:
    return read_redrive_policy(value) if key == "RedrivePolicy" else value


def ensure_queues(clients: Clients, report: ProvisionReport | None = None,
                  progress: Progress = None) -> ProvisionReport:
    """Create or update every lane's request and reply queue, and the dead-letter queues. ``progress``
    hears about waits (a queue deleted moments ago cannot be made again for 60 s)."""
    settings, sqs = clients.settings, clients.sqs
    report = report or ProvisionReport()
    made: dict[str, Queue] = {}
    for name, want in queue_attributes(settings).items():
        if name + DLQ_SUFFIX in made:  # a request queue: redrive to its dead-letter queue
            want = {**want, "RedrivePolicy": redrive_policy(made[name + DLQ_SUFFIX].arn(), settings.max_receive_count)}
        made[name] = _ensure_queue(sqs, name, want, report, progress)
    _wait_known(sqs, [q for q in made.values() if q.is_new()])
    return report


def kind_queue_attributes(settings: Settings, lane: kinds.Lane) -> dict[str, dict[str, str]]:
    """A kind queue's attributes and its dead-letter queue's, as provisioning gives its lane's request queue (keyed
    ``DLQ_SUFFIX`` and ``""``); the request queue's redrive policy is added once its dead-letter queue exists."""
    lane_attrs = queue_attributes(settings)
    request = lane.request_queue(settings)
    return {DLQ_SUFFIX: lane_attrs[request + DLQ_SUFFIX], "": lane_attrs[request]}


def _as_lane_is(sqs: Any, settings: Settings, lane: kinds.Lane) -> tuple[str | None, int]:
    """(visibility timeout, receives before dead letters) of the lane's request queue as it exists, so that a kind's
    queue behaves as its lane's whoever makes it (a worker's settings need not carry what `up` was given); the
    settings' where it cannot be read."""
    count = settings.max_receive_count
    queue = Queue.find(sqs, lane.request_queue(settings))
    if queue is None:
        return None, count
    try:
        attrs = queue.attributes("VisibilityTimeout", "RedrivePolicy")
    except AwsError:
        return None, count
    redrive = read_redrive_policy(attrs.get("RedrivePolicy"))
    return attrs.get("VisibilityTimeout"), (redrive[1] if redrive and redrive[1] else count)


def ensure_kind_queue(clients: Clients, kind: str, progress: Progress = None) -> tuple[Queue, bool]:
    """The request queue of ``kind`` (a kind of one's own: :func:`labkit.kinds.kind_queue`), made with its
    dead-letter queue when missing, as its lane's (the numbers lane's for a kind this process does not know).
    Returns (queue, made now). An existing queue is used as it is: a client (a student) may make one, not change
    one. Two makers at once both end with the one queue."""
    settings, sqs = clients.settings, clients.sqs
    name = kinds.kind_queue(settings, kind)
    queue = Queue.find(sqs, name)
    if queue is not None:
        return queue, False
    lane = kinds.request_lane(kind)
    attrs = kind_queue_attributes(settings, lane)
    visibility, receives = _as_lane_is(sqs, settings, lane)
    if visibility is not None:
        attrs[""]["VisibilityTimeout"] = visibility
    dlq = _make_or_find(sqs, name + DLQ_SUFFIX, attrs[DLQ_SUFFIX], progress)
    queue = _make_or_find(sqs, name, {**attrs[""], "RedrivePolicy": redrive_policy(dlq.arn(), receives)}, progress)
    _wait_known(sqs, [q for q in (dlq, queue) if q.is_new()])
    return queue, True


def _make_or_find(sqs: Any, name: str, attrs: dict[str, str], progress: Progress) -> Queue:
    """Make the queue; when another maker was first with other attributes (a worker of an images-lane kind and a
    client that does not know its lane), the one that exists."""
    try:
        return _create_queue(sqs, name, attrs, progress)
    except AwsError as exc:
        if exc.code not in QUEUE_EXISTS:
            raise
    return Queue.by_name(sqs, name)


def kind_queues(clients: Clients) -> list[Queue]:
    """Every kind queue of this lab, dead-letter queues included (by name: ``<requestQueue>-kind-``)."""
    return list_queues(clients.sqs, kinds.kind_queue_prefix(clients.settings))


def _wait_known(sqs: Any, new: list[Queue]) -> None:
    """Wait until SQS answers each queue made moments ago by its name, as the workers and clients that start next
    look it up (SQS: "wait at least one second after the queue is created"); at most NEW_QUEUE_GRACE."""
    for queue in new:
        for _ in poll(NEW_QUEUE_RETRY, NEW_QUEUE_GRACE):
            if Queue.find(sqs, queue.name) is not None:
                break


def ensure_bucket(clients: Clients, report: ProvisionReport | None = None) -> ProvisionReport:
    """Create the bucket if needed: public access blocked, default encryption, payload expiry, and (over TLS:
    :func:`tls_endpoint`) a policy that refuses requests not made over TLS. A name another account owns, and
    credentials that may not make the bucket ready (a student's), are each a clear error."""
    report = report or ProvisionReport()
    bucket = Bucket(clients.s3, clients.bucket_name())
    report.bucket = bucket.name
    try:
        if bucket.present():
            report.unchanged.append(f"bucket {bucket.name}")
        else:
            bucket.create(clients.settings.region)
            report.created.append(f"bucket {bucket.name}")
    except AwsError as exc:
        if exc.code in NOT_OUR_BUCKET:
            raise ConfigError(_not_ours(clients, bucket.name, exc)) from exc
        if exc.code == "OperationAborted":
            raise ConfigError(_held(bucket.name)) from exc
        raise
    try:
        bucket.secure(PAYLOADS_PREFIX, PAYLOAD_EXPIRY_DAYS)
        tls = tls_endpoint(clients.settings) and bucket.require_tls(partition(clients.settings.region))
    except AwsError as exc:
        if exc.code in NOT_OUR_BUCKET:
            raise ConfigError(_refused(bucket.name, exc)) from exc
        raise
    if tls and f"bucket {bucket.name}" in report.unchanged:
        report.unchanged.remove(f"bucket {bucket.name}")
        report.updated.append(f"bucket {bucket.name} (policy: TLS only)")
    return report


def tls_endpoint(settings: Settings) -> bool:
    """Does labkit reach S3 over TLS (AWS, or an https endpoint)? Only then may the bucket refuse plain HTTP:
    an emulator on this machine speaks plain HTTP, and would be refused everything."""
    return settings.endpoint_url is None or settings.endpoint_url.startswith("https://")


def _not_ours(clients: Clients, name: str, exc: AwsError) -> str:
    """The one line for a bucket S3 refused: another account's name, or credentials that may not make it ready."""
    return _taken(name, exc.code) if bucket_taken(clients, name, exc) else _refused(name, exc)


def bucket_taken(clients: Clients, name: str, exc: AwsError) -> bool:
    """Is a bucket S3 refused another account's? A refused HeadBucket means that, or credentials that may not list
    it (a student's): this account's own list tells (credentials that may not read it either: refused, not taken)."""
    if exc.code == "BucketAlreadyExists":
        return True
    if exc.operation != "HeadBucket":
        return False
    from labkit.aws.calls import call  # here: only a refused bucket needs it (a student's import stays short)
    try:
        mine = [b["Name"] for b in call(clients.s3, "list_buckets", "listing this account's buckets")["Buckets"]]
    except AwsError:
        return False
    return name not in mine


def _refused(name: str, exc: AwsError) -> str:
    action = BUCKET_ACTIONS.get(exc.operation or "", exc.operation)
    return (f"your credentials may not create or configure the bucket {name} (S3 refused "
            f"{f'{action}, ' if action else ''}{exc.code}): `labkit doctor` shows what they may do (in a class, "
            "`labkit up` and `labkit deploy` are the instructor's); if the bucket is another account's, set "
            "LABKIT_BUCKET to a name of your own")


def _taken(name: str, code: str | None) -> str:
    mine = _another(name)
    return (f"the bucket name {name} is taken by another AWS account (S3 answered {code}). Bucket names are shared "
            f"by every account in the world: set LABKIT_BUCKET to a name of your own (for example {mine}) and run "
            "`labkit up` again")


def _held(name: str) -> str:
    return (f"S3 is still freeing the bucket name {name}: it was deleted a short while ago (`labkit teardown "
            f"--all`?), and S3 may take hours to give a deleted bucket's name back. Run `labkit up` again later, or "
            f"now with a name of your own: LABKIT_BUCKET={_another(name)} labkit up (plain `labkit teardown` keeps "
            "the emptied bucket, so that this does not happen)")


def _another(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"[-63:].lstrip("-.")


def ensure(clients: Clients, progress: Progress = None) -> ProvisionReport:
    """Queues and bucket, as :func:`ensure_queues` and :func:`ensure_bucket` make them."""
    report = ensure_queues(clients, progress=progress)
    return ensure_bucket(clients, report)


# -- reply queues ------------------------------------------------------------------------------------------
# A client's reply queue carries the time its client was last seen alive, refreshed by the client while it
# runs (labkit.replies). `down` and `teardown` delete only queues unseen for REPLY_IDLE_AGE: a neighbour's
# running notebook keeps its queue. The age is far above the refresh period, so a busy machine or a
# clock a few minutes off does not matter; a client that sleeps longer (a laptop lid) finds its queue
# gone on waking and makes a new one (labkit.replies).
LAST_SEEN_TAG = "labkit:last-seen"
# A reply queue also carries its maker's id (IAM's ${aws:userid}: Clients.caller_id), so that on a class's shared
# account the student policy (labkit.fleet.student) lets only its maker receive from, purge, delete or re-tag it.
OWNER_TAG = "labkit:owner"
REPLY_HEARTBEAT = 300  # seconds between a live client's refreshes of its queue's last-seen tag
REPLY_IDLE_AGE = 3600  # seconds unseen after which a reply queue counts as left behind by a gone client


@dataclass
class ReplyCleanup:
    """What :func:`cleanup_reply_queues` did: queues deleted (idle), and queues kept (in use)."""

    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def create_reply_queue(clients: Clients, suffix: str | None = None) -> Queue:
    """A new reply queue for one client: ``labkit-reply-<suffix>`` (default: a random one), long polls,
    messages kept an hour, tagged as seen now and with its maker's id (:data:`OWNER_TAG`, where the endpoint
    can say who that is: one STS call per :class:`Clients`, cached)."""
    name = REPLY_QUEUE_PREFIX + (suffix or uuid.uuid4().hex[:16])
    attrs = {"MessageRetentionPeriod": str(REPLY_RETENTION), "ReceiveMessageWaitTimeSeconds": "20"}
    tags = {**TAGS, LAST_SEEN_TAG: str(int(time.time()))}
    owner = clients.caller_id()
    if owner:
        tags[OWNER_TAG] = owner
    return Queue.create(clients.sqs, name, attrs, tags)


def mark_seen(queue: Queue) -> None:
    """Tell ``down`` and ``teardown`` that this reply queue's client is alive."""
    queue.tag({LAST_SEEN_TAG: str(int(time.time()))})


def last_seen(queue: Queue) -> float | None:
    """When the queue's client was last seen alive (seconds since the epoch): its tag, else (a queue made by
    an older client) its creation time; None when neither can be read."""
    value = queue.tags().get(LAST_SEEN_TAG)
    if value is None:
        value = queue.attributes("CreatedTimestamp").get("CreatedTimestamp")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def reply_queues(clients: Clients) -> list[Queue]:
    """Every labkit reply queue."""
    return list_queues(clients.sqs, REPLY_QUEUE_PREFIX)


def cleanup_reply_queues(clients: Clients, idle_age: float = REPLY_IDLE_AGE) -> ReplyCleanup:
    """Delete the reply queues whose client was not seen for ``idle_age`` seconds; keep the others."""
    out = ReplyCleanup()
    now = time.time()
    for queue in reply_queues(clients):
        try:
            seen = last_seen(queue)
        except AwsError as exc:
            if is_missing_queue(exc):
                continue  # deleted meanwhile (its client closed)
            raise
        if seen is not None and now - seen < idle_age:
            out.kept.append(queue.name)
        elif queue.delete():
            out.deleted.append(queue.name)
    return out


# -- teardown and status -------------------------------------------------------------------------------------

# What teardown does with the bucket. "empty" by default: an empty bucket costs nothing, and keeping it keeps its
# name, which S3 may not give back for hours after a delete (so a teardown the evening before does not stop
# the next morning's `up`). "delete" (`teardown --all`): the bucket goes too. "keep": left as it is.
BUCKET_MODES = ("empty", "delete", "keep")


def delete_resources(clients: Clients, bucket: str = "empty") -> ProvisionReport:
    """Delete every queue (dead-letter queues too, reply queues idle for an hour; ``kept`` lists the reply
    queues of clients still running), then treat the bucket as ``bucket`` says (:data:`BUCKET_MODES`)."""
    if bucket not in BUCKET_MODES:
        raise ValueError(f"bucket must be one of {BUCKET_MODES}, not {bucket!r}")
    report = ProvisionReport()
    for name in queue_attributes(clients.settings):
        queue = Queue.find(clients.sqs, name)
        if queue is not None and queue.delete():
            report.deleted.append(f"queue {name}")
    report.deleted += [f"queue {q.name}" for q in kind_queues(clients) if q.delete()]
    replies = cleanup_reply_queues(clients)
    report.deleted += [f"queue {n}" for n in replies.deleted]
    report.kept += [f"queue {n}" for n in replies.kept]
    if bucket != "keep":
        b = Bucket(clients.s3, clients.bucket_name())
        report.bucket = b.name
        if b.present():
            if bucket == "delete":
                report.deleted.append(f"bucket {b.name} ({b.destroy()} objects)")
            else:
                report.deleted.append(f"the objects in bucket {b.name} ({b.empty()})")
    return report


def existing(clients: Clients, bucket: str = "empty") -> list[str]:
    """labkit's queues (dead-letter and reply queues too) and bucket that exist now. The bucket counts when it
    holds anything, or (``bucket="delete"``) at all: an empty bucket costs nothing."""
    left = [f"queue {name}" for name in queue_attributes(clients.settings) if Queue.find(clients.sqs, name)]
    left += [f"queue {q.name}" for q in kind_queues(clients) + reply_queues(clients)]
    b = Bucket(clients.s3, clients.bucket_name())
    if not b.present():
        return left
    if b.holds_anything():
        return left + [f"bucket {b.name} (not empty)"]
    return left + ([f"bucket {b.name}"] if bucket == "delete" else [])


def status(clients: Clients) -> dict[str, Any]:
    """Endpoint, queues with depths (visible / in flight / dead-letter), bucket and its contents, and the
    credentials this process signs with (:meth:`Clients.describe_credentials`: kind, source, expiry where known;
    never a key). When AWS refuses them, ``credentials["problem"]`` says so in one line, with what to do, and
    what AWS could not be asked is left out."""
    settings = clients.settings
    out: dict[str, Any] = {"endpoint": settings.endpoint_url or f"AWS ({settings.region})",
                           "region": settings.region, "queues": {}, "bucket": None}
    try:
        out["credentials"] = clients.describe_credentials()
        _resources_status(clients, out)
    except Exception as exc:
        refused = credentials_error(exc)
        if refused is None:
            raise
        out.setdefault("credentials", {"kind": "unknown", "source": "could not be read"})["problem"] = str(refused)
        out["queues"] = {}
        out["bucket"] = {"name": settings.bucket or "?", "error": "not looked at: AWS refused the credentials"}
    return out


def _resources_status(clients: Clients, out: dict[str, Any]) -> None:
    """:func:`status`'s queues, reply queues and bucket, into ``out``."""
    settings, sqs = clients.settings, clients.sqs
    requests = kinds.request_queues(settings).values()
    for role, name in settings.queue_names().items():
        try:
            entry: dict[str, Any] = Queue.by_name(sqs, name).depth()
        except CredentialsError:
            raise
        except AwsError as exc:
            missing = bool(exc.code and "NonExistent" in exc.code)
            out["queues"][name] = {"role": role, "error": "missing" if missing else str(exc)}
            continue
        if name in requests:
            dlq = Queue.find(sqs, name + DLQ_SUFFIX)
            entry["dead_letter"] = dlq.depth()["visible"] if dlq else None
        out["queues"][name] = {"role": role, **entry}
    _kind_queues_status(clients, out["queues"])
    out["reply_queues"] = len(reply_queues(clients))
    bucket = Bucket(clients.s3, clients.bucket_name())
    try:
        present = bucket.present()
    except AwsError as exc:
        if exc.code not in ("AccessDenied", "403"):
            raise
        # A student on a class's bucket lists only its own uploads (labkit policy student): no totals for it.
        out["bucket"] = {"name": bucket.name, "error": "not listed: your credentials list only your own uploads"}
        return
    if present:
        objects = bucket.list("")
        prefixes: dict[str, int] = {}
        for o in objects:
            top = "/".join(o.key.split("/")[:2]) + "/" if o.key.startswith("images/") else o.key.split("/")[0] + "/"
            prefixes[top] = prefixes.get(top, 0) + 1
        out["bucket"] = {"name": bucket.name, "objects": len(objects), "by_prefix": prefixes,
                         "bytes": sum(o.size for o in objects)}
    else:
        out["bucket"] = {"name": bucket.name, "error": "missing"}


def _kind_queues_status(clients: Clients, into: dict[str, Any]) -> None:
    """Each kind queue's depths and dead letters (role ``kind <name>``), into ``into``; one deleted meanwhile is
    left out."""
    found = {q.name: q for q in kind_queues(clients)}
    for name, queue in sorted(found.items()):
        kind = kinds.kind_of_queue(clients.settings, name)
        if kind is None:
            continue
        try:
            entry: dict[str, Any] = queue.depth()
            dlq = found.get(name + DLQ_SUFFIX)
            entry["dead_letter"] = dlq.depth()["visible"] if dlq else None
        except AwsError as exc:
            if is_missing_queue(exc):
                continue
            raise
        into[name] = {"role": f"kind {kind}", **entry}
