"""The deterministic names and tags of everything a fleet consists of, from the bucket's name."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, overload

FLEET_TAG = "labkit:fleet"
MODE_TAG = "labkit:fleet-mode"
BUILD_TAG = "labkit:build"


class _Named:
    """A resource's name: the fleet's stem and a suffix."""

    def __init__(self, suffix: str = "") -> None:
        self.suffix = suffix

    @overload
    def __get__(self, names: None, owner: type) -> _Named: ...

    @overload
    def __get__(self, names: FleetNames, owner: type) -> str: ...

    def __get__(self, names: FleetNames | None, owner: type) -> _Named | str:
        return self if names is None else names.stem + self.suffix


@dataclass(frozen=True)
class FleetNames:
    """Deterministic names of everything a fleet consists of, from the bucket's name."""

    fleet: str  # the tag value: the bucket's name

    # Role, instance profile, security group, launch template and group live in different services (or
    # namespaces), so they can all be called by the stem; the alarms share CloudWatch, hence the suffixes.
    role = _Named()
    profile = _Named()
    security_group = _Named()
    launch_template = _Named()
    group = _Named()
    alarm_backlog = _Named("-backlog")
    alarm_idle = _Named("-idle")
    policy_out = "labkit-scale-out"
    policy_in = "labkit-scale-in"

    @property
    def stem(self) -> str:
        """``labkit-worker-<bucket without labkit->``, shortened with a hash past IAM's 64 characters."""
        base = self.fleet[len("labkit-"):] if self.fleet.startswith("labkit-") else self.fleet
        stem = f"labkit-worker-{base}"
        if len(stem) > 64:
            stem = stem[:55] + "-" + hashlib.sha256(self.fleet.encode()).hexdigest()[:8]
        return stem

    @property
    def alarms(self) -> list[str]:
        return [self.alarm_backlog, self.alarm_idle]

    def tags(self, **extra: str) -> list[dict[str, str]]:
        """The fleet's tag, and ``extra`` ones, as AWS writes tags."""
        return [{"Key": FLEET_TAG, "Value": self.fleet}, *({"Key": k, "Value": v} for k, v in extra.items())]

    def owns(self, tags: list[dict[str, Any]]) -> bool:
        """Do ``tags`` carry this fleet's tag?"""
        return any(t["Key"] == FLEET_TAG and t["Value"] == self.fleet for t in tags)
