"""What several test files share, one copy each: the ``python -m labkit`` runner, settings with queues and a
bucket of a test's own, and the generated test images. Fixtures stay in conftest.py (which builds on these)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from labkit import provision
from labkit.aws.clients import Clients
from labkit.config import Settings
from labkit.processes import settings_env

ROOT = Path(__file__).resolve().parents[1]


# -- the command line ---------------------------------------------------------------------------------

def labkit(*args: str, s: Settings | None = None, env: Mapping[str, str] | None = None,
           base: Mapping[str, str] | None = None, cwd: Path = ROOT, input: str | None = None,
           prefix: Sequence[str] = (), timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m labkit ARGS`` as a user runs it, its output captured: in ``base`` (default: this process's
    environment) plus ``env``, pointed at ``s``' queues and bucket when given, under ``prefix`` (a command to run it
    under). Its stdin is ``input``, else nothing: a question it asks must not wait on the terminal."""
    if s is not None:
        full = settings_env(s, env, base)
    else:
        full = {**(os.environ if base is None else base), **(env or {})}
    stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
    return subprocess.run([*prefix, sys.executable, "-m", "labkit", *args], env=full, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **stdin)


# -- settings of a test's own ---------------------------------------------------------------------------

def unique_settings(emulator: Any, state_dir: Path, **extra: Any) -> Settings:
    """Settings on ``emulator`` (an emulator or its URL) whose queue and bucket names no other test uses (nothing
    made yet)."""
    tag = uuid.uuid4().hex[:8]
    return Settings.load(
        state_dir=state_dir, endpoint_url=emulator if isinstance(emulator, str) else emulator.url, env={},
        request_queue=f"requestQueue-{tag}", response_queue=f"responseQueue-{tag}",
        image_inbox=f"imageInbox-{tag}", image_outbox=f"imageOutbox-{tag}", bucket=f"labkit-test-{tag}", **extra,
    )


def provisioned(emulator: Any, state_dir: Path, **extra: Any) -> Settings:
    """``unique_settings`` with its queues and bucket made (``extra``: fields such as ``visibility_timeout``)."""
    s = unique_settings(emulator, state_dir, **extra)
    provision.ensure(Clients(s))
    return s


# -- test images ----------------------------------------------------------------------------------------

def gradient(w: int = 64, h: int = 48) -> Image.Image:
    """RGB: red grows to the right, green downwards, blue constant."""
    img = Image.new("RGB", (w, h))
    img.putdata([(x * 255 // (w - 1), y * 255 // (h - 1), 128) for y in range(h) for x in range(w)])
    return img


def encode(img: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    """``img`` as the bytes of a ``fmt`` file."""
    buf = io.BytesIO()
    img.save(buf, fmt, **options)
    return buf.getvalue()


def truncated_jpeg() -> bytes:
    """The first half of a JPEG file: a header that reads, pixels that end early."""
    data = encode(gradient(200, 150), "JPEG")
    return data[: len(data) // 2]
