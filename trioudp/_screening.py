"""Ingress screening: where a datagram arrived (PKTINFO), what it was sent to, and which sources are forged.

A server receives on each socket through a :class:`Screen`
(:func:`screen_for` makes it), on the fast path and on the plain one alike.
For each datagram it reads the interface and destination the kernel reports
(``IP_PKTINFO``/``IPV6_PKTINFO``) and reports, as the datagram's peer, one of
three stand-ins when the datagram must not reach a handler:

* :data:`FORGED_SOURCE`: no real peer has its source (see
  :meth:`Screen.judge`);
* :data:`BROADCAST_DESTINATION`: it was sent to a broadcast address, and the
  socket may not broadcast (``broadcast=False``) or the source is not on the
  link it came from;
* :data:`MULTICAST_DESTINATION`: it was sent to a multicast group the socket
  did not join, or to one it joined from a source not on that link (unless
  the socket's :class:`Multicast` says ``routed=True``).

The server's admission (``_admission``) drops and counts each. Plain system
calls: no Trio here.

Invariant: every stand-in's port is 0, so it always reaches admission,
which runs for every datagram from a port below the loop guard's bound
(port 0 included) even when the server has no protection configured
(``_fastpath`` tests ``admission.active or peer[1] < admit_below``);
admission drops it under its own counter, never as port 0, and no handler
ever sees it.
"""

from __future__ import annotations

import contextlib
import logging
import socket as stdlib_socket
import sys
import time
from typing import TYPE_CHECKING, Final, Protocol

from ._address import UNSPECIFIED_HOSTS, is_loopback

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from ._address import SocketAddress
    from ._interfaces import AddressBook, HostAddresses

__all__ = [
    "ANCILLARY_SPACE",
    "BROADCAST_DESTINATION",
    "FORGED_SOURCE",
    "MULTICAST_DESTINATION",
    "Screen",
    "ask_for_pktinfo",
    "bind_to_loopback_interface",
    "ingress",
    "screen_for",
    "source_is_forged",
]

logger = logging.getLogger("trioudp")

#: The peer a screen reports for a datagram whose source is forged.
FORGED_SOURCE: Final = ("", 0)
#: The peer a screen reports for a broadcast datagram the socket does not answer.
BROADCAST_DESTINATION: Final = ("<broadcast>", 0)
#: The peer a screen reports for a multicast datagram the socket does not answer.
MULTICAST_DESTINATION: Final = ("<multicast>", 0)

# Python adds IP_PKTINFO only in 3.13; its value on Linux is 8.
_IP_PKTINFO = getattr(
    stdlib_socket, "IP_PKTINFO", 8 if sys.platform == "linux" else None
)
_IPV6_RECVPKTINFO = getattr(stdlib_socket, "IPV6_RECVPKTINFO", None)
_IPV6_PKTINFO = getattr(stdlib_socket, "IPV6_PKTINFO", None)
_MSG_CTRUNC = int(
    getattr(stdlib_socket, "MSG_CTRUNC", 8)
)  # an int: enum flags are slow
_monotonic = time.monotonic
_IP = int(stdlib_socket.IPPROTO_IP)
_IP6 = int(stdlib_socket.IPPROTO_IPV6)
_LOOPBACK_PREFIXES = ("127.", "::ffff:127.")
_MAPPED = "::ffff:"
_V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
#: First octets of IPv4 addresses no datagram comes from: multicast
#: (224/4), reserved (class E, 240/4) and the limited broadcast.
_NEVER_SOURCE_OCTETS = frozenset(str(octet) for octet in range(224, 256))
#: Sources that need a full judgement whatever the table says.
_SUSPECTS = frozenset(UNSPECIFIED_HOSTS) | {"::1"}
#: Room for the control messages of one datagram: the interface's, and the
#: ones a socket of the user's own may also ask for (timestamps, TOS, TTL,
#: ...), which Linux can place before it.
ANCILLARY_SPACE = 512
#: Most destination addresses whose text a screen keeps (a host has few).
_NAMES_KEPT = 256


class _OptionSocket(Protocol):
    @property
    def family(self) -> int: ...

    def setsockopt(self, level: int, option: int, value: int | bytes, /) -> None: ...


_SO_BINDTODEVICE = getattr(stdlib_socket, "SO_BINDTODEVICE", None)
_REUSEPORT = getattr(stdlib_socket, "SO_REUSEPORT", None)


def _loopback_name(index: int) -> bytes:
    try:
        return stdlib_socket.if_indextoname(index).encode()
    except OSError:
        return b"lo"


def bind_to_loopback_interface(sock: _OptionSocket, host: str) -> bool:
    """Before ``sock`` is bound to ``host``: if it is a loopback address,
    bind the socket to the loopback interface too (``SO_BINDTODEVICE``,
    unprivileged since Linux 5.7), so that the kernel delivers it only what
    arrives over loopback (with ``route_localnet=1`` a neighbour reaches
    127.0.0.0/8 over other interfaces). Before the address, because
    sockets that share a port (``SO_REUSEPORT``) must all be bound to the
    same device. Returns whether it did; a kernel that refuses leaves the
    check to :class:`Screen`, per datagram."""
    if _SO_BINDTODEVICE is None or not is_loopback(host):
        return False
    try:
        sock.setsockopt(
            stdlib_socket.SOL_SOCKET,
            _SO_BINDTODEVICE,
            _loopback_name(_loopback_index()),
        )
    except OSError:
        return False
    return True


def _loopback_index() -> int:
    try:
        return stdlib_socket.if_nametoindex("lo")
    except OSError:
        return 1  # Linux numbers lo first in every network namespace


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
        if level == _IP and kind == _IP_PKTINFO and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder), False
        if level == _IP6 and kind == _IPV6_PKTINFO and len(data) >= 20:
            index = int.from_bytes(data[16:20], sys.byteorder)
            return index, not data.startswith(_V4_MAPPED_PREFIX)
    return None, False


def _int(index: bytes | None) -> int:
    """An interface index as the kernel writes it (-1 where unknown)."""
    return -1 if index is None else int.from_bytes(index, sys.byteorder)


def _never_a_source(host: str) -> bool:
    """An IPv4 multicast, class E or limited broadcast address (mapped too)."""
    if host.startswith(_MAPPED):
        host = host[7:]
    return host[3:4] == "." and host[:3] in _NEVER_SOURCE_OCTETS


def source_is_forged(
    host: str,
    ingress: int | None,
    loopback: int,
    *,
    ipv6_packet: bool = False,
    port: int = 0,
    local_port: int = -1,
    table: HostAddresses | None = None,
) -> bool:
    """Whether a datagram's source ``host`` (and ``port``) cannot be its real
    sender, given the interface it arrived on (``ingress``; None: unknown).

    Forged: an unspecified address; an IPv4 multicast, class E (240/4) or
    broadcast address; a loopback address (IPv4-mapped included) that did
    not arrive over ``loopback``; an IPv4-mapped address as the source of an
    IPv6 packet (no real peer sends one: RFC 4291 keeps them inside a host;
    a reply would go out as IPv4 to whatever the neighbour named, past the
    checks Linux makes on real IPv4 sources). With this host's ``table``
    also: a subnet's broadcast address; and one of this host's own
    addresses that did not arrive over ``loopback``, from this socket's own
    port (``local_port``) or from a port outside the range the kernel gives
    clients (``table.ephemeral``). Linux reports this host's own traffic to
    its own address with the same interface as a neighbour's forgery of it,
    so the port tells them apart: the host's own clients send from that
    range unless they bound a port, while a reply to a forged source goes to
    whatever service holds the port it names, this server included.

    Example:
        >>> source_is_forged("::ffff:127.0.0.1", ingress=2, loopback=1)
        True
        >>> source_is_forged("::ffff:127.0.0.1", ingress=1, loopback=1)
        False
        >>> source_is_forged("0.0.0.0", ingress=1, loopback=1)
        True
        >>> source_is_forged("192.0.2.7", ingress=2, loopback=1)
        False
        >>> source_is_forged("240.0.0.1", ingress=2, loopback=1)
        True
        >>> source_is_forged("::ffff:192.0.2.7", 2, 1, ipv6_packet=True)
        True
        >>> from trioudp._interfaces import HostAddresses
        >>> table = HostAddresses.of([(2, "192.0.2.1", 24, "192.0.2.255")])
        >>> source_is_forged("192.0.2.255", 2, 1, port=4000, table=table)
        True
        >>> source_is_forged("192.0.2.1", 2, 1, port=4000, table=table)
        True
        >>> source_is_forged("192.0.2.1", 2, 1, port=40000, table=table)
        False
    """
    # The kernel writes received addresses in canonical form, so plain string
    # tests are exact here, and they cost a fraction of parsing each address.
    if host in UNSPECIFIED_HOSTS:
        return True
    if ipv6_packet and host.startswith(_MAPPED):
        return True
    if host.startswith(_LOOPBACK_PREFIXES) or host == "::1":
        return ingress != loopback
    if _never_a_source(host):
        return True
    if table is None:
        return False
    if host in table.broadcast:
        return True
    if host in table.own and ingress != loopback:
        low, high = table.ephemeral
        return port == local_port or not low <= port <= high
    return False


class Screen:
    """Judges the datagrams of one socket (see the module docstring).

    ``fast`` is the socket's non-blocking twin (None on the plain path: then
    only :meth:`judge` is used); ``where`` names the socket in logs;
    ``family`` and ``host`` are the socket's family and bound address,
    ``local_port`` its port. ``book`` holds this host's addresses (None
    where they cannot be read: a virtual socket, not Linux). ``groups`` is
    the socket's joined groups, as ``(group, interface index)``, read at
    each multicast datagram; ``broadcast`` and ``routed`` tell whether it
    answers broadcasts and multicast from beyond the link, asked at each
    such datagram. ``kernel`` is False for a virtual socket: its sources
    are not judged (see :func:`screen_for`), its destinations are.
    """

    def __init__(
        self,
        fast: stdlib_socket.socket | None,
        where: object,
        *,
        family: int,
        host: str,
        local_port: int,
        loopback: int,
        book: AddressBook | None,
        groups: Collection[tuple[str, int]] = (),
        broadcast: Callable[[], bool] = lambda: False,
        routed: Callable[[], bool] = lambda: False,
        pktinfo: bool = True,
        kernel: bool = True,
    ) -> None:
        self.fast = fast
        # On a virtual network sources are not judged: no neighbour forges
        # there, and its hosts with only loopback addresses send from
        # 127.0.0.1 to other hosts (which Linux never does).
        self._kernel = kernel
        #: Whether the kernel reports each datagram's interface (Linux).
        self.pktinfo = pktinfo
        self._where = where
        self._ipv6_socket = family == stdlib_socket.AF_INET6
        self._local_port = local_port
        self._loopback = loopback
        self._book = book
        self._groups = groups
        self._broadcast = broadcast
        self._routed = routed
        self._forged_seen = 0
        self._names: dict[bytes, str] = {}
        # The table last read, and the sources worth a full judgement.
        self._table: HostAddresses | None = None
        self._suspects: frozenset[str] = _SUSPECTS
        self._bound = None if host in UNSPECIFIED_HOSTS else host
        #: Where the datagram last received by :attr:`receive` was sent.
        self.destination = self._bound
        self._loopback_bytes = loopback.to_bytes(4, sys.byteorder)
        #: The receive function of the fast path (``fast`` set): ``recvfrom``
        #: with the peer screened (see :meth:`judge`), the destination left
        #: in :attr:`destination`.
        self.receive: Callable[[int], tuple[bytes, SocketAddress]] = (
            self.recvfrom_specified
            if not pktinfo
            else self._recvfrom_loopback
            if is_loopback(host)
            else self.recvfrom
        )

    def bind_to_loopback(self) -> bool:
        """For a socket bound to loopback: rely on the kernel to deliver
        only what arrives over the loopback interface, so that receiving
        costs no more than a plain ``recvfrom``. True if the socket is bound
        to that interface (``SO_BINDTODEVICE``: ``open_udp_socket`` binds it
        before the address, see :func:`bind_to_loopback_interface`), or
        could be bound now; False where it cannot (then :attr:`receive`
        checks each datagram's interface).

        A socket of a ``SO_REUSEPORT`` group is not bound after the fact:
        Linux would then deliver it nothing (it leaves its group)."""
        fast = self.fast
        if (
            fast is None
            or _SO_BINDTODEVICE is None
            or not is_loopback(self._bound or "")
        ):
            return False
        name = _loopback_name(self._loopback)
        try:
            device = fast.getsockopt(stdlib_socket.SOL_SOCKET, _SO_BINDTODEVICE, 16)
            if device.rstrip(b"\0") != name:
                if _REUSEPORT is not None and fast.getsockopt(
                    stdlib_socket.SOL_SOCKET, _REUSEPORT
                ):
                    return False
                fast.setsockopt(stdlib_socket.SOL_SOCKET, _SO_BINDTODEVICE, name)
        except OSError:
            return False  # Linux before 5.7 wants CAP_NET_RAW
        self.receive = fast.recvfrom
        return True

    # ---- receiving (fast path) ---------------------------------------------

    def recvfrom(self, bufsize: int) -> tuple[bytes, SocketAddress]:
        """``recvfrom`` on the twin, the peer screened (see :meth:`judge`)."""
        assert self.fast is not None
        data, ancdata, flags, peer = self.fast.recvmsg(bufsize, ANCILLARY_SPACE)
        peer, self.destination = self.judge(ancdata, flags, peer)
        return data, peer

    def _recvfrom_loopback(self, bufsize: int) -> tuple[bytes, SocketAddress]:
        """:meth:`recvfrom` for a socket bound to loopback: whatever did not
        arrive over loopback is forged (with ``route_localnet=1``, Linux lets
        neighbours reach 127.0.0.0/8 over other interfaces). The one check,
        kept cheap."""
        assert self.fast is not None
        data, ancdata, _flags, peer = self.fast.recvmsg(bufsize, ANCILLARY_SPACE)
        for level, kind, value in ancdata:
            if level == _IP and kind == _IP_PKTINFO:
                if value[:4] == self._loopback_bytes:
                    return data, peer
                break
            if level == _IP6 and kind == _IPV6_PKTINFO:
                if value[16:20] == self._loopback_bytes:
                    return data, peer
                break
        return data, self._forged(peer)

    # ---- judging -------------------------------------------------------------

    def judge(
        self, ancdata: list[tuple[int, int, bytes]], flags: int, peer: SocketAddress
    ) -> tuple[SocketAddress, str | None]:
        """The peer to report for a datagram from ``peer`` with control data
        ``ancdata`` (:data:`FORGED_SOURCE`, :data:`BROADCAST_DESTINATION`,
        :data:`MULTICAST_DESTINATION` or ``peer`` itself), and the address it
        was sent to (None if unknown)."""
        raw6 = raw4 = spec = where = None
        if not flags & _MSG_CTRUNC:
            # The interface's control message may be missing (crowded out:
            # MSG_CTRUNC): then it is unknown, and no loopback source trusted.
            for level, kind, value in ancdata:
                if kind == _IPV6_PKTINFO and level == _IP6:
                    raw6, where = value[:16], value[16:20]
                elif kind == _IP_PKTINFO and level == _IP:
                    where, spec, raw4 = value[:4], value[4:8], value[8:12]
        # The interface as an int only where it matters: loopback or not
        # (else -1: another, or unknown); on_link() reads the real index.
        index = self._loopback if where == self._loopback_bytes else -1
        ipv6_packet = raw6 is not None and not raw6.startswith(_V4_MAPPED_PREFIX)
        if raw4 is None and raw6 is not None and not ipv6_packet:
            raw4 = raw6[12:]
        names = self._names
        destination: str | None
        if raw6 is not None and self._ipv6_socket:
            destination = names.get(raw6) or self._name(raw6, stdlib_socket.AF_INET6)
        elif raw4 is not None:
            destination = names.get(raw4) or self._name(raw4, stdlib_socket.AF_INET)
        else:
            destination = self._bound
        book = self._book
        table = None
        if book is not None:
            table = book.table if _monotonic() < book.due else book.current()
            if table is not self._table:
                self._table = table
                self._suspects = _SUSPECTS | (
                    table.own | table.broadcast if table is not None else frozenset()
                )
        host = peer[0]
        # Most sources pass these string tests; only the rest are judged in
        # full (source_is_forged), which costs a call with keywords.
        suspect = (
            host in self._suspects
            or host.startswith(_LOOPBACK_PREFIXES)
            or (host[3:4] == "." and host[:3] in _NEVER_SOURCE_OCTETS)
            or (
                host.startswith(_MAPPED)
                and (
                    ipv6_packet
                    or host[7:] in self._suspects
                    or (host[10:11] == "." and host[7:10] in _NEVER_SOURCE_OCTETS)
                )
            )
        )
        if self._kernel and (
            (
                suspect
                and source_is_forged(
                    host,
                    index,
                    self._loopback,
                    ipv6_packet=ipv6_packet,
                    port=peer[1],
                    local_port=self._local_port,
                    table=table,
                )
            )
            or (
                # Sent to a loopback address from another interface
                # (route_localnet=1): whatever its source, not a local peer's.
                index != self._loopback
                and destination is not None
                and (destination.startswith(_LOOPBACK_PREFIXES) or destination == "::1")
            )
        ):
            return self._forged(peer), destination
        if ipv6_packet:
            assert raw6 is not None
            if raw6[0] == 0xFF:
                return self._multicast(peer, destination, where, table), destination
            return peer, destination
        if raw4 is None:
            return peer, destination
        if 224 <= raw4[0] < 240:
            return self._multicast(peer, destination, where, table), destination
        # Linux does not say "broadcast", but answers a broadcast with the
        # interface's address as ipi_spec_dst, a unicast with the address
        # itself; without IP_PKTINFO, the subnets' broadcast addresses tell.
        if spec is not None:
            broadcast = spec != raw4
        else:
            broadcast = raw4 == b"\xff\xff\xff\xff" or (
                table is not None and destination in table.broadcast
            )
        if broadcast and (
            not self._broadcast()
            or (table is not None and not table.on_link(peer[0], _int(where)))
        ):
            return BROADCAST_DESTINATION, destination
        return peer, destination

    def _multicast(
        self,
        peer: SocketAddress,
        destination: str | None,
        where: bytes | None,
        table: HostAddresses | None,
    ) -> SocketAddress:
        group = destination or ""
        if group.startswith(_MAPPED):
            group = group[7:]
        if not any(joined == group for joined, _ in self._groups):
            return MULTICAST_DESTINATION
        if (
            table is not None
            and not self._routed()
            and not table.on_link(peer[0], _int(where))
        ):
            return MULTICAST_DESTINATION
        return peer

    def _name(self, raw: bytes, family: int) -> str:
        """The text of a destination address, kept (a host receives on few)."""
        names = self._names
        if len(names) >= _NAMES_KEPT:
            names.clear()
        name = names[raw] = stdlib_socket.inet_ntop(family, raw)
        return name

    def _forged(self, peer: SocketAddress) -> SocketAddress:
        count = self._forged_seen = self._forged_seen + 1
        if count & (count - 1) == 0:
            logger.warning(
                "dropped a UDP datagram with a forged source %r on %r, seen %d times",
                peer,
                self._where,
                count,
            )
        return FORGED_SOURCE

    def recvfrom_specified(self, bufsize: int) -> tuple[bytes, SocketAddress]:
        """``recvfrom`` that reports :data:`FORGED_SOURCE` as the peer of a
        datagram from an unspecified address (where the ingress interface
        cannot be read, see :func:`screen_for`)."""
        assert self.fast is not None
        data, peer = self.fast.recvfrom(bufsize)
        return data, self.judge_unspecified(peer)

    def judge_unspecified(self, peer: SocketAddress) -> SocketAddress:
        """:meth:`judge` where the kernel does not report the interface."""
        return FORGED_SOURCE if peer[0] in UNSPECIFIED_HOSTS else peer

    @property
    def bound(self) -> str | None:
        """The destination of every datagram, for a socket bound to one address."""
        return self._bound


def ask_for_pktinfo(sock: _OptionSocket) -> bool:
    """Ask the kernel for each datagram's interface and destination
    (``IP_PKTINFO``; on an IPv6 socket ``IPV6_RECVPKTINFO``, and
    ``IP_PKTINFO`` too, for the IPv4 datagrams of a dual-stack socket);
    False where the option does not exist (not Linux)."""
    if sock.family == stdlib_socket.AF_INET6:
        if _IPV6_RECVPKTINFO is None:
            return False
        sock.setsockopt(_IP6, _IPV6_RECVPKTINFO, 1)
        if _IP_PKTINFO is not None:
            # A kernel that refuses it leaves IPV6_PKTINFO to serve alone.
            with contextlib.suppress(OSError):
                sock.setsockopt(_IP, _IP_PKTINFO, 1)
        return True
    if _IP_PKTINFO is None:
        return False
    sock.setsockopt(_IP, _IP_PKTINFO, 1)
    return True


def screen_for(
    sock: _OptionSocket,
    fast: stdlib_socket.socket | None,
    local: SocketAddress,
    where: object,
    *,
    book: AddressBook | None,
    groups: Collection[tuple[str, int]] = (),
    broadcast: Callable[[], bool] = lambda: False,
    routed: Callable[[], bool] = lambda: False,
    kernel: bool = True,
) -> Screen:
    """The screen for a socket bound to ``local`` (``sock``: its trio socket;
    ``fast``: its twin, or None on the plain path). Its ``receive`` is the
    function the fast path receives with; a socket bound to loopback is
    bound to the loopback interface too, where the kernel allows it
    (:meth:`Screen.bind_to_loopback`).

    Without ``IP_PKTINFO`` (not Linux) the interface and destination cannot
    be read (``screen.pktinfo`` is False): only unspecified sources are
    known to be forged. ``kernel`` is False for a socket of a virtual
    network: its destinations are judged as a real socket's, its sources
    not (no neighbour forges one there, and its hosts without a
    non-loopback address send from 127.0.0.1 to other hosts)."""
    pktinfo = ask_for_pktinfo(sock)
    screen = Screen(
        fast,
        where,
        family=sock.family,
        host=local[0],
        local_port=local[1],
        loopback=_loopback_index(),
        book=book,
        groups=groups,
        broadcast=broadcast,
        routed=routed,
        pktinfo=pktinfo,
        kernel=kernel,
    )
    screen.bind_to_loopback()
    return screen
