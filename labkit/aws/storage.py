"""S3: objects in the labkit bucket, with keys that cannot escape their prefix."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from labkit.errors import AwsError, InvalidInput, NotFound, TooLarge

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._\-][A-Za-z0-9._\- /()+=@,]*$")
MISSING_CODES = ("NoSuchKey", "404", "NotFound", "NoSuchBucket")
READ_PIECE = 1 << 20  # bytes asked of the network per read when filling a buffer


def safe_key(prefix: str, name: str) -> str:
    """``prefix + name`` where ``name`` is a relative path that stays inside ``prefix``.

    Rejects empty names, absolute paths, ``..`` segments, backslashes and control characters with
    :class:`InvalidInput`. A name that already starts with ``prefix`` is accepted as a full key.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"image name must be a non-empty string, got {name!r}")
    if name.startswith(prefix):
        name = name[len(prefix):]
    if len(name) > 512:
        raise InvalidInput("image name is longer than 512 characters")
    if name.startswith("/") or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput(f"image name {name!r} is not allowed: absolute paths, backslashes and control "
                           "characters are refused")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"image name {name!r} is not allowed: empty, '.' or '..' path segments are refused")
    if not _SAFE_NAME.match(name):
        raise InvalidInput(f"image name {name!r} has characters outside letters, digits and ._-/()+=@, and space")
    key = prefix + name
    if posixpath.normpath(key) != key.rstrip("/") or not key.startswith(prefix):
        raise InvalidInput(f"image name {name!r} escapes {prefix}")
    return key


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
    """One S3 bucket. Methods raise :class:`NotFound` for missing objects, :class:`AwsError` otherwise."""

    def __init__(self, s3: Any, name: str) -> None:
        self.s3 = s3
        self.name = name

    def __repr__(self) -> str:
        return f"Bucket({self.name!r})"

    def _error(self, exc: ClientError, what: str, key: str | None = None) -> Exception:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in MISSING_CODES:
            where = f"s3://{self.name}/{key}" if key else f"bucket {self.name!r}"
            return NotFound(f"{where} does not exist")
        return AwsError.from_client_error(exc, what)

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        try:
            self.s3.put_object(Bucket=self.name, Key=key, Body=data, ContentType=content_type)
        except ClientError as exc:
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

    def delete_prefix(self, prefix: str = "") -> int:
        """Delete every object (and every version, if versioned) under ``prefix``; returns the count."""
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
