"""labkit meets what AWS documents and the emulators skip (tests/aws_faults.py makes the emulator answer as AWS
does, in each real process: the CLI, the workers it starts, a client's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.aws_faults import fault_env, injected
from tests.conftest import Student

pytestmark = pytest.mark.slow

# A client that sends three jobs at once through the lab's state, and says how its reply queue fared.
CLIENT = """
from labkit import Lab
with Lab() as lab:
    jobs = [lab.numbers([i, 2 * i, 3 * i]) for i in range(1, 4)]
    print([j.result(timeout=60)["max"] for j in jobs], "replaced", lab.replies.replaced)
"""


def test_new_queues_absent_for_a_moment_as_on_aws_are_waited_for_not_taken_for_deleted_ones(
        student: Student, tmp_path: Path) -> None:
    # Given every process meeting SQS's "wait a second after creating a queue" (each new queue absent 1.5 s)
    faults = tmp_path / "faults"
    env = fault_env(faults, new_queue_absent_s=1.5)
    # When a student's `labkit up` makes the queues and starts a worker
    up = student.run("up", **env)
    # Then it is up (before: "get_queue_attributes on requestQueue-dlq: The specified queue does not exist")
    assert up.returncode == 0, up.stdout + up.stderr
    assert injected(faults, "NonExistentQueue") > 0  # the fault did happen
    # When a client makes its reply queue and sends jobs at once
    seen = injected(faults, "NonExistentQueue")
    client = subprocess.run([sys.executable, "-c", CLIENT], cwd=student.lab, env={**student.env, **env},
                            capture_output=True, text=True, timeout=180)
    # Then each job is answered once, through the one reply queue it made: not taken for a deleted queue
    # (before: "reply queue ... was deleted (someone's teardown?)", a second queue, every job sent again)
    assert client.returncode == 0, client.stderr
    assert injected(faults, "NonExistentQueue") > seen
    assert client.stdout.split() == ["[3,", "6,", "9]", "replaced", "0"], client.stdout
    assert "teardown" not in client.stderr, client.stderr
