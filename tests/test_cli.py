"""The `labkit` command, run as a user runs it: real processes, real emulator in the background."""

from __future__ import annotations

import json
import os

import pytest

from labkit.config import read_state
from labkit.processes import pid_alive
from tests.helpers import labkit

pytestmark = pytest.mark.spawns  # every test here runs the command as a process


@pytest.mark.slow
def test_up_submit_status_purge_down(tmp_path):
    sd = str(tmp_path / "state")
    up = labkit("up", "--local", "--state-dir", sd)
    assert up.returncode == 0, up.stderr
    assert "labkit is up on http://127.0.0.1:" in up.stdout
    state = read_state(sd)
    pids = [w["pid"] for w in state["workers"]] + [state["emulator"]["pid"]]
    try:
        assert all(pid_alive(p) for p in pids)
        # A second `up` reuses what runs.
        again = labkit("up", "--local", "--state-dir", sd)
        assert again.returncode == 0 and "created" not in again.stdout
        assert read_state(sd)["emulator"]["pid"] == state["emulator"]["pid"]

        sub = labkit("submit", "numbers", "1", "5", "22", "--state-dir", sd)
        assert sub.returncode == 0, sub.stderr
        r = json.loads(sub.stdout)
        assert {k: r[k] for k in ("count", "min", "max", "median", "sum")} == {
            "count": 3, "min": 1, "max": 22, "median": 5, "sum": 28}
        assert r["mean"] == pytest.approx(28 / 3)
        preset = json.loads(labkit("submit", "numbers", "--preset", "--state-dir", sd).stdout)
        assert (preset["count"], preset["median"]) == (17, 9)
        rnd = json.loads(labkit("submit", "numbers", "--random", "50000", "--seed", "1", "--state-dir", sd).stdout)
        assert rnd["count"] == 50000

        st = labkit("status", "--state-dir", sd)
        assert st.returncode == 0, st.stderr
        assert "requestQueue" in st.stdout and "dead-letter" in st.stdout and "1 local running" in st.stdout
        st_json = json.loads(labkit("status", "--json", "--state-dir", sd).stdout)
        assert st_json["queues"]["requestQueue"]["dead_letter"] == 0

        purge = labkit("purge", "all", "--state-dir", sd)
        assert purge.returncode == 0 and "requestQueue" in purge.stdout
        twice = labkit("purge", "requests", "--state-dir", sd)
        assert twice.returncode == 1 and "60 s" in twice.stderr, twice.stderr
        # each queue's outcome is printed: the refused one with why, and when to try again
        assert "requestQueue  refused: purged less than 60 s ago" in twice.stdout and "try again" in twice.stdout
        assert [line.split()[1] for line in purge.stdout.splitlines()[3:]] == ["purged"] * 4
    finally:
        down = labkit("down", "--state-dir", sd)
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(p) for p in pids), "a process survived `labkit down`"
    assert "emulator" not in read_state(sd)


def test_help_documents_every_command():
    out = labkit("--help")
    assert out.returncode == 0
    for cmd in ("up", "down", "status", "worker", "submit", "purge", "emulator", "teardown"):
        assert cmd in out.stdout
        sub = labkit(cmd, "--help")
        assert sub.returncode == 0 and "usage: labkit" in sub.stdout, cmd
    assert "--random" in labkit("submit", "numbers", "--help").stdout
    assert "--op" in labkit("submit", "image", "--help").stdout


@pytest.mark.parametrize("args, fragment", [
    (["submit", "numbers", "1", "x"], "item 2 is not a number: 'x'"),
    (["submit", "numbers"], "give numbers"),
    (["submit", "numbers", "--random", "0"], "at least 1"),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, args, fragment, emulator):
    out = labkit(*args, "--state-dir", str(tmp_path), env={"LABKIT_ENDPOINT_URL": emulator.url})
    assert out.returncode == 1
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_missing_queue_is_a_clear_error(tmp_path, emulator):
    env = {"LABKIT_ENDPOINT_URL": emulator.url, "LABKIT_REQUEST_QUEUE": "noSuchQueue"}
    out = labkit("submit", "numbers", "1", "--state-dir", str(tmp_path), env=env)
    assert out.returncode == 1
    assert "noSuchQueue" in out.stderr and "labkit up" in out.stderr and "Traceback" not in out.stderr


def test_unreachable_endpoint_is_a_clear_error(tmp_path):
    env = {"LABKIT_ENDPOINT_URL": "http://127.0.0.1:9"}
    out = labkit("submit", "numbers", "1", "--state-dir", str(tmp_path), env=env)
    assert out.returncode == 1
    assert "cannot reach" in out.stderr and "Traceback" not in out.stderr


def test_up_without_credentials_chooses_the_emulator(tmp_path):
    # Given no endpoint and no credentials anywhere
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true")
    sd = str(tmp_path / "state")
    try:
        out = labkit("up", "--workers", "0", "--state-dir", sd, base=env)
        assert out.returncode == 0, out.stderr
        assert read_state(sd)["local"] is True
    finally:
        labkit("down", "--state-dir", sd, base=env)
