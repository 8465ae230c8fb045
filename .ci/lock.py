"""labkit's lock: the exact version and SHA-256 hashes of every package any install of labkit takes.

    python .ci/lock.py refresh   resolve anew from the package registry (``make lock`` runs it, then the suite)
    python .ci/lock.py check     the running environment holds exactly the lock's versions (``make test`` runs it)
    python .ci/lock.py check F   the same against lock file F

``requirements.lock`` is one universal resolution (every platform, Python 3.10 and newer; environment markers say
which lines apply where) of ``pyproject.toml`` with all its extras, plus pip and the build backend
(``.ci/tooling.in``), written by
``uv pip compile --universal --generate-hashes``. ``make venv``, ``.ci/run`` (through ``make test``) and
``environment.yml`` install it with ``pip install --require-hashes``. The EC2 worker's pins,
``worker/deploy/requirements.txt``, are a part of the same lock: its runtime packages for CPython 3.11 on Linux,
at the lock's versions, with the hashes of just the wheels an instance may install (x86_64 and arm64: the whole
list would not fit in EC2's 16 KB of user data). Both files are written by ``refresh`` and nothing else; it also
refreshes ``tests/emulators/package-lock.json``, the test-only Node emulator's lock that ``.ci/run`` installs
with ``npm ci``.

The lower bounds in ``pyproject.toml`` stay for people who install labkit into an environment of their own; the
lock is what the project runs and tests. Refresh it on purpose, run the suite against it, commit both files.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib
from pip._vendor.packaging.markers import Marker

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements.lock"
WORKER = ROOT / "worker" / "deploy" / "requirements.txt"
TOOLING = ROOT / ".ci" / "tooling.in"
NPM_LOCK = ROOT / "tests" / "emulators" / "package-lock.json"
# What an EC2 instance runs: Amazon Linux 2023's CPython 3.11 on x86_64 (t3.*) or arm64 (t4g.*).
WORKER_PYTHON = "3.11"
WORKER_MACHINES = {
    "x86_64": ("x86_64-manylinux_2_28", ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]),
    "arm64": ("aarch64-manylinux_2_28", ["manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"]),
}
LOCK_HEADER = """\
# labkit's lock: every install (make venv, make test, .ci/run, environment.yml) takes these versions by hash.
# Written by `make lock` (.ci/lock.py refresh) from pyproject.toml: do not edit by hand.
"""
WORKER_HEADER = """\
# The EC2 worker's dependencies: requirements.lock's versions of labkit's runtime packages, with the SHA-256 of
# every wheel CPython 3.11 on Amazon Linux 2023 may install (x86_64 and arm64). Written by `make lock`
# (.ci/lock.py refresh): do not edit by hand. worker/deploy/bootstrap.sh installs them with
# pip install --require-hashes --only-binary :all:.
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Pin:
    """One line of a lock: ``name==version ; marker`` with its hashes and the packages it is there for."""

    name: str
    version: str
    marker: str = ""
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)
    text: str = ""

    def applies(self, env: dict[str, str] | None = None) -> bool:
        return not self.marker or Marker(self.marker).evaluate(env)


def read_pins(text: str) -> list[Pin]:
    """The pins of a requirements file written by ``uv pip compile`` (or by this script)."""
    pins: list[Pin] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line or line[0] in "# ":
            i += 1
            continue
        entry = [line]
        while entry[-1].endswith("\\"):
            i += 1
            entry.append(lines[i])
        req = " ".join(part.rstrip("\\").strip() for part in entry)
        m = re.match(r"^([A-Za-z0-9._-]+)==(\S+?)\s*(?:;\s*(.*?))?\s*((?:--hash=\S+\s*)*)$", req)
        if not m:
            raise ValueError(f"not a pinned requirement: {req[:120]}")
        pin = Pin(canonical(m.group(1)), m.group(2), (m.group(3) or "").strip(),
                  re.findall(r"--hash=sha256:([0-9a-f]{64})", m.group(4)), text="\n".join(entry))
        i += 1
        while i < len(lines) and lines[i].startswith("    #"):  # uv's annotations: "# via a" or "# via" + list
            words = lines[i].strip("# ").removeprefix("via").strip()
            if words.startswith("-r "):  # a requirements file (.ci/tooling.in)
                pin.via.append(words[3:].strip())
            elif words:
                pin.via.append(canonical(words.split()[0]))
            i += 1
        pins.append(pin)
    return pins


def run(*cmd: str) -> None:
    subprocess.run(cmd, check=True)


def resolve_lock(uv: str) -> None:
    """requirements.lock: pyproject.toml with every extra, and .ci/tooling.in (pip, the build backend)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "lock.txt"
        subprocess.run([uv, "pip", "compile", "--quiet", "--universal", "--python-version", "3.10",
                        "--generate-hashes", "--no-header", *[a for e in extras for a in ("--extra", e)],
                        "pyproject.toml", str(TOOLING.relative_to(ROOT)), "-o", str(out)], cwd=ROOT, check=True)
        LOCK.write_text(LOCK_HEADER + out.read_text())


def worker_pins(uv: str, lock: list[Pin]) -> list[Pin]:
    """labkit's runtime packages on an instance, at the lock's versions (resolved for each machine)."""
    constraints = "\n".join(f"{p.name}=={p.version}" + (f" ; {p.marker}" if p.marker else "") for p in lock)
    found: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "lock.txt").write_text(constraints + "\n")
        for platform, _ in WORKER_MACHINES.values():
            out = subprocess.run(
                [uv, "pip", "compile", "--quiet", "--python-version", WORKER_PYTHON, "--python-platform", platform,
                 "--no-header", "--no-annotate", "-c", str(Path(tmp) / "lock.txt"), "pyproject.toml"],
                check=True, capture_output=True, text=True).stdout
            found.update((p.name, p.version) for p in read_pins(out))
    return [Pin(name, version) for name, version in sorted(found.items())]


def wheel_hashes(pins: list[Pin], lock: list[Pin]) -> None:
    """Download each pin's wheels for both machines, checked against the lock's hashes, and keep theirs."""
    lines = {(p.name, p.version): p for p in lock}
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp) / "worker.txt"
        reqs.write_text("\n".join(f"{p.name}=={p.version} " + " ".join(f"--hash=sha256:{h}"
                                                                      for h in lines[(p.name, p.version)].hashes)
                                  for p in pins) + "\n")
        for machine, (_, tags) in WORKER_MACHINES.items():
            run(sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                "--require-hashes", "--only-binary=:all:", "--python-version", WORKER_PYTHON,
                "--implementation", "cp", "--abi", "cp" + WORKER_PYTHON.replace(".", ""),
                *[a for t in tags for a in ("--platform", t)], "--dest", str(Path(tmp) / machine), "-r", str(reqs))
        by_name = {p.name: p for p in pins}
        for wheel in Path(tmp).glob("*/*.whl"):
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            pin = by_name[canonical(wheel.name.split("-")[0])]
            if digest not in pin.hashes:
                pin.hashes.append(digest)


def write_worker(pins: list[Pin]) -> None:
    entries = [f"{p.name}=={p.version} \\\n" + " \\\n".join(f"    --hash=sha256:{h}" for h in sorted(p.hashes))
               for p in pins]
    WORKER.write_text(WORKER_HEADER + "\n" + "\n".join(entries) + "\n")


def refresh() -> int:
    uv = str(Path(sys.executable).with_name("uv"))
    if not Path(uv).exists():
        print("lock: uv is not in this environment: `make venv` installs it (the dev extra)", file=sys.stderr)
        return 1
    resolve_lock(uv)
    if shutil.which("npm"):  # the test-only emulator's lock (tests/emulators), refreshed with the Python one
        subprocess.run(["npm", "install", "--package-lock-only", "--silent", "--no-audit", "--no-fund",
                        "--prefix", str(NPM_LOCK.parent)], check=True)
    lock = read_pins(LOCK.read_text())
    pins = worker_pins(uv, lock)
    wheel_hashes(pins, lock)
    write_worker(pins)
    print(f"wrote {LOCK.relative_to(ROOT)} ({len(lock)} pins) and {WORKER.relative_to(ROOT)} ({len(pins)} pins, "
          f"{sum(len(p.hashes) for p in pins)} wheels)")
    return 0


def differences(lock: list[Pin]) -> list[str]:
    """How the running environment differs from the lock: one phrase per package."""
    wanted = {p.name: p.version for p in lock if p.applies()}
    installed = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions() if d.metadata["Name"]}
    installed.pop("labkit", None)  # the project itself, installed from its folder
    out = []
    for name in sorted(wanted.keys() | installed.keys()):
        have, want = installed.get(name), wanted.get(name)
        if have == want:
            continue
        if want is None:
            out.append(f"{name} {have} is not in the lock")
        elif have is None:
            out.append(f"{name} {want} is missing")
        else:
            out.append(f"{name} is {have}, the lock says {want}")
    return out


def check(lock: Path = LOCK) -> int:
    diffs = differences(read_pins(lock.read_text()))
    if diffs:
        print(f"lock: this environment is not {lock.name} ({'; '.join(diffs)}): "
              "`rm -rf .venv && make venv` installs exactly the lock", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if argv == ["refresh"]:
        return refresh()
    if argv[:1] == ["check"] and len(argv) <= 2:
        return check(*(Path(a) for a in argv[1:]))
    print("usage:\n" + __doc__.split("\n\n")[1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
