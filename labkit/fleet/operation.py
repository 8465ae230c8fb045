"""One deploy, undeploy or status look: the clients for each service, the fleet's names, the report of what
was done, and the pace of waiting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from labkit import provision, waiting
from labkit.aws.clients import Clients
from labkit.aws.ec2 import Ec2
from labkit.aws.iam import Iam, is_propagating
from labkit.aws.scaling import Alarms, AutoScaling
from labkit.errors import AwsError
from labkit.fleet.names import FleetNames

Progress = Callable[[str], None]
T = TypeVar("T")


@dataclass
class FleetReport(provision.ProvisionReport):
    """What :func:`deploy` or :func:`undeploy` did; ``fleet`` is the record written to the state file."""

    fleet: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    unhealthy: list[str] = field(default_factory=list)  # instances whose worker is not healthy (see fleet.health)


@dataclass
class Operation:
    """One deploy, undeploy or status look: clients, names, report and pacing."""

    clients: Clients
    names: FleetNames
    report: FleetReport = field(default_factory=FleetReport)
    progress: Progress | None = None
    ec2: Ec2 = field(init=False, repr=False)
    iam: Iam = field(init=False, repr=False)
    scaling: AutoScaling = field(init=False, repr=False)
    alarms: Alarms = field(init=False, repr=False)

    @property
    def interval(self) -> float:
        # The emulator answers at once; AWS needs seconds between polls.
        return 0.1 if self.clients.settings.is_local else 5.0

    def __post_init__(self) -> None:
        self.ec2 = Ec2(self.clients("ec2"))
        self.iam = Iam(self.clients("iam"))
        self.scaling = AutoScaling(self.clients("autoscaling"))
        self.alarms = Alarms(self.clients("cloudwatch"))

    def say(self, text: str) -> None:
        if self.progress:
            self.progress(text)

    def wait(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Look at ``check`` every :attr:`interval` until it holds; :class:`WaitTimeout` after ``timeout``."""
        waiting.wait_for(check, timeout, what, self.interval, on_wait=self.progress)

    def after_propagation(self, fn: Callable[[], T], what: str, timeout: float = 120) -> T:
        """``fn()``, called again while EC2 or Auto Scaling refuse a new instance profile that IAM has not
        propagated yet; :class:`WaitTimeout` naming ``what`` when that lasts ``timeout`` seconds."""
        def attempt() -> list[T] | None:
            try:
                return [fn()]
            except AwsError as exc:
                if is_propagating(exc):
                    return None
                raise
        return waiting.wait_for(attempt, timeout, f"the instance profile to reach EC2 ({what})",
                                self.interval * 2)[0]
