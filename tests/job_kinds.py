"""Job kinds for the tests only, registered the way any user module registers its kinds: a worker
started with ``LABKIT_JOB_MODULES=<this file>`` loads them (see labkit/kinds.py). Production code never
imports this module."""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from labkit.errors import InvalidInput
from labkit.kinds import Context, job_kind

PATH = __file__
log = logging.getLogger("labkit.worker")


@job_kind("sleep")
def sleep(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """A job that takes ``payload["seconds"]`` seconds (at most an hour): heartbeats, hard limits, stops."""
    seconds = payload.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 3600 \
            or not math.isfinite(seconds):
        raise InvalidInput(f"'seconds' must be a number from 0 to 3600, got {seconds!r}")
    log.info("sleep job %s started (%g s)", ctx.job_id, seconds)
    time.sleep(seconds)
    return {"slept": seconds}
