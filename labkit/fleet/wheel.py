"""The wheel the instances install: labkit and worker as this machine has them, and the user's job modules."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

from labkit import kinds
from labkit.aws.clients import Clients
from labkit.aws.storage import Bucket
from labkit.config import ARTIFACTS_PREFIX
from labkit.errors import AwsError, ConfigError

WHEEL_PREFIX = ARTIFACTS_PREFIX + "labkit/"
# labkit and worker are siblings, in a checkout as in site-packages. (Paths from this file rather than
# importlib.resources: an editable install can make ``worker`` look like a namespace package.)
PACKAGES_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("labkit", "worker")
WHEEL_FILE = b"Wheel-Version: 1.0\nGenerator: labkit.fleet\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
Entry = tuple[str, bytes, int]  # name in the archive, content, file mode


def _package_files(package: str) -> list[tuple[str, Path]]:
    """(archive name, path) of a package's modules, plus ``worker/deploy/*`` (package data)."""
    root = PACKAGES_ROOT / package
    out = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root.parent).as_posix()
        if not path.is_file() or "__pycache__" in path.parts or path.name.startswith("."):
            continue
        if path.suffix == ".py" or rel.startswith("worker/deploy/"):
            out.append((rel, path))
    return out


def _installed() -> importlib.metadata.Distribution:
    """The installed labkit distribution (its metadata goes into the wheel)."""
    # The installed dist-info first: a checkout also holds a labkit.egg-info (from `pip install -e .`)
    # that may be older than the installed metadata.
    dists = sorted(importlib.metadata.distributions(name="labkit"), key=lambda d: not d.read_text("METADATA"))
    if not dists or not (dists[0].read_text("METADATA") or dists[0].read_text("PKG-INFO")):
        raise ConfigError("labkit is not installed as a package (pip install -e . in the checkout): deploy "
                          "ships the installed package to the instances")
    return dists[0]


def _sources(job_modules: Iterable[str]) -> list[Entry]:
    """labkit's and worker's files, then the job modules' as top-level modules (a job module that is
    part of labkit adds nothing; one that labkit or worker would hide or replace is refused)."""
    entries: list[Entry] = []
    for package in PACKAGES:
        for name, path in _package_files(package):
            mode = 0o755 if os.access(path, os.X_OK) and path.suffix == ".sh" else 0o644
            entries.append((name, path.read_bytes(), mode))
    have = {name: data for name, data, _ in entries}
    for name, path in kinds.module_files(job_modules):
        data = path.read_bytes()
        if have.get(name) == data:
            continue
        if name in have or _top_level(name) in PACKAGES:
            raise ConfigError(f"job module {path} would clash with labkit's own {name} in the wheel: rename it")
        entries.append((name, data, 0o644))
        have[name] = data
    return entries


def _top_level(name: str) -> str:
    """The import name a wheel entry makes: ``pkg/mod.py`` -> ``pkg``, ``mod.py`` -> ``mod``."""
    return name.split("/")[0].removesuffix(".py")


def _dist_info(dist: importlib.metadata.Distribution, entries: list[Entry]) -> list[Entry]:
    """The ``.dist-info`` files for ``entries``, RECORD (their hashes and sizes) last."""
    info = f"labkit-{dist.version}.dist-info"
    metadata = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
    out: list[Entry] = [(f"{info}/METADATA", metadata.encode(), 0o644), (f"{info}/WHEEL", WHEEL_FILE, 0o644)]
    entry_points = dist.read_text("entry_points.txt")
    if entry_points:
        out.append((f"{info}/entry_points.txt", entry_points.encode(), 0o644))
    top = sorted({_top_level(name) for name, _, _ in entries})
    out.append((f"{info}/top_level.txt", "".join(f"{t}\n" for t in top).encode(), 0o644))
    record = [f"{name},sha256={_b64_digest(data)},{len(data)}" for name, data, _ in entries + out]
    record.append(f"{info}/RECORD,,")
    out.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode(), 0o644))
    return out


def build_wheel(dest_dir: str | Path, job_modules: Iterable[str] = ()) -> Path:
    """Package the installed labkit (``labkit`` and ``worker``, with the installed metadata) as a wheel,
    with the files of ``job_modules`` (``LABKIT_JOB_MODULES``) as top-level modules beside them.

    Works the same from a source checkout (editable install) and from an installed wheel, needs no
    network and writes nothing outside ``dest_dir``. The archive is reproducible: the same sources
    give the same bytes, hence the same SHA-256 (which names the build).
    """
    dist = _installed()
    entries = _sources(job_modules)
    entries += _dist_info(dist, entries)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"labkit-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data, mode in entries:
            zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            zi.external_attr = (0o100000 | mode) << 16
            zi.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(zi, data)
    return target


def _b64_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def upload_wheel(clients: Clients, wheel: Path) -> tuple[str, str, bool]:
    """Put the wheel under ``artifacts/labkit/<build>/`` unless it is there; returns (key, sha256, uploaded)."""
    data = wheel.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = f"{WHEEL_PREFIX}{sha[:16]}/{wheel.name}"
    bucket = Bucket(clients.s3, clients.bucket_name())
    if bucket.exists(key):
        return key, sha, False
    bucket.put(key, data, "application/zip")
    return key, sha, True


def delete_wheels(clients: Clients, bucket_name: str) -> int:
    """Delete every uploaded wheel; returns how many (0 when the bucket is gone or cannot be looked at)."""
    bucket = Bucket(clients.s3, bucket_name)
    try:
        if not bucket.present():
            return 0
    except AwsError:
        return 0
    return bucket.delete_prefix(WHEEL_PREFIX)
