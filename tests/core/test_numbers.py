"""The one number check: refuses exactly what lies outside the interval, naming the setting and the value."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hamrah.core.errors import ConfigError
from hamrah.core.numbers import check_int, check_number, is_number

VALUES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.none(),
    st.text(max_size=3),
)
BOUNDS = st.floats(-1e6, 1e6, allow_nan=False)


@given(VALUES, BOUNDS, BOUNDS, st.booleans(), st.booleans())
def test_check_number_refuses_exactly_what_is_outside_the_interval(value, a, b, open_low, open_high):
    low, high = min(a, b), max(a, b)
    inside = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (low < value if open_low else low <= value)
        and (value < high if open_high else value <= high)
    )
    if inside:
        check_number("section.key", value, low, high, open_low=open_low, open_high=open_high)
        return
    with pytest.raises(ConfigError) as err:
        check_number("section.key", value, low, high, open_low=open_low, open_high=open_high)
    assert str(err.value).startswith(f"section.key = {value!r}: expected a number in ")


def test_the_interval_is_written_as_a_reader_expects():
    with pytest.raises(ConfigError, match=r"mu = -1: expected a number in \[0, inf\)$"):
        check_number("mu", -1, 0.0)
    with pytest.raises(ConfigError, match=r"beta1 = 1.0: expected a number in \[0, 1\)$"):
        check_number("beta1", 1.0, 0.0, 1.0, open_high=True)
    with pytest.raises(ConfigError, match=r"clip = 0.0: expected a number in \(0, inf\)$"):
        check_number("clip", 0.0, 0.0, open_low=True)


@given(st.one_of(st.integers(-50, 50), st.booleans(), st.floats(allow_nan=True), st.none()), st.integers(-5, 5))
def test_check_int_accepts_only_integers_at_or_above_the_minimum(value, minimum):
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    if ok:
        check_int("k", value, minimum)
    else:
        with pytest.raises(ConfigError, match=f"expected an integer >= {minimum}"):
            check_int("k", value, minimum)
    assert is_number(value) == (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    )


def _fits_a_float(n: int) -> bool:
    try:
        float(n)
    except OverflowError:
        return False
    return True


@given(
    st.one_of(st.integers(), st.integers(0, 1000).map(lambda k: 10**k), st.integers(0, 1000).map(lambda k: -(10**k)))
)
def test_an_int_of_any_size_is_a_number_exactly_when_a_float_holds_it(n):
    # A JSON record or a TOML value can hold a 400-digit integer: an answer, never an OverflowError.
    assert is_number(n) == _fits_a_float(n)
    if not _fits_a_float(n):
        with pytest.raises(ConfigError, match="expected a number in "):
            check_number("section.key", n)
