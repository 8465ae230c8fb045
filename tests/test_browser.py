"""The notebooks as a student uses them: JupyterLab started the way ``make lab`` starts it, driven in
Debian's Chromium by Playwright. For each notebook: Run All, then the panels' controls clicked as a
person clicks them, and what the page shows checked: the results, the figures, one clear line for each
mistake, and never a console error, an "Error displaying widget" or a traceback. Screenshots go to
runs/browser/.

The tests run in file order on one page: 00_setup starts labkit (the emulator and a worker), 99_teardown
stops it."""

from __future__ import annotations

import io
import re
import statistics
import time

import pytest
from PIL import Image

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the fixture says what to install (and fails in CI, which installs it)
    expect = sync_playwright = None

from labkit import local
from labkit.config import Settings, read_state
from labkit.jobs.numbers import PRESET
from labkit.processes import pid_alive
from tests.browser import CHROMIUM, CHROMIUM_FLAGS, JupyterLab, NotebookPage, copy_project, set_parameters
from tests.conftest import require_tool

pytestmark = pytest.mark.slow
SMALL_01 = {"random_length": 100_000, "batch_jobs": 20, "batch_list_length": 10}
# 05 waits out its visibility timeout at each step: shorter, and fewer receives before a dead letter
SMALL_05 = {"visibility_timeout": 3, "max_receive_count": 2, "long_nap_seconds": 5}
SMALL_04 = {"bench_jobs": 60, "round_trips": 3, "scenarios": ["floor", "labkit", "round_trip"], "windows": [5, 10],
            "worker_counts": [1]}
SECONDS: dict[str, float] = {}


@pytest.fixture(scope="module")
def nb(tmp_path_factory: pytest.TempPathFactory):
    """A page on a JupyterLab of the test's own, serving a copy of the notebooks (small parameters)."""
    require_tool(CHROMIUM.exists(), "chromium (Debian's package)")
    require_tool(sync_playwright is not None, "playwright (PyPI, the test extra)")
    root = copy_project(tmp_path_factory.mktemp("jupyterlab"))
    set_parameters(root / "notebooks" / "01_numbers.ipynb", **SMALL_01)
    set_parameters(root / "notebooks" / "04_benchmark.ipynb", **SMALL_04)
    set_parameters(root / "notebooks" / "05_delivery.ipynb", **SMALL_05)
    server = JupyterLab(root, root / ".jupyter", root / "jupyterlab.log")
    t0 = time.monotonic()
    try:
        server.start()
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
            page.set_default_timeout(60_000)
            session = NotebookPage(page, server)
            # The error capture works: a console error is seen (and then forgotten)
            page.goto(server.url("notebooks"))
            page.evaluate("console.error('labkit test: console errors are seen')")
            assert session.errors == ["console error: labkit test: console errors are seen"]
            session.errors.clear()
            yield session
            browser.close()
    finally:
        server.stop()
        local.stop(Settings.load(state_dir=root / ".labkit"))  # whatever 99_teardown did not stop
        SECONDS["total"] = time.monotonic() - t0
        print("\nbrowser test, seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in SECONDS.items()))


def set_up(nb: NotebookPage) -> None:
    """00_setup run once (a test chosen alone with -k still finds labkit up)."""
    if "00_setup" not in SECONDS:
        run_all(nb, "00_setup")


def run_all(nb: NotebookPage, name: str, timeout_s: float = 300, watch_live: bool = False) -> None:
    if name != "00_setup":
        set_up(nb)
    t0 = time.monotonic()
    nb.open(name)
    if watch_live:
        nb.watch_live()
    nb.run_all(timeout_s)
    SECONDS[name] = time.monotonic() - t0
    nb.shot(f"{name}-run-all")


def rows(table: list[list[str]]) -> dict[str, str]:
    return {r[0]: r[1] for r in table if len(r) >= 2}


def one_error_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    return lines[0]


def test_00_setup_starts_labkit(nb):
    # Given 00_setup opened in JupyterLab
    # When all its cells run
    run_all(nb, "00_setup")
    # Then labkit is up, and the panel's Refresh status shows the queues
    text = nb.notebook_text()
    assert "labkit is up on http://127.0.0.1:" in text and "1 local running" in text
    panel = nb.panel("SetupPanel")
    assert nb.truncated(panel) == []
    nb.click(panel, "Refresh status")
    queues = nb.tables(panel)["Queues"]
    assert [r[0] for r in queues[1:]] == ["requestQueue", "responseQueue", "imageInbox", "imageOutbox"]
    nb.shot("00-setup-panel", panel)
    assert nb.problems() == []


def test_01_numbers_panels_after_run_all(nb):
    # Given 01_numbers after Run All (its last cell used to close the Lab the panels use)
    run_all(nb, "01_numbers")
    panel = nb.panel("NumbersPanel")
    text_box, length = nb.field(panel, "numbers"), nb.field(panel, "length")
    # Typed numbers: the worker's statistics and a histogram
    nb.button(panel, "type numbers").click()
    text_box.fill("3, 1, 4, 1, 5, 9, 2.5")
    busy = nb.click(panel, "Send")
    assert "closed" not in nb.out(panel)
    stats = rows(next(t for c, t in nb.tables(panel).items() if c.endswith("(typed list)")))
    values = [3, 1, 4, 1, 5, 9, 2.5]
    assert (stats["count"], stats["min"], stats["max"], stats["median"]) == ("7", "1", "9", "3")
    assert float(stats["mean"]) == pytest.approx(statistics.mean(values), rel=1e-5)
    assert nb.figure_size(panel) == [[800, 450]]
    assert busy and "waiting for the worker" in " ".join(busy)
    assert nb.truncated(panel) == []
    expect(text_box).to_be_enabled()
    expect(length).to_be_disabled()
    # The preset list
    nb.button(panel, "preset list").click()
    expect(text_box).to_be_disabled()
    expect(length).to_be_disabled()
    nb.click(panel, "Send")
    stats = rows(next(t for c, t in nb.tables(panel).items() if c.endswith("(preset list)")))
    assert (stats["count"], stats["min"], stats["max"]) == (str(len(PRESET)), "-15", "150")
    assert stats["median"] == f"{statistics.median(PRESET):g}"
    # A random list of 100,000: through S3, with the spinner saying so while it runs
    nb.button(panel, "random list").click()
    expect(text_box).to_be_disabled()
    expect(length).to_be_enabled()
    length.fill("100000")
    length.press("Enter")
    busy = nb.click(panel, "Send")
    stats = rows(next(t for c, t in nb.tables(panel).items() if c.endswith("(random list)")))
    assert stats["count"] == "100,000" and stats["sent"].startswith("through S3 (s3://") and ".npy" in stats["sent"]
    assert -1000 <= float(stats["min"].replace(",", "")) < float(stats["max"].replace(",", "")) <= 1000
    assert any("100,000 numbers" in b for b in busy), busy
    nb.shot("01-numbers-random", panel)
    # A bad list: one clear line, no table
    nb.button(panel, "type numbers").click()
    text_box.fill("1, 2, x3")
    nb.click(panel, "Send")
    assert "x3" in one_error_line(nb.out(panel)) and nb.tables(panel) == {}
    # An out-of-range length says so
    nb.button(panel, "random list").click()
    length.fill("0")
    length.press("Enter")
    nb.click(panel, "Send")
    assert one_error_line(nb.out(panel)) == "error: length must be between 1 and 10,000,000, got 0"
    # Purge all: the response queue was purged by Run All less than a minute ago
    panel.locator("select").select_option(label="all queues")
    nb.click(panel, "Purge")
    outcome = rows(nb.tables(panel)["Purge"])
    assert [outcome[q] for q in ("requestQueue", "imageInbox", "imageOutbox")] == ["purged"] * 3
    refused = re.fullmatch(r"refused: purged less than 60 s ago \(SQS allows one purge per queue every 60 s\); "
                           r"try again in (\d+) s", outcome["responseQueue"])
    assert refused and 0 < int(refused[1]) <= 60, outcome["responseQueue"]
    assert nb.out(panel).splitlines()[-1].startswith("WARNING: purged 3 of 4 queue(s)")
    nb.shot("01-numbers-purge", panel)
    # The batch panel, after its cell ran again (a new panel on the notebook's Lab), with 300 jobs
    nb.rerun_cell("batch_panel = widgets.BatchPanel(")
    batch = nb.panel("BatchPanel")
    assert nb.truncated(batch) == []
    nb.field(batch, "jobs").fill("300")
    nb.field(batch, "jobs").press("Enter")
    nb.watch_live()
    nb.click(batch, "Send batch")
    summary = rows(nb.tables(batch)["Batch"])
    assert (summary["jobs"], summary["errors"]) == ("300", "0")
    # The request queue's depth was drawn live while the batch ran, then gave way to the three figures:
    # latency, every job's life, the queue's depth over the batch
    assert nb.live_frames() >= 1
    expect(batch.locator("img.labkit-live-depth")).to_be_hidden()
    assert nb.figure_size(batch) == [[800, 450]] * 3
    assert batch.locator(".progress-bar-success").count() == 1
    nb.shot("01-batch", batch)
    # And Run All showed the same three figures under the notebook's batch cell
    cell = nb.page.locator(".jp-NotebookPanel .jp-CodeCell", has_text="batch = batch_panel.send()").first
    assert NotebookPage.figure_size(cell) == [[800, 450]] * 3
    assert nb.problems() == []


def test_02_images_panel_after_run_all(nb, tmp_path):
    photo, notes = tmp_path / "my photo.jpg", tmp_path / "notes.txt"
    Image.new("RGB", (160, 120), (10, 200, 90)).save(photo, "JPEG")
    notes.write_text("not a picture")
    # Given 02_images after Run All
    run_all(nb, "02_images")
    panel = nb.panel("ImagePanel")
    page = nb.page
    assert nb.truncated(panel) == []
    # A file chosen with the file chooser (ipywidgets' FileUpload keeps its <input> out of the page)
    with page.expect_file_chooser() as chooser:
        panel.locator(".widget-upload").click()
    chooser.value.set_files(str(photo))
    expect(panel).to_contain_text("file: my photo.jpg (JPEG, 160 x 120")
    expect(panel.locator(".widget-upload")).to_have_text(re.compile(r"^\s*Choose file \(1\)$"))
    expect(nb.field(panel, "sample")).to_be_disabled()
    assert nb.truncated(panel) == []
    # Two operations, then Process: the figure, and the result's size
    nb.click(panel, "Clear operations")
    nb.field(panel, "operation").select_option(label="grayscale")
    nb.click(panel, "Add operation")
    nb.field(panel, "operation").select_option(label="thumbnail")
    nb.field(panel, "size").fill("64")
    nb.field(panel, "size").press("Enter")
    nb.click(panel, "Add operation")
    assert "operations: grayscale → thumbnail size=64" in panel.inner_text()
    busy = nb.click(panel, "Process")
    job = rows(next(t for c, t in nb.tables(panel).items() if c.startswith("Image job")))
    assert re.search(r"images/unprocessed/[0-9a-f]{16}/my photo\.jpg \(160 x 120", job["original"])
    assert "(64 x 48, png)" in job["result"]
    assert nb.figure_size(panel) == [[800, 450]]
    assert any("waiting for a worker" in b for b in busy), busy
    nb.shot("02-images-processed", panel)
    # Download in the browser: the result itself
    with page.expect_download() as download:
        panel.locator("a.labkit-download").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    with Image.open(io.BytesIO(saved.read_bytes())) as im:
        assert (im.format, im.size, im.mode) == ("PNG", (64, 48), "L")
    # Save on the server: into the notebook's download_dir, the folder its own cell saved into
    nb.click(panel, "Save on server")
    on_server = nb.lab.root / "runs" / "downloads" / saved.name
    assert on_server.read_bytes() == saved.read_bytes()
    assert f"saved {on_server}" in nb.out(panel)
    # List: both folders
    nb.click(panel, "List images")
    listed = nb.tables(panel)
    assert "my photo.jpg" in [r[0] for r in listed["images/unprocessed/"]]
    assert saved.name in [r[0] for r in listed["images/processed/"]]
    # A bad parameter: one line that says so, nothing added
    nb.field(panel, "size").fill("0")
    nb.field(panel, "size").press("Enter")
    nb.click(panel, "Add operation")
    assert one_error_line(nb.out(panel)) == "error: thumbnail: size must be between 1 and 10,000, got 0"
    # A sample chosen after the upload is what gets processed
    nb.button(panel, "sample").click()
    nb.field(panel, "sample").select_option(label="rings")
    nb.click(panel, "Process")
    job = rows(next(t for c, t in nb.tables(panel).items() if c.startswith("Image job")))
    assert re.search(r"images/unprocessed/[0-9a-f]{16}/sample-rings\.png \(640 x 400", job["original"])
    # Clear file: the name goes, the sample is the choice
    nb.button(panel, "my file").click()
    nb.click(panel, "Clear file")
    expect(panel).to_contain_text("no file chosen")
    expect(nb.field(panel, "sample")).to_be_enabled()
    # A file that is not an image: said at once, and Process refuses it in one line
    with page.expect_file_chooser() as chooser:
        panel.locator(".widget-upload").click()
    chooser.value.set_files(str(notes))
    expect(panel).to_contain_text("notes.txt is not an image")
    nb.click(panel, "Process")
    assert one_error_line(nb.out(panel)).startswith("error: notes.txt is not an image: choose a PNG, JPEG")
    nb.shot("02-images-not-an-image", panel)
    assert nb.problems() == []


def test_03_ec2_worker_on_the_emulator(nb):
    run_all(nb, "03_ec2_worker")
    text = nb.notebook_text()
    assert "answered by local worker" in text and "deleted" in text and "summary: deployed" in text
    # Prices keep their dollars: the cost table is not typeset as math (before: "0.0208/hour(15.18/month; ..." in
    # italics, the dollar signs taken for TeX delimiters)
    assert "$0.0208/hour ($15.18/month; $0.0104/hour each)" in text, text
    assert nb.problems() == []


def test_04_benchmark_small(nb):
    run_all(nb, "04_benchmark", timeout_s=600)
    text = nb.notebook_text()
    assert "Sweep" in text and "summary: best" in text
    figures = NotebookPage.figure_size(nb.page.locator(".jp-NotebookPanel").first)
    assert figures.count([800, 450]) == 2
    assert nb.problems() == []


def test_05_delivery(nb):
    # Given labkit up (00_setup), When 05 runs all its cells (about a minute: its own queues, its own worker)
    set_up(nb)
    run_all(nb, "05_delivery", watch_live=True)
    # Then every step shows what happened: the killed worker's messages delivered again, a duplicate dropped,
    # a dead letter read, redriven and answered, a long job's heartbeats; and its queues deleted at the end
    text = nb.notebook_text()
    held = re.search(r"worker \d+ was killed holding (\d+) message\(s\)", text)
    assert held and int(held[1]) >= 1 and "received twice, answered once" in text
    assert "a second answer with this id, dropped" in text
    assert "before the redrive" in text and "sent back from the dead-letter queue" in text
    assert f"kept invisible for another {SMALL_05['visibility_timeout']} s (heartbeat)" in text
    assert "deleted labkit-delivery-" in text
    # And four figures, and the queue's depth drawn live while each watched step ran
    notebook = nb.page.locator(".jp-NotebookPanel").first
    assert NotebookPage.figure_size(notebook) == [[800, 450]] * 4
    assert nb.live_frames() >= 3
    assert all(not img.is_visible() for img in notebook.locator("img.labkit-live-depth").all())
    # And nothing of the exercise is left running or recorded
    assert "delivery_exercise" not in read_state(nb.lab.root / ".labkit")
    for step, text in (("redelivery", "redelivery.depth_figure("), ("dead-letter", "poison = exercise.poison(")):
        nb.shot(f"05-delivery-{step}", nb.page.locator(".jp-NotebookPanel .jp-CodeCell", has_text=text).first)
    nb.shot("05-delivery", notebook)
    assert nb.problems() == []


def test_06_custom_kinds(nb):
    # Given labkit up (00_setup), When 06 runs all its cells: the workers restart with kinds/wordcount.py
    set_up(nb)
    run_all(nb, "06_custom_kinds")
    # Then the page shows the kinds loaded, both results, the histogram, and the job of a kind no worker loads
    # waiting in its own queue, with the client's one line
    text = nb.notebook_text()
    assert "kinds histogram, wordcount" in text and "most frequent" in text
    assert "no worker loads job kind 'translate' yet" in text and "waiting in requestQueue-kind-translate: " in text
    assert NotebookPage.figure_size(nb.page.locator(".jp-NotebookPanel").first).count([800, 450]) == 1
    nb.shot("06-custom-kinds", nb.page.locator(".jp-NotebookPanel").first)
    assert nb.problems() == []


def test_99_teardown_leaves_nothing(nb):
    # Given what 00_setup started: the emulator and a worker
    set_up(nb)
    state = read_state(nb.lab.root / ".labkit")
    pids = [state["emulator"]["pid"]] + [w["pid"] for w in state["workers"]]
    assert all(pid_alive(p) for p in pids)
    # When 99_teardown runs all its cells
    run_all(nb, "99_teardown")
    # Then it says nothing is left, and those processes are gone
    assert "nothing is left: no fleet, no queue, no bucket, no labkit process" in nb.notebook_text()
    assert not any(pid_alive(p) for p in pids)
    assert nb.problems() == []
