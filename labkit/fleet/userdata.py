"""User data: ``worker/deploy/bootstrap.sh`` with its settings lines filled in (names and region, no secret) and
the worker's pinned dependencies (``worker/deploy/requirements.txt``, with their hashes) written in."""

from __future__ import annotations

import re

from labkit import kinds
from labkit.config import Settings
from labkit.errors import ConfigError
from labkit.fleet.wheel import PACKAGES_ROOT

DEPLOY_DIR = PACKAGES_ROOT / "worker" / "deploy"
USER_DATA_LIMIT = 16 * 1024  # EC2's limit, before base64
SETTINGS_LINE = re.compile(r'^: "\$\{([A-Z0-9_]+):=[^}]*\}"$', re.M)
SAFE_VALUE = re.compile(r"^[A-Za-z0-9._:/@+=,-]*$")
# The requirements go between the heredoc's first line and its terminator (a quoted heredoc: nothing expands).
PINNED_BLOCK = re.compile(r"^(PINNED=\"\$\(cat <<'LABKIT_REQUIREMENTS'\n)(LABKIT_REQUIREMENTS\n)", re.M)
SAFE_REQUIREMENT = re.compile(r"^[A-Za-z0-9._=:<>!~\[\], \\-]*$")  # names, versions, hashes, continuations


def bootstrap_template() -> str:
    """The bootstrap script as shipped (``worker/deploy/bootstrap.sh``)."""
    return (DEPLOY_DIR / "bootstrap.sh").read_text()


def user_data_values(settings: Settings, bucket: str, wheel_key: str, wheel_sha256: str,
                     concurrency: int = 4) -> dict[str, str]:
    """The bootstrap script's settings for this fleet: names and region, never a credential. The job
    modules are named as the wheel holds them (top-level modules)."""
    return {
        "AWS_REGION": settings.region, "LABKIT_BUCKET": bucket,
        "LABKIT_REQUEST_QUEUE": settings.request_queue, "LABKIT_RESPONSE_QUEUE": settings.response_queue,
        "LABKIT_IMAGE_INBOX": settings.image_inbox, "LABKIT_IMAGE_OUTBOX": settings.image_outbox,
        "LABKIT_WHEEL_KEY": wheel_key, "LABKIT_WHEEL_SHA256": wheel_sha256,
        "LABKIT_CONCURRENCY": str(concurrency), "LABKIT_ENDPOINT_URL": settings.endpoint_url or "",
        "LABKIT_JOB_MODULES": ",".join(kinds.module_names(settings.job_modules)),
    }


def pinned_requirements() -> str:
    """The worker's dependencies as the bootstrap installs them (``worker/deploy/requirements.txt``)."""
    return (DEPLOY_DIR / "requirements.txt").read_text()


def _with_requirements(template: str, requirements: str) -> str:
    lines = [ln for ln in requirements.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    bad = [ln for ln in lines if not SAFE_REQUIREMENT.match(ln) or ln.strip() == "LABKIT_REQUIREMENTS"]
    if bad:
        raise ConfigError(f"requirements line {bad[0]!r} cannot go into the bootstrap script")
    if not PINNED_BLOCK.search(template):
        raise ConfigError("bootstrap.sh has no place for the pinned requirements (PINNED heredoc)")
    return PINNED_BLOCK.sub(lambda m: m.group(1) + "".join(ln + "\n" for ln in lines) + m.group(2), template, count=1)


def compact(script: str) -> str:
    """``script`` without its comment lines (the shebang and shellcheck's directives stay): the instance runs
    the same commands, and EC2's 16 KiB limit leaves room for the pinned requirements. The documented script is
    worker/deploy/bootstrap.sh."""
    lines = script.splitlines(keepends=True)
    return "".join(ln for i, ln in enumerate(lines)
                   if i == 0 or not ln.lstrip().startswith("#") or ln.lstrip().startswith("# shellcheck"))


def render_user_data(values: dict[str, str], requirements: str | None = None) -> str:
    """The bootstrap script with its settings lines (``: "${NAME:=…}"``) filled in from ``values`` and the
    pinned ``requirements`` (default: :func:`pinned_requirements`) written in, without its comments
    (:func:`compact`)."""
    template = _with_requirements(bootstrap_template(), pinned_requirements() if requirements is None else requirements)
    text = compact(with_values(template, values))
    if len(text.encode()) > USER_DATA_LIMIT:
        raise ConfigError(f"the user data is {len(text.encode())} bytes, over EC2's limit of {USER_DATA_LIMIT}")
    return text


def with_values(script: str, values: dict[str, str]) -> str:
    """``script`` (the bootstrap, or user data made from it) with the settings lines of ``values`` set to them.
    For instance the group's launch template adds LABKIT_GROUP to the fleet's user data."""
    missing = set(values) - set(SETTINGS_LINE.findall(script))
    if missing:
        raise ConfigError(f"bootstrap.sh has no settings line for {', '.join(sorted(missing))}")
    for name, value in values.items():
        if not SAFE_VALUE.match(value):
            raise ConfigError(f"{name}={value!r} has characters that cannot go into the bootstrap script")

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        return f': "${{{name}:={values[name]}}}"' if name in values else m.group(0)

    return SETTINGS_LINE.sub(fill, script)
