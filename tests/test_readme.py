"""The README's "Using it", run as written: each command of its shell block, in order, in a newcomer's fresh folder
(no AWS credentials, a home of its own), then its Python example while the lab is up. The one command not run
here is `make lab` (JupyterLab in the foreground): tests/test_browser.py runs it in a real browser."""

from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, Student

pytestmark = pytest.mark.slow

README = (ROOT / "README.md").read_text()
USING_IT = README.split("\n## Using it\n", 1)[1].split("\n## ", 1)[0]
SHELL = re.search(r"```bash\n(.*?)```", USING_IT, re.S).group(1)  # type: ignore[union-attr]
PYTHON = re.search(r"```python\n(.*?)```", USING_IT, re.S).group(1)  # type: ignore[union-attr]
NOT_HERE = ("make lab",)


def commands() -> list[list[str]]:
    """The shell block's commands, comments dropped, in order."""
    out = [shlex.split(line, comments=True) for line in SHELL.splitlines()]
    return [argv for argv in out if argv and " ".join(argv[:2]) not in NOT_HERE]


def newcomer(tmp_path: Path) -> Student:
    """A student's shell (no AWS credentials or labkit settings, so `labkit up` starts the embedded emulator) in a
    folder with what the README's commands name: cat.jpg, photos/, big.txt."""
    you = Student(tmp_path)
    (you.lab / "photos").mkdir()
    Image.new("RGB", (320, 200), "orange").save(you.lab / "cat.jpg")
    for i, colour in enumerate(("teal", "purple")):
        Image.new("RGB", (300 + 10 * i, 180), colour).save(you.lab / "photos" / f"p{i}.png")
    (you.lab / "big.txt").write_text("\n".join(str(v) for v in np.arange(1, 50_001)) + "\n")
    return you


def a_job_id(folder: Path) -> str:
    """The short id of a job this folder's lab sent (the README's `3f2a9c` stands for one of yours)."""
    first = (folder / ".labkit" / "journal.jsonl").read_text().splitlines()[0]
    return json.loads(first)["id"][:6]


def test_the_readme_commands_and_python_example_run_as_written(tmp_path: Path) -> None:
    you = newcomer(tmp_path)
    said: dict[str, str] = {}
    try:
        for argv in commands():
            assert argv[0] == "labkit", argv
            if argv[1] == "trace":
                argv = [*argv[:2], a_job_id(you.lab)]
            # When a command runs as written (the labkit on PATH is this checkout's)
            out = you.run(*argv[1:])
            # Then it succeeds, without a traceback
            assert out.returncode == 0, f"{shlex.join(argv)}:\n{out.stdout}\n{out.stderr}"
            assert "Traceback" not in out.stderr, out.stderr
            said[" ".join(argv[:3])] = out.stdout
            if argv[:2] == ["labkit", "status"]:
                # And the Python example runs as written while the lab is up
                example = subprocess.run([sys.executable, "-c", PYTHON], cwd=you.lab, env=you.env,
                                         capture_output=True, text=True, timeout=300)
                assert example.returncode == 0, example.stderr
                assert ast.literal_eval(example.stdout.splitlines()[0])["median"] == 5  # print() of the result
                assert Image.open(you.lab / "out" / "cat.png").size == (256, 160)
    finally:
        you.run("down")
    # And what the comments promise is what came out
    assert json.loads(said["labkit submit numbers"])["count"] == 50_000  # the last: @big.txt
    assert Image.open(you.lab / "cat-small.png").size == (256, 256)
    assert sorted(p.name for p in (you.lab / "small").iterdir()) == ["p0.png", "p1.png"]
    assert "sent" in said["labkit trace " + a_job_id(you.lab)]
