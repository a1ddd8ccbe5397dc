"""Argument types for the command line: bad values become usage errors.

Each type returns the parsed value or raises :class:`argparse.ArgumentTypeError`
with a message naming the value, which argparse prints with the usage and
exit code 2 (a ``ValueError`` would be reported as ``invalid <function name>
value``). Numbers must be finite: ``inf`` and ``nan`` are refused.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["destination_port", "number", "port"]

N = TypeVar("N", int, float)


def number(
    kind: type[N],
    *,
    above: float | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    zero_is_off: bool = False,
) -> Callable[[str], N]:
    """An argparse ``type=`` for a finite ``kind`` (int or float) in range:
    ``> above``, ``>= minimum``, ``<= maximum``; with ``zero_is_off``, 0 is
    accepted too (it turns the option off).

    Example:
        >>> timeout = number(float, above=0)
        >>> timeout("1.5")
        1.5
        >>> timeout("inf")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a number > 0, not 'inf'
    """
    bounds: list[str] = [
        f"{sign} {_show(bound)}"
        for sign, bound in ((">", above), (">=", minimum), ("<=", maximum))
        if bound is not None
    ]
    wanted = " and ".join(bounds)
    wanted = f"{'an integer' if kind is int else 'a number'} {wanted}".rstrip()
    if zero_is_off:
        wanted = f"0 (off) or {wanted}"

    def parse(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is not None and math.isfinite(value):
            if zero_is_off and value == 0:
                return value
            if (
                (above is None or value > above)
                and (minimum is None or value >= minimum)
                and (maximum is None or value <= maximum)
            ):
                return value
        msg = f"must be {wanted}, not {text!r}"
        raise argparse.ArgumentTypeError(msg)

    return parse


def _show(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def destination_port(text: str) -> int:
    """An argparse ``type=`` for the port of a peer: 1..65535 (0 is no
    destination).

    Example:
        >>> destination_port("53")
        53
    """
    value = port(text)
    if value == 0:
        msg = "port must be in 1..65535 for a destination, not '0'"
        raise argparse.ArgumentTypeError(msg)
    return value


def port(text: str) -> int:
    """An argparse ``type=`` for a port number.

    Example:
        >>> port("12345")
        12345
    """
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        msg = f"port must be in 0..65535, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value
