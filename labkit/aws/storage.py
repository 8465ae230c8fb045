"""S3: objects in the labkit bucket, with keys that cannot escape their prefix."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import BotoCoreError, ClientError

from labkit.errors import AwsError, NotFound, TooLarge, aws_error_code

MISSING_CODES = ("NoSuchKey", "404", "NotFound", "NoSuchBucket")
READ_PIECE = 1 << 20  # bytes asked of the network per read when filling a buffer
TLS_ONLY_SID = "labkit-deny-insecure-transport"
LIFECYCLE_PREFIX = "labkit-"  # the IDs of labkit's lifecycle rules; other rules are the bucket's other users'
# Objects larger than this go up in parts, several at once (boto3's managed transfer): faster on S3, and
# some S3-compatible services refuse a larger body in one PutObject (fauxqs: 11 MiB). Reads stay one
# streamed GET: measured, ranged parallel reads of 80 MB were 5x slower on moto and 2.6x on fauxqs, and
# the worker streams a .npy payload straight into its array (docs/benchmark.md).
MULTIPART = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=8)


@dataclass(frozen=True)
class ObjectInfo:
    """One object in a listing."""

    key: str
    name: str  # the key without the listed prefix
    size: int
    modified: datetime


class ObjectReader:
    """An S3 object's body, read in pieces (from :meth:`Bucket.open`); ``size`` is its length in bytes.

    Network failures while reading raise :class:`AwsError` (the botocore error is its ``__cause__``).
    A context manager: leaving it closes the connection.
    """

    def __init__(self, body: Any, size: int, where: str) -> None:
        self._body = body
        self.size = size
        self._where = where

    def read(self, amt: int | None = None) -> bytes:
        """At most ``amt`` bytes (all that is left when ``amt`` is None); ``b""`` at the end."""
        try:
            return self._body.read(amt)
        except BotoCoreError as exc:
            raise AwsError(f"reading {self._where}: {exc}") from exc

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` (a writable, C-contiguous bytes-like object such as a numpy array) from the body.

        Reads pieces of at most 1 MiB, so no object the size of the buffer is ever made. Returns the
        number of bytes read: less than the buffer's size only when the object ends first.
        """
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            piece = self.read(min(READ_PIECE, len(view) - done))
            if not piece:
                break
            view[done:done + len(piece)] = piece
            done += len(piece)
        return done

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Bucket:
    """One S3 bucket. Methods raise :class:`NotFound` for missing objects, :class:`AwsError` otherwise.

    Every call carries ``ExpectedBucketOwner`` (this account) when the S3 client comes from
    :class:`labkit.aws.clients.Clients`, which adds it to each S3 call: another account's bucket of the same
    name answers 403, never with its content."""

    def __init__(self, s3: Any, name: str) -> None:
        self.s3 = s3
        self.name = name

    def __repr__(self) -> str:
        return f"Bucket({self.name!r})"

    def _error(self, exc: ClientError, what: str, key: str | None = None) -> Exception:
        code = aws_error_code(exc)
        if code in MISSING_CODES:
            where = f"s3://{self.name}/{key}" if key else f"bucket {self.name!r}"
            return NotFound(f"{where} does not exist")
        return AwsError.from_client_error(exc, what)

    # -- the bucket itself -------------------------------------------------------------------------------
    def present(self) -> bool:
        """Does the bucket exist (and may we see it)?"""
        try:
            self.s3.head_bucket(Bucket=self.name)
        except ClientError as exc:
            if aws_error_code(exc) in MISSING_CODES:
                return False
            raise AwsError.from_client_error(exc, f"looking at bucket {self.name}") from exc
        return True

    def create(self, region: str) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.name}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.s3.create_bucket(**kwargs)
        except ClientError as exc:
            if aws_error_code(exc) == "BucketAlreadyOwnedByYou":
                return  # made meanwhile, by this account: what was wanted
            raise AwsError.from_client_error(exc, f"creating bucket {self.name}") from exc

    def secure(self, expire_prefix: str, expire_days: int) -> None:
        """Block public access, encrypt by default, and set labkit's lifecycle rules (:meth:`lifecycle_rules`)."""
        try:
            self.s3.put_public_access_block(Bucket=self.name, PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "IgnorePublicAcls": True,
                "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
            self.s3.put_bucket_encryption(Bucket=self.name, ServerSideEncryptionConfiguration={
                "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
            current = self._lifecycle()
            wanted = self.lifecycle_rules(current, expire_prefix, expire_days)
            if wanted != current:
                self.s3.put_bucket_lifecycle_configuration(Bucket=self.name,
                                                           LifecycleConfiguration={"Rules": wanted})
        except ClientError as exc:
            raise AwsError.from_client_error(exc, f"configuring bucket {self.name}") from exc

    @staticmethod
    def lifecycle_rules(current: list[dict[str, Any]], expire_prefix: str, expire_days: int) -> list[dict[str, Any]]:
        """The bucket's lifecycle rules with labkit's: objects under ``expire_prefix`` expire after
        ``expire_days``, and multipart uploads left incomplete anywhere in the bucket (a client or worker that
        died mid-upload: its parts bill until then, unseen by a listing) are aborted after a day. Rules of the
        bucket's other users are kept as they are: S3 replaces the whole set on each write."""
        others = [r for r in current if not str(r.get("ID", "")).startswith(LIFECYCLE_PREFIX)]
        return [*others,
                {"ID": LIFECYCLE_PREFIX + "expire-payloads", "Status": "Enabled", "Filter": {"Prefix": expire_prefix},
                 "Expiration": {"Days": expire_days}},
                {"ID": LIFECYCLE_PREFIX + "abort-incomplete-uploads", "Status": "Enabled", "Filter": {"Prefix": ""},
                 "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]

    def _lifecycle(self) -> list[dict[str, Any]]:
        try:
            return list(self.s3.get_bucket_lifecycle_configuration(Bucket=self.name).get("Rules", []))
        except ClientError as exc:
            if aws_error_code(exc) == "NoSuchLifecycleConfiguration":
                return []
            raise

    def policy(self) -> dict[str, Any]:
        """The bucket policy as a dict ({} when there is none)."""
        try:
            text = self.s3.get_bucket_policy(Bucket=self.name)["Policy"]
        except ClientError as exc:
            if aws_error_code(exc) == "NoSuchBucketPolicy":
                return {}
            raise AwsError.from_client_error(exc, f"reading the policy of bucket {self.name}") from exc
        try:
            policy = json.loads(text)
        except ValueError:
            return {}  # an S3-compatible endpoint without bucket policies answers something else
        return policy if isinstance(policy, dict) else {}

    def require_tls(self, partition: str = "aws") -> bool:
        """Add (or keep) a bucket policy statement that denies every request not made over TLS
        (``aws:SecureTransport`` false), keeping the policy's other statements. True when it changed."""
        arn = f"arn:{partition}:s3:::{self.name}"
        statement = {"Sid": TLS_ONLY_SID, "Effect": "Deny", "Principal": "*", "Action": "s3:*",
                     "Resource": [arn, f"{arn}/*"], "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
        policy = self.policy()
        others = [st for st in policy.get("Statement", []) if st.get("Sid") != TLS_ONLY_SID]
        if [st for st in policy.get("Statement", []) if st.get("Sid") == TLS_ONLY_SID] == [statement]:
            return False
        wanted = {"Version": "2012-10-17", **policy, "Statement": [*others, statement]}
        try:
            self.s3.put_bucket_policy(Bucket=self.name, Policy=json.dumps(wanted))
        except ClientError as exc:
            raise AwsError.from_client_error(exc, f"setting the policy of bucket {self.name}") from exc
        return True

    def empty(self) -> int:
        """Delete every object, every older version and delete marker, and abort every unfinished multipart
        upload (S3 bills the parts it keeps); returns how many of them went. The bucket itself stays."""
        return self.delete_prefix("") + self.delete_versions() + self.abort_uploads()

    def holds_anything(self) -> bool:
        """Does the bucket hold anything S3 bills for: an object, an older version or an unfinished upload?"""
        try:
            return bool(self.s3.list_objects_v2(Bucket=self.name, MaxKeys=1).get("KeyCount")
                        or any(self.s3.list_object_versions(Bucket=self.name, MaxKeys=1).get(k)
                               for k in ("Versions", "DeleteMarkers"))
                        or self.s3.list_multipart_uploads(Bucket=self.name, MaxUploads=1).get("Uploads"))
        except ClientError as exc:
            raise self._error(exc, f"looking into bucket {self.name}") from exc

    def destroy(self) -> int:
        """:meth:`empty` the bucket (S3 deletes no bucket that holds anything), then delete it; returns how many
        objects, versions and uploads went."""
        count = self.empty()
        try:
            self.s3.delete_bucket(Bucket=self.name)
        except ClientError as exc:
            # Gone already: botocore retried a 500 that S3 answered after deleting it ("the request may have succeeded")
            if aws_error_code(exc) != "NoSuchBucket":
                raise self._error(exc, f"deleting bucket {self.name}") from exc
        return count

    # -- objects -----------------------------------------------------------------------------------------
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Write an object: one PutObject, or a multipart upload above ``MULTIPART``'s threshold."""
        try:
            if len(data) <= MULTIPART.multipart_threshold:
                self.s3.put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type)
            else:
                self.s3.upload_fileobj(io.BytesIO(data), self.name, key, ExtraArgs={"ContentType": content_type},
                                       Config=MULTIPART)
        except ClientError as exc:  # upload_fileobj raises the failed part's own error
            raise self._error(exc, f"writing s3://{self.name}/{key}") from exc

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; :class:`TooLarge` when it is larger than ``max_bytes`` (checked first)."""
        with self.open(key, max_bytes) as body:
            return body.read()

    def open(self, key: str, max_bytes: int | None = None) -> ObjectReader:
        """The object's body as a stream, to read in pieces (the caller closes it: ``with bucket.open(k) as r``).

        :class:`TooLarge` when the object is larger than ``max_bytes``, checked before any of it is read.
        """
        try:
            resp = self.s3.get_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            raise self._error(exc, f"reading s3://{self.name}/{key}", key) from exc
        size = int(resp.get("ContentLength", 0))
        if max_bytes is not None and size > max_bytes:
            resp["Body"].close()
            raise TooLarge(f"s3://{self.name}/{key} is {size:,} bytes, over the limit of {max_bytes:,}")
        return ObjectReader(resp["Body"], size, f"s3://{self.name}/{key}")

    def head(self, key: str) -> dict[str, Any]:
        try:
            return self.s3.head_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            raise self._error(exc, f"inspecting s3://{self.name}/{key}", key) from exc

    def exists(self, key: str) -> bool:
        try:
            self.head(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        try:
            self.s3.delete_object(Bucket=self.name, Key=key)
        except ClientError as exc:
            raise self._error(exc, f"deleting s3://{self.name}/{key}", key) from exc

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object under ``prefix`` (all pages)."""
        out = []
        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
                for obj in page.get("Contents", []):
                    out.append(ObjectInfo(obj["Key"], obj["Key"][len(prefix):], obj["Size"], obj["LastModified"]))
        except ClientError as exc:
            raise self._error(exc, f"listing s3://{self.name}/{prefix}") from exc
        return out

    def delete_versions(self) -> int:
        """Delete every version and delete marker left in the bucket (none unless versioning was ever on)."""
        count = 0
        try:
            for page in self.s3.get_paginator("list_object_versions").paginate(Bucket=self.name):
                batch = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                         for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
                if batch:
                    self.s3.delete_objects(Bucket=self.name, Delete={"Objects": batch, "Quiet": True})
                    count += len(batch)
        except ClientError as exc:
            raise self._error(exc, f"deleting the versions in bucket {self.name}") from exc
        return count

    def abort_uploads(self) -> int:
        """Abort every unfinished multipart upload (a lifecycle rule does it after a day; teardown does not wait)."""
        count = 0
        try:
            for page in self.s3.get_paginator("list_multipart_uploads").paginate(Bucket=self.name):
                for up in page.get("Uploads", []):
                    self.s3.abort_multipart_upload(Bucket=self.name, Key=up["Key"], UploadId=up["UploadId"])
                    count += 1
        except ClientError as exc:
            raise self._error(exc, f"aborting the unfinished uploads in bucket {self.name}") from exc
        return count

    def delete_prefix(self, prefix: str = "") -> int:
        """Delete every object under ``prefix`` (current versions; :meth:`delete_versions` the rest)."""
        keys = [o.key for o in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i:i + 1000]]
            try:
                self.s3.delete_objects(Bucket=self.name, Delete={"Objects": batch, "Quiet": True})
            except ClientError as exc:
                raise self._error(exc, f"deleting objects under s3://{self.name}/{prefix}") from exc
        return len(keys)

    def presign(self, key: str, expires: int = 900, method: str = "get_object") -> str:
        """A URL that reads (or, with ``method="put_object"``, writes) the object for ``expires`` seconds."""
        return self.s3.generate_presigned_url(method, Params={"Bucket": self.name, "Key": key}, ExpiresIn=expires)
