"""``labkit demo``: the whole kit on the embedded emulator, start to finish, nothing left running."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from labkit import provision
from labkit.aws.clients import Clients
from labkit.client import Lab
from labkit.config import Settings
from labkit.emulator import Emulator

PRESET = [1, 5, 22, 33, 9, 0, -15, 8, 22, 100, 33, 62, 90, 150, 1, 2, 3]


def _show(title: str, result: dict) -> None:
    print(f"{title}\n  " + json.dumps(result))


def sample_image() -> bytes:
    """A small generated picture (a colour gradient with shapes) as PNG bytes."""
    from PIL import Image, ImageDraw
    img = Image.new("RGB", (640, 400))
    px = img.load()
    for x in range(640):
        for y in range(400):
            px[x, y] = (x * 255 // 639, y * 255 // 399, 160)
    d = ImageDraw.Draw(img)
    d.ellipse((220, 100, 420, 300), fill=(250, 220, 40))
    d.rectangle((40, 40, 160, 160), outline=(255, 255, 255), width=6)
    d.text((260, 340), "labkit", fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def run_demo(random_length: int = 100_000, out_dir: Path | None = None) -> int:
    out_dir = out_dir or Path("runs") / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    with Emulator() as emu, tempfile.TemporaryDirectory(prefix="labkit-demo-") as state_dir:
        print(f"emulator   {emu.url} (127.0.0.1 only)")
        settings = Settings.load(state_dir=state_dir, endpoint_url=emu.url)
        report = provision.ensure(Clients(settings))
        print(f"provisioned {len(report.created)} resources: " + ", ".join(report.created))
        env = {**os.environ, "LABKIT_ENDPOINT_URL": emu.url, "LABKIT_BUCKET": report.bucket or "",
               "LABKIT_STATE_DIR": state_dir}
        worker = subprocess.Popen([sys.executable, "-m", "worker", "--poll-wait", "2"], env=env)
        try:
            with Lab(settings.replace(bucket=report.bucket)) as lab:
                t0 = time.perf_counter()
                _show("typed list [3, 1, 4, 1, 5, 9, 2, 6]:", lab.numbers([3, 1, 4, 1, 5, 9, 2, 6]).result(60))
                _show("the original lab's preset list:", lab.numbers(PRESET).result(60))
                values = lab.random_numbers(random_length, seed=42)
                _show(f"a random list of {random_length:,} integers (sent through S3 as .npy):",
                      lab.numbers(values).result(120))
                res = lab.image(sample_image(), ["grayscale", "thumbnail:256"], name="demo-gradient.png").result(60)
                dest = res.download(out_dir / "demo-gradient-processed.png")
                print(f"image job: s3://{res['bucket']}/{res.key} ({res['width']}x{res['height']} {res['format']})"
                      f"\n  downloaded to {dest}")
                print(f"done in {time.perf_counter() - t0:.2f} s; {lab.stats()['api_calls']} AWS calls by this client")
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                code = worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                code = worker.wait()
    print(f"worker stopped (exit {code}); emulator stopped; nothing left running")
    return 0 if code == 0 else 1
