"""The statistics of a short list of integers in plain Python: the same results as
:func:`labkit.jobs.numbers.compute`'s numpy path, bit for bit, without its fixed cost.

A number job of 5 to 20 integers is the common small job; numpy spends about 13 µs on it (array
creation, then a reduction call per statistic), plain Python about 3 µs. To give the very same floats,
this path takes only lists whose squared deviations sum exactly in floats (any order of additions gives
numpy's sum); larger values go to numpy. The tests compare the two paths on random lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import mul

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Longest list taken here: below about 100 items plain Python is faster than numpy's fixed cost.
SMALL = 64
EXACT_FLOATS = 2**53  # every integer up to this is a float


def small_int_stats(values: Sequence[object]) -> dict[str, int | float] | None:
    """count, min, max, mean, median, sum and std of a short list of plain ``int`` within 64 bits; None
    for anything else (longer, empty, other types, out of range, a spread wider than int64, squared deviations
    past 2**53), which the numpy path then takes (and names what is wrong)."""
    n = len(values)
    if not 0 < n <= SMALL or set(map(type, values)) != {int}:
        return None
    ints: Sequence[int] = values  # type: ignore[assignment]
    low, high = min(ints), max(ints)
    if low < INT64_MIN or high > INT64_MAX or high - low > INT64_MAX:
        return None
    total = sum(ints)
    # As the numpy path: centre on c = floor(mean); the deviations x - c are exact integers and the mean
    # deviation (total - c*n)/n is exact.
    centre = total // n
    mean_dev = (total - centre * n) / n
    exact = sum(map(mul, ints, ints)) - centre * (2 * total - n * centre)  # sum of (x - c)**2
    if exact > EXACT_FLOATS:
        # The floats would round, and numpy's order of additions would decide how: numpy's to take.
        return None
    # Every square and every partial sum is an integer that a float holds exactly: numpy's sum, in whatever
    # order, is this number.
    variance = float(exact) / n - mean_dev * mean_dev
    ordered = sorted(ints)
    k = n // 2
    pair_sum = ordered[k] * 2 if n % 2 else ordered[k - 1] + ordered[k]
    median: int | float = pair_sum // 2 if pair_sum % 2 == 0 else pair_sum / 2
    return {"count": n, "min": low, "max": high, "mean": total / n, "median": median, "sum": total,
            "std": math.sqrt(max(variance, 0.0))}
