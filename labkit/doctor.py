"""``labkit doctor``: a preflight the day before a class. One row per check, each ``ok``, ``warn`` or ``blocker`` with
what was found and what to do:

- credentials: their kind, account and expiry (never a key); the region and its zones;
- permissions, per command (``up``, ``deploy``, ``undeploy``, ``teardown``; a student's with ``student=True``): the
  actions of labkit's own policies (:mod:`labkit.fleet.deployer`, :mod:`labkit.fleet.student`) put to IAM's policy
  simulator for the caller's user or role; where IAM refuses to simulate (AWS Academy) or cannot (an emulator),
  harmless probes instead: EC2's ``DryRun`` launch and security group, reads such as ``sqs:ListQueues``;
- the instance type in the region's zones, and the EC2 vCPU quota against what the planned fleet needs;
- the bucket name (ours, free, or another account's); AWS Academy's ``LabInstanceProfile``; versions.

::

    checks = run(Clients(settings), Plan(instance_type="t3.micro", workers=10))
    sys.exit(1 if blocked(checks) else 0)   # labkit.presenters.doctor_table(checks) shows them

It creates nothing. Its AWS calls are in :mod:`labkit.aws.permissions` and :mod:`labkit.aws.quotas`.
"""

from __future__ import annotations

import platform
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

from botocore.exceptions import EndpointConnectionError, NoCredentialsError

from labkit.aws import permissions, quotas, ssm
from labkit.aws.calls import is_denied, is_missing
from labkit.aws.clients import Clients
from labkit.aws.ec2 import Ec2
from labkit.aws.iam import Iam
from labkit.aws.storage import Bucket
from labkit.config import Settings, no_lab_hint
from labkit.errors import AwsError, CredentialsError, aws_error_code, credentials_line
from labkit.fleet import deployer, student
from labkit.fleet.instances import AMI_PARAMETERS
from labkit.fleet.roles import NO_ROLES_HINT
from labkit.fleet.spec import DEFAULT_INSTANCE_TYPE
from labkit.provision import NOT_OUR_BUCKET, bucket_taken

OK, WARN, BLOCKER = "ok", "warn", "blocker"
ACADEMY_PROFILE, ACADEMY_SESSION = "LabInstanceProfile", ":assumed-role/voclabs/"
LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
PACKAGES = ("boto3", "botocore", "moto")
NOT_SIMULATED_HERE = "not simulated here: the emulator does not implement iam:SimulatePrincipalPolicy"
ROLE_SIDS = ("WorkerRoleManage", "WorkerRolePass", "WorkerRoleRemove")  # not needed with --instance-profile
NOT_CHECKED = "not checked"
QUOTA_WHERE = (f"Service Quotas console > Amazon EC2 > '{quotas.STANDARD_QUOTA_NAME}' ({quotas.STANDARD_QUOTA}), "
               "in this region")


@dataclass(frozen=True)
class Check:
    """One row: what was checked, ``ok``/``warn``/``blocker``, what was found, what to do (empty when nothing)."""

    check: str
    status: str
    found: str
    todo: str = ""


@dataclass(frozen=True)
class Plan:
    """What the class will run: ``workers`` instances at most (an Auto Scaling group's MAX) of ``instance_type``,
    with an existing ``instance_profile`` or labkit's own role; ``student``: check a student's rights instead."""

    instance_type: str = DEFAULT_INSTANCE_TYPE
    workers: int = 1
    instance_profile: str | None = None
    student: bool = False


@dataclass
class _Ctx:
    clients: Clients
    plan: Plan
    arn: str

    @property
    def settings(self) -> Settings:
        return self.clients.settings

    @property
    def on_aws(self) -> bool:
        return self.settings.endpoint_url is None

    @cached_property
    def bucket(self) -> str:
        return self.clients.bucket_name()


def run(clients: Clients, plan: Plan | None = None) -> list[Check]:
    """Every check, in the order of the table; nothing is created or changed."""
    plan = plan or Plan()
    arn, first = _credentials(clients)
    checks = [first]
    if arn is not None:
        ctx = _Ctx(clients, plan, arn)
        steps: list[tuple[str, Callable[[_Ctx], Check | list[Check]]]] = [
            ("region", _region), ("permissions", _permissions)]
        if not plan.student:
            steps += [("instance type", _instance_type), ("EC2 vCPU quota", _quota)]
        steps += [("bucket", _bucket), ("AWS Academy", _academy)]
        for name, step in steps:
            checks += _guarded(name, step, ctx)
    return [*checks, _versions()]


def blocked(checks: list[Check]) -> bool:
    """True when any row is a blocker (``labkit doctor`` exits 1)."""
    return any(c.status == BLOCKER for c in checks)


def as_dicts(checks: list[Check]) -> list[dict[str, str]]:
    """The rows as JSON-ready dicts (``labkit doctor --json``)."""
    return [asdict(c) for c in checks]


def _guarded(name: str, step: Callable[[_Ctx], Check | list[Check]], ctx: _Ctx) -> list[Check]:
    """One step's rows; an AWS failure is that step's row, not the end of the table."""
    try:
        out = step(ctx)
    except CredentialsError as exc:
        return [Check(name, BLOCKER, "AWS refused the credentials", str(exc))]
    except AwsError as exc:
        todo = "your credentials may not make this check: check it by hand" if is_denied(exc) else \
            "run `labkit doctor` again; if it fails again, check it by hand"
        return [Check(name, WARN, f"could not check: {exc}", todo)]
    return out if isinstance(out, list) else [out]


# -- credentials and region ----------------------------------------------------------------------------------------
def _credentials(clients: Clients) -> tuple[str | None, Check]:
    """The caller's ARN (None when there is no way on) and the credentials' row."""
    try:
        info = clients.describe_credentials()
        who = permissions.caller(clients("sts"))
    except CredentialsError as exc:
        return None, Check("credentials", BLOCKER, "refused by AWS", str(exc))
    except NoCredentialsError:
        return None, Check("credentials", BLOCKER, "no AWS credentials found", no_lab_hint(clients.settings.state_dir))
    except EndpointConnectionError:
        return None, Check("credentials", BLOCKER, f"cannot reach {clients.settings.endpoint_url}",
                           "start the emulator: `labkit up`")
    found = f"{credentials_line(info)}; account {who['Account']}, {who['Arn']}"
    if clients.settings.endpoint_url is None and not info.get("refreshed") and info.get("kind") != "long-term keys":
        return who["Arn"], Check("credentials", WARN, found, "session keys end (AWS Academy's after about 4 h): "
                                 "renew them on the day, before class")
    return who["Arn"], Check("credentials", OK, found)


def _region(ctx: _Ctx) -> Check:
    zones = quotas.zones(ctx.clients("ec2"))
    where = ctx.settings.region + ("" if ctx.on_aws else f" (the emulator at {ctx.settings.endpoint_url})")
    if not zones:
        return Check("region", BLOCKER, f"{where}: no availability zone is available to you",
                     "choose another region: AWS_REGION=... (or --region)")
    return Check("region", OK, f"{where}: {len(zones)} zones ({', '.join(zones)})")


# -- permissions -----------------------------------------------------------------------------------------------------
def _policies(ctx: _Ctx) -> dict[str, dict[str, Any]]:
    """What each command needs (labkit's own generated policies), by command; a student's with ``plan.student``."""
    s, account = ctx.settings, ctx.clients.account_id()
    if ctx.plan.student:
        return {"student": student.student_policy(s, ctx.bucket, account)}
    out = {}
    for command in deployer.COMMANDS:
        doc = deployer.deployer_policy(s, ctx.bucket, account, commands=[command])
        if ctx.plan.instance_profile:  # an existing profile: labkit makes, passes and deletes no role of its own
            doc["Statement"] = [st for st in doc["Statement"] if st["Sid"] not in ROLE_SIDS]
        out[command] = doc
    return out


def _permissions(ctx: _Ctx) -> list[Check]:
    policies = _policies(ctx)
    source = permissions.principal(ctx.arn)
    decided: dict[str, dict[str, str]] = {}
    reason = "" if ctx.on_aws else NOT_SIMULATED_HERE
    if not reason:
        try:
            decided = {name: permissions.simulate(ctx.clients("iam"), source, doc["Statement"])
                       for name, doc in policies.items()}
        except AwsError as exc:
            if not (is_denied(exc) or is_missing(exc)):
                raise
            reason = f"not simulated: simulation refused ({permissions.refusal(exc)})" if is_denied(exc) else \
                f"not simulated: IAM does not know {source} ({aws_error_code(exc)})"
    probes = _probes(ctx)
    return [_permission_row(ctx, name, doc, decided.get(name), reason, probes.get(name, []))
            for name, doc in policies.items()]


def _permission_row(ctx: _Ctx, name: str, doc: dict[str, Any], decided: dict[str, str] | None, reason: str,
                    probes: list[tuple[str, str, Callable[[], str | None]]]) -> Check:
    label = f"permissions: {name}"
    if decided is not None:
        denied = sorted(a for a, d in decided.items() if d != "allowed")
        if denied:
            return Check(label, BLOCKER, f"denied (simulated): {', '.join(denied)}", _grant(ctx, name, denied))
        return Check(label, OK, f"all {len(decided)} actions allowed (simulated for {permissions.principal(ctx.arn)})")
    results = [(action, how, probe()) for action, how, probe in probes]
    refused = [(a, how, code) for a, how, code in results if code not in (None, NOT_CHECKED)]
    allowed = [f"{a} ({how})" for a, how, code in results if code is None]
    total = len({a for st in doc["Statement"] for a in st["Action"]})
    rest = f"{reason}; the other {total - len(allowed) - len(refused)} of {total} actions not checked"
    if refused:
        said = ", ".join(f"{a} ({how}: {code})" for a, how, code in refused)
        return Check(label, BLOCKER, f"denied: {said}; {rest}", _grant(ctx, name, [a for a, _, _ in refused]))
    return Check(label, OK, f"allowed: {', '.join(allowed) or 'nothing probed'}; {rest}")


def _grant(ctx: _Ctx, name: str, denied: list[str]) -> str:
    """What to do about denied actions."""
    if name == "student":
        return "the instructor attaches `labkit policy student` to the students' IAM group"
    todo = f"attach `labkit policy deployer --command {name}` to {permissions.principal(ctx.arn)}"
    if any(a.startswith("iam:") for a in denied) and not ctx.plan.instance_profile:
        todo += f"; or {NO_ROLES_HINT}"
    return todo


def _probes(ctx: _Ctx) -> dict[str, list[tuple[str, str, Callable[[], str | None]]]]:
    """Harmless calls that show a refusal, by command: (action, how, call -> None or the refusal's code)."""
    c, s = ctx.clients, ctx.settings
    url = ("sqs:GetQueueUrl", "read", lambda: permissions.probe(c.sqs, "get_queue_url", QueueName=s.request_queue))
    listing = ("sqs:ListQueues", "read",
               lambda: permissions.probe(c.sqs, "list_queues", QueueNamePrefix=s.request_queue))
    describe = ("ec2:DescribeInstances", "read",
                lambda: permissions.probe(c("ec2"), "describe_instances", MaxResults=5))
    group = ("ec2:CreateSecurityGroup", "dry run",
             lambda: permissions.probe(c("ec2"), "create_security_group", DryRun=True, GroupName="labkit-doctor",
                                       Description="labkit doctor: a dry run, nothing is made"))
    launch = ("ec2:RunInstances", "dry run", lambda: _dry_launch(ctx))
    return {"up": [url], "deploy": [launch, group, describe], "undeploy": [describe], "teardown": [listing],
            "student": [listing, url]}


def _dry_launch(ctx: _Ctx) -> str | None:
    """RunInstances with DryRun=True: the current image, the planned type (and profile: EC2 then checks that the
    caller may pass its role)."""
    try:
        archs = Ec2(ctx.clients("ec2")).architectures(ctx.plan.instance_type) or ["x86_64"]
        image = ssm.parameter(ctx.clients("ssm"), AMI_PARAMETERS["x86_64" if "x86_64" in archs else "arm64"])
    except AwsError:
        return NOT_CHECKED  # no image to launch: the instance type row or the deploy itself will say why
    extra = {"IamInstanceProfile": {"Name": ctx.plan.instance_profile}} if ctx.plan.instance_profile else {}
    return permissions.probe(ctx.clients("ec2"), "run_instances", DryRun=True, ImageId=image, MinCount=1, MaxCount=1,
                             InstanceType=ctx.plan.instance_type, **extra)


# -- capacity --------------------------------------------------------------------------------------------------------
def _instance_type(ctx: _Ctx) -> Check:
    ec2, kind, region = ctx.clients("ec2"), ctx.plan.instance_type, ctx.settings.region
    per = quotas.vcpus(ec2, kind)
    if per is None:
        return Check("instance type", BLOCKER, f"{kind} does not exist in {region}",
                     "choose another type (--instance-type; t3.micro is labkit's default)")
    offered, zones = quotas.offered_in(ec2, kind), quotas.zones(ec2)
    if not offered:
        return Check("instance type", BLOCKER, f"{kind} is offered in none of {region}'s zones",
                     "choose another type (--instance-type) or region")
    return Check("instance type", OK, f"{kind}: {per} vCPUs; offered in {len(offered)} of {len(zones)} zones "
                 f"({', '.join(offered)})")


def _quota(ctx: _Ctx) -> Check:
    name, p, ec2 = "EC2 vCPU quota", ctx.plan, ctx.clients("ec2")
    per = quotas.vcpus(ec2, p.instance_type)
    if per is None:
        return Check(name, WARN, f"{NOT_CHECKED}: the instance type is unknown")
    need = per * p.workers
    plan = f"{p.workers} x {p.instance_type}, {per} vCPUs each"
    if not quotas.is_standard(p.instance_type):
        return Check(name, WARN, f"{NOT_CHECKED}: {p.instance_type} counts against another quota than "
                     f"{quotas.STANDARD_QUOTA}", f"look it up in the Service Quotas console: {need} vCPUs needed")
    try:
        value = quotas.standard_vcpu_quota(ctx.clients("service-quotas"))
    except AwsError as exc:
        if not is_denied(exc):
            raise
        return Check(name, WARN, f"could not read the quota ({permissions.refusal(exc)}); the fleet needs {need} vCPUs "
                     f"({plan})",
                     f"look it up: {QUOTA_WHERE}")
    if value is None:
        return Check(name, OK if not ctx.on_aws else WARN, f"Service Quotas knows no {quotas.STANDARD_QUOTA} here"
                     + (" (the emulator has no quotas)" if not ctx.on_aws else ""),
                     "" if not ctx.on_aws else f"look it up: {QUOTA_WHERE}")
    running = quotas.running_standard_vcpus(ec2)
    found = f"the fleet needs {need} vCPUs ({plan}); the quota is {value:g}, {running} running now"
    if need > value:
        return Check(name, BLOCKER, found, f"ask for an increase ({QUOTA_WHERE}; it can take days), or plan fewer "
                     "workers or a smaller type (--workers, --instance-type)")
    if need > value - running:
        return Check(name, WARN, found, "stop other instances before class, or ask for an increase "
                     f"({QUOTA_WHERE})")
    return Check(name, OK, found)


# -- bucket, AWS Academy, versions -----------------------------------------------------------------------------------
def _bucket(ctx: _Ctx) -> Check:
    name = ctx.bucket
    try:
        present = Bucket(ctx.clients.s3, name).present()
    except AwsError as exc:
        if exc.code in NOT_OUR_BUCKET and bucket_taken(ctx.clients, name, exc):
            return Check("bucket", BLOCKER, f"{name}: taken by another AWS account (S3 answered {exc.code})",
                         "set LABKIT_BUCKET to a name of your own and check again")
        if exc.code in NOT_OUR_BUCKET and ctx.plan.student:
            return Check("bucket", OK, f"{name}: this account's; your credentials list only your own uploads "
                         "(`labkit policy student`), and read results by key")
        if exc.code in NOT_OUR_BUCKET:
            return Check("bucket", BLOCKER, f"{name}: your credentials may not look at it (S3 refused "
                         f"s3:ListBucket, {exc.code})", "attach `labkit policy deployer --command up` (or run as "
                         "the instructor) and check again")
        if exc.code == "OperationAborted":
            return Check("bucket", BLOCKER, f"{name}: S3 is still freeing the name (OperationAborted)",
                         "wait (it can take hours), or set LABKIT_BUCKET to a name of your own")
        raise
    if present:
        return Check("bucket", OK, f"{name}: there, and this account's")
    if ctx.plan.student:
        return Check("bucket", BLOCKER, f"{name} does not exist", "ask your instructor to run `labkit up`")
    todo = "run `labkit up` the day before: a name deleted in the last hours may still be held by S3, and only " \
        "creating the bucket tells" if ctx.on_aws else ""
    return Check("bucket", OK, f"{name}: free (`labkit up` creates it)", todo)


def _academy(ctx: _Ctx) -> Check:
    name, session = "AWS Academy", ACADEMY_SESSION in ctx.arn
    try:
        profile = Iam(ctx.clients("iam")).profile(ACADEMY_PROFILE)
    except AwsError as exc:
        if not is_denied(exc):
            raise
        if session:
            return Check(name, WARN, f"an AWS Academy session that may not read IAM ({permissions.refusal(exc)})",
                         f"deploy with --instance-profile {ACADEMY_PROFILE}")
        return Check(name, OK, f"could not look for {ACADEMY_PROFILE} ({permissions.refusal(exc)}): needed only in AWS "
                     "Academy")
    if profile is None:
        return Check(name, WARN if session else OK, f"no {ACADEMY_PROFILE}: " + (
            "an AWS Academy session without it" if session else "not an AWS Academy lab; deploy makes its own role"),
            "start the lab in AWS Academy (its 'Start Lab' makes LabRole and LabInstanceProfile)" if session else "")
    roles = [r["RoleName"] for r in profile.get("Roles", [])]
    if not roles:
        return Check(name, WARN, f"{ACADEMY_PROFILE} holds no role", "the workers would have no credentials: "
                     "restart the lab in AWS Academy")
    found = f"AWS Academy: {ACADEMY_PROFILE} (role {', '.join(roles)}) is there"
    if ctx.plan.instance_profile == ACADEMY_PROFILE:
        return Check(name, OK, found)
    return Check(name, OK, found, f"deploy with `labkit deploy --instance-profile {ACADEMY_PROFILE}` (Academy "
                 "accounts may not create roles); check that with `labkit doctor --instance-profile "
                 f"{ACADEMY_PROFILE}`")


def _locked(lock: Path) -> dict[str, str]:
    """Package -> version pinned in requirements.lock ({} without one: an installed labkit)."""
    try:
        text = lock.read_text()
    except OSError:
        return {}
    return {m[1].lower(): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.M)}


def _versions(lock: Path = LOCK) -> Check:
    pinned = _locked(lock)
    parts, off = [f"Python {platform.python_version()}"], []
    for pkg in PACKAGES:
        try:
            have = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            parts.append(f"{pkg} not installed")
            continue
        want = pinned.get(pkg)
        parts.append(f"{pkg} {have}" + (f" (the lock says {want})" if want and want != have else ""))
        if want and want != have:
            off.append(pkg)
    parts.append(f"labkit {metadata.version('labkit')}")
    if not pinned:
        parts.append("no requirements.lock to compare with")
    if off:
        return Check("versions", WARN, ", ".join(parts), "install the locked versions: `make venv` (or pip install "
                     "--require-hashes -r requirements.lock)")
    return Check("versions", OK, ", ".join(parts))
