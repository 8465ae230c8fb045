"""What a student needs on a shared account, and nothing more: send jobs to the request lanes, make, use and delete
its own reply queues, put its uploads and claim checks, read results by key, see the queues' depths.

A pure function, no AWS call::

    student_policy(settings, bucket="labkit-123456789012-us-east-1", account="123456789012")

``labkit policy student`` prints it; docs/aws.md ("Running a class") explains it; tests/test_iam_student.py runs
a student's jobs with it on an emulator that enforces IAM, beside an instructor, and tests/test_iam_proof.py
checks every call a client makes against it.

Reply queues are named ``labkit-reply-<random>`` (:func:`labkit.provision.create_reply_queue`), so the
policy grants them by that prefix: a student makes, uses, purges and deletes its own, and could do the same to
another student's reply queue whose name it learnt (``ListQueues`` shows them). Keeping students apart there
needs reply queue names that carry the caller's IAM user name (``labkit-reply-${aws:username}-...``): see
docs/aws.md, "Students' credentials".

A kind of one's own travels on ``<requestQueue>-kind-<name>`` (docs/protocol.md): a student makes it on its first
job (with its dead-letter queue), sends to it and reads its depth; only workers receive from it.

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

# Statement id -> why the student needs it (docs/aws.md shows this table).
WHY = {
    "SendRequests": "send jobs (and their batches) to the request lanes: requestQueue, imageInbox, and the queues "
                    "of kinds of one's own (requestQueue-kind-*)",
    "KindQueues": "make a kind's queue and its dead-letter queue on its first job (tagged as made), look it up and "
                  "read its depth: requestQueue-kind-* only; never receive from, purge or delete one",
    "SeeQueues": "look the shared queues up by name and read their depths (`labkit status`); never purge, "
                 "receive from or delete them",
    "ListQueues": "`labkit status` counts the reply queues (listing has no narrower resource than *)",
    "OwnReplyQueues": "make its own reply queues (tagged as made, re-tagged as seen while the client runs), "
                      "receive and delete its replies, purge and delete its own reply queues: only those named "
                      "labkit-reply-*",
    "PutUploadsAndClaimChecks": "upload images (images/unprocessed/) and large payloads (payloads/)",
    "ReadResultsByKey": "read results by key: processed images, large results (payloads/), and check that an "
                        "uploaded image is there",
    "TellMissingFromForbidden": "on the bucket only: list keys (status, list_images) and get 404, not 403, for a "
                                "result that is not there",
}


def student_policy(settings: Settings, bucket: str, account: str, region: str | None = None) -> dict[str, Any]:
    """The IAM policy of a student who sends jobs to this lab's queues and bucket in ``account``."""
    region = region or settings.region
    own_bucket = {"StringEquals": {"s3:ResourceAccount": account}}  # a same-named bucket elsewhere is not ours

    def q(name: str) -> str:
        return queue_arn(region, account, name)

    def obj(prefix: str) -> str:
        return bucket_arn(region, bucket, prefix + "*")

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
        {"Sid": "OwnReplyQueues", "Effect": "Allow",
         "Action": ["sqs:CreateQueue", "sqs:DeleteMessage", "sqs:DeleteQueue", "sqs:PurgeQueue", "sqs:ReceiveMessage",
                    "sqs:TagQueue"],
         "Resource": [q(REPLY_QUEUE_PREFIX + "*")]},
        {"Sid": "PutUploadsAndClaimChecks", "Effect": "Allow", "Action": ["s3:AbortMultipartUpload", "s3:PutObject"],
         "Resource": [obj(UNPROCESSED_PREFIX), obj(PAYLOADS_PREFIX)], "Condition": own_bucket},
        {"Sid": "ReadResultsByKey", "Effect": "Allow", "Action": ["s3:GetObject"],
         "Resource": [obj(PROCESSED_PREFIX), obj(PAYLOADS_PREFIX), obj(UNPROCESSED_PREFIX)], "Condition": own_bucket},
        {"Sid": "TellMissingFromForbidden", "Effect": "Allow", "Action": ["s3:ListBucket"],
         "Resource": [bucket_arn(region, bucket)], "Condition": own_bucket},
    ]
    return {"Version": VERSION, "Statement": statements}
