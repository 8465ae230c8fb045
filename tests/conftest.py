"""Fixtures: one real emulator server (HTTP on 127.0.0.1) for the session; per test, queues and a
bucket of its own (unique names) and real worker processes."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labkit.client import Lab
from labkit.config import Settings, read_state
from labkit.emulator import Emulator
from labkit.errors import LabkitError
from labkit.local import wait_serving
from labkit.processes import Child, python_module, settings_env, stop_all
from tests.helpers import ROOT, labkit, provisioned, unique_settings

__all__ = ["ROOT", "settings_env", "unique_settings"]  # re-exported: test files import them from here
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


@pytest.fixture
def settings(emulator: Emulator, tmp_path: Path) -> Settings:
    """Provisioned queues and bucket with names unique to this test."""
    return provisioned(emulator, tmp_path / "state")


@pytest.fixture
def make_settings(emulator: Emulator, tmp_path: Path) -> Callable[..., Settings]:
    """``make_settings(**extra)``: provisioned queues and bucket of this test's own, with fields changed
    (``make_settings(visibility_timeout=3, job_modules=job_kinds.PATH)``); each call makes a new set."""
    made = 0

    def make(**extra: Any) -> Settings:
        nonlocal made
        made += 1
        return provisioned(emulator, tmp_path / ("state" if made == 1 else f"state-{made}"), **extra)

    return make


class WorkerProcess:
    """A real ``python -m worker`` process whose output goes to a log file, with a line per job (``-v``:
    tests count them)."""

    def __init__(self, s: Settings, log: Path, *args: str, verbose: bool = True) -> None:
        args = ("-v", *args) if verbose else args
        self.state_dir = Path(s.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)  # where it says it serves (its ready file)
        self.child = Child.spawn(python_module("worker", "--poll-wait", "1", *args), env=settings_env(s),
                                 log=log, cwd=ROOT, detach=False)
        self.proc = self.child.proc
        self.log_path = log

    @property
    def output(self) -> str:
        return self.child.output

    def wait_for(self, text: str, timeout: float = 30) -> None:
        try:
            self.child.wait_log(text, timeout)
        except LabkitError as exc:
            raise AssertionError(str(exc)) from None

    def wait_serving(self, timeout: float = 30) -> None:
        """Wait until it says it serves: its ready file (``labkit.local.wait_serving``), whatever its log says."""
        try:
            wait_serving([self.child], self.state_dir, timeout)
        except LabkitError as exc:
            raise AssertionError(str(exc)) from None

    def terminate(self, timeout: float = 30) -> int:
        self.child.stop(timeout)
        return self.proc.wait()


@pytest.fixture
def start_worker(settings: Settings, tmp_path: Path) -> Iterator:
    """Start real worker processes on this test's queues; all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(*args: str, s: Settings | None = None, verbose: bool = True) -> WorkerProcess:
        w = WorkerProcess(s or settings, tmp_path / f"worker-{len(started)}.log", *args, verbose=verbose)
        started.append(w)
        w.wait_serving()
        return w

    yield start
    stop_all([w.child for w in started])  # all at once: their receives end together


def event_names(events: list[dict]) -> list[str]:
    """The names of a timeline's events, in order."""
    return [e["event"] for e in events]


FAUXQS_DIR = ROOT / "tests" / "emulators"


def require_tool(available: bool, what: str) -> None:
    """Skip a test whose outside tool is missing on a developer's machine; in CI (CI=true) fail it,
    since .ci/run installs every tool."""
    if not available:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{what} is not installed, and CI must run this test: see .ci/run")
        pytest.skip(f"{what} is not installed (.ci/run installs it)")


@pytest.fixture(scope="session")
def fauxqs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a fauxqs server (an independent SQS/S3 emulator) on 127.0.0.1, for the session."""
    installed = shutil.which("node") is not None and (FAUXQS_DIR / "node_modules" / "fauxqs").is_dir()
    require_tool(installed, "fauxqs (npm)")
    log = tmp_path_factory.mktemp("fauxqs") / "fauxqs.log"
    child = Child.spawn(["node", str(FAUXQS_DIR / "fauxqs.mjs")], log=log, cwd=FAUXQS_DIR, detach=False)
    try:
        child.wait_log("fauxqs listening on ", timeout=30)
        yield child.output.split("fauxqs listening on ", 1)[1].split()[0]
    finally:
        child.stop(10)


@pytest.fixture
def lab(settings: Settings) -> Iterator[Lab]:
    with Lab(settings) as lab:
        yield lab


# -- a student's shell ------------------------------------------------------------------------------

class Student:
    """A shell of a student's: a home, a lab folder, no credentials, no labkit variable set."""

    def __init__(self, root: Path) -> None:
        self.home, self.lab, self.other = root / "home", root / "lab", root / "elsewhere"
        for folder in (self.home, self.lab / "sub", self.other):
            folder.mkdir(parents=True)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AWS_", "LABKIT_")) and k != "XDG_CONFIG_HOME"}
        self.env.update(HOME=str(self.home), AWS_EC2_METADATA_DISABLED="true")

    def run(self, *args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
        return labkit(*args, base=self.env, env=env, cwd=cwd or self.lab)

    @property
    def state(self) -> dict:
        return read_state(self.lab / ".labkit")


@pytest.fixture
def student(tmp_path: Path) -> Iterator[Student]:
    you = Student(tmp_path)
    yield you
    you.run("down")  # whatever a test left running


# -- the fast tier ----------------------------------------------------------------------------------

# Fixtures that reach an emulator, a student's shell or (through ``request.getfixturevalue``) any fixture at all.
NOT_FAST_FIXTURES = {"emulator", "fauxqs", "student", "request"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fast: no emulator, no worker, no labkit process: set by conftest.py on "
                                       "every test that is neither slow nor spawns nor uses an emulator's fixture")
    config.addinivalue_line("markers", "spawns: starts an emulator or a labkit process of its own (no fixture "
                                       "says so): kept out of the fast tier")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the fast tier (``make test-fast``, ``pytest -m fast``): what needs no emulator and no process."""
    for item in items:
        if not (item.get_closest_marker("slow") or item.get_closest_marker("spawns")
                or NOT_FAST_FIXTURES & set(getattr(item, "fixturenames", ()))):
            item.add_marker(pytest.mark.fast)
