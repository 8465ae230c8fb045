"""Pillow image modes: bringing any mode ("P", "CMYK", "I;16", "F", ...) to one an operation or a file
format handles, and keeping the alpha channel apart while the colours change.

Pure functions on Pillow images; used by the ops (:mod:`labkit.jobs.image_filters`) and the encoder
(:mod:`labkit.jobs.images`).
"""

from __future__ import annotations

from collections.abc import Callable

from PIL import Image

from labkit.errors import InvalidInput

BASIC_MODES = ("1", "L", "LA", "RGB", "RGBA")
RESAMPLE_MODES = ("L", "LA", "RGB", "RGBA", "I", "F")


def has_alpha(img: Image.Image) -> bool:
    """Whether ``img`` has an alpha band or transparency data."""
    flag = getattr(img, "has_transparency_data", None)  # Pillow >= 10.1
    if flag is not None:
        return bool(flag)
    return img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info


def deep_to_l(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float images to 8-bit "L", scaling (not clipping) the value range.

    I;16* images are scaled from 0..65535. "I" and "F" images are taken as 8-bit when their values fit 0..255,
    as 16-bit when they fit 0..65535 ("F" as 0..1 when they fit 0..1), and stretched from min..max otherwise.
    """
    mode = img.mode
    src = img if mode in ("I", "F") else img.convert("I")
    if mode.startswith("I;16"):
        scale, offset = 255 / 65535, 0.0
    else:
        lo, hi = src.getextrema()
        if mode == "F" and lo >= 0 and hi <= 1:
            scale, offset = 255.0, 0.0
        elif lo >= 0 and hi <= 255:
            scale, offset = 1.0, 0.0
        elif lo >= 0 and hi <= 65535:
            scale, offset = 255 / 65535, 0.0
        elif hi > lo:
            scale, offset = 255 / (hi - lo), -lo * 255 / (hi - lo)
        else:
            scale, offset = 0.0, float(min(max(lo, 0), 255))
    if scale == 1.0 and offset == 0.0 and mode == "I":
        return src.convert("L")
    # point() on I/F computes v * scale + offset and truncates: + 0.5 rounds to nearest.
    return src.point(lambda v: v * scale + offset + 0.5).convert("L")


def to_8bit(img: Image.Image) -> Image.Image:
    """Any mode to one of "1", "L", "LA", "RGB", "RGBA" (palette → RGB(A), CMYK → RGB, deep → L)."""
    mode = img.mode
    if mode in BASIC_MODES:
        return img
    if mode == "P":
        return img.convert("RGBA" if has_alpha(img) else "RGB")
    if mode in ("PA", "RGBa"):
        return img.convert("RGBA")
    if mode == "La":
        return img.convert("LA")
    if mode.startswith("I") or mode == "F":
        return deep_to_l(img)
    try:
        return img.convert("RGBA" if has_alpha(img) else "RGB")
    except ValueError as exc:
        raise InvalidInput(f"unsupported image mode {mode}: {exc}") from exc


def resamplable(img: Image.Image) -> Image.Image:
    """A mode resampling (resize, rotate by any angle) handles well; 16-bit becomes "I" (keeps precision)."""
    if img.mode in RESAMPLE_MODES:
        return img
    if img.mode.startswith("I;16"):
        return img.convert("I")
    img = to_8bit(img)
    return img.convert("L") if img.mode == "1" else img


def split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """(color part in "L" or "RGB", alpha band or None)."""
    img = to_8bit(img)
    if img.mode == "1":
        return img.convert("L"), None
    if img.mode in ("LA", "RGBA"):
        return img.convert(img.mode[:-1]), img.getchannel("A")
    return img, None


def with_alpha(color: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """``color`` with ``alpha`` put back as its alpha band (``color`` itself when ``alpha`` is None)."""
    if alpha is not None:
        color = color.copy() if color.mode in ("L", "RGB") else color.convert("RGB")
        color.putalpha(alpha)
    return color


def on_color(img: Image.Image, func: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Apply ``func`` to the color channels only and keep the alpha channel as it was."""
    color, alpha = split_alpha(img)
    return with_alpha(func(color), alpha)


def flatten(img: Image.Image) -> Image.Image:
    """To "L" or "RGB", compositing any alpha over white (for JPEG)."""
    img = to_8bit(img)
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("LA", "RGBA"):
        color, alpha = split_alpha(img)
        base = Image.new(color.mode, img.size, "white")
        base.paste(color, mask=alpha)
        return base
    return img
