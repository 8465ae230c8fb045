"""Session credentials that expire (issue 18, item 3): not an outage. The worker says once what to do, waits
for renewed credentials from the shared credentials file and serves again without a restart, or stops and
``labkit status`` says why; a client waiting on a job gets the one line, not a timeout; ``status`` shows the
credentials' kind and, where known, their expiry (never a key).

How the AWS credential path runs against the emulator: labkit signs requests to an emulator on this machine with
fixed fake keys (``labkit.aws.clients.emulator_credentials``), never with the environment's AWS credentials.
``LABKIT_EMULATOR_PROFILE`` names a profile of the shared credentials file to sign them with instead; the keys are
then found, read and renewed by the same code as on AWS (``credential_session``: botocore's shared-credentials
provider, method ``shared-credentials-file``, as for ``AWS_PROFILE`` on AWS). The expiry itself is made by the
AWS-fault plugin (``tests/aws_faults.py``, ``expire``), in each real process: from that moment every call signed
with the old key is answered ``ExpiredToken`` / ``ExpiredTokenException`` as AWS answers it, and a process signing
with a renewed key is served.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, UnauthorizedSSOTokenError

from labkit import provision
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.config import Settings
from labkit.errors import AwsError, CredentialsError, CredentialsExpired, credentials_error
from labkit.presenters import credentials_line
from labkit.processes import Child
from labkit.waiting import wait_for
from tests.aws_faults import expire, fault_env
from tests.conftest import Student, unique_settings
from worker.outage import EXIT_CREDENTIALS, is_transient

OLD, NEW = "ASIAEXPIRINGKEY00001", "ASIARENEWEDKEY000002"  # access keys of two sessions (fake)
PROFILE = "student"
# A client that sends a job of 2 s, says so, waits for the test to expire its keys, then waits for the result.
WAITING_CLIENT = """
import sys, time
from labkit import Lab
with Lab() as lab:
    job = lab.submit("sleep", {"seconds": 2})
    print("sent", flush=True)
    sys.stdin.readline()
    try:
        print(job.result(timeout=60))
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}")
"""
NUMBERS_CLIENT = """
from labkit import Lab
with Lab() as lab:
    print(lab.numbers([4, 8, 15]).result(timeout=60)["max"])
"""


def write_keys(path: Path, key: str, token: bool = True) -> None:
    """The shared credentials file as AWS Academy's "AWS Details" gives it (session keys), or long-term keys."""
    path.write_text(f"[{PROFILE}]\naws_access_key_id = {key}\naws_secret_access_key = secret-of-{key}\n"
                    + (f"aws_session_token = token-of-{key}\n" if token else ""))


def session_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A student's processes: the fault layer, session keys in a shared credentials file, the sleep job kind."""
    write_keys(tmp_path / "credentials", OLD)
    return {**fault_env(tmp_path / "faults"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "credentials"),
            "LABKIT_EMULATOR_PROFILE": PROFILE, "LABKIT_JOB_MODULES": "tests.job_kinds", **extra}


def assert_no_key(*texts: str) -> None:
    for text in texts:
        for key in (OLD, NEW):
            assert key not in text and f"secret-of-{key}" not in text and f"token-of-{key}" not in text


def lines_with(text: str, part: str) -> list[str]:
    return [line for line in text.splitlines() if part in line]


@pytest.mark.slow
def test_expired_session_keys_are_said_once_a_waiting_client_fails_at_once_and_renewed_ones_are_served(
        student: Student, tmp_path: Path) -> None:
    # Given a lab up on the emulator, every process signing with session keys from the shared credentials file
    env = session_env(tmp_path)
    up = student.run("up", "--local", **env)
    assert up.returncode == 0, up.stdout + up.stderr
    log = student.lab / ".labkit" / "logs" / "worker-0.log"
    pid = student.state["workers"][0]["pid"]
    # When the session expires while a client waits on a job
    client = subprocess.Popen([sys.executable, "-c", WAITING_CLIENT], cwd=student.lab, env={**student.env, **env},
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert client.stdout is not None and client.stdout.readline().strip() == "sent"
    expire(tmp_path / "faults", OLD)
    out, err = client.communicate("\n", timeout=120)
    # Then the client gets the one line that says what to do (before: a JobTimeout after 60 s)
    assert out.startswith("CredentialsExpired: your AWS session credentials expired"), out + err
    assert "renew them" in out and "~/.aws/credentials" in out and len(out.strip().splitlines()) == 1
    # And the worker says it once, with what to do (before: a warning per lane every 5 s, for ever)
    wait_for(lambda: "credentials expired" in log.read_text(), 30, "the worker to say its credentials expired")
    status = student.run("status", **env)
    # And `status` shows the credentials' kind, that their expiry is unknown, and that the worker waits for new ones
    assert status.returncode == 1, status.stdout + status.stderr
    assert status.stderr.startswith("labkit: error: your AWS session credentials expired")
    assert len(status.stderr.strip().splitlines()) == 1, status.stderr
    assert f"session keys (temporary) from the shared credentials file, profile {PROFILE}; expiry unknown" \
        in status.stdout, status.stdout
    assert f"worker {pid}: waiting for renewed AWS credentials since" in status.stdout, status.stdout
    # When the student copies the new session's keys into the file
    write_keys(tmp_path / "credentials", NEW)
    # Then the same worker (no restart) picks them up and says so once
    wait_for(lambda: "serving again" in log.read_text(), 30, "the worker to pick up the renewed credentials")
    after = student.run("status", "--json", **env)
    assert after.returncode == 0, after.stdout + after.stderr
    st = json.loads(after.stdout)
    assert [w["pid"] for w in st["workers"]] == [pid] and st["worker_notes"] == []
    # And the job whose answer could not be sent was not deleted: its request is still in its kind's queue
    request = st["queues"]["requestQueue-kind-sleep"]
    assert request["visible"] + request["in_flight"] == 1, request
    # And it serves again: a new client's job is answered
    numbers = subprocess.run([sys.executable, "-c", NUMBERS_CLIENT], cwd=student.lab, env={**student.env, **env},
                             capture_output=True, text=True, timeout=120)
    assert numbers.stdout.strip() == "15", numbers.stdout + numbers.stderr
    text = log.read_text()
    assert len(lines_with(text, "credentials expired")) == 1, text
    assert len(lines_with(text, "AWS credentials renewed")) == 1, text
    assert_no_key(text, out, err, status.stdout, status.stderr, after.stdout)


@pytest.mark.slow
def test_a_worker_whose_credentials_are_not_renewed_stops_and_status_says_why(student: Student,
                                                                            tmp_path: Path) -> None:
    # Given a lab whose worker waits one second for renewed credentials
    env = session_env(tmp_path, LABKIT_CREDENTIALS_WAIT="1")
    up = student.run("up", "--local", **env)
    assert up.returncode == 0, up.stdout + up.stderr
    record = student.state["workers"][0]
    worker = Child.from_record(record)
    assert worker is not None
    # When its session expires and nobody renews it
    expire(tmp_path / "faults", OLD)
    # Then it stops (before: it warned every few seconds, for ever, and `status` said it runs)
    wait_for(lambda: not worker.alive(), 60, "the worker to stop")
    status = student.run("status", **env)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "0 local running" in status.stdout, status.stdout
    assert f"worker {record['pid']} stopped at" in status.stdout, status.stdout
    assert f"(exit status {EXIT_CREDENTIALS}): its AWS credentials expired at" in status.stdout, status.stdout
    text = (student.lab / ".labkit" / "logs" / "worker-0.log").read_text()
    assert len(lines_with(text, "credentials expired")) == 2, text  # the first refusal, and why it stops
    assert f"this worker stops (exit status {EXIT_CREDENTIALS})" in text, text
    assert_no_key(text, status.stdout, status.stderr)


def test_a_running_process_signs_with_keys_renewed_in_the_shared_file_without_a_restart(
        emulator: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a process whose clients sign with session keys from the shared credentials file (a notebook's Lab)
    for var, value in session_env(tmp_path).items():
        monkeypatch.setenv(var, value)
    s: Settings = unique_settings(emulator, tmp_path / "state")  # type: ignore[arg-type]
    provision.ensure_queues(Clients(s))
    clients = Clients(s)
    queue = Queue.by_name(clients.sqs, s.request_queue)
    # When its session expires
    expire(tmp_path / "faults", OLD)
    # Then a call says so in the one line (an AwsError still, for the code that catches those)
    with pytest.raises(CredentialsExpired, match="renew them") as refused:
        queue.depth()
    assert isinstance(refused.value, AwsError) and clients.refused_now
    # When new keys are written into the file, the same clients sign with them (before: refused until a restart)
    write_keys(tmp_path / "credentials", NEW)

    def served() -> bool:
        try:
            queue.depth()
        except CredentialsError:
            return False
        return True
    wait_for(served, 15, "the clients to sign with the renewed keys")
    assert not clients.refused_now


@pytest.mark.parametrize(("code", "error"), [
    ("ExpiredToken", CredentialsExpired), ("ExpiredTokenException", CredentialsExpired),
    ("RequestExpired", CredentialsExpired), ("TokenRefreshRequired", CredentialsExpired),
    # A key AWS does not know is no expiry (the line must not say so), but no outage either: new keys mend it.
    ("InvalidClientTokenId", CredentialsError), ("UnrecognizedClientException", CredentialsError),
    ("ThrottlingException", None), ("AccessDenied", None), ("AWS.SimpleQueueService.NonExistentQueue", None)])
def test_refused_credentials_are_told_from_outages_and_refusals_in_one_place(code: str, error: type | None) -> None:
    exc = ClientError({"Error": {"Code": code, "Message": "AWS's words"}}, "ReceiveMessage")
    wrapped = AwsError.from_client_error(exc, "receiving from requestQueue")
    found = credentials_error(exc)
    if error is None:
        assert found is None and type(wrapped) is AwsError
        return
    assert type(found) is error and type(wrapped) is error and wrapped.code == code
    assert not is_transient(exc) and not is_transient(wrapped)  # not an outage: no retrying
    assert "renew them" in str(wrapped) and len(str(wrapped).splitlines()) == 1
    assert ("expired" in str(wrapped)) == (error is CredentialsExpired)
    if code == "RequestExpired":  # EC2 also says so of a clock more than 15 minutes off
        assert "clock" in str(wrapped)


def test_an_sso_session_botocore_cannot_refresh_is_an_expiry() -> None:
    found = credentials_error(UnauthorizedSSOTokenError())
    assert type(found) is CredentialsExpired and "aws sso login" in str(found)


def test_status_names_the_kind_of_credentials_and_their_expiry_where_known_never_a_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # AWS's own credential chain (no endpoint), through AWS_PROFILE, as on a student's laptop
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LABKIT_EMULATOR_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    credentials, config = tmp_path / "credentials", tmp_path / "config"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", PROFILE)
    aws = Settings.load(env={}, state_dir=tmp_path / "state")

    def described() -> tuple[dict, str]:
        info = Clients(aws).describe_credentials()
        return info, credentials_line(info)
    write_keys(credentials, OLD, token=False)
    info, line = described()
    assert info["kind"] == "long-term keys" and info["expires"] is None
    assert line == f"long-term keys from the shared credentials file, profile {PROFILE}"
    write_keys(credentials, OLD)
    info, line = described()
    assert info["kind"] == "session keys (temporary)" and info["expires"] is None and "expiry unknown" in line
    # Credentials botocore refreshes itself say when they expire: a credential_process (a real process) here
    credentials.write_text("")
    expiration = "2030-01-02T03:04:05Z"
    process = {"Version": 1, "AccessKeyId": NEW, "SecretAccessKey": "s", "SessionToken": "t", "Expiration": expiration}
    config.write_text(f"[profile {PROFILE}]\ncredential_process = {sys.executable} -c "
                      f"\"print('{json.dumps(process).replace(chr(34), chr(92) + chr(34))}')\"\n")
    info, line = described()
    assert info["kind"] == "temporary (credential_process)" and info["refreshed"], info
    assert info["expires"] == 1893553445.0
    assert "expire 2030-01-02 03:04 UTC" in line and "renewed automatically" in line, line
    # The emulator's own fixed keys
    local = Clients(Settings.load(env={}, endpoint_url="http://127.0.0.1:9", state_dir=tmp_path / "state"))
    assert local.describe_credentials()["kind"] == "emulator keys"
    assert_no_key(line, json.dumps(info))


SSO_CONFIG = """[profile class]
sso_session = class
sso_account_id = 123456789012
sso_role_name = Student
region = us-east-1
[sso-session class]
sso_start_url = https://example.awsapps.com/start
sso_region = us-east-1
"""


@pytest.mark.parametrize("command", [["submit", "numbers", "1", "2"], ["purge"], ["download", "x.png"], ["up", "--aws"],
                                     ["deploy", "--workers", "1"], ["undeploy"], ["teardown", "--yes"]])
def test_an_sso_session_that_ended_is_one_line_from_every_command(student: Student, command: list[str]) -> None:
    # Given a student's SSO profile whose session ended (no token in the cache: botocore cannot refresh it, and
    # raises while it looks for credentials, before any call)
    (student.home / ".aws").mkdir()
    (student.home / ".aws" / "config").write_text(SSO_CONFIG)
    # When a command runs (before: botocore's SSOTokenLoadError with its traceback)
    out = student.run(*command, AWS_PROFILE="class")
    # Then it says in one line what to do
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "aws sso login" in out.stderr.splitlines()[-1], out.stderr
