"""Pin the EC2 worker's dependencies with their hashes: writes worker/deploy/requirements.txt.

    python -m worker.deploy.pin_requirements

The instances run Amazon Linux 2023's Python 3.11 on x86_64 (t3.*) or arm64 (t4g.*). This downloads, with pip,
the binary wheels of labkit's runtime dependencies (pyproject.toml) and of everything they need, for CPython
3.11 on both machines, and writes each distribution's exact version with the SHA-256 of every wheel that may
be installed. The bootstrap installs them with ``pip install --require-hashes --only-binary :all:``: a file
that differs by one byte from the one pinned is refused. Run it again to move to newer releases, and commit
the result (tests/test_bootstrap.py checks the file against labkit's requirements).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
TARGET = ROOT / "worker" / "deploy" / "requirements.txt"
PYTHON = "3.11"
PLATFORMS = {
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
    "arm64": ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
}
HEADER = """\
# The EC2 worker's dependencies, pinned with the SHA-256 of every wheel that may be installed (CPython 3.11 on
# Amazon Linux 2023, x86_64 and arm64). Written by worker/deploy/pin_requirements.py: do not edit by hand.
# worker/deploy/bootstrap.sh installs them with pip install --require-hashes --only-binary :all:.
"""


def download(into: Path, machine: str, requirements: list[str], deps: bool) -> None:
    platforms = [arg for tag in PLATFORMS[machine] for arg in ("--platform", tag)]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
           "--python-version", PYTHON, "--implementation", "cp", "--abi", "cp" + PYTHON.replace(".", ""),
           *platforms, "--dest", str(into), *([] if deps else ["--no-deps"]), *requirements]
    subprocess.run(cmd, check=True)


def name_and_version(wheel: Path) -> tuple[str, str]:
    name, version = wheel.name.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def main() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    with tempfile.TemporaryDirectory() as tmp:
        first = Path(tmp) / "x86_64"
        download(first, "x86_64", deps, deps=True)  # resolve once, for one machine
        pins = sorted({name_and_version(w) for w in first.glob("*.whl")})
        download(Path(tmp) / "arm64", "arm64", [f"{n}=={v}" for n, v in pins], deps=False)  # the same versions
        hashes: dict[str, set[str]] = {n: set() for n, _ in pins}
        for wheel in Path(tmp).glob("*/*.whl"):
            hashes[name_and_version(wheel)[0]].add(hashlib.sha256(wheel.read_bytes()).hexdigest())
    lines = [HEADER]
    for name, version in pins:
        lines.append(f"{name}=={version} \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in sorted(hashes[name])))
    TARGET.write_text("\n".join(lines) + "\n")
    print(f"wrote {TARGET.relative_to(ROOT)}: {len(pins)} distributions, "
          f"{sum(len(h) for h in hashes.values())} wheels")


if __name__ == "__main__":
    main()
