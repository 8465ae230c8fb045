"""The "numbers" job: summary statistics of a list of numbers.

Input is a list of JSON-decoded numbers, the legacy plain-text form ("1,5,22" or "1 5 22"), or a 1-D
numpy array (e.g. decoded from a ``.npy`` claim-check payload). Vectorised with numpy, millions of numbers
are cheap (the median uses ``np.partition``, linear time); short lists of integers take a plain-Python path
with the same results (:mod:`labkit.jobs.small_numbers`), for numpy's fixed cost would dominate them.

Integers are exact: when every item is an integer, min, max, sum (a Python int, never overflowing) and
median (when it is a whole number) are exact, and the mean is the correctly rounded quotient of the exact
sum. Float sums use an error-free extraction (Rump, Ogita and Oishi's AccSum idea), so cancellation does
not ruin the sum or the mean.
"""

from __future__ import annotations

import math
import numbers as _numbers
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import numpy as np

from labkit.errors import InvalidInput
from labkit.jobs.small_numbers import INT64_MAX, INT64_MIN, small_int_stats

__all__ = ["MAX_RANDOM_LENGTH", "compute", "parse_text", "to_array", "format_legacy", "format_legacy_error"]

_SHOW_LIMIT = 40  # longest repr shown in an error message

# Legacy text form: numbers separated by commas and/or whitespace.
_INT_TOKEN = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_TOKEN = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
_NONFINITE_TOKEN = re.compile(r"[+-]?(?:nan|inf|infinity)", re.IGNORECASE)
# Characters of plain numbers and separators: tokens made only of these are numbers exactly when
# int()/float() accept them (no "_", "nan", "inf" or non-ASCII digits can slip through).
_NUMBER_CHARS = re.compile(r"[0-9eE+\-.,\s]*")

# The original lab's preset list (its client's second option).
PRESET = [1, 5, 22, 33, 9, 0, -15, 8, 22, 100, 33, 62, 90, 150, 1, 2, 3]
# The longest random list (the original lab's third option) the CLI and the numbers panel make: 80 MB as
# int64, a claim check a worker holds easily; past it a typo (--random 1000000000000) would ask for terabytes.
MAX_RANDOM_LENGTH = 10_000_000

# ---------------------------------------------------------------------------------------------- errors


def _short(text: str) -> str:
    """Truncate ``text`` to about ``_SHOW_LIMIT`` characters for an error message."""
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def _show_int(value: int) -> str:
    if value.bit_length() > 10_000:  # str() of such an int is slow or refused (int_max_str_digits)
        return f"an integer of about {int(value.bit_length() * math.log10(2))} digits"
    return _short(str(value))


def _show(value: Any) -> str:
    """A short, JSON-flavoured rendering of a bad item."""
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, int):
        return _show_int(value)
    if isinstance(value, float):
        return repr(float(value))
    return _short(repr(value))


def _item(index: int) -> str:
    """How a message names the item at 0-based ``index``: counted from 1, as people count."""
    return f"item {index + 1}"


def _too_large(index: int, shown: str) -> InvalidInput:
    return InvalidInput(f"{_item(index)} is an integer too large for 64 bits: {shown}")


def _not_finite(index: int, shown: str) -> InvalidInput:
    return InvalidInput(f"{_item(index)} is not a finite number: {shown}")


def _empty() -> InvalidInput:
    return InvalidInput("the list of numbers is empty")


# ----------------------------------------------------------------------------------------- text input


def parse_text(text: str) -> list[int | float]:
    """Parse the legacy text form: numbers separated by commas and/or whitespace.

    Integer tokens become ``int``, others (``1.5``, ``-3e2``) ``float``; empty tokens (trailing commas)
    are ignored. Raises ``InvalidInput`` naming the first bad token by its place among the non-empty
    tokens, counted from 1 ("item 3 is not a number: 'x'" for "1 5 x").
    """
    if not isinstance(text, str):
        raise InvalidInput(f"numbers text must be a string, got {type(text).__name__}")
    tokens = text.replace(",", " ").split()
    # Fast path in C (map/int/float); any problem falls through to the slow path, which finds and
    # names the first bad token.
    if _NUMBER_CHARS.fullmatch(text):
        try:
            if "." in text or "e" in text or "E" in text:
                values: list[int | float] = [
                    float(t) if ("." in t or "e" in t or "E" in t) else int(t) for t in tokens
                ]
                ints = [v for v in values if type(v) is int]
            else:
                values = ints = list(map(int, tokens))
        except ValueError:  # e.g. "1e", "+-1", or more digits than int() accepts
            pass
        else:
            if (
                math.inf not in values
                and -math.inf not in values
                and (not ints or (min(ints) >= INT64_MIN and max(ints) <= INT64_MAX))
            ):
                return values
    return [_parse_token(i, t) for i, t in enumerate(tokens)]


def _parse_token(index: int, token: str) -> int | float:
    if _INT_TOKEN.fullmatch(token):
        if len(token.lstrip("+-").lstrip("0")) > 19:
            raise _too_large(index, _short(token))
        value = int(token)
        if not INT64_MIN <= value <= INT64_MAX:
            raise _too_large(index, _short(token))
        return value
    if _FLOAT_TOKEN.fullmatch(token):
        number = float(token)
        if not math.isfinite(number):
            raise _not_finite(index, _short(repr(token)))
        return number
    if _NONFINITE_TOKEN.fullmatch(token):
        raise _not_finite(index, _short(repr(token)))
    raise InvalidInput(f"{_item(index)} is not a number: {_short(repr(token))}")


# ----------------------------------------------------------------------------------------- validation


def to_array(values: list[Any] | tuple[Any, ...] | str | np.ndarray) -> np.ndarray:
    """Validate ``values`` and return them as a 1-D ``int64`` (all integers) or ``float64`` array.

    Accepts what ``compute`` accepts and raises the same ``InvalidInput`` errors. An ``int64`` or
    ``float64`` input array is returned as is (not copied).
    """
    if isinstance(values, np.ndarray):
        return _array_to_array(values)
    if isinstance(values, str):
        values = parse_text(values)
    if isinstance(values, (list, tuple)):
        return _list_to_array(values)
    raise InvalidInput(f"numbers must be a list of numbers, got {type(values).__name__}")


def _list_to_array(values: list[Any] | tuple[Any, ...]) -> np.ndarray:
    if not values:
        raise _empty()
    types = set(map(type, values))
    if types == {int}:
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            pass
    elif types == {float}:
        array = np.array(values, dtype=np.float64)
        if np.isfinite(array).all():
            return array
    elif types == {int, float}:
        ints = [v for v in values if type(v) is int]
        if min(ints) >= INT64_MIN and max(ints) <= INT64_MAX:
            array = np.array(values, dtype=np.float64)
            if np.isfinite(array).all():
                return array
    # Slow path: find the first bad item, or normalise unusual types (int/float subclasses,
    # numpy scalars) to plain int/float and retry.
    clean = [_check_item(i, v) for i, v in enumerate(values)]
    return _list_to_array(clean)


def _check_item(index: int, value: Any) -> int | float:
    if isinstance(value, (bool, np.bool_)):
        raise InvalidInput(f"{_item(index)} is a boolean, not a number: {_show(value)}")
    if isinstance(value, (int, np.integer)):
        number = int(value)
        if not INT64_MIN <= number <= INT64_MAX:
            raise _too_large(index, _show_int(number))
        return number
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if not math.isfinite(number):
            raise _not_finite(index, _short(str(value)) if isinstance(value, np.floating) else _show(value))
        return number
    if isinstance(value, str):
        raise InvalidInput(f"{_item(index)} is a string, not a number: {_show(value)}")
    if isinstance(value, (list, tuple)):
        raise InvalidInput(f"{_item(index)} is a list, not a number")
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        # JSON integer literals too long for int() arrive as Decimal (labkit.protocol.json_loads).
        raise _too_large(index, _short(str(value)))
    if isinstance(value, _numbers.Number):
        raise InvalidInput(f"{_item(index)} is a {type(value).__name__}, not an int or float: {_show(value)}")
    raise InvalidInput(f"{_item(index)} is not a number: {_show(value)}")


def _array_to_array(array: np.ndarray) -> np.ndarray:
    if array.ndim != 1:
        raise InvalidInput(f"numbers must be a 1-D array, got a {array.ndim}-D array of shape {array.shape}")
    kind = array.dtype.kind
    if kind not in "iuf":
        raise InvalidInput(f"numbers must be integers or floats, got an array of {array.dtype}")
    if array.size == 0:
        raise _empty()
    if kind == "i":
        return array.astype(np.int64, copy=False)
    if kind == "u":
        if array.dtype.itemsize >= 8 and int(array.max()) > INT64_MAX:
            index = int(np.argmax(array > INT64_MAX))
            raise _too_large(index, _show_int(int(array[index])))
        return array.astype(np.int64, copy=False)
    result = array.astype(np.float64, copy=False)
    # min and max are NaN when any value is NaN, and infinite when any is: no full-size mask needed.
    if not (math.isfinite(result.min()) and math.isfinite(result.max())):
        index = int(np.argmin(np.isfinite(result)))
        raise _not_finite(index, _short(str(array[index])))
    return result


# ----------------------------------------------------------------------------------------- statistics

# Items per piece in the passes below: temporaries of one piece (512 KiB), never of the whole array.
# At least 128 (see _piecewise_sums).
CHUNK = 1 << 16


def compute(values: list[Any] | tuple[Any, ...] | str | np.ndarray, overwrite: bool = False) -> dict[str, int | float]:
    """Summary statistics of ``values``: count, min, max, mean, median, sum and std (population, ddof=0).

    ``values`` is a list of numbers, the legacy text form or a 1-D int/float numpy array. All-integer
    input gives exact int min/max/sum (and median when whole); otherwise values are floats. Every value
    is a plain Python ``int`` or ``float``. Raises ``InvalidInput`` for bad input.

    An array passed in is never modified, unless ``overwrite=True``: then the median may reorder it in
    place instead of sorting a copy of the same size (for arrays nobody else uses, like a payload just
    read from S3). The results are the same either way.
    """
    if isinstance(values, str):
        values = parse_text(values)
    if isinstance(values, (list, tuple)) and (small := small_int_stats(values)) is not None:
        return small  # the same figures as below, bit for bit, in a fifth of the time
    array = to_array(values)
    ours = not (isinstance(values, np.ndarray) and np.may_share_memory(array, values))
    in_place = (overwrite or ours) and array.flags.writeable
    if array.dtype == np.int64:
        return _int_stats(array, in_place)
    return _float_stats(array, in_place)


def _median_pair(array: np.ndarray, in_place: bool) -> tuple[Any, Any]:
    """The two middle order statistics (the same one twice for an odd count), in linear time.

    With ``in_place`` the array itself is partitioned (reordered); otherwise a partitioned copy is made.
    """
    n = array.size
    k = n // 2
    if in_place:
        array.partition(k)
        part = array
    else:
        part = np.partition(array, k)
    upper = part[k]
    lower = part[:k].max() if n % 2 == 0 else upper
    return lower, upper


def _pieces(n: int) -> range:
    return range(0, n, CHUNK)


def _piecewise_sums(n: int, piece_sums: Callable[[int, int], tuple[float, ...]]) -> tuple[float, ...]:
    """Sums over items ``[0, n)`` computed piece by piece, equal to ``np.sum`` over whole arrays.

    ``piece_sums(lo, hi)`` returns ``np.sum`` of some float64 values of items ``lo..hi``. numpy adds a
    contiguous float64 array pairwise, halving any range longer than 128 items at a multiple of 8;
    splitting the same way down to pieces of at most ``CHUNK`` items gives bit for bit the float that one
    ``np.sum`` over the whole array would, while only one piece is ever held.
    """
    return _tree_sums(0, n, piece_sums)


def _tree_sums(lo: int, hi: int, piece_sums: Callable[[int, int], tuple[float, ...]]) -> tuple[float, ...]:
    # A module-level function, not a recursive closure: a closure that calls itself is a reference cycle,
    # which would keep the whole payload array (captured by ``piece_sums``) alive until the next garbage
    # collection (measured: a worker held two 76 MiB payloads after two big jobs).
    if hi - lo <= CHUNK:
        return piece_sums(lo, hi)
    half = (hi - lo) // 2
    half -= half % 8
    left, right = _tree_sums(lo, lo + half, piece_sums), _tree_sums(lo + half, hi, piece_sums)
    return tuple(a + b for a, b in zip(left, right, strict=True))


def _exact_int_sum(array: np.ndarray, bound: int) -> int:
    """Exact sum of an int64 array; ``bound`` is max(|x|)."""
    n = array.size
    if bound * n <= INT64_MAX:
        return int(array.sum(dtype=np.int64))
    # Split x = hi * 2**32 + lo with hi in [-2**31, 2**31) and lo in [0, 2**32): per piece of CHUNK (< 2**30)
    # items neither partial sum can overflow int64.
    total = 0
    buffer = np.empty(min(n, CHUNK), dtype=np.int64)
    for start in _pieces(n):
        part = array[start : start + CHUNK]
        work = buffer[: part.size]
        hi = int(np.right_shift(part, 32, out=work).sum(dtype=np.int64))
        lo = int(np.bitwise_and(part, 0xFFFFFFFF, out=work).sum(dtype=np.int64))
        total += (hi << 32) + lo
    return total


def _centred_variance(array: np.ndarray, centre: float, scale: int = 0) -> float:
    """Corrected two-pass variance of ``x * 2**-scale`` from deviations ``x * 2**-scale - centre``.

    ``centre`` is (about) the scaled mean; ``array`` is int64 or float64 and is not modified.
    """
    n = array.size
    deviations = np.empty(min(n, CHUNK), dtype=np.float64)

    def piece_sums(lo: int, hi: int) -> tuple[float, float]:
        d = deviations[: hi - lo]
        if scale:
            np.ldexp(array[lo:hi], -scale, out=d)
            d -= centre
        else:
            np.subtract(array[lo:hi], centre, out=d)
        total = float(np.sum(d))
        np.multiply(d, d, out=d)
        return total, float(np.sum(d))

    total, squares = _piecewise_sums(n, piece_sums)
    mean_dev = total / n
    return squares / n - mean_dev * mean_dev


def _int_square_sum(array: np.ndarray, centre: int) -> float:
    """``np.sum(((array - centre) as float64) ** 2)``, piece by piece; needs max - min <= INT64_MAX."""
    n = array.size
    offsets = np.empty(min(n, CHUNK), dtype=np.int64)
    deviations = np.empty(min(n, CHUNK), dtype=np.float64)

    def piece_sums(lo: int, hi: int) -> tuple[float]:
        d = deviations[: hi - lo]
        d[...] = np.subtract(array[lo:hi], np.int64(centre), out=offsets[: hi - lo])
        np.multiply(d, d, out=d)
        return (float(np.sum(d)),)

    return _piecewise_sums(n, piece_sums)[0]


def _int_stats(array: np.ndarray, in_place: bool) -> dict[str, int | float]:
    n = int(array.size)
    low = int(array.min())
    high = int(array.max())
    total = _exact_int_sum(array, max(-low, high))

    if high - low <= INT64_MAX:
        # Centre on an integer c = floor(mean) exactly in int64, then go to float: deviations are exact
        # up to 2**53, and the mean deviation (total - c*n)/n in [0, 1) is known exactly.
        centre = total // n
        mean_dev = (total - centre * n) / n
        variance = _int_square_sum(array, centre) / n - mean_dev * mean_dev
    else:
        # Spread wider than int64: the values are huge, float rounding of x is negligible.
        variance = _centred_variance(array, total / n)

    # Last: the median may reorder the array.
    a, b = (int(x) for x in _median_pair(array, in_place))
    pair_sum = a + b
    median: int | float = pair_sum // 2 if pair_sum % 2 == 0 else pair_sum / 2

    return {"count": n, "min": low, "max": high, "mean": total / n, "median": median, "sum": total,
            "std": math.sqrt(max(variance, 0.0))}


def _accurate_sum(x: np.ndarray, scale: int, biggest: float) -> float:
    """Sum of ``x * 2**-scale`` (``x`` finite float64, not modified), accurate to about one rounding of
    the exact sum; ``biggest`` is max(|x|) * 2**-scale.

    Repeated error-free extraction: with ``sigma`` a power of two well above ``n * max|r|``,
    ``q = (sigma + r) - sigma`` keeps the high bits of each residual ``r`` on a common grid, so ``sum(q)``
    is exact in any order; ``r - q`` (also exact) is the next, much smaller, residual.
    Requires ``max|x| * 2**-scale * 2**(bit_length(n) + 3) < 2**1023``.

    The residuals are never stored: each pass recomputes a piece's residual from ``x`` and the sigmas so
    far (one or two passes in practice), so only pieces are held.
    """
    n = x.size
    shift = (n + 2).bit_length() + 1  # 2**shift > 2 * (n + 2)
    residual = np.empty(min(n, CHUNK), dtype=np.float64)
    buffer = np.empty_like(residual)
    sigmas: list[float] = []

    def residual_of(lo: int, hi: int) -> np.ndarray:
        r, q = residual[: hi - lo], buffer[: hi - lo]
        if scale:
            np.ldexp(x[lo:hi], -scale, out=r)
        else:
            r[...] = x[lo:hi]
        for sigma in sigmas:
            np.add(r, sigma, out=q)
            np.subtract(q, sigma, out=q)
            np.subtract(r, q, out=r)
        return r

    parts: list[float] = []
    for _ in range(200):
        if biggest == 0.0:
            return math.fsum(parts)
        sigma = math.ldexp(1.0, math.frexp(biggest)[1] + shift)
        part = 0.0
        biggest = 0.0
        for start in _pieces(n):
            r = residual_of(start, min(n, start + CHUNK))
            q = buffer[: r.size]
            np.add(r, sigma, out=q)
            np.subtract(q, sigma, out=q)
            np.subtract(r, q, out=r)
            part += float(np.sum(q))  # exact, and so is adding the pieces' sums
            biggest = max(biggest, -float(r.min()), float(r.max()))
        sigmas.append(sigma)
        parts.append(part)
        # Every |residual| <= sigma * 2**-53: stop when what is left cannot matter.
        if n * math.ldexp(sigma, -53) <= math.ldexp(abs(math.fsum(parts)), -12):
            break
    parts.append(_piecewise_sums(n, lambda lo, hi: (float(np.sum(residual_of(lo, hi))),))[0])
    return math.fsum(parts)


def _float_stats(array: np.ndarray, in_place: bool) -> dict[str, int | float]:
    n = int(array.size)
    low = float(array.min())
    high = float(array.max())
    biggest = max(-low, high)
    exponent = math.frexp(biggest)[1]  # biggest < 2**exponent

    # Sum, scaled by a power of two when the extraction's sigma would overflow.
    shift = (n + 2).bit_length() + 1
    scale = max(0, exponent + shift - 1020)
    total_scaled = _accurate_sum(array, scale, max(-math.ldexp(low, -scale), math.ldexp(high, -scale)))
    try:
        total = math.ldexp(total_scaled, scale)
    except OverflowError:
        raise InvalidInput("the sum of the numbers is too large for a 64-bit float") from None
    mean = math.ldexp(total_scaled / n, scale)

    # Std on values scaled near 1 when squares could overflow or underflow.
    std_scale = exponent if (exponent > 480 or exponent < -480) else 0
    variance = _centred_variance(array, math.ldexp(mean, -std_scale), std_scale)
    std = math.ldexp(math.sqrt(max(variance, 0.0)), std_scale)

    # Last: the median may reorder the array.
    a, b = (float(x) for x in _median_pair(array, in_place))
    median = (a + b) / 2
    if not math.isfinite(median):
        median = a / 2 + b / 2

    return {"count": n, "min": low, "max": high, "mean": mean, "median": median, "sum": total, "std": std}


# ------------------------------------------------------------------------------------------ formatting


def format_legacy(result: dict[str, Any]) -> str:
    """The original lab's one-line reply.

    E.g. ``count: 3, minimum: 1, maximum: 5, average: 3.0, median: 3``.
    """
    return (
        f"count: {result['count']}, minimum: {result['min']}, maximum: {result['max']}, "
        f"average: {result['mean']}, median: {result['median']}"
    )


def format_legacy_error(message: str) -> str:
    """The original lab's error reply: ``"?Error: " + message``."""
    return "?Error: " + message
