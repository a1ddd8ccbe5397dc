"""Multicast and broadcast settings, and the socket options they become.

Pure: no Trio and no sockets here, only values and the bytes that the socket
options take, so :class:`UDPSocket` makes plain ``setsockopt`` calls that a
virtual socket can understand too. The options and their values are the
kernel's:

- join/leave: ``IPPROTO_IP``/``IP_ADD_MEMBERSHIP``/``IP_DROP_MEMBERSHIP`` with
  an ``ip_mreq`` (group and local address, 4 + 4 bytes) or, for an interface
  given by name or index, an ``ip_mreqn`` (group, ``0.0.0.0``, then the index
  as a native ``int``: 12 bytes); ``IPPROTO_IPV6``/``IPV6_JOIN_GROUP``/
  ``IPV6_LEAVE_GROUP`` with an ``ipv6_mreq`` (group, 16 bytes, then the index
  as a native ``unsigned int``; 0 = the kernel's choice).
- outgoing interface: ``IP_MULTICAST_IF`` with the address (4 bytes) or an
  ``ip_mreqn`` (12 bytes); ``IPV6_MULTICAST_IF`` with the index (int).
- hops: ``IP_MULTICAST_TTL`` / ``IPV6_MULTICAST_HOPS`` (int, 0..255).
- loopback: ``IP_MULTICAST_LOOP`` / ``IPV6_MULTICAST_LOOP`` (int, 0 or 1).
- broadcast: ``SOL_SOCKET``/``SO_BROADCAST`` (int, 0 or 1), either family.
- only joined groups: ``IP_MULTICAST_ALL`` (and ``IPV6_MULTICAST_ALL``,
  Linux 4.20) set to 0: the socket receives the groups it joined, not every
  group any socket of the host joined (the all-hosts groups 224.0.0.1 and
  ff02::1 included), as Linux delivers by default.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import sys
from typing import Protocol, TypeAlias

import attrs

from ._errors import InvalidAddress

__all__ = [
    "Interface",
    "Multicast",
    "MulticastOptions",
    "interface_index",
    "joined_index",
    "membership_request",
    "outgoing_interface",
    "receive_only_joined",
]

# Python names neither option (Linux's values).
_IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)
_IPV6_MULTICAST_ALL = getattr(socket, "IPV6_MULTICAST_ALL", 29)

#: A network interface: its name (``"eth0"``), its index (``2``), or, for
#: IPv4 only, one of its addresses (``"192.0.2.7"``); None lets the kernel
#: choose from its routing table.
Interface: TypeAlias = str | int | None


def _group_family(group: str) -> int:
    """The family of a multicast group address; InvalidAddress otherwise."""
    try:
        ip = ipaddress.ip_address(group)
    except ValueError:
        raise InvalidAddress(
            group, "a multicast group must be a numeric address"
        ) from None
    if not ip.is_multicast:
        raise InvalidAddress(
            group,
            "not a multicast address (IPv4 groups are 224.0.0.0/4, IPv6 ff00::/8)",
        )
    return socket.AF_INET if ip.version == 4 else socket.AF_INET6


def _groups(values: object) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    groups = tuple(str(value) for value in values)  # type: ignore[attr-defined]
    for group in groups:
        _group_family(group)
    return groups


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def interface_index(interface: Interface) -> int:
    """The index of an interface given by name or index; 0 for None (any).

    Raises:
        ValueError: no interface has that name, or the index is negative.

    Example:
        >>> interface_index("lo"), interface_index(None), interface_index(3)
        (1, 0, 3)
    """
    if interface is None:
        return 0
    if isinstance(interface, bool) or (isinstance(interface, int) and interface < 0):
        msg = f"an interface index must be an int >= 0, not {interface!r}"
        raise ValueError(msg)
    if isinstance(interface, int):
        return interface
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        msg = f"no network interface is named {interface!r}"
        raise ValueError(msg) from None


def membership_request(family: int, group: str, interface: Interface = None) -> bytes:
    """The value of the join/leave socket option for ``group`` on ``interface``.

    Raises:
        InvalidAddress: ``group`` is not a multicast address of ``family``.
        ValueError: ``interface`` is unknown, or an address for IPv6.

    Example:
        >>> membership_request(socket.AF_INET, "239.1.2.3", "127.0.0.1").hex()
        'ef0102037f000001'
        >>> len(membership_request(socket.AF_INET6, "ff15::1", 1))
        20
    """
    if _group_family(group) != family:
        raise InvalidAddress(
            group,
            f"an {'IPv4' if family == socket.AF_INET else 'IPv6'} socket cannot join it;"
            " open a socket of the group's family",
        )
    if family == socket.AF_INET6:
        return socket.inet_pton(socket.AF_INET6, group) + struct.pack(
            "@I", _ipv6_index(interface)
        )
    packed = socket.inet_aton(group)
    if interface is None or (isinstance(interface, str) and _is_ipv4(interface)):
        return packed + socket.inet_aton(interface or "0.0.0.0")
    return (
        packed
        + socket.inet_aton("0.0.0.0")
        + struct.pack("@i", interface_index(interface))
    )


def _ipv6_index(interface: Interface) -> int:
    if isinstance(interface, str) and (":" in interface or _is_ipv4(interface)):
        msg = f"IPv6 needs an interface name or index, not the address {interface!r}"
        raise ValueError(msg)
    return interface_index(interface)


def outgoing_interface(family: int, interface: Interface) -> bytes | int:
    """The value of ``IP_MULTICAST_IF``/``IPV6_MULTICAST_IF`` for ``interface``.

    Example:
        >>> outgoing_interface(socket.AF_INET, "127.0.0.1").hex()
        '7f000001'
        >>> outgoing_interface(socket.AF_INET6, "lo")
        1
    """
    if family == socket.AF_INET6:
        return _ipv6_index(interface)
    if interface is None or (isinstance(interface, str) and _is_ipv4(interface)):
        return socket.inet_aton(interface or "0.0.0.0")
    return socket.inet_aton("0.0.0.0") * 2 + struct.pack(
        "@i", interface_index(interface)
    )


def _check_hops(
    instance: object, attribute: attrs.Attribute[int | None], value: int | None
) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 255
    ):
        msg = f"{attribute.name} must be an int in 0..255 or None, not {value!r}"
        raise ValueError(msg)


@attrs.frozen(kw_only=True)
class Multicast:
    """Multicast settings for :func:`open_udp_socket` and :func:`serve_udp`.

    To receive a group's datagrams, bind the group's port on the wildcard
    address and join the group; to send to a group, ``send_to`` its address
    (the settings below choose how the datagrams leave).

    Args:
        groups: group addresses to join, IPv4 (``224.0.0.0/4``) or IPv6
            (``ff00::/8``). :func:`serve_udp` without a host joins each on the
            socket of its family.
        interface: where to join the groups and send multicast datagrams: an
            interface name, index, or (IPv4 sockets only) address; None lets
            the kernel's routing table choose.
        loopback: whether this host's own group members receive what the
            socket sends (the kernel's default is yes); None leaves it.
        ttl: the IPv4 TTL or IPv6 hop limit of multicast datagrams sent (the
            kernel's default is 1: the local link; 0 stays on this host);
            None leaves it.
        routed: whether a server hands on group datagrams from sources
            beyond the local link (multicast routing). By default it drops
            them (``dropped_multicast``): a neighbour that forges a far
            victim's address as the source of one group datagram would have
            every responder on the link answer the victim.

    Example:
        >>> Multicast(groups=["239.1.2.3"], ttl=1).groups
        ('239.1.2.3',)
    """

    groups: tuple[str, ...] = attrs.field(default=(), converter=_groups)
    interface: Interface = None
    loopback: bool | None = None
    ttl: int | None = attrs.field(default=None, validator=_check_hops)
    routed: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )

    def for_family(self, family: int) -> Multicast:
        """These settings with only the groups of ``family``.

        Example:
            >>> both = Multicast(groups=["239.1.2.3", "ff15::1"])
            >>> both.for_family(socket.AF_INET6).groups
            ('ff15::1',)
        """
        interface = self.interface
        if (
            family == socket.AF_INET6
            and isinstance(interface, str)
            and _is_ipv4(interface)
        ):
            interface = None  # an IPv4 address names an interface for IPv4 only
        return attrs.evolve(
            self,
            groups=[group for group in self.groups if _group_family(group) == family],
            interface=interface,
        )


class _OptionSocket(Protocol):
    @property
    def family(self) -> int: ...

    def setsockopt(self, level: int, option: int, value: int | bytes, /) -> None: ...


class MulticastOptions:
    """The multicast and broadcast methods of :class:`UDPSocket` (a mixin:
    each is one ``setsockopt`` call on the socket ``_options_socket`` gives)."""

    _groups: list[tuple[str, int]]
    _routed: bool

    def _options_socket(self) -> _OptionSocket:
        """The socket to set options on (raises if it is closed)."""
        raise NotImplementedError

    def _family(self) -> int:
        return int(self._options_socket().family)

    def _set(self, ipv4_option: int, ipv6_option: int, value: int | bytes) -> None:
        """Set the IP-level option of the socket's family to ``value``."""
        sock = self._options_socket()
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, ipv6_option, value)
        else:
            sock.setsockopt(socket.IPPROTO_IP, ipv4_option, value)

    @property
    def groups(self) -> tuple[tuple[str, int], ...]:
        """The multicast groups joined, as ``(group, interface index)`` (0 for
        the interface the kernel chose)."""
        return tuple(self._groups)

    def join_group(self, group: str, interface: Interface = None) -> None:
        """Receive the datagrams sent to multicast ``group`` (on the socket's port).

        Bind the wildcard address (or the group) and the group's port first;
        joining is per interface, so join once per interface to listen on
        several.

        Args:
            group: an IPv4 (``224.0.0.0/4``) or IPv6 (``ff00::/8``) group of
                the socket's family.
            interface: an interface name, index, or (IPv4) one of its
                addresses; None lets the kernel's routing table choose.

        Raises:
            InvalidAddress: ``group`` is not a multicast address of this family.
            ValueError: no such interface, or an address given for IPv6.
            OSError: the kernel refused (``EADDRINUSE``: already joined there;
                ``ENODEV``: no route for multicast).

        Example::

            async with trioudp.open_udp_socket("0.0.0.0", 5007) as sock:
                sock.join_group("239.1.2.3")
                datagram = await sock.receive()
        """
        self._set(
            socket.IP_ADD_MEMBERSHIP,
            socket.IPV6_JOIN_GROUP,
            membership_request(self._family(), group, interface),
        )
        # As the kernel writes the group as a destination (screening compares).
        self._groups.append((_canonical(group), joined_index(interface)))

    def leave_group(self, group: str, interface: Interface = None) -> None:
        """Stop receiving ``group``'s datagrams on ``interface`` (see :meth:`join_group`).

        Raises:
            OSError: ``EADDRNOTAVAIL``: the group was not joined there.

        Example::

            sock.leave_group("239.1.2.3")
        """
        self._set(
            socket.IP_DROP_MEMBERSHIP,
            socket.IPV6_LEAVE_GROUP,
            membership_request(self._family(), group, interface),
        )
        entry = (_canonical(group), joined_index(interface))
        if entry in self._groups:
            self._groups.remove(entry)

    def set_multicast_loopback(self, enabled: bool) -> None:
        """Whether group members on this host get the multicast datagrams this
        socket sends (the kernel's default: yes).

        Example::

            sock.set_multicast_loopback(False)
        """
        self._set(
            socket.IP_MULTICAST_LOOP, socket.IPV6_MULTICAST_LOOP, int(bool(enabled))
        )

    def set_multicast_ttl(self, hops: int) -> None:
        """The IPv4 TTL or IPv6 hop limit of multicast datagrams sent: 0 stays
        on this host, 1 (the kernel's default) on the local link.

        Raises:
            ValueError: ``hops`` is not in 0..255.

        Example::

            sock.set_multicast_ttl(0)  # this host's members only
        """
        if isinstance(hops, bool) or not isinstance(hops, int) or not 0 <= hops <= 255:
            msg = f"hops must be an int in 0..255, not {hops!r}"
            raise ValueError(msg)
        self._set(socket.IP_MULTICAST_TTL, socket.IPV6_MULTICAST_HOPS, hops)

    def set_multicast_interface(self, interface: Interface) -> None:
        """The interface multicast datagrams leave by: a name, an index, or
        (IPv4) one of its addresses; None for the routing table's choice.

        Raises:
            ValueError: no such interface, or an address given for IPv6.

        Example::

            sock.set_multicast_interface("eth0")
        """
        self._set(
            socket.IP_MULTICAST_IF,
            socket.IPV6_MULTICAST_IF,
            outgoing_interface(self._family(), interface),
        )

    def set_broadcast(self, enabled: bool) -> None:
        """Allow sending to broadcast addresses (``SO_BROADCAST``); without
        it the kernel refuses them with ``PermissionError`` (``EACCES``).

        Example::

            sock.set_broadcast(True)
            await sock.send_to(b"anyone?", ("192.0.2.255", 5007))
        """
        self._options_socket().setsockopt(
            socket.SOL_SOCKET, socket.SO_BROADCAST, int(bool(enabled))
        )

    def configure_multicast(self, multicast: Multicast) -> None:
        """Apply ``multicast`` (see :class:`Multicast`): settings, then groups."""
        if multicast.interface is not None:
            self.set_multicast_interface(multicast.interface)
        if multicast.loopback is not None:
            self.set_multicast_loopback(multicast.loopback)
        if multicast.ttl is not None:
            self.set_multicast_ttl(multicast.ttl)
        self._routed = multicast.routed
        for group in multicast.groups:
            self.join_group(group, multicast.interface)


def _canonical(group: str) -> str:
    return str(ipaddress.ip_address(group))


def receive_only_joined(sock: _OptionSocket, *, kernel: bool) -> None:
    """Have ``sock`` receive only the multicast groups it joins (Linux; a
    no-op elsewhere). ``kernel``: a real socket, which also takes the IPv6
    option (a virtual one knows only the IPv4 one)."""
    if sys.platform != "linux":
        return
    options = [(socket.IPPROTO_IP, _IP_MULTICAST_ALL)]
    if kernel and sock.family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, _IPV6_MULTICAST_ALL))
    for level, option in options:
        try:
            sock.setsockopt(level, option, 0)
        except OSError as exc:
            if exc.errno != errno.ENOPROTOOPT:  # a kernel without it
                raise


def joined_index(interface: Interface) -> int:
    """The index a group is joined on: 0 where the interface is given by
    address, or not at all (the kernel chose).

    Example:
        >>> joined_index("127.0.0.1"), joined_index("lo")
        (0, 1)
    """
    if interface is None or (isinstance(interface, str) and _is_ipv4(interface)):
        return 0
    return interface_index(interface)
