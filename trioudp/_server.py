"""UDPServer: the public handle of a running server (its sockets, counters and shutdown) and its counters' snapshot, ServerStats.

A server is made and run by :func:`serve_udp_sockets` (``_serve``); what it
runs lives in ``_intake`` (the receiving tasks), ``_handlers`` (the eager
engine and the queue) and ``_admission`` (which datagrams get through); each
owns its counters, which :attr:`UDPServer.stats` gathers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

import attrs
import trio

from ._admission import Admission
from ._checks import check_seconds
from ._handlers import Handlers
from ._intake import DEFAULT_GRACE, Intake
from ._limits import AmplificationGuard

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._address import SocketAddress
    from ._handlers import Handler, Overflow
    from ._limits import AccessList, RateLimit
    from ._socket import UDPSocket

__all__ = ["ServerStats", "UDPServer"]


@attrs.frozen(kw_only=True)
class ServerStats:
    """A snapshot of a :class:`UDPServer`'s counters.

    Every datagram received is, at any moment, exactly one of: handled,
    a handler error, a handler timeout, dropped for a reason, in flight, or
    queued; see :attr:`accounted`, which always equals ``received``.
    Oversize datagrams are dropped before they count as received, so they
    are in neither ``received`` nor :attr:`dropped`: only in
    ``dropped_oversize``.

    Attributes:
        received: datagrams taken from the sockets.
        handled: handler calls that returned normally.
        replied: replies sent with :meth:`Datagram.reply`.
        handler_errors: handler calls that raised (each one is logged).
        handler_timeouts: handler calls cut off by ``handler_timeout``.
        dropped_queue_full: datagrams dropped because the queue was full.
        dropped_oversize: datagrams over ``max_datagram_size``.
        dropped_shutdown: datagrams the server stopped before handling:
            queued, in flight, or still in the kernel's receive queue when
            it stopped (the server takes those as it closes its sockets, at
            most as many as the receive buffer holds, and counts them as
            received too).
        dropped_rate_limited: datagrams over the source prefix's rate limit.
        dropped_denied: datagrams from sources the access list refuses.
        dropped_port_zero: datagrams from source port 0 (never answered: a
            reply there is always spoofed traffic's).
        dropped_forged: datagrams whose source no real peer can have: an
            unspecified address (``0.0.0.0``, ``::``), a loopback address
            (IPv4-mapped included) on a datagram that arrived over another
            interface than loopback, or an IPv4-mapped address as the source
            of an IPv6 packet (Linux, via ``IP_PKTINFO``). Never answered:
            Linux would deliver the reply to this host's own services, or
            send it as IPv4 to a multicast or broadcast address.
        dropped_amplification: replies withheld by the amplification guard
            (replies, not received datagrams).
        rate_limited_logged: datagrams over the limit in ``log_only`` mode
            (counted, handled anyway).
        kernel_drops: datagrams the kernel dropped because the receive
            buffer was full (Linux, real sockets; None where unknown).
        in_flight: handler calls running now.
        queued: datagrams waiting for a free handler.
        tasks: tasks the server runs now: one receiver per socket, plus one
            per handler that is waiting on something.
        receive_errors: per-datagram receive errors (ICMP and such), by errno.
        send_errors: per-datagram reply errors, by errno.

    Example:
        >>> ServerStats().dropped
        0
    """

    received: int = 0
    handled: int = 0
    replied: int = 0
    handler_errors: int = 0
    handler_timeouts: int = 0
    dropped_queue_full: int = 0
    dropped_oversize: int = 0
    dropped_shutdown: int = 0
    dropped_rate_limited: int = 0
    dropped_denied: int = 0
    dropped_port_zero: int = 0
    dropped_forged: int = 0
    dropped_amplification: int = 0
    rate_limited_logged: int = 0
    kernel_drops: int | None = None
    in_flight: int = 0
    queued: int = 0
    tasks: int = 0
    receive_errors: dict[str, int] = attrs.field(factory=dict)
    send_errors: dict[str, int] = attrs.field(factory=dict)

    @property
    def dropped(self) -> int:
        """Received datagrams dropped for any reason.

        The sum of every ``dropped_*`` counter but ``dropped_oversize``
        (those datagrams were never received) and ``dropped_amplification``
        (it counts replies).

        Example:
            >>> ServerStats(received=3, dropped_denied=1, dropped_oversize=2).dropped
            1
        """
        return (
            self.dropped_queue_full
            + self.dropped_shutdown
            + self.dropped_rate_limited
            + self.dropped_denied
            + self.dropped_port_zero
            + self.dropped_forged
        )

    @property
    def accounted(self) -> int:
        """The sum of every received datagram's outcome so far; equals ``received``."""
        return (
            self.handled
            + self.handler_errors
            + self.handler_timeouts
            + self.dropped
            + self.in_flight
            + self.queued
        )


def _sum_known(counts: Sequence[int | None]) -> int | None:
    known = [count for count in counts if count is not None]
    return sum(known) if known else None


def _merge_counts(tables: Sequence[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for table in tables:
        for name, count in table.items():
            merged[name] = merged.get(name, 0) + count
    return merged


@final
class UDPServer:
    """A running UDP server, as returned by ``nursery.start(serve_udp, ...)``.

    Not constructed directly: :func:`serve_udp` and :func:`serve_udp_sockets`
    make one and report it through ``task_status``.

    Example::

        async with trio.open_nursery() as nursery:
            server = await nursery.start(trioudp.serve_udp, handler, 0)
            print(server.addresses, server.stats.received)
            await server.shutdown(grace=1.0)
    """

    def __init__(
        self,
        handler: Handler,
        sockets: Sequence[UDPSocket],
        *,
        max_in_flight: int,
        queue_size: int,
        overflow: Overflow,
        handler_timeout: float | None,
        batch_size: int,
        batch_time: float,
        handler_nursery: trio.Nursery | None = None,
        rate_limit: RateLimit | None = None,
        amplification_factor: float | None = None,
        access: AccessList | None = None,
    ) -> None:
        self._sockets = tuple(sockets)
        self._stopped = trio.Event()
        self._handlers = Handlers(
            handler,
            max_in_flight=max_in_flight,
            queue_size=queue_size,
            overflow=overflow,
            handler_timeout=handler_timeout,
        )
        guard = (
            None
            if amplification_factor is None
            else AmplificationGuard(amplification_factor)
        )
        for sock in self._sockets:
            sock._outbox.guard = guard
        self._admission = Admission(
            rate_limit=rate_limit, access=access, guarded=guard is not None
        )
        self._intake = Intake(
            self._sockets,
            self._handlers,
            self._admission,
            batch_size=batch_size,
            batch_time=batch_time,
            handler_nursery=handler_nursery,
        )

    @property
    def sockets(self) -> tuple[UDPSocket, ...]:
        """The sockets this server receives on."""
        return self._sockets

    @property
    def addresses(self) -> list[SocketAddress]:
        """The local address of each socket, e.g. ``[("0.0.0.0", 12345)]``."""
        return [sock.local_address for sock in self._sockets if not sock.closed]

    @property
    def port(self) -> int:
        """The port of the first socket (all share it when ``serve_udp`` bound them)."""
        return self._sockets[0].local_address[1]

    @property
    def stats(self) -> ServerStats:
        """A snapshot of the counters; see :class:`ServerStats`."""
        socket_stats = [sock.stats for sock in self._sockets]
        handlers, admission = self._handlers, self._admission
        return ServerStats(
            received=sum(s.received for s in socket_stats),
            handled=handlers.handled,
            replied=sum(s.replied for s in socket_stats),
            handler_errors=handlers.handler_errors,
            handler_timeouts=handlers.handler_timeouts,
            dropped_queue_full=handlers.dropped_queue_full,
            dropped_oversize=sum(s.dropped_oversize for s in socket_stats),
            dropped_shutdown=handlers.dropped_shutdown,
            dropped_rate_limited=admission.dropped_rate_limited,
            dropped_denied=admission.dropped_denied,
            dropped_port_zero=admission.dropped_port_zero,
            dropped_forged=admission.dropped_forged,
            dropped_amplification=sum(s.dropped_amplification for s in socket_stats),
            rate_limited_logged=admission.rate_limited_logged,
            kernel_drops=_sum_known([sock.kernel_drops() for sock in self._sockets]),
            in_flight=handlers.in_flight,
            queued=len(handlers.queue),
            tasks=self._intake.tasks,
            receive_errors=_merge_counts([s.receive_errors for s in socket_stats]),
            send_errors=_merge_counts([s.send_errors for s in socket_stats]),
        )

    @property
    def stopping(self) -> bool:
        """Whether shutdown has begun."""
        return self._intake.stopping

    def begin_shutdown(self, grace: float = DEFAULT_GRACE) -> None:
        """Start a graceful shutdown without waiting for it (safe from a handler).

        Receiving stops at once; queued and in-flight datagrams are handled
        for up to ``grace`` seconds; then the remaining handlers are
        cancelled and counted in ``dropped_shutdown``. Calling it again can
        only shorten the grace period.
        """
        check_seconds("grace", grace, zero=True, infinite=True)
        self._intake.begin_shutdown(trio.current_time() + grace)

    async def shutdown(self, grace: float = DEFAULT_GRACE) -> None:
        """Stop gracefully and wait until the server has stopped.

        See :meth:`begin_shutdown`. When it returns, every task of the server
        has finished and every socket is closed. Called from one of this
        server's own handlers it waits for that handler too, so the full
        ``grace`` passes; use :meth:`begin_shutdown` there instead.

        Example::

            await server.shutdown(grace=2.0)
            assert server.stats.in_flight == 0
        """
        self.begin_shutdown(grace)
        await self._stopped.wait()

    # ---- running ---------------------------------------------------------

    async def _serve(
        self, task_status: trio.TaskStatus[UDPServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await self._intake.run(lambda: task_status.started(self))
        finally:
            self._handlers.drop_queued()
            # What the kernel still holds would vanish uncounted as the
            # sockets close: take it, and count it as received and dropped.
            with trio.CancelScope(shield=True):
                for sock in self._sockets:
                    left = await sock._inbox.take_leftovers()
                    self._handlers.dropped_shutdown += left
            for sock in self._sockets:
                sock._inbox.keep_kernel_drops()
                sock.close()
            self._stopped.set()

    def __repr__(self) -> str:
        return f"<trioudp.UDPServer on {self.addresses!r}>"
