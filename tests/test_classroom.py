"""A class on one account and one bucket: nothing overwritten, no neighbour breaks you, teardown that
works anywhere. Real emulator (moto's server over HTTP), a second one (fauxqs) where noted, real workers."""

from __future__ import annotations

import io
import subprocess
import sys

from PIL import Image, ImageOps

from labkit.client import Lab
from labkit.config import Settings
from labkit.processes import settings_env
from tests.conftest import ROOT


def picture(w: int, h: int, seed: int) -> Image.Image:
    """An RGB picture whose pixels depend on ``seed``: two seeds never give the same image."""
    img = Image.new("RGB", (w, h))
    img.putdata([((x * 7 + seed * 50) % 256, (y * 5 + seed * 90) % 256, (x * y + seed) % 256)
                 for y in range(h) for x in range(w)])
    return img


def labkit_cli(s: Settings, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labkit", *args], env=settings_env(s), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


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
    done = labkit_cli(settings, "submit", "image", str(src), "--op", "grayscale", "--out", f"{out}/")
    assert done.returncode == 0, done.stderr
    # Then the folder was made and holds one file per image, each its own picture in gray
    assert out.is_dir(), f"{out} is not a folder"
    assert sorted(p.name for p in out.iterdir()) == ["p0.png", "p1.png", "p2.png"]
    for stem, pic in pics.items():
        with Image.open(out / f"{stem}.png") as img:
            assert img.tobytes() == pic.convert("L").tobytes(), stem
