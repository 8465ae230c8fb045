"""Settings: where labkit talks to and what its resources are called.

Resolution order (a contract, see the README's "Configuration"): explicit arguments > environment >
state file ``<state_dir>/state.json`` (written by ``labkit up``) > defaults.

Which state folder, in order (:func:`find_state_dir`): the one named (``--state-dir``, ``state_dir=``), then
``LABKIT_STATE_DIR``, then the nearest ``.labkit`` in this folder or above it (as git finds ``.git``), then the
lab that ``labkit up`` last started on this machine, recorded in ``~/.config/labkit/lab.json`` (see
:func:`record_lab`), else ``.labkit`` here. ``Settings.state_source`` says which, for people.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Mapping
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
STATE_DIR_NAME = ".labkit"
# Where the state folder was found (Settings.state_origin) -> how to say it.
ORIGINS = {
    "argument": "named by --state-dir",
    "env": "named by LABKIT_STATE_DIR",
    "here": "in this folder",
    "above": "found above this folder",
    "lab": "the lab `labkit up` last started, recorded in {pointer}",
}
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
    # How state_dir was chosen: a key of ORIGINS, or "default" (none found: .labkit here, not there yet).
    state_origin: str = field(default="default", compare=False)

    @property
    def is_local(self) -> bool:
        """True when the endpoint is on this machine (the embedded emulator)."""
        return _is_loopback(self.endpoint_url)

    @property
    def state_file(self) -> Path:
        return Path(self.state_dir) / "state.json"

    @property
    def state_named(self) -> bool:
        """Was the state folder named (argument, LABKIT_STATE_DIR) rather than found?"""
        return self.state_origin in ("argument", "env")

    @property
    def state_source(self) -> str:
        """Where the state came from, for people: ``state /p/.labkit/state.json (found above this folder)``."""
        return describe_state(self.state_dir, self.state_origin)

    def queue_names(self) -> dict[str, str]:
        """The four queues by role."""
        return {role: getattr(self, role) for role in DEFAULT_QUEUES}

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def load(cls, state_dir: str | Path | None = None, env: dict[str, str] | None = None, **explicit: Any) -> Settings:
        """Resolve settings: ``explicit`` (None values ignored) > environment > state file > defaults."""
        env = os.environ if env is None else env
        sdir, origin = find_state_dir(state_dir, env)
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
        if "LABKIT_JOB_MODULES" in env:  # set and empty: none (clears what an earlier `labkit up` saved)
            values["job_modules"] = env["LABKIT_JOB_MODULES"]
        values.update({k: v for k, v in explicit.items() if v is not None})
        if "job_modules" in values:
            values["job_modules"] = split_modules(values["job_modules"])
        values["state_dir"], values["state_origin"] = sdir, origin
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


def find_state_dir(state_dir: str | Path | None = None, env: Mapping[str, str] | None = None,
                   cwd: Path | None = None) -> tuple[Path, str]:
    """The state folder and how it was chosen (a key of :data:`ORIGINS`, or "default"): named, else
    ``LABKIT_STATE_DIR``, else the nearest ``.labkit`` from ``cwd`` up, else the lab ``labkit up`` recorded
    (:func:`recorded_lab`), else ``.labkit`` here."""
    env = os.environ if env is None else env
    if state_dir:
        return Path(state_dir), "argument"
    if env.get("LABKIT_STATE_DIR"):
        return Path(env["LABKIT_STATE_DIR"]), "env"
    try:
        here = cwd or Path.cwd()
    except OSError:  # this folder was deleted under us
        return Path(STATE_DIR_NAME), "default"
    for folder in (here, *here.parents):
        if (folder / STATE_DIR_NAME).is_dir():
            return (Path(STATE_DIR_NAME), "here") if folder == here else (folder / STATE_DIR_NAME, "above")
    lab = recorded_lab(env)
    if lab is not None:
        return lab, "lab"
    return Path(STATE_DIR_NAME), "default"


def lab_pointer(env: Mapping[str, str] | None = None) -> Path | None:
    """``$XDG_CONFIG_HOME/labkit/lab.json`` (default ``~/.config``): the lab ``labkit up`` last started on this
    machine. None when the environment names no home."""
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME") or (str(Path(env["HOME"]) / ".config") if env.get("HOME") else "")
    return Path(base) / "labkit" / "lab.json" if base else None


def recorded_lab(env: Mapping[str, str] | None = None) -> Path | None:
    """The state folder :func:`record_lab` recorded, while it still holds a state file; else None."""
    pointer = lab_pointer(env)
    try:
        folder = Path(json.loads(pointer.read_text())["state_dir"]) if pointer else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return folder if folder is not None and (folder / "state.json").is_file() else None


def record_lab(state_dir: str | Path, env: Mapping[str, str] | None = None) -> Path | None:
    """Record ``state_dir`` as this machine's lab (``labkit up`` does), so that labkit finds it from any
    folder. Only the folder's path is written. Returns the pointer file (None: no home to write it in)."""
    pointer = lab_pointer(env)
    if pointer is None:
        return None
    pointer.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=pointer.parent, prefix=".lab-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump({"state_dir": str(Path(state_dir).resolve())}, f)
    os.replace(tmp, pointer)
    return pointer


def forget_lab(state_dir: str | Path, env: Mapping[str, str] | None = None) -> None:
    """Remove the record of :func:`record_lab` if it names ``state_dir`` (``labkit down`` does)."""
    pointer = lab_pointer(env)
    if pointer is not None and recorded_lab(env) == Path(state_dir).resolve():
        pointer.unlink(missing_ok=True)


def describe_state(state_dir: str | Path, origin: str, env: Mapping[str, str] | None = None) -> str:
    """Where the state came from, in words: the state file and how its folder was chosen, or where none was
    found."""
    pointer = lab_pointer(env) or "~/.config/labkit/lab.json"
    if origin in ORIGINS:
        return f"state {Path(state_dir) / 'state.json'} ({ORIGINS[origin].format(pointer=pointer)})"
    try:
        here = str(Path.cwd())
    except OSError:
        here = "this folder"
    return f"no lab found: no {STATE_DIR_NAME} in {here} or above it, and none recorded in {pointer}"


def no_lab_hint(state_dir: str | Path | None = None, env: Mapping[str, str] | None = None) -> str:
    """For "no AWS credentials found": where labkit looked for a lab (:func:`find_state_dir`), and what to do."""
    folder, origin = find_state_dir(state_dir, env)
    where = describe_state(folder, origin, env)
    aws = "or configure AWS credentials (aws configure, AWS_PROFILE)"
    if origin == "default":
        return f"{where}: start a lab with `labkit up`, run this in your lab's folder, {aws}"
    return f"{where} names no running emulator: `labkit up` starts it, {aws}"


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
