"""Checks of numbers the caller passes as settings. No I/O.

Every setting is checked where it is given (a constructor, a factory, the
call that takes it), so a bad value fails there with a message that names
it, never later as a ``ZeroDivisionError``, an ``OverflowError`` or a raw
comparison ``TypeError`` deep inside.
"""

from __future__ import annotations

import math
import reprlib

__all__ = ["check_attempts", "check_seconds", "real_number", "short_repr"]

_repr = reprlib.Repr()
_repr.maxlong = 40
_repr.maxstring = 40
_repr.maxother = 40


def short_repr(value: object) -> str:
    """``repr(value)``, shortened for an error message (huge ints included).

    Example:
        >>> short_repr(10**100)
        '100000000000000000...0000000000000000000'
    """
    return _repr.repr(value)


def real_number(name: str, value: object) -> float:
    """``value`` as a float, if it is an int or a float (not a bool, not nan).

    Raises:
        TypeError: ``value`` is not an int or a float.
        ValueError: it is nan, or an int too large for a float.

    Example:
        >>> real_number("rate", 3)
        3.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{name} must be a number, not {short_repr(value)}"
        raise TypeError(msg)
    try:
        number = float(value)
    except OverflowError:
        msg = f"{name} is too large, {short_repr(value)}"
        raise ValueError(msg) from None
    if math.isnan(number):
        msg = f"{name} must be a number, not {value!r}"
        raise ValueError(msg)
    return number


def check_seconds(
    name: str, value: object, *, zero: bool = False, infinite: bool = False
) -> float:
    """``value`` as a duration in seconds: > 0 (>= 0 with ``zero``), finite
    unless ``infinite``.

    Raises:
        TypeError: ``value`` is not a number.
        ValueError: it is out of range.

    Example:
        >>> check_seconds("grace", 0, zero=True)
        0.0
    """
    number = real_number(name, value)
    if (number >= 0 if zero else number > 0) and (infinite or math.isfinite(number)):
        return number
    finite = "" if infinite else "finite "
    if zero:
        msg = f"{name} must be >= 0 seconds (a {finite}number), not {short_repr(value)}"
    else:
        msg = f"{name} must be a positive {finite}number of seconds, not {short_repr(value)}"
    raise ValueError(msg)


def check_attempts(attempts: object) -> int:
    """``attempts`` if it is an int >= 1 (any size: schedules are lazy).

    Example:
        >>> check_attempts(3)
        3
    """
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        msg = f"attempts must be an int >= 1, not {short_repr(attempts)}"
        raise ValueError(msg)
    return attempts
