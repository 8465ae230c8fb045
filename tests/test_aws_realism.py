"""labkit meets what AWS documents and the emulators skip (tests/aws_faults.py makes the emulator answer as AWS
does, in each real process: the CLI, the workers it starts, a client's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from labkit.aws.clients import Clients
from labkit.aws.storage import Bucket
from tests.aws_faults import fault_env, injected
from tests.conftest import Student, unique_settings
from tests.helpers import labkit

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


def test_teardown_then_up_the_same_day_works_while_s3_holds_a_deleted_buckets_name(emulator, tmp_path: Path) -> None:
    # Given an instructor's lab on an S3 that, as AWS does, holds a deleted bucket's name (here for an hour), and a
    # large job's payload in the bucket (an S3 that outlives the teardown: the shared emulator, as AWS would)
    faults = tmp_path / "faults"
    env = fault_env(faults, deleted_bucket_held_s=3600)
    s = unique_settings(emulator, tmp_path / "state")
    assert labkit("up", "--workers", "0", s=s, env=env).returncode == 0
    bucket = Bucket(Clients(s).s3, s.bucket)
    bucket.put("payloads/big.npy", b"x" * 1000)
    upload = bucket.s3.create_multipart_upload(Bucket=s.bucket, Key="images/processed/half.png")["UploadId"]
    # When the dry run the evening before ends with `labkit teardown`
    down = labkit("teardown", "--yes", s=s, env=env)
    # Then every object and the unfinished upload went, and the bucket stays, empty, and says so
    assert down.returncode == 0, down.stderr
    assert f"bucket {s.bucket}, empty: it costs nothing" in down.stdout, down.stdout
    assert bucket.present() and not bucket.holds_anything()
    assert upload not in str(bucket.s3.list_multipart_uploads(Bucket=s.bucket))
    # And the next morning's `up` works (before: teardown deleted the bucket, and `up` failed on
    # OperationAborted while S3 freed its name). The next morning: SQS's 60 s on the deleted queues' names, which
    # `up` waits out on the machine that deleted them, are long past: so, from another state folder
    s = s.replace(state_dir=tmp_path / "next-morning")
    again = labkit("up", "--workers", "0", s=s, env=env)
    assert again.returncode == 0, again.stderr
    assert injected(faults, "OperationAborted") == 0
    # When the class is over: `teardown --all` deletes the bucket too
    gone = labkit("teardown", "--yes", "--all", s=s, env=env)
    assert gone.returncode == 0 and f"bucket {s.bucket} (" in gone.stdout, gone.stdout + gone.stderr
    assert not bucket.present()
    # Then an `up` while S3 still holds the name gets one line that says what to do, never a traceback
    held = labkit("up", "--workers", "0", s=s.replace(state_dir=tmp_path / "the-day-after"), env=env)
    assert injected(faults, "OperationAborted") == 1  # S3 answered as AWS does
    assert held.returncode == 1 and "Traceback" not in held.stderr, held.stderr
    assert held.stderr.splitlines()[-1].startswith(f"labkit: error: S3 is still freeing the bucket name {s.bucket}")
    assert f"LABKIT_BUCKET={s.bucket}-" in held.stderr and "labkit up" in held.stderr
    labkit("teardown", "--yes", "--all", s=s, env=env)


def test_a_bucket_name_another_account_holds_is_one_line_saying_what_to_do(emulator, tmp_path: Path) -> None:
    # Given S3 answering BucketAlreadyExists for the name (another account owns it: names are global)
    s = unique_settings(emulator, tmp_path / "state")
    faults = tmp_path / "faults"
    up = labkit("up", "--workers", "0", s=s, env=fault_env(faults, taken_buckets=[s.bucket]))
    assert injected(faults, "BucketAlreadyExists") == 1
    assert up.returncode == 1 and "Traceback" not in up.stderr, up.stderr
    assert f"the bucket name {s.bucket} is taken by another AWS account" in up.stderr
    labkit("teardown", "--yes", s=s)


# A class's worth of work through throttling and server errors: many small jobs at once, a large list (its
# payload through S3, both ways) and an image job.
BUSY_CLIENT = """
import io, numpy as np
from PIL import Image
from labkit import Lab
with Lab() as lab:
    small = lab.numbers_many([[i, i + 1, i + 5] for i in range(40)])
    big = lab.numbers(np.arange(200_000))
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(buf, "PNG")
    pic = lab.image(buf.getvalue(), ["grayscale"])
    print([r["median"] for r in small] == [i + 1 for i in range(40)],
          big.result(timeout=120)["max"], pic.result(timeout=120)["width"])
"""


def test_throttling_and_server_errors_now_and_then_lose_nothing_and_stop_no_one(student: Student,
                                                                               tmp_path: Path) -> None:
    # Given every process throttled on one SQS or S3 request in 5 (ThrottlingException, SlowDown) and answered
    # with a server error on one in 7 (InternalFailure, InternalError), as AWS sheds load
    faults = tmp_path / "faults"
    env = fault_env(faults, throttle_every=5, error_5xx_every=7)
    up = student.run("up", **env)
    assert up.returncode == 0, up.stdout + up.stderr
    # When a client sends many jobs at once, a large one and an image through them
    client = subprocess.run([sys.executable, "-c", BUSY_CLIENT], cwd=student.lab, env={**student.env, **env},
                            capture_output=True, text=True, timeout=300)
    # Then every answer is right, nothing was sent twice or lost, and no one met a traceback
    assert client.returncode == 0, client.stderr
    assert client.stdout.split() == ["True", "199999", "64"], client.stdout
    for code in ("ThrottlingException", "SlowDown", "InternalFailure", "InternalError"):
        assert injected(faults, code) > 0, code  # each fault did happen, in the worker's and the client's calls
    # And the worker still serves, and said nothing alarming: botocore's retries absorbed each answer
    status = student.run("status", **env)
    assert status.returncode == 0 and "1 local running" in status.stdout, status.stdout + status.stderr
    log = (student.lab / ".labkit" / "logs" / "worker-0.log").read_text()
    assert "Traceback" not in log and "lost contact" not in log, log
