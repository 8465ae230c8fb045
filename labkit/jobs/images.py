"""Image operations for image jobs: a registry of operations and an in-memory pipeline.

Pure module: it takes bytes and returns bytes, never touches files, the network or AWS.

* ``OPS`` maps an operation name (and aliases such as ``threshold``) to an :class:`Op`.
  ``Op.validate(params)`` normalizes parameters and raises :class:`~labkit.errors.InvalidInput` naming the
  op and the parameter; ``Op.apply(img, **params)`` returns a new Pillow image.
* ``validate_ops(ops)`` checks the message protocol's list of ``{"op": name, **params}`` dicts.
* ``parse_op_spec("resize:256x256")`` turns a command-line spec into such a dict.
* ``process(data, ops, format)`` decodes (with size limits), applies the ops and encodes an
  :class:`ImageOutput`.
* ``legacy_bw(data, name)`` is the original lab's black-and-white conversion.
* ``describe_ops()`` lists the ops and their parameters for user interfaces.
"""

from __future__ import annotations

import io
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageChops, ImageFilter, ImageOps

from labkit.errors import InvalidInput, JobError, TooLarge

__all__ = [
    "MAX_OPS",
    "MAX_SIDE",
    "OPS",
    "ImageOutput",
    "Op",
    "Param",
    "describe_ops",
    "format_for_key",
    "legacy_bw",
    "parse_op_spec",
    "process",
    "validate_ops",
]

MAX_OPS = 20
"""At most this many operations in one job."""

MAX_SIDE = 10_000
"""Largest width or height a resize/thumbnail parameter may ask for."""

_MAX_RESULT_PIXELS = MAX_SIDE * MAX_SIDE
"""No single op may produce more pixels than the largest explicit resize (10000x10000)."""

# Formats Pillow may open. Deliberately short: no EPS (Ghostscript), no guess-by-content formats like TGA.
_READ_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "PPM")

_FORMAT_NAMES = {"png": "png", "jpeg": "jpeg", "jpg": "jpeg", "webp": "webp", "gif": "gif", "bmp": "bmp",
                 "tiff": "tiff", "tif": "tiff"}
_PIL_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "gif": "GIF", "bmp": "BMP", "tiff": "TIFF"}
_FROM_PIL_FORMAT = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "GIF": "gif", "BMP": "bmp",
                    "TIFF": "tiff"}
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "gif": "image/gif",
                  "bmp": "image/bmp", "tiff": "image/tiff"}
_EXTENSIONS = {"jpg": "jpeg", "jpeg": "jpeg", "jpe": "jpeg", "png": "png", "webp": "webp", "gif": "gif",
               "bmp": "bmp", "tif": "tiff", "tiff": "tiff"}
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
_DEFAULT_QUALITY = {"jpeg": 85, "webp": 80}
_MAX_QUALITY = {"jpeg": 95}

_BASIC_MODES = ("1", "L", "LA", "RGB", "RGBA")
_RESAMPLE_MODES = ("L", "LA", "RGB", "RGBA", "I", "F")
_SEPIA = (0.393, 0.769, 0.189, 0, 0.349, 0.686, 0.168, 0, 0.272, 0.534, 0.131, 0)
_ICC_MATCHES = {(b"RGB ", "RGB"), (b"RGB ", "RGBA"), (b"GRAY", "L"), (b"GRAY", "LA")}
_PIXELS_IN_MESSAGE = re.compile(r"\((\d+) pixels\)")


# ----------------------------------------------------------------------------------------------------
# Parameters and the registry


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Param:
    """One parameter of an op: ``type`` is "int", "number" or "bool"; ``min``/``max`` are inclusive
    (``exclusive_min`` makes ``min`` exclusive)."""

    name: str
    type: str
    doc: str
    default: Any = None
    min: float | None = None
    max: float | None = None
    exclusive_min: bool = False
    required: bool = False

    def expected(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.type == "bool":
            return "true or false"
        noun = "integer" if self.type == "int" else "number"
        article = "an" if noun == "integer" else "a"
        lo, hi = self.min, self.max
        if self.type == "int" and lo == 1 and not self.exclusive_min:
            return f"a positive integer ≤ {_num(hi)}" if hi is not None else "a positive integer"
        if lo is not None and hi is not None:
            if self.exclusive_min:
                return f"{article} {noun} > {_num(lo)} and ≤ {_num(hi)}"
            return f"{article} {noun} from {_num(lo)} to {_num(hi)}"
        if lo is not None:
            if self.type == "int" and lo == 0 and not self.exclusive_min:
                return "a non-negative integer"
            return f"{article} {noun} {'>' if self.exclusive_min else '≥'} {_num(lo)}"
        if hi is not None:
            return f"{article} {noun} ≤ {_num(hi)}"
        return f"{article} {noun}"

    def check(self, op: str, value: Any) -> Any:
        """Return the normalized value or raise ``InvalidInput`` naming ``op`` and the parameter."""
        bad = InvalidInput(f"{op}: {self.name} must be {self.expected()}, got {_show(value)}")
        if self.type == "bool":
            if not isinstance(value, bool):
                raise bad
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if isinstance(value, float):
            if not math.isfinite(value):
                raise bad
            if self.type == "int":
                if not value.is_integer():
                    raise bad
                value = int(value)
        if self.min is not None and (value <= self.min if self.exclusive_min else value < self.min):
            raise bad
        if self.max is not None and value > self.max:
            raise bad
        return value

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of the parameter."""
        return {"name": self.name, "type": self.type, "doc": self.doc, "default": self.default,
                "required": self.required, "min": self.min, "max": self.max,
                "exclusive_min": self.exclusive_min}


@dataclass(frozen=True)
class Op:
    """A registered image operation."""

    name: str
    doc: str
    params: tuple[Param, ...]
    func: Callable[..., Image.Image] = field(repr=False)
    aliases: tuple[str, ...] = ()
    example: str = ""
    # check(values, given) -> values: cross-parameter checks after each parameter was checked.
    finish: Callable[[dict[str, Any], set[str]], dict[str, Any]] | None = field(default=None, repr=False)
    # size(current_size, values) -> predicted output size, for ops that can make an image larger.
    size: Callable[[tuple[int, int], dict[str, Any]], tuple[int, int]] | None = field(
        default=None, repr=False)
    # shorthand(text) -> raw params, for "name:text" specs without "key=value".
    shorthand: Callable[[str], dict[str, Any]] | None = field(default=None, repr=False)

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Check and normalize ``params`` (without the "op" key); a value of None counts as absent.

        Returns a new dict with defaults filled in; raises ``InvalidInput`` naming the op and the parameter.
        """
        if not isinstance(params, dict):
            raise InvalidInput(f"{self.name}: parameters must be an object, got {type(params).__name__}")
        known = {p.name: p for p in self.params}
        for key in params:
            if key not in known:
                hint = f"known: {', '.join(known)}" if known else f"{self.name} takes no parameters"
                raise InvalidInput(f"{self.name}: unknown parameter {_show(key)} ({hint})")
        given = {k for k, v in params.items() if v is not None}
        values: dict[str, Any] = {}
        for p in self.params:
            if p.name in given:
                values[p.name] = p.check(self.name, params[p.name])
            elif p.required:
                raise InvalidInput(f"{self.name}: {p.name} is required ({p.expected()})")
            elif p.default is not None:
                values[p.name] = p.default
        if self.finish is not None:
            values = self.finish(values, given)
        return values

    def apply(self, img: Image.Image, **params: Any) -> Image.Image:
        """Validate ``params`` and return a new image with the op applied."""
        return self.func(img, **self.validate(params))

    def output_size(self, size: tuple[int, int], params: dict[str, Any]) -> tuple[int, int]:
        """Predicted size of the result (an upper bound for ops that may enlarge; ``size`` otherwise)."""
        return self.size(size, self.validate(params)) if self.size is not None else size

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description of the op, for building user interfaces."""
        return {"name": self.name, "doc": self.doc, "aliases": list(self.aliases), "example": self.example,
                "params": [p.describe() for p in self.params]}


OPS: dict[str, Op] = {}
"""Every op by name and by alias (``OPS["threshold"] is OPS["bw"]``)."""


def _register(name: str, doc: str, *params: Param, aliases: tuple[str, ...] = (), example: str = "",
              finish: Callable[[dict[str, Any], set[str]], dict[str, Any]] | None = None,
              size: Callable[[tuple[int, int], dict[str, Any]], tuple[int, int]] | None = None,
              shorthand: Callable[[str], dict[str, Any]] | None = None) -> Callable:
    def decorator(func: Callable[..., Image.Image]) -> Callable[..., Image.Image]:
        op = Op(name, doc, tuple(params), func, aliases, example or name, finish, size, shorthand)
        for key in (name, *aliases):
            OPS[key] = op
        return func

    return decorator


def _known_ops() -> str:
    return ", ".join(sorted(OPS))


def _lookup(name: Any, where: str = "") -> Op:
    op = OPS.get(name.strip().lower()) if isinstance(name, str) else None
    if op is None:
        raise InvalidInput(f"{where}unknown op {_show(name)} (known ops: {_known_ops()})")
    return op


# ----------------------------------------------------------------------------------------------------
# Mode helpers


def _has_alpha(img: Image.Image) -> bool:
    flag = getattr(img, "has_transparency_data", None)  # Pillow >= 10.1
    if flag is not None:
        return bool(flag)
    return img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or "transparency" in img.info


def _deep_to_l(img: Image.Image) -> Image.Image:
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


def _to_8bit(img: Image.Image) -> Image.Image:
    """Any mode to one of "1", "L", "LA", "RGB", "RGBA" (palette → RGB(A), CMYK → RGB, deep → L)."""
    mode = img.mode
    if mode in _BASIC_MODES:
        return img
    if mode == "P":
        return img.convert("RGBA" if _has_alpha(img) else "RGB")
    if mode in ("PA", "RGBa"):
        return img.convert("RGBA")
    if mode == "La":
        return img.convert("LA")
    if mode.startswith("I") or mode == "F":
        return _deep_to_l(img)
    try:
        return img.convert("RGBA" if _has_alpha(img) else "RGB")
    except ValueError as exc:
        raise InvalidInput(f"unsupported image mode {mode}: {exc}") from exc


def _resamplable(img: Image.Image) -> Image.Image:
    """A mode resampling (resize, rotate by any angle) handles well; 16-bit becomes "I" (keeps precision)."""
    if img.mode in _RESAMPLE_MODES:
        return img
    if img.mode.startswith("I;16"):
        return img.convert("I")
    img = _to_8bit(img)
    return img.convert("L") if img.mode == "1" else img


def _split_alpha(img: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """(color part in "L" or "RGB", alpha band or None)."""
    img = _to_8bit(img)
    if img.mode == "1":
        return img.convert("L"), None
    if img.mode in ("LA", "RGBA"):
        return img.convert(img.mode[:-1]), img.getchannel("A")
    return img, None


def _with_alpha(color: Image.Image, alpha: Image.Image | None) -> Image.Image:
    if alpha is not None:
        color = color.copy() if color.mode in ("L", "RGB") else color.convert("RGB")
        color.putalpha(alpha)
    return color


def _on_color(img: Image.Image, func: Callable[[Image.Image], Image.Image]) -> Image.Image:
    """Apply ``func`` to the color channels only and keep the alpha channel as it was."""
    color, alpha = _split_alpha(img)
    return _with_alpha(func(color), alpha)


def _flatten(img: Image.Image) -> Image.Image:
    """To "L" or "RGB", compositing any alpha over white (for JPEG)."""
    img = _to_8bit(img)
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("LA", "RGBA"):
        color, alpha = _split_alpha(img)
        base = Image.new(color.mode, img.size, "white")
        base.paste(color, mask=alpha)
        return base
    return img


def _luminance(img: Image.Image) -> Image.Image:
    """8-bit luminance as "L", alpha dropped."""
    gray = _grayscale(img)
    return gray.convert("L") if gray.mode == "LA" else gray


def _predicted_rotation(size: tuple[int, int], degrees: float, expand: bool) -> tuple[int, int]:
    w, h = size
    angle = degrees % 360
    if not expand:
        return size
    if angle % 90 == 0:
        return (h, w) if angle in (90, 270) else (w, h)
    rad = math.radians(angle)
    c, s = abs(math.cos(rad)), abs(math.sin(rad))
    return math.ceil(w * c + h * s) + 1, math.ceil(w * s + h * c) + 1


# ----------------------------------------------------------------------------------------------------
# Shorthand parsing for parse_op_spec


def _scalar(text: str) -> Any:
    """"12" → 12, "2.5" → 2.5, "true"/"false" → bool, anything else stays a string."""
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _single(name: str) -> Callable[[str], dict[str, Any]]:
    return lambda text: {name: _scalar(text)}


def _wxh(op: str, text: str) -> dict[str, Any]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not (parts[0].strip() or parts[1].strip()):
        raise InvalidInput(f"{op}: expected WIDTHxHEIGHT, WIDTHx or xHEIGHT (e.g. {op}:256x256), "
                           f"got {text!r}")
    out: dict[str, Any] = {}
    if parts[0].strip():
        out["width"] = _scalar(parts[0])
    if parts[1].strip():
        out["height"] = _scalar(parts[1])
    return out


def _resize_shorthand(text: str) -> dict[str, Any]:
    return _wxh("resize", text)


def _thumbnail_shorthand(text: str) -> dict[str, Any]:
    return _wxh("thumbnail", text) if "x" in text.lower() else {"size": _scalar(text)}


def _crop_shorthand(text: str) -> dict[str, Any]:
    parts = text.split(",")
    if len(parts) != 4:
        raise InvalidInput(f"crop: expected LEFT,TOP,RIGHT,BOTTOM (e.g. crop:10,10,200,200), got {text!r}")
    return {k: _scalar(v) for k, v in zip(("left", "top", "right", "bottom"), parts, strict=True)}


# ----------------------------------------------------------------------------------------------------
# The operations


@_register("grayscale", "Convert to 8-bit grayscale (luminance); alpha is kept.", aliases=("greyscale",))
def _grayscale(img: Image.Image) -> Image.Image:
    img = _to_8bit(img)
    if img.mode in ("L", "LA"):
        return img.copy()
    if img.mode == "1":
        return img.convert("L")
    return img.convert("LA" if img.mode == "RGBA" else "L")


@_register("bw", "Black and white (1-bit): Floyd-Steinberg dithering, or a plain threshold with level.",
           Param("level", "int", "luminance threshold: pixels at or above it become white (no dithering)",
                 min=0, max=255),
           aliases=("threshold",), example="bw:128", shorthand=_single("level"))
def _bw(img: Image.Image, level: int | None = None) -> Image.Image:
    if level is None:
        if img.mode.startswith("I") or img.mode == "F":
            img = _deep_to_l(img)
        try:
            return img.convert("1")  # the original lab's conversion
        except ValueError:
            return _luminance(img).convert("1")
    lut = [0] * level + [255] * (256 - level)
    return _luminance(img).point(lut, "1")


def _resize_target(size: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
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


@_register("resize", "Resize to width and/or height; the aspect ratio is kept unless both are given.",
           Param("width", "int", "target width in pixels", min=1, max=MAX_SIDE),
           Param("height", "int", "target height in pixels", min=1, max=MAX_SIDE),
           example="resize:256x256", finish=_resize_finish,
           size=lambda size, v: _resize_target(size, v.get("width"), v.get("height")),
           shorthand=_resize_shorthand)
def _resize(img: Image.Image, width: int | None = None, height: int | None = None) -> Image.Image:
    w, h = _resize_target(img.size, width, height)
    if w * h > _MAX_RESULT_PIXELS:
        raise TooLarge(f"resize: the result would be {w}x{h} = {_mp(w * h)} megapixels, "
                       f"over the limit of {_mp(_MAX_RESULT_PIXELS)} megapixels")
    return _resamplable(img).resize((w, h), Image.Resampling.LANCZOS)


def _thumbnail_finish(values: dict[str, Any], given: set[str]) -> dict[str, Any]:
    if "width" in values or "height" in values:
        if "size" in given:
            raise InvalidInput("thumbnail: give either size or width/height, not both")
        values.pop("size", None)
    return values


@_register("thumbnail", "Shrink to fit a size x size box (or width/height); never enlarges; keeps aspect.",
           Param("size", "int", "bounding box side in pixels", default=256, min=1, max=MAX_SIDE),
           Param("width", "int", "bounding box width in pixels (instead of size)", min=1, max=MAX_SIDE),
           Param("height", "int", "bounding box height in pixels (instead of size)", min=1, max=MAX_SIDE),
           example="thumbnail:128", finish=_thumbnail_finish, shorthand=_thumbnail_shorthand)
def _thumbnail(img: Image.Image, size: int | None = 256, width: int | None = None,
               height: int | None = None) -> Image.Image:
    if width is None and height is None:
        box = (size or 256, size or 256)
    else:
        box = (width or img.width, height or img.height)
    out = _resamplable(img)
    out = out.copy() if out is img else out
    out.thumbnail(box, Image.Resampling.LANCZOS)
    return out


@_register("rotate", "Rotate counter-clockwise by degrees; expand grows the canvas to fit the whole image.",
           Param("degrees", "number", "angle, counter-clockwise", required=True),
           Param("expand", "bool", "enlarge the canvas so nothing is cut off", default=True),
           example="rotate:90", shorthand=_single("degrees"),
           size=lambda size, v: _predicted_rotation(size, v["degrees"], v["expand"]))
def _rotate(img: Image.Image, degrees: float, expand: bool = True) -> Image.Image:
    angle = degrees % 360
    if angle % 90 == 0:  # exact: a transpose, works for every mode
        return img.rotate(angle, expand=expand)
    return _resamplable(img).rotate(angle, resample=Image.Resampling.BICUBIC, expand=expand)


@_register("flip", "Flip top to bottom.")
def _flip(img: Image.Image) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


@_register("mirror", "Mirror left to right.")
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


@_register("crop", "Cut out the box left, top, right, bottom (pixels; right and bottom exclusive).",
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


@_register("blur", "Gaussian blur.",
           Param("radius", "number", "blur radius in pixels", default=2, min=0, max=100, exclusive_min=True),
           example="blur:2.5", shorthand=_single("radius"))
def _blur(img: Image.Image, radius: float = 2) -> Image.Image:
    img = _to_8bit(img)
    if img.mode == "1":
        img = img.convert("L")
    if img.mode in ("LA", "RGBA"):  # blur premultiplied, so transparent pixels do not bleed their color
        premultiplied = img.convert(img.mode[:-1] + "a")
        return premultiplied.filter(ImageFilter.GaussianBlur(radius)).convert(img.mode)
    return img.filter(ImageFilter.GaussianBlur(radius))


@_register("sharpen", "Sharpen (3x3 kernel).")
def _sharpen(img: Image.Image) -> Image.Image:
    return _on_color(img, lambda c: c.filter(ImageFilter.SHARPEN))


@_register("edges", "Find edges (3x3 kernel); alpha is kept.")
def _edges(img: Image.Image) -> Image.Image:
    return _on_color(img, lambda c: c.filter(ImageFilter.FIND_EDGES))


@_register("autocontrast", "Stretch the histogram to the full range, ignoring cutoff percent at each end.",
           Param("cutoff", "number", "percent of the darkest and lightest pixels to ignore", default=0,
                 min=0, max=49),
           example="autocontrast:2", shorthand=_single("cutoff"))
def _autocontrast(img: Image.Image, cutoff: float = 0) -> Image.Image:
    return _on_color(img, lambda c: ImageOps.autocontrast(c, cutoff=cutoff))


@_register("invert", "Invert colors (negative); alpha is kept.")
def _invert(img: Image.Image) -> Image.Image:
    if img.mode == "1":
        return ImageChops.invert(img)
    return _on_color(img, ImageOps.invert)


@_register("sepia", "Sepia tone (RGB); alpha is kept.")
def _sepia(img: Image.Image) -> Image.Image:
    return _on_color(img, lambda c: c.convert("RGB").convert("RGB", _SEPIA))


# ----------------------------------------------------------------------------------------------------
# Public functions


def describe_ops() -> list[dict[str, Any]]:
    """Every op (aliases listed with their op, not repeated): name, doc, aliases, example and parameters,
    each with name, type ("int" | "number" | "bool"), doc, default, required, min, max and exclusive_min."""
    seen: dict[str, Op] = {}
    for op in OPS.values():
        seen.setdefault(op.name, op)
    return [op.describe() for op in seen.values()]


def validate_ops(ops: list) -> list[dict[str, Any]]:
    """Check a list of ``{"op": name, **params}`` dicts and return normalized copies (canonical op names,
    defaults filled in). An empty list is allowed: it means "just re-encode"."""
    if not isinstance(ops, list):
        raise InvalidInput(f"ops must be a list of operations, got {type(ops).__name__}")
    if len(ops) > MAX_OPS:
        raise InvalidInput(f"too many ops: {len(ops)} (at most {MAX_OPS})")
    out = []
    for i, item in enumerate(ops):
        if not isinstance(item, dict):
            raise InvalidInput(f"ops[{i}] must be an object with an 'op' key, got {type(item).__name__}")
        if "op" not in item:
            raise InvalidInput(f"ops[{i}] has no 'op' (known ops: {_known_ops()})")
        op = _lookup(item["op"], f"ops[{i}]: ")
        params = {k: v for k, v in item.items() if k != "op"}
        out.append({"op": op.name, **op.validate(params)})
    return out


def parse_op_spec(spec: str) -> dict[str, Any]:
    """Parse a command-line op spec into ``{"op": name, **params}`` (only the parameters given, validated).

    ``"grayscale"``, ``"resize:256x256"`` / ``"resize:256x"`` / ``"resize:x128"``, ``"thumbnail:128"``,
    ``"rotate:90"``, ``"blur:2.5"``, ``"bw:128"``, ``"crop:10,10,200,200"``, ``"autocontrast:2"``, or generic
    ``"op:key=value,key=value"`` (values parsed as int, float, true/false, else string).
    """
    if not isinstance(spec, str):
        raise InvalidInput(f"an op spec must be a string, got {type(spec).__name__}")
    name, _, text = spec.strip().partition(":")
    if not name.strip():
        raise InvalidInput(f"empty op spec {spec!r} (known ops: {_known_ops()})")
    op = _lookup(name)
    text = text.strip()
    raw: dict[str, Any] = {}
    if "=" in text:
        for item in text.split(","):
            if not item.strip():
                continue
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or not key:
                raise InvalidInput(f"{op.name}: expected key=value, got {item.strip()!r}")
            if key in raw:
                raise InvalidInput(f"{op.name}: parameter {key!r} given twice")
            raw[key] = _scalar(value)
    elif text:
        if op.shorthand is None:
            if not op.params:
                raise InvalidInput(f"{op.name}: takes no parameters, got {text!r}")
            names = ",".join(f"{p.name}=..." for p in op.params)
            raise InvalidInput(f"{op.name}: expected {op.name}:{names}, got {text!r}")
        raw = op.shorthand(text)
    values = op.validate(raw)
    return {"op": op.name, **{k: values[k] for k in raw if k in values}}


def format_for_key(key: str) -> str | None:
    """Output format for a file name or S3 key, from its extension ("photo.JPG" → "jpeg"); None if unknown."""
    base = key.rsplit("/", 1)[-1]
    if "." not in base:
        return None
    return _EXTENSIONS.get(base.rsplit(".", 1)[1].lower())


@dataclass(frozen=True)
class ImageOutput:
    """An encoded result: ``format`` is one of png, jpeg, webp, gif, bmp, tiff; ``mode`` the stored mode."""

    data: bytes = field(repr=False)
    width: int
    height: int
    format: str
    content_type: str
    mode: str


def _mp(pixels: int) -> str:
    value = pixels / 1_000_000
    return str(round(value)) if value >= 100 else f"{value:.3g}"


def _human(size: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.3g} {unit}"
    return f"{size} bytes"


def _normalize_format(format: Any) -> str:
    if not isinstance(format, str):
        raise InvalidInput(f"output format must be a string, got {type(format).__name__}")
    name = _FORMAT_NAMES.get(format.strip().lower().lstrip("."))
    if name is None:
        raise InvalidInput(f"unknown output format {format!r} (known: {', '.join(sorted(_PIL_FORMAT))}; "
                           "jpg and tif are accepted too)")
    return name


def _check_quality(quality: Any, fmt: str | None) -> None:
    if quality is None:
        return
    top = _MAX_QUALITY.get(fmt or "", 100)
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= top:
        where = f" for {fmt}" if fmt in _MAX_QUALITY else ""
        raise InvalidInput(f"quality must be an integer from 1 to {top}{where}, got {_show(quality)}")


def _readable_error(exc: BaseException) -> str:
    if isinstance(exc, Image.UnidentifiedImageError):
        return f"not a recognised image format (accepted: {', '.join(_READ_FORMATS)})"
    text = str(exc).strip()
    return text if text else type(exc).__name__


def _bomb_message(exc: BaseException, max_pixels: int, where: str) -> str:
    match = _PIXELS_IN_MESSAGE.search(str(exc))
    pixels = int(match.group(1)) if match else None
    if pixels is not None and pixels > max_pixels:
        return (f"image is {_mp(pixels)} megapixels, over the limit of {_mp(max_pixels)} megapixels "
                f"(possible decompression bomb){where}")
    return f"image is too large to decode safely: {exc}{where}"


def _decode(data: bytes, max_pixels: int, where: str) -> tuple[Image.Image, str | None, bytes | None]:
    """Open, check the size before decoding, decode the first frame and apply EXIF orientation."""
    if not data:
        raise InvalidInput(f"not a readable image: empty input (0 bytes){where}")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=_READ_FORMATS) as im:
                w, h = im.size
                if w * h > max_pixels:
                    raise TooLarge(f"image is {w}x{h} = {_mp(w * h)} megapixels, over the limit of "
                                   f"{_mp(max_pixels)} megapixels{where}")
                if im.format == "PNG":
                    # load() accepts a PNG cut after its pixel data; verify() walks every chunk to IEND.
                    with Image.open(io.BytesIO(data), formats=["PNG"]) as check:
                        check.verify()
                im.load()
                source_format = im.format
                icc = im.info.get("icc_profile")
                try:
                    img = ImageOps.exif_transpose(im)
                except MemoryError:
                    raise
                except Exception:  # unreadable EXIF: ignore the orientation rather than fail the job
                    img = im.copy()
        except JobError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise TooLarge(_bomb_message(exc, max_pixels, where)) from exc
        except MemoryError:
            raise
        except Exception as exc:  # Pillow raises many types on corrupt data (OSError, SyntaxError, ...)
            raise InvalidInput(f"not a readable image: {_readable_error(exc)}{where}") from exc
    return img, source_format, icc


def _for_format(img: Image.Image, fmt: str) -> Image.Image:
    """Convert ``img`` to a mode ``fmt`` can store."""
    allowed = _FORMAT_MODES[fmt]
    if img.mode in allowed:
        return img
    if fmt == "jpeg":
        return _flatten(img)
    if img.mode.startswith("I") and fmt in ("png", "tiff"):
        src = img if img.mode == "I" else img.convert("I")
        lo, hi = src.getextrema()
        if lo >= 0 and hi <= 65535:
            return src.convert("I;16")  # keep 16 bits
    img = _to_8bit(img)
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
    elif fmt in _DEFAULT_QUALITY:
        options["quality"] = quality if quality is not None else _DEFAULT_QUALITY[fmt]
    if icc and fmt in ("png", "jpeg", "webp", "tiff"):
        space = icc[16:20]
        if (space, out.mode) in _ICC_MATCHES:
            options["icc_profile"] = icc
    buf = io.BytesIO()
    try:
        out.save(buf, format=_PIL_FORMAT[fmt], **options)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot encode a {out.width}x{out.height} {out.mode} image as {fmt}: "
                           f"{exc}") from exc
    return ImageOutput(buf.getvalue(), out.width, out.height, fmt, _CONTENT_TYPES[fmt], out.mode)


def process(data: bytes, ops: list[dict], format: str | None = "png", *, quality: int | None = None,
            max_pixels: int = 40_000_000, max_bytes: int = 50 * 1024 * 1024,
            source_name: str | None = None) -> ImageOutput:
    """Decode ``data``, apply ``ops`` in order and encode the result in ``format``; all in memory.

    * ``ops``: the message protocol's ``[{"op": name, **params}, ...]``, checked first (``validate_ops``);
      ``[]`` just re-encodes.
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
    * ``source_name`` (e.g. the S3 key) only appears in error messages.
    """
    steps = validate_ops(ops)
    fmt = None if format is None else _normalize_format(format)
    _check_quality(quality, fmt)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidInput(f"image data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    where = f" ({source_name})" if source_name else ""
    if len(data) > max_bytes:
        raise TooLarge(f"image data is {len(data)} bytes ({_human(len(data))}), over the limit of "
                       f"{max_bytes} bytes ({_human(max_bytes)}){where}")
    img, source_format, icc = _decode(data, max_pixels, where)
    if fmt is None:
        fmt = _FROM_PIL_FORMAT.get(source_format or "", "png")
        _check_quality(quality, fmt)
    for step in steps:
        op = OPS[step["op"]]
        params = {k: v for k, v in step.items() if k != "op"}
        w, h = op.output_size(img.size, params)
        if w * h > max_pixels:
            raise TooLarge(f"{op.name}: the result would be {w}x{h} = {_mp(w * h)} megapixels, over the "
                           f"limit of {_mp(max_pixels)} megapixels{where}")
        try:
            img = op.apply(img, **params)
        except JobError:
            raise
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{op.name}: cannot process this {img.mode} image: {exc}{where}") from exc
        if img.width * img.height > max_pixels:
            raise TooLarge(f"{op.name}: the result is {img.width}x{img.height} = "
                           f"{_mp(img.width * img.height)} megapixels, over the limit of {_mp(max_pixels)} "
                           f"megapixels{where}")
    return _encode(img, fmt, quality, icc)


def legacy_bw(data: bytes, name: str, *, max_pixels: int = 40_000_000,
              max_bytes: int = 50 * 1024 * 1024) -> ImageOutput:
    """The original lab's conversion, ``Image.open(f).convert("1").save(name)``: dithered black and white,
    written in the format of ``name``'s extension (png when unknown). Unlike the original, EXIF orientation
    is honoured and the size limits of ``process`` apply."""
    return process(data, [{"op": "bw"}], format_for_key(name) or "png", max_pixels=max_pixels,
                   max_bytes=max_bytes, source_name=name)
