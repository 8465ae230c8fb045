"""Provisioning against the real emulator: what exists, with which attributes; idempotence; teardown."""

from __future__ import annotations

import json
import time

from labkit import provision
from labkit.aws.clients import Clients
from labkit.aws.storage import Bucket
from tests.conftest import unique_settings


def _attrs(sqs, name):
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def test_ensure_creates_queues_with_dead_letters_and_long_polling(emulator, tmp_path):
    # Given fresh names
    s = unique_settings(emulator, tmp_path)
    clients = Clients(s)
    # When provisioned
    report = provision.ensure(clients)
    # Then the four queues, two dead-letter queues and the bucket were created
    assert len(report.created) == 7
    sqs = clients.sqs
    for name in s.queue_names().values():
        a = _attrs(sqs, name)
        assert a["ReceiveMessageWaitTimeSeconds"] == "20"
        assert int(a["VisibilityTimeout"]) >= 30  # not the original lab's 1 s
    for name in (s.request_queue, s.image_inbox):
        policy = json.loads(_attrs(sqs, name)["RedrivePolicy"])
        dlq_arn = _attrs(sqs, name + "-dlq")["QueueArn"]
        assert policy["deadLetterTargetArn"] == dlq_arn
        assert int(policy["maxReceiveCount"]) == s.max_receive_count
    for name in (s.response_queue, s.image_outbox):
        assert "RedrivePolicy" not in _attrs(sqs, name)


def test_bucket_blocks_public_access_and_encrypts(emulator, tmp_path):
    s = unique_settings(emulator, tmp_path)
    clients = Clients(s)
    provision.ensure(clients)
    block = clients.s3.get_public_access_block(Bucket=s.bucket)["PublicAccessBlockConfiguration"]
    assert all(block[k] for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets"))
    enc = clients.s3.get_bucket_encryption(Bucket=s.bucket)["ServerSideEncryptionConfiguration"]
    assert enc["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"


def test_ensure_twice_changes_nothing(emulator, tmp_path):
    s = unique_settings(emulator, tmp_path)
    clients = Clients(s)
    provision.ensure(clients)
    again = provision.ensure(clients)
    assert not again.changed
    assert len(again.unchanged) == 7


def test_ensure_repairs_drifted_attributes(emulator, tmp_path):
    # Given a queue someone changed by hand (the original lab's 1 s visibility timeout)
    s = unique_settings(emulator, tmp_path)
    clients = Clients(s)
    provision.ensure(clients)
    url = clients.sqs.get_queue_url(QueueName=s.request_queue)["QueueUrl"]
    clients.sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "1"})
    # When provisioned again, only that is put back
    report = provision.ensure(clients)
    assert report.updated == [f"queue {s.request_queue} (VisibilityTimeout)"]
    assert _attrs(clients.sqs, s.request_queue)["VisibilityTimeout"] == str(s.visibility_timeout)


def test_default_bucket_name_is_unique_to_account_and_region(emulator, tmp_path):
    s = unique_settings(emulator, tmp_path).replace(bucket=None, region="eu-west-3")
    assert Clients(s).bucket_name() == "labkit-123456789012-eu-west-3"


def test_teardown_leaves_nothing(emulator, tmp_path):
    s = unique_settings(emulator, tmp_path)
    clients = Clients(s)
    provision.ensure(clients)
    clients.s3.put_object(Bucket=s.bucket, Key="images/unprocessed/a.png", Body=b"x")
    # A reply queue left by a client that went two hours ago (the reply queues of running clients stay:
    # tests/test_classroom.py)
    clients.sqs.create_queue(QueueName="labkit-reply-teardowntest",
                             tags={provision.LAST_SEEN_TAG: str(int(time.time()) - 7200)})
    upload = clients.s3.create_multipart_upload(Bucket=s.bucket, Key="payloads/half.npy")["UploadId"]
    report = provision.delete_resources(clients)
    names = {u.rsplit("/", 1)[-1] for u in clients.sqs.list_queues().get("QueueUrls", [])}
    assert not names & {*s.queue_names().values(), s.request_queue + "-dlq", s.image_inbox + "-dlq",
                        "labkit-reply-teardowntest"}
    # The bucket stays, emptied of its object and its unfinished upload (S3 bills both; an empty bucket costs
    # nothing, and keeping it keeps its name: S3 may hold a deleted bucket's name for hours)
    assert f"the objects in bucket {s.bucket} (2)" in report.deleted
    assert s.bucket in {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    assert not Bucket(clients.s3, s.bucket).holds_anything()
    assert upload not in str(clients.s3.list_multipart_uploads(Bucket=s.bucket))
    # (other tests' reply queues may be there too: the emulator is the session's)
    buckets = [[x for x in provision.existing(clients, **mode) if x.startswith("bucket")]
               for mode in ({}, {"bucket": "delete"})]
    assert buckets == [[], [f"bucket {s.bucket}"]]
    # And `teardown --all` deletes it
    provision.delete_resources(clients, bucket="delete")
    assert s.bucket not in {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}


def test_lifecycle_rules_abort_incomplete_uploads_bucket_wide_and_keep_the_buckets_other_rules(emulator, tmp_path):
    # Given a bucket someone else also uses, with a lifecycle rule of their own
    s = unique_settings(emulator, tmp_path)
    clients = Clients(s)
    clients.s3.create_bucket(Bucket=s.bucket)
    theirs = {"ID": "archive-after-a-month", "Status": "Enabled", "Filter": {"Prefix": "archive/"},
              "Expiration": {"Days": 30}}
    clients.s3.put_bucket_lifecycle_configuration(Bucket=s.bucket, LifecycleConfiguration={"Rules": [theirs]})
    # When labkit provisions it, twice
    provision.ensure(clients)
    assert not provision.ensure(clients).changed
    # Then their rule is still there, beside labkit's two: payloads expire, and incomplete multipart uploads are
    # aborted after a day everywhere in the bucket (before: one rule replaced every other, for payloads/ only)
    rules = {r["ID"]: r for r in clients.s3.get_bucket_lifecycle_configuration(Bucket=s.bucket)["Rules"]}
    assert set(rules) == {"archive-after-a-month", "labkit-expire-payloads", "labkit-abort-incomplete-uploads"}
    assert rules["archive-after-a-month"]["Expiration"] == {"Days": 30}
    assert rules["labkit-expire-payloads"]["Filter"] == {"Prefix": "payloads/"}
    abort = rules["labkit-abort-incomplete-uploads"]
    assert abort["Filter"] == {"Prefix": ""} and abort["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_teardown_deletes_a_versioned_bucket_with_its_versions_and_delete_markers(emulator, tmp_path):
    # Given labkit's bucket with versioning turned on by someone: an object written twice, another deleted
    s = unique_settings(emulator, tmp_path)
    clients = Clients(s)
    provision.ensure(clients)
    clients.s3.put_bucket_versioning(Bucket=s.bucket, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"one", b"two"):
        clients.s3.put_object(Bucket=s.bucket, Key="images/processed/a.png", Body=body)
    clients.s3.put_object(Bucket=s.bucket, Key="logs/x.log", Body=b"x")
    clients.s3.delete_object(Bucket=s.bucket, Key="logs/x.log")
    # When it is torn down
    report = provision.delete_resources(clients, bucket="delete")
    # Then the bucket is gone (before: S3's BucketNotEmpty, older versions and delete markers left behind)
    assert s.bucket not in {b["Name"] for b in clients.s3.list_buckets()["Buckets"]}
    assert f"bucket {s.bucket} (" in " ".join(report.deleted)
