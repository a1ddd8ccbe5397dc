"""The kernel's half of a virtual socket (Linux's ``struct sock``): its binding, the options the network obeys, and its receive queue.

This is the one thing the network holds of a socket. The network reads the
fields below and calls three methods: :meth:`Sock.deliver` (the one entry
point for an arriving datagram), :meth:`Sock.refuse` and
:meth:`Sock.connected_to` (an ICMP error coming back). It never sees the
:class:`~trioudp.testing.VirtualSocket` that owns it; the socket, in turn,
reaches the network only through its :class:`~._stack.Stack`.

Invariants:
    * :meth:`Sock.deliver` runs inside Trio's deadline processing (see
      ``_wire``): it is synchronous, never raises, and only queues the
      datagram and reschedules waiting receivers.
    * A datagram due at the instant a parked receiver's deadline expires
      reaches it, whichever of the two Trio processes first: a cancelled
      receiver first has the network deliver what is due (``catch_up``),
      and resumes with the datagram if one came (see ``_wire``).
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
from collections import deque
from typing import TYPE_CHECKING, final

import trio

from ._model import is_loopback, oserror, unsupported
from ._sockopts import (
    ETHERNET_IFINDEX,
    INT_OPTIONS,
    IP_MTU_DISCOVER,
    IP_MULTICAST_ALL,
    IP_PKTINFO,
    IP_RECVTTL,
    IPV6_MTU_DISCOVER,
    IPV6_PKTINFO,
    IPV6_RECVPKTINFO,
    LOOPBACK_IFINDEX,
    SO_TIMESTAMP,
    SO_TIMESTAMPNS,
    fit_ancillary,
    in6_pktinfo,
    in_pktinfo,
    timespec,
    timeval,
    truesize,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._hosts import Hosts
    from ._model import Binding, Endpoint, Host, Packet, Sockaddr

__all__ = ["TIMESTAMP_EPOCH", "Sock"]

#: Where the wall-clock of ``SO_TIMESTAMP(NS)`` ancillary data starts:
#: 2000-01-01T00:00:00Z, plus the network's virtual time.
TIMESTAMP_EPOCH = 946_684_800.0

_LINUX_DEFAULT_RCVBUF = 212_992  # net.core.rmem_default
# Plain ints: IntFlag arithmetic costs microseconds per datagram.
_IGNORED_FLAGS = int(getattr(stdlib_socket, "MSG_DONTWAIT", 0)) | int(
    getattr(stdlib_socket, "MSG_NOSIGNAL", 0)
)
_MSG_PEEK = int(stdlib_socket.MSG_PEEK)
_MSG_TRUNC = int(stdlib_socket.MSG_TRUNC)
# Trio's receive waits on EAGAIN even with MSG_DONTWAIT, so it means nothing.
_SUPPORTED_RECV_FLAGS = _MSG_PEEK | _MSG_TRUNC | _IGNORED_FLAGS
_MSG_CTRUNC = int(stdlib_socket.MSG_CTRUNC)
# IP_PMTUDISC_DO, _PROBE, _INTERFACE (and IPv6's): DF set, never fragmented.
_DONT_FRAGMENT = frozenset({2, 3, 4})
_SOL, _IP, _IP6 = (
    stdlib_socket.SOL_SOCKET,
    stdlib_socket.IPPROTO_IP,
    stdlib_socket.IPPROTO_IPV6,
)

#: A queued datagram: (payload, source, (packet, arrival time) if ancillary
#: data is on, what it costs the receive buffer).
Queued = tuple[bytes, "Sockaddr", "tuple[Packet, float] | None", int]


@final
class _Waiter:
    """The one receiver waiting on a socket. As on Trio's real sockets, a
    second task that would wait to receive gets ``trio.BusyResourceError``.

    ``catch_up`` delivers what the network has due now (``Wire.catch_up``).
    """

    __slots__ = ("_catch_up", "task")

    def __init__(self, catch_up: Callable[[], None]) -> None:
        self.task: trio.lowlevel.Task | None = None
        self._catch_up = catch_up

    async def park(self) -> None:
        if self.task is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
            msg = "another task is already reading / writing this fd"
            raise trio.BusyResourceError(msg)
        task = self.task = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            # A deadline at the instant a datagram is due: the datagram first.
            self._catch_up()
            if self.task is not task:
                return trio.lowlevel.Abort.FAILED  # rescheduled with it
            self.task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def unpark(self) -> None:
        task = self.task
        if task is not None:
            self.task = None
            trio.lowlevel.reschedule(task)


@final
class Sock:
    """A socket's state as the kernel keeps it; made by VirtualSocket.

    ``now`` reads the network's virtual time (for arrival stamps);
    ``catch_up`` delivers what the network has due now.
    """

    def __init__(
        self,
        family: stdlib_socket.AddressFamily,
        home: Host,
        now: Callable[[], float],
        catch_up: Callable[[], None],
    ) -> None:
        self.family = family
        self.home = home
        #: The host it lives on: its home until bound to an address.
        self.host = home
        self.binding: Binding | None = None
        self.peer: Endpoint | None = None
        self.closed = False
        self.error: int | None = None
        self.queue: deque[Queued] = deque()
        self.queued_bytes = 0
        self.rcvbuf = _LINUX_DEFAULT_RCVBUF
        self.sndbuf = _LINUX_DEFAULT_RCVBUF
        # Integer options set to other than their default (see _sockopts).
        self.ints: dict[tuple[int, int], int] = {}
        self.ancillary = False  # some option asks for ancillary data
        self.reuseaddr = False
        self.reuseport = False
        self.multicast_if4 = ("0.0.0.0", 0)  # (address, ifindex) as set
        self.multicast_if6 = 0
        self.groups: set[tuple[str, int]] = set()  # (group, ifindex) joined
        self.v6only = False
        self.rcvbuf_errors = 0
        self.waiter = _Waiter(catch_up)
        #: SO_BINDTODEVICE: the interface index it is bound to (0: none).
        self.device = 0
        #: The last unicast route the wire worked out for it: (destination,
        #: ``Hosts.version`` then, source endpoint). Its binding never
        #: changes once made; whatever else a route depends on (the hosts'
        #: addresses, SO_BINDTODEVICE) clears it or moves the version on.
        self.route_memo: tuple[Endpoint, int, Endpoint] | None = None
        # What the IP header of its datagrams carries: (TTL, TOS) for IPv4
        # (IP_TTL, IP_TOS) and IPv6 (hop limit, traffic class).
        self.ttl_tos4 = (64, 0)
        self.ttl_tos6 = (64, 0)
        self._now = now

    # ---- what the network asks ----------------------------------------------

    def opt(self, level: int, optname: int) -> int:
        """The value of an integer option (its default if never set)."""
        key = (level, optname)
        value = self.ints.get(key)
        return INT_OPTIONS[key].default if value is None else value

    def may_share_port(self, other: Sock) -> bool:
        """Linux: both SO_REUSEADDR, or both SO_REUSEPORT (one each: EADDRINUSE)."""
        return (self.reuseaddr and other.reuseaddr) or (
            self.reuseport and other.reuseport
        )

    def hears(self, group: str, via: int, joined: bool) -> bool:
        """Whether a copy sent to multicast ``group`` arriving on interface
        ``via`` is for it: it joined there, or some socket of its host did
        (``joined``) and ``IP_MULTICAST_ALL`` is on, as by default."""
        return (group, via) in self.groups or (
            joined and bool(self.opt(_IP, IP_MULTICAST_ALL))
        )

    def multicast_ttl_loop(self, family: int) -> tuple[int, int]:
        """TTL (hop limit) and loopback flag for multicast of ``family``; an
        IPv6 socket's IPv4 (mapped) multicast follows the IPv4 options."""
        if family == stdlib_socket.AF_INET6:
            return (
                self.opt(_IP6, stdlib_socket.IPV6_MULTICAST_HOPS),
                self.opt(_IP6, stdlib_socket.IPV6_MULTICAST_LOOP),
            )
        return (
            self.opt(_IP, stdlib_socket.IP_MULTICAST_TTL),
            self.opt(_IP, stdlib_socket.IP_MULTICAST_LOOP),
        )

    def deliver(self, packet: Packet) -> str | None:
        """Queue an arriving datagram; returns a drop reason, or None."""
        if self.closed:
            return "closed"
        if self.peer is not None and packet.src != self.peer:
            return "filtered"
        # Linux charges each datagram its buffer's true size, and always
        # takes one into an empty queue.
        size = truesize(len(packet.payload), self.family)
        if self.queued_bytes and self.queued_bytes + size > self.rcvbuf:
            self.rcvbuf_errors += 1
            return "rcvbuf"
        source: Sockaddr = packet.src
        if self.family == stdlib_socket.AF_INET6:
            v4_packet = packet.family == stdlib_socket.AF_INET
            source = self.sockaddr(packet.src, v4_packet=v4_packet)
        self.queue.append(
            (
                packet.payload,
                source,
                (packet, self._now()) if self.ancillary else None,
                size,
            )
        )
        self.queued_bytes += size
        self.waiter.unpark()
        return None

    def connected_to(self, dst: Endpoint) -> bool:
        """Whether it is open and connected to ``dst``."""
        return not self.closed and self.peer == dst

    def refuse(self, code: int = errno.ECONNREFUSED) -> None:
        """An ICMP error came back: ``code`` (port unreachable:
        ECONNREFUSED) is the pending error, if still open."""
        if not self.closed:
            self.set_error(code)

    def arrives_on(self, packet: Packet) -> int:
        """The interface a datagram for this socket's host arrives by: as
        Linux, the one that owns its destination address (``lo`` only for a
        loopback address and a sender on the same host)."""
        if packet.via:
            return packet.via
        if (
            is_loopback(packet.dst[0])
            and packet.sender is not None
            and packet.sender.host is self.host
        ):
            return LOOPBACK_IFINDEX
        return ETHERNET_IFINDEX

    def takes(self, packet: Packet) -> bool:
        """Whether its SO_BINDTODEVICE (if any) lets ``packet`` in."""
        return not self.device or self.device == self.arrives_on(packet)

    def dont_fragment(self, family: int) -> bool:
        """Whether datagrams of ``family`` leave with DF set and so raise
        EMSGSIZE above the path MTU (``IP_PMTUDISC_DO``, ``_PROBE`` and
        ``_INTERFACE``; the IPv6 option for IPv6 datagrams)."""
        if family == stdlib_socket.AF_INET6:
            return self.opt(_IP6, IPV6_MTU_DISCOVER) in _DONT_FRAGMENT
        return self.opt(_IP, IP_MTU_DISCOVER) in _DONT_FRAGMENT

    # ---- what the socket asks ---------------------------------------------

    def sockaddr(self, endpoint: Endpoint, *, v4_packet: bool = False) -> Sockaddr:
        """``endpoint`` as this socket's family writes it (IPv4 mapped on IPv6)."""
        ip, port = endpoint
        if self.family == stdlib_socket.AF_INET6:
            return (f"::ffff:{ip}" if v4_packet else ip, port, 0, 0)
        return (ip, port)

    def check_open(self) -> None:
        """EBADF once closed."""
        if self.closed:
            raise oserror(errno.EBADF, "the virtual socket is closed")

    def set_error(self, code: int) -> None:
        """Make ``code`` the pending error (``SO_ERROR``) and wake receivers."""
        self.error = code
        self.waiter.unpark()

    def raise_pending_error(self) -> None:
        """Raise the pending error, if any, clearing it."""
        if self.error is not None:
            code, self.error = self.error, None
            raise oserror(code)

    def discard_queue(self) -> None:
        """Drop what is queued and wake receivers (they find it closed)."""
        self.queue.clear()
        self.queued_bytes = 0
        self.waiter.unpark()

    def ancillary_data(
        self, extra: tuple[Packet, float] | None, ancbufsize: int, hosts: Hosts
    ) -> tuple[list[tuple[int, int, bytes]], int]:
        """Ancillary items for a datagram, as Linux orders them, and MSG_CTRUNC."""
        if extra is None or not ancbufsize:
            return [], 0
        packet, when = extra
        items: list[tuple[int, int, bytes]] = []
        if self.opt(_SOL, SO_TIMESTAMPNS):
            items.append((_SOL, SO_TIMESTAMPNS, timespec(TIMESTAMP_EPOCH + when)))
        elif self.opt(_SOL, SO_TIMESTAMP):
            items.append((_SOL, SO_TIMESTAMP, timeval(TIMESTAMP_EPOCH + when)))
        dst = packet.dst[0]
        ifindex = self.arrives_on(packet)
        v4 = packet.family == stdlib_socket.AF_INET
        if self.family == stdlib_socket.AF_INET6 and self.opt(_IP6, IPV6_RECVPKTINFO):
            address = f"::ffff:{dst}" if v4 else dst
            items.append((_IP6, IPV6_PKTINFO, in6_pktinfo(address, ifindex)))
        if v4 and self.opt(_IP, IP_PKTINFO):
            local = dst
            if packet.to is not None:  # broadcast or multicast: the interface's
                local = hosts.iface_address(self.host, ifindex, packet.family) or dst
            items.append((_IP, IP_PKTINFO, in_pktinfo(ifindex, local, dst)))
        # The sender's TTL and TOS, unchanged: no router between hosts.
        if v4 and self.opt(_IP, IP_RECVTTL):
            items.append((_IP, stdlib_socket.IP_TTL, packet.ttl.to_bytes(4, "little")))
        if v4 and self.opt(_IP, stdlib_socket.IP_RECVTOS):
            items.append((_IP, stdlib_socket.IP_TOS, bytes([packet.tos])))
        kept, cut = fit_ancillary(items, ancbufsize)
        return kept, _MSG_CTRUNC if cut else 0

    async def take(self, flags: int) -> Queued:
        """The next datagram (left queued with MSG_PEEK), waiting for one."""
        # Like trio's real sockets: a datagram already queued costs a cancel
        # point and a schedule point; when there is none, waiting is both
        # (parking delivers a pending cancel at once), and the datagram that
        # ends the wait is returned without another.
        if self.closed:
            # After a checkpoint, as Trio's real sockets: a cancelled task
            # receiving on a socket closed under it sees Cancelled.
            await trio.lowlevel.checkpoint()
            self.check_open()
        if flags and flags & ~_SUPPORTED_RECV_FLAGS:
            unsupported(f"receive flags {flags:#x}")
        queue = self.queue
        if queue or self.error is not None:
            await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            if self.error is not None:
                self.raise_pending_error()
            if queue:
                if flags & _MSG_PEEK:
                    item = queue[0]
                else:
                    item = queue.popleft()
                    self.queued_bytes -= item[3]
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                return item
            await self.waiter.park()
            waited = True
            if self.closed:
                msg = "another task closed this socket"
                raise trio.ClosedResourceError(msg)
