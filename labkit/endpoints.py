"""What answers at an endpoint: real AWS, moto (the embedded emulator), fauxqs, LocalStack, or some other
SQS/S3-compatible service. labkit runs on any of them; a few choices follow from which it is (the client's
window: moto's queues slow down as they fill), and reports name it.

    ep = identify("http://127.0.0.1:4566")      # Endpoint(url=..., kind="localstack")
    ep.label                                   # "LocalStack at http://127.0.0.1:4566"
    reachable("http://127.0.0.1:4566")         # an HTTP server answers there

Each service is recognised by a page of its own (moto's ``/moto-api/``, fauxqs's ``/_fauxqs/queues``,
LocalStack's ``/_localstack/health``), asked once per process and URL. None of these is an AWS call.
"""

from __future__ import annotations

import functools
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from urllib.parse import urlparse

AWS_HOSTS = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
# kind -> (the page that tells it, what the page contains); tried in order, the first that answers wins.
SIGNATURES = (
    ("moto", "/moto-api/", b"moto"),
    ("fauxqs", "/_fauxqs/queues", b"["),
    ("localstack", "/_localstack/health", b"services"),
)
NAMES = {"aws": "AWS", "moto": "moto", "fauxqs": "fauxqs", "localstack": "LocalStack"}
PROBE_TIMEOUT = 2.0  # seconds per page asked


@dataclass(frozen=True)
class Endpoint:
    """An endpoint and what it is: ``kind`` is "aws", "moto", "fauxqs", "localstack" or "other"."""

    url: str | None  # None: AWS's own endpoints for the region
    kind: str

    @property
    def name(self) -> str:
        """What it is, for people: "moto", "fauxqs", "LocalStack", "AWS", or "an SQS/S3 endpoint"."""
        return NAMES.get(self.kind, "an SQS/S3 endpoint")

    @property
    def label(self) -> str:
        """``"<name> at <url>"`` (just "AWS" for AWS's own endpoints)."""
        return self.name if self.url is None else f"{self.name} at {self.url}"

    @property
    def slows_as_queues_fill(self) -> bool:
        """moto's queue operations walk a queue's messages (docs/benchmark.md): keep few in flight there."""
        return self.kind == "moto"


def is_aws(url: str | None) -> bool:
    """True for AWS's own endpoints (no URL, or an amazonaws host)."""
    if url is None:
        return True
    host = (urlparse(url).hostname or "").lower()
    return any(host.endswith(suffix) for suffix in AWS_HOSTS)


@functools.lru_cache(maxsize=64)
def identify(url: str | None) -> Endpoint:
    """What answers at ``url`` (remembered for the process: an endpoint does not change its nature)."""
    if url is None or is_aws(url):
        return Endpoint(url, "aws")
    for kind, path, mark in SIGNATURES:
        if mark in _page(url.rstrip("/") + path).lower():
            return Endpoint(url, kind)
    return Endpoint(url, "other")


def _page(url: str) -> bytes:
    """The start of the page at ``url``; b"" when it does not answer 200."""
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT) as resp:
            return resp.read(4096) if resp.status == 200 else b""
    except (urllib.error.URLError, OSError, ValueError):
        return b""


def reachable(url: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when something listens at ``url``'s host and port. Only a TCP connect: no HTTP request, so it
    costs the service nothing (moto's page of state grows with it) and counts as none of its actions (an
    emulator that enforces IAM lets only a few unsigned requests through)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return False
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False
