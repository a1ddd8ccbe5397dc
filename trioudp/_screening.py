"""Ingress screening: the interface a datagram arrived on (PKTINFO), and which sources are forged.

A server's fast path receives through the function :func:`screened_recvfrom`
picks for its socket. That function reports :data:`FORGED_SOURCE` as the peer
of a datagram whose source no real peer can have; the server's admission
(``_admission``) drops and counts it. Plain system calls: no Trio here.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import sys
from typing import TYPE_CHECKING

from ._address import UNSPECIFIED_HOSTS, is_loopback

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._address import SocketAddress

__all__ = [
    "FORGED_SOURCE",
    "Screen",
    "ingress",
    "screened_recvfrom",
    "source_is_forged",
]

logger = logging.getLogger("trioudp")

#: The peer a screened receive reports for a datagram whose source is forged.
#:
#: Invariant: its port is 0, so it always reaches the server's admission
#: (``Admission.admit``), which runs for every datagram from port 0 even when
#: the server has no protection configured (``_fastpath`` tests
#: ``admission.active or not peer[1]``); admission drops it as forged, never
#: as port 0, and no handler ever sees it.
FORGED_SOURCE = ("", 0)

# Python adds IP_PKTINFO only in 3.13; its value on Linux is 8.
_IP_PKTINFO = getattr(
    stdlib_socket, "IP_PKTINFO", 8 if sys.platform == "linux" else None
)
_IPV6_RECVPKTINFO = getattr(stdlib_socket, "IPV6_RECVPKTINFO", None)
_IPV6_PKTINFO = getattr(stdlib_socket, "IPV6_PKTINFO", None)
_LOOPBACK_PREFIXES = ("127.", "::ffff:127.")
#: Room for the control messages of one datagram: an in6_pktinfo, and the
#: ones a socket of the user's own may also ask for (timestamps, TOS, TTL,
#: ...), which Linux can place before it.
_ANCILLARY_SPACE = 512


def _loopback_index() -> int:
    try:
        return stdlib_socket.if_nametoindex("lo")
    except OSError:
        return 1  # Linux numbers lo first in every network namespace


_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def ingress(ancdata: list[tuple[int, int, bytes]]) -> tuple[int | None, bool]:
    """The interface a datagram arrived on (None if unknown), from
    ``IP_PKTINFO`` or ``IPV6_PKTINFO`` control data, and whether it came in
    an IPv6 packet: Linux reports an IPv4 datagram on a dual-stack socket
    with an IPv4-mapped destination, an IPv6 one with its IPv6 destination.

    Example:
        >>> ingress([(0, 8, bytes([2, 0, 0, 0]) + bytes(8))])
        (2, False)
        >>> ingress([(41, 50, bytes.fromhex("20010db8" + "00" * 11 + "01") + bytes([3, 0, 0, 0]))])
        (3, True)
        >>> ingress([])
        (None, False)
    """
    for level, kind, data in ancdata:
        if level == stdlib_socket.IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder), False
        if (
            level == stdlib_socket.IPPROTO_IPV6
            and kind == _IPV6_PKTINFO
            and len(data) >= 20
        ):
            index = int.from_bytes(data[16:20], sys.byteorder)
            return index, not data.startswith(_V4_MAPPED_PREFIX)
    return None, False


def source_is_forged(
    host: str, ingress: int | None, loopback: int, *, ipv6_packet: bool = False
) -> bool:
    """Whether a datagram's source ``host`` cannot be its real sender: an
    unspecified address; a loopback address (IPv4-mapped included) on a
    datagram that arrived over an interface other than ``loopback``; or an
    IPv4-mapped address as the source of an IPv6 packet (no real peer sends
    one: RFC 4291 keeps them inside a host; a reply would go out as IPv4 to
    whatever the neighbour named, this host's own address or a multicast
    group included, past the checks Linux makes on real IPv4 sources).

    Example:
        >>> source_is_forged("::ffff:127.0.0.1", ingress=2, loopback=1)
        True
        >>> source_is_forged("::ffff:127.0.0.1", ingress=1, loopback=1)
        False
        >>> source_is_forged("0.0.0.0", ingress=1, loopback=1)
        True
        >>> source_is_forged("192.0.2.7", ingress=2, loopback=1)
        False
        >>> source_is_forged("::ffff:192.0.2.7", ingress=2, loopback=1)
        False
        >>> source_is_forged("::ffff:192.0.2.7", 2, 1, ipv6_packet=True)
        True
    """
    # The kernel writes received addresses in canonical form, so plain string
    # tests are exact here, and they cost a fraction of parsing each address.
    if host in UNSPECIFIED_HOSTS:
        return True
    if ipv6_packet and host.startswith("::ffff:"):
        return True
    return (
        ingress is not None
        and ingress != loopback
        and (host.startswith(_LOOPBACK_PREFIXES) or host == "::1")
    )


def screened_recvfrom(
    fast: stdlib_socket.socket, host: str, where: object
) -> Callable[[int], tuple[bytes, SocketAddress]]:
    """The receive function a server's fast path uses on ``fast`` (bound to
    ``host``; ``where`` names the socket in logs): one that checks each
    datagram's source (see :class:`Screen`), unless the socket is bound to a
    loopback address, where no forged source can arrive (Linux drops
    datagrams to loopback addresses from other interfaces)."""
    if fast.family == stdlib_socket.AF_INET6:
        # Also reports the interface of IPv4 datagrams on a dual-stack socket.
        level, option = stdlib_socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO
    else:
        level, option = stdlib_socket.IPPROTO_IP, _IP_PKTINFO
    if is_loopback(host):
        return fast.recvfrom
    if option is None:
        # Without the option (not Linux) the interface cannot be told:
        # only unspecified sources are known to be forged.
        return Screen(fast, where).recvfrom_specified
    fast.setsockopt(level, option, 1)
    return Screen(fast, where, loopback=_loopback_index()).recvfrom


class Screen:
    """Receives on ``fast`` and reports :data:`FORGED_SOURCE` as the peer of
    a datagram whose source is forged (``where`` names the socket in logs)."""

    def __init__(
        self, fast: stdlib_socket.socket, where: object, *, loopback: int = 0
    ) -> None:
        self.fast = fast
        self._where = where
        self._loopback = loopback
        self._forged_seen = 0

    def recvfrom(self, bufsize: int) -> tuple[bytes, SocketAddress]:
        """``recvfrom`` that reports :data:`FORGED_SOURCE` as the peer of a
        datagram from an unspecified address, from a loopback address
        that did not arrive over the loopback interface, or an IPv6 packet
        from an IPv4-mapped address (a neighbour forged it: a reply would go
        to this host's own services or onto the link as IPv4, and
        "loopback" is what access lists, rate-limit exemptions and the CLI's
        ``exit`` trust; see :func:`source_is_forged`)."""
        data, ancdata, _flags, peer = self.fast.recvmsg(bufsize, _ANCILLARY_SPACE)
        index, ipv6_packet = ingress(ancdata)
        if index is None:
            # The interface's control message was asked for but is missing
            # (truncated): trust no loopback source (fail closed).
            index = -1
        if source_is_forged(peer[0], index, self._loopback, ipv6_packet=ipv6_packet):
            count = self._forged_seen = self._forged_seen + 1
            if count & (count - 1) == 0:
                logger.warning(
                    "dropped a UDP datagram with a forged source %r on %r, seen %d times",
                    peer,
                    self._where,
                    count,
                )
            return data, FORGED_SOURCE
        return data, peer

    def recvfrom_specified(self, bufsize: int) -> tuple[bytes, SocketAddress]:
        """``recvfrom`` that reports :data:`FORGED_SOURCE` as the peer of a
        datagram from an unspecified address (where the ingress interface
        cannot be read, see :func:`screened_recvfrom`)."""
        data, peer = self.fast.recvfrom(bufsize)
        if peer[0] in UNSPECIFIED_HOSTS:
            return data, FORGED_SOURCE
        return data, peer
