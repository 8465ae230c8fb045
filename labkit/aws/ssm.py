"""SSM Parameter Store: reading a parameter (such as the public ones naming the current Amazon Linux images)."""

from __future__ import annotations

from typing import Any

from labkit.aws.calls import call


def parameter(ssm: Any, name: str) -> str:
    """The parameter's value; :class:`~labkit.errors.AwsError` when it cannot be read."""
    return call(ssm, "get_parameter", f"reading {name}", Name=name)["Parameter"]["Value"]
