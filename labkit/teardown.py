"""The one ordered teardown, used by ``labkit teardown``, the notebook ``99_teardown`` and its panel:

    1. the EC2 fleet (group, alarms, instances, launch template, security group, role and profile, wheels)
    2. the local workers (so that none is still writing into the bucket while it is deleted)
    3. the queues (dead-letter queues too, and reply queues idle for an hour: those of clients still
       running stay, see :data:`labkit.provision.REPLY_IDLE_AGE`)
    4. the bucket and every object in it (unless kept)
    5. the emulator, and the state file's record of it all

then a look at what is left. Nothing here is specific to a front end: the CLI and the widgets present
the :class:`TeardownReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit import emulator, local, provision
from labkit.aws.clients import Clients
from labkit.config import Settings, read_state
from labkit.errors import AwsError
from labkit.waiting import poll

# AWS error codes that say "you may not look at EC2/IAM here" or "this endpoint has no such API".
NO_FLEET_API = ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "InvalidAction",
                "UnknownOperationException", "NotImplemented")


@dataclass
class TeardownReport:
    """What :func:`teardown` deleted and stopped, and what is left (``left`` empty when all went)."""

    deleted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # other clients' reply queues, in use (not "left")
    workers_stopped: int = 0
    emulator_stopped: bool = False
    processes_left: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.left and not self.processes_left


def reachable(settings: Settings) -> bool:
    """Is there anything to delete? Locally, only while the emulator runs (its resources die with it)."""
    return emulator.healthy(settings.endpoint_url or "") if settings.is_local else True


def teardown(settings: Settings, keep_bucket: bool = False, forget_wait: float = 0.0,
             progress: Callable[[str], None] | None = None) -> TeardownReport:
    """Delete every resource labkit made and stop its local processes, in the order above.

    ``forget_wait``: seconds to keep looking while SQS still lists deleted queues (it may for up to 60 s).
    """
    report = TeardownReport()
    state = read_state(settings.state_dir)
    live = reachable(settings)
    if live:
        _undeploy(Clients(settings), state, report, progress)
    workers = local.running(state.get("workers"))
    report.workers_stopped = sum(1 for w in workers if w.stop(30))
    if live:
        clients = Clients(settings)
        done = provision.teardown(clients, delete_bucket=not keep_bucket)
        report.deleted += done.deleted
        report.kept = done.kept
        report.left = [x for x in _left(clients, keep_bucket, forget_wait) if x not in report.kept]
    emu = local.running([state["emulator"]] if state.get("emulator") else [])
    stopped = local.down(settings)
    report.emulator_stopped = bool(emu) and stopped["emulator_stopped"]
    if live and not report.emulator_stopped and any(x.startswith("queue ") for x in report.deleted):
        local.record_queues_deleted(settings)  # the next `up` here waits until SQS takes the names back
    report.processes_left = [c.pid for c in workers + emu if c.alive()]
    return report


def _undeploy(clients: Clients, state: dict[str, Any], report: TeardownReport,
              progress: Callable[[str], None] | None) -> None:
    from labkit import fleet
    try:
        done = fleet.undeploy(clients, progress=progress)
    except AwsError as exc:
        # An account that never had a fleet and may not read EC2 or IAM, or an endpoint with no such API.
        if state.get("fleet") or exc.code not in NO_FLEET_API:
            raise
        report.notes.append(f"fleet not checked: {exc}")
        return
    report.deleted += done.deleted
    report.notes += done.notes


def _left(clients: Clients, keep_bucket: bool, wait: float) -> list[str]:
    bucket = f"bucket {clients.bucket_name()}"
    left: list[str] = []
    for _ in poll(5.0, wait):
        left = [x for x in provision.existing(clients) if not (keep_bucket and x == bucket)]
        if not left:
            break
    return left
