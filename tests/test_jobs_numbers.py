"""Tests of labkit.jobs.numbers: statistics of a list of numbers, checked against ``statistics``."""

from __future__ import annotations

import json
import math
import statistics
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labkit.errors import InvalidInput
from labkit.jobs.numbers import PRESET, compute, format_legacy, format_legacy_error, parse_text, to_array

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
KEYS = {"count", "min", "max", "mean", "median", "sum", "std"}

PRESET_TEXT = "1,5,22,33,9,0,-15,8,22,100,33,62,90,150,1,2,3"  # the original lab's preset, as a student types it

int64s = st.one_of(
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    st.sampled_from([INT64_MIN, INT64_MIN + 1, -1, 0, 1, INT64_MAX - 1, INT64_MAX]),
    st.integers(min_value=-1000, max_value=1000),
)
int_lists = st.lists(int64s, min_size=1, max_size=200)
finite_floats = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
float_lists = st.lists(finite_floats, min_size=1, max_size=200)
mixed_lists = st.lists(
    st.one_of(st.integers(min_value=-(10**12), max_value=10**12), finite_floats), min_size=1, max_size=200
).filter(lambda xs: any(type(x) is float for x in xs))

relaxed = settings(deadline=None)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def assert_plain(result: dict) -> None:
    assert set(result) == KEYS
    for key, value in result.items():
        assert type(value) in (int, float), (key, type(value))
    json.dumps(result, allow_nan=False)  # JSON-serialisable, no NaN/Infinity


# ----------------------------------------------------------------------------------- property tests


@relaxed
@given(int_lists)
def test_integers_are_exact(xs: list[int]) -> None:
    # When
    result = compute(xs)

    # Then
    assert_plain(result)
    assert result["count"] == len(xs)
    assert type(result["min"]) is int and result["min"] == min(xs)
    assert type(result["max"]) is int and result["max"] == max(xs)
    assert type(result["sum"]) is int and result["sum"] == sum(xs)
    assert type(result["mean"]) is float
    assert result["mean"] == float(Fraction(sum(xs), len(xs))) == float(statistics.mean(xs))
    low, high = statistics.median_low(xs), statistics.median_high(xs)
    if (low + high) % 2 == 0:
        assert type(result["median"]) is int and 2 * result["median"] == low + high
    else:
        assert type(result["median"]) is float and result["median"] == statistics.median(xs)
    assert close(result["std"], statistics.pstdev(xs))


@relaxed
@given(float_lists)
def test_floats_match_statistics(xs: list[float]) -> None:
    result = compute(xs)

    assert_plain(result)
    assert all(type(result[k]) is float for k in KEYS - {"count"})
    assert result["count"] == len(xs)
    assert result["min"] == min(xs)
    assert result["max"] == max(xs)
    assert result["median"] == statistics.median(xs)
    assert close(result["mean"], statistics.mean(xs))
    assert close(result["sum"], math.fsum(xs))
    assert close(result["std"], statistics.pstdev(xs))


@relaxed
@given(mixed_lists)
def test_mixed_ints_and_floats_are_floats(xs: list[int | float]) -> None:
    result = compute(xs)

    assert_plain(result)
    assert all(type(result[k]) is float for k in KEYS - {"count"})
    assert result["min"] == float(min(xs))
    assert result["max"] == float(max(xs))
    assert close(result["median"], statistics.median(xs))
    assert close(result["mean"], statistics.mean(xs))
    assert close(result["std"], statistics.pstdev(xs))


@relaxed
@given(st.lists(st.floats(min_value=-1e100, max_value=1e100), min_size=1, max_size=200))
def test_float_sum_is_accurate_despite_cancellation(xs: list[float]) -> None:
    exact = math.fsum(xs)  # correctly rounded

    total = compute(xs)["sum"]

    assert abs(total - exact) <= 2 * math.ulp(exact)


@relaxed
@given(int_lists)
def test_int64_array_equals_list(xs: list[int]) -> None:
    assert compute(np.array(xs, dtype=np.int64)) == compute(xs)


@relaxed
@given(float_lists)
def test_float64_array_equals_list(xs: list[float]) -> None:
    assert compute(np.array(xs, dtype=np.float64)) == compute(xs)


@relaxed
@given(int_lists)
def test_text_equals_list(xs: list[int]) -> None:
    assert parse_text(", ".join(map(str, xs))) == xs
    assert compute(" ".join(map(str, xs))) == compute(xs)


# ------------------------------------------------------------------------------------ preset and types


@pytest.mark.parametrize("values", [PRESET_TEXT, PRESET, np.array(PRESET)], ids=["text", "list", "array"])
def test_preset_list_of_the_original_lab(values) -> None:
    result = compute(values)

    assert result["count"] == 17
    assert result["min"] == -15
    assert result["max"] == 150
    # The list sums to 526 and its sorted middle item (the 9th) is 9.
    assert result["sum"] == sum(PRESET) == 526
    assert result["median"] == statistics.median(PRESET) == 9
    assert result["mean"] == 526 / 17
    assert close(result["std"], statistics.pstdev(PRESET))


def test_values_are_plain_python_types() -> None:
    int32s = np.array([1, 2], dtype=np.int32)
    float32s = np.array([1.0], dtype=np.float32)
    for values in ([1, 2, 3], [1.0, 2.5], [1, 2.5], int32s, float32s, "1 2.5"):
        assert_plain(compute(values))


def test_integer_median_of_even_count_with_odd_sum_is_a_half() -> None:
    result = compute([1, 2, 11, 20])

    assert result["median"] == 6.5 and type(result["median"]) is float
    assert compute([1, 2])["median"] == 1.5
    assert compute([1, 3])["median"] == 2 and type(compute([1, 3])["median"]) is int


def test_single_value() -> None:
    assert compute([7]) == {"count": 1, "min": 7, "max": 7, "mean": 7.0, "median": 7, "sum": 7, "std": 0.0}


# ------------------------------------------------------------------------------------------- overflow


def test_int64_max_twice_sums_exactly() -> None:
    result = compute([INT64_MAX, INT64_MAX])

    assert result["sum"] == 2 * INT64_MAX
    assert result["mean"] == float(INT64_MAX)
    assert result["median"] == INT64_MAX
    assert result["std"] == 0.0


def test_int64_extremes() -> None:
    result = compute([INT64_MIN, INT64_MAX])

    assert result["sum"] == -1
    assert result["mean"] == -0.5
    assert result["median"] == -0.5
    assert close(result["std"], (2**64 - 1) / 2)


def test_big_int_array_sums_exactly() -> None:
    values = np.full(100_000, 2**62, dtype=np.int64)
    values[::2] = INT64_MIN

    result = compute(values)

    assert result["sum"] == 50_000 * 2**62 + 50_000 * INT64_MIN
    assert result["mean"] == (2**62 + INT64_MIN) / 2


def test_large_range_array() -> None:
    n = 1_000_000
    result = compute(np.arange(n))

    assert result["sum"] == n * (n - 1) // 2
    assert result["median"] == (n - 1) / 2
    assert result["min"] == 0 and result["max"] == n - 1
    assert close(result["std"], math.sqrt((n * n - 1) / 12))


def test_float_cancellation() -> None:
    result = compute([1e12, 0.123456789, -1e12])

    assert result["sum"] == 0.123456789
    assert result["mean"] == 0.123456789 / 3


def test_huge_floats() -> None:
    result = compute([1e308, -1e308, 5.0])

    assert result["sum"] == 5.0
    assert close(result["std"], statistics.pstdev([1e308 / 1e300, -1e308 / 1e300, 0.0]) * 1e300)
    assert compute([1.5e308, 1.7e308, -1.6e308])["median"] == 1.5e308


def test_float_sum_beyond_float64_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="too large for a 64-bit float"):
        compute([1e308, 1e308])
    with pytest.raises(InvalidInput, match="too large for a 64-bit float"):
        compute(np.full(10, 1e308))


def test_subnormal_floats() -> None:
    result = compute([5e-324, 1.5e-323])

    assert result["mean"] == 1e-323
    assert result["std"] == 5e-324


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], "the list of numbers is empty"),
        ("", "the list of numbers is empty"),
        (" , ,", "the list of numbers is empty"),
        ([1, 2, 3, "abc"], "item 4 is a string, not a number: 'abc'"),
        ([1, None], "item 2 is not a number: null"),
        ([1, 2, {"a": 1}], "item 3 is not a number: {'a': 1}"),
        ([1, 2, True], "item 3 is a boolean, not a number: true"),
        ([False], "item 1 is a boolean, not a number: false"),
        ([1, 2, 3, 4, float("nan")], "item 5 is not a finite number: nan"),
        ([1.0, float("inf")], "item 2 is not a finite number: inf"),
        ([1, -math.inf], "item 2 is not a finite number: -inf"),
        ([1, [2]], "item 2 is a list, not a number"),
        ([10**21], "item 1 is an integer too large for 64 bits: 1000000000000000000000"),
        ([1.5, 2**63], "item 2 is an integer too large for 64 bits: 9223372036854775808"),
        ([1, -(2**63) - 1], "item 2 is an integer too large for 64 bits: -9223372036854775809"),
        (["1", "2"], "item 1 is a string, not a number: '1'"),
        ("1 5 x", "item 3 is not a number: 'x'"),
        ("1,,5,,x,y", "item 3 is not a number: 'x'"),
        ("1, 2, 3, 4, nan", "item 5 is not a finite number: 'nan'"),
        ("1 -Infinity", "item 2 is not a finite number: '-Infinity'"),
        ("1 1e999", "item 2 is not a finite number: '1e999'"),
        ("1 2 3 1_000", "item 4 is not a number: '1_000'"),
        ("1 2 1e", "item 3 is not a number: '1e'"),
        ("5 99999999999999999999", "item 2 is an integer too large for 64 bits: 99999999999999999999"),
        ({"a": 1}, "numbers must be a list of numbers, got dict"),
        (5, "numbers must be a list of numbers, got int"),
        (None, "numbers must be a list of numbers, got NoneType"),
        (np.zeros((2, 2)), "1-D"),
        (np.array(3.0), "1-D"),
        (np.array([True, False]), "got an array of bool"),
        (np.array([1, 2], dtype=object), "got an array of object"),
        (np.array([1 + 2j]), "got an array of complex128"),
        (np.array([], dtype=np.int64), "the list of numbers is empty"),
        (np.array([0.0, 1.0, np.nan]), "item 3 is not a finite number: nan"),
        (np.array([1, 2**64 - 1], dtype=np.uint64), "item 2 is an integer too large for 64 bits"),
    ],
)
def test_bad_input_names_the_first_bad_item(values, expected: str) -> None:
    with pytest.raises(InvalidInput) as info:
        compute(values)

    assert expected in str(info.value)
    assert info.value.code == "invalid_input"


def test_long_reprs_are_truncated() -> None:
    with pytest.raises(InvalidInput) as info:
        compute([1, "x" * 1000])
    assert len(str(info.value)) < 100

    with pytest.raises(InvalidInput, match="item 1 is an integer too large"):
        compute([10**5000])


def test_to_array_same_errors_as_compute() -> None:
    with pytest.raises(InvalidInput, match="item 2 is a boolean"):
        to_array([1, True])


# --------------------------------------------------------------------------------- parse_text, to_array


def test_parse_text_forms() -> None:
    assert parse_text("1,5,22") == parse_text("1 5 22") == parse_text("1, 5, 22") == [1, 5, 22]
    assert parse_text("1,2,,\n") == [1, 2]
    assert parse_text("") == []
    values = parse_text("1.5 -3 1e3 +4 .5")
    assert values == [1.5, -3, 1000.0, 4, 0.5]
    assert [type(v) for v in values] == [float, int, float, int, float]


def test_to_array_dtypes() -> None:
    assert to_array([1, 2]).dtype == np.int64
    assert to_array([1, 2.5]).dtype == np.float64
    assert to_array("1 2").dtype == np.int64
    assert to_array(np.array([1, 2], dtype=np.uint8)).dtype == np.int64
    assert to_array(np.array([1, 2], dtype=np.float32)).dtype == np.float64
    assert to_array((np.int64(3), np.float64(2.5))).tolist() == [3.0, 2.5]
    array = to_array([3, 1, 2])
    assert array.ndim == 1 and array.tolist() == [3, 1, 2]


def test_other_int_and_float_dtypes_match_lists() -> None:
    assert compute(np.array([3, 1, 2], dtype=np.int8)) == compute([3, 1, 2])
    assert compute(np.array([3, 1, 2], dtype=np.uint64)) == compute([3, 1, 2])
    assert compute(np.array([0.5, 1.5], dtype=np.float32)) == compute([0.5, 1.5])


# ----------------------------------------------------------------------------------------- formatting


def test_format_legacy() -> None:
    line = format_legacy(compute(PRESET_TEXT))

    assert line == "count: 17, minimum: -15, maximum: 150, average: 30.941176470588236, median: 9"
    for word in ("minimum", "maximum", "average", "median"):
        assert word in line
    assert "\n" not in line


def test_format_legacy_error() -> None:
    assert format_legacy_error("item 2 is not a number: 'x'") == "?Error: item 2 is not a number: 'x'"


# ------------------------------------------------------------------------------ pieces and overwrite
# compute works through arrays in pieces of numbers.CHUNK items (temporaries of one piece, never of the
# whole array). These tests shrink CHUNK so that small arrays cross many piece boundaries.

SIZES = [1, 2, 127, 128, 129, 255, 256, 257, 1000, 1001, 4096, 4099]


def whole_array_std(array: np.ndarray, mean: float) -> float:
    """The std as one numpy expression over the whole array (what compute did before it used pieces)."""
    n = array.size
    if array.dtype == np.int64:
        total = int(array.astype(object).sum())
        centre = total // n
        deviations = (array - np.int64(centre)).astype(np.float64)
        mean_dev = (total - centre * n) / n
    else:
        deviations = array - mean
        mean_dev = float(np.sum(deviations)) / n
    return math.sqrt(max(float(np.sum(deviations * deviations)) / n - mean_dev * mean_dev, 0.0))


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    from labkit.jobs import numbers

    monkeypatch.setattr(numbers, "CHUNK", 128)
    return 128


@pytest.mark.parametrize("n", SIZES)
def test_pieces_give_the_whole_array_results_for_ints(small_chunks: int, n: int) -> None:
    # Given: integers wide enough that the exact sum needs the split path
    rng = np.random.default_rng(n)
    values = rng.integers(-(2**62), 2**62, n, dtype=np.int64)

    # When
    result = compute(values)

    # Then
    xs = values.tolist()
    assert result["sum"] == sum(xs)
    assert result["min"] == min(xs) and result["max"] == max(xs)
    assert result["mean"] == float(Fraction(sum(xs), n))
    assert 2 * result["median"] == statistics.median_low(xs) + statistics.median_high(xs)
    assert result["std"] == whole_array_std(values, result["mean"])


@pytest.mark.parametrize("n", SIZES)
def test_pieces_give_the_whole_array_results_for_floats(small_chunks: int, n: int) -> None:
    # Given: large values that cancel out, so the sum needs more than one extraction pass
    rng = np.random.default_rng(n)
    values = rng.standard_normal(n) * 1e12
    values[: n // 2] = -values[n - n // 2:]
    values += rng.standard_normal(n)

    # When
    result = compute(values)

    # Then
    xs = values.tolist()
    exact = math.fsum(xs)
    assert abs(result["sum"] - exact) <= 2 * math.ulp(exact)
    assert result["median"] == statistics.median(xs)
    assert result["std"] == whole_array_std(values, result["mean"])
    assert close(result["std"], statistics.pstdev(xs))


@pytest.mark.parametrize("chunk", [128, 136, 1000])
def test_results_do_not_depend_on_the_piece_size(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    from labkit.jobs import numbers

    rng = np.random.default_rng(chunk)
    cases = [
        rng.integers(-(10**9), 10**9, 5000, dtype=np.int64),
        np.where(rng.random(5000) < 0.5, 2**62, INT64_MIN).astype(np.int64),  # spread wider than int64
        rng.standard_normal(5000) * 1e300,  # sum and std scaled
        rng.standard_normal(5000) * 1e-310,  # subnormals: std scaled up
    ]
    one_piece = [compute(values) for values in cases]

    monkeypatch.setattr(numbers, "CHUNK", chunk)

    assert [compute(values) for values in cases] == one_piece


@relaxed
@given(st.lists(finite_floats, min_size=1, max_size=600))
def test_float_pieces_match_statistics(xs: list[float]) -> None:
    from labkit.jobs import numbers

    saved, numbers.CHUNK = numbers.CHUNK, 128
    try:
        result = compute(np.array(xs))
    finally:
        numbers.CHUNK = saved

    assert result["median"] == statistics.median(xs)
    assert abs(result["sum"] - math.fsum(xs)) <= 2 * math.ulp(math.fsum(xs))
    assert close(result["std"], statistics.pstdev(xs))


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
@pytest.mark.parametrize("n", [1001, 1000])
def test_compute_never_reorders_the_callers_array(dtype, n: int) -> None:
    # Given
    values = np.random.default_rng(n).permutation(n).astype(dtype)
    before = values.copy()

    # When
    compute(values)
    compute(values[10:500])  # a view of it
    compute(values, overwrite=False)

    # Then
    assert np.array_equal(values, before)


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
@pytest.mark.parametrize("n", [1001, 1000])
def test_overwrite_partitions_in_place_with_the_same_results(dtype, n: int) -> None:
    # Given
    values = np.random.default_rng(n).integers(-1000, 1000, n).astype(dtype)
    expected = compute(values.copy())

    # When
    result = compute(values, overwrite=True)

    # Then: same results; the array now holds the same numbers, partitioned around the middle
    assert result == expected
    k = n // 2
    assert values[:k].max() <= values[k] <= values[k:].min()
    assert sorted(values.tolist()) == sorted(np.random.default_rng(n).integers(-1000, 1000, n).astype(dtype).tolist())


def test_overwrite_leaves_a_read_only_array_alone() -> None:
    values = np.random.default_rng(3).standard_normal(999)
    before = values.copy()
    values.flags.writeable = False

    assert compute(values, overwrite=True) == compute(before)
    assert np.array_equal(values, before)


def test_converted_arrays_are_never_the_callers() -> None:
    # An int32 array is converted to a new int64 array: that copy may be reordered, the input never is.
    values = np.random.default_rng(4).permutation(1001).astype(np.int32)
    before = values.copy()

    result = compute(values)

    assert np.array_equal(values, before)
    assert result["median"] == 500


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_compute_leaves_no_reference_cycle_holding_the_array(dtype):
    # A cycle (e.g. a recursive closure capturing the array) would keep a big payload alive in the worker
    # until the next garbage collection: the array must be freed as soon as the caller drops it.
    import gc
    import weakref

    array = np.arange(3 * 65_536 + 5, dtype=dtype)
    gone = weakref.ref(array)
    gc.disable()
    try:
        compute(array, overwrite=True)
        del array
        assert gone() is None
    finally:
        gc.enable()


# ------------------------------------------------------------------------------------- short lists
# Short integer lists take a plain-Python path (labkit.jobs.small_numbers); it must give numpy's figures.


@relaxed
@given(st.lists(int64s, min_size=1, max_size=64))
def test_short_int_lists_take_the_plain_path_with_numpys_results(xs: list[int]) -> None:
    from labkit.jobs.small_numbers import small_int_stats

    # Given a short list of integers: the plain path takes it (unless its spread is wider than int64)
    plain = small_int_stats(xs)
    if max(xs) - min(xs) > INT64_MAX:
        assert plain is None
        return
    # Then its figures are the numpy path's (an array never takes the plain path), bit for bit; values whose
    # squared deviations would round as floats are left to numpy
    assert compute(np.array(xs, dtype=np.int64)) == compute(xs)
    assert plain in (None, compute(xs))


def test_short_lists_of_large_integers_give_numpys_std() -> None:
    from labkit.jobs.small_numbers import small_int_stats

    # Given deviations so large that their squares round as floats (numpy's order of additions matters)
    rng = np.random.default_rng(7)
    for n in [*range(2, 65)] * 20:
        values = rng.integers(-(2**40), 2**40, n) * rng.integers(1, 2**20, n)
        # Then the plain path leaves them to numpy, and a list gives the array's std, bit for bit
        assert small_int_stats(values.tolist()) is None
        assert compute(values.tolist())["std"] == compute(values)["std"], values.tolist()
    # and deviations just small enough stay on the plain path, with numpy's figures
    values = [0, 2**25, 2**25 + 1]  # squared deviations sum to under 2**53
    assert small_int_stats(values) == compute(np.array(values))


def test_the_plain_path_leaves_everything_else_to_numpy() -> None:
    from labkit.jobs.small_numbers import SMALL, small_int_stats

    # Longer lists, floats, booleans, out-of-range integers and empty lists are not its business
    for values in ([1] * (SMALL + 1), [1, 2.5], [1, True], [2**63], [], [INT64_MIN, INT64_MAX]):
        assert small_int_stats(values) is None
    # and compute still names what is wrong with them
    with pytest.raises(InvalidInput, match="item 2 is a boolean"):
        compute([1, True])
    with pytest.raises(InvalidInput, match="item 1 is an integer too large"):
        compute([2**63])
