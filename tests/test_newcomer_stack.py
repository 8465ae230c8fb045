"""A newcomer's `labkit up` / `down` (issue 20): a broken job module, `up` twice, `down` saying what became of
the data, and commands run from another folder. Real `labkit` processes; a student's lab runs on an embedded
emulator of its own, started the way a student starts it: no --local, no --state-dir, no AWS credentials, in a
folder of its own, with a home of its own (`up` records the lab it started under ~/.config)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labkit.processes import pid_alive
from tests.helpers import labkit

pytestmark = pytest.mark.slow
MY_KINDS = '''from labkit.kinds import job_kind

@job_kind("wordcount")
def wordcount(payload: dict) -> dict:
    return {"words": len(payload["text"].split())}
'''


def test_a_job_module_that_cannot_load_fails_up_with_the_workers_line_and_the_running_worker_stays(student):
    # Given a lab up with one worker, and two broken job modules: one missing, one with a syntax error
    assert student.run("up").returncode == 0
    [old] = student.state["workers"]
    (student.lab / "bad.py").write_text("def broken(:\n")
    for module, said in (("nope.py", f"job module file {student.lab / 'nope.py'} does not exist"),
                         ("bad.py", "SyntaxError: invalid syntax (bad.py, line 1)")):
        # When up runs with it
        out = student.run("up", LABKIT_JOB_MODULES=module)
        # Then up fails with the worker's own line, in one line
        assert out.returncode == 1 and "labkit is up" not in out.stdout
        [line] = out.stderr.splitlines()
        assert line.startswith("labkit: error: a new worker stopped as it started: ") and said in line, line
        assert "the 1 worker(s) already running keep serving (job modules: none)" in line
        assert "`LABKIT_JOB_MODULES= labkit up`" in line
        # And the running worker and the saved setting stay
        assert pid_alive(old["pid"]) and student.state["workers"] == [old]
        assert "job_modules" not in student.state
    # And a sound module replaces the worker, once the new one serves
    (student.lab / "my_kinds.py").write_text(MY_KINDS)
    good = student.run("up", LABKIT_JOB_MODULES="my_kinds.py")
    assert good.returncode == 0, good.stderr
    assert student.state["job_modules"] == [str(student.lab / "my_kinds.py")] and not pid_alive(old["pid"])
    sent = student.run("submit", "numbers", "1", "2")  # the new worker serves
    assert sent.returncode == 0 and json.loads(sent.stdout)["count"] == 2, sent.stderr

    # When the module is gone, a plain `up` (the saved setting) fails and says how to clear it
    (student.lab / "my_kinds.py").unlink()
    assert student.run("down").returncode == 0
    saved = student.run("up")
    assert saved.returncode == 1 and "my_kinds.py does not exist" in saved.stderr
    assert "no worker runs" in saved.stderr and "`LABKIT_JOB_MODULES= labkit up`" in saved.stderr
    # And an empty LABKIT_JOB_MODULES clears it
    cleared = student.run("up", LABKIT_JOB_MODULES="")
    assert cleared.returncode == 0, cleared.stderr
    assert "job_modules" not in student.state and len(student.state["workers"]) == 1


def test_up_up_down_up_knows_its_own_emulator_and_down_says_its_data_went_with_it(student):
    # Given `labkit up` (no credentials: the embedded emulator)
    first = student.run("up")
    assert first.returncode == 0, first.stderr
    emulator = student.state["emulator"]
    # When `up` runs again
    again = student.run("up")
    # Then it takes the emulator for its own: nothing "using moto at ...", the state still local
    assert again.returncode == 0, again.stderr
    assert "moto" not in again.stdout + again.stderr and "using" not in again.stderr
    assert student.state["local"] is True and student.state["emulator"] == emulator
    assert f"labkit is up on {emulator['url']} (the embedded emulator)" in again.stdout
    # When `down` runs, it says the emulator's data is gone
    down = student.run("down")
    assert down.returncode == 0 and not pid_alive(emulator["pid"])
    assert ("deleted the embedded emulator's data with it: its queues, messages and bucket lived in its memory "
            "(the next `labkit up` starts empty)") in down.stdout.splitlines()
    # And the next `up` starts a fresh emulator
    last = student.run("up")
    assert last.returncode == 0, last.stderr
    assert student.state["local"] is True and student.state["emulator"]["pid"] != emulator["pid"]
    assert "created   queue requestQueue" in last.stdout


def test_commands_from_another_folder_find_the_running_lab_and_say_where_its_state_is(student):
    # Given a lab up in its folder
    assert student.run("up").returncode == 0
    state = student.lab / ".labkit" / "state.json"
    # When a subfolder asks for the status: the nearest .labkit above it
    sub = student.run("status", cwd=student.lab / "sub")
    assert sub.returncode == 0, sub.stderr
    assert sub.stdout.startswith(f"state {state} (found above this folder)\n")
    # When a folder elsewhere sends a job, with AWS credentials configured: the lab `up` recorded, not AWS
    keys = {"AWS_ACCESS_KEY_ID": "AKIALABKITFAKEKEY0001", "AWS_SECRET_ACCESS_KEY": "labkitFakeSecret"}
    sent = student.run("submit", "numbers", "1", "5", "22", cwd=student.other, **keys)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["median"] == 5
    status = student.run("status", "--json", cwd=student.other)
    assert json.loads(status.stdout)["state"] == {"file": str(state), "origin": "lab"}
    # And LABKIT_STATE_DIR still wins
    named = student.run("status", cwd=student.lab, LABKIT_STATE_DIR=str(student.other / "mine"))
    assert named.returncode == 1
    assert (f"no AWS credentials found, and state {student.other / 'mine' / 'state.json'} (named by "
            "LABKIT_STATE_DIR) names no running emulator") in named.stderr

    # When the lab is down, a folder elsewhere finds no lab, and says where it looked
    assert student.run("down").returncode == 0
    gone = student.run("submit", "numbers", "1", cwd=student.other)
    assert gone.returncode == 1 and len(gone.stderr.splitlines()) == 1
    assert (f"no AWS credentials found, and no lab found: no .labkit in {student.other} or above it, and none "
            f"recorded in {student.home / '.config' / 'labkit' / 'lab.json'}: start a lab with `labkit up`") \
        in gone.stderr


def test_down_on_a_service_it_did_not_start_says_the_queues_and_bucket_stay(settings):
    # Given labkit up on an endpoint of someone else's (this session's emulator), with this test's names
    up = labkit("up", "--workers", "0", s=settings)
    assert up.returncode == 0, up.stderr
    assert f"using the embedded emulator at {settings.endpoint_url}, not started by this lab" in up.stderr
    # When labkit down runs
    down = labkit("down", s=settings)
    # Then it says what stays there, in one line
    assert down.returncode == 0, down.stderr
    assert (f"kept the queues and the bucket {settings.bucket} on {settings.endpoint_url}, with their messages and "
            "objects (`labkit teardown` deletes them)") in down.stdout.splitlines()
    assert "deleted" not in down.stdout


def test_a_reader_that_goes_away_gets_no_traceback(student):
    # Given a lab, and `labkit status` whose reader stops reading at once (as `labkit status | head -1` does)
    assert student.run("up").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "status"], cwd=student.lab, env=student.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # type: ignore[union-attr]
    err = proc.stderr.read()  # type: ignore[union-attr]
    # Then it ends without a traceback (before: BrokenPipeError's, from print and again at exit)
    assert proc.wait(timeout=60) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err, err
