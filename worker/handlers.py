"""What the worker does with one decoded request: a registry of handlers by job kind.

Handlers join transport (fetch from and write to S3) with the pure job code in ``labkit.jobs``.
They raise :class:`labkit.errors.JobError` subclasses for anything the sender should hear about.
"""

from __future__ import annotations

import logging
import math
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from labkit.aws.storage import Bucket, safe_key
from labkit.config import PROCESSED_PREFIX, UNPROCESSED_PREFIX, Settings
from labkit.errors import InvalidInput
from labkit.jobs import numbers
from labkit.protocol import JobRequest, load_payload


@dataclass(frozen=True)
class Context:
    """What handlers may touch: the settings and the one bucket this worker serves."""

    settings: Settings
    bucket: Bucket


Handler = Callable[[Context, JobRequest], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}
# TEST ONLY: with this set to 1 in its environment, a worker also serves the kinds of register_test_kinds().
TEST_KINDS_ENV = "LABKIT_TEST_KINDS"
log = logging.getLogger("labkit.worker")


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[kind] = fn
        return fn
    return register


@handler("numbers")
def handle_numbers(ctx: Context, req: JobRequest) -> dict[str, Any]:
    payload = load_payload(req, ctx.bucket, ctx.settings.max_payload_bytes)
    if "numbers" not in payload:
        raise InvalidInput("payload has no 'numbers' list")
    # The payload was decoded for this job alone: the statistics may reorder it in place (the median),
    # which keeps the worker's peak memory under twice the payload's size.
    return numbers.compute(payload["numbers"], overwrite=True)


@handler("image")
def handle_image(ctx: Context, req: JobRequest) -> dict[str, Any]:
    from labkit.jobs import images  # Pillow is only loaded by workers that see image jobs
    p = load_payload(req, ctx.bucket, ctx.settings.max_payload_bytes)
    bucket = p.get("bucket", ctx.bucket.name)
    if bucket != ctx.bucket.name:
        raise InvalidInput(f"bucket {bucket!r} is not the bucket this worker serves ({ctx.bucket.name!r})")
    source = safe_key(UNPROCESSED_PREFIX, p.get("key", ""))
    if p.get("output") is not None:
        safe_key(PROCESSED_PREFIX, p["output"])  # refuse a bad output name before any work
    ops = images.validate_ops(p.get("ops", []))
    fmt = p.get("format", "png")
    quality = p.get("quality")
    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 95):
        raise InvalidInput(f"quality must be an integer from 1 to 95, got {quality!r}")
    data = ctx.bucket.get(source, max_bytes=ctx.settings.max_image_bytes)
    out = images.process(data, ops, fmt, quality=quality, max_pixels=ctx.settings.max_image_pixels,
                         max_bytes=ctx.settings.max_image_bytes, source_name=source)
    target = output_key(source, out.format, p.get("output"))
    ctx.bucket.put(target, out.data, out.content_type)
    return {"bucket": ctx.bucket.name, "key": target, "source": source, "width": out.width,
            "height": out.height, "format": out.format, "bytes": len(out.data)}


EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif"}


def output_key(source: str, fmt: str, output: str | None = None) -> str:
    """``images/processed/<name>``: the source's name with the output format's extension, or ``output``."""
    from labkit.jobs import images
    if output is not None:
        return safe_key(PROCESSED_PREFIX, output)
    name = source[len(UNPROCESSED_PREFIX):]
    stem, ext = posixpath.splitext(name)
    if images.format_for_key(name) != fmt:
        ext = EXTENSIONS.get(fmt, "." + fmt)
    return PROCESSED_PREFIX + stem + ext


# -- the original lab's plain-text messages -------------------------------------------------------

def legacy_numbers(body: str) -> str:
    """``1,5,22`` -> a human-readable line naming minimum, maximum, average and median."""
    return numbers.format_legacy(numbers.compute(numbers.parse_text(body)))


def legacy_image(ctx: Context, body: str) -> str:
    """``cat.jpg`` -> ``images/processed/cat.jpg`` in black and white; the reply is the bare name."""
    from labkit.jobs import images
    name = body.strip()
    source = safe_key(UNPROCESSED_PREFIX, name)
    data = ctx.bucket.get(source, max_bytes=ctx.settings.max_image_bytes)
    out = images.legacy_bw(data, name)
    ctx.bucket.put(PROCESSED_PREFIX + source[len(UNPROCESSED_PREFIX):], out.data, out.content_type)
    return name


# -- test-only kinds -------------------------------------------------------------------------------

def register_test_kinds() -> None:
    """TEST ONLY: register the ``sleep`` kind (payload ``{"seconds": S}``, at most one hour), a job
    that takes S seconds, for the fault tests (heartbeat, hard limit, stop). ``run_worker`` calls this
    only when LABKIT_TEST_KINDS=1 is in the worker's environment; production workers never know it."""
    HANDLERS["sleep"] = handle_sleep


def handle_sleep(ctx: Context, req: JobRequest) -> dict[str, Any]:
    seconds = (req.payload or {}).get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 3600 \
            or not math.isfinite(seconds):
        raise InvalidInput(f"'seconds' must be a number from 0 to 3600, got {seconds!r}")
    log.info("sleep job %s started (%g s)", req.id, seconds)
    time.sleep(seconds)
    return {"slept": seconds}
