"""Checks of the settings callers pass to factories and constructors. No I/O.

A setting is checked where it is given, before anything is bound or opened,
so that a bad value fails at once with a message naming it, never on the
first datagram (a ``float`` buffer size, a ``dict`` where a
:class:`~trioudp.RateLimit` belongs). Wrong types raise ``TypeError``, values
out of range ``ValueError``.
"""

from __future__ import annotations

import math
import reprlib

__all__ = ["check_instance", "check_int", "check_real", "shown"]

_repr = reprlib.Repr()
_repr.maxlong = 40
_repr.maxstring = 60
_repr.maxother = 60


def shown(value: object) -> str:
    """``repr(value)``, shortened for an error message (huge ints included).

    Example:
        >>> shown(10**100)
        '100000000000000000...0000000000000000000'
    """
    return _repr.repr(value)


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
        msg = f"{name} must be an int, not {type(value).__name__} {shown(value)}"
        raise TypeError(msg)
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in {low}..{high}"
        msg = f"{name} must be {bounds}, not {shown(value)}"
        raise ValueError(msg)
    return value


def check_real(name: str, value: object, *, low: float) -> float:
    """``value`` if it is a finite int or float (not a bool) ``>= low``.

    Raises:
        TypeError: ``value`` is not an int or a float.
        ValueError: it is nan, infinite or below ``low``.

    Example:
        >>> check_real("factor", 3, low=1)
        3
        >>> check_real("factor", "3", low=1)
        Traceback (most recent call last):
        ...
        TypeError: factor must be a number, not str '3'
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{name} must be a number, not {type(value).__name__} {shown(value)}"
        raise TypeError(msg)
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not (finite and value >= low):
        msg = f"{name} must be a finite number >= {low}, not {shown(value)}"
        raise ValueError(msg)
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
            f" {type(value).__name__} {shown(value)}; for example {example}"
        )
        raise TypeError(msg)
