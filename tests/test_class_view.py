"""The instructor's view (issue 21, item 3): ``labkit status --class`` lists every student's reply queue with its last
activity, each lane's jobs waiting, in flight and dead, the fleet's size and health, and the day's cost so far.

Forty real clients (``Lab`` objects on threads, each with its own reply queue) on an emulator of this test's own
(``labkit emulator`` as a process: the session's emulator holds every other test's reply queues), a real worker,
a fleet deployed with the real ``labkit deploy``, and the real ``labkit status --class`` process. Three things are
put in place by hand, each as AWS or the bootstrap would leave it: five reply queues whose last-seen tag is two
hours old (students who left: a client refreshes its tag every 5 minutes while it runs), a dead letter (a request
SQS moved to the dead-letter queue after its receives ran out) and a failed boot's record (what bootstrap.sh writes
before it powers an instance off).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from labkit import costs, emulator, provision, widgets
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.aws.storage import Bucket
from labkit.classview import QUIET_AFTER, day_cost, day_start
from labkit.client import Lab
from labkit.config import DLQ_SUFFIX, Settings, read_state
from labkit.fleet.health import FAILED_PREFIX
from labkit.fleet.student import student_policy
from labkit.presenters import class_tables
from tests.conftest import WorkerProcess, settings_env
from tests.helpers import labkit
from tests.iam_emulator import ACCOUNT, as_moto_sees_it, iam_emulator, keys_env
from tests.test_iam import names

CLIENTS, QUIET, WAITING = 40, 5, 10  # clients; of them gone quiet; jobs left waiting once the worker stopped


@pytest.fixture
def class_settings(tmp_path: Path) -> Iterator[Settings]:
    """Provisioned queues and bucket on an emulator process of this test's own, stopped at the end."""
    child, url = emulator.spawn(tmp_path / "emulator")
    try:
        s = Settings.load(state_dir=tmp_path / "state", endpoint_url=url, env={}, bucket="labkit-class-view")
        provision.ensure(Clients(s))
        yield s
    finally:
        child.stop(10)


def run_class(labs: list[Lab], s: Settings, tmp_path: Path) -> None:
    """The class's morning: five students open a notebook and leave (tagged as last seen two hours ago, one with an
    answer left in its queue), the others each send a number job and get its answer from a worker; the worker is
    stopped, then ten students send one more job each, which waits in the lane."""
    for lab in labs[:QUIET]:
        lab.reply_queue.tag({provision.LAST_SEEN_TAG: str(int(time.time()) - 2 * 3600)})
    labs[0].reply_queue.send('{"late": "an answer that came after its student left"}')
    worker = WorkerProcess(s, tmp_path / "worker.log", "--queues", "numbers")
    worker.wait_serving()
    answers: dict[int, float] = {}

    def student(i: int) -> None:
        answers[i] = labs[i].numbers([i, i + 1, i + 2]).result(timeout=120)["min"]
    threads = [threading.Thread(target=student, args=(i,)) for i in range(QUIET, CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert answers == {i: i for i in range(QUIET, CLIENTS)}
    worker.terminate()
    for lab in labs[QUIET:QUIET + WAITING]:
        lab.numbers([1, 2])


@pytest.mark.slow  # about 30 s: forty clients, a worker, a deploy and two CLI processes
def test_status_class_shows_forty_clients_the_lanes_the_fleet_and_the_days_cost(
        class_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    s = class_settings
    clients = Clients(s)
    # Given a fleet (an Auto Scaling group of 1 to 3 with a cost guard; on the emulator its instance never boots)
    deployed = labkit("deploy", "--autoscale", "1:3", "--hours", "2", s=s)
    assert deployed.returncode == 0, deployed.stderr
    # and a failed boot of its build a minute ago, as bootstrap.sh records it
    build = read_state(s.state_dir)["fleet"]["build"]
    Bucket(clients.s3, s.bucket or "").put(f"{FAILED_PREFIX}{build}/{int(time.time()) - 60}-i-0failedboot.json",
                                           json.dumps({"status": "failed", "step": "pip install",
                                                       "instance": "i-0failedboot", "attempts": 5}).encode())
    labs = [Lab(s) for _ in range(CLIENTS)]
    try:
        # and forty students: five gone quiet, thirty-five answered, ten with a job waiting (the worker stopped)
        run_class(labs, s, tmp_path)
        order = [lab.reply_queue.name for lab in labs]
        lane = Queue.by_name(clients.sqs, s.request_queue)
        # and a worker elsewhere holding one of those jobs, and a request SQS moved to the dead-letter queue
        assert len(lane.receive(1, wait=1, visibility=600)) == 1
        Queue.by_name(clients.sqs, s.request_queue + DLQ_SUFFIX).send('{"id": "poison"}')

        # When the instructor looks at the class
        shown = labkit("status", "--class", s=s)
        as_json = labkit("status", "--class", "--json", s=s)
        # and 00_setup's panel (pointed at the same lab as the command, through the same variables)
        for var, value in settings_env(s).items():
            if var.startswith("LABKIT_"):
                monkeypatch.setenv(var, value)
        panel_view = widgets.SetupPanel(state_dir=s.state_dir, backend="auto").class_view()
        panel_out = capsys.readouterr().out
    finally:
        for lab in labs:
            lab.close()
    assert shown.returncode == 0 and as_json.returncode == 0, shown.stderr + as_json.stderr
    out, view = shown.stdout, json.loads(as_json.stdout)

    # Then it lists the forty reply queues, each with its last activity, and names the five gone quiet
    names, gone = set(order), set(order[:QUIET])
    rows = [line for line in out.splitlines() if line.startswith("labkit-reply-")]
    assert len(rows) == CLIENTS and {r.split()[0] for r in rows} == names
    assert f"Students' reply queues: {CLIENTS} ({CLIENTS - QUIET} active, {QUIET} gone quiet" in out
    quiet = [r for r in rows if "GONE QUIET" in r]
    assert {r.split()[0] for r in quiet} == gone
    assert all(re.search(r"\(2 h( \d+ min)? ago\)  GONE QUIET", r) for r in quiet), quiet
    assert all(re.search(r"\(\d+ (s|min) ago\)", r) for r in rows if r not in quiet)
    late = next(r for r in rows if r.startswith(order[0]))
    assert re.search(r"GONE QUIET\s+1\s+0$", late), late  # the answer left in a gone student's queue
    # And each lane's jobs waiting, in flight and dead letters
    assert re.search(rf"^numbers\s+{s.request_queue}\s+{WAITING - 1}\s+1\s+0\s+1$", out, re.M), out
    assert re.search(rf"^images\s+{s.image_inbox}\s+0\s+0\s+0\s+0$", out, re.M), out
    assert "1 dead letter(s): `labkit dlq show` lists them" in out
    # And the fleet: its size and health, the group, the failed boot, when it stops
    assert re.search(r"^fleet\s+labkit-class-view: 1 instance\(s\) running, 0 healthy, 0 unhealthy, 1 booting",
                     out, re.M), out
    assert re.search(r"^group\s+labkit-worker-class-view: desired 1 \(min 1, max 3\)$", out, re.M), out
    assert re.search(r"^failed boots\s+bootstrap failed 1 time\(s\) in the last hour, last at 'pip install' on "
                     r"i-0failedboot", out, re.M), out
    assert re.search(r"^stops\s+at .*scheduled action labkit-worker-class-view-stop", out, re.M), out
    # And the day's cost so far, an estimate at dated list prices, and what this view itself cost
    assert re.search(rf"^cost today\s+\$[\d.,]+ what the same would have cost on AWS since 00:00 .*\(estimate, list "
                     rf"prices of {costs.AS_OF}\)$", out, re.M), out
    assert "1 instance(s) t3.micro" in out and "2 CloudWatch alarm(s)" in out and "Cost Explorer" in out
    assert re.search(r"^this view\s+\d+ SQS requests \(\$[\d.]+\), one pass", out, re.M), out

    # And --json carries the same numbers
    replies = {r["name"]: r for r in view["reply_queues"]}
    assert set(replies) == names
    assert {n for n, r in replies.items() if r["quiet"]} == gone
    assert all(r["ago"] >= QUIET_AFTER for r in replies.values() if r["quiet"])
    assert replies[order[0]]["waiting"] == 1
    numbers = next(ln for ln in view["lanes"] if ln["lane"] == "numbers")
    assert (numbers["visible"], numbers["in_flight"], numbers["dead_letter"]) == (WAITING - 1, 1, 1)
    fleet = view["fleet"]
    assert (fleet["size"], fleet["healthy"], fleet["unhealthy"]) == (1, 0, 0)
    assert (fleet["group"]["desired"], fleet["group"]["min"], fleet["group"]["max"]) == (1, 1, 3)
    assert "bootstrap failed 1 time(s)" in fleet["bootstrap"] and fleet["stop"]["action"].endswith("-stop")
    assert view["cost"]["label"] == f"estimate, list prices of {costs.AS_OF}"
    assert view["cost"]["usd"] == pytest.approx(sum(r[1] for r in view["cost"]["rows"]))
    # And the panel shows the same tables (text and HTML) from the same data
    assert {r["name"] for r in panel_view["reply_queues"]} == names
    assert [(ln["visible"], ln["in_flight"], ln["dead_letter"]) for ln in panel_view["lanes"]] == [
        (ln["visible"], ln["in_flight"], ln["dead_letter"]) for ln in view["lanes"]]
    assert f"Students' reply queues: {CLIENTS} ({CLIENTS - QUIET} active, {QUIET} gone quiet" in panel_out
    assert "<caption style='text-align:left'><b>Lanes</b></caption>" in panel_out
    # one pass: one ListQueueTags and one GetQueueAttributes per reply queue, two of each per lane
    calls = view["requests"]["calls"]
    assert calls["sqs.ListQueueTags"] == CLIENTS and calls["sqs.GetQueueAttributes"] == CLIENTS + 4


def test_day_cost_prices_what_ran_today_from_launch_or_midnight() -> None:
    # Given 10:00 today, a t3.micro launched two hours ago, one running since yesterday, one stopped, and two alarms
    # made with a deploy two hours ago
    now = day_start(time.time()).timestamp() + 10 * 3600
    iso = datetime.fromtimestamp(now - 2 * 3600).astimezone().isoformat()
    fleet = {"instances": [
        {"type": "t3.micro", "state": "running", "launched": iso, "public_ip": True},
        {"type": "t3.micro", "state": "running", "public_ip": True,
         "launched": datetime.fromtimestamp(now - 30 * 3600).astimezone().isoformat()},
        {"type": "t3.small", "state": "stopped", "launched": iso}],
        "alarms": [{"name": "backlog", "metrics": 3}, {"name": "idle", "metrics": 1}], "deployed_at": iso}
    cost = day_cost(fleet, now)
    # Then each running instance counts from its launch or from midnight (2 h + 10 h), with its public address, its
    # root volume and its worker's polling and heartbeats, at the list prices; the alarms' 4 metrics from the deploy
    t = costs.TABLE
    polling = costs.cost(costs.idle_requests_per_hour(costs.ec2_poll_wait(), True))["total_usd"]
    hourly = (t["ec2.t3.micro"].usd + t["public_ipv4"].usd + costs.ROOT_VOLUME_GB * t["ebs_gp3"].usd /
              costs.HOURS_PER_MONTH + polling)
    alarms = 4 * t["alarm_metric"].usd / costs.HOURS_PER_MONTH * 2
    assert cost["usd"] == pytest.approx(12 * hourly + alarms)
    assert cost["rows"][0][0] == "2 instance(s) t3.micro: 12.00 instance-hours today"
    assert cost["rows"][1][0] == "2 CloudWatch alarm(s), 2.00 hours today"
    assert cost["label"] == f"estimate, list prices of {costs.AS_OF}" and cost["since"].startswith(
        datetime.fromtimestamp(now).strftime("%Y-%m-%dT00:00"))
    # And nothing that ran, nothing counted
    assert day_cost(None, now)["usd"] == 0 and day_cost(None, now)["rows"] == []


def test_the_class_tables_say_when_no_client_runs_and_no_fleet_is_recorded() -> None:
    view = {"reply_queues": [], "quiet_after": QUIET_AFTER, "lanes": [], "fleet": None, "refused": None,
            "local": False, "cost": day_cost(None, time.time()), "requests": {"calls": {"sqs.ListQueues": 2},
                                                                                 "usd": 8e-7}}
    text = "\n\n".join(str(t) for t in class_tables(view))
    assert "(none: no client runs)" in text and "none recorded in this lab (`labkit deploy` starts one)" in text
    assert re.search(r"cost today\s+\$0.0000 spent since 00:00", text), text


@pytest.mark.slow  # an emulator that enforces IAM, of its own
def test_a_students_credentials_are_told_in_one_line_that_the_class_view_is_the_instructors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with iam_emulator(tmp_path / "iam-emulator.log") as iam:
        # Given a class's queues and a student's reply queue, made by the instructor, and a student who holds
        # only `labkit policy student` (which lets a client tag its reply queue, not list other queues' tags)
        for var, value in keys_env(iam.admin).items():
            monkeypatch.setenv(var, value)
        s = names(iam, tmp_path / "state")
        provision.ensure(Clients(s))
        provision.create_reply_queue(Clients(s))
        student = iam.user(f"ada{int(time.time())}", as_moto_sees_it(student_policy(s, s.bucket or "", ACCOUNT)))
        # When the student runs the instructor's view
        out = labkit("status", "--class", s=s, env=keys_env(student))
        # Then one line says it is the instructor's, and what allows it; what could be read is shown; exit 1
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        [line] = [ln for ln in out.stderr.splitlines() if ln.strip()]
        assert line.startswith("labkit: error: your credentials may not read the reply queues (") and \
            "the class view is the instructor's (`labkit policy deployer --command teardown`" in line, line
        assert re.search(rf"^numbers\s+{s.request_queue}\s+0\s+0\s+0\s+0$", out.stdout, re.M), out.stdout
        assert "(not read)" in out.stdout
        # And the instructor's credentials read it
        mine = labkit("status", "--class", s=s)
        assert mine.returncode == 0 and "Students' reply queues: 1 (1 active, 0 gone quiet" in mine.stdout, mine.stderr
