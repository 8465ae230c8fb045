"""The statistics of a short list of integers in plain Python: the same results as
:func:`labkit.jobs.numbers.compute`'s numpy path, bit for bit, without its fixed cost.

A number job of 5 to 20 integers is the common small job; numpy spends about 10 µs on it (array
creation, then a reduction call per statistic), plain Python about 2 µs. To give the very same floats,
the standard deviation is summed in numpy's own order (:func:`pairwise_sum`); the tests compare the two
paths on random lists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import mul

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
# Longest list taken here: below about 100 items plain Python is faster than numpy's fixed cost; past
# 128 numpy's summation splits in halves (see pairwise_sum), which this module does not copy.
SMALL = 64
EXACT_FLOATS = 2**53  # every integer up to this is a float


def pairwise_sum(values: Sequence[float]) -> float:
    """``float(np.sum(np.array(values, dtype=float64)))`` for up to 128 values, in numpy's order.

    numpy adds fewer than 8 values one by one from -0.0; up to 128 in eight interleaved accumulators,
    combined as a tree, then the remainder one by one.
    """
    n = len(values)
    if n < 8:
        total = -0.0
        for v in values:
            total += v
        return total
    r0, r1, r2, r3, r4, r5, r6, r7 = values[:8]
    end = n - n % 8
    for i in range(8, end, 8):
        r0 += values[i]
        r1 += values[i + 1]
        r2 += values[i + 2]
        r3 += values[i + 3]
        r4 += values[i + 4]
        r5 += values[i + 5]
        r6 += values[i + 6]
        r7 += values[i + 7]
    total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(end, n):
        total += values[i]
    return total


def small_int_stats(values: Sequence[object]) -> dict[str, int | float] | None:
    """count, min, max, mean, median, sum and std of a short list of plain ``int`` within 64 bits; None
    for anything else (longer, empty, other types, out of range, a spread wider than int64), which the
    numpy path then takes (and names what is wrong)."""
    n = len(values)
    if not 0 < n <= SMALL or set(map(type, values)) != {int}:
        return None
    ints: Sequence[int] = values  # type: ignore[assignment]
    low, high = min(ints), max(ints)
    if low < INT64_MIN or high > INT64_MAX or high - low > INT64_MAX:
        return None
    total = sum(ints)
    # As the numpy path: centre on c = floor(mean); deviations x - c are exact integers, rounded once to
    # float, squared, summed in numpy's order; the mean deviation (total - c*n)/n is exact.
    centre = total // n
    mean_dev = (total - centre * n) / n
    exact = sum(map(mul, ints, ints)) - centre * (2 * total - n * centre)  # sum of (x - c)**2
    if exact <= EXACT_FLOATS:
        # Every square and every partial sum is then an integer that a float holds exactly: numpy's
        # sum, in whatever order, is this number.
        squares = float(exact)
    else:
        deviations = [float(x - centre) for x in ints]
        squares = pairwise_sum([d * d for d in deviations])
    variance = squares / n - mean_dev * mean_dev
    ordered = sorted(ints)
    k = n // 2
    pair_sum = ordered[k] * 2 if n % 2 else ordered[k - 1] + ordered[k]
    median: int | float = pair_sum // 2 if pair_sum % 2 == 0 else pair_sum / 2
    return {"count": n, "min": low, "max": high, "mean": total / n, "median": median, "sum": total,
            "std": math.sqrt(max(variance, 0.0))}
