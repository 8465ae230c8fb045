"""One way to call EC2, IAM, SSM, Auto Scaling and CloudWatch: :func:`call` turns botocore's ``ClientError``
into :class:`~labkit.errors.AwsError` (AWS's error code kept in ``.code``), and :func:`is_denied` and
:func:`is_missing` tell a refusal or a missing resource from any other failure."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from labkit.errors import AwsError, aws_error_code

# SQS says AccessDenied or AuthorizationError; an emulator may give the bare HTTP status.
DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError", "403"})


def is_denied(exc: BaseException) -> bool:
    """The caller may not do this (IAM, EC2 and the others each spell it their own way)."""
    return aws_error_code(exc) in DENIED


def is_missing(exc: BaseException) -> bool:
    """The resource does not exist: IAM's ``NoSuchEntity``, EC2's ``*.NotFound`` and ``*NotFoundException``."""
    code = aws_error_code(exc)
    return code == "NoSuchEntity" or "NotFound" in code


def is_gone(exc: BaseException) -> bool:
    """What a delete hears when the resource is already gone: :func:`is_missing`, or Auto Scaling's
    ``ValidationError`` "... not found" (it has no not-found code of its own)."""
    return is_missing(exc) or (aws_error_code(exc) == "ValidationError" and "not found" in str(exc).lower())


def delete(client: Any, operation: str, what: str = "", **kwargs: Any) -> bool:
    """A delete through :func:`call`: True when it deleted, False when the resource was already gone. botocore
    retries a 5xx, and AWS may have done the work before the answer was lost: the retry then hears "not found",
    which means done (tests/test_fleet_throttled.py)."""
    try:
        call(client, operation, what, **kwargs)
    except AwsError as exc:
        if is_gone(exc):
            return False
        raise
    return True


def call(client: Any, operation: str, what: str = "", **kwargs: Any) -> dict[str, Any]:
    """``client.<operation>(**kwargs)``; a ``ClientError`` becomes :class:`AwsError` saying ``what`` failed."""
    try:
        return getattr(client, operation)(**kwargs)
    except ClientError as exc:
        raise AwsError.from_client_error(exc, what or operation) from exc


def find(client: Any, operation: str, key: str, what: str = "", **kwargs: Any) -> Any:
    """``response[key]`` of the call, or None when AWS says the resource does not exist."""
    try:
        return call(client, operation, what, **kwargs)[key]
    except AwsError as exc:
        if is_missing(exc):
            return None
        raise


def pages(client: Any, operation: str, key: str, what: str = "", **kwargs: Any) -> list[Any]:
    """Every item under ``key`` in every page of a paginated operation."""
    out: list[Any] = []
    try:
        for page in client.get_paginator(operation).paginate(**kwargs):
            out += page.get(key, [])
    except ClientError as exc:
        raise AwsError.from_client_error(exc, what or operation) from exc
    return out

