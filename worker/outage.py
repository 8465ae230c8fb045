"""Telling an outage from a refusal, and reporting an outage once when it starts and once when it ends."""

from __future__ import annotations

import logging
import threading
import time

from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError, IncompleteReadError

log = logging.getLogger("labkit.worker")
# AWS error codes that mean "come back later" rather than "no".
TRANSIENT_CODES = {"Throttling", "ThrottlingException", "RequestThrottled", "SlowDown", "ServiceUnavailable",
                   "InternalError", "InternalFailure", "RequestTimeout", "500", "502", "503", "504"}


def is_transient(exc: BaseException | None) -> bool:
    """True when AWS could not be reached or asked to be called again later (worth a retry)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
            return True
        code = getattr(exc, "code", None) or (getattr(exc, "response", None) or {}).get("Error", {}).get("Code")
        if code in TRANSIENT_CODES:
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
