"""Image jobs end to end: upload to the emulator's S3, a real worker process, download, check pixels."""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.request

import pytest
from PIL import Image

from labkit.aws.clients import Clients
from labkit.aws.queues import Queue
from labkit.errors import RemoteJobError
from tests.helpers import encode, gradient, labkit


def test_upload_list_process_download(lab, start_worker, tmp_path):
    start_worker()
    src = gradient(320, 200)
    # Given an uploaded image (under a folder named for its content's hash)
    key = lab.upload_image(src, name="grad.png")
    assert key == f"images/unprocessed/{hashlib.sha256(encode(src)).hexdigest()[:16]}/grad.png"
    listed = {o.key: o for o in lab.list_images("unprocessed")}
    assert listed[key].size > 0
    # When it is processed to grayscale
    job = lab.image(key, ["grayscale"])
    res = job.result(timeout=60)
    # Then the result, under the job's own folder, equals Pillow's own L conversion, pixel for pixel
    assert res.key == f"images/processed/{job.id}/grad.png"
    assert (res["width"], res["height"], res["format"]) == (320, 200, "png")
    out = res.open()
    assert out.mode == "L"
    assert out.tobytes() == src.convert("L").tobytes()
    # And it can be downloaded, listed and shared by URL
    path = res.download(tmp_path)
    assert Image.open(path).size == (320, 200)
    assert path.name == "grad.png"
    assert f"{job.id}/grad.png" in {o.name for o in lab.list_images("processed")}
    with urllib.request.urlopen(res.url(expires=60), timeout=10) as resp:
        assert resp.read() == path.read_bytes()


def test_chained_ops_and_formats(lab, start_worker):
    start_worker()
    key = lab.upload_image(encode(gradient(400, 200)), name="wide.png")
    # resize keeps aspect with one side given; rotate 90 swaps the dimensions; JPEG output
    job = lab.image(key, [{"op": "resize", "width": 200}, {"op": "rotate", "degrees": 90}], format="jpeg",
                    quality=80)
    res = job.result(timeout=60)
    assert (res["width"], res["height"], res["format"]) == (100, 200, "jpeg")
    assert res.key == f"images/processed/{job.id}/wide.jpg"
    assert res.open().format == "JPEG"


def test_image_from_a_file_path(lab, start_worker, tmp_path):
    start_worker()
    path = tmp_path / "photo.jpg"
    gradient(320, 200).save(path, "JPEG")
    res = lab.image(path, ["thumbnail:64", "mirror"], format="webp").result(timeout=60)
    assert max(res["width"], res["height"]) == 64 and res["format"] == "webp"


BAD_PAYLOADS = [
    ({"key": "nothere.png", "ops": []}, "not_found"),
    ({"key": "../secrets.png", "ops": []}, "invalid_input"),
    ({"key": "/etc/passwd", "ops": []}, "invalid_input"),
    ({"key": "ok.png", "ops": [{"op": "melt"}]}, "invalid_input"),
    ({"key": "ok.png", "ops": [{"op": "blur", "radius": -1}]}, "invalid_input"),
    ({"key": "junk.png", "ops": []}, "invalid_input"),
    ({"key": "bomb.png", "ops": []}, "too_large"),
    ({"key": "ok.png", "ops": [], "bucket": "someone-elses-bucket"}, "invalid_input"),
]


def test_bad_image_jobs_get_error_replies_and_the_worker_keeps_serving(lab, start_worker):
    start_worker()
    lab.bucket.put("images/unprocessed/ok.png", encode(gradient(32, 32)))
    lab.bucket.put("images/unprocessed/junk.png", b"this is not an image")
    bomb = Image.new("1", (20_000, 20_000))  # 400 megapixels that compress to a few KB
    buf = io.BytesIO()
    bomb.save(buf, "PNG")
    lab.bucket.put("images/unprocessed/bomb.png", buf.getvalue())
    jobs = [lab.submit("image", {"bucket": lab.bucket.name, "format": "png", **p}) for p, _ in BAD_PAYLOADS]
    for job, (payload, code) in zip(jobs, BAD_PAYLOADS, strict=True):
        with pytest.raises(RemoteJobError) as info:
            job.result(timeout=60)
        assert info.value.code == code, (payload, str(info.value))
    assert not any(o.key.startswith("secrets") for o in lab.bucket.list(""))
    # Still serving
    assert lab.image("ok.png", ["invert"]).result(timeout=60)["width"] == 32


def test_legacy_plain_file_name(settings, start_worker):
    # Given the original lab's client: a file in images/unprocessed/ and its bare name on imageInbox
    start_worker()
    clients = Clients(settings)
    cat = encode(gradient(320, 200), "JPEG")
    clients.s3.put_object(Bucket=settings.bucket, Key="images/unprocessed/cat.jpg", Body=cat)
    inbox = Queue.by_name(clients.sqs, settings.image_inbox)
    outbox = Queue.by_name(clients.sqs, settings.image_outbox)
    inbox.send("cat.jpg")
    inbox.send("dog.jpg")
    replies = []
    while len(replies) < 2:
        msgs = outbox.receive(10, wait=5)
        replies += [m.body for m in msgs]
        if msgs:
            outbox.delete_batch([m.receipt for m in msgs])
    # Then the reply is the bare name, the result is 1-bit black and white, a missing file is ?Error
    assert "cat.jpg" in replies
    err = next(r for r in replies if r != "cat.jpg")
    assert err.startswith("?Error") and "dog.jpg" in err
    data = clients.s3.get_object(Bucket=settings.bucket, Key="images/processed/cat.jpg")["Body"].read()
    out = Image.open(io.BytesIO(data))
    assert out.format == "JPEG" and out.size == (320, 200)


@pytest.mark.slow
def test_cli_submit_image_file_and_folder(settings, start_worker, tmp_path):
    start_worker()
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(3):
        gradient(100 + i, 80).save(folder / f"p{i}.png")
    one = labkit("submit", "image", str(folder / "p0.png"), "--op", "grayscale", "--op", "resize:50x40",
                 "--out", str(tmp_path / "out.png"), s=settings)
    assert one.returncode == 0, one.stderr
    info = json.loads(one.stdout)
    assert (info["width"], info["height"]) == (50, 40)
    assert Image.open(tmp_path / "out.png").mode == "L"
    out_dir = tmp_path / "done"
    out_dir.mkdir()
    many = labkit("submit", "image", str(folder), "--op", "thumbnail:32", "--out", str(out_dir), s=settings)
    assert many.returncode == 0, many.stderr
    assert sorted(os.listdir(out_dir)) == ["p0.png", "p1.png", "p2.png"]
    assert "images" in many.stderr  # the progress bar's label
