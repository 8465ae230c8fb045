"""What a student needs on a shared account, and nothing more: send jobs to the request lanes, make, use and delete
its own reply queues, put its uploads and claim checks, read results by key, see the queues' depths.

A pure function, no AWS call::

    student_policy(settings, bucket="labkit-123456789012-us-east-1", account="123456789012")

``labkit policy student`` prints it; docs/aws.md ("Running a class") explains it; tests/test_iam_student.py runs
a student's jobs with it on an emulator that enforces IAM, beside an instructor, and tests/test_iam_proof.py
checks every call a client makes against it.

Reply queues are named ``labkit-reply-<random>`` (:func:`labkit.provision.create_reply_queue`) and tagged with
their maker's id (:data:`labkit.provision.OWNER_TAG` = STS's UserId, which is IAM's ``${aws:userid}``: ``AIDA...``
for an IAM user, ``AROA...:<session>`` for a role session, as SSO permission sets and AWS Academy give; so this
works where ``${aws:username}`` does not exist). SQS authorizes by tags (attribute-based access control): a
student makes a reply queue only tagged as its own (``aws:RequestTag``), and receives from, deletes messages of,
purges, deletes and re-tags only a queue tagged as its own (``aws:ResourceTag``); re-tagging its own queue may set
the last-seen tag only (``aws:TagKeys``), so nobody can take another's queue or give its own away. ``ListQueues``
still shows everyone's reply queue names: a name alone opens nothing.

A kind of one's own travels on ``<requestQueue>-kind-<name>`` (docs/protocol.md): a student makes it on its first
job (with its dead-letter queue), sends to it and reads its depth; only workers receive from it.

The bucket: a student lists only its own uploads (``images/unprocessed/${aws:userid}/``, where labkit puts them on
AWS: :func:`labkit.keys.upload_key`) and a job's payloads by its id; everything else it reads by key only (job ids
are 128 random bits, upload folders 64 bits of the file's hash). S3 answers 404 for a missing key only to who may
list the bucket, so a student reading a key that is not there is told AccessDenied (403).

Nothing here may purge or delete a shared queue, delete an object or the bucket, or touch the fleet. Only
``sqs:ListQueues`` uses ``*``: listing has no narrower resource (``labkit status`` counts the reply queues).
"""

from __future__ import annotations

from typing import Any

from labkit import kinds
from labkit.config import (
    DLQ_SUFFIX,
    PAYLOADS_PREFIX,
    PROCESSED_PREFIX,
    REPLY_QUEUE_PREFIX,
    UNPROCESSED_PREFIX,
    Settings,
)
from labkit.fleet.policy import VERSION, bucket_arn, queue_arn
from labkit.provision import LAST_SEEN_TAG, OWNER_TAG

JOB_ID_CHARS = 32  # labkit's job ids: 128 random bits in hex; a prefix that long names one job
CALLER = "${aws:userid}"  # IAM's policy variable: the caller's unique id, for users and role sessions alike

# Statement id -> why the student needs it (docs/aws.md shows this table).
WHY = {
    "SendRequests": "send jobs (and their batches) to the request lanes: requestQueue, imageInbox, and the queues "
                    "of kinds of one's own (requestQueue-kind-*)",
    "KindQueues": "make a kind's queue and its dead-letter queue on its first job (tagged as made), look it up and "
                  "read its depth: requestQueue-kind-* only; never receive from, purge or delete one",
    "SeeQueues": "look the shared queues up by name and read their depths (`labkit status`); never purge, "
                 "receive from or delete them",
    "ListQueues": "`labkit status` counts the reply queues (listing has no narrower resource than *)",
    "MakeOwnReplyQueues": f"make a reply queue (labkit-reply-*) only tagged {OWNER_TAG}=its own id "
                          "(${aws:userid}); tag one only as its own, and never a queue another owns",
    "UseOwnReplyQueues": f"receive and delete its replies, purge and delete its reply queue: only a labkit-reply-* "
                         f"queue tagged {OWNER_TAG}=its own id",
    "MarkOwnReplyQueuesSeen": f"re-tag its own reply queue as seen while the client runs: the {LAST_SEEN_TAG} tag "
                              "only, on a queue tagged as its own",
    "PutUploadsAndClaimChecks": "upload images (images/unprocessed/) and large payloads (payloads/)",
    "ReadResultsByKey": "read results by key: processed images, large results (payloads/), and check that an "
                        "uploaded image is there",
    "ListOwnUploads": "list its own uploads only (images/unprocessed/<its id>/: list_images), and one job's "
                      "large payloads by the job's id (payloads/<32-character id>); never everyone's keys",
}


def student_policy(settings: Settings, bucket: str, account: str, region: str | None = None) -> dict[str, Any]:
    """The IAM policy of a student who sends jobs to this lab's queues and bucket in ``account``."""
    region = region or settings.region
    own_bucket = {"StringEquals": {"s3:ResourceAccount": account}}  # a same-named bucket elsewhere is not ours

    def q(name: str) -> str:
        return queue_arn(region, account, name)

    def obj(prefix: str) -> str:
        return bucket_arn(region, bucket, prefix + "*")

    replies = [q(REPLY_QUEUE_PREFIX + "*")]
    own_queue = {"StringEquals": {f"aws:ResourceTag/{OWNER_TAG}": CALLER}}  # tagged with the caller's id
    kind_queues = q(kinds.kind_queue_prefix(settings) + "*")  # the kinds' own queues and their dead-letter queues
    requests = [q(lane.request_queue(settings)) for lane in kinds.LANES.values()] + [kind_queues]
    shared = [q(n) for n in settings.queue_names().values()]
    shared += [q(lane.request_queue(settings) + DLQ_SUFFIX) for lane in kinds.LANES.values()]
    statements: list[dict[str, Any]] = [
        {"Sid": "SendRequests", "Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": requests},
        {"Sid": "SeeQueues", "Effect": "Allow", "Action": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
         "Resource": shared},
        {"Sid": "KindQueues", "Effect": "Allow",
         "Action": ["sqs:CreateQueue", "sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:TagQueue"],
         "Resource": [kind_queues]},
        {"Sid": "ListQueues", "Effect": "Allow", "Action": ["sqs:ListQueues"], "Resource": "*"},
        # Tag on creation needs sqs:TagQueue beside sqs:CreateQueue; the queue has no owner tag yet (IfExists).
        {"Sid": "MakeOwnReplyQueues", "Effect": "Allow", "Action": ["sqs:CreateQueue", "sqs:TagQueue"],
         "Resource": replies, "Condition": {"StringEquals": {f"aws:RequestTag/{OWNER_TAG}": CALLER},
                                            "StringEqualsIfExists": {f"aws:ResourceTag/{OWNER_TAG}": CALLER}}},
        {"Sid": "UseOwnReplyQueues", "Effect": "Allow",
         "Action": ["sqs:DeleteMessage", "sqs:DeleteQueue", "sqs:PurgeQueue", "sqs:ReceiveMessage"],
         "Resource": replies, "Condition": own_queue},
        {"Sid": "MarkOwnReplyQueuesSeen", "Effect": "Allow", "Action": ["sqs:TagQueue"], "Resource": replies,
         "Condition": {**own_queue, "ForAllValues:StringEquals": {"aws:TagKeys": [LAST_SEEN_TAG]}}},
        {"Sid": "PutUploadsAndClaimChecks", "Effect": "Allow", "Action": ["s3:AbortMultipartUpload", "s3:PutObject"],
         "Resource": [obj(UNPROCESSED_PREFIX), obj(PAYLOADS_PREFIX)], "Condition": own_bucket},
        {"Sid": "ReadResultsByKey", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [obj(PROCESSED_PREFIX), obj(PAYLOADS_PREFIX), obj(UNPROCESSED_PREFIX)], "Condition": own_bucket},
        {"Sid": "ListOwnUploads", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [bucket_arn(region, bucket)],
         "Condition": {**own_bucket, "StringLike": {"s3:prefix": [f"{UNPROCESSED_PREFIX}{CALLER}/*",
                                                                 PAYLOADS_PREFIX + "?" * JOB_ID_CHARS + "*"]}}},
    ]
    return {"Version": VERSION, "Statement": statements}
