"""The built-in image operations (14 of them, with aliases), registered into
:data:`labkit.jobs.image_ops.OPS` on import.

Each op is a function ``(img, **params) -> new image`` on Pillow images; parameters arrive validated
(:meth:`~labkit.jobs.image_ops.Op.validate`). Geometry ops declare the size they produce, so that a
pipeline can be checked against pixel limits, and a JPEG decoded smaller, before any pixel is touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageChops, ImageFilter, ImageOps

from labkit.errors import InvalidInput, TooLarge
from labkit.jobs.image_modes import deep_to_l, on_color, resamplable, to_8bit
from labkit.jobs.image_ops import MAX_SIDE, Param, Size, megapixels, register, scalar

_MAX_RESULT_PIXELS = MAX_SIDE * MAX_SIDE
"""No single op may produce more pixels than the largest explicit resize (10000x10000)."""

_SEPIA = (0.393, 0.769, 0.189, 0, 0.349, 0.686, 0.168, 0, 0.272, 0.534, 0.131, 0)


# ----------------------------------------------------------------------------------------------------
# Shorthands for parse_op_spec ("resize:256x", "crop:1,2,3,4", ...)


def _single(name: str) -> Callable[[str], dict[str, Any]]:
    return lambda text: {name: scalar(text)}


def _wxh(op: str, text: str) -> dict[str, Any]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not (parts[0].strip() or parts[1].strip()):
        raise InvalidInput(f"{op}: expected WIDTHxHEIGHT, WIDTHx or xHEIGHT (e.g. {op}:256x256), "
                           f"got {text!r}")
    out: dict[str, Any] = {}
    if parts[0].strip():
        out["width"] = scalar(parts[0])
    if parts[1].strip():
        out["height"] = scalar(parts[1])
    return out


def _resize_shorthand(text: str) -> dict[str, Any]:
    return _wxh("resize", text)


def _thumbnail_shorthand(text: str) -> dict[str, Any]:
    return _wxh("thumbnail", text) if "x" in text.lower() else {"size": scalar(text)}


def _crop_shorthand(text: str) -> dict[str, Any]:
    parts = text.split(",")
    if len(parts) != 4:
        raise InvalidInput(f"crop: expected LEFT,TOP,RIGHT,BOTTOM (e.g. crop:10,10,200,200), got {text!r}")
    return {k: scalar(v) for k, v in zip(("left", "top", "right", "bottom"), parts, strict=True)}


# ----------------------------------------------------------------------------------------------------
# Colour


@register("grayscale", "Convert to 8-bit grayscale (luminance); alpha is kept.", aliases=("greyscale",),
          commutes=True, gray_mode="L")
def _grayscale(img: Image.Image) -> Image.Image:
    img = to_8bit(img)
    if img.mode in ("L", "LA"):
        return img.copy()
    if img.mode == "1":
        return img.convert("L")
    return img.convert("LA" if img.mode == "RGBA" else "L")


def _luminance(img: Image.Image) -> Image.Image:
    """8-bit luminance as "L", alpha dropped."""
    gray = _grayscale(img)
    return gray.convert("L") if gray.mode == "LA" else gray


@register("bw", "Black and white (1-bit): Floyd-Steinberg dithering, or a plain threshold with level.",
          Param("level", "int", "luminance threshold: pixels at or above it become white (no dithering)",
                min=0, max=255),
          aliases=("threshold",), example="bw:128", shorthand=_single("level"))
def _bw(img: Image.Image, level: int | None = None) -> Image.Image:
    if level is None:
        if img.mode.startswith("I") or img.mode == "F":
            img = deep_to_l(img)
        try:
            return img.convert("1")  # the original lab's conversion
        except ValueError:
            return _luminance(img).convert("1")
    lut = [0] * level + [255] * (256 - level)
    return _luminance(img).point(lut, "1")


@register("autocontrast", "Stretch the histogram to the full range, ignoring cutoff percent at each end.",
          Param("cutoff", "number", "percent of the darkest and lightest pixels to ignore", default=0,
                min=0, max=49),
          example="autocontrast:2", shorthand=_single("cutoff"))
def _autocontrast(img: Image.Image, cutoff: float = 0) -> Image.Image:
    return on_color(img, lambda c: ImageOps.autocontrast(c, cutoff=cutoff))


@register("invert", "Invert colors (negative); alpha is kept.", commutes=True)
def _invert(img: Image.Image) -> Image.Image:
    if img.mode == "1":
        return ImageChops.invert(img)
    return on_color(img, ImageOps.invert)


@register("sepia", "Sepia tone (RGB); alpha is kept.")
def _sepia(img: Image.Image) -> Image.Image:
    return on_color(img, lambda c: c.convert("RGB").convert("RGB", _SEPIA))


# ----------------------------------------------------------------------------------------------------
# Size


def _resize_target(size: Size, width: int | None, height: int | None) -> Size:
    w, h = size
    if width is not None and height is not None:
        return width, height
    if width is not None:
        return width, max(1, round(h * width / w))
    assert height is not None
    return max(1, round(w * height / h)), height


def _resize_finish(values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    if "width" not in values and "height" not in values:
        raise InvalidInput("resize: width or height is required (a positive integer ≤ 10000)")
    return values


@register("resize", "Resize to width and/or height; the aspect ratio is kept unless both are given.",
          Param("width", "int", "target width in pixels", min=1, max=MAX_SIDE),
          Param("height", "int", "target height in pixels", min=1, max=MAX_SIDE),
          example="resize:256x256", finish=_resize_finish, shorthand=_resize_shorthand, resamples=True,
          size=lambda size, v: _resize_target(size, v.get("width"), v.get("height")))
def _resize(img: Image.Image, width: int | None = None, height: int | None = None) -> Image.Image:
    w, h = _resize_target(img.size, width, height)
    if w * h > _MAX_RESULT_PIXELS:
        raise TooLarge(f"resize: the result would be {w}x{h} = {megapixels(w * h)} megapixels, "
                       f"over the limit of {megapixels(_MAX_RESULT_PIXELS)} megapixels")
    return resamplable(img).resize((w, h), Image.Resampling.LANCZOS)


def _thumbnail_finish(values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    if "width" in values or "height" in values:
        if "size" in given:
            raise InvalidInput("thumbnail: give either size or width/height, not both")
        values.pop("size", None)
    return values


def _thumbnail_size(size: Size, values: dict[str, Any]) -> Size:
    """The size Pillow's ``Image.thumbnail`` gives an image of ``size``: it fits the box, keeps the aspect
    ratio as closely as whole pixels allow, and never enlarges."""
    w, h = size
    width, height = values.get("width"), values.get("height")
    if width is None and height is None:
        x = y = values.get("size") or 256
    else:
        x, y = width or w, height or h
    if x >= w and y >= h:
        return size
    aspect = w / h
    if x / y >= aspect:
        x = max(min(math.floor(y * aspect), math.ceil(y * aspect), key=lambda n: abs(aspect - n / y)), 1)
    else:
        y = max(min(math.floor(x / aspect), math.ceil(x / aspect),
                    key=lambda n: 0 if n == 0 else abs(aspect - x / n)), 1)
    return x, y


@register("thumbnail", "Shrink to fit a size x size box (or width/height); never enlarges; keeps aspect.",
          Param("size", "int", "bounding box side in pixels", default=256, min=1, max=MAX_SIDE),
          Param("width", "int", "bounding box width in pixels (instead of size)", min=1, max=MAX_SIDE),
          Param("height", "int", "bounding box height in pixels (instead of size)", min=1, max=MAX_SIDE),
          example="thumbnail:128", finish=_thumbnail_finish, shorthand=_thumbnail_shorthand,
          size=_thumbnail_size, resamples=True)
def _thumbnail(img: Image.Image, size: int | None = 256, width: int | None = None,
               height: int | None = None) -> Image.Image:
    out = resamplable(img)
    target = _thumbnail_size(out.size, {"size": size, "width": width, "height": height})
    if target == out.size:
        return out.copy() if out is img else out
    # What Image.thumbnail does on a loaded image: reduce by whole factors, then Lanczos.
    return out.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _predicted_rotation(size: Size, degrees: float, expand: bool) -> Size:
    w, h = size
    angle = degrees % 360
    if not expand:
        return size
    if angle % 90 == 0:
        return (h, w) if angle in (90, 270) else (w, h)
    rad = math.radians(angle)
    c, s = abs(math.cos(rad)), abs(math.sin(rad))
    return math.ceil(w * c + h * s) + 1, math.ceil(w * s + h * c) + 1


@register("rotate", "Rotate counter-clockwise by degrees; expand grows the canvas to fit the whole image.",
          Param("degrees", "number", "angle, counter-clockwise", required=True),
          Param("expand", "bool", "enlarge the canvas so nothing is cut off", default=True),
          example="rotate:90", shorthand=_single("degrees"),
          size=lambda size, v: _predicted_rotation(size, v["degrees"], v["expand"]))
def _rotate(img: Image.Image, degrees: float, expand: bool = True) -> Image.Image:
    angle = degrees % 360
    if angle % 90 == 0:  # exact: a transpose, works for every mode
        return img.rotate(angle, expand=expand)
    return resamplable(img).rotate(angle, resample=Image.Resampling.BICUBIC, expand=expand)


@register("flip", "Flip top to bottom.", commutes=True)
def _flip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


@register("mirror", "Mirror left to right.", commutes=True)
def _mirror(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def _crop_finish(values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    if values["right"] <= values["left"]:
        raise InvalidInput(f"crop: right must be greater than left (got left={values['left']}, "
                           f"right={values['right']})")
    if values["bottom"] <= values["top"]:
        raise InvalidInput(f"crop: bottom must be greater than top (got top={values['top']}, "
                           f"bottom={values['bottom']})")
    return values


@register("crop", "Cut out the box left, top, right, bottom (pixels; right and bottom exclusive).",
          Param("left", "int", "left edge", min=0, required=True),
          Param("top", "int", "top edge", min=0, required=True),
          Param("right", "int", "right edge (exclusive), greater than left", min=0, required=True),
          Param("bottom", "int", "bottom edge (exclusive), greater than top", min=0, required=True),
          example="crop:10,10,200,200", finish=_crop_finish, shorthand=_crop_shorthand)
def _crop(img: Image.Image, left: int, top: int, right: int, bottom: int) -> Image.Image:
    if right > img.width or bottom > img.height:
        raise InvalidInput(f"crop: box ({left}, {top}, {right}, {bottom}) is outside the "
                           f"{img.width}x{img.height} image")
    return img.crop((left, top, right, bottom))


# ----------------------------------------------------------------------------------------------------
# Neighbourhood filters


@register("blur", "Gaussian blur.",
          Param("radius", "number", "blur radius in pixels", default=2, min=0, max=100, exclusive_min=True),
          example="blur:2.5", shorthand=_single("radius"))
def _blur(img: Image.Image, radius: float = 2) -> Image.Image:
    img = to_8bit(img)
    if img.mode == "1":
        img = img.convert("L")
    if img.mode in ("LA", "RGBA"):  # blur premultiplied, so transparent pixels do not bleed their color
        premultiplied = img.convert(img.mode[:-1] + "a")
        return premultiplied.filter(ImageFilter.GaussianBlur(radius)).convert(img.mode)
    return img.filter(ImageFilter.GaussianBlur(radius))


@register("sharpen", "Sharpen (3x3 kernel).")
def _sharpen(img: Image.Image) -> Image.Image:
    return on_color(img, lambda c: c.filter(ImageFilter.SHARPEN))


@register("edges", "Find edges (3x3 kernel); alpha is kept.")
def _edges(img: Image.Image) -> Image.Image:
    return on_color(img, lambda c: c.filter(ImageFilter.FIND_EDGES))
