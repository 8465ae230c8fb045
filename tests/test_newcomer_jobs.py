"""Issue 20, a newcomer's first hour with jobs: Ctrl-C while waiting loses nothing and leaves nothing (the job is
journaled at send, given up on close, its claim-check object deleted, and the worker drops the answer its reply
queue can no longer take instead of running it five times into the dead-letter queue); `labkit purge` says one
short line; a handler's own exception names itself; short random lists travel inline; local workers read as
"local worker <pid>".

Real `labkit` and `python -m worker` processes, the real emulator."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from labkit import plots, provision, widgets
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.aws.storage import Bucket
from labkit.client import ARRAY_THRESHOLD, Lab
from labkit.config import DLQ_SUFFIX
from labkit.errors import RemoteJobError
from labkit.presenters import timeline_table
from labkit.processes import settings_env
from labkit.protocol import JobRequest
from labkit.waiting import wait_for
from tests.conftest import ROOT, event_names, unique_settings
from tests.helpers import labkit

HOST = socket.gethostname()


def no_traceback(out: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out.stderr + out.stdout, out.stderr


def depth(queue: Queue) -> int:
    d = queue.depth()
    return d["visible"] + d["in_flight"] + d["delayed"]


# -- item 5: Ctrl-C while waiting -----------------------------------------------------------------------------

def test_ctrl_c_while_waiting_journals_the_job_cleans_its_payload_and_the_worker_drops_its_answer_once(
        settings, start_worker):
    # Given no worker yet, and `labkit submit` of a list long enough to travel through S3 (claim check)
    sqs = Clients(settings).sqs
    requests = Queue.by_name(sqs, settings.request_queue)
    dead = Queue.by_name(sqs, settings.request_queue + DLQ_SUFFIX)
    bucket = Bucket(Clients(settings).s3, settings.bucket)
    proc = subprocess.Popen([sys.executable, "-m", "labkit", "submit", "numbers", "--random", str(ARRAY_THRESHOLD + 1),
                             "--seed", "3"], env=settings_env(settings), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # When it is interrupted (Ctrl-C) while it waits: its request sent, its payload in the bucket
    wait_for(lambda: depth(requests) == 1 and bucket.list("payloads/"), 60, "the request and its payload")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    # Then it exits 130 with a line naming the job and how to trace it, and no traceback
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    [job_id] = re.findall(r"job ([0-9a-f]{32}) was not answered when this client stopped waiting \(interrupted\)", err)
    assert f"`labkit trace {job_id[:12]}`" in err and err.rstrip().endswith("labkit: interrupted")
    # And `labkit trace` knows the job: sent, then given up
    trace = labkit("trace", job_id[:12], s=settings)
    assert trace.returncode == 0, trace.stderr
    assert re.search(r"sent\n.*given_up\s+the client stopped waiting \(interrupted\)", trace.stdout), trace.stdout
    assert [e["event"] for e in json.loads(labkit("trace", job_id, "--json", s=settings).stdout)["events"]] == [
        "sent", "given_up"]
    # And its claim-check object is gone (nobody will read it), its request still waits for a worker
    assert bucket.list("payloads/") == []
    assert depth(requests) == 1
    # When a worker comes
    worker = start_worker()
    # Then it drops the answer its reply queue can no longer take, deletes the request, in one line, and
    # nothing goes to the dead-letter queue (before: five runs, five warnings, a dead letter, "5 answered")
    wait_for(lambda: depth(requests) == 0, 60, "the request deleted")
    worker.wait_for(f"dropped the answer of 1 job(s) ({job_id}) and deleted the request(s)")
    assert depth(dead) == 0
    assert worker.terminate() == 0
    log = worker.output
    assert len(re.findall(r"INFO reply queue \S+ is gone \(its client stopped waiting\)", log)) == 1
    assert "NonExistentQueue" not in log
    assert log.count("trying again shortly") <= 1  # at most one more look, for a queue made a moment ago
    assert "stopped after 0 jobs (0 errors); 1 answer(s) dropped: reply queue gone" in log


def test_a_job_journaled_at_send_is_traced_before_its_answer_comes(settings):
    # Given a job sent with no worker to answer it
    with Lab(settings) as lab:
        job = lab.numbers([1, 2, 3])
        # When `labkit trace` looks while the client still waits
        trace = labkit("trace", job.id, s=settings)
        # Then it knows the job: sent, nothing more yet
        assert trace.returncode == 0, trace.stderr
        assert f"job {job.id} (numbers)" in trace.stdout and "sent" in trace.stdout
    # And once the client closes without its answer, the job is given up ("closed")
    record = lab.journal.find(job.id)
    assert event_names(record["events"]) == ["sent", "given_up"] and record["events"][1]["why"] == "closed"


def test_the_line_written_at_send_never_hides_the_answer_written_before_it(tmp_path):
    # Given a job whose answer was journaled (by the reply thread) before the line its sender writes at send
    from labkit.journal import Journal
    journal = Journal(tmp_path)
    events = [{"event": "received", "at": 10.1, "receive_count": 1, "worker": "w:1"}]
    journal.record("a" * 32, "numbers", 10.0, 10.5, events, [])
    journal.record("a" * 32, "numbers", 10.0, None, None, [])
    # When `labkit trace` reads it
    record = journal.find("a" * 12)
    # Then the answered record wins; a later given-up line (no answer either) replaces the line written at send
    assert event_names(record["events"]) == ["sent", "received", "result"]
    journal.record("b" * 32, "numbers", 20.0, None, None, [])
    journal.record("b" * 32, "numbers", 20.0, None, None, [{"event": "given_up", "at": 21.0, "why": "interrupted"}])
    assert event_names(journal.find("b" * 32)["events"]) == ["sent", "given_up"]


class InterruptedUpload(Bucket):
    """The test's bucket, with Ctrl-C arriving as an upload's last byte lands (an injected fault: a real SIGINT
    cannot be aimed at that moment). The object is really written first."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        super().put(key, data, content_type)
        raise KeyboardInterrupt


def test_an_upload_interrupted_by_ctrl_c_leaves_no_object(settings):
    # Given a list that travels through S3, and Ctrl-C as its upload completes
    with Lab(settings) as lab:
        lab._bucket = InterruptedUpload(lab.clients.s3, settings.bucket)
        # When it is sent
        with pytest.raises(KeyboardInterrupt):
            lab.numbers(np.arange(ARRAY_THRESHOLD + 1))
        # Then nothing is left under payloads/ (before: the whole list, until the lifecycle rule in 2 days)
        assert Bucket(lab.clients.s3, settings.bucket).list("payloads/") == []
        assert lab.jobs_sent == 0


def test_a_reply_queue_missing_moments_after_the_request_is_looked_at_once_more_then_dropped(settings, start_worker):
    # Given two requests whose reply queue (a client's labkit-reply-*) does not exist: one sent a minute ago, one
    # stamped "now" by a client whose clock runs ahead (SQS may take a moment to show a queue just made)
    sqs = Clients(settings).sqs
    requests = Queue.by_name(sqs, settings.request_queue)
    gone = requests.url.rsplit("/", 1)[0] + f"/labkit-reply-gone-{settings.bucket[-8:]}"
    old = JobRequest("numbers", {"numbers": [1]}, reply_to=gone, sent_at=time.time() - 60)
    young = JobRequest("numbers", {"numbers": [2]}, reply_to=gone, sent_at=time.time() + 3600)
    requests.send(old.encode())
    requests.send(young.encode())
    # When a worker answers them
    worker = start_worker()
    wait_for(lambda: depth(requests) == 0, 60, "both requests deleted")
    assert worker.terminate() == 0
    log = worker.output
    # Then the old one is dropped at its first delivery, the young one looked at once more, then dropped
    assert f"not found for 1 job(s) sent moments ago ({young.id}): trying again shortly" in log
    assert f"dropped the answer of 1 job(s) ({old.id})" in log
    assert f"({young.id}) and deleted" in log
    assert len(re.findall(r"INFO reply queue \S+ is gone \(its client stopped waiting\)", log)) == 1  # one line
    assert depth(Queue.by_name(sqs, settings.request_queue + DLQ_SUFFIX)) == 0


# -- item 8: purge --------------------------------------------------------------------------------------------

def test_a_second_purge_within_the_minute_says_one_short_line_and_one_row_per_queue(settings):
    # Given the four queues purged a moment ago
    first = labkit("purge", "all", s=settings)
    assert first.returncode == 0, first.stderr
    # When they are purged again within the minute
    again = labkit("purge", "all", s=settings)
    # Then one row per queue says it was refused, and one short line says so once (before: ~600 characters
    # repeating the same refusal four times on one line)
    assert again.returncode == 1
    no_traceback(again)
    names = list(settings.queue_names().values())
    rows = [line for line in again.stdout.splitlines() if line.split(" ")[0] in names]
    assert len(rows) == 4 and all("refused" in r for r in rows)
    [line] = again.stderr.strip().splitlines()
    assert len(line) < 260 and line.count("60 s") == 2 and all(line.count(n) == 1 for n in names), line
    assert line.startswith("labkit: error: purged 0 of 4 queue(s); ") and line.endswith("try again within 60 s")


def test_purge_of_a_queue_that_does_not_exist_names_the_queues_labkit_knows(settings):
    # When a queue name with a typo is purged
    out = labkit("purge", "requestqueue", s=settings)
    # Then one line names labkit's queues and their short names (before: "run `labkit up`", which cannot help)
    assert out.returncode == 1 and out.stdout == ""
    no_traceback(out)
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("labkit: error: there is no queue 'requestqueue': labkit's queues are ")
    assert f"{settings.request_queue} (requests, numbers), {settings.response_queue} (responses)" in line
    assert f"{settings.image_inbox} (inbox, images), {settings.image_outbox} (outbox)" in line
    assert "labkit up" not in line


def test_purge_all_and_an_instructors_purge_empty_the_kind_queues_too_not_their_dead_letters(settings):
    # Given a kind of one's own's queue (made as a first job of it makes it) holding a job, and its dead letter
    clients = Clients(settings)
    kind_queue, _ = provision.ensure_kind_queue(clients, "wordcount")
    kind_queue.send('{"kind": "wordcount"}')
    dead = Queue.by_name(clients.sqs, kind_queue.name + DLQ_SUFFIX)
    dead.send('{"kind": "wordcount"}')
    # When the instructor purges all before a class
    out = labkit("purge", "all", s=settings)
    # Then the kind queue was emptied and its row says so, beside the four (before: the four only, the job stayed)
    assert out.returncode == 0, out.stderr
    no_traceback(out)
    rows = {line.split()[0]: line.split()[1] for line in out.stdout.splitlines()[3:] if line.strip()}
    assert rows == {**{name: "purged" for name in settings.queue_names().values()}, kind_queue.name: "purged"}
    assert depth(kind_queue) == 0
    # And its dead letter is kept, as the lanes' are (dead letters are there to be looked at)
    assert depth(dead) == 1
    # And `labkit purge` with no queue (what the caller may purge: an instructor's, all of them) tries it too
    kind_queue.send('{"kind": "wordcount"}')
    again = labkit("purge", s=settings)
    assert again.returncode == 1 and f"{kind_queue.name}  refused" in again.stdout, again.stdout


# -- item 8: a handler's own exception ------------------------------------------------------------------------

README_KIND = re.compile(r"```python\n(# my_kinds\.py\n.*?)```", re.S)


def readme_kind_module() -> str:
    """The job kind module of the README's "Your own job kinds", as written there."""
    [module] = README_KIND.findall((ROOT / "README.md").read_text())
    return module


def test_the_readme_kind_runs_as_written_and_a_handler_s_own_exception_names_itself(emulator, tmp_path,
                                                                                       start_worker):
    # Given the README's job kind as written (its InvalidInput check), and the same without that check
    text = readme_kind_module()
    assert "raise InvalidInput(" in text
    unchecked = re.sub(r"    if not isinstance.*\n.*raise InvalidInput.*\n", "", text)
    assert unchecked != text
    for module, checked in ((text, True), (unchecked, False)):
        folder = tmp_path / ("checked" if checked else "unchecked")
        folder.mkdir()
        (folder / "my_kinds.py").write_text(module)
        s = unique_settings(emulator, folder / "state", job_modules=str(folder / "my_kinds.py"))
        provision.ensure(Clients(s))
        worker = start_worker(s=s)
        with Lab(s) as lab:
            # When the README's job runs, and one without its text
            assert lab.submit("wordcount", {"text": "to be or not to be"}).result(timeout=60) == {
                "words": 6, "distinct": 4}
            with pytest.raises(RemoteJobError) as info:
                lab.submit("wordcount", {}).result(timeout=60)
        # Then the README's check answers invalid_input with its own words; without it, the KeyError names
        # the kind, the exception and the handler's line, as the README says (before: "internal: the worker
        # failed unexpectedly: KeyError: 'text'")
        if checked:
            assert info.value.code == "invalid_input"
            assert str(info.value) == "invalid_input: give the text to count as 'text', a string"
        else:
            assert info.value.code == "internal"
            said = "the wordcount handler raised KeyError: 'text' (my_kinds.py, line 7, in wordcount)"
            assert said in (ROOT / "README.md").read_text().replace("\n", " ")
            assert str(info.value) == f"internal: {said} (a handler raises labkit.errors.InvalidInput for input it " \
                "cannot use)"
            # And the worker's log has the traceback, under one line naming the job
            worker.wait_for("the handler raised KeyError: 'text'")
            assert "Traceback" in worker.output and 'words = payload["text"].split()' in worker.output


# -- item 8: --random 5 travels inline ----------------------------------------------------------------------

def test_random_lists_up_to_the_threshold_travel_inline_and_longer_ones_through_s3(settings, start_worker):
    # Given a worker
    start_worker()
    bucket = Bucket(Clients(settings).s3, settings.bucket)
    # When `--random 5` runs, then a list one over the threshold the docs name
    small = labkit("submit", "numbers", "--random", "5", "--seed", "1", s=settings)
    assert small.returncode == 0, small.stderr
    assert json.loads(small.stdout)["count"] == 5
    # Then the 5 numbers travelled inline (before: a .npy object under payloads/)
    assert bucket.list("payloads/") == []
    with Lab(settings) as lab:
        assert lab.numbers(np.arange(ARRAY_THRESHOLD)).result(timeout=60)["count"] == ARRAY_THRESHOLD
        assert bucket.list("payloads/") == []
        big = lab.numbers(np.arange(ARRAY_THRESHOLD + 1))
        assert big.result(timeout=60)["count"] == ARRAY_THRESHOLD + 1
    assert [o.key for o in bucket.list("payloads/")] == [f"payloads/{big.id}.npy"]
    # And the docs say the same threshold
    assert f"longer than {ARRAY_THRESHOLD:,} items travel" in (ROOT / "docs" / "protocol.md").read_text().replace(
        "\n  ", " ")


# -- item 8: local workers read as "local worker <pid>" -------------------------------------------------------

def test_a_local_worker_reads_as_local_worker_pid_in_trace_tables_and_figures(lab, settings, start_worker):
    # Given a job answered by a worker on this machine, sent from the numbers panel
    worker = start_worker()
    panel = widgets.NumbersPanel(lab)
    panel.send_button.click()
    job, pid = panel.job, worker.proc.pid
    # Then the wire keeps "<host>:<pid>" (docs/protocol.md's contract)
    assert job.reply.worker == f"{HOST}:{pid}"
    # And people read "local worker <pid>": in the panel's table, `labkit trace`, the timeline table, the figure
    shown = "\n".join(o["data"].get("text/plain", "") for o in panel.out.outputs)
    assert re.search(rf"worker\s+local worker {pid}\n", shown) and f"{HOST}:{pid}" not in shown, shown
    lab.close()
    trace = labkit("trace", job.id, s=settings)
    assert trace.returncode == 0, trace.stderr
    assert f"delivery 1, by local worker {pid}" in trace.stdout and f"{HOST}:{pid}" not in trace.stdout
    assert f"by local worker {pid}" in str(timeline_table(job.timeline()))
    fig = plots.job_timeline_figure([job.timeline()])
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"computing on local worker {pid}" in labels and not any(HOST in t for t in labels)


def test_a_worker_elsewhere_reads_as_worker_pid_on_host():
    from labkit.timeline import worker_label
    assert worker_label(f"{HOST}:14003") == "local worker 14003"
    assert worker_label("ip-10-0-1-23:812") == "worker 812 on ip-10-0-1-23"
    assert worker_label("no pid here") == "no pid here"

