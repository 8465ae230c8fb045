"""Where things live in the bucket: the prefixes, and keys built so that they cannot escape them.

    images/unprocessed/<name>     uploaded images (``Lab.upload_image``)
    images/processed/<name>       results of image jobs
    payloads/<job id>.<format>    claim-check payloads and results too large for a message
    logs/<worker>/...             worker logs (``labkit worker --log-to-s3``)
    artifacts/labkit/<build>/...  the wheel EC2 workers install (``labkit deploy``)

Pure functions: no AWS call, no Pillow.
"""

from __future__ import annotations

import posixpath
import re

from labkit.config import PROCESSED_PREFIX, UNPROCESSED_PREFIX
from labkit.errors import InvalidInput

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._\-][A-Za-z0-9._\- /()+=@,]*$")
# File extension -> image format, and the extension each format is written with.
FORMAT_OF_EXTENSION = {"jpg": "jpeg", "jpeg": "jpeg", "jpe": "jpeg", "png": "png", "webp": "webp", "gif": "gif",
                       "bmp": "bmp", "tif": "tiff", "tiff": "tiff"}
EXTENSION_OF_FORMAT = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "gif": ".gif", "bmp": ".bmp", "tiff": ".tif"}


def safe_key(prefix: str, name: str) -> str:
    """``prefix + name`` where ``name`` is a relative path that stays inside ``prefix``.

    Rejects empty names, absolute paths, ``..`` segments, backslashes and control characters with
    :class:`InvalidInput`. A name that already starts with ``prefix`` is accepted as a full key.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"image name must be a non-empty string, got {name!r}")
    if name.startswith(prefix):
        name = name[len(prefix):]
    if len(name) > 512:
        raise InvalidInput("image name is longer than 512 characters")
    if name.startswith("/") or "\\" in name or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput(f"image name {name!r} is not allowed: absolute paths, backslashes and control "
                           "characters are refused")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidInput(f"image name {name!r} is not allowed: empty, '.' or '..' path segments are refused")
    if not _SAFE_NAME.match(name):
        raise InvalidInput(f"image name {name!r} has characters outside letters, digits and ._-/()+=@, and space")
    key = prefix + name
    if posixpath.normpath(key) != key.rstrip("/") or not key.startswith(prefix):
        raise InvalidInput(f"image name {name!r} escapes {prefix}")
    return key


def format_for_key(key: str) -> str | None:
    """Image format for a file name or S3 key, from its extension ("photo.JPG" -> "jpeg"); None if unknown."""
    base = key.rsplit("/", 1)[-1]
    if "." not in base:
        return None
    return FORMAT_OF_EXTENSION.get(base.rsplit(".", 1)[1].lower())


def output_key(source: str, fmt: str, output: str | None = None) -> str:
    """``images/processed/<name>``: the source's name with the output format's extension, or ``output``."""
    if output is not None:
        return safe_key(PROCESSED_PREFIX, output)
    name = source[len(UNPROCESSED_PREFIX):] if source.startswith(UNPROCESSED_PREFIX) else source
    stem, ext = posixpath.splitext(name)
    if format_for_key(name) != fmt:
        ext = EXTENSION_OF_FORMAT.get(fmt, "." + fmt)
    return PROCESSED_PREFIX + stem + ext
