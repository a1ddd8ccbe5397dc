"""Checks of the settings trioudp.quic takes: each fails where it is given,
naming the setting. No I/O."""

from __future__ import annotations

import math

__all__ = ["check_int", "check_seconds"]


def check_int(name: str, value: object, *, low: int, high: int | None = None) -> int:
    """``value`` if it is an int in ``low..high``, else TypeError/ValueError.

    Example:
        >>> check_int("max_streams", 100, low=1)
        100
    """
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{name} must be an int, not {type(value).__name__} {value!r}"
        raise TypeError(msg)
    if value < low or (high is not None and value > high):
        bounds = f"{low}..{high}" if high is not None else f">= {low}"
        msg = f"{name} must be {bounds}, not {value!r}"
        raise ValueError(msg)
    return value


def check_seconds(name: str, value: object, *, zero: bool = False) -> float:
    """``value`` as a finite number of seconds, > 0 (or >= 0 with ``zero``).

    Example:
        >>> check_seconds("grace", 0, zero=True)
        0.0
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        msg = f"{name} must be a number of seconds, not {value!r}"
        raise TypeError(msg)
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        least = ">= 0" if zero else "> 0"
        msg = f"{name} must be a finite number of seconds {least}, not {value!r}"
        raise ValueError(msg)
    return seconds
