"""Argument types for the command line: bad values become usage errors.

Each type returns the parsed value or raises :class:`argparse.ArgumentTypeError`
with a message naming the value, which argparse prints with the usage and
exit code 2 (a ``ValueError`` would be reported as ``invalid <function name>
value``). Numbers must be finite: ``inf`` and ``nan`` are refused.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "destination_port", "host", "number", "port"]

N = TypeVar("N", int, float)

#: The port every command uses when ``--port`` is not given.
DEFAULT_PORT = 12345
#: The address every command uses when ``--host`` is not given: servers
#: listen there, clients send there. Exposing a server to a network is a
#: choice to make, not a default.
DEFAULT_HOST = "127.0.0.1"


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


def host(text: str) -> str:
    """An argparse ``type=`` for ``--host``: an address or a host name, with
    no port. An IPv6 address may come in brackets, as the banners print it
    (``[::1]``); a port attached to it, a link-local IPv6 address without
    its interface, and an empty text are refused with what to write instead.

    Example:
        >>> host("[::1]")
        '::1'
        >>> host("127.0.0.1:23499")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: takes an address without a port, not '127.0.0.1:23499': write --host 127.0.0.1 --port 23499
    """
    if not text:
        msg = "must be an address or a host name, not ''"
        raise argparse.ArgumentTypeError(msg)
    if text.startswith("["):
        inner, bracket, after = text[1:].partition("]")
        if bracket and _ipv6(inner) is not None:
            if not after:
                return _scoped(inner, text)
            if after.startswith(":") and after[1:].isdigit():
                _refuse_port(text, inner, after[1:])
        msg = f"must be an IPv6 address in brackets such as [::1], not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    if _ipv6(text) is not None:
        return _scoped(text, text)
    address, colon, number_text = text.rpartition(":")
    if (
        colon
        and number_text.isdigit()
        and address
        and (":" not in address or _ipv6(address) is not None)
    ):
        # 127.0.0.1:23499, localhost:53, or ::1:12345 (not an address: an
        # IPv6 group has at most 4 hex digits).
        _refuse_port(text, address, number_text)
    if ":" in text:
        msg = f"must be an IPv4 or IPv6 address or a host name, not {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return text


def _ipv6(text: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(text.split("%", 1)[0])
    except ValueError:
        return None


def _scoped(address: str, text: str) -> str:
    """``address``, unless it is a link-local IPv6 address without its
    interface (``%eth0``), which the kernel refuses (EINVAL)."""
    parsed = _ipv6(address)
    if parsed is not None and parsed.is_link_local and "%" not in address:
        msg = (
            f"{text!r} is a link-local address, which needs its interface:"
            f" write {address}%IF, such as {address}%eth0"
        )
        raise argparse.ArgumentTypeError(msg)
    return address


def _refuse_port(text: str, address: str, number_text: str) -> None:
    msg = (
        f"takes an address without a port, not {text!r}:"
        f" write --host {address} --port {number_text}"
    )
    raise argparse.ArgumentTypeError(msg)
