"""The worker's bootstrap script (EC2 user data) and systemd unit: linted, checked, and run for real in a
sandbox against the emulator, where the unit's own ExecStart command then processes a real job."""

from __future__ import annotations

import base64
import configparser
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from labkit import fleet
from labkit.aws.clients import Clients
from labkit.client import Lab
from labkit.config import LOGS_PREFIX, Settings, read_state
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET, ROOT, require_tool
from tests.helpers import labkit

SCRIPT = fleet.DEPLOY_DIR / "bootstrap.sh"
UNIT = fleet.DEPLOY_DIR / "labkit-worker.service"
USER_KINDS = ROOT / "notebooks" / "kinds" / "wordcount.py"  # job kinds wordcount and histogram


def tool(name: str) -> str:
    """The path of a linter; skipped where it is not installed, except in CI, where that is a failure."""
    path = shutil.which(name)
    require_tool(path is not None, f"{name} (apt-get install -y {name})")
    return str(path)


def read_unit(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(text)
    return unit


def sample_user_data() -> str:
    s = Settings.load(env={}, bucket="labkit-sample")
    return fleet.render_user_data(fleet.user_data_values(
        s, "labkit-sample", "artifacts/labkit/0123456789abcdef/labkit-0.1.0-py3-none-any.whl", "0" * 64))


# -- static checks ---------------------------------------------------------------------------------

def test_script_parses_with_bash_n(tmp_path: Path) -> None:
    rendered = tmp_path / "user-data.sh"
    rendered.write_text(sample_user_data())
    for path in (SCRIPT, rendered):
        out = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_script_passes_shellcheck(tmp_path: Path) -> None:
    shellcheck = tool("shellcheck")
    rendered = tmp_path / "user-data.sh"
    rendered.write_text(sample_user_data())
    out = subprocess.run([shellcheck, "--shell=bash", "--severity=style", str(SCRIPT), str(rendered)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    # verify checks that ExecStart's program exists: point it at a real Python, change nothing else.
    text = UNIT.read_text().replace("ExecStart=/opt/labkit/venv/bin/python ", f"ExecStart={sys.executable} ")
    assert text != UNIT.read_text()
    unit = tmp_path / "labkit-worker.service"
    unit.write_text(text)
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    messages = (out.stdout + out.stderr).strip()
    assert out.returncode == 0, messages
    # Unknown or misspelt settings are only warnings for verify: none may appear.
    assert not re.search(r"unknown|ignoring|invalid|failed", messages, re.I), messages


def test_unit_runs_the_worker_unprivileged_restarts_it_and_lets_jobs_finish() -> None:
    unit = read_unit(UNIT.read_text())
    svc = unit["Service"]
    assert svc["User"] == "labkit" and svc["Group"] == "labkit"
    assert svc["Restart"] == "always"
    assert svc["KillSignal"] == "SIGTERM"
    assert svc["EnvironmentFile"] == "/etc/labkit/worker.env"
    argv = shlex.split(svc["ExecStart"])
    assert argv[:3] == ["/opt/labkit/venv/bin/python", "-m", "worker"]
    # The stop timeout covers a whole long poll plus a job at its limit, with room for the replies.
    poll, job = int(argv[argv.index("--poll-wait") + 1]), float(argv[argv.index("--job-timeout") + 1])
    assert int(svc["TimeoutStopSec"]) >= poll + job + 30
    for key, want in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                      "PrivateTmp": "yes", "CapabilityBoundingSet": ""}.items():
        assert svc[key] == want, key
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_unit_watches_the_worker_powers_a_broken_instance_off_and_caps_its_memory() -> None:
    unit = read_unit(UNIT.read_text())
    svc = unit["Service"]
    # The worker says when it serves and pings a watchdog (worker/health.py): a hung worker is restarted
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    watchdog = int(svc["WatchdogSec"])
    assert 30 <= watchdog <= 300
    assert int(svc["TimeoutStartSec"]) >= 60
    # A worker that keeps failing powers the instance off (it terminates, and its group replaces it), but only
    # after restarts enough to ride out a short outage
    assert unit["Unit"]["FailureAction"] == "poweroff"
    burst, window = int(unit["Unit"]["StartLimitBurst"]), int(unit["Unit"]["StartLimitIntervalSec"])
    assert burst * int(svc["RestartSec"]) >= 120 and window >= burst * int(svc["RestartSec"])
    # And its memory is capped below the machine's, the lower (high) limit being the one the worker reads
    high, most = int(svc["MemoryHigh"].rstrip("%")), int(svc["MemoryMax"].rstrip("%"))
    assert 50 <= high < most <= 90


def test_script_refuses_to_run_without_its_settings(tmp_path: Path) -> None:
    root = tmp_path / "root"
    out = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": os.environ["PATH"], "LABKIT_ROOT": str(root), "LABKIT_SKIP_SYSTEM": "1"})
    assert out.returncode != 0
    assert "AWS_REGION is not set" in out.stderr
    assert not root.exists()  # it stopped before touching anything


# -- the real thing, in a sandbox ------------------------------------------------------------------

def outside_env() -> dict[str, str]:
    """This environment without PYTHONPATH or LABKIT_JOB_MODULES: the sandbox must run what the wheel
    installed there, not this checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LABKIT_JOB_MODULES")}


def probe_wheel(folder: Path) -> tuple[Path, str]:
    """A tiny wheel (module ``labkit_probe``) in ``folder``, and its requirements line pinned by hash: the
    sandbox installs it the way an instance installs the real pins (which need the network)."""
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / "labkit_probe-1.0-py3-none-any.whl"
    files = {"labkit_probe.py": b"PINNED = True\n",
             "labkit_probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: labkit-probe\nVersion: 1.0\n",
             "labkit_probe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = "".join(f"{n},sha256={base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b'=').decode()},"
                     f"{len(d)}\n" for n, d in files.items()) + "labkit_probe-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in {**files, "labkit_probe-1.0.dist-info/RECORD": record.encode()}.items():
            zf.writestr(name, data)
    return wheel, f"labkit-probe==1.0 \\\n    --hash=sha256:{hashlib.sha256(wheel.read_bytes()).hexdigest()}\n"


def sandbox_env(root: Path, emulator_url: str, **extra: str) -> dict[str, str]:
    """The knobs bootstrap.sh documents for a sandbox; AWS_ENDPOINT_URL keeps any stray AWS call on the
    emulator (this machine must never talk to real AWS). The pinned dependencies are replaced by the probe
    wheel (``LABKIT_REQUIREMENTS``, written by the caller), installed by hash from a local folder."""
    wheels = root.parent / "wheelhouse"
    return {**outside_env(), "LABKIT_ROOT": str(root), "LABKIT_SKIP_SYSTEM": "1", "LABKIT_PYTHON": sys.executable,
            # Reuse this environment's numpy, boto3, Pillow instead of downloading them.
            "LABKIT_EXTRA_SITE": sysconfig.get_paths()["purelib"],
            "LABKIT_REQUIREMENTS": str(root.parent / "requirements.txt"),
            "LABKIT_PIP_OPTIONS": f"--no-index --find-links {wheels}", "LABKIT_INSTANCE_ID": "i-0sandbox0000000001",
            "AWS_ENDPOINT_URL": emulator_url, "AWS_EC2_METADATA_DISABLED": "true", **extra}


def pin_the_probe(tmp_path: Path) -> None:
    """The probe wheel in ``tmp_path/wheelhouse`` and its pin in ``tmp_path/requirements.txt`` (sandbox_env)."""
    _, pin = probe_wheel(tmp_path / "wheelhouse")
    (tmp_path / "requirements.txt").write_text(pin)


def env_file(path: Path) -> dict[str, str]:
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


@pytest.mark.slow
def test_bootstrap_builds_the_worker_in_a_sandbox_and_its_unit_processes_a_job(
        emulator, settings: Settings, tmp_path: Path) -> None:
    # Given a fleet deployed on the emulator with a job module of the user's (LABKIT_JOB_MODULES): the wheel
    # is in the bucket, the instance holds the user data
    settings = settings.replace(job_modules=(str(USER_KINDS),))
    clients = Clients(settings)
    fleet.deploy(clients, fleet.FleetSpec(workers=1, concurrency=2))
    instance = fleet.fleet_status(clients)["instances"][0]["id"]  # type: ignore[index]
    script = tmp_path / "user-data.sh"
    script.write_text(fleet.instance_user_data(clients, instance))
    root = tmp_path / "root"
    pin_the_probe(tmp_path)

    # When that very user data runs in the sandbox (package manager, useradd and systemctl skipped; the
    # instance's id given; a pinned probe standing in for the real pins)
    run = subprocess.run(["bash", str(script)], env=sandbox_env(root, emulator.url, LABKIT_INSTANCE_ID=instance),
                         cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    # Then the pinned dependencies were installed by hash
    probe = subprocess.run([str(root / "opt/labkit/venv/bin/python"), "-c", "import labkit_probe"], env=outside_env())
    assert probe.returncode == 0

    # Then the wheel came from the emulator's bucket, checked, and is installed in the venv
    record = read_state(settings.state_dir)["fleet"]
    wheel = root / "opt/labkit/wheels" / Path(record["wheel"]).name
    assert wheel.read_bytes() == clients.s3.get_object(Bucket=settings.bucket, Key=record["wheel"])["Body"].read()
    venv_python = root / "opt/labkit/venv/bin/python"
    where = subprocess.run([str(venv_python), "-c", "import labkit.fleet, worker.loop, wordcount; "
                            "print(labkit.fleet.__file__); print(worker.loop.__file__); print(wordcount.__file__)"],
                           capture_output=True, text=True, cwd="/", env=outside_env())
    assert where.returncode == 0, where.stderr
    assert len(where.stdout.splitlines()) == 3
    assert all(line.startswith(str(root / "opt/labkit/venv")) for line in where.stdout.splitlines())

    # And the environment file holds names and region (and the job module's import name), no secret
    env = env_file(root / "etc/labkit/worker.env")
    assert env == {
        "AWS_REGION": settings.region, "AWS_DEFAULT_REGION": settings.region, "LABKIT_BUCKET": settings.bucket,
        "LABKIT_REQUEST_QUEUE": settings.request_queue, "LABKIT_RESPONSE_QUEUE": settings.response_queue,
        "LABKIT_IMAGE_INBOX": settings.image_inbox, "LABKIT_IMAGE_OUTBOX": settings.image_outbox,
        "LABKIT_CONCURRENCY": "2", "LABKIT_STATE_DIR": "/var/lib/labkit", "PYTHONUNBUFFERED": "1",
        "LABKIT_ENDPOINT_URL": emulator.url, "LABKIT_JOB_MODULES": "wordcount", "LABKIT_INSTANCE_ID": instance}
    text = (root / "etc/labkit/worker.env").read_text()
    assert FAKE_KEY_ID not in text and FAKE_SECRET not in text and "SECRET" not in text
    # And the unit is the one shipped in the wheel
    unit_path = root / "etc/systemd/system/labkit-worker.service"
    assert unit_path.read_text() == UNIT.read_text()

    # When the unit's ExecStart runs as systemd would (its environment file, its working directory),
    # mapped into the sandbox, with --burst, after a number job and a job of the user's own kind were sent
    with Lab(settings) as lab:
        job = lab.numbers([4, 8, 15, 16, 23, 42])
        words = lab.submit("wordcount", {"text": "To be, or not to be"})
        svc = read_unit(unit_path.read_text())["Service"]
        argv = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], a) for a in shlex.split(svc["ExecStart"])]
        argv[0] = str(root) + argv[0]
        workdir = Path(str(root) + svc["WorkingDirectory"])
        workdir.mkdir(parents=True)  # systemd's StateDirectory= does this on the instance
        service_env = {"PATH": "/usr/bin:/bin", "AWS_EC2_METADATA_DISABLED": "true",
                       "HOME": str(workdir), **env}
        worker = subprocess.Popen([*argv, "--burst"], env=service_env, cwd=workdir,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output, _ = worker.communicate(timeout=120)
        assert worker.returncode == 0, output

        # Then it answered the job, and shipped its log lines to the bucket (--log-to-s3)
        result = job.result(timeout=30)
        assert result["count"] == 6 and result["min"] == 4 and result["max"] == 42 and result["median"] == 15.5
        assert job.reply is not None and job.reply.worker.endswith(f":{worker.pid}")
        # And the wordcount job too, by the module the wheel shipped
        assert words.result(timeout=30) == {"words": 6, "distinct": 4,
                                            "top": [["to", 2], ["be", 2], ["or", 1], ["not", 1]]}
        assert words.reply is not None and words.reply.worker.endswith(f":{worker.pid}")
        assert "add the kind(s) histogram, wordcount" in output
    logs = clients.s3.list_objects_v2(Bucket=settings.bucket, Prefix=LOGS_PREFIX).get("Contents", [])
    assert logs, output
    # And it wrote its instance's heartbeat, last saying it stopped
    beat = json.loads(clients.s3.get_object(Bucket=settings.bucket, Key=f"logs/health/{instance}.json")["Body"].read())
    assert beat["instance"] == instance and beat["status"] == "stopped"

    # When it runs again (a re-run of cloud-init, say) it reuses the venv and succeeds
    again = subprocess.run(["bash", str(script)], env=sandbox_env(root, emulator.url, LABKIT_INSTANCE_ID=instance),
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"creating {root}/opt/labkit/venv" not in again.stdout

    # And a wheel that does not match the recorded checksum is refused
    tampered = subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env=sandbox_env(root, emulator.url, LABKIT_WHEEL_SHA256="f" * 64,
                                              LABKIT_INSTANCE_ID=instance))
    assert tampered.returncode != 0 and "checksum mismatch" in tampered.stderr

    fleet.undeploy(clients)


# -- retries, giving up, the pinned dependencies -------------------------------------------------------------

def deployed_script(settings: Settings, tmp_path: Path) -> tuple[Clients, str, Path]:
    """One instance deployed on the emulator: clients, its id, and its user data in a file."""
    clients = Clients(settings)
    fleet.deploy(clients, fleet.FleetSpec(workers=1))
    instance = fleet.fleet_status(clients)["instances"][0]["id"]  # type: ignore[index]
    script = tmp_path / "user-data.sh"
    script.write_text(fleet.instance_user_data(clients, instance))
    pin_the_probe(tmp_path)
    return clients, instance, script


@pytest.mark.slow
def test_a_step_that_fails_for_a_while_is_retried_and_the_boot_goes_on(emulator, settings: Settings,
                                                                       tmp_path: Path) -> None:
    # Given an instance whose wheel is not there yet (as when the instance role has not reached IAM yet: S3 says no)
    clients, instance, script = deployed_script(settings, tmp_path)
    key = read_state(settings.state_dir)["fleet"]["wheel"]
    wheel = clients.s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
    clients.s3.delete_object(Bucket=settings.bucket, Key=key)
    try:
        # When the bootstrap runs, and the wheel appears once the first attempt has failed
        env = sandbox_env(tmp_path / "root", emulator.url, LABKIT_INSTANCE_ID=instance, LABKIT_RETRY_DELAY="1",
                          LABKIT_RETRY_FOR="120")
        boot = subprocess.Popen(["bash", str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in boot.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if "fetching the labkit wheel failed (attempt 1); trying again in 1s" in line:
                clients.s3.put_object(Bucket=settings.bucket, Key=key, Body=wheel)
        # Then it tried again and finished the boot
        assert boot.wait(timeout=60) == 0, "".join(lines)
        assert any("attempt 1" in ln for ln in lines) and not any("powering" in ln for ln in lines)
        assert (tmp_path / "root/etc/labkit/worker.env").is_file()
    finally:
        fleet.undeploy(clients)


@pytest.mark.slow
def test_a_step_that_keeps_failing_powers_the_instance_off_and_deploy_reports_why(emulator, settings: Settings,
                                                                                  tmp_path: Path) -> None:
    # Given an instance whose pinned dependency does not match its hash (a tampered or broken mirror)
    clients, instance, script = deployed_script(settings, tmp_path)
    (tmp_path / "requirements.txt").write_text(f"labkit-probe==1.0 --hash=sha256:{'0' * 64}\n")
    powered_off = tmp_path / "powered-off"
    try:
        # When the bootstrap runs with a short retry window, powering off standing for the real thing
        env = sandbox_env(tmp_path / "root", emulator.url, LABKIT_INSTANCE_ID=instance, LABKIT_RETRY_DELAY="1",
                          LABKIT_RETRY_FOR="3", LABKIT_POWEROFF=f"touch {powered_off}")
        boot = subprocess.run(["bash", str(script)], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=240)
        # Then it tried more than once, gave up, and powered the instance off
        assert boot.returncode != 0
        assert "installing the pinned dependencies failed (attempt 1)" in boot.stdout
        assert "installing the pinned dependencies failed" in boot.stderr and "powering the instance off" in boot.stderr
        assert powered_off.exists()
        # And it recorded why where labkit reads it: deploy and status report the instance as failed
        report = fleet.deploy(clients, fleet.FleetSpec(workers=1))
        assert report.unhealthy == [instance]
        assert any(n.startswith(f"instance {instance} is failed: bootstrap gave up at 'installing the pinned "
                                "dependencies'") for n in report.notes), report.notes
        shown = fleet.fleet_status(clients)["instances"][0]  # type: ignore[index]
        assert shown["health"] == "failed"
    finally:
        fleet.undeploy(clients)


def test_instances_end_when_they_power_off(settings: Settings) -> None:
    # Given fixed instances and an Auto Scaling group's launch template
    clients = Clients(settings)
    fleet.deploy(clients, fleet.FleetSpec(workers=1))
    try:
        instance = fleet.fleet_status(clients)["instances"][0]["id"]  # type: ignore[index]
        # Then an instance that powers itself off terminates (it stops billing; a group replaces it)
        attr = clients("ec2").describe_instance_attribute(InstanceId=instance,
                                                          Attribute="instanceInitiatedShutdownBehavior")
        assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
        fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 2)))
        names = fleet.FleetNames(settings.bucket or "")
        data = clients("ec2").describe_launch_template_versions(
            LaunchTemplateName=names.launch_template, Versions=["$Latest"])["LaunchTemplateVersions"][0]
        assert data["LaunchTemplateData"]["InstanceInitiatedShutdownBehavior"] == "terminate"
    finally:
        fleet.undeploy(clients)




# -- in an Auto Scaling group: replaced at once, and no endless loop ------------------------------------------

def group_with_instances(settings: Settings, tmp_path: Path, count: int) -> tuple[Clients, fleet.FleetNames, Path,
                                                                                  list[str]]:
    """A 0:3 group deployed on the emulator with ``count`` instances in it, and its launch template's user
    data in a file whose pinned dependency cannot install (a hash that matches nothing)."""
    clients = Clients(settings)
    fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 3)))
    names = fleet.FleetNames(settings.bucket or "")
    scaling = clients("autoscaling")
    scaling.set_desired_capacity(AutoScalingGroupName=names.group, DesiredCapacity=count)
    group = scaling.describe_auto_scaling_groups(AutoScalingGroupNames=[names.group])["AutoScalingGroups"][0]
    script = tmp_path / "user-data.sh"
    script.write_text(fleet.fleet_user_data(clients))
    pin_the_probe(tmp_path)
    (tmp_path / "requirements.txt").write_text(f"labkit-probe==1.0 --hash=sha256:{'0' * 64}\n")
    return clients, names, script, [i["InstanceId"] for i in group["Instances"]]


def fail_to_boot(script: Path, root: Path, emulator_url: str, instance: str,
                 **extra: str) -> subprocess.CompletedProcess[str]:
    env = sandbox_env(root, emulator_url, LABKIT_INSTANCE_ID=instance, LABKIT_RETRY_DELAY="1", LABKIT_RETRY_FOR="2",
                      LABKIT_POWEROFF=f"touch {root.parent / ('powered-off-' + instance)}", **extra)
    boot = subprocess.run(["bash", str(script)], env=env, cwd=root.parent, capture_output=True, text=True, timeout=240)
    assert boot.returncode != 0 and (root.parent / f"powered-off-{instance}").exists(), boot.stdout + boot.stderr
    return boot


def group_now(clients: Clients, names: fleet.FleetNames) -> dict:
    return clients("autoscaling").describe_auto_scaling_groups(AutoScalingGroupNames=[names.group])[
        "AutoScalingGroups"][0]


@pytest.mark.slow
def test_a_failed_boot_in_a_group_is_replaced_at_once_and_three_stop_the_group_until_deploy(
        emulator, settings: Settings, tmp_path: Path) -> None:
    # Given a 0:3 group with three instances whose bootstrap cannot install its pinned dependencies
    clients, names, script, ids = group_with_instances(settings, tmp_path, 3)
    assert f': "${{LABKIT_GROUP:={names.group}}}"' in script.read_text()  # the template's user data names it
    try:
        # When the first instance's bootstrap gives up
        first = fail_to_boot(script, tmp_path / "root", emulator.url, ids[0])
        # Then it tells the group the instance is unhealthy (the group ignores terminate-on-shutdown), and
        # powers off; the group is not stopped for one failure
        assert f"told the group {names.group} that this instance is unhealthy" in first.stdout, first.stdout
        health = {i["InstanceId"]: i["HealthStatus"] for i in group_now(clients, names)["Instances"]}
        assert health[ids[0]] == "Unhealthy" and health[ids[1]] == "Healthy"
        assert group_now(clients, names)["MaxSize"] == 3
        # And status counts the failure, naming where the records are
        shown = fleet.format_status(fleet.fleet_status(clients))
        assert "bootstrap failed 1 time(s) in the last hour, last at 'installing the pinned dependencies'" in shown

        # When the same build fails to boot twice more within the hour
        fail_to_boot(script, tmp_path / "root", emulator.url, ids[1])
        third = fail_to_boot(script, tmp_path / "root", emulator.url, ids[2])
        # Then the third stops the group: min, max and desired 0, nothing relaunched
        assert "failed to boot 3 times within an hour: stopping the Auto Scaling group" in third.stderr
        group = group_now(clients, names)
        assert (group["MinSize"], group["MaxSize"], group["DesiredCapacity"]) == (0, 0, 0)
        # And `labkit status` says so, where to look and what to do
        status = labkit("status", s=settings)
        assert status.returncode == 0, status.stderr
        prefix = f"s3://{settings.bucket}/logs/health/failed/"
        assert "bootstrap failed 3 time(s) in the last hour" in status.stdout, status.stdout
        assert f"the group {names.group} stopped itself (max 0)" in status.stdout and prefix in status.stdout
        assert "fix and deploy again" in status.stdout

        # When deploy runs again, it starts the group again and says why it had stopped
        report = fleet.deploy(clients, fleet.FleetSpec(autoscale=(0, 3)))
        assert f"auto scaling group {names.group} (min 0, max 3)" in report.updated
        assert any("bootstrap failed 3 time(s)" in n and "had stopped itself and was started again" in n
                   for n in report.notes), report.notes
    finally:
        fleet.undeploy(clients)


@pytest.mark.slow
def test_a_boot_that_fails_before_boto3_is_there_tells_the_group_with_the_aws_cli(
        emulator, settings: Settings, tmp_path: Path) -> None:
    # Given the AWS CLI (Amazon Linux ships it; a failure can come before pip installed boto3)
    tool("aws")
    clients, names, script, ids = group_with_instances(settings, tmp_path, 1)
    try:
        # When a bootstrap gives up and makes its calls with the AWS CLI
        boot = fail_to_boot(script, tmp_path / "root", emulator.url, ids[0], LABKIT_AWS_CLI="1")
        # Then the failure is recorded and the group told, as with boto3
        assert f"told the group {names.group} that this instance is unhealthy" in boot.stdout, boot.stdout + boot.stderr
        assert group_now(clients, names)["Instances"][0]["HealthStatus"] == "Unhealthy"
        failed = clients.s3.list_objects_v2(Bucket=settings.bucket, Prefix="logs/health/failed/")["KeyCount"]
        beat = clients.s3.get_object(Bucket=settings.bucket, Key=f"logs/health/{ids[0]}.json")["Body"].read()
        assert failed == 1 and json.loads(beat)["status"] == "failed"
    finally:
        fleet.undeploy(clients)
