"""Checks of numbers the caller passes as settings. No I/O.

Every setting is checked where it is given (a constructor, a factory, the
call that takes it), so a bad value fails there with a message that names
it, never later as a ``ZeroDivisionError``, an ``OverflowError`` or a raw
comparison ``TypeError`` deep inside.
"""

from __future__ import annotations

import math
import reprlib

__all__ = [
    "check_attempts",
    "check_bool",
    "check_instance",
    "check_int",
    "check_real",
    "check_seconds",
    "real_number",
    "short_repr",
]

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


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """``value`` if it is an int (not a bool) in ``low..high``.

    Raises:
        TypeError: ``value`` is not an int.
        ValueError: it is out of range.

    Example:
        >>> check_int("table_size", 16, low=1)
        16
        >>> check_int("ipv4_prefix", 24.5, low=1, high=32)
        Traceback (most recent call last):
        ...
        TypeError: ipv4_prefix must be an int, not float 24.5
    """
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int, not {type(value).__name__} {short_repr(value)}"
        raise TypeError(msg)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        msg = f"{name} must be {bounds}, not {short_repr(value)}"
        raise ValueError(msg)
    return value


def check_real(name: str, value: object, *, low: float) -> float:
    """``value`` as a float, if it is a finite number (see :func:`real_number`)
    ``>= low``.

    Raises:
        TypeError: ``value`` is not an int or a float.
        ValueError: it is nan, infinite or below ``low``.

    Example:
        >>> check_real("factor", 3, low=1)
        3.0
        >>> check_real("factor", 0.5, low=1)
        Traceback (most recent call last):
        ...
        ValueError: factor must be a finite number >= 1, not 0.5
    """
    number = real_number(name, value)
    if not (math.isfinite(number) and number >= low):
        msg = f"{name} must be a finite number >= {low}, not {short_repr(value)}"
        raise ValueError(msg)
    return number


def check_bool(name: str, value: object) -> bool:
    """``value`` if it is True or False (a flag given as 1 or "yes" is a
    mistake better caught here).

    Raises:
        TypeError: it is anything else.

    Example:
        >>> check_bool("log_only", "no")
        Traceback (most recent call last):
        ...
        TypeError: log_only must be True or False, not 'no'
    """
    if not isinstance(value, bool):
        msg = f"{name} must be True or False, not {short_repr(value)}"
        raise TypeError(msg)
    return value


def check_instance(name: str, value: object, kind: type, example: str) -> None:
    """Check that ``value`` is None or a ``kind``; ``example`` shows how to
    make one.

    Raises:
        TypeError: it is something else.

    Example:
        >>> check_instance("access", ["10.0.0.0/8"], tuple, "('10.0.0.0/8',)")
        Traceback (most recent call last):
        ...
        TypeError: access must be a tuple or None, not list ['10.0.0.0/8']; for example ('10.0.0.0/8',)
    """
    if value is not None and not isinstance(value, kind):
        article = "an" if kind.__name__[0] in "AEIOU" else "a"
        msg = (
            f"{name} must be {article} {kind.__name__} or None, not"
            f" {type(value).__name__} {short_repr(value)}; for example {example}"
        )
        raise TypeError(msg)
