"""A socket's receiving side: takes datagrams from the kernel, drops oversize ones, and counts what it took.

Every :class:`UDPSocket` owns one :class:`Inbox`. It counts what it receives
(``received``, ``dropped_oversize``, ``receive_errors``); the socket's
``stats`` read them. A server's fast path (``_fastpath.take_ready``) has
:meth:`Inbox.receive_nowait` written out inline, and counts into the same
attributes exactly as it does.
"""

from __future__ import annotations

import errno
import socket as stdlib_socket
from typing import TYPE_CHECKING, cast

import trio

from ._datagram import Datagram
from ._errors import closed_socket_error
from ._interfaces import shared_address_book
from ._kernel import (
    TRANSIENT_ERRNOS,
    KernelDrops,
    count_error,
    drain_error_queue,
    kernel_socket,
)
from ._multicast import receive_only_joined
from ._screening import ANCILLARY_SPACE, screen_for

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from ._address import SocketAddress
    from ._datagram import DatagramOrigin
    from ._screening import Screen

#: What a receive function returns: payload, peer, destination address.
Received = tuple[bytes, "SocketAddress", "str | None"]

__all__ = ["Inbox"]

#: Fewest bytes of receive buffer a queued datagram costs: Linux charges an
#: empty one 832 (its ``truesize``). ``SO_RCVBUF`` divided by this bounds
#: how many a receive queue can hold.
_LEAST_TRUESIZE = 256


class Inbox:
    """Everything a socket receives; see the module docstring.

    ``sock`` is the socket's ``trio.socket``, ``fast`` its non-blocking twin
    (None: the plain ``trio.socket`` path), ``origin`` what its datagrams
    reply through, ``where`` names the socket in logs. ``groups`` (the
    multicast groups the socket joined, kept up to date by the socket) and
    ``routed`` (whether its multicast settings accept sources beyond the
    link) are what screening asks about multicast datagrams.
    """

    def __init__(
        self,
        sock: trio.socket.SocketType,
        fast: stdlib_socket.socket | None,
        *,
        max_datagram_size: int,
        origin: DatagramOrigin,
        where: object,
        groups: Collection[tuple[str, int]] = (),
        routed: Callable[[], bool] = lambda: False,
    ) -> None:
        self._sock = sock
        self.fast = fast
        # One byte more than the limit tells an oversize datagram apart.
        self.bufsize = max_datagram_size + 1
        self.origin = origin
        self._where = where
        self.closed = False
        #: The bound address, once it has a port (see local_for_datagrams).
        self.local: SocketAddress | None = None
        self.received = 0
        self.dropped_oversize = 0
        self.receive_errors: dict[str, int] = {}
        self._groups = groups
        self._routed = routed
        #: Set by screen_sources: the server's screening of this socket.
        self.screen: Screen | None = None
        #: Set by screen_sources: the receive function a server's fast path
        #: uses (``Screen.receive``; the destination is left in
        #: ``screen.destination``).
        self.screened_recvfrom: Callable[[int], tuple[bytes, SocketAddress]] | None = (
            None
        )
        self._drops = KernelDrops(fast)

    def local_for_datagrams(self) -> SocketAddress:
        """The ``local`` address of the datagrams received (cached once bound)."""
        local = self.local
        if local is None:
            local = self._sock.getsockname()
            if local[1] != 0:
                self.local = local
        return local

    def kernel_drops(self) -> int | None:
        """See :meth:`UDPSocket.kernel_drops`."""
        if self.closed:
            return self._drops.at_close
        return self._drops.read()

    def keep_kernel_drops(self) -> None:
        """Take a fresh reading of :meth:`kernel_drops` to report after closing."""
        if not self.closed:
            self._drops.keep()

    def accept(
        self,
        data: bytes,
        peer: SocketAddress,
        now: float,
        destination: str | None = None,
    ) -> Datagram | None:
        """A received datagram, counted; None (counted too) if it is oversize."""
        if len(data) >= self.bufsize:
            self.dropped_oversize += 1
            return None
        self.received += 1
        return Datagram._received(
            data,
            peer,
            self.local or self.local_for_datagrams(),
            now,
            self.origin,
            destination,
        )

    # ---- waiting ---------------------------------------------------------

    async def receive(self) -> Datagram:
        """See :meth:`UDPSocket.receive`."""
        while True:
            if self.closed:
                raise closed_socket_error()
            try:
                data, peer, destination = await self._recvfrom()
            except OSError as exc:
                if self.closed or exc.errno == errno.EBADF:
                    msg = "this UDPSocket was closed while receiving"
                    raise trio.ClosedResourceError(msg) from exc
                raise
            datagram = self.accept(data, peer, trio.current_time(), destination)
            if datagram is not None:
                return datagram

    async def _recvfrom(self) -> Received:
        """``trio.socket``'s ``recvfrom`` (screened once a server screens
        the socket), except that a real socket woken with nothing to read
        drains its error queue (``IP_RECVERR``), which would otherwise keep
        it readable and the wait spinning."""
        fast = self.fast
        if fast is None:
            return await self._recvfrom_plain()
        screen = self.screen
        await trio.lowlevel.checkpoint_if_cancelled()
        woken = False
        while True:
            try:
                if screen is None:
                    data, peer = fast.recvfrom(self.bufsize)
                    received: Received = (data, peer, None)
                else:
                    data, peer = screen.receive(self.bufsize)
                    received = (data, peer, screen.destination)
            except BlockingIOError:
                if woken:
                    self.drain_error_queue()
                await trio.lowlevel.wait_readable(self._sock)
                woken = True
                continue
            if not woken:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return received

    async def _recvfrom_plain(self) -> Received:
        """The plain ``trio.socket`` path (a virtual socket, or a real one
        whose descriptor could not be duplicated), screened as the fast path
        is once a server screens the socket."""
        screen = self.screen
        if screen is None:
            data, peer = await self._sock.recvfrom(self.bufsize)
            return data, peer, None
        if not screen.pktinfo:
            data, peer = await self._sock.recvfrom(self.bufsize)
            return data, screen.judge_unspecified(peer), screen.bound
        data, ancdata, flags, source = await self._sock.recvmsg(
            self.bufsize, ANCILLARY_SPACE
        )
        peer, destination = screen.judge(ancdata, flags, cast("SocketAddress", source))
        return data, peer, destination

    async def receive_counted(self) -> Datagram | None:
        """:meth:`receive`, but a per-datagram network error (an ICMP report)
        is counted and returns None instead of raising."""
        try:
            return await self.receive()
        except OSError as exc:
            if exc.errno not in TRANSIENT_ERRNOS:
                raise
            count_error(self.receive_errors, exc, self._where, None)
            return None

    # ---- the fast path ---------------------------------------------------

    async def wait_readable(self) -> None:
        """Fast path only: wait until a datagram (or an error) is queued."""
        if self.closed:
            raise closed_socket_error()
        await trio.lowlevel.wait_readable(self._sock)

    def receive_nowait(self, now: float) -> Datagram | None:
        """Fast path only: a queued datagram, or None if there is none.

        ``now`` is its ``received_at``. Oversize datagrams are counted and
        skipped; errors are raised as :meth:`receive` raises them. (A
        server's fast path has this written out inline.)
        """
        fast = self.fast
        assert fast is not None
        while True:
            if self.closed:
                raise closed_socket_error()
            try:
                data, peer = fast.recvfrom(self.bufsize)
            except BlockingIOError:
                return None
            datagram = self.accept(data, peer, now)
            if datagram is not None:
                return datagram

    async def take_leftovers(self) -> int:
        """Take what the kernel still holds for this socket, which is about to
        close, and count it: how many were received (oversize ones and
        errors are counted as :meth:`receive` counts them).

        At most as many as the receive buffer can hold are taken, so every
        datagram queued when this began is counted, and a flood that goes on
        cannot keep it going. Call it shielded from cancellation: on a real
        socket it never waits; on another (the virtual network) each
        datagram is a checkpoint.
        """
        if self.closed:
            return 0
        sock, fast = self._sock, self.fast
        try:
            limit = sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_RCVBUF)
        except OSError:
            return 0
        received = self.received
        for _ in range(limit // _LEAST_TRUESIZE + 1):
            try:
                if fast is not None:
                    data, _ = fast.recvfrom(self.bufsize)
                elif sock.is_readable():
                    data, _ = await sock.recvfrom(self.bufsize)
                else:
                    break
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno not in TRANSIENT_ERRNOS:
                    break
                count_error(self.receive_errors, exc, self._where, None)
                continue
            if len(data) >= self.bufsize:
                self.dropped_oversize += 1
            else:
                self.received += 1
        return self.received - received

    def screen_sources(self) -> None:
        """Make a server's receiving screen each datagram (see
        ``_screening``), on the fast path and the plain one alike.

        Raises:
            OSError: this host's addresses could not be read (a real
                socket; no descriptor free: ``EMFILE``). The server does not
                start: it could not screen.
        """
        if self.screen is not None:
            return
        fast = self.fast
        kernel = kernel_socket(self._sock)
        receive_only_joined(self._sock, kernel=kernel)
        # A real socket is screened against this host's addresses; a
        # virtual one has no host here to read them from.
        book = shared_address_book() if kernel else None
        screen = screen_for(
            self._sock,
            fast,
            self.local_for_datagrams(),
            self._where,
            book=book,
            groups=self._groups,
            broadcast=self._may_broadcast,
            routed=self._routed,
            kernel=kernel,
        )
        self.screen = screen
        if fast is not None:
            self.screened_recvfrom = screen.receive

    def _may_broadcast(self) -> bool:
        """Whether the socket may send broadcasts (``SO_BROADCAST``): then
        it answers them."""
        sock = self.fast or self._sock
        return bool(
            sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_BROADCAST)
        )

    def receive_failed(self, exc: OSError) -> bool:
        """Fast path only: a non-blocking receive raised ``exc``. Count a
        per-datagram network error and return True (receive on); return False
        if the socket has been closed; raise anything else."""
        if self.closed:
            return False
        if exc.errno not in TRANSIENT_ERRNOS:
            raise exc
        # With IP_RECVERR the error also waits in the error queue (the
        # receive reported only the latest one): count the queue instead.
        if not self.drain_error_queue():
            count_error(self.receive_errors, exc, self._where, None)
        return True

    def drain_error_queue(self) -> int:
        """Fast path only: take and count the errors queued under
        ``IP_RECVERR`` (see :func:`_kernel.drain_error_queue`); how many."""
        fast = self.fast
        if fast is None or self.closed:
            return 0
        return drain_error_queue(fast, self.receive_errors, self._where)
