"""A class on one account and one bucket: nothing overwritten, no neighbour breaks you, teardown that
works anywhere. Real emulator (moto's server over HTTP), a second one (fauxqs) where noted, real workers."""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import time
import urllib.request
import uuid

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError
from PIL import Image, ImageOps

from labkit import fleet, provision, unattended
from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.aws.storage import Bucket
from labkit.client import Lab
from labkit.config import REPLY_QUEUE_PREFIX, Settings, read_state, update_state
from labkit.errors import LabkitError
from labkit.protocol import JobRequest
from labkit.waiting import wait_for
from tests import job_kinds
from tests.conftest import ROOT, unique_settings
from tests.helpers import labkit
from tests.test_notebooks import _notebook, all_text, executed, summary


def picture(w: int, h: int, seed: int) -> Image.Image:
    """An RGB picture whose pixels depend on ``seed``: two seeds never give the same image."""
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 7 + seed * 50) % 256, (y * 5 + seed * 90) % 256, (x * y + seed) % 256)
                 for y in range(h) for x in range(w)])
    return img


# -- nothing overwritten ---------------------------------------------------------------------------------

def test_same_file_name_two_students_and_two_op_chains_each_get_their_own(settings, start_worker, tmp_path):
    # Given a worker, and two students sharing the queues and the bucket, each with a different cat.png
    start_worker("--concurrency", "4")
    pics = {"alice": picture(64, 48, 1), "bob": picture(40, 30, 2)}
    paths = {}
    for who, pic in pics.items():
        (tmp_path / who).mkdir()
        paths[who] = tmp_path / who / "cat.png"
        pic.save(paths[who], "PNG")
    with Lab(settings) as alice, Lab(settings) as bob:
        # When all their jobs are in flight at once, Alice running two op chains on her cat.png
        jobs = {"alice gray": alice.image(paths["alice"], ["grayscale"]),
                "alice mirror": alice.image(paths["alice"], ["mirror"]),
                "bob gray": bob.image(paths["bob"], ["grayscale"])}
        results = {name: job.result(timeout=60) for name, job in jobs.items()}
        # Then each result holds what its own job made of its own picture, pixel for pixel
        expected = {"alice gray": pics["alice"].convert("L"), "alice mirror": ImageOps.mirror(pics["alice"]),
                    "bob gray": pics["bob"].convert("L")}
        stored = {}
        for name, res in results.items():
            img = res.open()
            assert (img.mode, img.size, img.tobytes()) == (expected[name].mode, expected[name].size,
                                                           expected[name].tobytes()), name
            stored[name] = alice.bucket.get(res.key)
        # And each has a key of its own, under its job's id, named for the file
        assert {name: r.key for name, r in results.items()} == {
            name: f"images/processed/{job.id}/cat.png" for name, job in jobs.items()}
        # And the two uploads called cat.png are two objects, each still the student's own picture
        sources = {who: r["source"] for who, r in (("alice", results["alice gray"]), ("bob", results["bob gray"]))}
        assert sources["alice"] != sources["bob"] and results["alice mirror"]["source"] == sources["alice"]
        for who, key in sources.items():
            assert Image.open(io.BytesIO(alice.bucket.get(key))).tobytes() == pics[who].tobytes()
        # When later jobs run on other pictures called cat.png, and one names its output explicitly
        pic3 = picture(64, 48, 3)
        later = [bob.image(pic3, ["invert"], name="cat.png"), alice.image(pic3, ["grayscale"], name="cat.png"),
                 alice.image(pic3, ["flip"], name="cat.png", output="alice/cat.png")]
        later_keys = [job.result(timeout=60).key for job in later]
        # Then the explicit output is where the caller asked, and every earlier result is unchanged
        assert later_keys[2] == "images/processed/alice/cat.png"
        assert not set(later_keys) & {r.key for r in results.values()}
        assert {name: alice.bucket.get(res.key) for name, res in results.items()} == stored


def test_submit_a_folder_into_a_new_out_folder_writes_one_file_per_image(settings, start_worker, tmp_path):
    # Given a folder of three images and an --out folder that does not exist yet
    start_worker()
    src = tmp_path / "pictures"
    src.mkdir()
    pics = {f"p{i}": picture(24 + 8 * i, 16, i) for i in range(3)}
    for stem, pic in pics.items():
        pic.save(src / f"{stem}.png", "PNG")
    out = tmp_path / "new"
    # When `labkit submit image DIR --op grayscale --out new/` runs
    done = labkit("submit", "image", str(src), "--op", "grayscale", "--out", f"{out}/", s=settings)
    assert done.returncode == 0, done.stderr
    # Then the folder was made and holds one file per image, each its own picture in gray
    assert out.is_dir(), f"{out} is not a folder"
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png", "p2.png"]
    for stem, pic in pics.items():
        with Image.open(out / f"{stem}.png") as img:
            assert img.tobytes() == pic.convert("L").tobytes(), stem


# -- no neighbour breaks you -----------------------------------------------------------------------------

def left_by_a_gone_client(s: Settings, hours: float) -> Queue:
    """A reply queue as a client leaves it when its kernel dies: last seen ``hours`` ago."""
    queue = provision.create_reply_queue(Clients(s))
    queue.tag({provision.LAST_SEEN_TAG: str(int(time.time() - hours * 3600))})
    return queue


def exists(s: Settings, queue: Queue) -> bool:
    return Queue.find(Clients(s).sqs, queue.name) is not None


def test_down_next_to_a_running_client_deletes_only_idle_reply_queues(settings, start_worker, tmp_path):
    # Given a worker, Alice's notebook with a job done (her reply queue in use), and two reply queues of
    # clients that died: one two hours ago, one (an older client, untagged) just now
    start_worker()
    with Lab(settings) as alice:
        assert alice.numbers([1, 2, 3]).result(timeout=60)["median"] == 2
        mine = alice.reply_queue
        dead = left_by_a_gone_client(settings, hours=2)
        fresh_untagged = Queue.create(Clients(settings).sqs, f"{REPLY_QUEUE_PREFIX}old-client-{uuid.uuid4().hex[:6]}")
        # When Bob runs `labkit down` in his own shell, on the same account
        bob = settings.replace(state_dir=tmp_path / "bob")
        down = labkit("down", s=bob)
        assert down.returncode == 0, down.stderr
        # Then only the queue idle past the hour went; Alice's and the young untagged one stay, and down says so
        assert not exists(settings, dead)
        assert exists(settings, mine) and exists(settings, fresh_untagged)
        assert "deleted 1 leftover reply queue(s)" in down.stdout and "kept" in down.stdout, down.stdout
        # And Alice keeps getting results on the same queue, none lost, nothing made anew
        assert alice.numbers([4, 5, 6]).result(timeout=60)["median"] == 5
        assert alice.reply_queue.url == mine.url and alice.replies.replaced == 0
    fresh_untagged.delete()


def test_a_live_client_refreshes_its_last_seen_tag(settings):
    # Given a client whose reply queue was marked seen two hours ago (say, before a long pause)
    with Lab(settings) as lab:
        lab.replies.heartbeat = 0.5  # instead of every 5 minutes
        lab.numbers([1])  # makes the queue and starts the listener; no worker needed
        queue = lab.reply_queue
        queue.tag({provision.LAST_SEEN_TAG: str(int(time.time() - 7200))})
        # When its client keeps running, the tag comes back to now
        wait_for(lambda: time.time() - provision.last_seen(queue) < 60, 30, "the last-seen tag to be refreshed")
        # Then a teardown's cleanup keeps it
        assert queue.name in provision.cleanup_reply_queues(Clients(settings)).kept


def test_teardown_by_a_neighbour_leaves_a_running_client_working(emulator, tmp_path, start_worker):
    # Given one account and one bucket shared by Alice and Bob, each with their own queue names (the
    # LABKIT_* variables), a worker for Alice, and Alice's notebook running
    alice_s = unique_settings(emulator, tmp_path / "alice")
    bob_s = unique_settings(emulator, tmp_path / "bob").replace(bucket=alice_s.bucket)
    provision.ensure(Clients(alice_s))
    provision.ensure(Clients(bob_s))
    start_worker(s=alice_s)
    with Lab(alice_s) as alice:
        assert alice.numbers([1, 2, 3]).result(timeout=60)["median"] == 2
        # When Bob tears his part down, keeping the shared bucket, while Alice's session runs
        torn = labkit("teardown", "--yes", "--keep-bucket", s=bob_s)
        assert torn.returncode == 0, torn.stderr
        # Then Bob's queues are gone, Alice's reply queue is kept (and said so), and Alice still gets results
        assert f"queue {bob_s.request_queue}" in torn.stdout
        assert f"kept      queue {alice.reply_queue.name}" in torn.stdout, torn.stdout
        assert Queue.find(Clients(bob_s).sqs, bob_s.request_queue) is None
        assert alice.numbers([4, 5, 6]).result(timeout=60)["median"] == 5
        img = alice.image(picture(32, 32, 7), ["grayscale"]).result(timeout=60)
        assert img.open().tobytes() == picture(32, 32, 7).convert("L").tobytes()
        assert alice.replies.replaced == 0


# -- a reply queue deleted under a running client ----------------------------------------------------------

@pytest.mark.slow
def test_a_lab_whose_reply_queue_is_deleted_makes_a_new_one_and_gets_its_results(make_settings, start_worker,
                                                                                 caplog):
    # Given a worker that knows a slow job kind, and a client with two jobs in flight
    s = make_settings(job_modules=job_kinds.PATH)
    worker = start_worker(s=s)
    sqs = Clients(s).sqs
    with Lab(s) as lab, caplog.at_level(logging.WARNING, logger="labkit.replies"):
        slow = lab.submit("sleep", {"seconds": 2})
        quick = lab.numbers(list(range(1, 2001)))  # answered before the deletion, or after: either way once
        old = lab.reply_queue
        worker.wait_for(f"sleep job {slow.id} started")
        # When anyone deletes the client's reply queue while the job runs
        sqs.delete_queue(QueueUrl=old.url)
        # Then the jobs in flight are answered (sent again, same ids), through a new reply queue
        assert slow.result(timeout=90) == {"slept": 2}
        assert quick.result(timeout=90)["median"] == 1000.5
        assert lab.reply_queue.url != old.url and lab.replies.replaced == 1
        # And one line said so
        lines = [r.getMessage() for r in caplog.records if r.name == "labkit.replies"]
        assert len(lines) == 1 and old.name in lines[0] and lab.reply_queue.name in lines[0], lines
        # And the next job is answered as usual
        assert lab.numbers([7, 8, 9]).result(timeout=60)["median"] == 8
        # When the queue is deleted while the client is idle, then a job is sent
        idle_old = lab.reply_queue
        sqs.delete_queue(QueueUrl=idle_old.url)
        again = lab.numbers([10, 20, 30])
        # Then that job is answered too, through a third queue
        assert again.result(timeout=90)["median"] == 20
        assert lab.replies.replaced == 2 and lab.reply_queue.url not in (old.url, idle_old.url)


@pytest.mark.slow
def test_a_job_sent_by_other_means_fails_clearly_when_its_reply_queue_is_deleted(make_settings, start_worker):
    # Given a request sent with a raw body, its reply_to this client's queue, and tracked by id
    s = make_settings(job_modules=job_kinds.PATH)
    worker = start_worker(s=s)
    with Lab(s) as lab:
        req = JobRequest("sleep", {"seconds": 2}, reply_to=lab.reply_queue.url)
        Queue.by_name(lab.clients.sqs, s.request_queue).send(req.encode())
        job = lab.track(req.id, "sleep")
        worker.wait_for(f"sleep job {req.id} started")
        # When the reply queue is deleted before the reply
        Clients(s).sqs.delete_queue(QueueUrl=lab.reply_queue.url)
        # Then the job fails with an error that says why and what to do, long before its timeout
        with pytest.raises(LabkitError, match="cannot send it again: send the job again"):
            job.result(timeout=90)


def test_jobs_in_flight_fail_clearly_when_their_request_queue_went_too(settings):
    # Given a job waiting for a worker (none runs)
    sqs = Clients(settings).sqs
    with Lab(settings) as lab:
        job = lab.numbers([1, 2, 3])
        # When a teardown deletes the request queue and the client's reply queue
        sqs.delete_queue(QueueUrl=Queue.by_name(sqs, settings.request_queue).url)
        sqs.delete_queue(QueueUrl=lab.reply_queue.url)
        # Then the job fails, saying why and what to do, instead of waiting for its timeout
        with pytest.raises(LabkitError, match=r"request queue is gone too .* `labkit up` makes the queues again"):
            job.result(timeout=60)


# -- up right after teardown: SQS's 60-second rule -------------------------------------------------------

class JustDeleted:
    """The answers AWS gives for a queue deleted moments ago, which neither moto nor fauxqs gives (both
    forget a deleted queue at once and take its name back): GetQueueUrl still finds the old queue's URL
    (once), and CreateQueue refuses the name with QueueDeletedRecently ``refusals`` times. Injected at the
    boto3 call with botocore's events on this one client: those calls are answered here, never sent."""

    def __init__(self, clients: Clients, name: str, url: str, refusals: int) -> None:
        self.name, self.url, self.refusals, self.lookups = name, url, refusals, 1
        events = clients.sqs.meta.events
        events.register("before-parameter-build.sqs.*", self._mark)
        events.register("before-call.sqs.GetQueueUrl", self._get_queue_url)
        events.register("before-call.sqs.CreateQueue", self._create_queue)

    def _mark(self, params: dict, context: dict, **_: object) -> None:
        context["just_deleted"] = params.get("QueueName") == self.name

    def _get_queue_url(self, context: dict, **_: object) -> tuple | None:
        if context.get("just_deleted") and self.lookups:
            self.lookups -= 1
            return AWSResponse("", 200, {}, None), {"QueueUrl": self.url}
        return None

    def _create_queue(self, context: dict, **_: object) -> tuple | None:
        if context.get("just_deleted") and self.refusals:
            self.refusals -= 1
            return AWSResponse("", 400, {}, None), {"Error": {
                "Code": "AWS.SimpleQueueService.QueueDeletedRecently",
                "Message": "You must wait 60 seconds after deleting a queue before you can create another with "
                           "the same name."}}
        return None


def test_provisioning_waits_out_a_queue_deleted_moments_ago_and_never_calls_it_fine(settings, monkeypatch):
    # Given provisioned queues, the request queue deleted moments ago, and SQS answering as it does then
    # (its attempts 0.5 s apart instead of 5 s, to keep the test short: the count of refusals is what matters)
    monkeypatch.setattr(provision, "RECREATE_POLL", 0.5)
    s = settings
    clients = Clients(s)
    old = Queue.by_name(clients.sqs, s.request_queue)
    old.delete()
    fault = JustDeleted(clients, s.request_queue, old.url, refusals=2)
    said: list[str] = []
    # When provisioning runs again
    report = provision.ensure(clients, progress=said.append)
    # Then it did not take the vanished queue for fine: it waited, saying why, and made it again
    assert f"queue {s.request_queue}" in report.created
    assert f"queue {s.request_queue}" not in report.unchanged
    assert fault.refusals == 0 and len(said) == 2, said
    assert all(s.request_queue in line and "60 s" in line and "waiting" in line for line in said)
    # And the new queue is a real one, with its redrive policy, that carries messages
    queue = Queue.by_name(Clients(s).sqs, s.request_queue)
    policy = json.loads(queue.attributes("RedrivePolicy")["RedrivePolicy"])
    assert policy["deadLetterTargetArn"].endswith(s.request_queue + "-dlq")
    queue.send("1,2,3")
    assert [m.body for m in queue.receive(1, wait=1)] == ["1,2,3"]


def test_up_right_after_teardown_waits_until_sqs_takes_the_names_back(emulator, tmp_path):
    # Given labkit up on an endpoint whose queues outlive this machine's processes (as on AWS)
    s = unique_settings(emulator, tmp_path / "state")
    up = labkit("up", "--workers", "0", s=s)
    assert up.returncode == 0, up.stderr
    # When it is torn down
    torn = labkit("teardown", "--yes", s=s)
    assert torn.returncode == 0, torn.stderr
    # Then the state file remembers when the queues went, and where
    record = read_state(s.state_dir)["queues_deleted"]
    assert (record["endpoint"], record["region"]) == (s.endpoint_url, s.region)
    # When `up` runs again 58 s later (the record is moved back 58 s, to keep the test short)
    update_state(s.state_dir, queues_deleted={**record, "at": record["at"] - 58})
    again = labkit("up", "--workers", "0", s=s)
    # Then it waited out the rest of SQS's minute, saying so, and the queues are there
    assert again.returncode == 0, again.stderr
    assert "SQS takes a deleted queue's name back only after" in again.stderr, again.stderr
    assert f"created   queue {s.request_queue}" in again.stdout
    assert "queues_deleted" not in read_state(s.state_dir)
    labkit("teardown", "--yes", s=s)


# -- one ordered teardown, anywhere ----------------------------------------------------------------------

@pytest.mark.slow
def test_teardown_notebook_shows_deletes_and_checks_the_fleet(tmp_path):
    # Given a run whose first notebook deploys an EC2 fleet on the emulator (recorded: nothing boots there),
    # then the project's own 99_teardown notebook
    books = tmp_path / "books"
    books.mkdir()
    _notebook(books / "50_deploy.ipynb", "from labkit import fleet, notebooks\n"
              "lab = notebooks.connect(state_dir, backend)\n"
              "fleet.deploy(lab.clients, fleet.FleetSpec(workers=1))\n"
              "print(fleet.format_status(fleet.fleet_status(lab.clients)))")
    shutil.copy(ROOT / "notebooks" / "99_teardown.ipynb", books)
    # When they run
    report = unattended.run_notebooks(out=tmp_path / "runs", folder=books, workers=0, echo=lambda s: None)
    assert [(n.name, n.status) for n in report.notebooks] == [("50_deploy", "ok"), ("99_teardown", "ok")], \
        [n.error for n in report.notebooks]
    [instance] = re.findall(r"\b(i-[0-9a-f]+)\b", all_text(executed(report, "50_deploy")))
    # Then the teardown notebook listed the fleet's instance among what exists, before deleting anything
    text = all_text(executed(report, "99_teardown"))
    before, after = text.split("What is left after teardown")
    assert f"instance {instance} (running)" in before
    # And deleted the fleet, checked it is gone, and said so with everything else
    s = summary(report, "99_teardown")
    assert any(instance in line for line in s["deleted"]), s["deleted"]
    assert s["fleet_left"] == [] and s["left"] == [] and s["processes_left"] == []
    assert re.search(r"EC2 worker fleet\s+none left", after), after
    assert "nothing is left: no fleet, no queue, no bucket, no labkit process" in after


def test_down_says_what_keeps_running_elsewhere(settings, tmp_path):
    # Given an EC2 fleet deployed from this folder (on the emulator, which outlives `labkit down` here, as AWS does)
    fleet.deploy(Clients(settings), fleet.FleetSpec(workers=1))
    [instance] = [i["id"] for i in fleet.fleet_status(Clients(settings))["instances"]]
    # When `labkit down` runs
    down = labkit("down", s=settings)
    # Then it says the fleet keeps running and billing, and how to stop it
    assert down.returncode == 0, down.stderr
    assert f"the EC2 fleet {fleet.FleetNames(settings.bucket or '').fleet} keeps running (and billing)" in down.stdout
    assert instance in down.stdout and "labkit undeploy" in down.stdout, down.stdout
    fleet.undeploy(Clients(settings))


def test_up_status_down_teardown_on_a_second_emulator_without_ec2(fauxqs, tmp_path):
    # Given fauxqs (SQS and S3, no EC2, no IAM, no Auto Scaling), queue and bucket names of this test's own
    tag = uuid.uuid4().hex[:8]
    s = Settings.load(state_dir=tmp_path / "state", endpoint_url=fauxqs, env={}, bucket=f"labkit-class-{tag}",
                      request_queue=f"requests-{tag}", response_queue=f"responses-{tag}",
                      image_inbox=f"inbox-{tag}", image_outbox=f"outbox-{tag}")
    # When `labkit up` starts a worker there, and a job runs
    up = labkit("up", "--workers", "1", s=s)
    assert up.returncode == 0, up.stderr
    done = labkit("submit", "numbers", "1", "5", "22", s=s)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["median"] == 5
    # Then `labkit status` shows its queues and worker
    status = labkit("status", s=s)
    assert status.returncode == 0, status.stderr
    assert f"requests-{tag}" in status.stdout and "1 local running" in status.stdout
    # When `labkit down` runs next to a live client, and a reply queue of a client gone two hours ago is there
    dead = left_by_a_gone_client(s, hours=2)
    with Lab(s) as live:
        assert live.numbers([2, 4]).result(timeout=60)["median"] == 3
        down = labkit("down", s=s)
        # Then the worker stopped, the dead client's queue went, the live one's stayed
        assert down.returncode == 0, down.stderr
        assert "stopped 1 worker(s)" in down.stdout and "deleted 1 leftover reply queue(s)" in down.stdout
        assert not exists(s, dead) and exists(s, live.reply_queue)
    # When `labkit teardown` runs where nothing was deployed and there is no EC2 API
    torn = labkit("teardown", "--yes", "--all", s=s)
    # Then it deletes the queues and the bucket, says the fleet could not be looked at, and leaves nothing
    assert torn.returncode == 0, torn.stderr
    assert f"deleted   queue requests-{tag}" in torn.stdout and f"deleted   bucket labkit-class-{tag}" in torn.stdout
    assert "fleet not checked" in torn.stdout and "still there" not in torn.stdout, torn.stdout
    clients = Clients(s)
    assert not [u for u in clients.sqs.list_queues().get("QueueUrls", []) if tag in u]
    assert f"labkit-class-{tag}" not in [b["Name"] for b in clients.s3.list_buckets()["Buckets"]]


# -- whose bucket: ExpectedBucketOwner, a name taken by another account, TLS only ---------------------------

def test_every_s3_call_says_which_account_must_own_the_bucket(settings, start_worker, tmp_path):
    # Given a client whose S3 requests are watched as they are made (botocore's request-created event:
    # observed, not changed)
    start_worker()
    with Lab(settings) as lab:
        seen: list[tuple[str, str | None]] = []
        lab.clients.s3.meta.events.register("request-created.s3", lambda request, operation_name, **_: seen.append(
            (operation_name, request.headers.get("x-amz-expected-bucket-owner"))))
        # When it provisions, uploads, runs an image job, lists, reads and downloads the result, and a bucket
        # is used as the worker builds it (from its own Clients)
        provision.ensure_bucket(lab.clients)
        res = lab.image(picture(32, 24, 4), ["grayscale"]).result(timeout=60)
        lab.list_images("processed")
        res.download(tmp_path)
        worker_side = Bucket(Clients(settings).s3, lab.bucket.name)
        worker_side.s3.meta.events.register("request-created.s3", lambda request, operation_name, **_: seen.append(
            (operation_name, request.headers.get("x-amz-expected-bucket-owner"))))
        worker_side.put("payloads/check.json", b"{}")
        assert worker_side.get("payloads/check.json") == b"{}"
        # Then every call that names the bucket says it must be this account's
        ops = {op for op, _ in seen}
        assert {"HeadBucket", "PutObject", "GetObject", "ListObjectsV2", "PutBucketEncryption"} <= ops, ops
        assert {(op, owner) for op, owner in seen} == {(op, lab.clients.account_id()) for op in ops}
        # And a presigned URL does not (whoever opens it could not send the header), and still works
        url = res.url(expires=60)
        assert "expected-bucket-owner" not in url.lower()
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read() == lab.bucket.get(res.key)


def test_a_bucket_name_taken_by_another_account_is_a_clear_error(emulator, tmp_path):
    # Given a bucket created by another account under the name labkit would use (the emulator, like S3,
    # refuses another account's bucket; the x-moto-account-id header makes the test's client that account)
    s = unique_settings(emulator, tmp_path / "state")
    stranger = boto3.client("s3", endpoint_url=emulator.url, region_name=s.region, aws_access_key_id="other",
                            aws_secret_access_key="other")
    stranger.meta.events.register("before-sign.s3", lambda request, **_: request.headers.__setitem__(
        "x-moto-account-id", "210987654321"))
    stranger.create_bucket(Bucket=s.bucket)
    stranger.put_object(Bucket=s.bucket, Key="theirs.txt", Body=b"not yours")
    # When `labkit up` provisions with that name
    up = labkit("up", "--workers", "0", s=s)
    # Then it stops with one line that says whose it is and what to do
    assert up.returncode == 1
    assert f"the bucket name {s.bucket} is taken by another AWS account" in up.stderr, up.stderr
    assert "set LABKIT_BUCKET to a name of your own" in up.stderr and "Traceback" not in up.stderr
    # And the other account's bucket was left as it was
    assert [o["Key"] for o in stranger.list_objects_v2(Bucket=s.bucket)["Contents"]] == ["theirs.txt"]
    with pytest.raises(ClientError, match="NoSuchBucketPolicy"):
        stranger.get_bucket_policy(Bucket=s.bucket)
    labkit("teardown", "--yes", s=s.replace(bucket=s.bucket + "-mine"))


def test_the_bucket_refuses_requests_not_made_over_tls(settings):
    # Given the labkit bucket with a policy statement of someone else's (an instructor's, say)
    bucket = Bucket(Clients(settings).s3, settings.bucket or "")
    theirs = {"Sid": "instructor-reads", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
              "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket.name}/*"}
    bucket.s3.put_bucket_policy(Bucket=bucket.name, Policy=json.dumps({"Version": "2012-10-17",
                                                                       "Statement": [theirs]}))
    # When labkit requires TLS on it, as provisioning does on AWS (any endpoint that speaks TLS)
    assert provision.tls_endpoint(settings.replace(endpoint_url=None))
    assert provision.tls_endpoint(settings.replace(endpoint_url="https://s3.example.test"))
    changed = bucket.require_tls("aws")
    # Then the policy denies every request without TLS, on the bucket and its objects, and keeps the other one
    assert changed and bucket.require_tls("aws") is False  # a second time changes nothing
    statements = bucket.policy()["Statement"]
    assert statements[0] == theirs
    assert statements[1] == {"Sid": "labkit-deny-insecure-transport", "Effect": "Deny", "Principal": "*",
                             "Action": "s3:*", "Resource": [f"arn:aws:s3:::{bucket.name}",
                                                           f"arn:aws:s3:::{bucket.name}/*"],
                             "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    # (Not on the emulator itself: it speaks plain HTTP, so such a bucket would refuse it everything; and
    # moto treats any conditional Deny as denying all, so the statement's effect cannot be shown here.)
    assert not provision.tls_endpoint(settings)
    bucket.s3.delete_bucket_policy(Bucket=bucket.name)
