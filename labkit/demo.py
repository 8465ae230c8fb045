"""``labkit demo``: the whole kit on the embedded emulator, start to finish, nothing left running."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from labkit import provision
from labkit.aws.clients import Clients
from labkit.client import ARRAY_THRESHOLD, Lab
from labkit.config import Settings
from labkit.emulator import Emulator
from labkit.jobs.numbers import PRESET
from labkit.processes import Child, python_module, settings_env
from labkit.samples import sample_image


def _show(title: str, result: dict[str, Any]) -> None:
    print(f"{title}\n  " + json.dumps(result))


def _jobs(lab: Lab, random_length: int, out_dir: Path) -> None:
    """The main job: a typed list, the preset, a random list through S3, one image."""
    t0 = time.perf_counter()
    _show("typed list [3, 1, 4, 1, 5, 9, 2, 6]:", lab.numbers([3, 1, 4, 1, 5, 9, 2, 6]).result(60))
    _show("the original lab's preset list:", lab.numbers(list(PRESET)).result(60))
    values = lab.random_numbers(random_length, seed=42)
    way = "sent through S3 as .npy" if random_length > ARRAY_THRESHOLD else "sent in the message"
    _show(f"a random list of {random_length:,} integers ({way}):", lab.numbers(values).result(120))
    res = lab.image(sample_image(), ["grayscale", "thumbnail:256"], name="demo-gradient.png").result(60)
    dest = res.download(out_dir / "demo-gradient-processed.png")
    print(f"image job: s3://{res['bucket']}/{res.key} ({res['width']}x{res['height']} {res['format']})"
          f"\n  downloaded to {dest}")
    print(f"done in {time.perf_counter() - t0:.2f} s; {lab.stats()['api_calls']} AWS calls by this client")


def run_demo(random_length: int = 100_000, out_dir: Path | None = None) -> int:
    out_dir = out_dir or Path("runs") / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    with Emulator() as emu, tempfile.TemporaryDirectory(prefix="labkit-demo-") as state_dir:
        print(f"emulator   {emu.url} (127.0.0.1 only)")
        settings = Settings.load(state_dir=state_dir, endpoint_url=emu.url)
        report = provision.ensure(Clients(settings))
        print(f"provisioned {len(report.created)} resources: " + ", ".join(report.created))
        settings = settings.replace(bucket=report.bucket)
        worker = Child.spawn(python_module("worker", "--poll-wait", "2"), env=settings_env(settings), detach=False)
        try:
            with Lab(settings) as lab:
                _jobs(lab, random_length, out_dir)
        finally:
            worker.stop(timeout=30)
    code = worker.returncode
    print(f"worker stopped (exit {code}); emulator stopped; nothing left running")
    return 0 if code == 0 else 1
