"""Own job kinds on shared queues (issue 19, item 3): a kind of one's own travels on a queue of its own,
``<requestQueue>-kind-<name>``, made by the first client that sends one or the first worker that loads it, so that
only workers that load it receive it. Two real worker processes on one emulator account, one that loads a student's
kind and one that does not (the instructor's fleet); the real ``labkit status``; teardown; and the student's and the
worker's policies on an emulator that enforces IAM. Before this, the instructor's worker answered the student's
kind with ``unknown_kind`` and deleted the request."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from labkit import fleet, kinds, provision
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.config import DLQ_SUFFIX
from labkit.errors import InvalidInput, JobTimeout, RemoteJobError
from labkit.fleet.deployer import deployer_policy
from labkit.fleet.policy import grants
from labkit.fleet.student import student_policy
from labkit.processes import Child, python_module, settings_env
from labkit.protocol import JobRequest
from tests.conftest import ROOT
from tests.helpers import labkit
from tests.iam_emulator import ACCOUNT, IamEmulator, as_moto_sees_it, iam_emulator, keys_env
from tests.test_iam import names, refused

WORDCOUNT = ROOT / "notebooks" / "kinds" / "wordcount.py"


def test_a_kind_of_ones_own_is_sent_to_a_queue_of_its_own(settings):
    # Built-in kinds keep their lanes; any other kind has a queue named from the numbers lane's and the kind
    assert kinds.request_queue_for(settings, "numbers") == settings.request_queue
    assert kinds.request_queue_for(settings, "image") == settings.image_inbox
    assert kinds.request_queue_for(settings, "wordcount") == settings.request_queue + "-kind-wordcount"
    assert kinds.kind_of_queue(settings, settings.request_queue + "-kind-wordcount") == "wordcount"
    assert kinds.kind_of_queue(settings, settings.request_queue + "-kind-wordcount" + DLQ_SUFFIX) is None
    # A long name still leaves room for -dlq within SQS's 80 characters, one name per kind
    long_a, long_b = kinds.kind_queue(settings, "a" * 63 + "x"), kinds.kind_queue(settings, "a" * 63 + "y")
    assert len(long_a + DLQ_SUFFIX) <= 80 and long_a != long_b
    with pytest.raises(InvalidInput, match="a job kind needs a name of letters, digits"):
        kinds.request_queue_for(settings, "no spaces")


def test_the_policies_cover_the_kind_queues(settings):
    # The student sends to and makes kind queues, and reads their depth; never receives from one
    kind_queues = f"arn:aws:sqs:{settings.region}:{ACCOUNT}:{settings.request_queue}-kind-*"
    student = grants(student_policy(settings, "b", ACCOUNT))[kind_queues]
    assert {"sqs:SendMessage", "sqs:CreateQueue", "sqs:TagQueue", "sqs:GetQueueAttributes"} <= student
    assert not student & {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:PurgeQueue", "sqs:DeleteQueue"}
    # The worker receives from them and makes those of the kinds it loads; teardown deletes them
    worker = grants(fleet.policy.worker_policy(settings, "b", ACCOUNT))[kind_queues]
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:CreateQueue"} <= worker
    assert "sqs:DeleteQueue" in grants(deployer_policy(settings, "b", ACCOUNT, commands=["teardown"]))[kind_queues]


@pytest.mark.slow
def test_two_workers_of_different_kinds_on_one_account(settings, start_worker, lab, caplog, tmp_path):
    # Given the instructor's worker, which loads no kind of its own
    instructor = start_worker()
    kind_queue = settings.request_queue + "-kind-wordcount"
    # When a student sends a wordcount job before any worker loads wordcount
    with caplog.at_level(logging.WARNING, logger="labkit"):
        waiting = lab.submit("wordcount", {"text": "to be or not to be"})
    # Then the client says so in one line, and the job waits in its kind's queue: nobody took it
    assert f"no worker loads job kind 'wordcount' yet: its jobs wait in the queue {kind_queue}" in caplog.text
    queue = Queue.by_name(Clients(settings).sqs, kind_queue)
    # And a client older than kind queues, sending the kind on the shared queue, is told at once where it goes now
    old = JobRequest("wordcount", {"text": "a b"}, reply_to=lab.reply_queue.url)
    lab.queue(settings.request_queue).send(old.encode())
    with pytest.raises(RemoteJobError) as info:
        lab.track(old.id, "wordcount").result(timeout=60)
    assert info.value.code == "unknown_kind" and f"travels on a queue of its own ({kind_queue})" in str(info.value)
    assert queue.depth() == {"visible": 1, "in_flight": 0, "delayed": 0} and not waiting.done()
    # And a client that stops waiting is told why, not only that it timed out
    with pytest.raises(JobTimeout, match=f"no worker loads job kind 'wordcount': its queue {kind_queue} holds 1 job"):
        waiting.result(timeout=2)
    # When a worker that loads wordcount starts
    student_worker = start_worker(s=settings.replace(job_modules=(str(WORDCOUNT),)))
    # Then it answers the job that waited (nothing lost), and every later one; number jobs go on as before
    assert waiting.result(timeout=60)["words"] == 6
    more = lab.submit_many("wordcount", [{"text": "a " * n} for n in range(1, 11)])
    assert [j.result(timeout=0)["words"] for j in more] == list(range(1, 11))
    assert lab.numbers([1, 5, 22]).result(timeout=60)["median"] == 5
    assert all(j.reply.worker.endswith(f":{student_worker.proc.pid}") for j in [waiting, *more])
    # And the instructor's worker never saw them: its only unknown_kind is the old client's request
    for job in [waiting, *more]:
        assert job.id not in instructor.output
    assert instructor.output.count("code=unknown_kind") == 1
    # And `labkit status` shows the kind's queue, its depth and dead letters
    status = labkit("status", s=settings, cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    [row] = [line for line in status.stdout.splitlines() if kind_queue in line]
    assert "kind wordcount" in row


def test_a_kind_queue_is_made_as_its_lane_is_and_teardown_deletes_it(settings, lab):
    # Given a lane's request queue whose visibility timeout and receive count are not the settings' defaults
    clients = Clients(settings)
    lane = Queue.by_name(clients.sqs, settings.request_queue)
    dead = Queue.by_name(clients.sqs, settings.request_queue + DLQ_SUFFIX).arn()
    lane.set_attributes({"VisibilityTimeout": "7",
                         "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead, "maxReceiveCount": "2"})})
    # When a client's first job of a kind no worker loads makes the kind's queue
    lab.submit("histogram", {"numbers": [1, 2]})
    name = settings.request_queue + "-kind-histogram"
    # Then it is made as its lane's request queue is, with a dead-letter queue of its own
    made = Queue.by_name(clients.sqs, name).attributes("VisibilityTimeout", "RedrivePolicy")
    redrive = json.loads(made["RedrivePolicy"])
    assert made["VisibilityTimeout"] == "7" and int(redrive["maxReceiveCount"]) == 2
    assert redrive["deadLetterTargetArn"].endswith(f":{name}{DLQ_SUFFIX}")
    assert provision.status(clients)["queues"][name]["role"] == "kind histogram"
    assert {f"queue {name}", f"queue {name}{DLQ_SUFFIX}"} <= set(provision.existing(clients, bucket="keep"))
    # When the lab is torn down
    report = provision.delete_resources(clients, bucket="keep")
    # Then the kind queue and its dead-letter queue went with the rest
    assert {f"queue {name}", f"queue {name}{DLQ_SUFFIX}"} <= set(report.deleted)
    assert Queue.find(clients.sqs, name) is None


# -- under IAM ---------------------------------------------------------------------------------------------

STUDENT = """
import logging, sys
logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="%(message)s")
from labkit import Lab
with Lab() as lab:
    job = lab.submit("wordcount", {"text": "a b a"})
    print(job.result(timeout=120)["words"], flush=True)
"""


@pytest.fixture(scope="module")
def iam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IamEmulator]:
    with iam_emulator(tmp_path_factory.mktemp("iam-emulator") / "emulator.log") as emu:
        yield emu


@pytest.mark.slow
def test_a_students_kind_under_the_student_and_worker_policies(iam, tmp_path: Path, monkeypatch) -> None:
    # Given an instructor's lab on an emulator that enforces IAM, and a student holding only the student policy
    for var, value in keys_env(iam.admin).items():
        monkeypatch.setenv(var, value)
    s = names(iam, tmp_path / "state")
    provision.ensure(Clients(s))
    ada = iam.user(f"ada{uuid.uuid4().hex[:6]}", as_moto_sees_it(student_policy(s, s.bucket or "", ACCOUNT)))
    # When the student sends a kind of their own before any worker loads it (the student's client makes its queue)
    student = subprocess.Popen([sys.executable, "-c", STUDENT], env=settings_env(s, extra=keys_env(ada)),
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        warning = student.stderr.readline() if student.stderr else ""
        assert "no worker loads job kind 'wordcount' yet" in warning, warning
        # And a worker that holds only the worker policy and loads the kind starts
        role = as_moto_sees_it(fleet.policy.worker_policy(s, s.bucket or "", ACCOUNT))
        creds = iam.role_session(f"worker-{s.bucket}", role)
        worker = Child.spawn(python_module("worker", "--poll-wait", "1"), log=tmp_path / "worker.log", cwd=ROOT,
                             env=settings_env(s.replace(job_modules=(str(WORDCOUNT),)), extra=keys_env(creds)),
                             detach=False)
        try:
            out, err = student.communicate(timeout=150)
        finally:
            worker.stop(30)
    finally:
        student.kill()
    # Then the student's job was answered by that worker
    assert student.returncode == 0 and out.split() == ["3"], err
    assert "AccessDenied" not in worker.output, worker.output
    # And the student may not receive (take) the jobs on a kind queue
    kind_queue = iam.client("sqs", ada).get_queue_url(QueueName=s.request_queue + "-kind-wordcount")["QueueUrl"]
    assert refused(lambda: iam.client("sqs", ada).receive_message(QueueUrl=kind_queue))
