"""Lanes and job kinds (labkit/kinds.py): the registry, your own kinds loaded by a real worker from
LABKIT_JOB_MODULES, and `labkit up` restarting local workers when the modules change."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit import kinds, local
from labkit.config import Settings
from labkit.errors import ConfigError, JobError, RemoteJobError
from labkit.protocol import JobRequest
from tests.conftest import ROOT

WORDCOUNT = ROOT / "notebooks" / "kinds" / "wordcount.py"


@pytest.fixture
def registered():
    """Kinds this test registers are forgotten afterwards."""
    before = {k.name for k in kinds.known()}
    yield
    for k in kinds.known():
        if k.name not in before:
            kinds.unregister(k.name)


def test_builtin_lanes_and_kinds(settings):
    assert kinds.request_lane("numbers").request_queue(settings) == settings.request_queue
    assert kinds.request_lane("image").request_queue(settings) == settings.image_inbox
    assert kinds.request_lane("something-new").name == "numbers"  # unknown here: the numbers lane's settings
    assert kinds.request_queue_for(settings, "something-new") == f"{settings.request_queue}-kind-something-new"
    assert kinds.queue_name(settings, "outbox") == settings.image_outbox
    assert kinds.source_queue(settings, settings.image_inbox + "-dlq") == settings.image_inbox
    with pytest.raises(ConfigError, match="unknown queue role 'pictures': choose from numbers, images"):
        kinds.get_lane("pictures")


def test_a_kind_is_a_decorated_function(registered, settings):
    # Given a function registered as a kind, with only a payload parameter
    @kinds.job_kind("shout", lane="images")
    def shout(payload):
        """Upper-case a text."""
        return {"text": payload["text"].upper()}

    # Then the registry knows its lane, its one-line doc, and calls it with a context as every handler
    kind = kinds.get_kind("shout")
    assert (kind.lane, kind.doc) == ("images", "Upper-case a text.")
    assert kind.handler()({"text": "hi"}, kinds.Context(settings, None)) == {"text": "HI"}
    assert kinds.request_lane("shout").name == "images"


def test_bad_registrations_are_refused(registered):
    with pytest.raises(ConfigError, match="built in"):
        kinds.job_kind("numbers")(lambda p: p)
    with pytest.raises(ConfigError, match="letters, digits"):
        kinds.job_kind("no spaces")
    with pytest.raises(ConfigError, match="must take the payload"):
        kinds.job_kind("empty")(lambda: {})
    with pytest.raises(ConfigError, match="unknown queue role"):
        kinds.job_kind("elsewhere", lane="pictures")
    with pytest.raises(JobError, match="unknown job kind 'nope'; this worker knows image, numbers") as info:
        kinds.get_kind("nope")
    assert info.value.code == "unknown_kind"


def test_load_modules_by_file_and_by_name(registered, tmp_path):
    assert kinds.load_modules([str(WORDCOUNT)]) == ["histogram", "wordcount"]
    assert kinds.load_modules([str(WORDCOUNT)]) == []  # loading twice adds nothing, breaks nothing
    with pytest.raises(ConfigError, match="cannot load job module 'no_such_module_here'"):
        kinds.load_modules(["no_such_module_here"])
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('oops')\n")
    with pytest.raises(ConfigError, match="RuntimeError: oops"):
        kinds.load_modules([str(broken)])
    assert kinds.module_files([str(WORDCOUNT)]) == [("wordcount.py", WORDCOUNT)]
    assert kinds.module_names([str(WORDCOUNT), "pkg.kinds"]) == ["wordcount", "pkg.kinds"]


@pytest.mark.slow
def test_a_worker_runs_your_kind_end_to_end(emulator, tmp_path, start_worker, lab):
    # Given a real worker started with LABKIT_JOB_MODULES naming notebooks/kinds/wordcount.py
    s = lab.settings.replace(job_modules=(str(WORDCOUNT),))
    worker = start_worker(s=s)
    # When a client sends jobs of those kinds, a bad one, and a kind nobody loaded
    words = lab.submit("wordcount", {"text": "a b a"}).result(timeout=60)
    hist = lab.submit("histogram", {"numbers": [1, 2, 2, 3], "bins": 2}).result(timeout=60)
    with pytest.raises(RemoteJobError) as bad:
        lab.submit("wordcount", {"text": 42}).result(timeout=60)
    waiting = lab.submit("translate", {})
    # (and, as a client older than kind queues sent it, on the shared queue)
    old = JobRequest("translate", {}, reply_to=lab.reply_queue.url)
    lab.queue(s.request_queue).send(old.encode())
    with pytest.raises(RemoteJobError) as unknown:
        lab.track(old.id, "translate").result(timeout=60)
    # Then the kinds answer, the bad input is named; the kind nobody loaded waits in its own queue, untouched, and
    # on the shared queue is answered unknown_kind, listing what the worker knows
    assert (words["words"], words["distinct"], words["top"][0]) == (3, 2, ["a", 2])
    assert hist["counts"] == [1, 3]
    assert bad.value.code == "invalid_input" and "'text' must be a string" in str(bad.value)
    assert unknown.value.code == "unknown_kind" and "histogram, image, numbers, wordcount" in str(unknown.value)
    translate = lab.queue(kinds.kind_queue(s, "translate")).depth()
    assert (translate["visible"], translate["in_flight"], waiting.done()) == (1, 0, False)
    assert "add the kind(s) histogram, wordcount" in worker.output
    assert f"serving {s.request_queue}, {s.image_inbox}, {s.request_queue}-kind-histogram, " \
           f"{s.request_queue}-kind-wordcount" in worker.output


@pytest.mark.slow
def test_up_restarts_local_workers_when_the_job_modules_change(tmp_path: Path):
    # Given labkit up with one local worker and no job modules
    s = Settings.load(state_dir=tmp_path / "state", env={})
    try:
        first = local.up(s, local=True, workers=1)
        [old] = local.running(first["state"]["workers"])
        # When up runs again with a job module
        second = local.up(s.replace(job_modules=(str(WORDCOUNT),)), local=True, workers=1)
        [new] = local.running(second["state"]["workers"])
        # Then the old worker was stopped and a new one loads the module
        assert not old.alive() and new.pid != old.pid
        new.wait_log("add the kind(s) histogram, wordcount", timeout=30)
        assert second["state"]["job_modules"] == [str(WORDCOUNT)]
        # And an up with the same modules keeps it
        third = local.up(s.replace(job_modules=(str(WORDCOUNT),)), local=True, workers=1)
        assert [c.pid for c in local.running(third["state"]["workers"])] == [new.pid]
    finally:
        local.stop(s)
    assert not old.alive() and not new.alive()
