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
    └── WaitTimeout                  something waited for did not happen in time (also a TimeoutError)
        └── JobTimeout               a result did not arrive in time

User errors (``ConfigError``, ``JobError`` and its children, ``WaitTimeout``) are printed by the CLI as
one line, without a traceback.
"""

from __future__ import annotations

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
        err = response.get("Error", {})
        code = err.get("Code")
        msg = err.get("Message") or str(exc)
        op = getattr(exc, "operation_name", None)
        prefix = f"{what}: " if what else ""
        return cls(f"{prefix}{msg}" + (f" ({code})" if code else ""), code=code, operation=op)


class WaitTimeout(LabkitError, TimeoutError):
    """A condition waited for (a process, a resource, a state) did not come true in time."""


class JobTimeout(WaitTimeout):
    """No result arrived within the timeout."""
