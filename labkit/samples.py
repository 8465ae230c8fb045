"""Sample inputs for trying labkit without files of your own: generated pictures."""

from __future__ import annotations

import io

import numpy as np

from labkit.errors import InvalidInput

SAMPLES = ("gradient", "rings", "checkerboard")


def sample_image(name: str = "gradient", size: tuple[int, int] = (640, 400)) -> bytes:
    """A generated sample picture as PNG bytes: "gradient", "rings" or "checkerboard"."""
    from PIL import Image, ImageDraw
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    if name == "gradient":
        rgb = np.stack([xx / (w - 1) * 255, yy / (h - 1) * 255, np.full_like(xx, 160)], axis=-1)
    elif name == "rings":
        r = np.hypot(xx - w / 2, yy - h / 2)
        wave = (np.sin(r / 9) + 1) / 2
        rgb = np.stack([wave * 230 + 20, (1 - wave) * 180 + 40, r / r.max() * 255], axis=-1)
    elif name == "checkerboard":
        cells = ((xx // 40 + yy // 40) % 2)[..., None]
        rgb = np.where(cells == 1, [235, 235, 225], [40, 60, 90]) * (0.55 + 0.45 * xx[..., None] / w)
    else:
        raise InvalidInput(f"unknown sample {name!r} (samples: {', '.join(SAMPLES)})")
    img = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse((w * 0.35, h * 0.25, w * 0.65, h * 0.75), fill=(250, 215, 40), outline=(255, 255, 255), width=3)
    d.rectangle((w * 0.06, h * 0.1, w * 0.25, h * 0.4), outline=(255, 255, 255), width=6)
    d.text((w * 0.42, h * 0.85), f"labkit sample: {name}", fill=(255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()
