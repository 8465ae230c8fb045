"""Widget panels, headless: set widget values, click the buttons, check what the panel shows and what
reached the queues and the bucket. Real emulator, real worker processes."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import statistics
import threading
import time

import pytest
from PIL import Image

from labkit import notebooks, widgets
from labkit.aws.queues import Queue
from labkit.config import Settings
from labkit.errors import ConfigError
from labkit.protocol import JobRequest
from labkit.watcher import QueueWatcher
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET


def texts(panel) -> str:
    """Everything the panel's output area shows as text."""
    return "\n".join(o["data"].get("text/plain", "") for o in panel.out.outputs)


def pngs(panel) -> list[Image.Image]:
    return [Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"])))
            for o in panel.out.outputs if "image/png" in o["data"]]


# -- display helpers ---------------------------------------------------------------------------------

def test_table_text_and_escaped_html():
    t = widgets.Table([["<b>", 1234567], ["x", 0.1234567]], ["name", "value"], "T & co")
    assert str(t).splitlines() == ["T & co", "name  value", "----  ---------", "<b>   1,234,567", "x     0.123457"]
    html = t._repr_html_()
    assert "&lt;b&gt;" in html and "<b>" not in html.replace("<b>T &amp; co</b>", "")
    assert str(widgets.Table([["a", "b"]])) == "a  b"


# -- numbers -----------------------------------------------------------------------------------------

def test_send_button_typed_numbers(lab, start_worker):
    # Given a worker and a panel with typed numbers
    start_worker()
    panel = widgets.NumbersPanel(lab)
    panel.text.value = "3, 1, 4 1 5 9 2.5"
    # When Send is clicked
    panel.send_button.click()
    # Then the worker's statistics are shown as a table and a histogram
    values = [3, 1, 4, 1, 5, 9, 2.5]
    assert panel.result["count"] == 7 and panel.result["median"] == statistics.median(values)
    assert panel.result["mean"] == pytest.approx(statistics.mean(values))
    shown = texts(panel)
    assert "median" in shown and "inline in the SQS message" in shown and "error" not in shown
    [png] = pngs(panel)
    assert png.size == (800, 450)
    assert not panel.send_button.disabled


def test_preset_button_sends_the_original_list(lab, start_worker):
    start_worker()
    panel = widgets.NumbersPanel(lab)
    panel.mode.value = "preset"
    panel.send_button.click()
    assert panel.values_sent == widgets.PRESET
    assert panel.result["median"] == statistics.median(widgets.PRESET)
    assert (panel.result["min"], panel.result["max"]) == (-15, 150)


def test_random_list_travels_through_s3(lab, start_worker):
    start_worker()
    panel = widgets.NumbersPanel(lab)
    panel.mode.value = "random"
    panel.length.value = 20_000
    panel.seed = 5
    panel.send_button.click()
    values = panel.values_sent
    assert len(values) == 20_000
    assert panel.result["count"] == 20_000
    assert (panel.result["min"], panel.result["max"]) == (int(values.min()), int(values.max()))
    assert panel.result["median"] == statistics.median(values.tolist())
    # What reached the bucket: the numbers as .npy, named after the job
    key = f"payloads/{panel.job.id}.npy"
    assert key in [o.key for o in lab.bucket.list("payloads/")]
    assert f"through S3 (s3://{lab.bucket.name}/{key})" in texts(panel)


def test_bad_numbers_show_an_error_and_send_nothing(lab, settings):
    # Given no worker and a typo in the numbers
    panel = widgets.NumbersPanel(lab)
    panel.text.value = "1, 2, x3"
    # When Send is clicked
    panel.send_button.click()
    # Then the panel names the bad item and nothing reached the request queue
    shown = texts(panel)
    assert shown.startswith("error: ") and "x3" in shown
    assert panel.result is None
    assert Queue.by_name(lab.clients.sqs, settings.request_queue).depth()["visible"] == 0
    # and the button works again
    assert not panel.send_button.disabled


def test_send_without_worker_times_out_and_the_request_waits_in_the_queue(lab, settings):
    # Given no worker
    panel = widgets.NumbersPanel(lab, timeout=1)
    panel.text.value = "4 5 6"
    # When Send is clicked
    panel.send_button.click()
    # Then the panel says nothing answered, and the request sits in the queue, addressed to this client
    assert "no result" in texts(panel) and "worker" in texts(panel)
    [msg] = Queue.by_name(lab.clients.sqs, settings.request_queue).receive(10, wait=1)
    req = JobRequest.decode(msg.body)
    assert req.kind == "numbers" and req.payload == {"numbers": [4, 5, 6]}
    assert req.reply_to == lab.reply_queue.url


def test_purge_button_empties_the_chosen_queue(lab, settings):
    # Given three plain-text requests waiting (no worker)
    requests = Queue.by_name(lab.clients.sqs, settings.request_queue)
    requests.send_batch(["1,2", "3,4", "5,6"])
    assert requests.depth()["visible"] == 3
    panel = widgets.NumbersPanel(lab)
    # When the request queue is purged
    panel.purge_queue.value = "requests"
    panel.purge_button.click()
    # Then it is empty and the panel says so
    assert requests.depth()["visible"] == 0
    assert texts(panel).splitlines()[-1] == f"purged {settings.request_queue}"
    assert [(o.queue, o.purged) for o in panel.purged] == [(settings.request_queue, True)]


def test_batch_button_moves_the_progress_bar_and_plots_latency_timelines_and_depth(lab, settings, start_worker):
    # Given a worker, and a batch panel shown in a notebook (so its depth plot is drawn live)
    start_worker()
    panel = widgets.BatchPanel(lab, jobs=23, list_length=7, window=5)
    panel._ipython_display_()
    frames: list[bytes] = []
    panel.live.image.observe(lambda change: frames.append(change["new"]), "value")
    # When Send batch is clicked
    panel.send_button.click()
    # Then every job was answered, the progress bar is full, and the table and the figures are shown
    batch = panel.batch
    assert (batch.jobs, batch.errors, batch.window) == (23, 0, 5)
    assert batch.latencies_s.size == 23 and (batch.latencies_s > 0).all()
    assert (panel.progress.value, panel.progress.max, panel.progress.bar_style) == (23, 23, "success")
    assert "throughput" in texts(panel) and "latency median" in texts(panel)
    assert [png.size for png in pngs(panel)] == [(800, 450)] * 3
    shown = [o["data"]["text/plain"] for o in panel.out.outputs if "image/png" in o["data"]]
    assert shown == ["<figure: Round-trip latency of 23 number jobs (7 numbers each, at most 5 in flight)>",
                     "<figure: The life of 23 jobs>",
                     f"<figure: Depth of {settings.request_queue} during the batch (a look every 0.25 s)>"]
    assert lab.jobs_sent == 23
    # And the window held, by the client's own clock: as each job was sent, 5 at most (itself included) were
    # sent and not yet answered, and the first 5 went together
    jobs = panel.jobs_sent
    assert max(sum(1 for k in jobs if k.submitted <= j.submitted < k.finished) for j in jobs) == 5
    # And the watcher looked at the request queue during the batch: never more requests waiting than the window
    # (a request waiting is unanswered; one in flight may be answered and not yet deleted, a moment later, so
    # that count is not bounded by the window), and empty at the end (every request answered and deleted)
    samples = panel.samples
    assert len(samples) >= 2 and {s.queue for s in samples} == {settings.request_queue}
    assert max(s.visible for s in samples) <= 5
    assert (samples[-1].visible, samples[-1].in_flight, samples[-1].dead_letter) == (0, 0, 0)
    assert [s.at for s in samples] == sorted(s.at for s in samples)
    # And the timelines are the jobs': each sent, received once by the worker, answered
    lives = [j.timeline() for j in panel.jobs_sent]
    assert all([e["event"] for e in life] == ["sent", "received", "started", "finished", "replied", "result"]
               for life in lives)
    # And the live plot was drawn (at most once a second) as PNG frames, then hidden; its watcher stopped
    assert panel.live.frames == len(frames) >= 1 and all(bytes(f).startswith(b"\x89PNG") for f in frames)
    assert panel.live.image.layout.display == "none"
    assert not [t for t in threading.enumerate() if t.name == "labkit-queue-watcher"]


def test_the_watcher_settles_when_the_queue_empties_and_gives_up_on_one_that_does_not(lab, settings):
    # Given a watcher of a request queue that holds one message
    requests = Queue.by_name(lab.clients.sqs, settings.request_queue)
    watch = QueueWatcher({requests.name: requests}, interval=0.1)
    requests.send("held")
    # Then settling, the watcher not started, looks itself, keeps its looks and gives up at its timeout
    assert watch.settle(0.5) is False
    assert len(watch.samples) >= 2 and all(s.visible == 1 for s in watch.samples)
    # And a running watcher settles on its own looks once the message is received and deleted
    def take() -> None:
        time.sleep(0.3)
        [message] = requests.receive(1, wait=5)
        requests.delete_batch([message.receipt])
    taker = threading.Thread(target=take)
    with watch:
        taker.start()
        assert watch.settle(30) is True
        assert (watch.samples[-1].visible, watch.samples[-1].in_flight) == (0, 0)
    taker.join()


def test_the_watcher_does_not_settle_on_a_look_taken_before_the_work_it_waits_for(lab, settings):
    # Given a running watcher whose only look so far showed the queue empty (its next look is a minute away)
    requests = Queue.by_name(lab.clients.sqs, settings.request_queue)
    with QueueWatcher({requests.name: requests}, interval=60) as watch:
        wait_until = time.monotonic() + 10
        while not watch.samples and time.monotonic() < wait_until:
            time.sleep(0.01)
        assert [(s.visible, s.in_flight) for s in watch.samples] == [(0, 0)]
        # When a request arrives and a worker holds it, answered but not yet deleted (as a batch's last ones are)
        requests.send("last")
        [message] = requests.receive(1, wait=5)
        # Then settling does not take the old empty look for the end: no look since shows the queue empty (before:
        # True at once, and the batch panel's last look then counted the last requests in flight, CI's (0, 3, 0))
        assert watch.settle(0.5) is False
    # And the watcher's last look, on stopping, shows the request still in flight
    assert (watch.samples[-1].visible, watch.samples[-1].in_flight) == (0, 1)
    requests.delete_batch([message.receipt])


def test_the_live_depth_plot_draws_only_when_shown_and_at_most_once_a_second():
    from labkit.watcher import Sample
    from labkit.widgets.live import LiveDepth
    samples = [Sample(100.0 + i, "q", 3 - i, i, 0) for i in range(4)]
    # Given a live plot nobody displayed (an unattended run)
    live = LiveDepth("q", every=1.0)
    # When samples come, Then nothing is drawn
    live.update(samples)
    assert live.frames == 0 and live.image.value == b""
    # Given it is displayed, When samples come three times in a row, Then one frame is drawn and shown
    live._ipython_display_()
    for _ in range(3):
        live.update(samples)
    assert live.frames == 1 and live.image.layout.display == "block"
    with Image.open(io.BytesIO(live.image.value)) as im:
        assert im.size == (800, 450)
    # And a frame that cannot be drawn is skipped, not raised into the watcher's thread
    live.hide()
    live.update([object()])
    assert live.frames == 1 and live.image.layout.display == "none"


# -- images ------------------------------------------------------------------------------------------

def test_image_panel_buttons_end_to_end(lab, start_worker, tmp_path):
    start_worker()
    panel = widgets.ImagePanel(lab, sample="rings")
    # Operations from the widgets: grayscale, then thumbnail with its size parameter set
    panel.op.value = "grayscale"
    panel.add_button.click()
    panel.op.value = "thumbnail"
    assert set(panel.param_widgets) == {"size", "width", "height"}
    panel.param_widgets["size"].value = 64
    panel.add_button.click()
    assert panel.pipeline == [{"op": "grayscale"}, {"op": "thumbnail", "size": 64}]
    # Process
    panel.process_button.click()
    assert "error" not in texts(panel)
    assert panel.processed.mode == "L" and max(panel.processed.size) == 64
    assert (panel.result["width"], panel.result["height"]) == panel.processed.size
    assert re.fullmatch(r"images/processed/[0-9a-f]{32}/sample-rings\.png", panel.result.key)  # the job's own
    [png] = pngs(panel)
    assert png.size == (800, 450)
    # List: both folders show the image
    panel.list_button.click()
    shown = texts(panel)
    assert "images/unprocessed/" in shown and "images/processed/" in shown
    assert shown.count("sample-rings.png") == 2
    # Save on the server
    panel.dest.value = str(tmp_path / "dl")
    panel.save_button.click()
    with Image.open(tmp_path / "dl" / "sample-rings.png") as im:
        assert im.size == panel.processed.size


def test_image_panel_uploaded_file_and_parameter_errors(lab, start_worker, tmp_path):
    start_worker()
    photo = tmp_path / "my photo.jpg"
    Image.new("RGB", (120, 90), (10, 200, 90)).save(photo, "JPEG")
    panel = widgets.ImagePanel(lab)
    # A crop whose box is impossible is refused when added, with the op and parameter named
    panel.op.value = "crop"
    panel.param_widgets["left"].value = 50
    panel.param_widgets["right"].value = 10
    panel.add_button.click()
    assert "crop: right must be greater than left" in texts(panel)
    assert panel.pipeline == []
    # An optional parameter left blank is simply not sent
    panel.op.value = "resize"
    panel.param_widgets["width"].value = "60"
    panel.add_button.click()
    assert panel.pipeline == [{"op": "resize", "width": 60}]
    # The uploaded file wins over the sample
    panel.use_file(photo)
    panel.format.value = "jpeg"
    result = panel.process()
    assert any(o.key.endswith("/my photo.jpg") for o in lab.bucket.list("images/unprocessed/"))
    assert (result["width"], result["height"], result["format"]) == (60, 45, "jpeg")


def test_op_list_comes_from_the_registry(lab):
    from labkit.jobs.images import describe_ops
    panel = widgets.ImagePanel(lab)
    assert list(panel.op.options) == [op["name"] for op in describe_ops()]
    panel.op.value = "rotate"
    assert isinstance(panel.param_widgets["expand"].value, bool)


# -- setup and teardown --------------------------------------------------------------------------------

@pytest.mark.spawns
def test_setup_and_teardown_buttons_on_a_private_emulator(tmp_path):
    # Given a fresh state folder (no emulator yet)
    state = tmp_path / "state"
    setup = widgets.SetupPanel(state_dir=state, backend="local", workers=0)
    try:
        # When Start is clicked
        setup.start_button.click()
        # Then the emulator runs and the queues and bucket exist
        shown = texts(setup)
        assert "error" not in shown and "created" in shown and "labkit is up on http://127.0.0.1:" in shown
        setup.status_button.click()
        queues = texts(setup)
        for name in ("requestQueue", "responseQueue", "imageInbox", "imageOutbox"):
            assert name in queues
        lab = notebooks.connect(state, "local")
        lab.numbers([1])  # a request left behind, and a reply queue
        teardown = widgets.TeardownPanel(state_dir=state, backend="local")
        assert "queue requestQueue-dlq" in teardown.leftovers()
        # When everything is deleted
        teardown.teardown_button.click()
        # Then nothing is left: no queue, no bucket, no emulator
        assert "nothing is left" in texts(teardown)
        with pytest.raises(ConfigError, match="00_setup"):
            notebooks.connect(state, "local")
    finally:
        from labkit import local
        local.stop(Settings.load(state_dir=state))


def test_aws_setup_warns_before_creating_anything(tmp_path, monkeypatch):
    # A named bucket, so that planning needs no call at all (this test must not reach AWS)
    monkeypatch.setenv("LABKIT_BUCKET", "labkit-test-plan-bucket")
    setup = widgets.SetupPanel(state_dir=tmp_path / "state", backend="aws")
    plan = setup.plan()
    assert plan["backend"] == "aws" and plan["bucket"] == "labkit-test-plan-bucket"
    assert setup.start_button.description == "Create on AWS"
    assert not (tmp_path / "state").exists()  # nothing started, nothing written


def test_aws_warning_text(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LABKIT_BUCKET", "labkit-test-plan-bucket")
    setup = widgets.SetupPanel(state_dir=tmp_path / "state", backend="aws")
    setup._to_widget = True  # collect what plan() shows
    setup.plan()
    shown = texts(setup)
    assert "WARNING: this creates real resources in your AWS account" in shown
    assert "cost money" in shown and "99_teardown" in shown and "labkit-test-plan-bucket" in shown
    assert "requestQueue-dlq" in shown
    assert FAKE_KEY_ID not in shown and FAKE_SECRET not in shown


def test_backend_must_be_known(tmp_path):
    with pytest.raises(ConfigError, match="backend must be one of"):
        widgets.SetupPanel(state_dir=tmp_path, backend="azure")


def test_connect_refuses_when_nothing_runs(tmp_path):
    with pytest.raises(ConfigError, match="run 00_setup.ipynb"):
        notebooks.connect(tmp_path / "nothing", "local")


def test_summary_is_json_ready(capsys):
    with pytest.raises(TypeError):
        notebooks.summary("x", bad=object())
    notebooks.summary("two jobs", jobs=2)
    out = capsys.readouterr().out
    assert notebooks.SUMMARY_MIME in out and json.dumps("summary: two jobs") in out.replace("'", '"')


# -- issue 12: what a student meets in JupyterLab ------------------------------------------------------

def test_panels_keep_working_after_the_notebook_closed_its_lab(lab, start_worker):
    # Given panels built on a Lab that was then closed (as Run All did with the notebook's last cell)
    start_worker()
    numbers = widgets.NumbersPanel(lab)
    batch = widgets.BatchPanel(lab, jobs=3, list_length=4, window=2)
    image = widgets.ImagePanel(lab, sample="gradient")
    lab.close()
    # When their buttons are clicked
    numbers.text.value = "2 4 9"
    numbers.send_button.click()
    batch.send_button.click()
    image.process_button.click()
    # Then each acts on a Lab of its own (same settings), and none says the Lab is closed
    assert numbers.result["median"] == 4 and "closed" not in texts(numbers)
    assert (batch.batch.jobs, batch.batch.errors) == (3, 0) and "closed" not in texts(batch)
    assert image.result is not None and "closed" not in texts(image)
    assert numbers.lab is not lab and numbers.lab.settings == lab.settings


def test_a_panel_that_cannot_reach_labkit_says_what_to_do(tmp_path):
    # Given a panel on an emulator that has since stopped (labkit went down, or 99_teardown ran)
    from labkit import provision
    from labkit.aws.clients import Clients
    from labkit.client import Lab
    from labkit.emulator import Emulator
    with Emulator() as emu:
        s = Settings.load(state_dir=tmp_path / "state", endpoint_url=emu.url, env={})
        provision.ensure(Clients(s))
        panel = widgets.NumbersPanel(Lab(s), timeout=5)
    # When Send is clicked
    panel.send_button.click()
    # Then one line says that labkit does not answer and exactly what to do
    shown = texts(panel)
    assert shown.count("\n") == 0 and shown.startswith("error: ")
    assert s.endpoint_url in shown and "run 00_setup.ipynb" in shown and "press Send again" in shown


def test_upload_and_sample_are_an_explicit_choice(lab, start_worker, tmp_path):
    start_worker()
    photo = tmp_path / "my photo.jpg"
    Image.new("RGB", (120, 90), (10, 200, 90)).save(photo, "JPEG")
    panel = widgets.ImagePanel(lab, sample="gradient")
    assert panel.source.value == "sample" and not panel.sample.disabled and panel.clear_file_button.disabled
    # Given an uploaded file: it is the chosen source, and its name is shown
    panel.use_file(photo)
    assert panel.source.value == "upload" and panel.sample.disabled
    assert "my photo.jpg" in panel.file_label.value and not panel.clear_file_button.disabled
    # When a sample is chosen after the upload
    panel.source.value = "sample"
    panel.sample.value = "rings"
    # Then the sample is what gets processed (the file is kept, and can be chosen again)
    panel.process_button.click()
    assert re.fullmatch(r"images/processed/[0-9a-f]{32}/sample-rings\.png", panel.result.key)
    # When the file is cleared, the choice falls back to the sample and the name disappears
    panel.source.value = "upload"
    panel.clear_file_button.click()
    assert panel.upload.value == () and panel.source.value == "sample"
    assert "my photo.jpg" not in panel.file_label.value and panel.clear_file_button.disabled


def test_a_file_that_is_not_an_image_is_refused_with_one_line(lab, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    panel = widgets.ImagePanel(lab)
    panel.use_file(notes)
    panel.process_button.click()
    shown = texts(panel)
    assert shown.count("\n") == 0 and shown.startswith("error: ") and "notes.txt is not an image" in shown
    assert lab.bucket.list("images/unprocessed/") == []  # refused before anything was uploaded


def test_work_in_progress_is_visible_and_inputs_that_do_not_apply_are_disabled(lab, start_worker):
    start_worker()
    panel = widgets.NumbersPanel(lab)
    # Inputs follow the chosen mode
    assert not panel.text.disabled and panel.length.disabled
    panel.mode.value = "preset"
    assert panel.text.disabled and panel.length.disabled
    panel.mode.value = "random"
    assert panel.text.disabled and not panel.length.disabled
    # While an action runs, a spinner says what runs and the buttons wait
    seen: list[tuple[str, bool]] = []
    panel.busy.observe(lambda change: seen.append((change["new"], panel.purge_button.disabled)), "value")
    panel.length.value = 2000
    panel.send_button.click()
    assert seen and "fa-spin" in seen[0][0] and "2,000 numbers" in seen[0][0] and seen[0][1] is True
    assert panel.busy.value == "" and not panel.purge_button.disabled and not panel.send_button.disabled
    assert panel.text.disabled and not panel.length.disabled  # the mode's inputs, as before the click


def test_purge_all_reports_each_queue(lab, settings):
    # Given the request queue purged a moment ago (SQS allows one purge per queue every 60 s)
    panel = widgets.NumbersPanel(lab)
    panel.purge_queue.value = "requests"
    before_first = time.monotonic()
    panel.purge_button.click()
    # When all four queues are purged
    panel.purge_queue.value = "all"
    panel.purge_button.click()
    since_first = time.monotonic() - before_first
    # Then three are purged and the request queue is refused with the seconds left
    outcomes = {o.queue: o for o in panel.purged}
    assert [o.queue for o in panel.purged] == list(settings.queue_names().values())
    assert [q for q, o in outcomes.items() if o.purged] == [settings.response_queue, settings.image_inbox,
                                                              settings.image_outbox]
    refused = outcomes[settings.request_queue]
    assert refused.refused and 60 - since_first <= refused.retry_in <= 60
    shown = texts(panel)
    assert f"{settings.response_queue}  purged" in shown
    assert f"try again in {math.ceil(refused.retry_in)} s" in shown
    assert "purged 3 of 4 queue(s)" in shown.splitlines()[-1]


@pytest.mark.parametrize("op, param, value", [("thumbnail", "size", 0), ("blur", "radius", 101.0),
                                              ("autocontrast", "cutoff", 50.0)])
def test_out_of_range_parameters_say_so(lab, op, param, value):
    panel = widgets.ImagePanel(lab)
    panel.op.value = op
    panel.param_widgets[param].value = value
    panel.add_button.click()
    shown = texts(panel)
    assert shown.startswith("error: ") and f"{op}: {param} must be" in shown and shown.count("\n") == 0
    assert panel.pipeline == []


def test_out_of_range_numbers_say_so(lab):
    panel = widgets.NumbersPanel(lab)
    panel.mode.value = "random"
    panel.length.value = 0
    panel.send_button.click()
    assert texts(panel) == "error: length must be between 1 and 10,000,000, got 0"
    batch = widgets.BatchPanel(lab)
    batch.jobs.value = 0
    batch.send_button.click()
    assert texts(batch) == "error: jobs must be between 1 and 5,000, got 0"


def test_download_is_a_browser_link_and_the_server_copy_goes_to_one_folder(lab, start_worker, tmp_path):
    start_worker()
    folder = tmp_path / "downloads"
    panel = widgets.ImagePanel(lab, sample="rings", download_dir=folder)
    assert panel.dest.value == str(folder) and panel.save_button.disabled and panel.download_link.value == ""
    panel.add_op("thumbnail:64")
    panel.process_button.click()
    # A link the browser downloads: the result itself, named after it
    link = panel.download_link.value
    assert 'download="sample-rings.png"' in link
    data = base64.b64decode(link.split("data:image/png;base64,", 1)[1].split('"', 1)[0])
    assert data == lab.bucket.get(panel.result.key)
    # The server-side copy: into the folder the notebook's parameters name, by button or by code
    panel.save_button.click()
    assert (folder / "sample-rings.png").read_bytes() == data
    assert panel.download() == folder / "sample-rings.png"


def test_a_result_too_large_for_a_browser_link_says_how_to_get_it():
    from labkit.widgets.images import LINK_LIMIT, download_link
    assert 'download="ok.png"' in download_link(b"x" * LINK_LIMIT, "ok.png", "png")
    big = download_link(b"x" * (LINK_LIMIT + 1), "big.png", "png")
    assert "data:" not in big and "too large for a browser link" in big and "save it on the server" in big
