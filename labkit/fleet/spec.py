"""What the user asks for: :class:`FleetSpec`, checked before anything is created."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from labkit.errors import ConfigError

DEFAULT_INSTANCE_TYPE = "t3.micro"
MAX_INSTANCES = 100  # a typo guard: `--workers 1000` is more likely a mistake than a plan
# The cost guard's deadline: far enough ahead that AWS still takes it as future when the call arrives (it refuses a
# scheduled action in the past), and within a week (a class, not a forgotten fleet).
MIN_GUARD = timedelta(minutes=5)
MAX_GUARD = timedelta(days=7)


@dataclass(frozen=True)
class FleetSpec:
    """What the user asks for. ``autoscale=(min, max)`` replaces ``workers`` with an Auto Scaling group."""

    workers: int = 1
    instance_type: str = DEFAULT_INSTANCE_TYPE
    autoscale: tuple[int, int] | None = None
    ssh_cidr: str | None = None
    key_name: str | None = None
    instance_profile: str | None = None
    concurrency: int = 4
    allow_open_ssh: bool = False
    wait: float = 0.0  # seconds to wait for the instances' workers to report healthy (0: do not wait)
    # The cost guard (deploy --hours/--until): when the Auto Scaling group scales itself to zero (UTC). With
    # ``workers`` it makes them a group of fixed size, since only a group scales itself with the laptop closed.
    stop_at: datetime | None = None

    @property
    def group_size(self) -> tuple[int, int] | None:
        """(min, max) of the Auto Scaling group this request runs as, or None for lone instances."""
        if self.autoscale is not None:
            return self.autoscale
        return (self.workers, self.workers) if self.stop_at is not None else None

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a request that cannot or should not be deployed."""
        if not 0 <= self.workers <= MAX_INSTANCES:
            raise ConfigError(f"workers must be from 0 to {MAX_INSTANCES}, got {self.workers}")
        if self.autoscale is not None:
            lo, hi = self.autoscale
            if not (0 <= lo <= hi and 1 <= hi <= MAX_INSTANCES):
                raise ConfigError(f"autoscale MIN:MAX needs 0 <= MIN <= MAX, 1 <= MAX <= {MAX_INSTANCES}; "
                                  f"got {lo}:{hi}")
        if self.stop_at is not None:
            self._validate_stop(self.stop_at)
        if not 1 <= self.concurrency <= 64:
            raise ConfigError(f"concurrency must be from 1 to 64, got {self.concurrency}")
        if not 0 <= self.wait <= 3600:
            raise ConfigError(f"the wait for healthy workers must be from 0 to 3600 seconds, got {self.wait:g}")
        if not re.fullmatch(r"[a-z0-9]+[a-z0-9-]*\.[a-z0-9]+", self.instance_type):
            raise ConfigError(f"{self.instance_type!r} is not an EC2 instance type (like t3.micro)")
        if self.instance_profile is not None and not re.fullmatch(r"[\w+=,.@-]{1,128}", self.instance_profile):
            raise ConfigError(f"{self.instance_profile!r} is not a valid instance profile name")
        if self.ssh_cidr is not None:
            self._validate_ssh(self.ssh_cidr)

    def _validate_stop(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ConfigError("the fleet's stop time needs a time zone (a UTC datetime)")
        ahead = at - datetime.now(timezone.utc)
        if not MIN_GUARD <= ahead <= MAX_GUARD:
            raise ConfigError(f"the fleet's stop time must be 5 minutes to 7 days ahead, got {_local(at)}")
        if self.autoscale is None and self.workers == 0:
            raise ConfigError("--hours/--until with --workers 0: there is nothing to stop (give --workers N or "
                              "--autoscale MIN:MAX)")

    def _validate_ssh(self, cidr: str) -> None:
        network = ssh_network(cidr)
        if not self.key_name:
            raise ConfigError("--ssh-cidr opens SSH, which needs a key pair: add --key-name NAME "
                              "(or leave SSH closed and use Session Manager)")
        if network.prefixlen == 0 and not self.allow_open_ssh:
            raise ConfigError(f"refusing to open SSH to the whole internet ({cidr}): give your own "
                              "address range (e.g. 203.0.113.7/32), use Session Manager, or confirm explicitly")


def ssh_network(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """Parse an SSH source range; host bits must be zero (``10.0.0.5/24`` is refused as ambiguous)."""
    try:
        return ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise ConfigError(f"--ssh-cidr {cidr!r} is not a network in CIDR form (like 203.0.113.7/32): {exc}") from exc


def is_open_cidr(cidr: str | None) -> bool:
    """True for ``0.0.0.0/0``, ``::/0`` and other ranges that cover the whole internet."""
    return bool(cidr) and ssh_network(cidr or "").prefixlen == 0


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"1:4"`` -> ``(1, 4)``."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text or "")
    if not m:
        raise ConfigError(f"--autoscale wants MIN:MAX (like 0:4), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def parse_stop(hours: float | None = None, until: str | None = None, now: datetime | None = None) -> datetime | None:
    """The cost guard's deadline (UTC) from ``--hours N`` (from now) or ``--until HH:MM`` (this machine's local
    time, the next time the clock shows it: today, else tomorrow); None when neither is given."""
    if hours is not None and until is not None:
        raise ConfigError("give --hours or --until, not both")
    now = (now or datetime.now(timezone.utc)).astimezone()
    if hours is not None:
        if not 0 < hours <= MAX_GUARD / timedelta(hours=1):
            raise ConfigError(f"--hours must be more than 0 and at most {MAX_GUARD.days * 24}, got {hours:g}")
        return (now + timedelta(hours=hours)).astimezone(timezone.utc).replace(microsecond=0)
    if until is None:
        return None
    m = re.fullmatch(r"\s*([01]?\d|2[0-3]):([0-5]\d)\s*", until)
    if not m:
        raise ConfigError(f"--until wants a time of day HH:MM in this machine's time zone (like 17:30), got {until!r}")
    at = now.replace(hour=int(m.group(1)), minute=int(m.group(2)), second=0, microsecond=0)
    if at <= now:
        at = (at.replace(tzinfo=None) + timedelta(days=1)).astimezone()  # tomorrow, in tomorrow's UTC offset
    return at.astimezone(timezone.utc)


def _local(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d %H:%M %Z")
