"""The one ordered teardown, used by ``labkit teardown``, the notebook ``99_teardown`` and its panel:

    1. the EC2 fleet (group, alarms, instances, launch template, security group, role and profile, wheels)
    2. the local workers (so that none is still writing into the bucket while it is deleted)
    3. the queues (dead-letter queues too, and reply queues idle for an hour: those of clients still
       running stay, see :data:`labkit.provision.REPLY_IDLE_AGE`)
    4. every object in the bucket; the bucket itself, empty, stays (it costs nothing, and S3 may hold a deleted
       bucket's name for hours: the next `up` would fail) unless ``delete_bucket`` (``teardown --all``);
       ``keep_bucket`` keeps it and its objects
    5. the emulator, and the state file's record of it all

then a look at what is left (the fleet included). ``labkit down`` is the part of it that stops this
machine's processes (:func:`down`). Nothing here is specific to a front end: the CLI and the widgets present
the :class:`TeardownReport`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labkit import endpoints, local, provision
from labkit.aws.clients import Clients
from labkit.config import Settings, read_state
from labkit.errors import AwsError
from labkit.processes import stop_all
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
    bucket_kept: str | None = None  # the emptied bucket teardown keeps (not "left": an empty bucket costs nothing)
    workers_stopped: int = 0
    emulator_stopped: bool = False
    processes_left: list[int] = field(default_factory=list)
    # The EC2 fleet after teardown: what is still there (also in ``left``); None when it could not be
    # looked at (an endpoint with no EC2 API, an account that may not read EC2: nothing was deployed there).
    fleet_left: list[str] | None = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.left and not self.processes_left

    def fleet_line(self) -> str:
        """The fleet in one line, for "what is left"."""
        if self.fleet_left is None:
            return "not checked: no EC2 API here (nothing can have been deployed)"
        return ", ".join(self.fleet_left) if self.fleet_left else "none left"


def reachable(settings: Settings) -> bool:
    """Is there anything to delete? Locally, only while an emulator answers (its resources die with it)."""
    return endpoints.reachable(settings.endpoint_url) if settings.endpoint_url else True


def teardown(settings: Settings, keep_bucket: bool = False, forget_wait: float = 0.0,
             progress: Callable[[str], None] | None = None, delete_bucket: bool = False) -> TeardownReport:
    """Delete every resource labkit made that costs anything, and stop its local processes, in the order above
    (``delete_bucket``: the emptied bucket too).

    ``forget_wait``: seconds to keep looking while SQS still lists deleted queues (it may for up to 60 s).
    """
    report = TeardownReport()
    state = read_state(settings.state_dir)
    live = reachable(settings)
    if live:
        _undeploy(Clients(settings), state, report, progress)
    workers = local.running(state.get("workers"))
    report.workers_stopped = sum(stop_all(workers, 30))
    if live:
        clients = Clients(settings)
        mode = "keep" if keep_bucket else "delete" if delete_bucket else "empty"
        done = provision.delete_resources(clients, bucket=mode)
        report.deleted += done.deleted
        report.kept = done.kept
        report.fleet_left = fleet_resources(clients)
        report.left = (report.fleet_left or []) + [x for x in _left(clients, mode, forget_wait)
                                                   if x not in report.kept]
        if mode == "empty" and done.bucket and not any(x.startswith(f"bucket {done.bucket}") for x in report.left):
            report.bucket_kept = done.bucket
    emu = local.running([state["emulator"]] if state.get("emulator") else [])
    stopped = local.stop(settings)
    report.emulator_stopped = bool(emu) and stopped["emulator_stopped"]
    if report.emulator_stopped:
        report.bucket_kept = None  # it went with the emulator
    ours = {f"queue {name}" for name in provision.queue_attributes(settings)}
    if live and not report.emulator_stopped and ours & set(report.deleted):
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


def fleet_resources(clients: Clients) -> list[str] | None:
    """The EC2 fleet's resources that exist now (:func:`labkit.fleet.fleet_leftovers`; [] when none); None when
    EC2 cannot be looked at here (:data:`NO_FLEET_API`)."""
    from labkit import fleet
    try:
        return fleet.fleet_leftovers(clients)
    except AwsError as exc:
        if exc.code in NO_FLEET_API:
            return None
        raise


def leftovers(settings: Settings) -> list[str]:
    """Everything of labkit's that exists now: the fleet, the queues (dead-letter and reply queues too) and
    the bucket; [] when the (local) emulator does not run."""
    if not reachable(settings):
        return []
    clients = Clients(settings)
    return (fleet_resources(clients) or []) + provision.existing(clients)


def down(settings: Settings) -> dict[str, Any]:
    """``labkit down``: the part of the teardown that stops this machine's processes (local workers, the
    emulator) and deletes reply queues left by gone clients (:func:`labkit.local.stop`); queues, bucket and
    fleet stay. ``notes`` says what keeps running elsewhere: an EC2 fleet deployed on AWS bills until
    ``undeploy`` or ``teardown``."""
    state = read_state(settings.state_dir)
    out = local.stop(settings)
    out["notes"] = []
    record = state.get("fleet")
    if record and not state.get("local") and reachable(settings):
        try:
            running = fleet_resources(Clients(settings))
        except AwsError as exc:
            out["notes"].append(f"could not look at the EC2 fleet {record.get('name', '')}: {exc}")
            return out
        if running:
            out["notes"].append(f"the EC2 fleet {record.get('name', '')} keeps running (and billing): "
                                f"{', '.join(running)}; `labkit undeploy` stops it, `labkit teardown` deletes "
                                "everything")
    return out


def _left(clients: Clients, mode: str, wait: float) -> list[str]:
    bucket = f"bucket {clients.bucket_name()}"
    left: list[str] = []
    for _ in poll(5.0, wait):
        left = [x for x in provision.existing(clients, bucket=mode) if not (mode == "keep" and x.startswith(bucket))]
        if not left:
            break
    return left
