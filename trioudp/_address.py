"""Pure helpers for socket addresses: validation, families and payload limits."""

from __future__ import annotations

import ipaddress
import socket
from typing import TypeAlias, Union

from ._errors import DatagramTooLarge, InvalidAddress

# typing.Union rather than ``|``: a typing alias takes a docstring, which
# help() and the documentation show; the ``|`` form (types.UnionType) does not.
SocketAddress: TypeAlias = Union[tuple[str, int], tuple[str, int, int, int]]  # noqa: UP007


def _document(alias: object, doc: str) -> None:
    alias.__doc__ = doc


_document(
    SocketAddress,
    """A socket address as Python's socket module reports it.

    ``(host, port)`` for IPv4, ``(host, port, flowinfo, scope_id)`` for IPv6:
    what :attr:`Datagram.peer <trioudp.Datagram.peer>` holds and what
    :meth:`UDPSocket.send_to <trioudp.UDPSocket.send_to>` takes.

    Example:
        >>> ipv4: SocketAddress = ("127.0.0.1", 12345)
        >>> ipv6: SocketAddress = ("::1", 12345, 0, 0)
        >>> ipv4[:2], ipv6[:2]
        (('127.0.0.1', 12345), ('::1', 12345))
    """,
)

#: Largest UDP payload over IPv4: 65,535 - 20 (IP header) - 8 (UDP header).
MAX_IPV4_PAYLOAD = 65_507
#: Largest UDP payload over IPv6 without jumbograms: 65,535 - 8 (UDP header).
MAX_IPV6_PAYLOAD = 65_527


def max_payload(family: int) -> int:
    """Return the largest UDP payload a socket of ``family`` can send.

    Example:
        >>> max_payload(socket.AF_INET), max_payload(socket.AF_INET6)
        (65507, 65527)
    """
    return MAX_IPV6_PAYLOAD if family == socket.AF_INET6 else MAX_IPV4_PAYLOAD


def check_payload(data: object, limit: int) -> bytes | bytearray | memoryview:
    """Check that ``data`` is a bytes-like payload of at most ``limit`` bytes.

    Raises:
        TypeError: ``data`` is not bytes, bytearray or memoryview.
        DatagramTooLarge: it is longer than ``limit``.

    Example:
        >>> check_payload(b"hi", 10)
        b'hi'
        >>> check_payload("hi", 10)
        Traceback (most recent call last):
        ...
        TypeError: a datagram's payload must be bytes, bytearray or memoryview, not str; encode text first, e.g. 'hi'.encode()
    """
    if type(data) is bytes or type(data) is bytearray:
        size = len(data)
    elif isinstance(data, (bytes, bytearray, memoryview)):
        # What the kernel would send: a subclass's len() may say otherwise.
        size = memoryview(data).nbytes
    else:
        hint = ""
        if isinstance(data, str):
            hint = f"; encode text first, e.g. {data[:20]!r}.encode()"
        msg = (
            "a datagram's payload must be bytes, bytearray or memoryview,"
            f" not {type(data).__name__}{hint}"
        )
        raise TypeError(msg)
    if size > limit:
        raise DatagramTooLarge(size, limit)
    return data


def check_port(port: object, *, address: object = None) -> int:
    """Return ``port`` if it is an int in 0..65535, else raise InvalidAddress.

    Example:
        >>> check_port(53)
        53
        >>> check_port(70000)
        Traceback (most recent call last):
        ...
        trioudp._errors.InvalidAddress: invalid address 70000: port must be in 0..65535, not 70000
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InvalidAddress(
            port if address is None else address,
            f"port must be in 0..65535, not {port!r}",
        )
    return port


def check_address(address: object) -> tuple[str, int]:
    """Check the shape of a ``(host, port, ...)`` tuple; return ``(host, port)``.

    The host may be a name or a numeric address; it is not resolved here.

    Example:
        >>> check_address(("127.0.0.1", 9))
        ('127.0.0.1', 9)
        >>> check_address("127.0.0.1:9")
        Traceback (most recent call last):
        ...
        trioudp._errors.InvalidAddress: invalid address '127.0.0.1:9': expected a (host, port) tuple, not str
    """
    if not isinstance(address, tuple) or len(address) not in (2, 4):
        raise InvalidAddress(
            address,
            f"expected a (host, port) tuple, not {type(address).__name__}"
            if not isinstance(address, tuple)
            else f"expected (host, port) or (host, port, flowinfo, scope_id),"
            f" not {len(address)} items",
        )
    host, port = address[0], address[1]
    if not isinstance(host, str) or not host:
        raise InvalidAddress(address, f"host must be a non-empty str, not {host!r}")
    return host, check_port(port, address=address)


def numeric_family(host: str) -> int | None:
    """Return ``AF_INET``/``AF_INET6`` if ``host`` is a numeric address, else None.

    Example:
        >>> numeric_family("::1") == socket.AF_INET6
        True
        >>> numeric_family("localhost") is None
        True
    """
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def is_loopback(host: str) -> bool:
    """Tell whether ``host`` is a numeric loopback address (IPv4-mapped included).

    Example:
        >>> is_loopback("127.0.0.5"), is_loopback("::1"), is_loopback("10.0.0.1")
        (True, True, False)
        >>> is_loopback("::ffff:127.0.0.1")
        True
    """
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


#: The unspecified addresses as a received datagram's source shows them.
#: No real peer sends from one; Linux delivers a reply to one to the host's
#: own loopback services, so a server never answers them.
UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "::", "::ffff:0.0.0.0"})
