"""``labkit doctor`` (issue 21, item 1), run as a real process: on the emulator it finds nothing to stop a class and
exits 0; an exhausted EC2 vCPU quota, answered as AWS answers it (tests/aws_quota.py), is a blocker and exit status
1; on an emulator that enforces IAM (tests/iam_emulator.py), the permissions a deployer lacks show in their
command's row, found by EC2's dry run and by harmless reads (moto does not implement IAM's policy simulator)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from labkit import doctor as doctor_rows
from labkit import provision, widgets
from labkit.aws import permissions
from labkit.aws.clients import Clients
from labkit.config import Settings
from labkit.fleet.deployer import deployer_policy
from labkit.processes import settings_env
from tests.aws_quota import quota_env
from tests.helpers import labkit
from tests.iam_emulator import ACCOUNT, IamEmulator, as_moto_sees_it, iam_emulator, keys_env
from tests.test_iam import names


def doctor(s: Settings, *args: str, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``labkit doctor ARGS`` as a real process pointed at ``s``."""
    return labkit("doctor", *args, s=s, env=extra)


def rows(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    """``labkit doctor --json``'s rows by check; no traceback."""
    assert "Traceback" not in out.stderr, out.stderr
    return {r["check"]: r for r in json.loads(out.stdout)}


def test_on_the_emulator_the_doctor_finds_nothing_to_stop_a_class(settings: Settings) -> None:
    # Given a lab on the emulator (queues and bucket made)
    # When the instructor runs the doctor
    out = doctor(settings)
    # Then one table, every row ok, and exit status 0
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    table = out.stdout
    for check in ("credentials", "region", "permissions: up", "permissions: deploy", "permissions: undeploy",
                  "permissions: teardown", "instance type", "EC2 vCPU quota", "bucket", "AWS Academy", "versions"):
        assert f"\n{check} " in table, table
    assert table.strip().splitlines()[-1] == "all 11 checks ok", table
    got = rows(doctor(settings, "--json"))
    assert {r["status"] for r in got.values()} == {"ok"}, got
    # And it says honestly what it could not check here: moto has no policy simulator and no EC2 quotas
    assert "not simulated here" in got["permissions: deploy"]["found"]
    assert "ec2:RunInstances (dry run)" in got["permissions: deploy"]["found"]
    assert "the emulator has no quotas" in got["EC2 vCPU quota"]["found"]
    assert got["bucket"]["found"] == f"{settings.bucket}: there, and this account's"
    assert "account 123456789012" in got["credentials"]["found"]
    assert "moto 5." in got["versions"]["found"]


def test_the_setup_panel_shows_the_same_table(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    # Given 00_setup's panel on the emulator's lab
    for var, value in settings_env(settings, base={}).items():
        monkeypatch.setenv(var, value)
    panel = widgets.SetupPanel(state_dir=settings.state_dir)
    # When the notebook's preflight cell runs
    checks = panel.doctor(workers=2)
    # Then it returns the rows and shows them as the CLI's table, with its line
    assert [c.check for c in checks][:2] == ["credentials", "region"] and not doctor_rows.blocked(checks)
    shown = capsys.readouterr().out  # outside a notebook, IPython's display prints each bundle
    assert "labkit doctor\\ncheck" in shown and all(c.found in shown for c in checks), shown
    assert "{'text/plain': 'all 11 checks ok'" in shown, shown


def test_an_exhausted_vcpu_quota_is_a_blocker(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an account whose EC2 quota for On-Demand standard instances is 1 vCPU (Service Quotas answers it as
    # AWS does: tests/aws_quota.py, the only way to have a quota on moto)
    quota = quota_env(1)
    # When the instructor plans 2 t3.micro workers (2 vCPUs each)
    out = doctor(settings, "--workers", "2", "--json", extra=quota)
    # Then the quota row is a blocker saying what to do, and the doctor exits 1
    assert out.returncode == 1, out.stdout + out.stderr
    row = rows(out)["EC2 vCPU quota"]
    assert row["status"] == "blocker"
    assert row["found"] == "the fleet needs 4 vCPUs (2 x t3.micro, 2 vCPUs each); the quota is 1, 0 running now"
    assert "ask for an increase" in row["todo"] and "L-1216C47A" in row["todo"]
    text = doctor(settings, "--workers", "2", extra=quota)
    assert text.returncode == 1 and text.stdout.strip().splitlines()[-1].startswith("error: 1 blocker(s): EC2 vCPU "
                                                                                     "quota"), text.stdout
    # And with a quota of 8 vCPUs the same plan is ok
    assert rows(doctor(settings, "--workers", "2", "--json", extra=quota_env(8)))["EC2 vCPU quota"]["status"] == "ok"

    # And the plugin answers EC2 as AWS does: a dry run is DryRunOperation, a real launch past the quota
    # VcpuLimitExceeded (nothing launched)
    for var, value in quota.items():
        monkeypatch.setenv(var, value)
    ec2 = boto3.client("ec2", endpoint_url=settings.endpoint_url, region_name=settings.region)
    image = ec2.describe_images()["Images"][0]["ImageId"]
    for dry, code in ((True, "DryRunOperation"), (False, "VcpuLimitExceeded")):
        with pytest.raises(ClientError) as err:
            ec2.run_instances(ImageId=image, InstanceType="t3.micro", MinCount=2, MaxCount=2, DryRun=dry)
        assert err.value.response["Error"]["Code"] == code


# -- an emulator that enforces IAM -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamEmulator]:
    with iam_emulator(tmp_path_factory.mktemp("iam-emulator") / "emulator.log") as emu:
        yield emu


def without(policy: dict[str, Any], *actions: str) -> dict[str, Any]:
    """``policy`` with ``actions`` taken out of every statement."""
    statements = [{**st, "Action": [a for a in st["Action"] if a not in actions]} for st in policy["Statement"]]
    return {**policy, "Statement": [st for st in statements if st["Action"]]}


@pytest.mark.slow
def test_denied_permissions_show_in_their_commands_rows(iam: IamEmulator, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the instructor's lab (made with the administrator's keys)
    for var, value in keys_env(iam.admin).items():
        monkeypatch.setenv(var, value)
    s = names(iam, tmp_path / "state")
    provision.ensure(Clients(s))
    full = as_moto_sees_it(deployer_policy(s, s.bucket or "", ACCOUNT))
    # And a deployer whose policy lacks ec2:RunInstances and sqs:ListQueues
    lacking = iam.user(f"lacking-{s.bucket}", without(full, "ec2:RunInstances", "sqs:ListQueues"))
    # When the doctor runs with those credentials
    out = doctor(s, "--json", extra=keys_env(lacking))
    # Then deploy's row names the launch its dry run was refused, teardown's the listing, and the doctor exits 1
    assert out.returncode == 1, out.stdout + out.stderr
    got = rows(out)
    deploy, teardown = got["permissions: deploy"], got["permissions: teardown"]
    assert deploy["status"] == teardown["status"] == "blocker", got
    assert deploy["found"].startswith("denied: ec2:RunInstances (dry run: AccessDenied); not simulated here"), deploy
    assert teardown["found"].startswith("denied: sqs:ListQueues (read: AccessDenied); not simulated here"), teardown
    assert deploy["todo"].startswith("attach `labkit policy deployer --command deploy` to arn:aws:iam::")
    # And what it may do is ok: up and undeploy, the bucket, the credentials
    assert {got[c]["status"] for c in ("permissions: up", "permissions: undeploy", "bucket", "credentials")} == {"ok"}
    # And the doctor's own reads are in deploy's part of the deployer policy (its Preflight statement): the quota
    # and the zones are read, not warned about
    assert got["EC2 vCPU quota"]["status"] == got["region"]["status"] == "ok", got

    # When a deployer holding the whole deployer policy runs it, no permission row is a blocker
    whole = iam.user(f"whole-{s.bucket}", full)
    got = rows(doctor(s, "--json", extra=keys_env(whole)))
    assert {r["status"] for name, r in got.items() if name.startswith("permissions")} == {"ok"}, got


def test_the_simulator_is_asked_about_the_role_behind_a_session() -> None:
    # IAM's policy simulator takes a user or a role, never an assumed-role session (AWS Academy's voclabs)
    session = "arn:aws:sts::123456789012:assumed-role/voclabs/user1234567=student@example.edu"
    assert permissions.principal(session) == "arn:aws:iam::123456789012:role/voclabs"
    user = "arn:aws:iam::123456789012:user/instructor"
    assert permissions.principal(user) == user
