"""How much memory a worker needs per byte of claim-check payload, by format and by how the numbers are written.

    python -m labkit.bench.payload_memory [COUNT]

For each shape it writes a payload file, then runs, in a fresh process, what the worker runs on it
(``labkit.protocol.load_payload`` and the numbers handler) and prints the process's peak resident memory
(VmHWM) over its baseline, and that peak as a multiple of the payload's size. worker/memory.py's EXPANSION
and docs/aws.md ("Memory") come from these figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = r"""
import io, os, sys
from labkit.protocol import JobRequest, load_payload
from labkit.jobs.handlers import numbers_job

def peak():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024

fmt, path = sys.argv[1], sys.argv[2]

class Reader(io.FileIO):
    size = os.path.getsize(path)

class Store:
    name = "bucket"
    def get(self, key, max_bytes=None):
        with open(path, "rb") as f:
            return f.read()
    def open(self, key, max_bytes=None):
        return Reader(path, "rb")

base = peak()
req = JobRequest("numbers", None, payload_ref={"bucket": "bucket", "key": "payloads/x", "format": fmt})
numbers_job(load_payload(req, Store(), 1 << 40), None)
print(os.path.getsize(path), base, peak())
"""


def shapes(count: int) -> dict[str, list]:
    rng = np.random.default_rng(1)
    return {"long floats": (rng.random(count) * 1000).tolist(),
            "short floats": np.round(rng.random(count) * 10, 1).tolist(),
            "ints < 1000": rng.integers(0, 1000, count).tolist(),
            "ints 257-999": rng.integers(257, 1000, count).tolist(),
            "ints < 10": rng.integers(0, 10, count).tolist()}


def measure(fmt: str, path: Path) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, fmt, str(path)], capture_output=True, text=True, check=True)
    size, base, peak = map(int, out.stdout.split())
    return size, peak - base


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 4_000_000
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("json", name, values) for name, values in shapes(count).items()]
        runs.append(("npy", "long floats", shapes(count)["long floats"]))
        for fmt, name, values in runs:
            path = Path(tmp) / f"payload.{fmt}"
            if fmt == "json":
                path.write_text(json.dumps({"numbers": values}, separators=(",", ":")))  # as labkit writes it
            else:
                np.save(path, np.asarray(values))
            size, extra = measure(fmt, path)
            print(f"{fmt:<5} {name:<13} {count:>11,} numbers  payload {size / 2**20:8.1f} MiB  "
                  f"peak over baseline {extra / 2**20:8.1f} MiB  {extra / size:5.2f}x")


if __name__ == "__main__":
    main()
