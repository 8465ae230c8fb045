"""Run the suite as two pytest processes at once (``make test``): most of its time is spent waiting on queues,
visibility timeouts and child processes, not computing, so two halves side by side on two cores take a little
more than half the time of one after the other.

Each half has its own emulator (the session fixture), its own temporary folders and no shared cache. The
first half's output is kept in a file and printed after the second's; the exit status is the worse of the two.

    python -m tests.shards            # the whole suite, as make test runs it
    python -m tests.shards -x -q      # extra arguments go to both halves
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The first half: the end-to-end files (browser, notebooks, faults, benchmarks), about half of the time.
FIRST = ["test_browser.py", "test_notebooks.py", "test_faults.py", "test_poison.py", "test_bench.py",
         "test_portability.py", "test_images_e2e.py", "test_memory.py", "test_aws_realism.py", "test_iam_proof.py",
         "test_credentials.py", "test_costs_aws.py", "test_delivery.py", "test_fleet_throttled.py"]


NOTHING_COLLECTED = 5  # pytest's exit status when no test was selected


def halves() -> tuple[list[str], list[str]]:
    """The two halves as test file paths: FIRST, and every other test file."""
    files = sorted(p.name for p in (ROOT / "tests").glob("test_*.py"))
    missing = set(FIRST) - set(files)
    if missing:
        raise SystemExit(f"tests/shards.py names test files that do not exist: {', '.join(sorted(missing))}")
    first = [f"tests/{f}" for f in files if f in FIRST]
    second = [f"tests/{f}" for f in files if f not in FIRST]
    return first, second


def main(extra: list[str]) -> int:
    first, second = halves()
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *extra]
    with tempfile.TemporaryFile("w+") as out:
        print(f"tests: two halves at once; the first ({len(first)} files) is printed after the second", flush=True)
        background = subprocess.Popen([*base, *first], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            second_status = subprocess.call([*base, *second], cwd=ROOT)
        except BaseException:  # Ctrl-C: stop the first half too
            background.terminate()
            background.wait()
            raise
        first_status = background.wait()
        out.seek(0)
        print(f"\n===== the first half: {' '.join(first)}", flush=True)
        sys.stdout.write(out.read())
    print(f"\ntests: first half exit {first_status}, second half exit {second_status}", flush=True)
    statuses = [first_status, second_status]
    if NOTHING_COLLECTED in statuses and statuses != [NOTHING_COLLECTED] * 2:
        statuses.remove(NOTHING_COLLECTED)  # a -k or -m that selects tests of one half only
    return max(statuses)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
