"""This host's own addresses, subnet broadcast addresses and on-link networks, read from the kernel and re-read on a bounded schedule.

Ingress screening (``_screening``) needs them to tell a forged source from a
real one: a neighbour that names this host's own address, or its subnet's
broadcast address, as the source of a datagram. Linux reports them over
rtnetlink (``RTM_GETADDR``, the dump ``ip addr`` reads); the port range the
kernel picks clients' ports from is ``ip_local_port_range``. Plain system
calls: no Trio here. The netlink socket is a plain one, open only for one
dump: it is no UDP socket a virtual network could stand in for (a virtual
socket is screened without a table, see :func:`_screening.screen_for`).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket as stdlib_socket
import struct
import sys
import time
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = [
    "REFRESH_SECONDS",
    "AddressBook",
    "HostAddresses",
    "read_host_addresses",
    "shared_address_book",
]

logger = logging.getLogger("trioudp")

#: Longest a table of this host's addresses is used before it is read again
#: (seconds). Reading one costs about a tenth of a millisecond.
REFRESH_SECONDS = 1.0

_NETLINK_ROUTE = 0
_RTM_NEWADDR, _RTM_GETADDR = 20, 22
_NLM_F_REQUEST, _NLM_F_DUMP = 0x1, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_IFA_ADDRESS, _IFA_LOCAL, _IFA_BROADCAST = 1, 2, 4
_NLMSG = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")
_V4_MAPPED = "::ffff:"
#: Linux's default ``ip_local_port_range``.
DEFAULT_EPHEMERAL = (32768, 60999)

Network = tuple[int, int, int]  # (interface index, network number, prefix length)


def _names(address: str, version: int) -> tuple[str, ...]:
    """The forms a peer's address takes: an IPv4 address also appears
    IPv4-mapped, on a dual-stack socket."""
    return (address, _V4_MAPPED + address) if version == 4 else (address,)


@attrs.frozen(kw_only=True)
class HostAddresses:
    """A snapshot of what screening needs to know of this host's network.

    Attributes:
        own: this host's addresses, as the kernel writes a peer's (IPv4 ones
            also IPv4-mapped).
        broadcast: the broadcast addresses of its IPv4 subnets (mapped too).
        networks4: ``(interface index, network, prefix length)`` of each IPv4
            subnet on each interface.
        networks6: the same for IPv6.
        ephemeral: the range of ports (inclusive) the kernel gives a client
            socket that does not pick its own.

    Example:
        >>> table = HostAddresses.of([(2, "10.9.0.1", 24, "10.9.0.255")])
        >>> "10.9.0.1" in table.own, "::ffff:10.9.0.255" in table.broadcast
        (True, True)
        >>> table.on_link("10.9.0.77", 2), table.on_link("10.9.0.77", 3)
        (True, False)
    """

    own: frozenset[str] = frozenset()
    broadcast: frozenset[str] = frozenset()
    networks4: tuple[Network, ...] = ()
    networks6: tuple[Network, ...] = ()
    ephemeral: tuple[int, int] = DEFAULT_EPHEMERAL

    @classmethod
    def of(
        cls,
        entries: Iterable[tuple[int, str, int, str | None]],
        ephemeral: tuple[int, int] = DEFAULT_EPHEMERAL,
    ) -> HostAddresses:
        """A table from ``(interface index, address, prefix length,
        broadcast address or None)`` entries."""
        own: set[str] = set()
        broadcast: set[str] = set()
        networks4: list[Network] = []
        networks6: list[Network] = []
        for index, text, prefix, brd in entries:
            address = ipaddress.ip_address(text)
            own.update(_names(str(address), address.version))
            bits = address.max_prefixlen
            network = int(address) >> (bits - prefix) if prefix else 0
            (networks4 if address.version == 4 else networks6).append(
                (index, network, prefix)
            )
            if brd is not None and brd != str(address):
                broadcast.update(_names(brd, 4))
        return cls(
            own=frozenset(own),
            broadcast=frozenset(broadcast),
            networks4=tuple(networks4),
            networks6=tuple(networks6),
            ephemeral=ephemeral,
        )

    def on_link(self, host: str, index: int) -> bool:
        """Whether ``host`` lies in a subnet of interface ``index``, or is an
        IPv6 link-local address (on every link by definition)."""
        if host.startswith(_V4_MAPPED):
            host = host[len(_V4_MAPPED) :]
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if address.version == 6 and address.is_link_local:
            return True
        networks = self.networks4 if address.version == 4 else self.networks6
        bits, number = address.max_prefixlen, int(address)
        return any(
            owner == index and (number >> (bits - prefix) if prefix else 0) == network
            for owner, network, prefix in networks
        )


def _attributes(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while offset + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            break
        found[kind] = data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


def parse_addresses(
    data: bytes,
) -> tuple[list[tuple[int, str, int, str | None]], bool]:
    """The ``(index, address, prefix length, broadcast)`` entries of netlink
    ``RTM_NEWADDR`` messages in ``data``, and whether the dump is done.

    Raises:
        OSError: the kernel answered the dump with an error.
    """
    entries: list[tuple[int, str, int, str | None]] = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            break
        body = offset + _NLMSG.size
        if kind == _NLMSG_DONE:
            return entries, True
        if kind == _NLMSG_ERROR:
            code = -struct.unpack_from("=i", data, body)[0]
            if code:
                raise OSError(code, os.strerror(code))
        if kind == _RTM_NEWADDR:
            family, prefix, _, _, index = _IFADDRMSG.unpack_from(data, body)
            attributes = _attributes(data, body + _IFADDRMSG.size, offset + length)
            raw = attributes.get(_IFA_LOCAL) or attributes.get(_IFA_ADDRESS)
            if raw is not None and family in (
                stdlib_socket.AF_INET,
                stdlib_socket.AF_INET6,
            ):
                brd = attributes.get(_IFA_BROADCAST)
                entries.append(
                    (
                        index,
                        stdlib_socket.inet_ntop(family, raw),
                        prefix,
                        None if brd is None else stdlib_socket.inet_ntop(family, brd),
                    )
                )
        offset += (length + 3) & ~3
    return entries, False


def _ephemeral_ports() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
            low, high = (int(part) for part in f.read().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL
    return low, high


def read_host_addresses() -> HostAddresses | None:
    """This host's addresses now (Linux), or None where netlink is missing.

    Raises:
        OSError: the dump failed (no descriptor free: ``EMFILE``, ...).
    """
    netlink = getattr(stdlib_socket, "AF_NETLINK", None)
    if netlink is None or sys.platform != "linux":
        return None
    with stdlib_socket.socket(netlink, stdlib_socket.SOCK_RAW, _NETLINK_ROUTE) as nl:
        request = _IFADDRMSG.pack(stdlib_socket.AF_UNSPEC, 0, 0, 0, 0)
        nl.send(
            _NLMSG.pack(
                _NLMSG.size + len(request),
                _RTM_GETADDR,
                _NLM_F_REQUEST | _NLM_F_DUMP,
                1,
                0,
            )
            + request
        )
        entries: list[tuple[int, str, int, str | None]] = []
        while True:
            found, done = parse_addresses(nl.recv(1 << 16))
            entries.extend(found)
            if done:
                break
    return HostAddresses.of(entries, _ephemeral_ports())


class AddressBook:
    """A :class:`HostAddresses` read again once it is ``every`` seconds old.

    The first reading happens in the constructor, and its error propagates
    (a server that cannot know the host's addresses does not start: it
    could not screen). A later reading that fails keeps the last table and
    logs a warning whenever the count of failures passes a power of two.

    Example:
        >>> book = AddressBook(lambda: HostAddresses.of([(1, "127.0.0.1", 8, None)]))
        >>> "127.0.0.1" in book.current().own
        True
    """

    def __init__(
        self,
        read: Callable[[], HostAddresses | None] = read_host_addresses,
        every: float = REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._every = every
        self._clock = clock
        self.table = read()
        #: When :meth:`current` reads the table again (on ``clock``).
        self.due = clock() + every
        self.failures = 0

    def current(self) -> HostAddresses | None:
        """The table, read again first if it is due."""
        now = self._clock()
        if now >= self.due:
            self.due = now + self._every
            try:
                self.table = self._read()
            except OSError as exc:
                self.failures += 1
                if self.failures & (self.failures - 1) == 0:
                    logger.warning(
                        "could not read this host's addresses (%s), %d times;"
                        " screening uses the table read before",
                        exc,
                        self.failures,
                    )
        return self.table


_shared: list[AddressBook] = []


def shared_address_book() -> AddressBook:
    """The :class:`AddressBook` every server of this process screens with
    (one dump a second at most, however many sockets): read where the
    first server starts, so a program that moves between network namespaces
    screens with the addresses of that first one.

    Raises:
        OSError: the first reading failed (see :class:`AddressBook`).
    """
    if not _shared:
        _shared.append(AddressBook())
    return _shared[0]
