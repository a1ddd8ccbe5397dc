"""Opening sockets: ``open_udp_socket`` and ``open_udp_sockets`` check their arguments, bind, and hand back :class:`UDPSocket` objects.

The counterpart of trio's ``_highlevel_open_tcp_listeners.py``: every
argument is checked before a socket is made, so a refusal leaves no
descriptor open, and a failure part-way closes what was opened.
"""

from __future__ import annotations

import logging
import socket as stdlib_socket
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from ._address import check_port, max_payload, numeric_family
from ._checks import check_bool, check_instance, check_int, short_repr
from ._errors import InvalidAddress
from ._kernel import kernel_socket
from ._multicast import Multicast, receive_only_joined
from ._screening import bind_to_loopback_interface
from ._socket import UDPSocket

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = [
    "bind_udp_socket",
    "check_multicast",
    "family_of_name",
    "open_udp_socket",
    "open_udp_sockets",
]

logger = logging.getLogger("trioudp")


@asynccontextmanager
async def open_udp_socket(
    host: str | None = None,
    port: int = 0,
    *,
    family: int = 0,
    reuse_port: bool = False,
    max_datagram_size: int | None = None,
    receive_buffer: int | None = None,
    multicast: Multicast | None = None,
    broadcast: bool = False,
    dual_stack: bool | None = None,
) -> AsyncIterator[UDPSocket]:
    """Open a UDP socket bound to ``(host, port)`` and close it afterwards.

    Args:
        host: the address (or name) to bind; None binds every address of the
            family (``0.0.0.0``, or ``::`` for ``AF_INET6``).
        port: the port; 0 picks a free one (see ``sock.local_address``).
        family: ``socket.AF_INET`` or ``AF_INET6``; by default it follows
            ``host`` (IPv4 when ``host`` is None).
        reuse_port: set ``SO_REUSEPORT`` so several sockets can share the port.
        max_datagram_size: see :class:`UDPSocket`.
        receive_buffer: bytes of kernel receive buffer to ask for
            (``SO_RCVBUF``); a warning is logged if the kernel grants less.
        multicast: groups to join and how to send multicast; see
            :class:`Multicast` (the methods :meth:`UDPSocket.join_group` and
            others do the same later). The socket receives only the groups
            it joins (``IP_MULTICAST_ALL`` and ``IPV6_MULTICAST_ALL`` off,
            Linux): not the all-hosts groups, nor another socket's.
        broadcast: allow sending to broadcast addresses (``SO_BROADCAST``).
        dual_stack: whether an IPv6 socket also serves IPv4, whose peers then
            appear as IPv4-mapped IPv6 addresses:
            ``("::ffff:192.0.2.1", port, 0, 0)``. By default, only a socket
            bound to ``"::"`` explicitly is dual-stack; other IPv6 sockets,
            ``host=None`` included, are IPv6-only.

    Raises:
        BindError: the bind failed; it names host, port and the cause.
        InvalidAddress: ``host`` or ``port`` is malformed or cannot be
            resolved, or a multicast group is not one of the socket's family.
        OSError: the kernel refused a multicast setting (no such interface,
            no multicast route).

    Example::

        async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
            print("listening on", sock.local_address)
            datagram = await sock.receive()
            await datagram.reply(b"got it")

    A multicast receiver, and a dual-stack socket::

        group = trioudp.Multicast(groups=["239.1.2.3"])
        async with trioudp.open_udp_socket("0.0.0.0", 5007, multicast=group) as sock:
            datagram = await sock.receive()

        async with trioudp.open_udp_socket("::", 5007) as sock:  # IPv4 and IPv6
            datagram = await sock.receive()  # peer ("::ffff:127.0.0.1", ...)
    """
    sock = await bind_udp_socket(
        host,
        port,
        family=family,
        reuse_port=reuse_port,
        max_datagram_size=max_datagram_size,
        receive_buffer=receive_buffer,
        multicast=multicast,
        broadcast=broadcast,
        dual_stack=dual_stack,
    )
    try:
        yield sock
    finally:
        sock.close()


async def bind_udp_socket(
    host: str | None = None,
    port: int = 0,
    *,
    family: int = 0,
    reuse_port: bool = False,
    max_datagram_size: int | None = None,
    receive_buffer: int | None = None,
    multicast: Multicast | None = None,
    broadcast: bool = False,
    dual_stack: bool | None = None,
) -> UDPSocket:
    """Like :func:`open_udp_socket`, but the caller owns (and closes) the socket.

    Every argument is checked before a socket is made: a refusal leaves no
    descriptor open.
    """
    if host is not None and not isinstance(host, str):
        msg = (
            f"host must be a str or None, not {type(host).__name__} {short_repr(host)}"
        )
        raise TypeError(msg)
    check_port(port)
    if max_datagram_size is not None:
        check_int("max_datagram_size", max_datagram_size, low=0)
    if receive_buffer is not None:
        check_int("receive_buffer", receive_buffer, low=1)
    check_multicast(multicast)
    check_bool("broadcast", broadcast)
    check_bool("reuse_port", reuse_port)
    if dual_stack is not None:
        check_bool("dual_stack", dual_stack)
    if family not in (0, stdlib_socket.AF_INET, stdlib_socket.AF_INET6):
        msg = f"family must be AF_INET or AF_INET6, not {family!r}"
        raise ValueError(msg)
    if dual_stack is None:
        dual_stack = host == "::"
    if host is None:
        family = family or stdlib_socket.AF_INET
        host = "::" if family == stdlib_socket.AF_INET6 else "0.0.0.0"
    elif not family:
        family = numeric_family(host) or await family_of_name(host, port)
    if max_datagram_size is not None:
        check_int(
            "max_datagram_size", max_datagram_size, low=0, high=max_payload(family)
        )
    trio_socket = trio.socket.socket(family, stdlib_socket.SOCK_DGRAM)
    try:
        sock = UDPSocket(trio_socket, max_datagram_size=max_datagram_size)
    except BaseException:
        trio_socket.close()
        raise
    try:
        if family == stdlib_socket.AF_INET6:
            sock.trio_socket.setsockopt(
                stdlib_socket.IPPROTO_IPV6,
                stdlib_socket.IPV6_V6ONLY,
                int(not dual_stack),
            )
        if reuse_port:
            sock.trio_socket.setsockopt(
                stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1
            )
        if sys.platform == "win32" and sock.is_fast:  # pragma: no cover
            # Windows reports ICMP port unreachable as WSAECONNRESET on the
            # next receive of an unconnected socket; a server must not care.
            sock.trio_socket.ioctl(  # type: ignore[attr-defined]
                stdlib_socket.SIO_UDP_CONNRESET,  # type: ignore[attr-defined]
                False,
            )
        kernel = kernel_socket(sock.trio_socket)
        # Only the groups it joins (none unless it asks): not 224.0.0.1,
        # ff02::1 or another socket's groups, which anyone may send to.
        receive_only_joined(sock.trio_socket, kernel=kernel)
        if kernel:
            bind_to_loopback_interface(sock.trio_socket, host)
        if receive_buffer is not None:
            _request_receive_buffer(sock.trio_socket, receive_buffer)
        if broadcast:
            sock.set_broadcast(True)
        await sock.bind((host, port))
        if multicast is not None:
            sock.configure_multicast(multicast)
    except BaseException:
        sock.close()
        raise
    return sock


def check_multicast(multicast: object) -> None:
    """Refuse anything but a :class:`Multicast` or None, with an example."""
    check_instance("multicast", multicast, Multicast, "Multicast(groups=['239.1.2.3'])")


def _request_receive_buffer(sock: trio.socket.SocketType, size: int) -> int:
    """Ask for ``size`` bytes of receive buffer (checked by
    :func:`bind_udp_socket`); warn if the kernel grants less.

    Linux doubles the request for its bookkeeping and caps it at
    ``net.core.rmem_max``; the doubled value is what ``getsockopt`` reports.
    """
    sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF, size)
    granted = sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF)
    if granted < size:
        logger.warning(
            "asked for a %d-byte UDP receive buffer, the kernel granted %d;"
            " raise net.core.rmem_max (sysctl) to get more",
            size,
            granted,
        )
    return int(granted)


async def family_of_name(host: str, port: int) -> int:
    """The address family ``host`` resolves to (for binding ``port``)."""
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, 0, stdlib_socket.SOCK_DGRAM, 0, stdlib_socket.AI_PASSIVE
        )
    except stdlib_socket.gaierror as exc:
        raise InvalidAddress((host, port), f"cannot resolve {host!r}: {exc}") from exc
    return int(infos[0][0])


async def open_udp_sockets(
    port: int,
    host: str | None = None,
    *,
    max_datagram_size: int | None = None,
    receive_buffer: int | None = None,
    reuse_port: bool = False,
    multicast: Multicast | None = None,
    broadcast: bool = False,
) -> list[UDPSocket]:
    """Bind the sockets :func:`serve_udp` serves: one for ``host``, or for
    ``host=None`` one IPv4 and (where the host has IPv6) one IPv6 wildcard
    socket on the same port.

    The caller owns the returned sockets. ``multicast`` and ``broadcast``
    are :func:`open_udp_socket`'s; each multicast group is joined on the
    socket of its family. ``reuse_port=True`` sets ``SO_REUSEPORT`` on each,
    so several processes can serve one port (the kernel spreads datagrams
    over them by source address and port).

    Example::

        sockets = await trioudp.open_udp_sockets(0)
        print([s.local_address for s in sockets])
    """
    check_multicast(multicast)  # before for_family below; bind checks the rest
    families = (
        [0] if host is not None else [stdlib_socket.AF_INET, stdlib_socket.AF_INET6]
    )
    sockets: list[UDPSocket] = []
    try:
        for family in families:
            bind_port = sockets[0].local_address[1] if sockets else port
            try:
                sock = await bind_udp_socket(
                    host,
                    bind_port,
                    family=family,
                    max_datagram_size=max_datagram_size,
                    receive_buffer=receive_buffer,
                    reuse_port=reuse_port,
                    multicast=multicast
                    if multicast is None or not family
                    else multicast.for_family(family),
                    broadcast=broadcast,
                )
            except OSError as exc:
                if sockets and family == stdlib_socket.AF_INET6:
                    # No IPv6 here (or the port is taken on IPv6 only): serve IPv4.
                    logger.info("not serving IPv6 on port %d: %s", bind_port, exc)
                    continue
                raise
            sockets.append(sock)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
