"""UDPSocket: a datagram socket over ``trio.socket`` with a batched fast path.

Every socket is created with :func:`trio.socket.socket`, so a custom socket
factory such as :class:`trioudp.testing.VirtualNetwork` intercepts it. On a
real kernel socket, a non-blocking twin of the file descriptor lets the server
drain many datagrams per trip through Trio's scheduler and send replies
without one; any other socket object takes the plain ``trio.socket`` path.
"""

from __future__ import annotations

import abc
import errno
import logging
import math
import os
import socket as stdlib_socket
import struct
import sys
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, final

import attrs
import trio

from ._address import (
    UNSPECIFIED_HOSTS,
    SocketAddress,
    check_address,
    check_payload,
    check_port,
    is_loopback,
    max_payload,
    numeric_family,
)
from ._checks import check_bool, check_instance, check_int, short_repr
from ._datagram import Datagram
from ._errors import BindError, InvalidAddress
from ._mmsg import MAX_BATCHED_SIZE, SendBatch, sendmmsg_available
from ._multicast import Multicast, MulticastOptions
from ._trio_private import cancel_requested_probe

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from types import TracebackType

    from typing_extensions import Self

    from ._limits import AmplificationGuard

__all__ = ["SocketStats", "UDPSocket", "open_udp_socket"]

logger = logging.getLogger("trioudp")

#: Errors that concern one datagram (often an ICMP message about an earlier
#: one), not the socket: a server counts them and carries on.
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ECONNREFUSED",
        "ECONNRESET",
        "EHOSTUNREACH",
        "ENETUNREACH",
        "EHOSTDOWN",
        "ENETDOWN",
        "EMSGSIZE",
        "ENOBUFS",
        "ENOMEM",
        "EPERM",
        "EACCES",
        "ETIMEDOUT",
        "EPROTO",
        "EINTR",
    )
    if hasattr(errno, name)
)

#: Seconds a reading of the kernel's drop counter is reused.
KERNEL_DROPS_REFRESH = 0.1

#: How long a reply that has begun may wait for buffer space once its
#: handler has been cancelled.
REPLY_SHIELD_SECONDS = 0.5

#: Socket error queue (``IP_RECVERR``): most entries taken per drain, the
#: ``recvmsg`` flag and ancillary buffer, the (level, type) pairs that carry a
#: ``struct sock_extended_err`` (whose first fields are ``ee_errno`` (u32) and
#: ``ee_origin`` (u8)), and the origins that are errors: local, ICMP, ICMPv6.
_ERRQUEUE_BATCH = 256
_MSG_ERRQUEUE: int | None = getattr(stdlib_socket, "MSG_ERRQUEUE", None)
_ERRQUEUE_ANCILLARY = 512
_RECVERR_CMSGS = frozenset(
    {
        (stdlib_socket.IPPROTO_IP, getattr(stdlib_socket, "IP_RECVERR", 11)),
        (stdlib_socket.IPPROTO_IPV6, getattr(stdlib_socket, "IPV6_RECVERR", 25)),
    }
)
_EXTENDED_ERR = struct.Struct("=IB")
_ERR_ORIGINS = frozenset({1, 2, 3})

#: ICMP-reported errors that Linux hands to the next send on the socket, which
#: then does not transmit: the send is worth repeating once.
_PENDING_ICMP_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH}
)

#: The peer a screened receive reports for a datagram whose source is forged
#: (see ``UDPSocket._recvfrom_screened``); a server drops and counts it.
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


@attrs.frozen(kw_only=True)
class SocketStats:
    """A snapshot of a :class:`UDPSocket`'s counters.

    Attributes:
        received: datagrams received and handed on.
        sent: datagrams sent (replies included).
        replied: datagrams sent through :meth:`Datagram.reply`.
        dropped_oversize: datagrams received larger than the socket's
            ``max_datagram_size``, discarded without being handed on.
        dropped_amplification: replies withheld by a server's amplification
            guard.
        receive_errors: per-datagram errors while receiving, by errno name
            (with ``IP_RECVERR`` set: each error the socket's error queue
            held, which is drained).
        send_errors: per-datagram errors while replying, by errno name.

    Example:
        >>> SocketStats().received
        0
    """

    received: int = 0
    sent: int = 0
    replied: int = 0
    dropped_oversize: int = 0
    dropped_amplification: int = 0
    receive_errors: dict[str, int] = attrs.field(factory=dict)
    send_errors: dict[str, int] = attrs.field(factory=dict)


def _stdlib_twin(sock: trio.socket.SocketType) -> stdlib_socket.socket | None:
    """A non-blocking stdlib socket on a duplicate of ``sock``'s descriptor.

    Returns None for socket objects without a kernel descriptor (virtual ones).
    """
    try:
        fd = sock.fileno()
        if not isinstance(fd, int) or fd < 0:
            return None
        fd = os.dup(fd)  # a virtual socket's fileno() is no descriptor: EBADF
    except (NotImplementedError, OSError, ValueError):
        return None
    twin = stdlib_socket.socket(sock.family, sock.type, sock.proto, fd)
    twin.setblocking(False)
    return twin


def _read_kernel_drops(sock: stdlib_socket.socket) -> int | None:
    """The ``drops`` column of this socket's line in /proc/net/udp{,6}."""
    try:
        inode = str(os.fstat(sock.fileno()).st_ino)
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            with open(table) as lines:
                for line in lines:
                    fields = line.split()
                    if len(fields) > 12 and fields[9] == inode:
                        return int(fields[-1])
    except OSError:
        return None
    return None


def _errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))


class DatagramEndpoint(abc.ABC):
    """What sockets and clients share: ``async with`` closes them, and
    ``async for`` receives until they are closed."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close; idempotent."""

    @abc.abstractmethod
    async def receive(self) -> Datagram:
        """The next datagram."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __aiter__(self) -> AsyncIterator[Datagram]:
        return self

    async def __anext__(self) -> Datagram:
        try:
            return await self.receive()
        except trio.ClosedResourceError:
            raise StopAsyncIteration from None


@final
class UDPSocket(MulticastOptions, DatagramEndpoint):
    """A UDP socket for Trio: send, receive and reply with datagrams.

    Usually made by :func:`open_udp_socket`; wrapping an existing
    ``trio.socket`` UDP socket is also fine and hands its ownership over.
    ``async for datagram in sock`` receives until the socket is closed.
    Multicast and broadcast: :meth:`join_group`, :meth:`leave_group`,
    :meth:`set_multicast_ttl`, :meth:`set_multicast_loopback`,
    :meth:`set_multicast_interface`, :meth:`set_broadcast`.

    Args:
        trio_socket: an ``AF_INET``/``AF_INET6``, ``SOCK_DGRAM`` trio socket.
        max_datagram_size: received datagrams larger than this are dropped and
            counted (``stats.dropped_oversize``), never handed on truncated.
            Default: the largest UDP payload of the socket's family.

    Resource handling:
        The socket is closed by :meth:`close`/:meth:`aclose` or when its
        ``async with`` block ends. Operations on a closed socket raise
        :class:`trio.ClosedResourceError`.

    Example::

        async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
            await sock.send_to(b"ping", ("127.0.0.1", 9999))
    """

    def __init__(
        self,
        trio_socket: trio.socket.SocketType,
        *,
        max_datagram_size: int | None = None,
    ) -> None:
        if trio_socket.type != stdlib_socket.SOCK_DGRAM or trio_socket.family not in (
            stdlib_socket.AF_INET,
            stdlib_socket.AF_INET6,
        ):
            msg = (
                "UDPSocket needs an AF_INET or AF_INET6 SOCK_DGRAM socket, not"
                f" family={trio_socket.family!r} type={trio_socket.type!r}"
            )
            raise ValueError(msg)
        limit = max_payload(trio_socket.family)
        if max_datagram_size is None:
            max_datagram_size = limit
        check_int("max_datagram_size", max_datagram_size, low=0, high=limit)
        self._sock = trio_socket
        self._fast = _stdlib_twin(trio_socket)
        self._max_payload = limit
        self._max_datagram_size = max_datagram_size
        # One byte more than the limit tells an oversize datagram apart.
        self._bufsize = max_datagram_size + 1
        self._local: SocketAddress | None = None
        self._closed = False
        self._received = 0
        self._sent = 0
        self._replied = 0
        self._dropped_oversize = 0
        self._receive_errors: dict[str, int] = {}
        self._send_errors: dict[str, int] = {}
        self._dropped_amplification = 0
        self._kernel_drops_at_close: int | None = None
        self._kernel_drops: int | None = None
        self._kernel_drops_read_at = -math.inf
        # Set by a server that limits amplification (see serve_udp_sockets).
        self._guard: AmplificationGuard | None = None
        # Replies collected while a server handles a batch of datagrams (see
        # _begin_reply_batch); None when replies go out one by one.
        self._replies: SendBatch | None = None
        self._reply_batch: SendBatch | None = None
        # Trio lets one task at a time wait for a descriptor to be writable:
        # that task is the room watcher; others wanting room park here and
        # wake with it (see _wait_for_room).
        self._room_watched = False
        self._room_waiters = trio.lowlevel.ParkingLot()
        # Replies _reply_now could not send for a full buffer: (a copy of the
        # data, peer, whether a send error was counted for it).
        self._held_for_room: list[tuple[bytes, SocketAddress, bool]] = []
        # Set by _screen_sources: the receive function a server's fast path
        # uses, and the loopback interface's index.
        self._screened_recvfrom: Callable[[int], tuple[bytes, SocketAddress]] | None = (
            None
        )
        self._loopback_index = 0
        self._forged_seen = 0
        self._groups: list[tuple[str, int]] = []

    # ---- state -----------------------------------------------------------

    @property
    def trio_socket(self) -> trio.socket.SocketType:
        """The underlying ``trio.socket`` object (for socket options)."""
        return self._sock

    @property
    def family(self) -> int:
        """``socket.AF_INET`` or ``socket.AF_INET6``."""
        return int(self._sock.family)

    @property
    def is_fast(self) -> bool:
        """Whether the batched real-socket fast path is in use."""
        return self._fast is not None

    @property
    def max_datagram_size(self) -> int:
        """The largest datagram this socket hands on (see the constructor)."""
        return self._max_datagram_size

    @property
    def local_address(self) -> SocketAddress:
        """The address the socket is bound to (``getsockname()``)."""
        self._check_open()
        address: SocketAddress = self._sock.getsockname()
        return address

    @property
    def peer_address(self) -> SocketAddress | None:
        """The connected peer, or None if the socket is not connected."""
        self._check_open()
        try:
            address: SocketAddress = self._sock.getpeername()
        except OSError:
            return None
        return address

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    @property
    def stats(self) -> SocketStats:
        """A snapshot of this socket's counters."""
        return SocketStats(
            received=self._received,
            sent=self._sent,
            replied=self._replied,
            dropped_oversize=self._dropped_oversize,
            dropped_amplification=self._dropped_amplification,
            receive_errors=dict(self._receive_errors),
            send_errors=dict(self._send_errors),
        )

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped for this socket (receive buffer full).

        Read from ``/proc/net/udp`` and ``/proc/net/udp6`` on Linux (at most
        every ``KERNEL_DROPS_REFRESH`` seconds: the tables can be long); None
        on other systems and for virtual sockets.
        """
        if self._closed:
            return self._kernel_drops_at_close
        if self._fast is None:
            return None
        now = time.monotonic()
        if now - self._kernel_drops_read_at >= KERNEL_DROPS_REFRESH:
            self._kernel_drops_read_at = now
            self._kernel_drops = _read_kernel_drops(self._fast)
        return self._kernel_drops

    def _keep_kernel_drops(self) -> None:
        """Take a fresh reading of :meth:`kernel_drops` to report after closing
        (reading /proc costs a little, so only servers ask for it)."""
        self._kernel_drops_read_at = -math.inf
        self._kernel_drops_at_close = self.kernel_drops()

    def _check_open(self) -> None:
        if self._closed:
            msg = "this UDPSocket has been closed"
            raise trio.ClosedResourceError(msg)

    def close(self) -> None:
        """Close the socket; waiting receivers get ClosedResourceError. Idempotent."""
        if self._closed:
            return
        self._abandon_reply_batch()
        self._closed = True
        if self._fast is not None:
            self._fast.close()
        self._sock.close()

    async def aclose(self) -> None:
        """Close the socket (a checkpoint, like every Trio ``aclose``)."""
        self.close()
        await trio.lowlevel.checkpoint()

    def _options_socket(self) -> trio.socket.SocketType:
        self._check_open()
        return self._sock

    # ---- addresses -------------------------------------------------------

    async def bind(self, address: tuple[str, int]) -> None:
        """Bind to ``(host, port)``; failures raise :class:`BindError`."""
        self._check_open()
        host, port = check_address(address)
        try:
            await self._sock.bind(await self._resolve((host, port), passive=True))
        except OSError as exc:
            raise BindError(host, port, exc) from exc

    async def connect(self, address: tuple[str, int]) -> None:
        """Connect to a peer: only its datagrams are received afterwards,
        :meth:`send` goes to it, and ICMP errors about it surface as
        :class:`ConnectionRefusedError` on the next operation.
        """
        self._check_open()
        await self._sock.connect(await self._resolve(address))

    async def _resolve(
        self, address: object, *, passive: bool = False
    ) -> SocketAddress:
        """Turn ``(host, port)`` into a numeric sockaddr of this socket's family."""
        host, port = check_address(address)
        family = numeric_family(host)
        if family is not None:
            if family == self.family:
                return (host, port) if len(address) == 2 else address  # type: ignore[arg-type, return-value]
            if (
                family == stdlib_socket.AF_INET
                and self.family == stdlib_socket.AF_INET6
            ):
                return (f"::ffff:{host}", port)
            raise InvalidAddress(address, "an IPv4 socket cannot reach an IPv6 address")
        try:
            infos = await trio.socket.getaddrinfo(
                host,
                port,
                self.family,
                stdlib_socket.SOCK_DGRAM,
                0,
                stdlib_socket.AI_PASSIVE if passive else 0,
            )
        except stdlib_socket.gaierror as exc:
            raise InvalidAddress(address, f"cannot resolve {host!r}: {exc}") from exc
        if not infos:
            raise InvalidAddress(address, f"{host!r} has no address of this family")
        resolved: SocketAddress = infos[0][4]  # type: ignore[assignment]
        return resolved

    # ---- sending ---------------------------------------------------------

    async def send_to(
        self, data: bytes | bytearray | memoryview, address: tuple[str, int]
    ) -> None:
        """Send one datagram to ``address`` (``(host, port)``; names are resolved).

        Raises:
            TypeError: ``data`` is not bytes-like.
            DatagramTooLarge: ``data`` is longer than one UDP datagram.
            InvalidAddress: ``address`` is malformed or cannot be resolved.
            trio.ClosedResourceError: the socket is closed.
            OSError: the kernel refused the datagram.

        Example::

            await sock.send_to(b"Hello, server!", ("127.0.0.1", 12345))
        """
        self._check_open()
        check_payload(data, self._max_payload)
        await self._transmit(data, await self._resolve(address))

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one datagram to the connected peer (see :meth:`connect`)."""
        self._check_open()
        check_payload(data, self._max_payload)
        await self._transmit(data, None)

    async def _transmit(
        self, data: bytes | bytearray | memoryview, address: SocketAddress | None
    ) -> None:
        """Send one datagram (to the connected peer if ``address`` is None): a
        checkpoint, waiting for room in the send buffer if need be."""
        fast = self._fast
        if fast is None:
            if address is None:
                await self._sock.send(data)
            else:
                await self._sock.sendto(data, address)
            self._sent += 1
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._send_or_wait(fast, data, address):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        await self._send_waiting(data, address)

    def _send_or_wait(
        self,
        fast: stdlib_socket.socket,
        data: bytes | bytearray | memoryview,
        address: SocketAddress | None,
    ) -> bool:
        """Send now if the kernel takes it (counted); True if the caller must
        wait for room (the send buffer is full)."""
        try:
            if address is None:
                fast.send(data)
            else:
                fast.sendto(data, address)
        except BlockingIOError:
            return True
        self._sent += 1
        return False

    async def _send_soon(self, data: bytes | bytearray | memoryview) -> None:
        """:meth:`send` for a caller that passes a schedule point right after
        (a client about to wait for its reply): a cancel point, and on a real
        socket a datagram the kernel takes at once needs no trip through the
        scheduler."""
        fast = self._fast
        if fast is None or self._closed:
            await self.send(data)
            return
        check_payload(data, self._max_payload)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._send_or_wait(fast, data, None):
            await self._send_waiting(data, None)

    async def _reply(
        self, data: bytes | bytearray | memoryview, peer: SocketAddress
    ) -> None:
        """Send a reply; per-datagram network errors are counted, not raised.

        On a real socket a reply the kernel takes at once needs no trip
        through the scheduler (the server provides the schedule points).
        """
        if self._closed:
            self._check_open()
        if type(data) is not bytes or len(data) > self._max_payload:
            check_payload(data, self._max_payload)
        # A cancel point at a third of the cost of awaiting
        # checkpoint_if_cancelled() where Trio lets us look (_trio_private).
        calm = cancel_requested_probe() is False
        if not calm:
            await trio.lowlevel.checkpoint_if_cancelled()
        counted = self._reply_nowait(data, peer)
        if counted is not None:
            # A reply that has started goes out even if the handler is
            # cancelled now (a shutdown's grace ran out), unless the socket
            # stays unwritable.
            await self._reply_when_room(
                data, peer, counted, trio.current_time() + REPLY_SHIELD_SECONDS
            )

    def _reply_now(
        self, data: bytes | bytearray | memoryview, peer: SocketAddress
    ) -> None:
        """:meth:`_reply` for a :class:`Responder` on the fast path: never
        waits. A reply that meets a full send buffer is copied and held for
        :meth:`_end_reply_batch`, which waits for room."""
        if self._closed:
            self._check_open()
        if type(data) is not bytes or len(data) > self._max_payload:
            check_payload(data, self._max_payload)
        counted = self._reply_nowait(data, peer)
        if counted is not None:
            self._held_for_room.append((bytes(data), peer, counted))

    def _reply_nowait(
        self, data: bytes | bytearray | memoryview, peer: SocketAddress
    ) -> bool | None:
        """Send, batch or withhold (amplification guard) a checked reply
        without waiting. Returns None when that is done (an error included:
        it is counted), else whether a send error was already counted for
        it: then it still waits for room, or a pending ICMP report about an
        earlier datagram stopped it and it is worth one more try."""
        guard = self._guard
        if guard is not None and not guard.may_send(
            (peer[0], peer[1]), data.nbytes if type(data) is memoryview else len(data)
        ):
            self._dropped_amplification += 1
            return None
        replies = self._replies
        if replies is not None:
            # A server is handling a batch: collect small replies to send
            # them together; send anything else on its own, after them.
            if len(data) <= MAX_BATCHED_SIZE and isinstance(data, (bytes, bytearray)):
                try:
                    if replies.add(data, peer) or (
                        self._send_replies_now(replies) and replies.add(data, peer)
                    ):
                        return None
                except ValueError:
                    pass  # an address the batch cannot encode
            self._send_held_replies()
        fast = self._fast
        if fast is None:
            return False
        try:
            fast.sendto(data, peer)
        except BlockingIOError:
            return False  # the buffer is full: wait for room
        except OSError as exc:
            return True if self._worth_repeating(exc, peer) else None
        self._sent += 1
        self._replied += 1
        return None

    async def _reply_when_room(
        self,
        data: bytes | bytearray | memoryview,
        peer: SocketAddress,
        counted: bool,
        deadline: float,
    ) -> None:
        """Send a reply, waiting for room in the send buffer until
        ``deadline`` even if cancelled (shielded); then count it as an
        ``EAGAIN`` send error. At most one send error is counted per reply
        (``counted``: one already was)."""
        with trio.CancelScope(shield=True) as shield:
            shield.deadline = deadline
            while True:
                try:
                    await self._send_waiting(data, peer)
                except OSError as exc:
                    if counted:
                        self._worth_repeating(exc, peer, count=False)
                        return
                    if not self._worth_repeating(exc, peer):
                        return
                    counted = True
                else:
                    self._replied += 1
                    return
        self._count_full_buffer(1)

    # ---- batched replies (fast path) ------------------------------------

    def _begin_reply_batch(self) -> None:
        """Collect :meth:`_reply` datagrams until :meth:`_end_reply_batch`, to
        send them with one system call. A no-op without ``sendmmsg``."""
        if self._fast is None or self._closed or not sendmmsg_available():
            return
        if self._reply_batch is None:
            self._reply_batch = SendBatch(self.family)
        self._replies = self._reply_batch

    async def _end_reply_batch(self) -> None:
        """Stop collecting and send what was collected, and the replies
        :meth:`_reply_now` held; not a schedule point unless the send buffer
        is full (then see :meth:`_send_leftover`, :meth:`_reply_when_room`)."""
        leftover = self._end_reply_batch_nowait()
        if leftover is not None:
            await self._send_leftover(leftover)
        held = self._held_for_room
        if held:
            self._held_for_room = []
            deadline = trio.current_time() + REPLY_SHIELD_SECONDS
            for sent, (data, peer, counted) in enumerate(held):
                try:
                    await self._reply_when_room(data, peer, counted, deadline)
                except trio.ClosedResourceError:
                    # Closed under the server while waiting: no reply of
                    # this batch can leave now; count them as close() does.
                    # (One whose send error was counted is not counted again.)
                    left = sum(not counted for _, _, counted in held[sent:])
                    if left:
                        self._count_full_buffer(left)
                    return

    def _end_reply_batch_nowait(self) -> SendBatch | None:
        """Stop collecting and send what the kernel takes now, without
        waiting; returns the replies that did not fit (None if all did),
        which the caller must pass to :meth:`_send_leftover`."""
        replies = self._replies
        self._replies = None  # replies from other tasks meanwhile go on their own
        if replies is None or self._send_replies_now(replies):
            return None
        # A new batch must not reuse the object these replies still wait in.
        self._reply_batch = None
        return replies

    async def _send_leftover(self, replies: SendBatch) -> None:
        """Send replies that met a full send buffer: wait for room (at most
        ``REPLY_SHIELD_SECONDS``, even if cancelled: these replies have
        begun) and count what still did not fit as ``EAGAIN`` send errors."""
        with trio.CancelScope(shield=True) as shield:
            shield.deadline = trio.current_time() + REPLY_SHIELD_SECONDS
            try:
                while not self._closed and not self._send_replies_now(replies):
                    await self._wait_for_room()
            except trio.ClosedResourceError:
                pass  # closed under the server: what is left is counted below
        self._drop_held(replies)

    async def _wait_for_room(self) -> None:
        """Wait until the send buffer may have room (callers try again and
        may wait again). Trio lets one task at a time wait for a descriptor
        to be writable: the first waiter watches the descriptor, any other
        parks until the watcher wakes, is cancelled or the socket closes."""
        if self._room_watched:
            await self._room_waiters.park()
            return
        self._room_watched = True
        try:
            # Errors queued under IP_RECVERR would end this wait at once.
            self._drain_error_queue()
            await trio.lowlevel.wait_writable(self._sock)
        finally:
            self._room_watched = False
            self._room_waiters.unpark_all()

    def _send_held_replies(self) -> None:
        """Send the replies collected so far (those the kernel takes now) and
        go on collecting."""
        replies = self._replies
        if replies is not None and replies.peers:
            self._send_replies_now(replies)

    def _abandon_reply_batch(self) -> None:
        """Stop collecting at once: send what the kernel takes now and count
        the rest as ``EAGAIN`` send errors."""
        if self._held_for_room:
            self._count_full_buffer(len(self._held_for_room))
            self._held_for_room = []
        replies = self._replies
        if replies is None:
            return
        self._replies = None
        if not self._closed:
            self._send_replies_now(replies)
        self._drop_held(replies)

    def _drop_held(self, replies: SendBatch) -> None:
        """Count the replies a batch still holds as ``EAGAIN`` send errors
        (the send buffer stayed full) and forget them."""
        if len(replies):
            self._count_full_buffer(len(replies))
            replies.clear()

    def _count_full_buffer(self, dropped: int) -> None:
        """Count replies given up on because the send buffer stayed full for
        ``REPLY_SHIELD_SECONDS`` (as ``EAGAIN`` send errors) and log it, when
        the count passes a power of two."""
        before = self._send_errors.get("EAGAIN", 0)
        count = self._send_errors["EAGAIN"] = before + dropped
        # Logged when the count passes a power of two: a peer that keeps the
        # link full must not make the server write a line per reply.
        if count.bit_length() > before.bit_length():
            logger.warning(
                "%d UDP replies dropped on %r: the send buffer stayed full (%d so far)",
                dropped,
                self,
                count,
            )

    def _send_replies_now(self, replies: SendBatch) -> bool:
        """Send the collected replies that the kernel takes now; count errors.

        Returns whether none is left (False: the send buffer is full).
        """
        fast = self._fast
        assert fast is not None
        repeated = -1
        while len(replies):
            index = replies.next_index
            try:
                if len(replies) == 1:
                    fast.sendto(replies.payload(index), replies.peers[index])
                    replies.advance()
                    sent = 1
                else:
                    sent = replies.send(fast.fileno())
            except BlockingIOError:
                return False
            except OSError as exc:
                peer = replies.peers[index]
                if exc.errno not in TRANSIENT_ERRNOS:
                    # Not about one datagram; a handler would have seen it
                    # raised, but it has returned: log it rather than lose it.
                    logger.error("UDP reply to %r failed on %r: %s", peer, self, exc)
                    self._count_error(self._send_errors, exc, peer)
                    replies.advance()
                elif repeated == index:
                    # Failed again: counted the first time.
                    self._worth_repeating(exc, peer, count=False)
                    replies.advance()
                elif not self._worth_repeating(exc, peer):
                    replies.advance()
                repeated = index
                continue
            self._sent += sent
            self._replied += sent
        return True

    def _worth_repeating(
        self, exc: OSError, peer: SocketAddress, *, count: bool = True
    ) -> bool:
        """Count a per-datagram send error (unless ``count`` is False: the
        datagram's first failure was counted) and tell whether the datagram
        is worth sending again (an ICMP report about an earlier one stopped
        it); raise any other error."""
        if exc.errno not in TRANSIENT_ERRNOS:
            raise exc
        if count:
            self._count_error(self._send_errors, exc, peer)
        return exc.errno in _PENDING_ICMP_ERRNOS

    async def _send_waiting(
        self, data: bytes | bytearray | memoryview, address: SocketAddress | None
    ) -> None:
        """Send (to the connected peer if ``address`` is None), waiting for
        buffer space if need be."""
        fast = self._fast
        if fast is None:
            await self._transmit(data, address)
            return
        while True:
            self._check_open()
            if not self._send_or_wait(fast, data, address):
                return
            await self._wait_for_room()

    def _count_error(self, table: dict[str, int], exc: OSError, peer: object) -> None:
        name = _errno_name(exc)
        count = table[name] = table.get(name, 0) + 1
        # Powers of two keep a flood of ICMP errors from flooding the log.
        if count & (count - 1) == 0:
            logger.debug(
                "UDP %s on %r (peer %r), seen %d times", name, self, peer, count
            )

    # ---- receiving -------------------------------------------------------

    def _local_for_datagrams(self) -> SocketAddress:
        local = self._local
        if local is None:
            local = self._sock.getsockname()
            if local[1] != 0:
                self._local = local
        return local

    async def receive(self) -> Datagram:
        """Wait for the next datagram and return it.

        Datagrams over :attr:`max_datagram_size` are dropped and counted, and
        the wait goes on.

        Raises:
            trio.ClosedResourceError: the socket is, or gets, closed.
            ConnectionRefusedError: on a connected socket (or any socket
                with ``IP_RECVERR`` set), a host reported that nothing listens
                on the port a datagram went to.

        Example::

            datagram = await sock.receive()
            print(datagram.data, "from", datagram.peer)
        """
        while True:
            self._check_open()
            try:
                data, peer = await self._recvfrom()
            except OSError as exc:
                if self._closed or exc.errno == errno.EBADF:
                    msg = "this UDPSocket was closed while receiving"
                    raise trio.ClosedResourceError(msg) from exc
                raise
            datagram = self._accept(data, peer, trio.current_time())
            if datagram is not None:
                return datagram

    async def _recvfrom(self) -> tuple[bytes, SocketAddress]:
        """``trio.socket``'s ``recvfrom``, except that a real socket woken
        with nothing to read drains its error queue (``IP_RECVERR``), which
        would otherwise keep it readable and the wait spinning."""
        fast = self._fast
        if fast is None:
            received: tuple[bytes, SocketAddress] = await self._sock.recvfrom(
                self._bufsize
            )
            return received
        await trio.lowlevel.checkpoint_if_cancelled()
        woken = False
        while True:
            try:
                received = fast.recvfrom(self._bufsize)
            except BlockingIOError:
                if woken:
                    self._drain_error_queue()
                await trio.lowlevel.wait_readable(self._sock)
                woken = True
                continue
            if not woken:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return received

    def _accept(self, data: bytes, peer: SocketAddress, now: float) -> Datagram | None:
        """A received datagram, counted; None (counted too) if it is oversize."""
        if len(data) >= self._bufsize:
            self._dropped_oversize += 1
            return None
        self._received += 1
        return Datagram._received(
            data, peer, self._local or self._local_for_datagrams(), now, self
        )

    async def _receive_counted(self) -> Datagram | None:
        """:meth:`receive`, but a per-datagram network error (an ICMP report)
        is counted and returns None instead of raising."""
        try:
            return await self.receive()
        except OSError as exc:
            if exc.errno not in TRANSIENT_ERRNOS:
                raise
            self._count_error(self._receive_errors, exc, None)
            return None

    async def _wait_readable(self) -> None:
        """Fast path only: wait until a datagram (or an error) is queued."""
        self._check_open()
        await trio.lowlevel.wait_readable(self._sock)

    def _receive_nowait(self, now: float) -> Datagram | None:
        """Fast path only: a queued datagram, or None if there is none.

        ``now`` is its ``received_at``. Oversize datagrams are counted and
        skipped; errors are raised as :meth:`receive` raises them. (A
        server's receive loop has this written out inline.)
        """
        fast = self._fast
        assert fast is not None
        while True:
            self._check_open()
            try:
                data, peer = fast.recvfrom(self._bufsize)
            except BlockingIOError:
                return None
            datagram = self._accept(data, peer, now)
            if datagram is not None:
                return datagram

    def _screen_sources(self) -> None:
        """Fast path only: make the server's receive loop check each
        datagram's source (see :meth:`_recvfrom_screened`), unless the socket
        is bound to a loopback address, where no forged source can arrive
        (Linux drops datagrams to loopback addresses from other interfaces)."""
        fast = self._fast
        if fast is None or self._screened_recvfrom is not None:
            return
        host = self._local_for_datagrams()[0]
        if self.family == stdlib_socket.AF_INET6:
            # Also reports the interface of IPv4 datagrams on a dual-stack socket.
            level, option = stdlib_socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO
        else:
            level, option = stdlib_socket.IPPROTO_IP, _IP_PKTINFO
        if is_loopback(host):
            self._screened_recvfrom = fast.recvfrom
            return
        if option is None:
            # Without the option (not Linux) the interface cannot be told:
            # only unspecified sources are known to be forged.
            self._screened_recvfrom = self._recvfrom_specified
            return
        fast.setsockopt(level, option, 1)
        self._loopback_index = _loopback_index()
        self._screened_recvfrom = self._recvfrom_screened

    def _recvfrom_screened(self, bufsize: int) -> tuple[bytes, SocketAddress]:
        """``recvfrom`` that reports :data:`FORGED_SOURCE` as the peer of a
        datagram from an unspecified address, from a loopback address
        that did not arrive over the loopback interface, or an IPv6 packet
        from an IPv4-mapped address (a neighbour forged it: a reply would go
        to this host's own services or onto the link as IPv4, and
        "loopback" is what access lists, rate-limit exemptions and the CLI's
        ``exit`` trust; see :func:`source_is_forged`)."""
        fast = self._fast
        assert fast is not None
        data, ancdata, _flags, peer = fast.recvmsg(bufsize, _ANCILLARY_SPACE)
        index, ipv6_packet = ingress(ancdata)
        if index is None:
            # The interface's control message was asked for but is missing
            # (truncated): trust no loopback source (fail closed).
            index = -1
        if source_is_forged(
            peer[0], index, self._loopback_index, ipv6_packet=ipv6_packet
        ):
            count = self._forged_seen = self._forged_seen + 1
            if count & (count - 1) == 0:
                logger.warning(
                    "dropped a UDP datagram with a forged source %r on %r, seen %d times",
                    peer,
                    self,
                    count,
                )
            return data, FORGED_SOURCE
        return data, peer

    def _recvfrom_specified(self, bufsize: int) -> tuple[bytes, SocketAddress]:
        """``recvfrom`` that reports :data:`FORGED_SOURCE` as the peer of a
        datagram from an unspecified address (where the ingress interface
        cannot be read, see :meth:`_screen_sources`)."""
        fast = self._fast
        assert fast is not None
        data, peer = fast.recvfrom(bufsize)
        if peer[0] in UNSPECIFIED_HOSTS:
            return data, FORGED_SOURCE
        return data, peer

    def _receive_failed(self, exc: OSError) -> bool:
        """Fast path only: a non-blocking receive raised ``exc``. Count a
        per-datagram network error and return True (receive on); return False
        if the socket has been closed; raise anything else."""
        if self._closed:
            return False
        if exc.errno not in TRANSIENT_ERRNOS:
            raise exc
        # With IP_RECVERR the error also waits in the error queue (the
        # receive reported only the latest one): count the queue instead.
        if not self._drain_error_queue():
            self._count_error(self._receive_errors, exc, None)
        return True

    def _drain_error_queue(self) -> int:
        """Fast path only: take the errors queued on a socket that has
        ``IP_RECVERR``/``IPV6_RECVERR`` set (``MSG_ERRQUEUE``), count each in
        ``receive_errors`` by errno, and return how many there were.

        While that queue holds anything the socket polls as ready (EPOLLERR),
        so a receiver that never drained it would spin. Timestamping and
        zero-copy notices, which share the queue, are taken but not counted.
        At most ``_ERRQUEUE_BATCH`` are taken per call; the rest keep the
        socket ready and are taken on the next call.
        """
        fast = self._fast
        if fast is None or self._closed or _MSG_ERRQUEUE is None:
            return 0
        drained = 0
        for _ in range(_ERRQUEUE_BATCH):
            try:
                _, ancillary, _, offender = fast.recvmsg(
                    0, _ERRQUEUE_ANCILLARY, _MSG_ERRQUEUE
                )
            except OSError:  # BlockingIOError: empty; anything else: give up
                break
            for level, kind, payload in ancillary:
                if (level, kind) not in _RECVERR_CMSGS or len(payload) < 8:
                    continue
                code, origin = _EXTENDED_ERR.unpack_from(payload)
                if origin in _ERR_ORIGINS and code:
                    drained += 1
                    self._count_error(
                        self._receive_errors, OSError(code, os.strerror(code)), offender
                    )
        return drained

    def __repr__(self) -> str:
        state = "closed" if self._closed else repr(self._local or "unbound")
        return f"<trioudp.UDPSocket {state}>"


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
            others do the same later).
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
        family = numeric_family(host) or await _family_of_name(host, port)
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


async def _family_of_name(host: str, port: int) -> int:
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, 0, stdlib_socket.SOCK_DGRAM, 0, stdlib_socket.AI_PASSIVE
        )
    except stdlib_socket.gaierror as exc:
        raise InvalidAddress((host, port), f"cannot resolve {host!r}: {exc}") from exc
    return int(infos[0][0])
