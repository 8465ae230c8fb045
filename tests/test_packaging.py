"""pyproject.toml keeps lower bounds (tests/test_lock.py checks the lock that installs take); the README keeps
the two commands first."""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10: pip vendors the same parser
    from pip._vendor import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _name_and_bound(spec: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*(>=\s*[0-9.]+)?", spec)
    assert m, spec
    return m.group(1).lower(), (m.group(2) or "").replace(" ", "")


def _pyproject_deps() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(meta["dependencies"])
    for items in meta["optional-dependencies"].values():
        specs += [s for s in items if not s.startswith("labkit[")]
    return dict(_name_and_bound(s) for s in specs)


def test_every_dependency_has_a_lower_bound():
    assert all(bound.startswith(">=") for bound in _pyproject_deps().values())


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    head = text[:1500]
    assert "make run" in head and "make test" in head
    assert head.index("make run") < head.index("make test")


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


# The newest parameters of the AWS calls labkit makes, with the first botocore release that has them (botocore's
# changelog: 1.34.101 "adds MessageSystemAttributeNames to ReceiveMessageRequest to replace AttributeNames").
# boto3 X.Y.Z requires botocore >= X.Y.Z. Every parameter of every call labkit made across the fleet, worker,
# CLI, provisioning, image, memory, health and IAM tests was checked against botocore 1.34.101's service
# models (and 1.34.100's, which lacks only this one): add a row when labkit starts using a newer parameter.
NEWEST_API = {("sqs", "ReceiveMessage", "MessageSystemAttributeNames"): "1.34.101"}


def test_the_boto3_lower_bound_has_every_api_parameter_labkit_uses():
    import botocore.session
    from pip._vendor.packaging.version import Version

    bound = Version(_pyproject_deps()["boto3"].removeprefix(">="))
    sources = "\n".join(p.read_text() for p in (ROOT / "labkit").rglob("*.py"))
    models = botocore.session.get_session()
    for (service, operation, parameter), first in NEWEST_API.items():
        # labkit passes it, and it is what botocore calls it
        assert parameter in sources, f"{parameter} is no longer used: drop its row"
        assert parameter in models.get_service_model(service).operation_model(operation).input_shape.members
        # and the lower bound is a release that has it
        assert bound >= Version(first), f"boto3>={bound} lacks {service} {operation} {parameter} (needs {first})"


def test_make_lab_starts_labkit_then_jupyterlab_on_loopback_with_a_token():
    from tests.browser import make_lab_command  # `make -n lab`: checks that `labkit up` comes first
    cmd = make_lab_command()
    assert cmd[0].endswith("/jupyter") and cmd[1] == "lab"
    assert "--ServerApp.ip=127.0.0.1" in cmd and "--LabApp.default_url=/lab/tree/notebooks" in cmd
    assert not [w for w in cmd if "token" in w.lower() or "password" in w.lower()]  # Jupyter's own token stays on
    head = (ROOT / "README.md").read_text()[:1500]
    assert head.index("make test") < head.index("make lab")
