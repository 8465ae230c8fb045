"""Settings: where labkit talks to and what its resources are called.

Resolution order (a contract, see the README's "Configuration"): explicit arguments > environment >
state file ``<state_dir>/state.json`` (written by ``labkit up``) > defaults.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from labkit.errors import ConfigError

DEFAULT_REGION = "us-east-1"
# The original lab's names stay the defaults.
DEFAULT_QUEUES = {
    "request_queue": "requestQueue",
    "response_queue": "responseQueue",
    "image_inbox": "imageInbox",
    "image_outbox": "imageOutbox",
}
UNPROCESSED_PREFIX = "images/unprocessed/"
PROCESSED_PREFIX = "images/processed/"
PAYLOADS_PREFIX = "payloads/"
LOGS_PREFIX = "logs/"
# Each EC2 worker's heartbeat, <instance-id>.json (worker/health.py writes it, labkit.fleet.health reads it).
HEALTH_PREFIX = LOGS_PREFIX + "health/"
HEARTBEAT_SECONDS = 60.0
ARTIFACTS_PREFIX = "artifacts/"
REPLY_QUEUE_PREFIX = "labkit-reply-"
DLQ_SUFFIX = "-dlq"

# Environment variable -> settings field.
ENV_VARS = {
    "LABKIT_REQUEST_QUEUE": "request_queue",
    "LABKIT_RESPONSE_QUEUE": "response_queue",
    "LABKIT_IMAGE_INBOX": "image_inbox",
    "LABKIT_IMAGE_OUTBOX": "image_outbox",
    "LABKIT_BUCKET": "bucket",
}
# Fields the state file may set.
STATE_FIELDS = ("endpoint_url", "region", "bucket", "job_modules", *DEFAULT_QUEUES)
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _is_loopback(url: str | None) -> bool:
    if not url:
        return False
    host = urlparse(url).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass(frozen=True)
class Settings:
    """Everything labkit needs to find its queues and bucket. Build it with :meth:`load`."""

    region: str = DEFAULT_REGION
    endpoint_url: str | None = None
    request_queue: str = DEFAULT_QUEUES["request_queue"]
    response_queue: str = DEFAULT_QUEUES["response_queue"]
    image_inbox: str = DEFAULT_QUEUES["image_inbox"]
    image_outbox: str = DEFAULT_QUEUES["image_outbox"]
    # None: "labkit-<account>-<region>", resolved by provisioning (see labkit.aws.clients.default_bucket).
    bucket: str | None = None
    state_dir: Path = field(default=Path(".labkit"))
    # Queue behaviour.
    visibility_timeout: int = 60  # number jobs; long jobs extend it while they run
    image_visibility_timeout: int = 120
    max_receive_count: int = 5  # receives before a request goes to its dead-letter queue
    # The queues' own long poll (ReceiveMessageWaitTimeSeconds, the SQS maximum): the longest a receive
    # may hold its connection. A worker's receive wait is its own setting (``labkit worker --poll-wait``).
    queue_wait: int = 20
    # Payloads larger than this travel through S3 (claim check). 240 KiB keeps a wide margin under
    # SQS's message limit (1 MiB since 2025, 256 KiB before) for the envelope and attributes.
    max_inline_bytes: int = 240 * 1024
    # Image limits, checked before pixels are decoded.
    max_image_pixels: int = 40_000_000
    max_image_bytes: int = 50 * 1024 * 1024
    # Number payloads read from S3 are refused past this size.
    max_payload_bytes: int = 512 * 1024 * 1024
    # Modules (dotted names or .py files) that add job kinds (labkit.kinds.job_kind); workers import them.
    job_modules: tuple[str, ...] = ()

    @property
    def is_local(self) -> bool:
        """True when the endpoint is on this machine (the embedded emulator)."""
        return _is_loopback(self.endpoint_url)

    @property
    def state_file(self) -> Path:
        return Path(self.state_dir) / "state.json"

    def queue_names(self) -> dict[str, str]:
        """The four queues by role."""
        return {role: getattr(self, role) for role in DEFAULT_QUEUES}

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, state_dir: str | Path | None = None, env: dict[str, str] | None = None, **explicit: Any) -> Settings:
        """Resolve settings: ``explicit`` (None values ignored) > environment > state file > defaults."""
        env = os.environ if env is None else env
        sdir = Path(state_dir or env.get("LABKIT_STATE_DIR") or ".labkit")
        values: dict[str, Any] = {}
        state = read_state(sdir)
        for name in STATE_FIELDS:
            if state.get(name) is not None:
                values[name] = state[name]
        # Environment.
        endpoint = env.get("LABKIT_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            values["endpoint_url"] = endpoint
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        if region:
            values["region"] = region
        for var, name in ENV_VARS.items():
            if env.get(var):
                values[name] = env[var]
        if env.get("LABKIT_JOB_MODULES"):
            values["job_modules"] = env["LABKIT_JOB_MODULES"]
        values.update({k: v for k, v in explicit.items() if v is not None})
        if "job_modules" in values:
            values["job_modules"] = split_modules(values["job_modules"])
        values["state_dir"] = sdir
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work."""
        for role, name in self.queue_names().items():
            if not name or len(name) > 80 or not all(c.isalnum() or c in "-_" for c in name):
                raise ConfigError(f"{role} name {name!r} is not a valid SQS queue name")
        if self.endpoint_url and urlparse(self.endpoint_url).scheme not in ("http", "https"):
            raise ConfigError(f"endpoint URL {self.endpoint_url!r} must start with http:// or https://")


def split_modules(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``"a.b, kinds/mine.py"`` (or a list) as a tuple of module names or file paths."""
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(str(x).strip() for x in items if str(x).strip())


def read_state(state_dir: str | Path) -> dict[str, Any]:
    """The state file's content, or {} when there is none."""
    path = Path(state_dir) / "state.json"
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"state file {path} is not valid JSON ({exc}); delete it or run `labkit down`") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"state file {path} does not hold a JSON object")
    return data


def write_state(state_dir: str | Path, state: dict[str, Any]) -> Path:
    """Write the state file atomically (no secrets go in it: only names, URLs and process ids)."""
    sdir = Path(state_dir)
    sdir.mkdir(parents=True, exist_ok=True)
    path = sdir / "state.json"
    fd, tmp = tempfile.mkstemp(dir=sdir, prefix=".state-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def update_state(state_dir: str | Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into the state file (None deletes a key) and return the new state."""
    state = read_state(state_dir)
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    write_state(state_dir, state)
    return state
