"""Telling an outage from a refusal, and reporting an outage once when it starts and once when it ends; and
refused credentials (:class:`CredentialWatch`), which are neither: waiting for AWS does not help, new
credentials do."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError, IncompleteReadError

from labkit.errors import CredentialsError, CredentialsExpired, aws_error_code
from labkit.waiting import poll

log = logging.getLogger("labkit.worker")
# AWS error codes that mean "come back later" rather than "no".
TRANSIENT_CODES = {"Throttling", "ThrottlingException", "RequestThrottled", "SlowDown", "ServiceUnavailable",
                   "InternalError", "InternalFailure", "RequestTimeout", "500", "502", "503", "504"}
CREDENTIALS_WAIT_VAR = "LABKIT_CREDENTIALS_WAIT"
CREDENTIALS_WAIT = 3600.0  # seconds a worker waits for renewed credentials before it stops (default)
RENEW_EVERY = 5.0  # seconds between looks for renewed credentials (the shared file, the profile: no AWS call)
EXIT_CREDENTIALS = 3  # the worker's exit status when it stopped for want of valid credentials


def is_transient(exc: BaseException | None) -> bool:
    """True when AWS could not be reached or asked to be called again later (worth a retry)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
            return True
        if aws_error_code(exc) in TRANSIENT_CODES:
            return True
        seen.add(id(exc))
        exc = exc.__cause__
    return False


def short(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line, cut at ``limit`` characters (no traceback in the log)."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < limit else text[:limit] + "…"


class OutageLog:
    """Reports an AWS outage once when it starts and once when it ends, not once per failed call."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._lock = threading.Lock()
        self._since: float | None = None

    def lost(self, exc: BaseException, what: str) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                log.error("lost contact with AWS (%s) while %s: %s; retrying with backoff",
                          self.endpoint, what, short(exc))

    def restored(self, call_started: float) -> None:
        """A call that began at ``call_started`` succeeded: the outage is over if it began before the call."""
        if self._since is None:
            return
        with self._lock:
            if self._since is not None and call_started >= self._since:
                log.warning("contact with AWS restored after %.1f s", time.monotonic() - self._since)
                self._since = None

    def backoff(self) -> float:
        """Seconds to wait before the next try: growing with the outage, at most 5."""
        since = self._since
        return 5.0 if since is None else min(5.0, 1.0 + (time.monotonic() - since) / 4)


def hhmm(at: float) -> str:
    """``14:02:11 UTC``."""
    return time.strftime("%H:%M:%S UTC", time.gmtime(at))


def credentials_wait(env: dict[str, str] | None = None) -> float:
    """Seconds to wait for renewed credentials: ``LABKIT_CREDENTIALS_WAIT``, else :data:`CREDENTIALS_WAIT`."""
    env = os.environ if env is None else env
    try:
        return float(env.get(CREDENTIALS_WAIT_VAR) or CREDENTIALS_WAIT)
    except ValueError:
        return CREDENTIALS_WAIT


class CredentialWatch:
    """AWS refused the worker's credentials (expired session keys, most often). Says once what to do; then,
    without a call to AWS, looks in the usual places every :data:`RENEW_EVERY` seconds for renewed ones
    (``clients.renew()``) and resumes once they are in use (one line), or gives up after ``limit`` seconds.
    ``on_change`` hears the worker's state: waiting, stopped, or None once serving again."""

    def __init__(self, clients: Any, limit: float, on_change: Callable[[dict[str, Any] | None], None]) -> None:
        self.clients = clients
        self.limit = limit
        self.on_change = on_change
        self._lock = threading.Lock()
        self.since: float | None = None  # when AWS first refused them, while no renewed ones are found
        self.error: CredentialsError | None = None
        self.gave_up = False

    @property
    def waiting(self) -> bool:
        return self.since is not None

    def refused(self, exc: CredentialsError) -> None:
        """A call was refused for its credentials: the first refusal is said, with what to do."""
        self.clients.refused()  # (refused with a key already replaced: the next look finds the new one in use)
        with self._lock:
            if self.since is not None or self.gave_up:
                return
            self.since, self.error = exc.at or time.time(), exc
            until = self.since + self.limit
        log.error("%s; this worker looks for them every %g s and serves again once they are there, or stops at %s "
                  "(%s=%g s)", exc, RENEW_EVERY, hhmm(until), CREDENTIALS_WAIT_VAR, self.limit)
        self.on_change({"status": "waiting", "since": self.since, "until": until, "code": exc.code,
                        "expired": isinstance(exc, CredentialsExpired)})

    def wait(self, stop: threading.Event, alive: Callable[[], None] = lambda: None) -> bool:
        """Block while the credentials are refused: True once renewed ones are in use, False when giving up (or
        ``stop`` is set). ``alive`` is called on each look (the worker's loop still turns)."""
        for _ in poll(RENEW_EVERY, stop=stop):
            alive()
            with self._lock:
                if self.since is None or self.gave_up:
                    return not self.gave_up
                if self.clients.renew():
                    log.warning("AWS credentials renewed after %.0f s; serving again", time.time() - self.since)
                    self.since = self.error = None
                    self.on_change(None)
                    return True
                if time.time() - self.since >= self.limit:
                    self.gave_up = True
                    log.error("no renewed AWS credentials within %g s: this worker stops (exit status %d), and the "
                              "requests it held come back to their queue; %s, then `labkit up`", self.limit,
                              EXIT_CREDENTIALS, self.error)
                    self.on_change({"status": "stopped", "since": self.since, "at": time.time(), "limit": self.limit,
                                    "exit": EXIT_CREDENTIALS, "code": self.error and self.error.code,
                                    "expired": isinstance(self.error, CredentialsExpired)})
                    return False
        return False
