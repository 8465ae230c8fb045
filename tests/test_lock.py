"""The lock (requirements.lock, written by .ci/lock.py) checked against itself and pyproject.toml, never against
whatever happens to be installed; the EC2 worker's pins are a part of it and go into the user data; the check
that `make test` runs names a drifted package in one line; and, with the package registry, the registry's own
metadata and wheels agree with both files."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from pip._vendor.packaging.markers import default_environment
from pip._vendor.packaging.requirements import Requirement

from labkit import fleet
from tests.conftest import ROOT

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib


def _load_lock_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("labkit_lock_tool", ROOT / ".ci" / "lock.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


lock_tool = _load_lock_tool()
LOCK = lock_tool.read_pins((ROOT / "requirements.lock").read_text())
WORKER = lock_tool.read_pins((ROOT / "worker" / "deploy" / "requirements.txt").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def environment(python: str = "3.11", platform: str = "linux", machine: str = "x86_64") -> dict[str, str]:
    """Marker values of another machine (the lock is universal: its markers say where each line applies)."""
    env = dict(default_environment())
    os_name, system = {"linux": ("posix", "Linux"), "darwin": ("posix", "Darwin"), "win32": ("nt", "Windows")}[platform]
    env.update(python_version=python, python_full_version=python + ".0", sys_platform=platform, os_name=os_name,
               platform_system=system, platform_machine=machine, implementation_name="cpython",
               platform_python_implementation="CPython", extra="")
    return env


# Where labkit is installed from the lock: CI and the EC2 workers (Linux, 3.11), and laptops (conda: 3.11).
ENVIRONMENTS = [environment(), environment(machine="aarch64"), environment(platform="darwin", machine="arm64"),
                environment(platform="win32", machine="AMD64"), environment("3.10"), environment("3.12")]
WORKER_ENVIRONMENTS = ENVIRONMENTS[:2]


def pinned(env: dict[str, str]) -> dict[str, str]:
    """name -> version of the lock's lines that apply in ``env``; each name at most once."""
    out: dict[str, str] = {}
    for pin in LOCK:
        if pin.applies(env):
            assert pin.name not in out, f"{pin.name} is pinned twice for {env['sys_platform']} {env['python_version']}"
            out[pin.name] = pin.version
    return out


def wanted() -> list[Requirement]:
    """What pyproject.toml asks for: the dependencies, every extra's, and the build backend's."""
    project = PYPROJECT["project"]
    specs = [*project["dependencies"], *PYPROJECT["build-system"]["requires"]]
    specs += [s for items in project["optional-dependencies"].values() for s in items if not s.startswith("labkit[")]
    return [Requirement(s) for s in specs]


# -- the lock against itself and pyproject.toml ---------------------------------------------------------------

def test_every_line_of_the_lock_is_an_exact_version_with_its_hashes() -> None:
    assert len(LOCK) > 100
    for pin in LOCK:
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!]*", pin.version), pin.text
        assert pin.hashes and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in pin.hashes), pin.text


@pytest.mark.parametrize("env", ENVIRONMENTS, ids=lambda e: f"{e['sys_platform']}-{e['platform_machine']}-"
                                                         f"{e['python_version']}")
def test_the_lock_meets_every_requirement_of_pyproject_on_each_machine(env: dict[str, str]) -> None:
    versions = pinned(env)
    for req in wanted():
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        name = lock_tool.canonical(req.name)
        assert name in versions, f"{req} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(versions[name], prereleases=True), \
            f"requirements.lock has {name}=={versions[name]}, pyproject.toml asks for {req}: run `make lock`"


def test_each_line_of_the_lock_is_there_for_labkit_or_another_line() -> None:
    # uv writes who needs each line ("# via"): labkit itself, the tooling (pip, the build backend), or a package
    # that is pinned in the lock too. No orphan, no dangling parent.
    names = {p.name for p in LOCK}
    for pin in LOCK:
        assert pin.via, f"{pin.name}: the lock does not say what it is there for"
        assert set(pin.via) <= names | {"labkit", ".ci/tooling.in"}, (pin.name, pin.via)


def test_the_locked_tooling_is_pip_and_pyprojects_build_backend() -> None:
    tooling = [ln for ln in (ROOT / ".ci" / "tooling.in").read_text().splitlines() if ln and not ln.startswith("#")]
    assert tooling == ["pip", *PYPROJECT["build-system"]["requires"]]
    assert {p.name for p in LOCK if ".ci/tooling.in" in p.via} == {"pip", "setuptools"}


# -- the EC2 worker's pins: a part of the lock --------------------------------------------------------------

def runtime_closure(env: dict[str, str]) -> set[str]:
    """labkit's runtime packages by the lock's own graph: pyproject's dependencies, and what they pull in."""
    children: dict[str, set[str]] = {}
    for pin in LOCK:
        if pin.applies(env):
            for parent in pin.via:
                children.setdefault(parent, set()).add(pin.name)
    todo = [lock_tool.canonical(Requirement(s).name) for s in PYPROJECT["project"]["dependencies"]]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += children.get(name, ())
    return seen


def test_the_worker_pins_are_the_locks_versions_of_exactly_labkits_runtime_packages() -> None:
    worker = {p.name: p for p in WORKER}
    # Every one at the lock's version, with hashes the lock has (a part of the lock, not a second resolution)
    for env in WORKER_ENVIRONMENTS:
        versions = pinned(env)
        for pin in WORKER:
            lock = versions.get(pin.name)
            assert pin.version == lock, f"{pin.name}: worker {pin.version}, lock {lock}"
    lock_hashes = {(p.name, p.version): set(p.hashes) for p in LOCK}
    for pin in WORKER:
        assert pin.hashes and set(pin.hashes) <= lock_hashes[(pin.name, pin.version)], pin.name
    # And together exactly what labkit needs at run time on either machine: no notebook or test package on EC2
    assert set(worker) == runtime_closure(WORKER_ENVIRONMENTS[0]) | runtime_closure(WORKER_ENVIRONMENTS[1])
    assert {"boto3", "botocore", "numpy", "pillow"} <= set(worker) and not {"moto", "jupyterlab"} & set(worker)
    # numpy and Pillow have one wheel per machine (x86_64, arm64); the pure-Python ones one for both
    assert len(worker["numpy"].hashes) == 2 and len(worker["pillow"].hashes) == 2
    assert len(worker["boto3"].hashes) == 1


def test_the_worker_pins_are_written_into_the_user_data() -> None:
    from tests.test_bootstrap import sample_user_data
    script = sample_user_data()
    for pin in WORKER:
        assert f"{pin.name}=={pin.version}" in script and all(h in script for h in pin.hashes)
    assert "pip_install --require-hashes --only-binary :all:" in script


# -- every install takes the lock -----------------------------------------------------------------------------

def test_make_ci_and_conda_install_from_the_lock_by_hash() -> None:
    dry = subprocess.run(["make", "-n", "-B", "venv"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "--require-hashes -r requirements.lock" in dry and "--no-deps --no-build-isolation -e ." in dry
    assert not re.search(r"pip install .*(--upgrade|-U)\b", dry)  # nothing newer than the lock
    test = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert test.index(".ci/lock.py check") < test.index("tests.shards")
    env = (ROOT / "environment.yml").read_text()
    pip_section = env.split("- pip:", 1)[1]
    assert re.search(r"^\s+- --require-hashes$", pip_section, re.M) and re.search(r"^\s+- -r requirements.lock$",
                                                                               pip_section, re.M)
    # conda brings only Python (the workers' 3.11) and pip: no package from another source beside the lock
    conda = re.findall(r"^  - ([^\s:]+)$", env.split("dependencies:", 1)[1], re.M)
    assert conda == ["python=3.11", "pip"]


def test_the_check_names_a_package_that_differs_from_the_lock_in_one_line(tmp_path: Path) -> None:
    tool = [sys.executable, str(ROOT / ".ci" / "lock.py"), "check"]
    # Given the lock with moto moved to another version and one line (six) dropped
    text = (ROOT / "requirements.lock").read_text()
    moto = next(p for p in LOCK if p.name == "moto")
    drifted = text.replace(f"moto=={moto.version} ", "moto==0.0.1 ")
    six = next(p for p in LOCK if p.name == "six")
    drifted = drifted.replace(six.text, "")
    assert drifted.count("moto==0.0.1") == 1 and "six==" not in drifted
    (tmp_path / "drifted.lock").write_text(drifted)
    # When the check runs against it
    out = subprocess.run([*tool, str(tmp_path / "drifted.lock")], capture_output=True, text=True)
    # Then it fails with one line that names both and says what to do, no traceback
    assert out.returncode == 1 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert f"moto is {moto.version}, the lock says 0.0.1" in out.stderr
    assert f"six {six.version} is not in the lock" in out.stderr
    assert "make venv" in out.stderr


# -- with the package registry -------------------------------------------------------------------------------

def registry(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *cmd],
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_each_locked_package_has_its_own_requirements_met_by_the_lock(tmp_path: Path) -> None:
    # (the registry's metadata of every package the lock pins for this machine, read without installing any)
    report = tmp_path / "report.json"
    registry(["install", "--dry-run", "--quiet", "--ignore-installed", "--require-hashes", "--no-deps",
              "--report", str(report), "-r", str(ROOT / "requirements.lock")])
    items = json.loads(report.read_text())["install"]
    env = dict(default_environment())
    versions = pinned(env)
    assert {lock_tool.canonical(i["metadata"]["name"]) for i in items} == set(versions)
    # The extras something asks of a package (moto[server], ...) count for its requirements too: found by
    # following only the requirements that apply, from pyproject's, until nothing new is asked
    requires = {}
    for item in items:
        meta = item["metadata"]
        requires[lock_tool.canonical(meta["name"])] = [Requirement(r) for r in meta.get("requires_dist") or []]
    asked: dict[str, set[str]] = {name: {""} for name in requires}

    def applies(req: Requirement, extras: set[str]) -> bool:
        return req.marker is None or any(req.marker.evaluate({**env, "extra": e}) for e in extras)

    todo = [r for r in wanted() if applies(r, {""})]
    while todo:
        req = todo.pop()
        dep = lock_tool.canonical(req.name)
        assert dep in requires, f"{req} is asked for and not in the lock"
        new = set(req.extras) - asked[dep]
        if new:
            asked[dep] |= new
            todo += [r for r in requires[dep] if applies(r, asked[dep])]
    unmet = []
    for name, reqs in requires.items():
        for req in reqs:
            dep = lock_tool.canonical(req.name)
            if applies(req, asked[name]) and (dep not in versions or
                                              not req.specifier.contains(versions[dep], prereleases=True)):
                unmet.append(f"{name}=={versions[name]} needs {req}, the lock has {versions.get(dep)}")
    assert not unmet, unmet


@pytest.mark.slow
def test_the_worker_pins_are_the_registrys_wheels_and_complete_on_both_machines(tmp_path: Path) -> None:
    # (downloads the pinned wheels for both machines, dependencies resolved by pip: with --require-hashes a
    # dependency that is not pinned, or pinned at a version its parent does not accept, fails the download)
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_28_aarch64"):
        registry(["download", "--quiet", "--require-hashes", "--only-binary=:all:", "--python-version", "3.11",
                  "--implementation", "cp", "--abi", "cp311", "--platform", platform,
                  "--dest", str(tmp_path / platform), "-r", str(fleet.DEPLOY_DIR / "requirements.txt")])
        assert len(list((tmp_path / platform).glob("*.whl"))) == len(WORKER)


def test_the_test_only_node_emulator_is_installed_from_its_lock() -> None:
    # .ci/run installs fauxqs with `npm ci`: exactly the lock, each package checked by its integrity hash
    assert re.search(r"^npm ci .*--prefix tests/emulators", (ROOT / ".ci" / "run").read_text(), re.M)
    folder = ROOT / "tests" / "emulators"
    wanted = json.loads((folder / "package.json").read_text())["dependencies"]
    locked = json.loads((folder / "package-lock.json").read_text())["packages"]
    assert locked[""]["dependencies"] == wanted
    for name, version in wanted.items():
        assert locked[f"node_modules/{name}"]["version"] == version
    unchecked = [key for key, p in locked.items() if key and not p.get("integrity", "").startswith("sha512-")]
    assert not unchecked, f"locked without an integrity hash: {unchecked}"
