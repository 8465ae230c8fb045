"""The delivery exercise (notebooks/delivery_exercise.py, beside notebooks/05_delivery): queues of its own with a
short visibility timeout, a worker of its own killed mid-batch and started again, a duplicate answer dropped by
id, a poison message dead-lettered after its receives then redriven and answered, a job kept in flight by
heartbeats, and nothing left afterwards. Real emulator, real worker processes (``python -m worker`` with
notebooks/kinds/nap.py)."""

from __future__ import annotations

import atexit
import json
from pathlib import Path

import pytest
from PIL import Image

from labkit import plots
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.config import Settings, read_state
from labkit.errors import ConfigError, InvalidInput, RemoteJobError
from labkit.local import wait_serving, worker_state_file
from labkit.processes import Child, pid_alive, python_module, settings_env
from notebooks.delivery_exercise import STATE_KEY, DeliveryExercise
from tests.conftest import ROOT
from tests.conftest import event_names as names

pytestmark = pytest.mark.slow
NAP = ROOT / "notebooks" / "kinds" / "nap.py"


@pytest.fixture
def exercise(settings):
    """An exercise next to this test's queues: a 3 s visibility timeout, dead letters after 2 receives."""
    ex = DeliveryExercise.start(settings, [NAP], visibility=3, max_receive_count=2)
    yield ex
    ex.close()


def between(samples, start: float, end: float) -> list:
    return [s for s in samples if start < s.at < end]


def test_a_worker_killed_mid_batch_loses_nothing_the_next_worker_answers_after_the_visibility_timeout(
        exercise, tmp_path):
    # When a batch of four 1-second naps is sent, and its worker is killed while its second round runs
    story = exercise.redelivery(jobs=4, seconds=1.0)
    # Then every job was answered, and the killed worker is gone
    assert [j.result(timeout=0) for j in story.jobs] == [{"slept": 1.0}] * 4
    assert story.killed != story.restarted and not pid_alive(story.killed)
    # And what it held was delivered twice: first to it (the time SQS recorded), then to the new worker,
    # no sooner than the visibility timeout after the first. (A job it answered just before the kill, its
    # request not yet deleted, is held too: the client keeps that first answer and drops the second.)
    assert 1 <= len(story.redelivered) <= story.held
    for job in story.redelivered:
        first, second = [e for e in job.timeline() if e["event"] == "received"]
        assert first["inferred"] and (first["receive_count"], second["receive_count"]) == (1, 2)
        assert second["worker"].endswith(f":{story.restarted}")
        assert second["at"] - first["at"] >= exercise.visibility - 0.2
    # And the watcher saw it: held by nobody after the kill, then visible again before the new worker came
    (killed_at, _), (back_at, _), (restarted_at, _) = story.marks[1:4]
    assert any(s.in_flight == story.held for s in between(story.samples, killed_at, back_at))
    assert any(s.visible == story.held and s.in_flight == 0 for s in between(story.samples, killed_at, restarted_at))
    assert (story.samples[-1].visible, story.samples[-1].in_flight, story.samples[-1].dead_letter) == (0, 0, 0)
    # And both figures draw at the standard size
    for name, fig in (("depth", story.depth_figure()), ("timeline", story.timeline_figure())):
        with Image.open(plots.save(fig, tmp_path, name)) as im:
            assert im.size == (800, 450)


def test_one_request_sent_twice_is_answered_twice_and_kept_once(exercise):
    # When one request (one id) is sent twice
    dup = exercise.duplicate([2, 9, 4])
    # Then the worker answered both copies (the second answer is the duplicate the client dropped), and the client
    # kept one
    assert dup.result["median"] == 4 and dup.dropped == 1 and exercise.lab.duplicates >= 1
    events = names(dup.job.timeline())
    assert events.count("result") == 1 and events[-1] == "duplicate"
    # And the summary says so, and only what ran
    headline, data = exercise.summary()
    assert headline == "1 duplicate dropped" and data["duplicate"] == {"dropped": 1, "timeline": events}
    assert "redelivery" not in data and data["jobs"] == 2  # the request sent twice, the nap after it


def test_a_poison_message_goes_to_the_dead_letter_queue_after_its_receives_and_is_redriven_once_fixed(exercise):
    # When a request names a reply queue that does not exist yet
    poison = exercise.poison([1, 2, 3, 4])
    # Then its worker tried max_receive_count times, and SQS moved it to the dead-letter queue, where it was read
    # (its first receive named on the depth figure from its timeline, the moment it went to the dead letters from the
    # watcher: read from the answer and the queues, never from the worker's log)
    tries = [at for at, text in poison.marks if text.startswith("receive ")]
    assert tries == [e["at"] for e in poison.events if e["event"] == "received" and e.get("inferred")] != []
    assert any(text == "in the dead-letter queue, after 2 receives" for _, text in poison.marks)
    [letter] = poison.letters
    assert letter.job_id == poison.job_id and letter.receives > exercise.settings.max_receive_count
    assert letter.reply_to.endswith(f"-{exercise.settings.request_queue.rsplit('-', 1)[1]}-later")
    assert any(s.dead_letter == 1 for s in poison.samples)
    # And once its reply queue was made, the redrive sent it back, and it was answered
    assert (poison.redrive.moved, poison.redrive.failed) == (1, [])
    assert poison.answer.ok and poison.answer.id == poison.job_id and poison.answer.result["median"] == 2.5
    assert names(poison.events) == ["sent", "received", "redriven", "received", "started", "finished", "replied",
                                    "result"]
    assert poison.events[1]["inferred"] and poison.events[2]["receive_count"] > exercise.settings.max_receive_count
    # And nothing is left in either queue
    assert exercise.dead.depth()["visible"] == 0 and poison.samples[-1].dead_letter == 0


def test_a_job_longer_than_the_visibility_timeout_stays_in_flight_and_is_delivered_once(exercise):
    # When a 4 s nap runs on a queue whose visibility timeout is 3 s
    beat = exercise.heartbeat(seconds=4)
    # Then it was answered after one delivery, its visibility extended while it ran
    assert beat.job.result(timeout=0) == {"slept": 4}
    assert beat.deliveries == 1 and len(beat.beats) >= 2 and all(b["seconds"] == 3 for b in beat.beats)
    events = {e["event"]: e["at"] for e in beat.job.timeline()}
    running = between(beat.samples, events["started"], events["finished"])
    # And the watcher never saw it visible while it ran, past its first 3 s included
    assert running and all((s.visible, s.in_flight) == (0, 1) for s in running)
    assert running[-1].at - events["started"] > 3
    assert sum(text.startswith("heartbeat") for _, text in beat.marks) == len(beat.beats)


def test_the_nap_kind_refuses_what_it_cannot_do(exercise):
    exercise.ensure_worker()
    with pytest.raises(RemoteJobError) as refused:
        exercise.lab.submit("nap", {"seconds": 61}).result(timeout=60)
    assert refused.value.code == "invalid_input" and "from 0 to 60" in str(refused.value)


def test_close_leaves_nothing_and_a_dead_kernel_s_exercise_is_cleaned_up_at_the_next_start(settings):
    sqs = Clients(settings).sqs
    # Given an exercise whose kernel died: its worker runs, its queues exist, close() never ran
    first = DeliveryExercise.start(settings, [NAP])
    worker = first.start_worker()
    left = [q.name for q in first.made]
    atexit.unregister(first.close)
    # When the next exercise starts in the same state folder
    second = DeliveryExercise.start(settings, [NAP])
    # Then the first one's worker was stopped and its queues deleted
    assert not worker.alive() and [Queue.find(sqs, n) for n in left] == [None] * 5  # 3, and the nap kind's 2
    # When the second one closes
    second_worker = second.start_worker()
    mine = [q.name for q in second.made]
    assert second.close() == mine
    # Then its worker and queues are gone, the state file forgets it, and labkit's own queues are untouched
    assert not second_worker.alive() and [Queue.find(sqs, n) for n in mine] == [None] * 5
    assert STATE_KEY not in read_state(settings.state_dir)
    assert Queue.find(sqs, settings.request_queue) is not None
    first.lab.close()


def test_settings_out_of_range_are_refused_before_anything_is_made(settings, exercise, tmp_path):
    with pytest.raises(InvalidInput, match="visibility must be between 1 and 60 seconds, got 0"):
        DeliveryExercise.start(settings, [NAP], visibility=0)
    with pytest.raises(InvalidInput, match="max_receive_count must be between 1 and 10"):
        DeliveryExercise.start(settings, [NAP], max_receive_count=0)
    with pytest.raises(InvalidInput, match="jobs must be between 3"):
        exercise.redelivery(jobs=2)
    with pytest.raises(ConfigError, match="no job module at .*nope.py: the exercise's worker needs the nap kind"):
        DeliveryExercise.start(settings, [tmp_path / "nope.py"])


def test_credentials_that_may_not_make_its_queues_are_told_what_is_needed_and_nothing_is_left(tmp_path, monkeypatch):
    from tests.iam_emulator import iam_emulator, keys_env
    with iam_emulator(tmp_path / "emulator.log") as iam:
        # Given credentials that may look queues up and delete them, but not create one (the exercise builds its
        # dead-letter queue's ARN itself since issue 18: reading a queue's attributes is no longer needed)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
            "sqs:DeleteQueue", "sqs:GetQueueUrl", "sqs:ListQueues", "sqs:TagQueue"]}]}
        for var, value in keys_env(iam.user("student", policy)).items():
            monkeypatch.setenv(var, value)
        s = Settings.load(state_dir=tmp_path / "state", endpoint_url=iam.url, env={}, bucket="labkit-iam-delivery")
        # When the exercise starts
        with pytest.raises(ConfigError) as refused:
            DeliveryExercise.start(s, [NAP])
        # Then it says what it needs, and leaves no queue
        assert "may not make the exercise's queues (access denied)" in str(refused.value)
        assert "sqs:* on the queues named labkit-delivery-* and labkit-reply-*" in str(refused.value)
        assert iam.client("sqs").list_queues(QueueNamePrefix="labkit-delivery-").get("QueueUrls", []) == []


def test_a_worker_is_seen_serving_from_its_ready_file_whatever_its_log_says(settings):
    # Given a worker whose output goes nowhere: no log line to read (the exercise and `labkit up` wait this way)
    Path(settings.state_dir).mkdir(parents=True, exist_ok=True)
    child = Child.spawn(python_module("worker", "--queues", "numbers", "--poll-wait", "1"), env=settings_env(settings))
    try:
        # When it is waited for, Then it is seen serving: its state file says so, naming its process (pid, start)
        wait_serving([child], settings.state_dir)
        doc = json.loads(worker_state_file(settings.state_dir, child.pid).read_text())
        assert (doc["status"], doc["pid"], doc["start"]) == ("serving", child.pid, child.start)
    finally:
        child.stop(30)
    # And a warm stop takes it away: nothing to explain
    assert not worker_state_file(settings.state_dir, child.pid).exists()
