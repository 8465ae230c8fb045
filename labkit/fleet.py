"""The worker fleet on EC2: :func:`deploy`, :func:`fleet_status`, :func:`undeploy`.

This is the only module that talks to EC2, IAM, SSM, Auto Scaling and CloudWatch. What ``deploy`` makes:

- the project's wheel, uploaded to ``artifacts/labkit/<build>/`` in the bucket;
- an IAM role and instance profile (``labkit-worker-…``, path ``/labkit/``) with the inline policy of
  :func:`labkit.iam.worker_policy`, unless ``instance_profile`` names an existing profile to use;
- a security group with no inbound rule (SSH only with ``ssh_cidr``) and outbound HTTPS only;
- either ``workers`` instances, or (``autoscale=(min, max)``) a launch template, an Auto Scaling group
  and two CloudWatch alarms on the request queues' ``ApproximateNumberOfMessagesVisible``: a backlog
  adds instances (step scaling), 15 idle minutes bring the group back to ``min``;
- user data: ``worker/deploy/bootstrap.sh`` with its settings filled in (names and region, no secret).

Everything carries the tag ``labkit:fleet=<bucket>`` and deterministic names, and the state file
records it under ``fleet``; ``undeploy`` finds it all from the names and tags, state file or not.
Deploying twice converges on the request: it never doubles the fleet.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import ipaddress
import json
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError

from labkit import iam, provision
from labkit.aws.clients import Clients
from labkit.aws.storage import Bucket
from labkit.config import ARTIFACTS_PREFIX, Settings, read_state, update_state
from labkit.errors import AwsError, ConfigError

FLEET_TAG = "labkit:fleet"
MODE_TAG = "labkit:fleet-mode"
BUILD_TAG = "labkit:build"
IAM_PATH = "/labkit/"
POLICY_NAME = "labkit-worker"
WHEEL_PREFIX = ARTIFACTS_PREFIX + "labkit/"
DEFAULT_INSTANCE_TYPE = "t3.micro"
AMI_PARAMETERS = {
    "x86_64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64",
    "arm64": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64",
}
MAX_INSTANCES = 100  # a typo guard: `--workers 1000` is more likely a mistake than a plan
USER_DATA_LIMIT = 16 * 1024  # EC2's limit, before base64
# Outbound HTTPS is all a worker needs (SQS, S3, SSM, the package repositories). DNS, the instance
# metadata service and time sync are link-local services that security groups do not filter.
EGRESS = [("tcp", 443, 443, "0.0.0.0/0")]
WARMUP = 180  # seconds from launch to a serving worker (dnf, venv, wheels): an estimate, not a measurement
IDLE_MINUTES = 15
# Scale out by backlog (visible requests, both queues): 1-9 → +1 instance, 10-99 → +2, 100 or more → +4.
SCALE_OUT_STEPS = [(0, 9, 1), (9, 99, 2), (99, None, 4)]
LIVE = ["pending", "running"]
NOT_TERMINATED = ["pending", "running", "stopping", "stopped", "shutting-down"]
SETTINGS_LINE = re.compile(r'^: "\$\{([A-Z0-9_]+):=[^}]*\}"$', re.M)
SAFE_VALUE = re.compile(r"^[A-Za-z0-9._:/@+=,-]*$")
Progress = Callable[[str], None]
# labkit and worker are siblings, in a checkout as in site-packages. (Paths from this file rather than
# importlib.resources: an editable install can make ``worker`` look like a namespace package.)
PACKAGES_ROOT = Path(__file__).resolve().parent.parent
DEPLOY_DIR = PACKAGES_ROOT / "worker" / "deploy"


# -- what to deploy --------------------------------------------------------------------------------

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
        if not re.fullmatch(r"[a-z0-9]+[a-z0-9-]*\.[a-z0-9]+", self.instance_type):
            raise ConfigError(f"{self.instance_type!r} is not an EC2 instance type (like t3.micro)")
        if self.instance_profile is not None and not re.fullmatch(r"[\w+=,.@-]{1,128}", self.instance_profile):
            raise ConfigError(f"{self.instance_profile!r} is not a valid instance profile name")
        if self.ssh_cidr is not None:
            network = ssh_network(self.ssh_cidr)
            if not self.key_name:
                raise ConfigError("--ssh-cidr opens SSH, which needs a key pair: add --key-name NAME "
                                  "(or leave SSH closed and use Session Manager)")
            if network.prefixlen == 0 and not self.allow_open_ssh:
                raise ConfigError(f"refusing to open SSH to the whole internet ({self.ssh_cidr}): give your own "
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


@dataclass(frozen=True)
class FleetNames:
    """Deterministic names of everything a fleet consists of, from the bucket's name."""

    fleet: str  # the tag value: the bucket's name

    @property
    def stem(self) -> str:
        """``labkit-worker-<bucket without labkit->``, shortened with a hash past IAM's 64 characters."""
        base = self.fleet[len("labkit-"):] if self.fleet.startswith("labkit-") else self.fleet
        stem = f"labkit-worker-{base}"
        if len(stem) > 64:
            stem = stem[:55] + "-" + hashlib.sha256(self.fleet.encode()).hexdigest()[:8]
        return stem

    @property
    def role(self) -> str:
        return self.stem

    @property
    def profile(self) -> str:
        return self.stem

    @property
    def security_group(self) -> str:
        return self.stem

    @property
    def launch_template(self) -> str:
        return self.stem

    @property
    def group(self) -> str:
        return self.stem

    @property
    def alarm_backlog(self) -> str:
        return f"{self.stem}-backlog"

    @property
    def alarm_idle(self) -> str:
        return f"{self.stem}-idle"

    policy_out = "labkit-scale-out"
    policy_in = "labkit-scale-in"


@dataclass
class FleetReport(provision.Report):
    """What :func:`deploy` or :func:`undeploy` did; ``fleet`` is the record written to the state file."""

    fleet: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# -- the wheel -------------------------------------------------------------------------------------

def _package_files(package: str) -> list[tuple[str, Path]]:
    """(archive name, path) of a package's modules, plus ``worker/deploy/*`` (package data)."""
    root = PACKAGES_ROOT / package
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root.parent).as_posix()
        if not path.is_file() or "__pycache__" in path.parts or path.name.startswith("."):
            continue
        if path.suffix == ".py" or rel.startswith("worker/deploy/"):
            out.append((rel, path))
    return out


def build_wheel(dest_dir: str | Path) -> Path:
    """Package the installed labkit (``labkit`` and ``worker``, with the installed metadata) as a wheel.

    Works the same from a source checkout (editable install) and from an installed wheel, needs no
    network and writes nothing outside ``dest_dir``. The archive is reproducible: the same sources
    give the same bytes, hence the same SHA-256 (which names the build).
    """
    # The installed dist-info first: a checkout also holds a labkit.egg-info (from `pip install -e .`)
    # that may be older than the installed metadata.
    dists = sorted(importlib.metadata.distributions(name="labkit"), key=lambda d: not d.read_text("METADATA"))
    metadata = next((d.read_text("METADATA") or d.read_text("PKG-INFO") for d in dists), None)
    if not metadata:
        raise ConfigError("labkit is not installed as a package (pip install -e . in the checkout): deploy "
                          "ships the installed package to the instances")
    dist = dists[0]
    version = dist.version
    info = f"labkit-{version}.dist-info"
    entries: list[tuple[str, bytes, int]] = []
    for package in ("labkit", "worker"):
        for name, path in _package_files(package):
            mode = 0o755 if os.access(path, os.X_OK) and path.suffix == ".sh" else 0o644
            entries.append((name, path.read_bytes(), mode))
    entries.append((f"{info}/METADATA", metadata.encode(), 0o644))
    entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: labkit.fleet\nRoot-Is-Purelib: true\n"
                                     b"Tag: py3-none-any\n", 0o644))
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        entries.append((f"{info}/entry_points.txt", entry_points.encode(), 0o644))
    entries.append((f"{info}/top_level.txt", b"labkit\nworker\n", 0o644))
    record = [f"{name},sha256={_b64_digest(data)},{len(data)}" for name, data, _ in entries]
    record.append(f"{info}/RECORD,,")
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode(), 0o644))

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"labkit-{version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = (0o100000 | mode) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
    return target


def _b64_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def upload_wheel(clients: Clients, wheel: Path) -> tuple[str, str, bool]:
    """Put the wheel under ``artifacts/labkit/<build>/`` unless it is there; returns (key, sha256, uploaded)."""
    data = wheel.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = f"{WHEEL_PREFIX}{sha[:16]}/{wheel.name}"
    bucket = Bucket(clients.s3, clients.bucket_name())
    if bucket.exists(key):
        return key, sha, False
    bucket.put(key, data, "application/zip")
    return key, sha, True


# -- user data -------------------------------------------------------------------------------------

def bootstrap_template() -> str:
    """The bootstrap script as shipped (``worker/deploy/bootstrap.sh``)."""
    return (DEPLOY_DIR / "bootstrap.sh").read_text()


def user_data_values(settings: Settings, bucket: str, wheel_key: str, wheel_sha256: str,
                     concurrency: int = 4) -> dict[str, str]:
    """The bootstrap script's settings for this fleet: names and region, never a credential."""
    return {
        "AWS_REGION": settings.region, "LABKIT_BUCKET": bucket,
        "LABKIT_REQUEST_QUEUE": settings.request_queue, "LABKIT_RESPONSE_QUEUE": settings.response_queue,
        "LABKIT_IMAGE_INBOX": settings.image_inbox, "LABKIT_IMAGE_OUTBOX": settings.image_outbox,
        "LABKIT_WHEEL_KEY": wheel_key, "LABKIT_WHEEL_SHA256": wheel_sha256,
        "LABKIT_CONCURRENCY": str(concurrency), "LABKIT_ENDPOINT_URL": settings.endpoint_url or "",
    }


def render_user_data(values: dict[str, str]) -> str:
    """The bootstrap script with its settings lines (``: "${NAME:=…}"``) filled in from ``values``."""
    template = bootstrap_template()
    known = set(SETTINGS_LINE.findall(template))
    missing = set(values) - known
    if missing:
        raise ConfigError(f"bootstrap.sh has no settings line for {', '.join(sorted(missing))}")
    for name, value in values.items():
        if not SAFE_VALUE.match(value):
            raise ConfigError(f"{name}={value!r} has characters that cannot go into the bootstrap script")

    def fill(m: re.Match[str]) -> str:
        name = m.group(1)
        return f': "${{{name}:={values[name]}}}"' if name in values else m.group(0)

    text = SETTINGS_LINE.sub(fill, template)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise ConfigError(f"the user data is {len(text.encode())} bytes, over EC2's limit of {USER_DATA_LIMIT}")
    return text


# -- helpers ---------------------------------------------------------------------------------------

def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _denied(exc: ClientError) -> bool:
    return _code(exc) in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation")


def _tags(names: FleetNames, **extra: str) -> list[dict[str, str]]:
    return [{"Key": FLEET_TAG, "Value": names.fleet}, *({"Key": k, "Value": v} for k, v in extra.items())]


def _wait(check: Callable[[], bool], timeout: float, interval: float, what: str, progress: Progress | None) -> None:
    """Poll ``check`` until true; :class:`AwsError` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    said = False
    while not check():
        if time.monotonic() > deadline:
            raise AwsError(f"timed out after {timeout:.0f} s waiting for {what}")
        if progress and not said:
            progress(f"waiting for {what}")
            said = True
        time.sleep(interval)


def _retry_iam_propagation(fn: Callable[[], Any], what: str, timeout: float, interval: float) -> Any:
    """Call ``fn``, retrying while a new instance profile has not reached EC2 yet (IAM is eventually
    consistent: a profile made seconds ago is often refused once or twice)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except ClientError as exc:
            msg = str(exc).lower()
            propagating = _code(exc) in ("InvalidParameterValue", "ValidationError") and (
                "instance profile" in msg or "iaminstanceprofile" in msg)
            if not propagating or time.monotonic() > deadline:
                raise AwsError.from_client_error(exc, what) from exc
            time.sleep(interval)


@dataclass
class _Ctx:
    """One deploy or undeploy run: clients, names, report and pacing."""

    clients: Clients
    names: FleetNames
    report: FleetReport
    progress: Progress | None

    @property
    def interval(self) -> float:
        # The emulator answers at once; AWS needs seconds between polls.
        return 0.1 if self.clients.settings.is_local else 5.0

    def __call__(self, service: str) -> Any:
        return self.clients(service)

    def say(self, text: str) -> None:
        if self.progress:
            self.progress(text)


# -- IAM -------------------------------------------------------------------------------------------

def _ensure_role(ctx: _Ctx, policy: dict[str, Any]) -> None:
    client, name = ctx("iam"), ctx.names.role
    trust = iam.trust_policy(ctx.clients.settings.region)
    try:
        role = client.get_role(RoleName=name)["Role"]
    except ClientError as exc:
        if _code(exc) != "NoSuchEntity":
            raise AwsError.from_client_error(exc, f"looking up role {name} (where roles cannot be created, "
                                             "pass --instance-profile NAME)") from exc
        try:
            client.create_role(Path=IAM_PATH, RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                               Description="labkit worker instances: their queues and bucket, nothing else",
                               Tags=_tags(ctx.names))
            client.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))
        except ClientError as exc2:
            raise AwsError.from_client_error(exc2, f"creating role {name} (where roles cannot be created, "
                                             "pass --instance-profile NAME)") from exc2
        ctx.report.created.append(f"role {name} (policy {POLICY_NAME})")
        return
    if not any(t["Key"] == FLEET_TAG and t["Value"] == ctx.names.fleet for t in role.get("Tags", [])):
        raise ConfigError(f"a role named {name} exists but is not tagged {FLEET_TAG}={ctx.names.fleet}: "
                          "labkit will not take it over")
    changed = []
    if _normal_doc(role.get("AssumeRolePolicyDocument")) != _normal_doc(trust):
        client.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
        changed.append("trust policy")
    try:
        current = client.get_role_policy(RoleName=name, PolicyName=POLICY_NAME)["PolicyDocument"]
    except ClientError as exc:
        if _code(exc) != "NoSuchEntity":
            raise AwsError.from_client_error(exc, f"reading the policy of role {name}") from exc
        current = None
    if _normal_doc(current) != _normal_doc(policy):
        client.put_role_policy(RoleName=name, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))
        changed.append(f"policy {POLICY_NAME}")
    (ctx.report.updated if changed else ctx.report.unchanged).append(
        f"role {name}" + (f" ({', '.join(changed)})" if changed else ""))


def _normal_doc(doc: Any) -> Any:
    if doc is None:
        return None
    if isinstance(doc, str):
        doc = json.loads(unquote(doc) if doc.startswith("%") else doc)
    return json.dumps(doc, sort_keys=True)


def _ensure_profile(ctx: _Ctx) -> None:
    client, name, role = ctx("iam"), ctx.names.profile, ctx.names.role
    try:
        profile = client.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
        created = False
    except ClientError as exc:
        if _code(exc) != "NoSuchEntity":
            raise AwsError.from_client_error(exc, f"looking up instance profile {name}") from exc
        profile = client.create_instance_profile(InstanceProfileName=name, Path=IAM_PATH,
                                                 Tags=_tags(ctx.names))["InstanceProfile"]
        created = True
    attached = [r["RoleName"] for r in profile.get("Roles", [])]
    for other in attached:
        if other != role:
            client.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=other)
    if role not in attached:
        client.add_role_to_instance_profile(InstanceProfileName=name, RoleName=role)
    if created:
        ctx.report.created.append(f"instance profile {name}")
    elif role not in attached:
        ctx.report.updated.append(f"instance profile {name} (role attached)")
    else:
        ctx.report.unchanged.append(f"instance profile {name}")


def _check_existing_profile(ctx: _Ctx, name: str) -> None:
    try:
        profile = ctx("iam").get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as exc:
        if _denied(exc):  # classroom accounts often cannot read IAM: trust the name, EC2 will check it
            ctx.report.notes.append(f"could not read instance profile {name} (access denied): using it as given")
            return
        if _code(exc) == "NoSuchEntity":
            raise ConfigError(f"there is no instance profile named {name!r}") from exc
        raise AwsError.from_client_error(exc, f"looking up instance profile {name}") from exc
    if not profile.get("Roles"):
        raise ConfigError(f"instance profile {name!r} has no role: the workers would have no credentials")
    ctx.report.unchanged.append(f"instance profile {name} (existing, not managed by labkit)")


# -- network ---------------------------------------------------------------------------------------

def _default_vpc(ctx: _Ctx) -> tuple[str, list[str]]:
    """The default VPC and its default subnets (one per availability zone)."""
    ec2 = ctx("ec2")
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ConfigError(f"this account has no default VPC in {ctx.clients.settings.region}: create one "
                          "(aws ec2 create-default-vpc) and deploy again")
    vpc = vpcs[0]["VpcId"]
    subnets = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]},
                                            {"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    return vpc, sorted(s["SubnetId"] for s in subnets)


def _find_security_group(ctx: _Ctx) -> dict[str, Any] | None:
    groups = ctx("ec2").describe_security_groups(Filters=[
        {"Name": "group-name", "Values": [ctx.names.security_group]},
        {"Name": f"tag:{FLEET_TAG}", "Values": [ctx.names.fleet]}])["SecurityGroups"]
    return groups[0] if groups else None


def _rules(perms: list[dict[str, Any]]) -> set[tuple[str, int | None, int | None, str]]:
    out = set()
    for p in perms:
        for r in p.get("IpRanges", []):
            out.add((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIp"]))
        for r in p.get("Ipv6Ranges", []):
            out.add((p["IpProtocol"], p.get("FromPort"), p.get("ToPort"), r["CidrIpv6"]))
    return out


def _perms(rules: set[tuple[str, int | None, int | None, str]], description: str) -> list[dict[str, Any]]:
    perms = []
    for proto, lo, hi, cidr in sorted(rules, key=str):
        p: dict[str, Any] = {"IpProtocol": proto}
        if lo is not None:
            p["FromPort"], p["ToPort"] = lo, hi
        if ":" in cidr:
            p["Ipv6Ranges"] = [{"CidrIpv6": cidr, "Description": description}]
        else:
            p["IpRanges"] = [{"CidrIp": cidr, "Description": description}]
        perms.append(p)
    return perms


def _ensure_security_group(ctx: _Ctx, spec: FleetSpec, vpc: str) -> str:
    ec2, name = ctx("ec2"), ctx.names.security_group
    group = _find_security_group(ctx)
    if group is None:
        gid = ec2.create_security_group(
            GroupName=name, VpcId=vpc,
            Description="labkit workers: no inbound rule (use Session Manager), outbound HTTPS only",
            TagSpecifications=[{"ResourceType": "security-group", "Tags": _tags(ctx.names, Name=name)}])["GroupId"]
        group = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
        ctx.report.created.append(f"security group {name} ({gid})")
        fresh = True
    else:
        gid, fresh = group["GroupId"], False
    want_in = {("tcp", 22, 22, spec.ssh_cidr)} if spec.ssh_cidr else set()
    have_in, have_out = _rules(group.get("IpPermissions", [])), _rules(group.get("IpPermissionsEgress", []))
    want_out = set(EGRESS)
    changes = []
    if have_in - want_in:
        ec2.revoke_security_group_ingress(GroupId=gid, IpPermissions=_perms(have_in - want_in, ""))
        changes.append("inbound rule removed")
    if want_in - have_in:
        ec2.authorize_security_group_ingress(GroupId=gid, IpPermissions=_perms(want_in - have_in, "labkit: SSH"))
        changes.append(f"SSH from {spec.ssh_cidr}")
    if have_out - want_out:
        ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=_perms(have_out - want_out, ""))
    if want_out - have_out:
        ec2.authorize_security_group_egress(GroupId=gid, IpPermissions=_perms(want_out - have_out, "labkit: HTTPS"))
    if not fresh:
        (ctx.report.updated if changes else ctx.report.unchanged).append(
            f"security group {name} ({gid})" + (f": {', '.join(changes)}" if changes else ""))
    return gid


# -- image and instances ---------------------------------------------------------------------------

def _latest_ami(ctx: _Ctx, instance_type: str) -> str:
    """The current Amazon Linux 2023 image for the instance type's architecture (public SSM parameter)."""
    try:
        types = ctx("ec2").describe_instance_types(InstanceTypes=[instance_type])["InstanceTypes"]
    except ClientError as exc:
        if _code(exc) in ("InvalidInstanceType", "InvalidParameterValue"):
            raise ConfigError(f"instance type {instance_type!r} does not exist in "
                              f"{ctx.clients.settings.region}") from exc
        raise AwsError.from_client_error(exc, f"looking up instance type {instance_type}") from exc
    archs = types[0]["ProcessorInfo"]["SupportedArchitectures"] if types else ["x86_64"]
    arch = "x86_64" if "x86_64" in archs else "arm64"
    try:
        return ctx("ssm").get_parameter(Name=AMI_PARAMETERS[arch])["Parameter"]["Value"]
    except ClientError as exc:
        raise AwsError.from_client_error(exc, f"reading {AMI_PARAMETERS[arch]}") from exc


def _instances(ctx: _Ctx, states: list[str], mode: str | None = None) -> list[dict[str, Any]]:
    filters = [{"Name": f"tag:{FLEET_TAG}", "Values": [ctx.names.fleet]},
               {"Name": "instance-state-name", "Values": states}]
    if mode:
        filters.append({"Name": f"tag:{MODE_TAG}", "Values": [mode]})
    out = []
    for page in ctx("ec2").get_paginator("describe_instances").paginate(Filters=filters):
        for r in page["Reservations"]:
            out += r["Instances"]
    return sorted(out, key=lambda i: (i["LaunchTime"], i["InstanceId"]))


def _tag(instance: dict[str, Any], key: str) -> str | None:
    return next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == key), None)


def _launch_data(ctx: _Ctx, spec: FleetSpec, ami: str, gid: str, user_data: str, profile: str,
                 build: str, mode: str) -> dict[str, Any]:
    """What every worker instance is launched with (the run_instances / launch template fields)."""
    tags = _tags(ctx.names, Name=ctx.names.stem, **{MODE_TAG: mode, BUILD_TAG: build})
    data: dict[str, Any] = {
        "ImageId": ami, "InstanceType": spec.instance_type, "SecurityGroupIds": [gid],
        "IamInstanceProfile": {"Name": profile},
        # IMDSv2 only, one hop: the role's credentials stay on the instance.
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 1},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tags},
                              {"ResourceType": "volume", "Tags": tags}],
        "UserData": user_data,
    }
    if spec.key_name:
        data["KeyName"] = spec.key_name
    return data


def _converge_instances(ctx: _Ctx, spec: FleetSpec, launch: dict[str, Any], build: str,
                        subnets: list[str]) -> None:
    """Exactly ``spec.workers`` running instances of this build and type: launch the missing ones,
    replace outdated ones (new first), terminate extras."""
    current = _instances(ctx, LIVE, "instances")
    outdated = [i for i in current if _tag(i, BUILD_TAG) != build or i["InstanceType"] != spec.instance_type]
    keep = [i for i in current if i not in outdated]
    extra = keep[spec.workers:] if len(keep) > spec.workers else []
    keep = keep[:spec.workers]
    need = spec.workers - len(keep)
    if need > 0:
        ctx.say(f"launching {need} {spec.instance_type} instance(s)")
        ids = [_launch_one(ctx, launch, subnets, len(keep) + n) for n in range(need)]
        ctx.report.created.append(f"{need} instance(s) {', '.join(ids)}")
    if keep:
        ctx.report.unchanged.append(f"{len(keep)} instance(s) {', '.join(i['InstanceId'] for i in keep)}")
    _terminate(ctx, outdated, "outdated build or type")
    _terminate(ctx, extra, "more than asked for")


def _launch_one(ctx: _Ctx, launch: dict[str, Any], subnets: list[str], index: int) -> str:
    """Launch one instance, in the default subnets in turn (spread over availability zones); a zone that
    does not offer the instance type is skipped."""
    order = [subnets[(index + k) % len(subnets)] for k in range(len(subnets))] if subnets else [None]
    for k, subnet in enumerate(order):
        where = {"SubnetId": subnet} if subnet else {}
        try:
            resp = _retry_iam_propagation(
                lambda w=where: ctx("ec2").run_instances(MinCount=1, MaxCount=1, **w,
                                                         InstanceInitiatedShutdownBehavior="terminate", **launch),
                "launching an instance", timeout=120, interval=ctx.interval * 2)
        except AwsError as exc:
            if exc.code in ("Unsupported", "InsufficientInstanceCapacity") and k + 1 < len(order):
                continue
            raise
        return resp["Instances"][0]["InstanceId"]
    raise AwsError("no default subnet could launch the instance")  # not reached: the loop returns or raises


def _terminate(ctx: _Ctx, instances: list[dict[str, Any]], why: str) -> None:
    if not instances:
        return
    ids = [i["InstanceId"] for i in instances]
    ctx("ec2").terminate_instances(InstanceIds=ids)
    ctx.report.deleted.append(f"{len(ids)} instance(s) {', '.join(ids)} ({why})")


# -- Auto Scaling ----------------------------------------------------------------------------------

def _find_launch_template(ctx: _Ctx) -> dict[str, Any] | None:
    try:
        lts = ctx("ec2").describe_launch_templates(LaunchTemplateNames=[ctx.names.launch_template])
    except ClientError as exc:
        if "NotFound" in _code(exc):
            return None
        raise AwsError.from_client_error(exc, "looking up the launch template") from exc
    return lts["LaunchTemplates"][0] if lts["LaunchTemplates"] else None


def _ensure_launch_template(ctx: _Ctx, launch: dict[str, Any]) -> None:
    ec2, name = ctx("ec2"), ctx.names.launch_template
    data = {**launch, "UserData": base64.b64encode(launch["UserData"].encode()).decode()}
    lt = _find_launch_template(ctx)
    if lt is None:
        ec2.create_launch_template(
            LaunchTemplateName=name, LaunchTemplateData=data, VersionDescription="labkit deploy",
            TagSpecifications=[{"ResourceType": "launch-template", "Tags": _tags(ctx.names)}])
        ctx.report.created.append(f"launch template {name}")
        return
    latest = ec2.describe_launch_template_versions(LaunchTemplateName=name, Versions=["$Latest"])
    current = latest["LaunchTemplateVersions"][0]["LaunchTemplateData"]
    if _normal_doc(_comparable(current)) == _normal_doc(_comparable(data)):
        ctx.report.unchanged.append(f"launch template {name}")
        return
    new = ec2.create_launch_template_version(LaunchTemplateName=name, LaunchTemplateData=data,
                                             VersionDescription="labkit deploy")
    version = new["LaunchTemplateVersion"]["VersionNumber"]
    ec2.modify_launch_template(LaunchTemplateName=name, DefaultVersion=str(version))
    ctx.report.updated.append(f"launch template {name} (version {version}: new instances use it)")


def _comparable(data: dict[str, Any]) -> dict[str, Any]:
    keys = ("ImageId", "InstanceType", "SecurityGroupIds", "IamInstanceProfile", "UserData", "KeyName")
    out = {k: data.get(k) for k in keys}
    tags = {(t["Key"], t["Value"]) for spec in data.get("TagSpecifications", []) for t in spec.get("Tags", [])}
    out["Tags"] = sorted(tags)
    out["HttpTokens"] = (data.get("MetadataOptions") or {}).get("HttpTokens")
    return out


def _find_group(ctx: _Ctx) -> dict[str, Any] | None:
    groups = ctx("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[ctx.names.group])
    live = [g for g in groups["AutoScalingGroups"] if g.get("Status") != "Delete in progress"]
    return live[0] if live else None


def _ensure_group(ctx: _Ctx, spec: FleetSpec, subnets: list[str]) -> None:
    client, name = ctx("autoscaling"), ctx.names.group
    lo, hi = spec.autoscale or (0, 1)
    template = {"LaunchTemplateName": ctx.names.launch_template, "Version": "$Latest"}
    group = _find_group(ctx)
    if group is None:
        if not subnets:
            raise ConfigError("the default VPC has no default subnets to launch instances in")
        _retry_iam_propagation(lambda: client.create_auto_scaling_group(
            AutoScalingGroupName=name, LaunchTemplate=template, MinSize=lo, MaxSize=hi, DesiredCapacity=lo,
            VPCZoneIdentifier=",".join(subnets), HealthCheckType="EC2", DefaultCooldown=WARMUP,
            Tags=[{"Key": t["Key"], "Value": t["Value"], "PropagateAtLaunch": True} for t in
                  _tags(ctx.names, Name=ctx.names.stem, **{MODE_TAG: "autoscale"})]),
            "creating the Auto Scaling group", timeout=120, interval=ctx.interval * 2)
        ctx.report.created.append(f"auto scaling group {name} (min {lo}, max {hi})")
        return
    if (group["MinSize"], group["MaxSize"]) != (lo, hi):
        desired = min(max(group["DesiredCapacity"], lo), hi)
        client.update_auto_scaling_group(AutoScalingGroupName=name, MinSize=lo, MaxSize=hi,
                                         DesiredCapacity=desired, LaunchTemplate=template)
        ctx.report.updated.append(f"auto scaling group {name} (min {lo}, max {hi})")
    else:
        ctx.report.unchanged.append(f"auto scaling group {name} (min {lo}, max {hi})")


def _policy_arn(ctx: _Ctx, response: dict[str, Any], policy: str) -> str:
    if response.get("PolicyARN"):
        return response["PolicyARN"]
    policies = ctx("autoscaling").describe_policies(AutoScalingGroupName=ctx.names.group,
                                                    PolicyNames=[policy])["ScalingPolicies"]
    return policies[0]["PolicyARN"]


def _queue_metrics(settings: Settings, metric_names: list[str]) -> tuple[list[dict[str, Any]], str]:
    """CloudWatch metric queries for the request queues, and an expression summing them (gaps as 0)."""
    queries, ids = [], []
    for i, (metric, queue) in enumerate((m, q) for m in metric_names
                                        for q in provision.request_queues(settings).values()):
        qid = f"m{i}"
        ids.append(f"FILL({qid}, 0)")
        queries.append({"Id": qid, "ReturnData": False, "MetricStat": {
            "Metric": {"Namespace": "AWS/SQS", "MetricName": metric,
                       "Dimensions": [{"Name": "QueueName", "Value": queue}]},
            "Period": 60, "Stat": "Maximum"}})
    return queries, " + ".join(ids)


def _ensure_scaling(ctx: _Ctx, spec: FleetSpec) -> list[str]:
    """Step scaling on the backlog, back to MIN after idle minutes; returns the alarm names."""
    client, cw, settings = ctx("autoscaling"), ctx("cloudwatch"), ctx.clients.settings
    lo, _ = spec.autoscale or (0, 1)
    steps = [{"MetricIntervalLowerBound": float(a), **({"MetricIntervalUpperBound": float(b)} if b else {}),
              "ScalingAdjustment": n} for a, b, n in SCALE_OUT_STEPS]
    out = client.put_scaling_policy(AutoScalingGroupName=ctx.names.group, PolicyName=ctx.names.policy_out,
                                    PolicyType="StepScaling", AdjustmentType="ChangeInCapacity",
                                    MetricAggregationType="Maximum", EstimatedInstanceWarmup=WARMUP,
                                    StepAdjustments=steps)
    inn = client.put_scaling_policy(AutoScalingGroupName=ctx.names.group, PolicyName=ctx.names.policy_in,
                                    PolicyType="SimpleScaling", AdjustmentType="ExactCapacity",
                                    ScalingAdjustment=lo, Cooldown=300)
    out_arn, in_arn = _policy_arn(ctx, out, ctx.names.policy_out), _policy_arn(ctx, inn, ctx.names.policy_in)
    existing = {a["AlarmName"] for a in cw.describe_alarms(
        AlarmNames=[ctx.names.alarm_backlog, ctx.names.alarm_idle])["MetricAlarms"]}
    backlog, backlog_expr = _queue_metrics(settings, ["ApproximateNumberOfMessagesVisible"])
    cw.put_metric_alarm(
        AlarmName=ctx.names.alarm_backlog, AlarmActions=[out_arn], Tags=_tags(ctx.names),
        AlarmDescription="labkit: requests are waiting: add worker instances (step scaling)",
        Metrics=[*backlog, {"Id": "backlog", "Expression": backlog_expr, "Label": "requests waiting",
                            "ReturnData": True}],
        ComparisonOperator="GreaterThanOrEqualToThreshold", Threshold=1.0, EvaluationPeriods=1,
        DatapointsToAlarm=1, TreatMissingData="notBreaching")
    work, work_expr = _queue_metrics(settings, ["ApproximateNumberOfMessagesVisible",
                                                "ApproximateNumberOfMessagesNotVisible"])
    # No data means an inactive queue (SQS stops reporting after hours of silence): idle, too.
    cw.put_metric_alarm(
        AlarmName=ctx.names.alarm_idle, AlarmActions=[in_arn], Tags=_tags(ctx.names),
        AlarmDescription=f"labkit: no request waiting or running for {IDLE_MINUTES} minutes: back to MIN workers",
        Metrics=[*work, {"Id": "work", "Expression": work_expr, "Label": "requests waiting or running",
                         "ReturnData": True}],
        ComparisonOperator="LessThanOrEqualToThreshold", Threshold=0.0, EvaluationPeriods=IDLE_MINUTES,
        DatapointsToAlarm=IDLE_MINUTES, TreatMissingData="breaching")
    for alarm in (ctx.names.alarm_backlog, ctx.names.alarm_idle):
        (ctx.report.unchanged if alarm in existing else ctx.report.created).append(f"alarm {alarm}")
    return [ctx.names.alarm_backlog, ctx.names.alarm_idle]


def _delete_group(ctx: _Ctx, why: str = "") -> bool:
    """Delete the Auto Scaling group (its instances and scaling policies with it); wait until gone."""
    if _find_group(ctx) is None:
        return False
    ctx("autoscaling").delete_auto_scaling_group(AutoScalingGroupName=ctx.names.group, ForceDelete=True)
    _wait(lambda: not ctx("autoscaling").describe_auto_scaling_groups(
        AutoScalingGroupNames=[ctx.names.group])["AutoScalingGroups"],
        900, ctx.interval, f"auto scaling group {ctx.names.group} to terminate its instances", ctx.progress)
    ctx.report.deleted.append(f"auto scaling group {ctx.names.group}{why}")
    return True


def _delete_alarms(ctx: _Ctx) -> None:
    cw = ctx("cloudwatch")
    names = [a["AlarmName"] for a in cw.describe_alarms(
        AlarmNames=[ctx.names.alarm_backlog, ctx.names.alarm_idle])["MetricAlarms"]]
    if names:
        cw.delete_alarms(AlarmNames=names)
        ctx.report.deleted += [f"alarm {n}" for n in names]


def _delete_launch_template(ctx: _Ctx) -> None:
    if _find_launch_template(ctx) is not None:
        ctx("ec2").delete_launch_template(LaunchTemplateName=ctx.names.launch_template)
        ctx.report.deleted.append(f"launch template {ctx.names.launch_template}")


# -- the three verbs -------------------------------------------------------------------------------

def deploy(clients: Clients, spec: FleetSpec | None = None, progress: Progress | None = None) -> FleetReport:
    """Create or converge the worker fleet for ``clients.settings``; record it in the state file."""
    spec = spec or FleetSpec()
    spec.validate()
    settings = clients.settings
    report = FleetReport()
    provision.ensure_queues(clients, report)
    provision.ensure_bucket(clients, report)
    bucket = clients.bucket_name()
    names = FleetNames(bucket)
    ctx = _Ctx(clients, names, report, progress)
    account = clients.account_id()

    try:
        if spec.key_name:
            try:
                ctx("ec2").describe_key_pairs(KeyNames=[spec.key_name])
            except ClientError as exc:
                if "NotFound" in _code(exc):
                    raise ConfigError(f"there is no key pair named {spec.key_name!r} in {settings.region}") from exc
                raise
        ami = _latest_ami(ctx, spec.instance_type)
        ctx.say("building the labkit wheel")
        with tempfile.TemporaryDirectory(prefix="labkit-wheel-") as tmp:
            wheel = build_wheel(tmp)
            key, sha, uploaded = upload_wheel(clients, wheel)
        (report.created if uploaded else report.unchanged).append(f"wheel s3://{bucket}/{key}")

        if spec.instance_profile:
            _check_existing_profile(ctx, spec.instance_profile)
            profile, owned = spec.instance_profile, False
        else:
            _ensure_role(ctx, iam.worker_policy(settings, bucket, account))
            _ensure_profile(ctx)
            profile, owned = names.profile, True

        vpc, subnets = _default_vpc(ctx)
        gid = _ensure_security_group(ctx, spec, vpc)
        user_data = render_user_data(user_data_values(settings, bucket, key, sha, spec.concurrency))
        build = sha[:16]
        mode = "autoscale" if spec.autoscale else "instances"
        launch = _launch_data(ctx, spec, ami, gid, user_data, profile, build, mode)

        alarms: list[str] = []
        if spec.autoscale:
            _terminate(ctx, _instances(ctx, LIVE, "instances"), "replaced by the auto scaling group")
            _ensure_launch_template(ctx, launch)
            _ensure_group(ctx, spec, subnets)
            alarms = _ensure_scaling(ctx, spec)
        else:
            _delete_alarms(ctx)
            _delete_group(ctx, " (replaced by instances)")
            _delete_launch_template(ctx)
            _converge_instances(ctx, spec, launch, build, subnets)
    except ClientError as exc:
        raise AwsError.from_client_error(exc, "deploying the worker fleet") from exc

    report.fleet = {
        "name": names.fleet, "region": settings.region, "mode": mode, "instance_type": spec.instance_type,
        "workers": None if spec.autoscale else spec.workers,
        "autoscale": list(spec.autoscale) if spec.autoscale else None, "concurrency": spec.concurrency,
        "role": names.role if owned else None, "instance_profile": profile, "profile_owned": owned,
        "security_group": gid, "ssh_cidr": spec.ssh_cidr, "key_name": spec.key_name,
        "launch_template": names.launch_template if spec.autoscale else None,
        "auto_scaling_group": names.group if spec.autoscale else None, "alarms": alarms,
        "ami": ami, "wheel": key, "build": build,
        "deployed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    update_state(settings.state_dir, fleet=report.fleet)
    return report


def undeploy(clients: Clients, progress: Progress | None = None) -> FleetReport:
    """Delete everything :func:`deploy` made for this bucket: group, alarms, instances, launch template,
    security group, role and profile (only labkit's own), the wheels. Safe to run when nothing exists."""
    settings = clients.settings
    record = read_state(settings.state_dir).get("fleet") or {}
    bucket = clients.bucket_name()
    names = FleetNames(record.get("name") or bucket)
    report = FleetReport(fleet=record)
    ctx = _Ctx(clients, names, report, progress)
    try:
        _delete_group(ctx)
        _delete_alarms(ctx)
        _delete_launch_template(ctx)
        instances = _instances(ctx, NOT_TERMINATED)
        if instances:
            _terminate(ctx, instances, "undeploy")
            ids = [i["InstanceId"] for i in instances]
            _wait(lambda: not _instances(ctx, NOT_TERMINATED), 900, ctx.interval,
                  f"{len(ids)} instance(s) to terminate", progress)
        _delete_security_group(ctx)
        _delete_iam(ctx)
        _delete_wheels(ctx, bucket)
    except ClientError as exc:
        raise AwsError.from_client_error(exc, "removing the worker fleet") from exc
    if Path(settings.state_dir).exists():
        update_state(settings.state_dir, fleet=None)
    return report


def _delete_security_group(ctx: _Ctx) -> None:
    group = _find_security_group(ctx)
    if group is None:
        return
    gid = group["GroupId"]

    def gone() -> bool:
        try:
            ctx("ec2").delete_security_group(GroupId=gid)
            return True
        except ClientError as exc:
            if _code(exc) == "DependencyViolation":  # network interfaces of terminated instances linger
                return False
            if _code(exc) == "InvalidGroup.NotFound":
                return True
            raise
    _wait(gone, 300, ctx.interval, f"security group {gid} to be free", ctx.progress)
    ctx.report.deleted.append(f"security group {ctx.names.security_group} ({gid})")


def _ours(tags: list[dict[str, str]], names: FleetNames) -> bool:
    return any(t["Key"] == FLEET_TAG and t["Value"] == names.fleet for t in tags)


def _delete_iam(ctx: _Ctx) -> None:
    """Delete labkit's own profile and role (tagged for this fleet); never a profile the user gave."""
    client, names = ctx("iam"), ctx.names
    try:
        profile = client.get_instance_profile(InstanceProfileName=names.profile)["InstanceProfile"]
    except ClientError as exc:
        if _denied(exc):
            ctx.report.notes.append(f"could not check instance profile {names.profile} (access denied)")
            return
        if _code(exc) != "NoSuchEntity":
            raise
        profile = None
    if profile is not None and _ours(profile.get("Tags", []), names):
        for role in profile.get("Roles", []):
            client.remove_role_from_instance_profile(InstanceProfileName=names.profile, RoleName=role["RoleName"])
        client.delete_instance_profile(InstanceProfileName=names.profile)
        ctx.report.deleted.append(f"instance profile {names.profile}")
    try:
        role = client.get_role(RoleName=names.role)["Role"]
    except ClientError as exc:
        if _code(exc) == "NoSuchEntity":
            return
        raise
    if not _ours(role.get("Tags", []), names):
        ctx.report.notes.append(f"role {names.role} is not tagged {FLEET_TAG}={names.fleet}: left alone")
        return
    for policy in client.list_role_policies(RoleName=names.role)["PolicyNames"]:
        client.delete_role_policy(RoleName=names.role, PolicyName=policy)
    for policy in client.list_attached_role_policies(RoleName=names.role)["AttachedPolicies"]:
        client.detach_role_policy(RoleName=names.role, PolicyArn=policy["PolicyArn"])
    for p in client.list_instance_profiles_for_role(RoleName=names.role)["InstanceProfiles"]:
        client.remove_role_from_instance_profile(InstanceProfileName=p["InstanceProfileName"], RoleName=names.role)
    client.delete_role(RoleName=names.role)
    ctx.report.deleted.append(f"role {names.role}")


def _delete_wheels(ctx: _Ctx, bucket: str) -> None:
    try:
        ctx.clients.s3.head_bucket(Bucket=bucket)
    except ClientError:
        return
    count = Bucket(ctx.clients.s3, bucket).delete_prefix(WHEEL_PREFIX)
    if count:
        ctx.report.deleted.append(f"{count} wheel(s) under s3://{bucket}/{WHEEL_PREFIX}")


def fleet_status(clients: Clients) -> dict[str, Any] | None:
    """The fleet as it is now: instances (id, type, state, launch time), the group and alarms; None when
    there is no fleet."""
    record = read_state(clients.settings.state_dir).get("fleet") or {}
    names = FleetNames(record.get("name") or clients.bucket_name())
    ctx = _Ctx(clients, names, FleetReport(), None)
    try:
        instances = _instances(ctx, NOT_TERMINATED)
        group = _find_group(ctx)
        alarms = ctx("cloudwatch").describe_alarms(
            AlarmNames=[names.alarm_backlog, names.alarm_idle])["MetricAlarms"]
        sg = _find_security_group(ctx)
    except ClientError as exc:
        raise AwsError.from_client_error(exc, "reading the worker fleet") from exc
    if not (instances or group or sg):
        return None  # a record without resources is stale (say, the emulator it was made on has stopped)
    return {
        "name": names.fleet, "mode": record.get("mode") or ("autoscale" if group else "instances"),
        "build": record.get("build"), "instance_profile": record.get("instance_profile"),
        "security_group": sg["GroupId"] if sg else None,
        "instances": [{"id": i["InstanceId"], "type": i["InstanceType"], "state": i["State"]["Name"],
                       "launched": i["LaunchTime"].isoformat(timespec="seconds"),
                       "zone": i.get("Placement", {}).get("AvailabilityZone"),
                       "build": _tag(i, BUILD_TAG)} for i in instances],
        "group": None if group is None else {"name": group["AutoScalingGroupName"], "min": group["MinSize"],
                                             "max": group["MaxSize"], "desired": group["DesiredCapacity"]},
        "alarms": [{"name": a["AlarmName"], "state": a["StateValue"]} for a in alarms],
    }


def instance_user_data(clients: Clients, instance_id: str) -> str:
    """What an instance was launched with: the bootstrap script with its settings (no secret in it)."""
    try:
        attr = clients("ec2").describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
    except ClientError as exc:
        raise AwsError.from_client_error(exc, f"reading the user data of {instance_id}") from exc
    value = attr.get("UserData", {}).get("Value")
    return base64.b64decode(value).decode() if value else ""


def fleet_user_data(clients: Clients) -> str:
    """The fleet's user data: the first instance's, else the launch template's ("" when there is neither)."""
    status = fleet_status(clients)
    if status and status["instances"]:
        return instance_user_data(clients, status["instances"][0]["id"])
    names = FleetNames((read_state(clients.settings.state_dir).get("fleet") or {}).get("name")
                       or clients.bucket_name())
    try:
        versions = clients("ec2").describe_launch_template_versions(
            LaunchTemplateName=names.launch_template, Versions=["$Latest"])["LaunchTemplateVersions"]
    except ClientError as exc:
        if "NotFound" in _code(exc):
            return ""
        raise AwsError.from_client_error(exc, "reading the launch template") from exc
    value = versions[0]["LaunchTemplateData"].get("UserData") if versions else None
    return base64.b64decode(value).decode() if value else ""


def format_status(status: dict[str, Any] | None) -> str:
    """A few lines for a terminal: the group, the alarms, one line per instance."""
    if status is None:
        return "fleet      none (labkit deploy starts one)"
    lines = [f"fleet      {status['name']} ({status['mode']}, build {status.get('build') or '?'})"]
    g = status.get("group")
    if g:
        lines.append(f"  group    {g['name']}: min {g['min']}, max {g['max']}, desired {g['desired']}")
    for a in status.get("alarms", []):
        lines.append(f"  alarm    {a['name']}: {a['state']}")
    if not status["instances"]:
        lines.append("  no instances")
    for i in status["instances"]:
        lines.append(f"  {i['id']:<21}{i['type']:<11}{i['state']:<10}launched {i['launched']}  {i['zone'] or ''}")
    return "\n".join(lines)
