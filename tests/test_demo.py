"""`labkit demo`, as the README gives it: the main job on an emulator of its own, from start to stop."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.helpers import labkit

pytestmark = pytest.mark.slow


def demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return labkit("demo", *args, cwd=cwd, env={"AWS_EC2_METADATA_DISABLED": "true"}, timeout=300)


def test_the_demo_runs_the_main_job_and_says_how_the_random_list_travelled(tmp_path: Path) -> None:
    # When the README's `labkit demo` runs (a random list of 100,000: more than travels in a message)
    out = demo(tmp_path)
    # Then every job is answered, the list went through S3, the image is downloaded and nothing is left running
    assert out.returncode == 0, out.stdout + out.stderr
    assert "a random list of 100,000 integers (sent through S3 as .npy):" in out.stdout
    assert '"count": 100000' in out.stdout and "image job: s3://" in out.stdout
    assert (tmp_path / "runs" / "demo" / "demo-gradient-processed.png").stat().st_size > 0
    assert "nothing left running" in out.stdout
    # And a short list says it went in the message (it did not go through S3: labkit.client.ARRAY_THRESHOLD)
    short = demo(tmp_path, "--random-length", "50")
    assert short.returncode == 0, short.stdout + short.stderr
    assert "a random list of 50 integers (sent in the message):" in short.stdout
