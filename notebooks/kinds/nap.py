"""A job kind that takes its time, for notebooks/05_delivery: a worker killed while it holds naps, and a nap
that outlives its queue's visibility timeout (the worker keeps it invisible with heartbeats).

    LABKIT_JOB_MODULES=notebooks/kinds/nap.py labkit worker
    lab.submit("nap", {"seconds": 2}).result()      # {'slept': 2}
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from labkit.errors import InvalidInput
from labkit.kinds import Context, job_kind

MAX_SECONDS = 60  # a lab exercise, not a way to tie a worker up
log = logging.getLogger("labkit.worker")


@job_kind("nap")
def nap(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Sleep ``payload["seconds"]`` seconds (0 to 60), then say how long. The worker's log says when each
    nap starts (the exercise kills a worker in the middle of its naps)."""
    seconds = payload.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds) \
            or not 0 <= seconds <= MAX_SECONDS:
        raise InvalidInput(f"'seconds' must be a number from 0 to {MAX_SECONDS}, got {seconds!r}")
    log.info("nap job %s started (%g s)", ctx.job_id, seconds)
    time.sleep(seconds)
    return {"slept": seconds}
