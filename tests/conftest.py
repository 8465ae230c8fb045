"""Fixtures: one real emulator server (HTTP on 127.0.0.1) for the session; per test, queues and a
bucket of its own (unique names) and real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit import provision
from labkit.aws.clients import Clients
from labkit.client import Lab
from labkit.config import Settings
from labkit.emulator import Emulator

ROOT = Path(__file__).resolve().parents[1]
# Known fake credentials: the security tests grep every produced file for them.
FAKE_KEY_ID = "AKIALABKITFAKEKEY0001"
FAKE_SECRET = "labkitFakeSecretValueDoNotLeak0000000001"
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
os.environ["AWS_ACCESS_KEY_ID"] = FAKE_KEY_ID
os.environ["AWS_SECRET_ACCESS_KEY"] = FAKE_SECRET
for var in ("AWS_ENDPOINT_URL", "LABKIT_ENDPOINT_URL", "AWS_PROFILE", "LABKIT_BUCKET", "LABKIT_STATE_DIR"):
    os.environ.pop(var, None)


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


def unique_settings(emulator: Emulator, state_dir: Path, **extra: object) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings.load(
        state_dir=state_dir, endpoint_url=emulator.url, env={},
        request_queue=f"requestQueue-{tag}", response_queue=f"responseQueue-{tag}",
        image_inbox=f"imageInbox-{tag}", image_outbox=f"imageOutbox-{tag}", bucket=f"labkit-test-{tag}", **extra,
    )


@pytest.fixture
def settings(emulator: Emulator, tmp_path: Path) -> Settings:
    """Provisioned queues and bucket with names unique to this test."""
    s = unique_settings(emulator, tmp_path / "state")
    provision.ensure(Clients(s))
    return s


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that points a subprocess at ``s``."""
    return {
        **os.environ,
        "LABKIT_ENDPOINT_URL": s.endpoint_url or "",
        "LABKIT_REQUEST_QUEUE": s.request_queue, "LABKIT_RESPONSE_QUEUE": s.response_queue,
        "LABKIT_IMAGE_INBOX": s.image_inbox, "LABKIT_IMAGE_OUTBOX": s.image_outbox,
        "LABKIT_BUCKET": s.bucket or "", "LABKIT_STATE_DIR": str(s.state_dir),
        "PYTHONUNBUFFERED": "1",
    }


class WorkerProcess:
    """A real ``python -m worker`` process whose output goes to a log file."""

    def __init__(self, s: Settings, log: Path, *args: str) -> None:
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 (closed in terminate)
        self.proc = subprocess.Popen([sys.executable, "-m", "worker", "--poll-wait", "1", *args],
                                     env=settings_env(s), stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker never logged {text!r}; log:\n{self.output[-3000:]}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._log.close()
        return code


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator:
    """Start real worker processes on this test's queues; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(*args: str, s: Settings | None = None) -> WorkerProcess:
        w = WorkerProcess(s or settings, tmp_path / f"worker-{len(started)}.log", *args)
        started.append(w)
        w.wait_for("serving")
        return w

    yield start
    for w in started:
        w.terminate()


@pytest.fixture
def lab(settings: Settings) -> Iterator[Lab]:
    with Lab(settings) as lab:
        yield lab
