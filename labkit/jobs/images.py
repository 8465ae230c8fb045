"""Image jobs in memory: decode (with limits), run a pipeline of ops, encode.

Pure module: it takes bytes and returns bytes, never touches files, the network or AWS.

* ``process(data, ops, format)`` decodes (with size limits), applies the ops and encodes an
  :class:`ImageOutput`. ``ops`` is the protocol's list of dicts, or a :class:`Pipeline` from
  ``validate_ops`` (then not checked again).
* ``check_output(format, quality)``: the one place output formats and quality limits are checked.
* ``legacy_bw(data, name)`` is the original lab's black-and-white conversion.

The ops and their registry are :mod:`labkit.jobs.image_ops` and :mod:`labkit.jobs.image_filters`; their
public names are re-exported here (``from labkit.jobs.images import OPS, validate_ops, ...``).
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps

from labkit.errors import InvalidInput, JobError, TooLarge
from labkit.jobs.image_modes import flatten, resamplable, to_8bit
from labkit.jobs.image_ops import MAX_OPS, MAX_SIDE, OPS, Op, Param, megapixels, show
from labkit.jobs.image_pipeline import Pipeline, describe_ops, parse_op_spec, parse_ops, validate_ops
from labkit.keys import FORMAT_OF_EXTENSION, IMAGE_FORMATS, content_type, format_for_key

__all__ = [
    "DEFAULT_QUALITY",
    "MAX_OPS",
    "MAX_SIDE",
    "OPS",
    "QUALITY_RANGE",
    "ImageOutput",
    "Op",
    "Param",
    "Pipeline",
    "check_output",
    "describe_ops",
    "format_for_key",
    "job_payload",
    "legacy_bw",
    "parse_op_spec",
    "parse_ops",
    "process",
    "validate_ops",
]

QUALITY_RANGE = {"jpeg": (1, 95), "webp": (1, 100)}
"""Accepted ``quality`` by output format; other formats ignore it (any integer from 1 to 100 passes)."""

DEFAULT_QUALITY = {"jpeg": 85, "webp": 80}

# Formats Pillow may open. Deliberately short: no EPS (Ghostscript), no guess-by-content formats like TGA.
_READ_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "PPM")

# The formats written, by Pillow's name (labkit.keys.IMAGE_FORMATS); Pillow calls a JPEG with more than one picture
# in it (a phone's) MPO.
_FROM_PIL_FORMAT = {f.pillow: name for name, f in IMAGE_FORMATS.items()} | {"MPO": "jpeg"}
# Modes each output format stores as they are; anything else is converted first.
_FORMAT_MODES = {
    "png": ("1", "L", "LA", "I;16", "RGB", "RGBA", "P"),
    "jpeg": ("L", "RGB"),
    "webp": ("RGB", "RGBA"),
    "gif": ("L", "P"),
    "bmp": ("1", "L", "P", "RGB", "RGBA"),
    "tiff": ("1", "L", "LA", "I;16", "RGB", "RGBA", "P"),
}
_MAX_DIMENSION = {"webp": 16383, "jpeg": 65500, "gif": 65535}
_ICC_MATCHES = {(b"RGB ", "RGB"), (b"RGB ", "RGBA"), (b"GRAY", "L"), (b"GRAY", "LA")}
_PIXELS_IN_MESSAGE = re.compile(r"\((\d+) pixels\)")
_ORIENTATION = 0x0112
_SWAPS_AXES = (5, 6, 7, 8)  # EXIF orientations shown turned by 90 degrees
_Draft = tuple[str | None, tuple[int, int] | None, int | None]


@dataclass(frozen=True)
class ImageOutput:
    """An encoded result: ``format`` is one of png, jpeg, webp, gif, bmp, tiff; ``mode`` the stored mode."""

    data: bytes = field(repr=False)
    width: int
    height: int
    format: str
    content_type: str
    mode: str


# ----------------------------------------------------------------------------------------------------
# Output format and quality


def _normalize_format(format: Any) -> str:
    if not isinstance(format, str):
        raise InvalidInput(f"output format must be a string, got {type(format).__name__}")
    name = FORMAT_OF_EXTENSION.get(format.strip().lower().lstrip("."))  # a format's name is an extension of it
    if name is None:
        raise InvalidInput(f"unknown output format {format!r} (known: {', '.join(sorted(IMAGE_FORMATS))}; "
                           "jpg and tif are accepted too)")
    return name


def _check_quality(quality: Any, fmt: str | None) -> None:
    if quality is None:
        return
    low, top = QUALITY_RANGE.get(fmt or "", (1, 100))
    if isinstance(quality, bool) or not isinstance(quality, int) or not low <= quality <= top:
        where = f" for {fmt}" if fmt in QUALITY_RANGE else ""
        raise InvalidInput(f"quality must be an integer from {low} to {top}{where}, got {show(quality)}")


def check_output(format: Any, quality: Any = None) -> str | None:
    """The canonical output format ("jpg" -> "jpeg"; None stays None: the source's format) after checking
    ``quality`` against it (``QUALITY_RANGE``); raises ``InvalidInput``. With ``format`` None the quality
    is checked again once the source's format is known."""
    fmt = None if format is None else _normalize_format(format)
    _check_quality(quality, fmt)
    return fmt


def job_payload(bucket: str, key: str, ops: list[dict[str, Any]] | Pipeline, format: str | None = "png",
                quality: int | None = None, output: str | None = None) -> dict[str, Any]:
    """The payload of an ``image`` job (docs/protocol.md): the source ``key`` in ``bucket``, the ``ops`` (protocol
    dicts or a pipeline), the output ``format``, and ``quality`` and ``output`` when given. What the client and the
    CLI send; they check the ops and format first, before anything is uploaded."""
    payload: dict[str, Any] = {"bucket": bucket, "key": key,
                               "ops": ops.to_list() if isinstance(ops, Pipeline) else list(ops), "format": format}
    if quality is not None:
        payload["quality"] = quality
    if output is not None:
        payload["output"] = output
    return payload


# ----------------------------------------------------------------------------------------------------
# Decoding


def _human(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{size} bytes"


def _readable_error(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return f"not a recognised image format (accepted: {', '.join(_READ_FORMATS)})"
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _bomb_message(exc: BaseException, max_pixels: int, where: str) -> str:
    match = _PIXELS_IN_MESSAGE.search(str(exc))
    pixels = int(match.group(1)) if match else None
    if pixels is not None and pixels > max_pixels:
        return (f"image is {megapixels(pixels)} megapixels, over the limit of {megapixels(max_pixels)} "
                f"megapixels (possible decompression bomb){where}")
    return f"image is too large to decode safely: {exc}{where}"


@dataclass(frozen=True)
class _Decoded:
    image: Image.Image
    format: str | None
    icc: bytes | None
    done: int | None  # the pipeline step already applied while decoding (a JPEG decoded smaller)


def _decode(data: bytes, max_pixels: int, where: str, pipeline: Pipeline) -> _Decoded:
    """Open, check the size before decoding, decode the first frame and apply EXIF orientation."""
    if not data:
        raise InvalidInput(f"not a readable image: empty input (0 bytes){where}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=_READ_FORMATS) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise TooLarge(f"image is {w}x{h} = {megapixels(w * h)} megapixels, over the limit of "
                                   f"{megapixels(max_pixels)} megapixels{where}")
                if im.format == "PNG":
                    # load() accepts a PNG cut after its pixel data; verify() walks every chunk to IEND.
                    with Image.open(io.BytesIO(data), formats=["PNG"]) as check:
                        check.verify()
                img, done = _load(im, pipeline)
                return _Decoded(img, im.format, im.info.get("icc_profile"), done)
        except JobError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise TooLarge(_bomb_message(exc, max_pixels, where)) from exc
        except MemoryError:
            raise
        except Exception as exc:  # Pillow raises many types on corrupt data (OSError, SyntaxError, ...)
            raise InvalidInput(f"not a readable image: {_readable_error(exc)}{where}") from exc


def _load(im: Image.Image, pipeline: Pipeline) -> tuple[Image.Image, int | None]:
    """Decode ``im`` (smaller when :func:`_jpeg_draft` allows) and orient it; also returns the index of
    the step done while decoding, if any."""
    draft = _jpeg_draft(im, pipeline) if im.format == "JPEG" else None
    if draft is None:
        im.load()
        return _oriented(im), None
    mode, target, index = draft
    full = im.size
    drafted = im.draft(mode, target)
    im.load()
    if target is None or drafted is None or im.size == full:
        return _oriented(im), None
    # The reduced decode covers drafted[1] of its pixels exactly (its last row and column are partial).
    small = resamplable(im).resize(target, Image.Resampling.LANCZOS, box=drafted[1])
    small.info = dict(im.info)  # keeps the EXIF orientation for _oriented
    return _oriented(small), index


def _jpeg_draft(im: Image.Image, pipeline: Pipeline) -> _Draft | None:
    """(mode, size, step) to decode a JPEG with (``Image.draft``), or None to decode it in full.

    "L" when the pipeline goes to grayscale before it needs colours. A size (in the file's orientation) when
    the first step that needs more than a commuting op resamples the whole image to at most half the
    source on both sides: libjpeg then decodes at 1/2, 1/4 or 1/8 scale, the largest reduction that stays
    at least that size, and the step resamples from there to the very size it gives from the full image.
    """
    try:
        orientation = im.getexif().get(_ORIENTATION, 1)
    except Exception:  # unreadable EXIF: decode in full, as the orientation step will ignore it
        return None
    w, h = im.size
    turned = orientation in _SWAPS_AXES
    plan = pipeline.shrink((h, w) if turned else (w, h))
    mode = "L" if plan.gray and im.mode == "RGB" else None
    target = None
    if plan.size is not None:
        tw, th = (plan.size[1], plan.size[0]) if turned else plan.size
        if min(w // tw, h // th) >= 2:
            target = (tw, th)
    if mode is None and target is None:
        return None
    return mode, target, plan.index if target is not None else None


def _oriented(im: Image.Image) -> Image.Image:
    """A copy of ``im`` turned as its EXIF orientation says."""
    try:
        return ImageOps.exif_transpose(im)
    except MemoryError:
        raise
    except Exception:  # unreadable EXIF: ignore the orientation rather than fail the job
        return im.copy()


# ----------------------------------------------------------------------------------------------------
# Encoding


def _for_format(img: Image.Image, fmt: str) -> Image.Image:
    """Convert ``img`` to a mode ``fmt`` can store."""
    allowed = _FORMAT_MODES[fmt]
    if img.mode in allowed:
        return img
    if fmt == "jpeg":
        return flatten(img)
    if img.mode.startswith("I") and fmt in ("png", "tiff"):
        src = img if img.mode == "I" else img.convert("I")
        lo, hi = src.getextrema()
        if lo >= 0 and hi <= 65535:
            return src.convert("I;16")  # keep 16 bits
    img = to_8bit(img)
    if img.mode in allowed:
        return img
    if fmt == "gif":
        if img.mode == "1":
            return img.convert("L")
        if img.mode == "LA":
            img = img.convert("RGBA")
        return img.convert("P", palette=Image.Palette.ADAPTIVE)
    if img.mode == "LA":  # webp, bmp
        return img.convert("RGBA")
    return img.convert("RGB")  # webp: "1", "L"


def _keep_transparency(mode: str, value: Any) -> bool:
    if mode == "P":
        return isinstance(value, (int, bytes))
    if mode in ("1", "L", "I;16"):
        return isinstance(value, int)
    if mode == "RGB":
        return isinstance(value, tuple) and len(value) == 3
    return False


def _encode(img: Image.Image, fmt: str, quality: int | None, icc: bytes | None) -> ImageOutput:
    out = _for_format(img, fmt)
    if out is img:
        out = img.copy()
    limit = _MAX_DIMENSION.get(fmt)
    if limit is not None and max(out.size) > limit:
        raise InvalidInput(f"{fmt} cannot store images larger than {limit}x{limit}, "
                           f"got {out.width}x{out.height}")
    trns = out.info.get("transparency")
    out.info = {"transparency": trns} if trns is not None and _keep_transparency(out.mode, trns) else {}
    options: dict[str, Any] = {}
    if fmt == "png":
        options["optimize"] = False
    elif fmt in DEFAULT_QUALITY:
        options["quality"] = quality if quality is not None else DEFAULT_QUALITY[fmt]
    if icc and fmt in ("png", "jpeg", "webp", "tiff"):
        space = icc[16:20]
        if (space, out.mode) in _ICC_MATCHES:
            options["icc_profile"] = icc
    buf = io.BytesIO()
    try:
        out.save(buf, format=IMAGE_FORMATS[fmt].pillow, **options)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot encode a {out.width}x{out.height} {out.mode} image as {fmt}: "
                           f"{exc}") from exc
    return ImageOutput(buf.getvalue(), out.width, out.height, fmt, content_type(fmt), out.mode)


# ----------------------------------------------------------------------------------------------------
# The pipeline


def _run(pipeline: Pipeline, decoded: _Decoded, max_pixels: int, where: str) -> Image.Image:
    """Apply the steps (but the one done while decoding), holding each result to ``max_pixels``."""
    img = decoded.image
    for i, step in enumerate(pipeline):
        if i == decoded.done:
            continue
        name = step.op.name
        w, h = step.output_size(img.size)
        if w * h > max_pixels:
            raise TooLarge(f"{name}: the result would be {w}x{h} = {megapixels(w * h)} megapixels, over the "
                           f"limit of {megapixels(max_pixels)} megapixels{where}")
        try:
            img = step.apply(img)
        except JobError:
            raise
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{name}: cannot process this {img.mode} image: {exc}{where}") from exc
        if img.width * img.height > max_pixels:
            raise TooLarge(f"{name}: the result is {img.width}x{img.height} = "
                           f"{megapixels(img.width * img.height)} megapixels, over the limit of "
                           f"{megapixels(max_pixels)} megapixels{where}")
    return img


def process(data: bytes, ops: list[dict[str, Any]] | Pipeline, format: str | None = "png", *,
            quality: int | None = None, max_pixels: int = 40_000_000, max_bytes: int = 50 * 1024 * 1024,
            source_name: str | None = None) -> ImageOutput:
    """Decode ``data``, apply ``ops`` in order and encode the result in ``format``; all in memory.

    * ``ops``: the message protocol's ``[{"op": name, **params}, ...]``, checked first (``validate_ops``),
      or the :class:`Pipeline` ``validate_ops`` returned (not checked again); ``[]`` just re-encodes.
    * ``format``: "png", "jpeg"/"jpg", "webp", "gif", "bmp", "tiff"/"tif" (any case); None keeps the source's
      format, or png when that format cannot be written. ``quality``: JPEG 1-95 (default 85), WebP 1-100
      (default 80); ignored by other formats. Modes a format cannot store are converted (alpha → white for
      JPEG, "1" → "L", 16-bit → 8-bit, CMYK → RGB). Metadata is not copied, except an ICC profile matching
      the output's color space.
    * Limits: more than ``max_bytes`` of data, or more than ``max_pixels`` pixels (checked from the header,
      before decoding; also checked for the result of each op) → ``TooLarge``; Pillow's decompression-bomb
      error/warning → ``TooLarge``.
    * Data that is empty, not an image, truncated or corrupt → ``InvalidInput`` "not a readable image: ...".
    * The EXIF orientation is applied before the ops. Animated images (GIF, APNG, WebP): only the first frame
      is used and a single frame is written.
    * A JPEG is decoded at 1/2, 1/4 or 1/8 scale (and straight to grayscale) when the result cannot tell.
    * ``source_name`` (e.g. the S3 key) only appears in error messages.
    """
    pipeline = validate_ops(ops)
    fmt = check_output(format, quality)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput(f"image data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    where = f" ({source_name})" if source_name else ""
    if len(data) > max_bytes:
        raise TooLarge(f"image data is {len(data)} bytes ({_human(len(data))}), over the limit of "
                       f"{max_bytes} bytes ({_human(max_bytes)}){where}")
    decoded = _decode(data, max_pixels, where, pipeline)
    if fmt is None:
        fmt = _FROM_PIL_FORMAT.get(decoded.format or "", "png")
        _check_quality(quality, fmt)
    return _encode(_run(pipeline, decoded, max_pixels, where), fmt, quality, decoded.icc)


_LEGACY_BW = validate_ops([{"op": "bw"}])


def legacy_bw(data: bytes, name: str, *, max_pixels: int = 40_000_000,
              max_bytes: int = 50 * 1024 * 1024) -> ImageOutput:
    """The original lab's conversion, ``Image.open(f).convert("1").save(name)``: dithered black and white,
    written in the format of ``name``'s extension (png when unknown). Unlike the original, EXIF orientation
    is honoured and the size limits of ``process`` apply."""
    return process(data, _LEGACY_BW, format_for_key(name) or "png", max_pixels=max_pixels,
                   max_bytes=max_bytes, source_name=name)
