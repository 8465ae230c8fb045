"""The notebooks: committed clean, each with its parameters cell; executed with papermill by labkit.unattended
(``labkit run-notebooks``) against a real emulator and worker, and their outputs checked."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import nbformat
import pytest
from PIL import Image

from labkit import unattended
from labkit.cli import main
from labkit.jobs.numbers import parse_text
from labkit.processes import pid_alive
from tests.conftest import FAKE_KEY_ID, FAKE_SECRET, ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
OURS = ["00_setup", "01_numbers", "02_images", "04_benchmark", "05_delivery", "06_custom_kinds", "99_teardown"]
COMMON = {"backend", "state_dir", "interactive", "figures_dir"}
# Small sizes: the whole run takes seconds. random_length is over 10,000 so the list goes through S3.
SMALL = {"random_length": 20_000, "batch_jobs": 20, "batch_list_length": 10, "numbers_text": "7 3 3 10 -2",
         "ops": ["grayscale", "thumbnail:96"], "bench_jobs": 60, "windows": [5, 10], "worker_counts": [1],
         "round_trips": 3,
         "scenarios": ["floor", "labkit", "round_trip"],
         # 05: a shorter visibility timeout and fewer receives before dead letters (each step waits them out)
         "visibility_timeout": 3, "max_receive_count": 2, "long_nap_seconds": 5}
FIGURES = ["01-batch-latency.png", "01-job-timeline.png", "01-numbers-preset.png", "01-numbers-random.png",
           "01-numbers-typed.png", "01-queue-depth.png", "02-image-side-by-side.png", "04-bench-scenarios.png",
           "04-bench-sweep.png", "05-dead-letter-depth.png", "05-heartbeat-depth.png", "05-redelivery-depth.png",
           "05-redelivery-timeline.png", "06-histogram.png"]


# -- committed notebooks: clean, parameterised -------------------------------------------------------

@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_has_no_outputs(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i} has outputs: strip them before committing"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
    assert "widgets" not in nb.metadata, f"{path.name} holds saved widget state"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_starts_with_a_parameters_cell(path):
    nb = nbformat.read(str(path), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", []), \
        f"{path.name}: the first code cell must be tagged 'parameters'"
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1


@pytest.mark.parametrize("name", [n for n in OURS if (ROOT / "notebooks" / f"{n}.ipynb").exists()])
def test_our_notebooks_declare_the_common_parameters(name):
    declared = unattended.declared_parameters(ROOT / "notebooks" / f"{name}.ipynb")
    assert set(declared) >= COMMON
    assert declared["interactive"] is True  # a person stepping through gets the widgets


def test_runner_finds_every_numbered_notebook_in_order(tmp_path):
    for name in ("99_teardown", "03_ec2_worker", "00_setup", "notes", "1_bad"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    assert [p.stem for p in unattended.find_notebooks(tmp_path)] == ["00_setup", "03_ec2_worker", "99_teardown"]
    assert [p.stem for p in unattended.find_notebooks(tmp_path, ["03"])] == ["03_ec2_worker"]
    assert [p.stem for p in unattended.find_notebooks(tmp_path, ["9*", "setup"])] == ["00_setup", "99_teardown"]


@pytest.mark.parametrize("text, value", [("1000", 1000), ("1_000_000", 1_000_000), ("0.5", 0.5), ("true", True),
                                         ("False", False), ("none", None), ("gradient", "gradient"),
                                         ('["grayscale", "thumbnail:64"]', ["grayscale", "thumbnail:64"])])
def test_parameter_values(text, value):
    assert unattended.parse_value(text) == value


def test_parameter_values_take_the_type_of_the_default():
    declared = unattended.declared_parameters(ROOT / "notebooks" / "01_numbers.ipynb")
    assert declared["random_length"] == 1_000_000 and declared["backend"] == "local"
    assert unattended._coerce(unattended.parse_value("1e6"), declared["random_length"]) == 1_000_000
    assert unattended._coerce(2.5, 1) == 2.5  # not lossless: kept, the notebook names the problem


def test_unknown_parameter_is_refused_before_anything_starts(tmp_path, capsys):
    code = main(["run-notebooks", "--out", str(tmp_path), "-p", "random_lenght", "10"])
    assert code == 1
    err = capsys.readouterr().err
    assert "random_lenght" in err and "random_length" in err  # the typo, and the names that exist
    assert list(tmp_path.iterdir()) == []


# -- a full run --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    lines: list[str] = []
    only = [n for n in OURS if (ROOT / "notebooks" / f"{n}.ipynb").exists()]
    report = unattended.run_notebooks(out=out, parameters=SMALL, only=only, echo=lines.append)
    return report, lines, out


def executed(report, name: str) -> nbformat.NotebookNode:
    return nbformat.read(str(report.run_dir / f"{name}.ipynb"), as_version=4)


def summary(report, name: str) -> dict:
    [run] = [n for n in report.notebooks if n.name == name]
    [s] = run.summaries
    return s


def all_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            parts.append(o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.slow
def test_every_notebook_ran_without_error(run):
    report, lines, out = run
    names = [n for n in OURS if (ROOT / "notebooks" / f"{n}.ipynb").exists()]
    assert [(n.name, n.status, n.error) for n in report.notebooks] == [(name, "ok", None) for name in names]
    assert report.ok
    for n in report.notebooks:
        nb = executed(report, n.name)
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
        injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and "interactive = False" in injected[0].source
        assert f'state_dir = "{report.run_dir / "state"}"' in injected[0].source


@pytest.mark.slow
def test_run_folder_latest_link_and_figures(run):
    report, lines, out = run
    assert report.run_dir.parent == out.resolve()
    assert (out / "latest").resolve() == report.run_dir
    expected = [f for f in FIGURES if not f.startswith("04") or (ROOT / "notebooks/04_benchmark.ipynb").exists()]
    assert [f.name for f in report.figures] == expected
    for f in report.figures:
        assert f.stat().st_size > 10_000
        with Image.open(f) as im:
            assert (im.format, im.size) == ("PNG", (800, 450))
    text = unattended.format_report(report)
    assert f"{len(report.notebooks)} of {len(report.notebooks)} notebooks ran without error" in text
    assert "nothing left running" in text
    for f in expected:
        assert f in text


@pytest.mark.slow
def test_no_process_left_and_no_credential_anywhere(run):
    report, lines, out = run
    assert report.processes_left == []
    state = json.loads((report.run_dir / "state" / "state.json").read_text())
    assert state["workers"] == [] and "emulator" not in state
    assert report.workers_started == 1
    for path in report.run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert FAKE_KEY_ID.encode() not in data and FAKE_SECRET.encode() not in data, path


@pytest.mark.slow
def test_setup_notebook_output(run):
    report, *_ = run
    s = summary(report, "00_setup")
    assert (s["backend"], s["queues_ready"], s["workers"]) == ("local", 4, 1)
    text = all_text(executed(report, "00_setup"))
    assert "the embedded emulator on 127.0.0.1" in text
    assert "visible  in flight  dead-letter" in text
    assert "WARNING" not in text  # the AWS warning is for AWS only


@pytest.mark.slow
def test_numbers_notebook_results(run):
    report, *_ = run
    s = summary(report, "01_numbers")
    typed = parse_text(SMALL["numbers_text"])
    assert s["typed"]["count"] == len(typed) and s["typed"]["median"] == statistics.median(typed)
    assert s["typed"]["mean"] == pytest.approx(statistics.mean(typed))
    assert s["preset"]["median"] == statistics.median([1, 5, 22, 33, 9, 0, -15, 8, 22, 100, 33, 62, 90, 150, 1, 2, 3])
    assert s["random"]["count"] == SMALL["random_length"]
    assert -1000 <= s["random"]["min"] < s["random"]["median"] < s["random"]["max"] <= 1000
    assert s["batch"]["jobs"] == SMALL["batch_jobs"] and s["batch"]["errors"] == 0
    assert 0 < s["batch"]["p50_ms"] <= s["batch"]["p95_ms"]
    assert s["jobs"] == 3 + SMALL["batch_jobs"]
    assert s["purged"] == ["responseQueue"]
    text = all_text(executed(report, "01_numbers"))
    assert "through S3 (s3://" in text and ".npy)" in text
    assert text.count("inline in the SQS message") == 2
    # The batch's figures: every job's life, and the request queue's depth as the watcher saw it meanwhile
    assert f"<figure: The life of {SMALL['batch_jobs']} jobs>" in text
    assert "<figure: Depth of requestQueue during the batch (a look every 0.25 s)>" in text


@pytest.mark.slow
def test_images_notebook_results(run):
    report, *_ = run
    s = summary(report, "02_images")
    assert s["ops"] == [{"op": "grayscale"}, {"op": "thumbnail", "size": 96}]
    assert re.fullmatch(r"images/processed/[0-9a-f]{32}/sample-gradient\.png", s["result"]["key"])
    assert max(s["result"]["width"], s["result"]["height"]) == 96
    # each under its own folder: the upload's content hash, the job's id
    assert [n.split("/")[1] for n in s["unprocessed"] + s["processed"]] == ["sample-gradient.png"] * 2
    saved = report.run_dir / "downloads" / s["downloaded"]
    with Image.open(saved) as im:
        assert im.size == (s["result"]["width"], s["result"]["height"]) and im.mode == "L"
    assert "refused: resize: width must be a positive integer" in all_text(executed(report, "02_images"))


@pytest.mark.slow
def test_teardown_notebook_left_nothing(run):
    report, *_ = run
    s = summary(report, "99_teardown")
    assert s["left"] == [] and s["processes_left"] == []
    # the bucket is emptied (and, on the embedded emulator, gone with it: nothing outlives it there)
    assert "queue requestQueue" in s["deleted"] and any(d.startswith("the objects in bucket labkit-")
                                                         for d in s["deleted"])
    assert "nothing is left" in all_text(executed(report, "99_teardown"))


@pytest.mark.slow
def test_delivery_notebook_results(run):
    # 05 ran its own queues and worker: killed mid-batch, a duplicate, a poison message, a long job
    report, *_ = run
    s = summary(report, "05_delivery")
    declared = unattended.declared_parameters(ROOT / "notebooks" / "05_delivery.ipynb")
    # The killed worker's messages were delivered a second time, to the restarted worker, and answered
    r = s["redelivery"]
    assert len(r["deliveries"]) == declared["redelivery_jobs"] and r["killed"] != r["restarted"]
    # (held may count a job answered just before the kill whose request was not deleted yet: see test_delivery)
    assert 1 <= r["deliveries"].count(2) <= r["held"] and set(r["deliveries"]) <= {1, 2}
    # One request sent twice: one duplicate answer dropped by id
    assert s["duplicate"]["dropped"] == 1 and s["duplicate"]["timeline"][-1] == "duplicate"
    # The poison message: one dead letter, received more than max_receive_count times, redriven and answered
    d = s["dead_letter"]
    assert d["letters"] == 1 and d["receives"][0] > SMALL["max_receive_count"]
    assert (d["moved"], d["ok"], d["median"]) == (1, True, 15.5)
    assert d["timeline"] == ["sent", "received", "redriven", "received", "started", "finished", "replied", "result"]
    # The long job: kept in flight by heartbeats, delivered once
    assert s["heartbeat"]["deliveries"] == 1 and s["heartbeat"]["beats"] >= 2
    # Its workers stopped, its queues deleted (labkit's own were not: 99_teardown deleted those)
    assert len(s["workers"]) == 2 and not any(pid_alive(p) for p in s["workers"])
    tag = s["deleted"][0].split("-")[2]
    # (the nap kind travels on a queue of its own, with its dead-letter queue: docs/protocol.md, "Your own job kinds")
    assert s["deleted"] == [f"labkit-delivery-{tag}-dlq", f"labkit-delivery-{tag}", f"labkit-delivery-{tag}-replies",
                            f"labkit-delivery-{tag}-kind-nap-dlq", f"labkit-delivery-{tag}-kind-nap",
                            f"labkit-delivery-{tag}-later"]
    text = all_text(executed(report, "05_delivery"))
    assert "received twice, answered once" in text and "a second answer with this id, dropped" in text
    assert f"labkit-delivery-{tag}-kind-nap-dlq, before the redrive" in text
    assert "sent back from the dead-letter queue" in text
    beat_line = f"kept invisible for another {SMALL['visibility_timeout']} s (heartbeat)"
    assert text.count(beat_line) >= s["heartbeat"]["beats"]


# -- failures ----------------------------------------------------------------------------------------

def _notebook(path: Path, source: str) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('backend = "local"\nstate_dir = ".labkit"\ninteractive = True\n'
                                       'figures_dir = "figures"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))


@pytest.mark.slow
def test_a_failing_notebook_stops_the_run_but_teardown_runs_and_nothing_is_left(tmp_path):
    # Given a notebook that fails, one after it, and a teardown notebook
    books = tmp_path / "books"
    books.mkdir()
    _notebook(books / "00_boom.ipynb", 'raise RuntimeError("boom")')
    _notebook(books / "50_after.ipynb", 'print("should not run")')
    _notebook(books / "99_last.ipynb", "import sys\nprint(sys.executable)")
    # When they run
    report = unattended.run_notebooks(out=tmp_path / "runs", folder=books, workers=0, echo=lambda s: None)
    # Then the failure is reported with its cell, the next notebook is skipped, the last one runs
    assert [(n.name, n.status) for n in report.notebooks] == [("00_boom", "failed"), ("50_after", "skipped"),
                                                              ("99_last", "ok")]
    assert "RuntimeError: boom" in report.notebooks[0].error
    assert not report.ok
    assert "FAILED 00_boom" in unattended.format_report(report)
    # and the emulator is stopped
    assert report.processes_left == [] and report.stopped["emulator_stopped"]
    # The kernel is this Python (the project's venv), not another one on the PATH
    out = nbformat.read(str(report.run_dir / "99_last.ipynb"), as_version=4)
    assert out.cells[-1].outputs[0].text.strip() == sys.executable


@pytest.mark.slow
def test_benchmark_notebook_results(run):
    report, *_ = run
    if not (ROOT / "notebooks" / "04_benchmark.ipynb").exists():
        pytest.fail("04_benchmark.ipynb is missing")
    s = summary(report, "04_benchmark")
    # The scenarios asked for, each with every job answered correctly
    # (round_trip runs the floor's one-at-a-time jobs beside labkit's)
    assert [r["name"] for r in s["scenarios"]] == [*SMALL["scenarios"][:2], "floor_round_trip", "round_trip"]
    for r in s["scenarios"]:
        assert r["correct"] == r["jobs"] > 0 and r["jobs_per_s"] > 0
    assert [r["jobs"] for r in s["scenarios"]] == [SMALL["bench_jobs"]] * 2 + [SMALL["round_trips"]] * 2
    assert s["ratios"]["labkit_vs_floor"] > 0
    # The sweep: labkit and the floor at every window and worker count
    points = {(r["pipeline"], r["window"], r["workers"]) for r in s["sweep"]}
    assert points == {(p, w, k) for p in ("labkit", "floor") for w in SMALL["windows"] for k in SMALL["worker_counts"]}
    assert all(r["correct"] == r["jobs"] == SMALL["bench_jobs"] for r in s["sweep"])
    assert s["jobs"] == sum(r["jobs"] for r in s["scenarios"]) + len(points) * SMALL["bench_jobs"]


@pytest.mark.slow
def test_custom_kinds_notebook_results(run):
    # The notebook restarted the local worker with notebooks/kinds/wordcount.py and sent one job per kind.
    report, *_ = run
    s = summary(report, "06_custom_kinds")
    text = unattended.declared_parameters(ROOT / "notebooks" / "06_custom_kinds.ipynb")["text"]
    words = re.findall(r"[\w']+", text.lower())
    assert (s["wordcount"]["words"], s["wordcount"]["distinct"]) == (len(words), len(set(words)))
    assert sum(s["histogram_counts"]) == unattended.declared_parameters(
        ROOT / "notebooks" / "06_custom_kinds.ipynb")["histogram_length"]
    assert s["waiting"].startswith("waiting in ") and "-kind-translate: " in s["waiting"]  # its own queue, untouched


@pytest.mark.slow
def test_every_summary_prices_the_requests_its_notebook_made(run):
    # Each notebook's summary lists the AWS requests its kernel made, by operation, and their list price
    report, lines, out = run
    from labkit import costs
    for n in report.notebooks:
        [s] = n.summaries
        assert s["api_calls"] and all(isinstance(v, int) and v > 0 for v in s["api_calls"].values()), n.name
        # (a notebook's requests cost a fraction of a cent at the list prices docs/aws.md gives, dated)
        assert 0 < s["cost_usd"] < 0.01 and s["prices_as_of"] == costs.AS_OF, (n.name, s["cost_usd"])
        text = all_text(executed(report, n.name))
        assert "AWS requests this notebook made" in text and f"at list prices of {costs.PRICES['as_of']}" in text
    numbers = summary(report, "01_numbers")["api_calls"]
    assert numbers["sqs.SendMessageBatch"] >= 1 and numbers["s3.PutObject"] >= 1  # the batch; the big list
    assert "AWS requests: $" in unattended.format_report(report)
