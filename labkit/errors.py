"""One exception tree for labkit.

    LabkitError                      every error labkit raises on purpose
    ├── ConfigError                  settings or state file unusable; user error
    ├── EmulatorError                the embedded emulator did not start or answer
    ├── ProtocolError                a message body could not be decoded (keeps the raw body)
    ├── JobError                     a job failed; carries a protocol error code
    │   ├── InvalidInput             code "invalid_input": the job's input is wrong
    │   ├── TooLarge                 code "too_large": the input exceeds a configured limit
    │   ├── NotFound                 code "not_found": an object or queue named by the job is missing
    │   └── RemoteJobError           the worker answered ok=false (any code), raised at the client
    ├── AwsError                     an AWS call failed; keeps the AWS error code
    │   └── CredentialsError         AWS refused the credentials themselves (not an outage): new ones are needed
    │       └── CredentialsExpired   session credentials expired (ExpiredToken and friends)
    └── WaitTimeout                  something waited for did not happen in time (also a TimeoutError)
        └── JobTimeout               a result did not arrive in time

User errors (``ConfigError``, ``JobError`` and its children, ``WaitTimeout``, ``CredentialsError``) are printed by
the CLI as one line, without a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

# Error codes of the message protocol (docs/protocol.md).
INVALID_INPUT = "invalid_input"
UNKNOWN_KIND = "unknown_kind"
UNSUPPORTED_VERSION = "unsupported_version"
NOT_FOUND = "not_found"
TOO_LARGE = "too_large"
INTERNAL = "internal"
ERROR_CODES = (INVALID_INPUT, UNKNOWN_KIND, UNSUPPORTED_VERSION, NOT_FOUND, TOO_LARGE, INTERNAL)


class LabkitError(Exception):
    """Root of every error labkit raises on purpose."""


class ConfigError(LabkitError):
    """Settings, environment or state file cannot be used."""


class EmulatorError(LabkitError):
    """The embedded emulator could not be started or does not answer."""


class ProtocolError(LabkitError):
    """A message body could not be decoded. ``raw`` keeps the body, ``code`` the protocol code."""


    def __init__(self, message: str, raw: str | bytes | None = None, code: str = INVALID_INPUT,
                 partial: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.raw = raw
        self.code = code
        # What could be read of a JSON request despite the error (id, kind, reply_to), so that an
        # error reply can still be addressed and correlated.
        self.partial = partial or {}


class JobError(LabkitError):
    """A job cannot be done. ``code`` is one of the protocol's error codes."""

    code: str = INTERNAL

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)


class InvalidInput(JobError):
    code = INVALID_INPUT


class TooLarge(JobError):
    code = TOO_LARGE


class NotFound(JobError):
    code = NOT_FOUND


class RemoteJobError(JobError):
    """The worker replied ``ok: false``; raised by ``Job.result()`` at the client."""

    def __init__(self, message: str, code: str, job_id: str | None = None) -> None:
        super().__init__(message, code)
        self.job_id = job_id

    def __str__(self) -> str:
        return f"{self.code}: {self.args[0]}"


class AwsError(LabkitError):
    """An AWS call failed. ``code`` is AWS's error code (e.g. ``AWS.SimpleQueueService.NonExistentQueue``)."""

    def __init__(self, message: str, code: str | None = None, operation: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.operation = operation

    @classmethod
    def from_client_error(cls, exc: Any, what: str = "") -> AwsError:
        """Wrap a botocore ``ClientError`` (or any exception) with a readable message."""
        response = getattr(exc, "response", None) or {}
        code = response_error_code(response) or None
        msg = (response.get("Error") or {}).get("Message") or str(exc)
        op = getattr(exc, "operation_name", None)
        refused = credentials_error(exc, what)
        if refused is not None:  # not an outage, not a missing thing: the one line says what to do
            return refused
        prefix = f"{what}: " if what else ""
        return cls(f"{prefix}{msg}" + (f" ({code})" if code else ""), code=code, operation=op)


def aws_error_code(exc: BaseException | None) -> str:
    """AWS's error code of an :class:`AwsError` or a botocore ``ClientError`` ("" for anything else): the one place
    that reads it, so that every test of a code (a missing queue, a transient failure, refused credentials) sees
    the same."""
    if isinstance(exc, AwsError):
        return exc.code or ""
    return response_error_code(getattr(exc, "response", None))


def response_error_code(response: Mapping[str, Any] | None) -> str:
    """The error code of a parsed AWS response (``response["Error"]["Code"]``); "" when it has none."""
    return ((response or {}).get("Error") or {}).get("Code") or ""


# AWS's codes for credentials it no longer accepts because they expired (SQS's JSON protocol says
# ExpiredTokenException, S3 and the query services ExpiredToken; EC2's RequestExpired also means a clock more than
# 15 minutes off; S3's TokenRefreshRequired asks for a refreshed session token).
EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired", "TokenRefreshRequired"})
# Codes for credentials AWS does not know at all: a wrong or deactivated key, a session token that does not belong
# to it, a session ended early. Not an expiry, but not an outage either: the remedy is the same, valid credentials.
INVALID_CODES = frozenset({"InvalidClientTokenId", "UnrecognizedClientException", "InvalidAccessKeyId",
                           "InvalidToken"})
# botocore's own errors when credentials it refreshes itself (SSO, a login session) cannot be refreshed any more.
REFRESH_FAILURES = frozenset({"UnauthorizedSSOTokenError", "SSOTokenLoadError", "TokenRetrievalError",
                              "LoginRefreshRequired", "LoginTokenLoadError", "RefreshWithMFAUnsupportedError"})
RENEW_HINT = ("renew them (AWS Academy: copy the new ones from \"AWS Details\" into ~/.aws/credentials; SSO: "
              "`aws sso login`)")


def credentials_error(exc: BaseException | None, what: str = "") -> CredentialsError | None:
    """The :class:`CredentialsError` ``exc`` stands for (a ``ClientError`` or :class:`AwsError` whose code says AWS
    refused the credentials, botocore's failure to refresh them, or one already made), else None. The one place
    that tells refused credentials from an outage or a refusal of the call itself."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, CredentialsError):
            return exc
        code = aws_error_code(exc)
        name = type(exc).__name__
        if code in EXPIRED_CODES or code in INVALID_CODES or name in REFRESH_FAILURES:
            return CredentialsError.refused(code or name, what or getattr(exc, "operation_name", None) or "",
                                            expired=code not in INVALID_CODES)
        seen.add(id(exc))
        exc = exc.__cause__
    return None


class CredentialsError(AwsError):
    """AWS refused the credentials themselves: not an outage (waiting does not help) and not a refusal of this
    call (other calls are refused too). ``at`` is when (epoch seconds)."""

    at: float = 0.0

    @staticmethod
    def refused(code: str, what: str = "", expired: bool = True, at: float | None = None) -> CredentialsError:
        """The error for AWS's (or botocore's) ``code``, met while doing ``what``, with the one line that says what
        to do."""
        at = time.time() if at is None else at
        when = time.strftime("%H:%M:%S UTC", time.gmtime(at))
        where = f", for {what}" if what else ""
        if not expired:
            err: CredentialsError = CredentialsError(
                f"AWS does not accept your credentials ({code} at {when}{where}): the key is wrong, deactivated or "
                f"its session was ended; configure valid ones, or {RENEW_HINT} if they are session credentials",
                code=code)
        else:
            clock = " (or this machine's clock is more than 15 minutes off)" if code == "RequestExpired" else ""
            err = CredentialsExpired(f"your AWS session credentials expired (AWS refused them with {code} at "
                                     f"{when}{where}){clock}: {RENEW_HINT}", code=code)
        err.at = at
        return err


class CredentialsExpired(CredentialsError):
    """Session credentials expired (``ExpiredToken``, ``ExpiredTokenException``, ``RequestExpired``, ...)."""


class WaitTimeout(LabkitError, TimeoutError):
    """A condition waited for (a process, a resource, a state) did not come true in time."""


class JobTimeout(WaitTimeout):
    """No result arrived within the timeout."""


def credentials_line(info: dict[str, Any] | None) -> str:
    """The credentials in use, in words: kind, where from, when they expire (where known); never a key."""
    if not info:
        return "unknown"
    profile = f", profile {info['profile']}" if info.get("profile") else ""
    text = f"{info.get('kind')} from {info.get('source')}{profile}"
    if info.get("expires"):
        left = info["expires"] - time.time()
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(info["expires"]))
        text += f"; expire {when}" + (f" (in {left / 60:.0f} min)" if left > 0 else " (expired)") + \
            ("; renewed automatically" if info.get("refreshed") else "")
    elif info.get("kind") == "session keys (temporary)":
        text += "; expiry unknown (keys in a file do not say; AWS Academy's last about 4 hours)"
    if info.get("problem"):
        text += f"; REFUSED: {info['problem']}"
    return text


def run_command(body: Callable[[], int | None], state_dir: str | None = None) -> int:
    """Run a command's body (``labkit``'s, the worker's: each front end through this one) and return its exit
    status. A user's mistake, or AWS unreachable or refusing, is one line on stderr and status 1 (``state_dir``:
    where the command looked for a lab, named when no credentials are found); Ctrl-C is status 130, a reader gone
    (``labkit status | head -1``) status 1. A bug keeps its traceback."""
    import os
    import sys
    try:
        return int(body() or 0)
    except KeyboardInterrupt:
        print("labkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # No traceback, and none when Python flushes at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as exc:
        line = str(exc) if isinstance(exc, LabkitError) else _boto_line(exc, state_dir)
        if line is None:
            raise
        print(f"labkit: error: {line}", file=sys.stderr)
        return 1


def _boto_line(exc: Exception, state_dir: str | None) -> str | None:
    """Well-known boto errors in one line; None for anything else (a bug)."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach {exc.kwargs.get('endpoint_url')}: is the emulator running? (`labkit up`)"
    if isinstance(exc, NoCredentialsError):
        from labkit.config import no_lab_hint
        return f"no AWS credentials found, and {no_lab_hint(state_dir)}"
    if isinstance(exc, ClientError):
        return str(AwsError.from_client_error(exc))
    refused = credentials_error(exc)  # botocore could not refresh them (an SSO or login session that ended)
    return None if refused is None else str(refused)
