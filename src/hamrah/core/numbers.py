"""The one check of a configured number: a finite real (or integer) in an interval, or a ConfigError that
names the setting, the value and what was expected."""

from __future__ import annotations

import math

from hamrah.core.errors import ConfigError


def is_number(value: object) -> bool:
    """True for a finite int or float (not a bool); False for an int too large for a float (10**400)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond the float range
        return False


def check_number(
    key: str,
    value: object,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """Raise ``ConfigError`` unless ``value`` is a finite number in the interval (``key`` names the setting).

    Example:
        >>> check_number("algorithm.mu", 0.01, 0.0)
        >>> check_number("algorithm.beta1", 1.0, 0.0, 1.0, open_high=True)
        Traceback (most recent call last):
        ...
        hamrah.core.errors.ConfigError: algorithm.beta1 = 1.0: expected a number in [0, 1)
    """
    ok = is_number(value)
    if ok:
        assert isinstance(value, (int, float))
        ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        left = "(" if open_low or low == -math.inf else "["
        right = ")" if open_high or high == math.inf else "]"
        raise ConfigError(f"{key} = {value!r}: expected a number in {left}{low:g}, {high:g}{right}")


def check_int(key: str, value: object, minimum: int) -> None:
    """Raise ``ConfigError`` unless ``value`` is an integer (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{key} = {value!r}: expected an integer >= {minimum}")
