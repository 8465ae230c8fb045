"""Where things live in the bucket: the prefixes, and keys built so that they cannot escape them.

    images/unprocessed/<hash>/<name>   uploaded images (``Lab.upload_image``): <hash> is the first 16 hex
                                       digits of the file's SHA-256, so different files never share a key
                                       (the default, single-user layout: the embedded emulator)
    images/unprocessed/<caller id>/<hash>/<name>
                                       the same where IAM tells callers apart (AWS, an emulator given keys):
                                       <caller id> is IAM's ${aws:userid} (``Clients.caller_id``), the prefix a
                                       student may list on a class's shared bucket (``labkit policy student``)
    images/processed/<job id>/<name>   results of image jobs: each job writes under its own id
    images/unprocessed/<name>, images/processed/<name>
                                       the original lab's plain-text image jobs (flat names, as it expects)
    payloads/<job id>.<format>    claim-check payloads and results too large for a message
    logs/<worker>/...             worker logs (``labkit worker --log-to-s3``)
    artifacts/labkit/<build>/...  the wheel EC2 workers install (``labkit deploy``)

Pure functions: no AWS call, no Pillow.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from typing import NamedTuple

from labkit.config import PROCESSED_PREFIX, UNPROCESSED_PREFIX
from labkit.errors import InvalidInput

_SAFE_NAME = re.compile(r"^[A-Za-z0-9._\-][A-Za-z0-9._\- /()+=@,:]*$")  # ':' as in a role session's id
# A job id that can be a key's folder as it is (labkit's ids are 32 hex digits); others are hashed.
_SAFE_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
# A caller id (STS UserId: AIDA..., AROA...:<session name>) as a folder: session names hold [\w+=,.@-].
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_+=,.@:-]{0,127}$")
UPLOAD_HASH_CHARS = 16  # 64 bits of SHA-256: two different files sharing a prefix is not a practical worry


class ImageFormat(NamedTuple):
    """What labkit knows of one image format it writes."""

    extensions: tuple[str, ...]  # its file extensions; the first is the one it is written with
    content_type: str
    pillow: str  # Pillow's name for it


# The one table of image formats (by their canonical name); the maps below and those of labkit.jobs.images, the
# client, the CLI and the widgets are read from it.
IMAGE_FORMATS = {
    "png": ImageFormat(("png",), "image/png", "PNG"),
    "jpeg": ImageFormat(("jpg", "jpeg", "jpe"), "image/jpeg", "JPEG"),
    "webp": ImageFormat(("webp",), "image/webp", "WEBP"),
    "gif": ImageFormat(("gif",), "image/gif", "GIF"),
    "bmp": ImageFormat(("bmp",), "image/bmp", "BMP"),
    "tiff": ImageFormat(("tif", "tiff"), "image/tiff", "TIFF"),
}
# File extension -> image format, and the extension each format is written with.
FORMAT_OF_EXTENSION = {ext: name for name, f in IMAGE_FORMATS.items() for ext in f.extensions}
EXTENSION_OF_FORMAT = {name: "." + f.extensions[0] for name, f in IMAGE_FORMATS.items()}
OCTET_STREAM = "application/octet-stream"  # the content type of bytes of no known image format


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
        raise InvalidInput(f"image name {name!r} has characters outside letters, digits and ._-/()+=@,: and space")
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


def content_type(fmt: str | None) -> str:
    """The content type of an image format (``jpeg``: ``image/jpeg``); ``application/octet-stream`` for None or a
    format labkit does not know (``content_type(format_for_key(name))`` for a file name)."""
    known = IMAGE_FORMATS.get(fmt or "")
    return known.content_type if known else OCTET_STREAM


def upload_prefix(owner: str | None = None) -> str:
    """Where a caller's uploads go: ``images/unprocessed/<owner>/`` (IAM's ``${aws:userid}``), or
    ``images/unprocessed/`` without one."""
    if owner is None:
        return UNPROCESSED_PREFIX
    if not _OWNER.match(owner):
        raise InvalidInput(f"caller id {owner!r} cannot name a folder of the bucket")
    return f"{UNPROCESSED_PREFIX}{owner}/"


def upload_key(data: bytes, name: str, owner: str | None = None) -> str:
    """``images/unprocessed/[<owner>/]<hash>/<name>``: ``<hash>`` is the start of the data's SHA-256; ``<owner>``
    the caller's id, where IAM tells callers apart (:func:`upload_prefix`).

    Two different files called ``cat.png`` (two students, or one student's two versions) land on two keys;
    the same file uploaded twice lands on one key with the same bytes, which changes nothing for anyone."""
    name = safe_key(UNPROCESSED_PREFIX, name)[len(UNPROCESSED_PREFIX):]
    digest = hashlib.sha256(data).hexdigest()[:UPLOAD_HASH_CHARS]
    return safe_key(UNPROCESSED_PREFIX, f"{upload_prefix(owner)[len(UNPROCESSED_PREFIX):]}{digest}/{name}")


def job_folder(job_id: str) -> str:
    """The folder of one job's results: its id when that is a plain name, else ``id-`` and its SHA-256."""
    if _SAFE_SEGMENT.match(job_id):
        return job_id
    return "id-" + hashlib.sha256(job_id.encode()).hexdigest()[:32]


def output_key(source: str, fmt: str, output: str | None = None, job_id: str | None = None) -> str:
    """Where an image job writes its result.

    - ``output`` given: ``images/processed/<output>``, as the caller asked (then the caller keeps names apart);
    - else ``images/processed/<job id>/<source file name>`` with the output format's extension: a key no
      other job writes, so a result stays as it was after any later job (a redelivered request, with the
      same id, writes the same bytes again);
    - without a job id, ``images/processed/<source name>`` (flat, as the original lab's names).
    """
    if output is not None:
        return safe_key(PROCESSED_PREFIX, output)
    name = source[len(UNPROCESSED_PREFIX):] if source.startswith(UNPROCESSED_PREFIX) else source
    if job_id:
        name = f"{job_folder(job_id)}/{posixpath.basename(name)}"
    stem, ext = posixpath.splitext(name)
    if format_for_key(name) != fmt:
        ext = EXTENSION_OF_FORMAT.get(fmt, "." + fmt)
    return PROCESSED_PREFIX + stem + ext
