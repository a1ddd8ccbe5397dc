"""UDPSocket: the public datagram socket, whose receiving and sending sides are ``_inbox`` and ``_outbox``.

Every socket is created with :func:`trio.socket.socket`, so a custom socket
factory such as :class:`trioudp.testing.VirtualNetwork` intercepts it. On a
real kernel socket, a non-blocking twin of the file descriptor lets a server
drain many datagrams per trip through Trio's scheduler and send replies
without one; any other socket object takes the plain ``trio.socket`` path.

What the rest of the package may use of a :class:`UDPSocket` beyond its
public API is two objects: ``sock._inbox`` (:class:`~trioudp._inbox.Inbox`,
receiving, its counters and the kernel's error queue) and ``sock._outbox``
(:class:`~trioudp._outbox.Outbox`, sending, replies and the reply batch).
"""

from __future__ import annotations

import abc
import socket as stdlib_socket
from typing import TYPE_CHECKING, final

import attrs
import trio

from ._address import (
    SocketAddress,
    check_address,
    check_payload,
    max_payload,
    numeric_family,
)
from ._checks import check_int
from ._errors import BindError, InvalidAddress, closed_socket_error
from ._inbox import Inbox
from ._kernel import stdlib_twin
from ._multicast import MulticastOptions
from ._outbox import Outbox

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

    from typing_extensions import Self

    from ._datagram import Datagram

__all__ = ["DatagramEndpoint", "SocketStats", "UDPSocket"]


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


class DatagramEndpoint(trio.abc.AsyncResource):
    """What sockets and clients share: they are Trio async resources
    (:meth:`aclose`, ``async with``, :func:`trio.aclose_forcefully`, an
    :class:`contextlib.AsyncExitStack`), :meth:`close` closes them without
    waiting, and ``async for`` receives until they are closed.

    Leaving their ``async with`` block closes them at once, as :meth:`close`
    does, without the checkpoint :meth:`aclose` makes: an exception leaving
    the block is never replaced by :exc:`trio.Cancelled`.
    """

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
        A :class:`trio.abc.AsyncResource`: the socket is closed by
        :meth:`close`/:meth:`aclose` (or :func:`trio.aclose_forcefully`) or
        when its ``async with`` block ends (at once, without a
        checkpoint). Operations on a closed socket raise
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
        self._fast = stdlib_twin(trio_socket)
        self._max_payload = limit
        self._max_datagram_size = max_datagram_size
        self._closed = False
        self._outbox = Outbox(trio_socket, self._fast, max_payload=limit, where=self)
        self._inbox = Inbox(
            trio_socket,
            self._fast,
            max_datagram_size=max_datagram_size,
            origin=self._outbox,
            where=self,
        )
        # Errors queued under IP_RECVERR end a wait for room: the outbox
        # takes them first, counted as the inbox counts them.
        self._outbox.drain_errors = self._inbox.drain_error_queue
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
        inbox, outbox = self._inbox, self._outbox
        return SocketStats(
            received=inbox.received,
            sent=outbox.sent,
            replied=outbox.replied,
            dropped_oversize=inbox.dropped_oversize,
            dropped_amplification=outbox.dropped_amplification,
            receive_errors=dict(inbox.receive_errors),
            send_errors=dict(outbox.send_errors),
        )

    def kernel_drops(self) -> int | None:
        """Datagrams the kernel dropped for this socket (receive buffer full).

        Read from ``/proc/net/udp`` and ``/proc/net/udp6`` on Linux (at most
        every ``KERNEL_DROPS_REFRESH`` seconds: the tables can be long); None
        on other systems and for virtual sockets.
        """
        return self._inbox.kernel_drops()

    def _check_open(self) -> None:
        if self._closed:
            raise closed_socket_error()

    def close(self) -> None:
        """Close the socket; waiting receivers get ClosedResourceError. Idempotent."""
        if self._closed:
            return
        self._outbox.close()
        self._inbox.closed = True
        self._closed = True
        if self._fast is not None:
            self._fast.close()
        self._sock.close()

    async def aclose(self) -> None:
        """Close the socket (a checkpoint, like every Trio ``aclose``); it is
        closed even if the checkpoint raises :exc:`trio.Cancelled`.

        Example::

            sock = trioudp.UDPSocket(trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            await sock.bind(("127.0.0.1", 0))
            await sock.aclose()
        """
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
        await self._outbox.transmit(data, await self._resolve(address))

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one datagram to the connected peer (see :meth:`connect`)."""
        self._check_open()
        check_payload(data, self._max_payload)
        await self._outbox.transmit(data, None)

    # ---- receiving -------------------------------------------------------

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
        return await self._inbox.receive()

    def __repr__(self) -> str:
        state = "closed" if self._closed else repr(self._inbox.local or "unbound")
        return f"<trioudp.UDPSocket {state}>"
