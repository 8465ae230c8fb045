"""Issue 20, a newcomer's first hour with `labkit submit` and `img.download`: where results land (a path
ending in / is a folder), one line instead of a traceback when they cannot land there (and the result's key,
so nothing is lost), numbers from a file or standard input, items counted from 1, options that would be
ignored, an --out that would destroy its source or lie about its format, and the help texts.

Real `labkit` processes and the real Python API against the real emulator and real worker processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from labkit import widgets
from labkit.config import Settings
from labkit.errors import InvalidInput, LabkitError
from labkit.jobs.images import OPS
from labkit.jobs.numbers import MAX_RANDOM_LENGTH, compute
from labkit.keys import EXTENSION_OF_FORMAT
from tests.conftest import ROOT, require_tool
from tests.helpers import labkit
from tests.test_classroom import picture


def cli(s: Settings | None, *args: str, cwd: Path = ROOT, stdin: str | None = None,
        prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``labkit ARGS`` as a user runs it, pointed at ``s``' queues and bucket (``prefix``: a command to run
    it under)."""
    # PYTHONPATH: `-m labkit` from another folder still finds this checkout
    return labkit(*args, s=s, env={"PYTHONPATH": str(ROOT)}, cwd=cwd, input=stdin, prefix=prefix or ())


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a refused command (exit 1, no traceback), without its ``labkit: error:``."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert out.stderr.startswith("labkit: error: "), out.stderr
    return out.stderr.strip().removeprefix("labkit: error: ")


def image_file(path: Path, seed: int = 1) -> Path:
    picture(40, 30, seed).save(path)
    return path


def nothing_sent(lab) -> bool:
    """No image was uploaded and no result written: the command stopped before the job."""
    return lab.bucket.list("images/") == []


def read_only_prefix(folder: Path) -> list[str]:
    """A command prefix under which ``folder`` is a real read-only folder. Root writes into any folder whatever
    its mode, so as root the process runs in its own mount namespace with ``folder`` bound read-only."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    works = shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0
    require_tool(works, "unshare -rm (a mount namespace, to give root a read-only folder)")
    return ["unshare", "-rm", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', str(folder)]


# -- item 3: a path ending in / is a folder ---------------------------------------------------------------

def test_download_into_a_path_ending_in_a_slash_makes_the_folder(lab, start_worker, tmp_path):
    # Given a processed image
    start_worker()
    img = lab.image(image_file(tmp_path / "cat.png"), ["grayscale"]).result(timeout=60)
    # When it is downloaded into "out/", which does not exist yet
    path = img.download(f"{tmp_path / 'out'}/")
    # Then out/ is a folder, made for it, holding the result under its own name
    assert (tmp_path / "out").is_dir()
    assert path == tmp_path / "out" / "cat.png"
    assert path.read_bytes() == lab.bucket.get(img.key)


def test_lab_download_image_into_a_path_ending_in_a_slash_makes_the_folder(lab, start_worker, tmp_path):
    # Given a processed image, fetched by its key as `labkit download` and the notebooks do
    start_worker()
    img = lab.image(image_file(tmp_path / "cat.png"), ["grayscale"]).result(timeout=60)
    # When Lab.download_image puts it into "fetched/", which does not exist yet
    path = lab.download_image(img.key, f"{tmp_path / 'fetched'}/")
    # Then fetched/ is a folder holding the result under its own name (before: a file called "fetched")
    assert path == tmp_path / "fetched" / "cat.png" and path.read_bytes() == lab.bucket.get(img.key)


def test_the_python_api_refuses_a_random_list_past_the_limit_in_one_line(lab):
    # (before: numpy's "Unable to allocate 7.28 TiB" from lab.random_numbers(10**12))
    with pytest.raises(InvalidInput, match=r"at least 1 and at most 10,000,000, got 1,000,000,000,000"):
        lab.random_numbers(10**12)
    assert len(lab.random_numbers(MAX_RANDOM_LENGTH // 1000)) == 10_000


def test_cli_out_ending_in_a_slash_makes_the_folder(settings, start_worker, tmp_path):
    start_worker()
    image_file(tmp_path / "cat.png")
    # When `labkit submit image cat.png --out newdir/` runs where newdir does not exist
    out = cli(settings, "submit", "image", "cat.png", "--op", "grayscale", "--out", "newdir/", cwd=tmp_path)
    # Then newdir is a folder with cat.png in it, and the output says so
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "newdir").is_dir() and '"downloaded_to": "newdir/cat.png"' in out.stdout
    with Image.open(tmp_path / "newdir" / "cat.png") as result:
        assert result.mode == "L" and result.size == (40, 30)


# -- item 4: one line, never a traceback; the result's key when the job already ran ---------------------

@pytest.mark.parametrize("source, out", [("cat.png", "ro/x.png"), ("cat.png", "ro/"), ("pics", "ro/")])
def test_cli_out_into_a_read_only_folder_is_refused_before_anything_is_sent(settings, lab, tmp_path, source, out):
    # Given an image, a folder of images, and a folder this user cannot write into
    image_file(tmp_path / "cat.png")
    (tmp_path / "pics").mkdir()
    image_file(tmp_path / "pics" / "a.png")
    (tmp_path / "ro").mkdir()
    prefix = read_only_prefix(tmp_path / "ro")
    # When the result is asked for there
    done = cli(settings, "submit", "image", source, "--op", "grayscale", "--out", out, cwd=tmp_path, prefix=prefix)
    # Then one line says so, and nothing was uploaded or run
    assert one_line(done) == "cannot write into the folder ro: it is read-only here"
    assert nothing_sent(lab)


@pytest.mark.parametrize("out, line", [
    ("cat.png/sub/x.png", "cannot make the folder cat.png/sub: cat.png is a file"),
    ("/proc/newdir/x.png", "cannot make the folder /proc/newdir: No such file or directory"),
])
def test_cli_out_into_a_folder_that_cannot_be_made_is_one_line(settings, lab, tmp_path, out, line):
    image_file(tmp_path / "cat.png")
    done = cli(settings, "submit", "image", "cat.png", "--out", out, cwd=tmp_path)
    assert one_line(done) == line
    assert nothing_sent(lab)


def test_cli_result_that_cannot_be_written_names_its_key_and_download_fetches_it(settings, lab, start_worker,
                                                                                 tmp_path):
    # Given a worker, and an --out that only fails when the file is written (/proc takes no new files)
    start_worker()
    image_file(tmp_path / "cat.png")
    done = cli(settings, "submit", "image", "cat.png", "--op", "grayscale", "--out", "/proc/x.png", cwd=tmp_path)
    # Then one line says why, where the result is, and how to fetch it
    line = one_line(done)
    assert line.startswith("cannot write /proc/x.png: No such file or directory; the result stays in the bucket "
                           f"as s3://{settings.bucket}/images/processed/"), line
    fetch = re.search(r"`labkit download (\S+) --out PATH`", line)
    assert fetch, line
    # and that command, run as printed, fetches it: nothing was lost
    got = cli(settings, "download", fetch.group(1), "--out", "fetched/", cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "fetched/cat.png"
    assert (tmp_path / "fetched" / "cat.png").read_bytes() == lab.bucket.get(fetch.group(1))


def test_api_download_that_cannot_be_written_names_the_key(lab, start_worker, tmp_path):
    start_worker()
    img = lab.image(image_file(tmp_path / "cat.png"), ["grayscale"]).result(timeout=60)
    for dest, why in (("/proc/x.png", "cannot write /proc/x.png: No such file or directory"),
                      (tmp_path / "cat.png" / "x.png", f"cannot make the folder {tmp_path}/cat.png: "
                                                       f"{tmp_path}/cat.png is a file")):
        with pytest.raises(LabkitError) as info:
            img.download(dest)
        assert str(info.value).startswith(f"{why}; the result stays in the bucket as s3://{lab.bucket.name}/"
                                          f"{img.key}: fetch it with `labkit download {img.key} --out PATH`")


def test_widget_save_into_a_folder_that_cannot_be_made_is_one_line(lab, start_worker, tmp_path):
    # Given a processed image in the panel, and a "server folder" under a file
    start_worker()
    image_file(tmp_path / "afile.png")
    panel = widgets.ImagePanel(lab, sample="rings", download_dir=tmp_path / "afile.png" / "sub")
    panel.process_button.click()
    # When Save is pressed
    panel.save_button.click()
    # Then the panel says why in one line, and keeps the result to save elsewhere
    last = panel.out.outputs[-1]["data"]["text/plain"]
    assert last == f"error: cannot make the folder {tmp_path}/afile.png/sub: {tmp_path}/afile.png is a file"
    assert panel.result is not None


def test_random_above_the_panels_limit_is_refused(settings):
    # The CLI and the numbers panel stop at the same documented length
    assert widgets.NumbersPanel.MAX_LENGTH == MAX_RANDOM_LENGTH == 10_000_000
    assert "1 to 10,000,000" in " ".join(cli(None, "submit", "numbers", "--help").stdout.split())
    for n in ("1000000000000", str(MAX_RANDOM_LENGTH + 1)):
        line = one_line(cli(settings, "submit", "numbers", "--random", n))
        assert line.startswith(f"--random makes at most 10,000,000 numbers, got {int(n):,}"), line


# -- item 6: numbers from a file and from standard input ----------------------------------------------------

def test_numbers_from_a_file_and_from_standard_input(settings, start_worker, tmp_path):
    start_worker()
    numbers = [(i * 7919) % 100_003 - 50_000 for i in range(20_001)]  # past 10,000: they travel through S3
    (tmp_path / "big.txt").write_text("\n".join(map(str, numbers)) + "\n")
    # When the README's `labkit submit numbers @big.txt` runs where big.txt is
    from_file = cli(settings, "submit", "numbers", "@big.txt", cwd=tmp_path)
    assert from_file.returncode == 0, from_file.stderr
    assert from_file.stdout.strip().startswith("{") and json.loads(from_file.stdout) == compute(numbers)
    # and `-` reads standard input (commas, spaces and new lines alike)
    from_stdin = cli(settings, "submit", "numbers", "-", stdin="5, 1\n22 33\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert json.loads(from_stdin.stdout) == compute([5, 1, 22, 33])


def test_numbers_file_mistakes_are_one_line(settings, tmp_path):
    (tmp_path / "bad.txt").write_text("1 2\n3 x\n")
    assert one_line(cli(settings, "submit", "numbers", "@bad.txt", cwd=tmp_path)) == "item 4 is not a number: 'x'"
    assert one_line(cli(settings, "submit", "numbers", "@nope.txt", cwd=tmp_path)) == (
        "cannot read the numbers in nope.txt: No such file or directory")
    image_file(tmp_path / "cat.png")
    assert one_line(cli(settings, "submit", "numbers", "@cat.png", cwd=tmp_path)).startswith(
        "cat.png is not a text file")


# -- item 8: counted from 1, options not ignored silently, --out that would destroy or mislabel -------------

def test_items_are_counted_from_one(settings):
    assert one_line(cli(settings, "submit", "numbers", "1", "2", "nan")) == "item 3 is not a finite number: 'nan'"
    assert one_line(cli(settings, "submit", "numbers", "x", "1")) == "item 1 is not a number: 'x'"


@pytest.mark.parametrize("args, line", [
    (["numbers", "1", "2", "--preset"], "give one list: numbers, --preset or --random N, not numbers and --preset "
     "together"),
    (["numbers", "1", "2", "--random", "3"], "give one list: numbers, --preset or --random N, not numbers and "
     "--random together"),
    (["numbers", "--preset", "--seed", "4"], "--seed only applies to --random N: add --random N, or drop --seed"),
    (["image", "cat.png", "--quality", "50"], "--quality applies to jpeg and webp only, and the output is png, "
     "which ignores it: drop --quality, or add --format jpeg (or webp)"),
    (["image", "cat.png", "--format", "gif", "--quality", "50"], "--quality applies to jpeg and webp only, and the "
     "output is gif, which ignores it: drop --quality, or add --format jpeg (or webp)"),
])
def test_options_that_would_be_ignored_are_refused(settings, lab, tmp_path, args, line):
    image_file(tmp_path / "cat.png")
    done = cli(settings, "submit", *args, cwd=tmp_path)
    assert one_line(done) == line and done.stdout == ""
    assert nothing_sent(lab)


@pytest.mark.parametrize("source, out", [("src.png", "src.png"), ("src.png", "."), ("pics", "pics")])
def test_out_onto_its_own_source_is_refused_and_the_source_kept(settings, lab, tmp_path, source, out):
    image_file(tmp_path / "src.png")
    (tmp_path / "pics").mkdir()
    image_file(tmp_path / "pics" / "a.png", seed=2)
    before = {p: p.read_bytes() for p in (tmp_path / "src.png", tmp_path / "pics" / "a.png")}
    done = cli(settings, "submit", "image", source, "--op", "grayscale", "--out", out, cwd=tmp_path)
    assert one_line(done).startswith("the result would be written over its own source ")
    assert {p: p.read_bytes() for p in before} == before
    assert nothing_sent(lab)


def test_format_and_out_extension_agree(settings, lab, start_worker, tmp_path):
    image_file(tmp_path / "cat.png")
    # A --format that contradicts --out's extension is refused, saying what would work
    refused = cli(settings, "submit", "image", "cat.png", "--format", "jpeg", "--out", "x.png", cwd=tmp_path)
    assert one_line(refused) == ("--out x.png names a png file but --format is jpeg: write to x.jpg (with --format "
                                 "jpeg), or leave --format out (the extension chooses png)")
    assert nothing_sent(lab) and not (tmp_path / "x.png").exists()
    # and without --format, --out's extension chooses the format: a .jpg holds JPEG
    start_worker()
    done = cli(settings, "submit", "image", "cat.png", "--out", "x.jpg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "x.jpg") as result:
        assert result.format == "JPEG"


@pytest.mark.spawns
def test_help_texts_name_what_is_accepted():
    image = " ".join(cli(None, "submit", "image", "--help").stdout.split())
    # every op and alias the registry knows, and resize's one-sided forms
    assert all(re.search(rf"\b{name}\b", image) for name in OPS), [n for n in OPS if n not in image]
    assert "resize:256x" in image and "resize:x128" in image
    # the six output formats
    assert all(fmt in image.split("--format FORMAT", 1)[1] for fmt in EXTENSION_OF_FORMAT)
    numbers = " ".join(cli(None, "submit", "numbers", "--help").stdout.split())
    assert "sum" in numbers and "std" in numbers and "@FILE" in numbers and "standard input" in numbers
    # `labkit policy worker --help` is the worker policy's own help, not its parent's
    worker = cli(None, "policy", "worker", "--help")
    assert worker.returncode == 0 and worker.stdout.startswith("usage: labkit policy worker")
    assert "deployer" not in worker.stdout and "--command" not in worker.stdout
    deployer = cli(None, "policy", "deployer", "--help")
    assert deployer.stdout.startswith("usage: labkit policy deployer") and "--command" in deployer.stdout
