"""The built-in kinds' handlers (see :mod:`labkit.kinds`): what a worker runs for a ``numbers`` or an
``image`` request, and for the original lab's plain-text bodies on each lane.

A handler gets the request's payload (already fetched from S3 when it travelled by claim check) and a
:class:`~labkit.kinds.Context`; the image handlers read and write the bucket through ``ctx.store``. No
boto3 here: the store is handed in by the worker.
"""

from __future__ import annotations

from typing import Any

from labkit.config import PROCESSED_PREFIX, UNPROCESSED_PREFIX
from labkit.errors import InvalidInput
from labkit.jobs import numbers
from labkit.keys import output_key, safe_key
from labkit.kinds import Context


def numbers_job(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """count, min, max, mean, median, sum and std of ``payload["numbers"]``."""
    if "numbers" not in payload:
        raise InvalidInput("payload has no 'numbers' list")
    # The payload was decoded for this job alone: the statistics may reorder it in place (the median),
    # which keeps the worker's peak memory under twice the payload's size.
    return numbers.compute(payload["numbers"], overwrite=True)


def numbers_legacy(body: str, ctx: Context) -> str:
    """``1,5,22`` -> a human-readable line naming minimum, maximum, average and median."""
    return numbers.format_legacy(numbers.compute(numbers.parse_text(body)))


def image_job(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Read ``payload["key"]`` from the bucket, apply ``payload["ops"]``, write the result under the job's own
    key (``images/processed/<job id>/<name>``, or ``payload["output"]``: :func:`labkit.keys.output_key`)."""
    from labkit.jobs import images  # Pillow is only loaded by workers that see image jobs
    store, limits = ctx.store, ctx.settings
    bucket = payload.get("bucket", store.name)
    if bucket != store.name:
        raise InvalidInput(f"bucket {bucket!r} is not the bucket this worker serves ({store.name!r})")
    source = safe_key(UNPROCESSED_PREFIX, payload.get("key", ""))
    if payload.get("output") is not None:
        safe_key(PROCESSED_PREFIX, payload["output"])  # refuse a bad output name before any work
    pipeline = images.validate_ops(payload.get("ops", []))  # checked once, before any download
    data = store.get(source, max_bytes=limits.max_image_bytes)
    out = images.process(data, pipeline, payload.get("format", "png"), quality=payload.get("quality"),
                         max_pixels=limits.max_image_pixels, max_bytes=limits.max_image_bytes, source_name=source)
    target = output_key(source, out.format, payload.get("output"), job_id=ctx.job_id)
    store.put(target, out.data, out.content_type)
    return {"bucket": store.name, "key": target, "source": source, "width": out.width,
            "height": out.height, "format": out.format, "bytes": len(out.data)}


def image_legacy(body: str, ctx: Context) -> str:
    """``cat.jpg`` -> ``images/processed/cat.jpg`` in black and white; the reply is the bare name."""
    from labkit.jobs import images
    name = body.strip()
    source = safe_key(UNPROCESSED_PREFIX, name)
    data = ctx.store.get(source, max_bytes=ctx.settings.max_image_bytes)
    out = images.legacy_bw(data, name)
    ctx.store.put(PROCESSED_PREFIX + source[len(UNPROCESSED_PREFIX):], out.data, out.content_type)
    return name
