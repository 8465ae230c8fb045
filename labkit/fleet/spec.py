"""What the user asks for: :class:`FleetSpec`, checked before anything is created."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from labkit.errors import ConfigError

DEFAULT_INSTANCE_TYPE = "t3.micro"
MAX_INSTANCES = 100  # a typo guard: `--workers 1000` is more likely a mistake than a plan


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

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a request that cannot or should not be deployed."""
        if not 0 <= self.workers <= MAX_INSTANCES:
            raise ConfigError(f"workers must be from 0 to {MAX_INSTANCES}, got {self.workers}")
        if self.autoscale is not None:
            lo, hi = self.autoscale
            if not (0 <= lo <= hi and 1 <= hi <= MAX_INSTANCES):
                raise ConfigError(f"autoscale MIN:MAX needs 0 <= MIN <= MAX, 1 <= MAX <= {MAX_INSTANCES}; "
                                  f"got {lo}:{hi}")
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
