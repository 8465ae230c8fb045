"""Tests of labkit.jobs.images: the op registry, spec parsing, and the in-memory pipeline.

Every test image is generated here; pixels are checked, not only that something came back.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageChops, ImageDraw, ImageFile, ImageOps, ImageStat, JpegImagePlugin

from labkit.errors import InvalidInput, TooLarge
from labkit.jobs.images import (
    MAX_OPS,
    OPS,
    ImageOutput,
    Op,
    Pipeline,
    check_output,
    describe_ops,
    format_for_key,
    legacy_bw,
    parse_op_spec,
    parse_ops,
    process,
    validate_ops,
)
from tests.helpers import encode, gradient, truncated_jpeg

relaxed = settings(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------------------------------
# Test images, all generated


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def text_image() -> Image.Image:
    img = Image.new("RGB", (120, 40), "white")
    ImageDraw.Draw(img).text((4, 10), "labkit", fill="black")
    return img


def rgba_image() -> Image.Image:
    """An opaque red square in the middle of a fully transparent (black) 40x40 canvas."""
    img = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    ImageDraw.Draw(img).rectangle((10, 10, 29, 29), fill=(255, 0, 0, 255))
    img.putpixel((0, 0), (10, 20, 30, 100))
    return img


def exif_rotated_jpeg() -> bytes:
    """Stored 60x40 with a red block in its top-left corner; EXIF orientation 6 (display rotated 90° cw)."""
    img = Image.new("RGB", (60, 40), "white")
    ImageDraw.Draw(img).rectangle((0, 0, 9, 9), fill=(255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", exif=exif, quality=95)


def palette_png(transparency: int | None = None) -> bytes:
    img = gradient().quantize(16)
    assert img.mode == "P"
    return encode(img, "PNG") if transparency is None else encode(img, "PNG", transparency=transparency)


SIXTEEN_BIT_VALUES = [0, 1000, 32895, 32896, 65535]


def sixteen_bit_png() -> bytes:
    img = Image.new("I;16", (len(SIXTEEN_BIT_VALUES), 1))
    for x, v in enumerate(SIXTEEN_BIT_VALUES):
        img.putpixel((x, 0), v)
    data = encode(img, "PNG")
    assert decode(data).mode == "I;16"
    return data


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    assert getattr(decode(data), "n_frames", 1) == 3
    return data


def cmyk_jpeg() -> bytes:
    img = Image.new("CMYK", (16, 16), (255, 0, 0, 0))  # cyan
    data = encode(img, "JPEG", quality=95)
    assert decode(data).mode == "CMYK"
    return data


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_claiming(width: int, height: int) -> bytes:
    """A valid-looking PNG header claiming width x height, with pixel data for almost nothing."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0\0"))
            + png_chunk(b"IEND", b""))


def png_bomb(side: int = 20000) -> bytes:
    """A genuine, complete 1-bit PNG of side x side black pixels: tiny file, huge image."""
    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    parts = [comp.compress(row * 1000) for _ in range(side // 1000)]
    parts.append(comp.compress(row * (side % 1000)))
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", b"".join(parts))
            + png_chunk(b"IEND", b""))


def run(img: Image.Image, *ops: dict, fmt: str | None = "png") -> Image.Image:
    """Process a PNG of ``img`` and decode the result."""
    return decode(process(encode(img), list(ops), fmt).data)


def pixel(img: Image.Image, xy: tuple[int, int]) -> tuple:
    value = img.getpixel(xy)
    return value if isinstance(value, tuple) else (value,)


def close(a: tuple, b: tuple, tol: int) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


# ------------------------------------------------------------------------------------------------------
# grayscale and black-and-white


def test_grayscale_equals_pillows_own_l_conversion() -> None:
    src = gradient()
    out = run(src, {"op": "grayscale"})
    assert out.mode == "L" and out.size == src.size
    assert out.tobytes() == src.convert("L").tobytes()
    r, g, b = src.getpixel((40, 30))
    assert out.getpixel((40, 30)) == src.convert("L").getpixel((40, 30))
    assert abs(out.getpixel((40, 30)) - (r * 299 + g * 587 + b * 114) / 1000) <= 1


def test_grayscale_keeps_alpha() -> None:
    src = rgba_image()
    out = run(src, {"op": "grayscale"})
    assert out.mode == "LA"
    assert out.getchannel("A").tobytes() == src.getchannel("A").tobytes()
    assert out.getchannel("L").tobytes() == src.convert("RGB").convert("L").tobytes()


def test_grayscale_of_palette_png() -> None:
    data = palette_png()
    out = decode(process(data, [{"op": "grayscale"}]).data)
    assert out.mode == "L"
    assert out.tobytes() == decode(data).convert("L").tobytes()


def test_grayscale_of_palette_png_with_transparency_keeps_it_as_alpha() -> None:
    data = palette_png(transparency=0)
    src = decode(data)
    out = decode(process(data, [{"op": "grayscale"}]).data)
    assert out.mode == "LA"
    assert out.getchannel("A").tobytes() == src.convert("RGBA").getchannel("A").tobytes()


def test_grayscale_of_16_bit_png_scales_instead_of_clipping() -> None:
    out = decode(process(sixteen_bit_png(), [{"op": "grayscale"}]).data)
    assert out.mode == "L"
    values = [out.getpixel((x, 0)) for x in range(len(SIXTEEN_BIT_VALUES))]
    assert values == [round(v * 255 / 65535) for v in SIXTEEN_BIT_VALUES] == [0, 4, 128, 128, 255]


def test_grayscale_of_32_bit_image_with_16_bit_values_scales() -> None:
    img = Image.new("I", (3, 1))
    for x, v in enumerate((0, 25700, 65535)):
        img.putpixel((x, 0), v)
    out = OPS["grayscale"].apply(img)
    assert out.mode == "L" and [out.getpixel((x, 0)) for x in range(3)] == [0, 100, 255]
    small = Image.new("I", (2, 1))
    small.putpixel((1, 0), 200)  # 8-bit values in an "I" image are kept as they are
    assert [OPS["grayscale"].apply(small).getpixel((x, 0)) for x in range(2)] == [0, 200]
    unit = Image.new("F", (3, 1))
    for x, v in enumerate((0.0, 0.5, 1.0)):  # float images in 0..1 are scaled to 0..255
        unit.putpixel((x, 0), v)
    assert [OPS["grayscale"].apply(unit).getpixel((x, 0)) for x in range(3)] == [0, 128, 255]


def test_grayscale_of_cmyk_jpeg() -> None:
    data = cmyk_jpeg()
    out = decode(process(data, [{"op": "grayscale"}]).data)
    expected = decode(data).convert("RGB").convert("L")
    assert out.mode == "L" and out.size == (16, 16)
    assert out.tobytes() == expected.tobytes()
    assert abs(out.getpixel((8, 8)) - round(0.587 * 255 + 0.114 * 255)) <= 4  # cyan = (0, 255, 255)


def test_grayscale_of_one_bit_image() -> None:
    img = Image.new("1", (2, 1))
    img.putpixel((1, 0), 1)
    out = OPS["grayscale"].apply(img)
    assert out.mode == "L" and [out.getpixel((x, 0)) for x in range(2)] == [0, 255]


def test_bw_without_level_is_the_original_labs_dithering() -> None:
    src = gradient()
    out = run(src, {"op": "bw"})
    assert out.mode == "1"
    assert out.tobytes() == src.convert("1").tobytes()


@pytest.mark.parametrize("level", [0, 1, 100, 128, 254, 255])
def test_bw_level_thresholds_exactly(level: int) -> None:
    ramp = Image.new("L", (256, 2))
    for x in range(256):
        ramp.putpixel((x, 0), x)
        ramp.putpixel((x, 1), 255 - x)
    out = run(ramp, {"op": "bw", "level": level})
    assert out.mode == "1"
    for x in range(256):
        assert (out.getpixel((x, 0)) != 0) == (x >= level)
        assert (out.getpixel((x, 1)) != 0) == (255 - x >= level)


def test_threshold_is_an_alias_of_bw_on_luminance() -> None:
    src = text_image()
    a = run(src, {"op": "threshold", "level": 128})
    b = run(src, {"op": "bw", "level": 128})
    assert a.tobytes() == b.tobytes()
    lum = src.convert("L")
    for xy in ((0, 0), (10, 20), (60, 20), (119, 39)):
        assert (a.getpixel(xy) != 0) == (lum.getpixel(xy) >= 128)
    assert OPS["threshold"] is OPS["bw"]
    assert validate_ops([{"op": "threshold", "level": 5}]) == [{"op": "bw", "level": 5}]


# ------------------------------------------------------------------------------------------------------
# Geometry


def test_resize_one_side_keeps_aspect() -> None:
    assert run(gradient(64, 48), {"op": "resize", "width": 32}).size == (32, 24)
    assert run(gradient(64, 48), {"op": "resize", "height": 12}).size == (16, 12)
    assert run(gradient(64, 48), {"op": "resize", "width": 200}).size == (200, 150)


def test_resize_both_sides_exact() -> None:
    out = run(gradient(64, 48), {"op": "resize", "width": 10, "height": 70})
    assert out.size == (10, 70)
    solid = run(Image.new("RGB", (30, 30), (12, 200, 99)), {"op": "resize", "width": 7, "height": 9})
    assert pixel(solid, (3, 4)) == (12, 200, 99)


def test_thumbnail_fits_box_and_never_enlarges() -> None:
    assert run(gradient(640, 480), {"op": "thumbnail", "size": 128}).size == (128, 96)
    assert run(gradient(640, 480), {"op": "thumbnail"}).size == (256, 192)  # default 256
    assert run(gradient(64, 48), {"op": "thumbnail", "size": 256}).size == (64, 48)
    assert run(gradient(640, 480), {"op": "thumbnail", "width": 100}).size == (100, 75)
    assert run(gradient(640, 480), {"op": "thumbnail", "height": 30}).size == (40, 30)
    assert run(gradient(64, 48), {"op": "thumbnail", "width": 1000, "height": 1000}).size == (64, 48)


def marked(w: int = 30, h: int = 20) -> Image.Image:
    img = Image.new("RGB", (w, h), (255, 255, 255))
    img.putpixel((0, 0), (255, 0, 0))
    return img


def test_rotate_90_swaps_dimensions_counter_clockwise() -> None:
    out = run(marked(30, 20), {"op": "rotate", "degrees": 90})
    assert out.size == (20, 30)
    assert pixel(out, (0, 29)) == (255, 0, 0)  # top-left goes to bottom-left when turning left
    clockwise = run(marked(30, 20), {"op": "rotate", "degrees": -90})
    assert clockwise.size == (20, 30) and pixel(clockwise, (19, 0)) == (255, 0, 0)
    assert run(marked(30, 20), {"op": "rotate", "degrees": 180}).size == (30, 20)


def test_rotate_expand_and_not() -> None:
    grown = run(gradient(60, 40), {"op": "rotate", "degrees": 45})
    assert grown.width > 60 and grown.height > 40
    kept = run(gradient(60, 40), {"op": "rotate", "degrees": 45, "expand": False})
    assert kept.size == (60, 40)


def test_mirror_and_flip_move_a_marked_pixel() -> None:
    mirrored = run(marked(), {"op": "mirror"})
    assert pixel(mirrored, (29, 0)) == (255, 0, 0) and pixel(mirrored, (0, 0)) == (255, 255, 255)
    flipped = run(marked(), {"op": "flip"})
    assert pixel(flipped, (0, 19)) == (255, 0, 0) and pixel(flipped, (0, 0)) == (255, 255, 255)


def test_mirror_of_text_mirrors_its_bounding_box() -> None:
    src = text_image()
    left, top, right, bottom = ImageOps.invert(src.convert("L")).getbbox()
    out = run(src, {"op": "mirror"})
    assert ImageOps.invert(out.convert("L")).getbbox() == (src.width - right, top, src.width - left, bottom)


def test_crop_size_and_content() -> None:
    src = gradient()
    out = run(src, {"op": "crop", "left": 10, "top": 5, "right": 30, "bottom": 25})
    assert out.size == (20, 20)
    assert pixel(out, (0, 0)) == src.getpixel((10, 5))
    assert pixel(out, (19, 19)) == src.getpixel((29, 24))
    assert run(src, {"op": "crop", "left": 0, "top": 0, "right": 64, "bottom": 48}).size == (64, 48)


def test_crop_outside_the_image_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match=r"^crop: box \(0, 0, 100, 10\) is outside the 64x48 image$"):
        process(encode(gradient()), [{"op": "crop", "left": 0, "top": 0, "right": 100, "bottom": 10}])


# ------------------------------------------------------------------------------------------------------
# Filters and colors


def test_invert_known_pixels() -> None:
    rgb = Image.new("RGB", (2, 2), (10, 20, 30))
    assert pixel(run(rgb, {"op": "invert"}), (1, 1)) == (245, 235, 225)
    out = run(rgba_image(), {"op": "invert"})
    assert out.mode == "RGBA"
    assert pixel(out, (0, 0)) == (245, 235, 225, 100)  # alpha kept
    assert pixel(out, (20, 20)) == (0, 255, 255, 255)
    assert pixel(run(Image.new("L", (1, 1), 200), {"op": "invert"}), (0, 0)) == (55,)
    one = Image.new("1", (2, 1))
    one.putpixel((1, 0), 255)
    inv = OPS["invert"].apply(one)
    assert inv.mode == "1" and [inv.getpixel((x, 0)) for x in range(2)] == [255, 0]
    pal = decode(palette_png())
    assert OPS["invert"].apply(pal).tobytes() == ImageOps.invert(pal.convert("RGB")).tobytes()


def test_sepia_of_grayscale_input() -> None:
    out = run(Image.new("L", (2, 2), 255), {"op": "sepia"})
    assert out.mode == "RGB" and pixel(out, (0, 0)) == (255, 255, 239)
    black = run(Image.new("L", (2, 2), 0), {"op": "sepia"})
    assert pixel(black, (0, 0)) == (0, 0, 0)
    mid = pixel(run(Image.new("RGB", (1, 1), (100, 100, 100)), {"op": "sepia"}), (0, 0))
    assert mid[0] > mid[1] > mid[2]  # warm tone


def test_blur_smooths_and_keeps_solid_areas() -> None:
    solid = run(Image.new("RGB", (20, 20), (40, 80, 120)), {"op": "blur", "radius": 3})
    assert pixel(solid, (10, 10)) == (40, 80, 120)
    sharp = marked(9, 9)
    blurred = run(sharp, {"op": "blur"})
    assert pixel(blurred, (0, 0)) != (255, 0, 0) and pixel(blurred, (1, 1)) != (255, 255, 255)


def test_blur_of_transparent_image_does_not_darken_edges() -> None:
    out = run(rgba_image(), {"op": "blur", "radius": 2})
    assert out.mode == "RGBA"
    r, g, b, a = out.getpixel((9, 20))  # just outside the red square: partly transparent
    assert 0 < a < 255
    assert r > 200 and g < 30 and b < 30


def test_edges_sharpen_autocontrast() -> None:
    flat = run(Image.new("RGB", (10, 10), (90, 90, 90)), {"op": "edges"})
    assert pixel(flat, (5, 5)) == (0, 0, 0)
    edges = run(rgba_image(), {"op": "edges"})
    assert edges.getchannel("A").tobytes() == rgba_image().getchannel("A").tobytes()
    dull = Image.new("L", (2, 1))
    dull.putpixel((0, 0), 100)
    dull.putpixel((1, 0), 150)
    stretched = run(dull, {"op": "autocontrast"})
    assert [stretched.getpixel((x, 0)) for x in range(2)] == [0, 255]
    assert run(gradient(), {"op": "autocontrast", "cutoff": 2}).size == (64, 48)
    assert run(text_image(), {"op": "sharpen"}).size == (120, 40)


MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]


def image_in_mode(mode: str) -> Image.Image:
    base = gradient(24, 16)
    if mode == "P":
        return base.quantize(8)
    if mode == "I;16":
        return base.convert("L").convert("I;16")
    if mode == "I":
        return base.convert("L").convert("I").point(lambda v: v * 257)
    if mode == "F":
        return base.convert("L").convert("F")
    if mode in ("LA", "RGBA"):
        img = base.convert(mode)
        img.putalpha(Image.linear_gradient("L").resize(base.size))
        return img
    return base.convert(mode)


VALID_OPS = [
    {"op": "grayscale"}, {"op": "bw"}, {"op": "bw", "level": 100}, {"op": "resize", "width": 10},
    {"op": "thumbnail", "size": 8}, {"op": "rotate", "degrees": 90}, {"op": "rotate", "degrees": 30},
    {"op": "flip"}, {"op": "mirror"}, {"op": "crop", "left": 1, "top": 2, "right": 12, "bottom": 9},
    {"op": "blur"}, {"op": "sharpen"}, {"op": "edges"}, {"op": "autocontrast", "cutoff": 1}, {"op": "invert"},
    {"op": "sepia"},
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("spec", VALID_OPS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_every_op_handles_every_mode(spec: dict, mode: str) -> None:
    img = image_in_mode(mode)
    params = {k: v for k, v in spec.items() if k != "op"}
    out = OPS[spec["op"]].apply(img, **params)
    assert isinstance(out, Image.Image) and out.width > 0 and out.height > 0
    if spec["op"] == "grayscale":
        assert out.mode in ("L", "LA")
    if spec["op"] == "bw":
        assert out.mode == "1"
    if spec["op"] == "sepia":
        assert out.mode in ("RGB", "RGBA")
    keeps_alpha = ("grayscale", "invert", "sepia", "edges", "sharpen", "autocontrast")
    if mode in ("LA", "RGBA") and spec["op"] in keeps_alpha:
        assert out.getchannel("A").tobytes() == img.getchannel("A").tobytes()
    for fmt in ("png", "jpeg"):  # the result can always be encoded
        tiff = encode(out, "TIFF") if out.mode not in ("P",) else encode(out, "PNG")
        assert decode(process(tiff, [], fmt).data).size == out.size


# ------------------------------------------------------------------------------------------------------
# Decoding: EXIF, frames, formats


def test_exif_orientation_is_applied_first() -> None:
    out_info = process(exif_rotated_jpeg(), [], "png")
    out = decode(out_info.data)
    assert (out_info.width, out_info.height) == out.size == (40, 60)
    assert close(pixel(out, (35, 4)), (255, 0, 0), 40)  # stored top-left is now top-right
    assert close(pixel(out, (4, 4)), (255, 255, 255), 40)
    assert close(pixel(out, (35, 55)), (255, 255, 255), 40)


def test_exif_is_not_copied_to_the_output() -> None:
    out = decode(process(exif_rotated_jpeg(), [], "jpeg").data)
    assert out.size == (40, 60)
    assert 0x0112 not in out.getexif()


def test_animated_gif_uses_the_first_frame() -> None:
    result = process(animated_gif(), [], None)
    assert result.format == "gif" and result.content_type == "image/gif"
    out = decode(result.data)
    assert getattr(out, "n_frames", 1) == 1
    assert pixel(out.convert("RGB"), (5, 5)) == (255, 0, 0)
    assert pixel(decode(process(animated_gif(), [{"op": "invert"}], "png").data), (5, 5)) == (0, 255, 255)


def test_animated_png_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    assert pixel(decode(process(data, []).data), (4, 4)) == (0, 0, 255)


def test_sixteen_bit_png_stays_16_bit_as_png_and_becomes_8_bit_as_jpeg() -> None:
    result = process(sixteen_bit_png(), [{"op": "mirror"}], "png")
    out = decode(result.data)
    assert result.mode == out.mode == "I;16"
    assert [out.getpixel((x, 0)) for x in range(len(SIXTEEN_BIT_VALUES))] == SIXTEEN_BIT_VALUES[::-1]
    jpeg = process(sixteen_bit_png(), [], "jpeg")
    assert jpeg.mode == "L" and decode(jpeg.data).mode == "L"


def test_cmyk_jpeg_is_written_as_rgb() -> None:
    result = process(cmyk_jpeg(), [], None)
    assert result.format == "jpeg" and result.mode == "RGB"
    assert close(pixel(decode(result.data), (8, 8)), (0, 255, 255), 12)


FORMATS = [("png", "PNG", "png"), ("PNG", "PNG", "png"), ("jpeg", "JPEG", "jpeg"), ("jpg", "JPEG", "jpeg"),
           ("webp", "WEBP", "webp"), ("WebP", "WEBP", "webp"), ("gif", "GIF", "gif"), ("bmp", "BMP", "bmp"),
           ("tiff", "TIFF", "tiff"), ("tif", "TIFF", "tiff")]


@pytest.mark.parametrize("source", ["rgb", "rgba", "palette", "bw", "sixteen", "cmyk"])
@pytest.mark.parametrize(("fmt", "pil_format", "name"), FORMATS)
def test_output_formats_decode_back(fmt: str, pil_format: str, name: str, source: str) -> None:
    data = {"rgb": lambda: encode(gradient()), "rgba": lambda: encode(rgba_image()), "palette": palette_png,
            "bw": lambda: encode(gradient().convert("1")), "sixteen": sixteen_bit_png,
            "cmyk": cmyk_jpeg}[source]()
    size = decode(data).size
    result = process(data, [], fmt)
    out = decode(result.data)
    assert out.format == pil_format and result.format == name
    assert (result.width, result.height) == out.size == size
    assert result.content_type == f"image/{name}"
    # Pillow may read a stored mode back differently (a grayscale GIF as "P", a 1-bit BMP as "P", ...)
    assert result.mode == out.mode or (name in ("gif", "bmp", "webp") and out.mode in ("RGB", "RGBA", "P"))


def test_jpeg_from_rgba_puts_transparency_on_white() -> None:
    result = process(encode(rgba_image()), [], "jpeg")
    out = decode(result.data)
    assert result.mode == out.mode == "RGB"
    assert close(pixel(out, (38, 38)), (255, 255, 255), 6)  # was fully transparent
    assert close(pixel(out, (20, 20)), (255, 0, 0), 12)  # was opaque red


def test_jpeg_from_one_bit_and_palette() -> None:
    assert decode(process(encode(gradient()), [{"op": "bw"}], "jpeg").data).mode == "L"
    assert decode(process(palette_png(transparency=0), [], "jpg").data).mode == "RGB"


def test_png_keeps_palette_and_one_bit_modes() -> None:
    assert process(palette_png(), [], "png").mode == "P"
    assert decode(process(palette_png(), [{"op": "flip"}], "png").data).mode == "P"
    assert process(encode(gradient()), [{"op": "bw"}], "png").mode == "1"


def test_format_none_keeps_the_source_format_or_falls_back_to_png() -> None:
    assert process(encode(gradient(), "JPEG"), [], None).format == "jpeg"
    assert process(encode(gradient()), [], None).format == "png"
    assert process(encode(gradient(), "WEBP"), [], None).format == "webp"
    assert process(encode(gradient(), "BMP"), [], None).format == "bmp"
    assert process(encode(gradient(), "TIFF"), [], None).format == "tiff"
    ppm = process(encode(gradient(), "PPM"), [], None)  # Pillow reads PPM; we do not write it
    assert ppm.format == "png" and decode(ppm.data).format == "PNG"


def test_quality() -> None:
    src = encode(gradient(200, 150))
    low, high = (len(process(src, [], "jpeg", quality=q).data) for q in (10, 95))
    assert low < high
    assert len(process(src, [], "webp", quality=5).data) < len(process(src, [], "webp", quality=100).data)
    assert process(src, [], "png", quality=50).format == "png"  # ignored by png


@pytest.mark.parametrize(("fmt", "quality"), [("jpeg", 0), ("jpeg", 96), ("jpeg", "high"), ("jpeg", True),
                                              ("jpeg", 50.5), ("webp", 101), ("png", -1)])
def test_bad_quality(fmt: str, quality: object) -> None:
    with pytest.raises(InvalidInput, match="^quality must be an integer from 1 to"):
        process(encode(gradient()), [], fmt, quality=quality)  # type: ignore[arg-type]


def test_bad_quality_for_the_source_format() -> None:
    with pytest.raises(InvalidInput, match="quality must be an integer from 1 to 95 for jpeg"):
        process(encode(gradient(), "JPEG"), [], None, quality=99)


@pytest.mark.parametrize("fmt", ["ppm", "svg", "", "jpeg2000", 3])
def test_unknown_output_format(fmt: object) -> None:
    with pytest.raises(InvalidInput, match="output format"):
        process(encode(gradient()), [], fmt)  # type: ignore[arg-type]


def test_icc_profile_is_kept_only_when_it_matches() -> None:
    pytest.importorskip("PIL.ImageCms")
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(gradient(), "PNG", icc_profile=icc)
    assert decode(process(data, [], "png").data).info.get("icc_profile") == icc
    assert decode(process(data, [], "jpeg").data).info.get("icc_profile") == icc
    assert not decode(process(data, [{"op": "grayscale"}], "png").data).info.get("icc_profile")


def test_image_output_is_frozen_and_its_repr_omits_the_bytes() -> None:
    result = process(encode(gradient()), [])
    assert isinstance(result, ImageOutput)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.width = 1  # type: ignore[misc]
    assert "data=" not in repr(result) and "width=64" in repr(result)


def test_nothing_is_written_to_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    process(encode(gradient()), [{"op": "grayscale"}, {"op": "resize", "width": 10}], "jpeg")
    legacy_bw(encode(gradient()), "cat.png")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------
# Bad inputs and limits


def truncated_png() -> bytes:
    data = encode(Image.effect_noise((120, 90), 60))
    return data[: len(data) // 2]


def png_without_iend() -> bytes:
    return encode(gradient())[:-12]


def flip_byte(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


BAD_DATA = {
    "empty": lambda: b"",
    "random": lambda: random.Random(7).randbytes(4096),
    "text": lambda: b"hello, this is not an image\n",
    "truncated-jpeg": truncated_jpeg,
    "truncated-png": truncated_png,
    "png-without-iend": png_without_iend,
    "png-bad-crc": lambda: flip_byte(encode(gradient()), 40),
    "gif-header-only": lambda: encode(gradient(), "GIF")[:20],
    "eps": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
}


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_unreadable_data_is_invalid_input(name: str) -> None:
    with pytest.raises(InvalidInput, match="^not a readable image: ") as info:
        process(BAD_DATA[name](), [], "png")
    assert info.value.code == "invalid_input"


def test_unreadable_messages_are_clear() -> None:
    with pytest.raises(InvalidInput, match=r"empty input \(0 bytes\)"):
        process(b"", [])
    with pytest.raises(InvalidInput, match="truncated") as info:
        process(truncated_jpeg(), [], source_name="images/unprocessed/cat.jpg")
    assert str(info.value).endswith("(images/unprocessed/cat.jpg)")
    with pytest.raises(InvalidInput, match="not a recognised image format") as info:
        process(b"hello", [])
    assert "BytesIO" not in str(info.value)


def test_ops_are_checked_before_the_data() -> None:
    with pytest.raises(InvalidInput, match="unknown op 'nope'"):
        process(b"", [{"op": "nope"}])


def test_genuine_decompression_bomb_is_too_large() -> None:
    data = png_bomb(20000)
    assert len(data) < 200_000  # 400 megapixels in a small file
    filters = list(warnings.filters)
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(TooLarge, match="400 megapixels, over the limit of 40 megapixels") as info:
        process(data, [{"op": "grayscale"}])
    assert info.value.code == "too_large"
    assert limit == Image.MAX_IMAGE_PIXELS and warnings.filters == filters
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(("side", "message", "higher_limit", "then", "then_message"), [
    # Over our limit, then over Pillow's own bomb limit
    (10000, "100 megapixels, over the limit of 40 megapixels", 200_000_000, TooLarge,
     "decompression bomb|too large to decode safely"),
    # The file only holds pixel data for a tiny image: decoding it would fail as truncated.
    (8000, r"^image is 8000x8000 = 64 megapixels, over the limit of 40 megapixels$", 100_000_000, InvalidInput,
     "not a readable image"),
], ids=["pillows-bomb-warning", "before-decoding"])
def test_pixel_limit_is_checked_before_decoding(side: int, message: str, higher_limit: int, then: type,
                                                then_message: str) -> None:
    with pytest.raises(TooLarge, match=message):
        process(png_claiming(side, side), [])
    with pytest.raises(then, match=then_message):
        process(png_claiming(side, side), [], max_pixels=higher_limit)


def test_small_pixel_limit() -> None:
    message = r"image is 64x48 = .* megapixels, over the limit of 0\.001 megapixels"
    with pytest.raises(TooLarge, match=message):
        process(encode(gradient()), [], max_pixels=1000)
    assert process(encode(gradient()), [], max_pixels=64 * 48).width == 64


def test_byte_limit_is_checked_first() -> None:
    junk = b"x" * 2000  # not an image: the size check must come before the decoder
    with pytest.raises(TooLarge, match=r"image data is 2000 bytes .*over the limit of 1000 bytes"):
        process(junk, [], max_bytes=1000)
    assert process(encode(gradient()), [], max_bytes=len(encode(gradient()))).width == 64


def test_ops_results_are_held_to_the_pixel_limit() -> None:
    message = r"^resize: the result would be 2000x1500 = 3 megapixels, over the limit of 1 megapixels"
    with pytest.raises(TooLarge, match=message):
        process(encode(gradient()), [{"op": "resize", "width": 2000}], max_pixels=1_000_000)
    with pytest.raises(TooLarge, match="^rotate: the result would be"):
        process(encode(gradient(100, 100)), [{"op": "rotate", "degrees": 45}], max_pixels=10_000)
    with pytest.raises(TooLarge, match="^resize: the result would be 10000x10000"):
        process(encode(gradient()), [{"op": "resize", "width": 10000, "height": 10000}])


def test_resize_guards_aspect_derived_sides_even_when_called_directly() -> None:
    tall = Image.new("L", (1, 2000))
    with pytest.raises(TooLarge, match="resize: the result would be 10000x20000000"):
        OPS["resize"].apply(tall, width=10000)


# ------------------------------------------------------------------------------------------------------
# Parameter validation


BAD_PARAMS = [
    ({"op": "resize", "width": -3}, "resize: width must be a positive integer ≤ 10000, got -3"),
    ({"op": "resize", "width": 0}, "resize: width must be a positive integer ≤ 10000, got 0"),
    ({"op": "resize", "width": 10001}, "resize: width must be"),
    ({"op": "resize", "width": "12"}, "resize: width must be a positive integer ≤ 10000, got '12'"),
    ({"op": "resize", "width": 12.5}, "resize: width must be"),
    ({"op": "resize", "width": True}, "resize: width must be"),
    ({"op": "resize", "height": -1}, "resize: height must be"),
    ({"op": "resize"}, "resize: width or height is required"),
    ({"op": "thumbnail", "size": 0}, "thumbnail: size must be"),
    ({"op": "thumbnail", "width": 20000}, "thumbnail: width must be"),
    ({"op": "thumbnail", "size": 10, "width": 10}, "thumbnail: give either size or width/height"),
    ({"op": "rotate"}, "rotate: degrees is required"),
    ({"op": "rotate", "degrees": "left"}, "rotate: degrees must be a number, got 'left'"),
    ({"op": "rotate", "degrees": float("nan")}, "rotate: degrees must be a number"),
    ({"op": "rotate", "degrees": float("inf")}, "rotate: degrees must be a number"),
    ({"op": "rotate", "degrees": 90, "expand": "yes"}, "rotate: expand must be true or false, got 'yes'"),
    ({"op": "crop", "left": 0, "top": 0, "right": 10}, "crop: bottom is required"),
    ({"op": "crop", "left": 10, "top": 0, "right": 10, "bottom": 5}, "crop: right must be greater than left"),
    ({"op": "crop", "left": 0, "top": 5, "right": 10, "bottom": 2}, "crop: bottom must be greater than top"),
    ({"op": "crop", "left": -1, "top": 0, "right": 10, "bottom": 5},
     "crop: left must be a non-negative integer, got -1"),
    ({"op": "blur", "radius": 0}, "blur: radius must be a number > 0 and ≤ 100, got 0"),
    ({"op": "blur", "radius": 101}, "blur: radius must be"),
    ({"op": "blur", "radius": -2}, "blur: radius must be"),
    ({"op": "blur", "radius": "big"}, "blur: radius must be"),
    ({"op": "blur", "foo": 1}, "blur: unknown parameter 'foo'"),
    ({"op": "bw", "level": 256}, "bw: level must be an integer from 0 to 255, got 256"),
    ({"op": "bw", "level": -1}, "bw: level must be"),
    ({"op": "bw", "level": 1.5}, "bw: level must be"),
    ({"op": "threshold", "level": 300}, "bw: level must be"),
    ({"op": "autocontrast", "cutoff": 50}, "autocontrast: cutoff must be a number from 0 to 49, got 50"),
    ({"op": "autocontrast", "cutoff": -1}, "autocontrast: cutoff must be"),
    ({"op": "grayscale", "amount": 1}, "grayscale: unknown parameter 'amount'"),
    ({"op": "invert", "alpha": True}, "invert: unknown parameter 'alpha'"),
]


@pytest.mark.parametrize(("spec", "message"), BAD_PARAMS, ids=[m for _, m in BAD_PARAMS])
def test_bad_parameters_name_op_and_parameter(spec: dict, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_ops([spec])
    assert str(info.value).startswith(message)
    assert info.value.code == "invalid_input"
    params = {k: v for k, v in spec.items() if k != "op"}
    with pytest.raises(InvalidInput):
        OPS[spec["op"]].validate(params)


def test_validate_ops_normalizes_copies() -> None:
    ops = [{"op": "Blur"}, {"op": "rotate", "degrees": 90}, {"op": "resize", "width": 256.0, "height": None},
           {"op": "thumbnail"}, {"op": "thumbnail", "width": 50}]
    before = json.dumps(ops)
    assert validate_ops(ops) == [{"op": "blur", "radius": 2}, {"op": "rotate", "degrees": 90, "expand": True},
                                 {"op": "resize", "width": 256}, {"op": "thumbnail", "size": 256},
                                 {"op": "thumbnail", "width": 50}]
    assert json.dumps(ops) == before  # the input is not modified
    assert validate_ops([]) == []
    assert len(validate_ops([{"op": "flip"}] * MAX_OPS)) == MAX_OPS


@pytest.mark.parametrize(("ops", "message"), [
    ("grayscale", "ops must be a list"),
    ({"op": "grayscale"}, "ops must be a list"),
    (None, "ops must be a list"),
    ([{"op": "flip"}] * 21, "too many ops: 21 (at most 20)"),
    (["grayscale"], "ops[0] must be an object"),
    ([{"op": "flip"}, 3], "ops[1] must be an object"),
    ([{"width": 3}], "ops[0] has no 'op' (known ops: "),
    ([{"op": "sharpen"}, {"op": "explode"}], "ops[1]: unknown op 'explode' (known ops: "),
    ([{"op": 7}], "ops[0]: unknown op 7"),
])
def test_validate_ops_rejects(ops: object, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        validate_ops(ops)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)
    if "known ops" in message:
        assert "grayscale" in str(info.value) and "resize" in str(info.value)


def test_op_apply_validates_its_parameters() -> None:
    with pytest.raises(InvalidInput, match="resize: width or height is required"):
        OPS["resize"].apply(gradient())
    with pytest.raises(InvalidInput, match="blur: unknown parameter 'sigma'"):
        OPS["blur"].apply(gradient(), sigma=3)


# ------------------------------------------------------------------------------------------------------
# parse_op_spec


@pytest.mark.parametrize(("spec", "expected"), [
    ("grayscale", {"op": "grayscale"}),
    ("  grayscale  ", {"op": "grayscale"}),
    ("grayscale:", {"op": "grayscale"}),
    ("resize:256x256", {"op": "resize", "width": 256, "height": 256}),
    ("RESIZE:320X200", {"op": "resize", "width": 320, "height": 200}),
    ("resize:256x", {"op": "resize", "width": 256}),
    ("resize:x128", {"op": "resize", "height": 128}),
    ("thumbnail:128", {"op": "thumbnail", "size": 128}),
    ("thumbnail:100x50", {"op": "thumbnail", "width": 100, "height": 50}),
    ("rotate:90", {"op": "rotate", "degrees": 90}),
    ("rotate:-45.5", {"op": "rotate", "degrees": -45.5}),
    ("blur:2.5", {"op": "blur", "radius": 2.5}),
    ("bw:128", {"op": "bw", "level": 128}),
    ("threshold:128", {"op": "bw", "level": 128}),
    ("bw", {"op": "bw"}),
    ("crop:10,10,200,200", {"op": "crop", "left": 10, "top": 10, "right": 200, "bottom": 200}),
    ("autocontrast:2", {"op": "autocontrast", "cutoff": 2}),
    ("rotate:degrees=30,expand=false", {"op": "rotate", "degrees": 30, "expand": False}),
    ("rotate:degrees=30, expand=TRUE", {"op": "rotate", "degrees": 30, "expand": True}),
    ("blur:radius=1.5", {"op": "blur", "radius": 1.5}),
    ("crop:left=1,top=2,right=3,bottom=4", {"op": "crop", "left": 1, "top": 2, "right": 3, "bottom": 4}),
    ("resize:width=64", {"op": "resize", "width": 64}),
])
def test_parse_op_spec(spec: str, expected: dict) -> None:
    parsed = parse_op_spec(spec)
    assert parsed == expected
    assert type(parsed.get("width", 0)) is int
    validate_ops([parsed])  # always acceptable to the protocol


@pytest.mark.parametrize(("spec", "message"), [
    ("explode", "unknown op 'explode' (known ops: "),
    ("", "empty op spec"),
    (":3", "empty op spec"),
    ("resize:256", "resize: expected WIDTHxHEIGHT"),
    ("resize:x", "resize: expected WIDTHxHEIGHT"),
    ("resize:1x2x3", "resize: expected WIDTHxHEIGHT"),
    ("resize:abcx", "resize: width must be a positive integer ≤ 10000, got 'abc'"),
    ("resize:-3x", "resize: width must be a positive integer ≤ 10000, got -3"),
    ("grayscale:5", "grayscale: takes no parameters"),
    ("crop:1,2,3", "crop: expected LEFT,TOP,RIGHT,BOTTOM"),
    ("blur:radius", "blur: radius must be"),
    ("blur:foo=1", "blur: unknown parameter 'foo'"),
    ("rotate:degrees=1,degrees=2", "rotate: parameter 'degrees' given twice"),
    ("rotate:degrees", "rotate: degrees must be a number"),
    ("rotate:=3", "rotate: expected key=value"),
    ("bw:300", "bw: level must be an integer from 0 to 255, got 300"),
])
def test_parse_op_spec_errors(spec: str, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_op_spec(spec)
    assert str(info.value).startswith(message)
    if "known ops" in message:
        assert "grayscale" in str(info.value) and "threshold" in str(info.value)


@relaxed
@given(w=st.integers(1, 10000), h=st.integers(1, 10000))
def test_parse_resize_roundtrip(w: int, h: int) -> None:
    assert parse_op_spec(f"resize:{w}x{h}") == {"op": "resize", "width": w, "height": h}
    assert parse_op_spec(f"resize:width={w},height={h}") == {"op": "resize", "width": w, "height": h}


# ------------------------------------------------------------------------------------------------------
# format_for_key, legacy_bw, describe_ops


@pytest.mark.parametrize(("key", "fmt"), [
    ("cat.jpg", "jpeg"), ("images/unprocessed/CAT.JPEG", "jpeg"), ("a.png", "png"), ("a.b.webp", "webp"),
    ("x.gif", "gif"), ("x.bmp", "bmp"), ("scan.tif", "tiff"), ("scan.TIFF", "tiff"),
    ("notes.txt", None), ("noext", None), ("dir.png/file", None), ("archive.tar.gz", None), ("", None),
])
def test_format_for_key(key: str, fmt: str | None) -> None:
    assert format_for_key(key) == fmt


def test_legacy_bw_matches_the_original_lab() -> None:
    src = text_image()
    result = legacy_bw(encode(src), "cat.png")
    out = decode(result.data)
    assert result.format == "png" and result.mode == out.mode == "1"
    assert out.tobytes() == src.convert("1").tobytes()  # Image.open(f).convert('1')


@pytest.mark.parametrize(("name", "fmt", "mode"), [("cat.jpg", "jpeg", "L"), ("x/Cat.GIF", "gif", "L"),
                                                   ("cat.bmp", "bmp", "1"), ("cat", "png", "1"),
                                                   ("cat.webp", "webp", "RGB"), ("c.tiff", "tiff", "1")])
def test_legacy_bw_writes_the_names_format(name: str, fmt: str, mode: str) -> None:
    result = legacy_bw(encode(gradient(), "JPEG"), name)
    out = decode(result.data)
    assert result.format == fmt and out.format == fmt.upper()
    assert result.mode == mode
    assert out.size == (64, 48) and out.mode in (mode, "P")  # Pillow reads a grayscale GIF back as "P"


def test_legacy_bw_rejects_bad_data() -> None:
    with pytest.raises(InvalidInput, match="not a readable image"):
        legacy_bw(b"nope", "cat.jpg")


def test_describe_ops() -> None:
    described = describe_ops()
    json.dumps(described)  # ready for a UI
    by_name = {d["name"]: d for d in described}
    assert set(by_name) >= {"grayscale", "bw", "resize", "thumbnail", "rotate", "flip", "mirror", "crop",
                            "blur", "sharpen", "edges", "autocontrast", "invert", "sepia"}
    assert len(described) == len(by_name)  # aliases are not repeated
    assert "threshold" in by_name["bw"]["aliases"]
    assert all(d["doc"] and "\n" not in d["doc"] for d in described)
    radius = by_name["blur"]["params"][0]
    assert radius == {"name": "radius", "type": "number", "doc": radius["doc"], "default": 2,
                      "required": False, "min": 0, "max": 100, "exclusive_min": True}
    width = {p["name"]: p for p in by_name["resize"]["params"]}["width"]
    assert (width["type"], width["min"], width["max"]) == ("int", 1, 10000)
    assert {p["name"]: p["default"] for p in by_name["rotate"]["params"]} == {"degrees": None, "expand": True}
    assert by_name["thumbnail"]["params"][0]["default"] == 256
    for d in described:  # every example parses
        assert parse_op_spec(d["example"])["op"] == d["name"]


# ------------------------------------------------------------------------------------------------------
# Pipelines: validated once per side


def test_validate_ops_returns_a_pipeline_that_serialises_to_the_protocol() -> None:
    pipeline = validate_ops([{"op": "Greyscale"}, {"op": "thumbnail", "size": 64.0}])
    assert isinstance(pipeline, Pipeline) and len(pipeline) == 2
    assert pipeline.to_list() == [{"op": "grayscale"}, {"op": "thumbnail", "size": 64}]
    assert json.loads(json.dumps(pipeline.to_list())) == pipeline
    assert validate_ops(pipeline) is pipeline
    assert validate_ops(pipeline.to_list()) == pipeline  # normalizing is idempotent
    with pytest.raises(TypeError):
        pipeline.steps[0].params["size"] = 1  # type: ignore[index]  # read-only once checked


def count_validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the ops ``Op.validate`` checks from now on."""
    seen: list[str] = []
    original = Op.validate

    def counting(self: Op, params: dict) -> dict:
        seen.append(self.name)
        return original(self, params)

    monkeypatch.setattr(Op, "validate", counting)
    return seen


def test_process_does_not_check_a_pipeline_again(monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline = validate_ops([{"op": "grayscale"}, {"op": "resize", "width": 32}])
    seen = count_validations(monkeypatch)
    assert process(encode(gradient()), pipeline).width == 32
    assert seen == []
    process(encode(gradient()), pipeline.to_list())  # a raw list is checked, once per op
    assert seen == ["grayscale", "resize"]


def test_parse_ops_checks_specs_and_dicts_once(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = count_validations(monkeypatch)
    pipeline = parse_ops(["resize:256x", {"op": "blur"}, "threshold:9"])
    assert pipeline == [{"op": "resize", "width": 256}, {"op": "blur", "radius": 2}, {"op": "bw", "level": 9}]
    assert seen == ["resize", "blur", "bw"]
    assert parse_ops(pipeline) is pipeline
    with pytest.raises(InvalidInput, match="ops must be a list"):
        parse_ops("grayscale")
    with pytest.raises(InvalidInput, match=r"too many ops: 21 \(at most 20\)"):
        parse_ops(["flip"] * 21)
    with pytest.raises(InvalidInput, match="^ops\\[1\\]: unknown op 'melt'"):
        parse_ops(["flip", {"op": "melt"}])


def test_check_output_is_the_one_quality_rule() -> None:
    assert check_output("JPG", 95) == "jpeg" and check_output("webp", 100) == "webp"
    assert check_output(None, 100) is None and check_output("png", None) == "png"
    with pytest.raises(InvalidInput, match="^quality must be an integer from 1 to 95 for jpeg, got 96$"):
        check_output("jpeg", 96)
    with pytest.raises(InvalidInput, match="^quality must be an integer from 1 to 100 for webp, got 101$"):
        check_output("webp", 101)
    with pytest.raises(InvalidInput, match="unknown output format"):
        check_output("svg")


@relaxed
@given(w=st.integers(1, 300), h=st.integers(1, 300), box=st.integers(1, 320),
       side=st.sampled_from(["size", "width", "height"]))
def test_thumbnail_is_pillows_thumbnail(w: int, h: int, box: int, side: str) -> None:
    img = Image.effect_noise((w, h), 50)
    expected = img.copy()
    expected.thumbnail({"size": (box, box), "width": (box, h), "height": (w, box)}[side], Image.Resampling.LANCZOS)
    out = OPS["thumbnail"].apply(img, **{side: box})
    assert out.size == expected.size == OPS["thumbnail"].output_size(img.size, {side: box})
    assert out.tobytes() == expected.tobytes()


# ------------------------------------------------------------------------------------------------------
# JPEG draft: decoding smaller when the result is smaller


def photo(w: int = 800, h: int = 600) -> Image.Image:
    """Gradients and noise, like a photo: red grows to the right, blue downwards, green is noise."""
    ramp = Image.linear_gradient("L")
    return Image.merge("RGB", [ramp.rotate(90).resize((w, h)), Image.effect_noise((w, h), 20),
                               ramp.resize((w, h))])


@pytest.fixture
def drafts(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """(format, mode, size) of every ``Image.draft`` call from now on, by JPEG or any other image."""
    calls: list[tuple] = []
    for cls in (Image.Image, JpegImagePlugin.JpegImageFile):
        def spy(self: Image.Image, mode: str | None, size: tuple | None, _original=cls.draft) -> object:
            calls.append((self.format, mode, size))
            return _original(self, mode, size)

        monkeypatch.setattr(cls, "draft", spy)
    return calls


def differences(a: Image.Image, b: Image.Image) -> tuple[float, int]:
    """(mean, largest) absolute difference of two images of the same size and mode, over all bands."""
    diff = ImageChops.difference(a, b)
    stat = ImageStat.Stat(diff)
    return sum(stat.mean) / len(stat.mean), max(hi for _, hi in stat.extrema)


@pytest.mark.parametrize(("ops", "size", "mode", "draft"), [
    ([{"op": "grayscale"}, {"op": "thumbnail", "size": 100}], (100, 75), "L", ("L", (100, 75))),
    ([{"op": "thumbnail", "size": 150}], (150, 113), "RGB", (None, (150, 113))),
    ([{"op": "mirror"}, {"op": "greyscale"}, {"op": "resize", "width": 200}], (200, 150), "L", ("L", (200, 150))),
    ([{"op": "resize", "height": 290}, {"op": "blur"}], (387, 290), "RGB", (None, (387, 290))),
    ([{"op": "grayscale"}, {"op": "blur"}], (800, 600), "L", ("L", None)),
], ids=["grayscale-thumbnail", "thumbnail", "mirror-grayscale-resize", "resize-blur", "grayscale-only"])
def test_jpeg_is_decoded_smaller_when_the_result_is_smaller(ops: list, size: tuple, mode: str, draft: tuple,
                                                           drafts: list) -> None:
    data = encode(photo(), "JPEG", quality=90)
    result = process(data, ops, "png")
    # Then the draft was used, and the result has the size and mode of a full decode
    assert drafts == [("JPEG", *draft)]
    out = decode(result.data)
    assert (result.width, result.height) == out.size == size and result.mode == out.mode == mode
    full = decode(data)
    for spec in ops:
        full = OPS[spec["op"]].apply(full, **{k: v for k, v in spec.items() if k != "op"})
    # And it looks the same: libjpeg's reduced decode (and its luma) differ from Pillow's by a few levels
    mean, largest = differences(out, full)
    assert mean < 1.5 and largest <= 10


def test_jpeg_draft_keeps_the_exif_orientation(drafts: list) -> None:
    # Stored 60x40 with a red block top-left, shown 40x60 with it top-right
    result = process(exif_rotated_jpeg(), [{"op": "thumbnail", "size": 20}], "png")
    assert drafts == [("JPEG", None, (20, 13))]  # asked in the file's own orientation
    out = decode(result.data)
    assert out.size == (13, 20)
    assert close(pixel(out, (11, 1)), (255, 0, 0), 60) and close(pixel(out, (1, 1)), (255, 255, 255), 40)


@pytest.mark.parametrize(("data", "ops"), [
    (lambda: encode(photo()), [{"op": "grayscale"}, {"op": "thumbnail", "size": 100}]),  # not a JPEG
    (lambda: encode(photo(), "WEBP"), [{"op": "thumbnail", "size": 100}]),
    (lambda: encode(photo(), "JPEG"), [{"op": "crop", "left": 0, "top": 0, "right": 400, "bottom": 300},
                                       {"op": "thumbnail", "size": 100}]),
    (lambda: encode(photo(), "JPEG"), [{"op": "rotate", "degrees": 90}, {"op": "thumbnail", "size": 100}]),
    (lambda: encode(photo(), "JPEG"), [{"op": "sharpen"}, {"op": "grayscale"}, {"op": "thumbnail", "size": 99}]),
    (lambda: encode(photo(), "JPEG"), [{"op": "thumbnail", "size": 500}]),  # less than half: full decode
    (lambda: encode(photo(), "JPEG"), [{"op": "resize", "width": 100, "height": 500}]),  # taller
    (lambda: encode(photo(), "JPEG"), []),
    (cmyk_jpeg, [{"op": "grayscale"}]),  # libjpeg only gives "L" from YCbCr
], ids=["png", "webp", "crop-first", "rotate-first", "sharpen-first", "small-reduction", "one-side-larger",
        "no-ops", "cmyk-grayscale"])
def test_full_resolution_decoding_when_the_ops_need_it(data: object, ops: list, drafts: list) -> None:
    result = process(data(), ops, "png")  # type: ignore[operator]
    assert drafts == []
    assert result.width > 0


def test_jpeg_pixel_limit_is_checked_before_any_draft(drafts: list) -> None:
    with pytest.raises(TooLarge, match=r"^image is 800x600 = 0\.48 megapixels, over the limit of 0\.1 megapixels$"):
        process(encode(photo(), "JPEG"), [{"op": "thumbnail", "size": 100}], max_pixels=100_000)
    assert drafts == []


# ------------------------------------------------------------------------------------------------------
# Properties


def param_values(p: dict) -> st.SearchStrategy:
    if p["type"] == "bool":
        return st.booleans()
    lo = p["min"] if p["min"] is not None else -720
    hi = min(p["max"] if p["max"] is not None else 720, 300)  # keep images small
    if p["type"] == "int":
        return st.integers(int(lo) + (1 if p["exclusive_min"] else 0), int(hi))
    return st.floats(lo, hi, exclude_min=p["exclusive_min"], allow_nan=False)


@st.composite
def op_lists(draw: st.DrawFn) -> list[dict]:
    ops = []
    for _ in range(draw(st.integers(0, 4))):
        d = draw(st.sampled_from(describe_ops()))
        spec: dict = {"op": d["name"]}
        for p in d["params"]:
            if p["required"] or draw(st.booleans()):
                spec[p["name"]] = draw(param_values(p))
        if d["name"] == "thumbnail" and "size" in spec and ({"width", "height"} & set(spec)):
            del spec["size"]
        if d["name"] == "resize" and not ({"width", "height"} & set(spec)):
            spec["width"] = draw(st.integers(1, 300))
        if d["name"] == "crop":
            left, top = draw(st.integers(0, 20)), draw(st.integers(0, 20))
            spec.update(left=left, top=top, right=left + draw(st.integers(1, 40)),
                        bottom=top + draw(st.integers(1, 40)))
        ops.append(spec)
    return ops


@settings(relaxed, max_examples=60)
@given(ops=op_lists(), mode=st.sampled_from(["L", "RGB", "RGBA", "P", "1"]),
       fmt=st.sampled_from(["png", "jpeg", "webp", "gif"]))
def test_any_valid_pipeline_works_or_fails_cleanly(ops: list[dict], mode: str, fmt: str) -> None:
    normalized = validate_ops(ops)
    assert validate_ops(normalized) == normalized  # normalizing is idempotent
    try:
        result = process(encode(image_in_mode(mode)), ops, fmt)
    except InvalidInput as exc:
        assert str(exc).startswith("crop: box")  # a crop outside the (possibly shrunk) image
        return
    out = decode(result.data)
    assert out.size == (result.width, result.height)
    assert out.format == fmt.upper()
