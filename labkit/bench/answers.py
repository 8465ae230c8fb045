"""The number jobs the scenarios send, and answers computed independently of labkit to check the
replies against."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from labkit.errors import LabkitError


def number_lists(n: int, seed: int = 0) -> list[list[int]]:
    """``n`` small lists of integers (5 to 20 items each)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(-1000, 1000, size=int(rng.integers(5, 21))).tolist() for _ in range(n)]


def plain_stats(values: Sequence[int | float]) -> dict[str, Any]:
    """count/min/max/mean/median with the standard library: an independent reference."""
    return {"count": len(values), "min": min(values), "max": max(values),
            "mean": sum(values) / len(values), "median": statistics.median(values)}


def matches(result: Any, expected: dict[str, Any]) -> bool:
    """Does a number job's result equal :func:`plain_stats` (the mean within float rounding)?"""
    if not isinstance(result, dict):
        return False
    return all(result.get(k) == expected[k] for k in ("count", "min", "max", "median")) and \
        abs(result.get("mean", float("nan")) - expected["mean"]) <= 1e-9 * max(1.0, abs(expected["mean"]))


def job_ok(job: Any, values: Sequence[int]) -> bool:
    """Did this answered :class:`~labkit.future.Job` get the right statistics of ``values``?"""
    try:
        return matches(job.result(timeout=0), plain_stats(values))
    except LabkitError:
        return False


def close(result: Any, ref: dict[str, Any]) -> bool:
    """Exact count/min/max; mean and median within float rounding of numpy's."""
    if not isinstance(result, dict) or any(result.get(k) != ref[k] for k in ("count", "min", "max")):
        return False
    scale = max(abs(ref["min"]), abs(ref["max"]), 1.0)
    return all(abs(float(result.get(k, np.inf)) - ref[k]) <= 1e-9 * scale for k in ("mean", "median"))
