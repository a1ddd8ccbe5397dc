"""``serve_udp`` and ``serve_udp_sockets``: check the settings, open the sockets, and run a :class:`UDPServer` on them.

Thin, as trio's ``_highlevel_serve_listeners.py``: ``serve_udp`` is
``open_udp_sockets`` (``_open``) followed by ``serve_udp_sockets``, which
checks every setting before anything runs and then runs the server until it
is shut down or cancelled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ._checks import check_instance, check_real, check_seconds, short_repr
from ._handlers import Overflow, check_handler
from ._limits import AccessList, RateLimit
from ._open import open_udp_sockets
from ._server import UDPServer
from ._socket import UDPSocket

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._handlers import Handler
    from ._multicast import Multicast

__all__ = ["serve_udp", "serve_udp_sockets"]

DEFAULT_MAX_IN_FLIGHT = 64
DEFAULT_QUEUE_SIZE = 256
DEFAULT_BATCH_SIZE = 64
#: Seconds a receiving task handles datagrams before it lets other tasks
#: run. An echo takes a batch of 64 in about 0.3 ms, so only handlers that
#: cost tens of microseconds or more meet it; they then pass a schedule
#: point every 2 ms or so, one trip through the scheduler (~20 us) each.
DEFAULT_BATCH_TIME = 0.002


def _check_protection(
    overflow: Overflow | str,
    rate_limit: RateLimit | None,
    amplification_factor: float | None,
    access: AccessList | None,
) -> None:
    """Check the server settings that protect it (and ``overflow``)."""
    Overflow(overflow)
    check_instance(
        "rate_limit", rate_limit, RateLimit, "RateLimit(rate=100, burst=200)"
    )
    check_instance("access", access, AccessList, "AccessList(allow=['192.0.2.0/24'])")
    if amplification_factor is not None:
        check_real("amplification_factor", amplification_factor, low=1)


def _check_sockets(sockets: Sequence[UDPSocket]) -> None:
    for sock in sockets:
        if not isinstance(sock, UDPSocket):
            msg = (
                "serve_udp_sockets serves trioudp.UDPSocket objects (wrap a trio"
                f" socket: UDPSocket(sock)), not {type(sock).__name__} {short_repr(sock)}"
            )
            raise TypeError(msg)


def _check_running(batch_time: float, handler_nursery: trio.Nursery | None) -> None:
    """Check the settings of how the server runs beside the rest of the program."""
    check_seconds("batch_time", batch_time, zero=True, infinite=True)
    check_instance(
        "handler_nursery",
        handler_nursery,
        trio.Nursery,
        "the nursery of `async with trio.open_nursery() as nursery`",
    )


def _check_settings(
    handler: Handler,
    max_in_flight: int,
    queue_size: int,
    batch_size: int,
    handler_timeout: float | None,
) -> None:
    check_handler(handler)
    for name, value, low in (
        ("max_in_flight", max_in_flight, 1),
        ("queue_size", queue_size, 0),
        ("batch_size", batch_size, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            msg = f"{name} must be an int >= {low}, not {value!r}"
            raise ValueError(msg)
    if handler_timeout is not None:
        check_seconds("handler_timeout", handler_timeout, infinite=True)


async def serve_udp_sockets(
    handler: Handler,
    sockets: Sequence[UDPSocket],
    *,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    overflow: Overflow | str = Overflow.DROP_NEWEST,
    handler_timeout: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batch_time: float = DEFAULT_BATCH_TIME,
    handler_nursery: trio.Nursery | None = None,
    rate_limit: RateLimit | None = None,
    amplification_factor: float | None = None,
    access: AccessList | None = None,
    task_status: trio.TaskStatus[UDPServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve datagrams arriving on already-open sockets; never returns normally
    until the server is shut down.

    The lower layer of :func:`serve_udp`, for sockets you opened yourself
    (with options of your own, or from a socket-activation manager).

    Args:
        handler: ``async def handler(datagram)``, called once per datagram.
        sockets: the sockets to serve; the server takes ownership and closes
            them when it stops.
        max_in_flight: most handler calls running at once.
        queue_size: datagrams allowed to wait for a free handler; beyond
            ``max_in_flight + queue_size`` pending, datagrams are dropped and
            counted (``stats.dropped_queue_full``). Memory for payloads is thus
            bounded by ``(max_in_flight + queue_size) * max_datagram_size``.
        overflow: ``"drop_newest"`` (default) or ``"drop_oldest"``.
        handler_timeout: seconds a handler may run before it is cancelled and
            counted in ``stats.handler_timeouts``; None for no limit.
        batch_size: most datagrams taken per scheduling round.
        batch_time: most seconds a receiving task handles datagrams before
            it lets other tasks run (2 ms). With ``batch_size``, it bounds
            how long timers, signals, other sockets and the rest of the
            program wait under a flood, however slow the handler: checked
            before each datagram, it can be overrun by one handler call.
            ``math.inf`` bounds batches by ``batch_size`` alone.
        handler_nursery: the nursery to run handlers in (as
            :func:`trio.serve_tcp`'s); None: the server's own. Handlers run
            eagerly in the receiving tasks, and one that suspends finishes in
            the task it started in, so the receiving tasks are the ones
            started there: every handler call, quick or suspending, runs in
            a task of ``handler_nursery``, whose cancel scope and context it
            sees, and into which a handler's ``KeyboardInterrupt`` or
            ``SystemExit`` propagates. The server still owns those tasks:
            its grace period and cancelling it end them, and it returns only
            once they have ended (unlike ``serve_tcp``'s handlers, they reply
            through the server's sockets). Cancelling ``handler_nursery``
            ends them, and with them receiving: the server stops, its
            handlers counted as ``dropped_shutdown``.
        rate_limit: a per-source-prefix :class:`RateLimit`; None for none.
        amplification_factor: replies to a peer not yet validated
            (:meth:`Datagram.validate_peer`) may total at most this many times
            the bytes received from it (3 is QUIC's rule); None for no limit.
        access: an :class:`AccessList` of networks allowed and denied.
        task_status: reports the :class:`UDPServer` once receiving has begun.

    Datagrams from source port 0 are always dropped and counted: no real
    client sends from it, and answering it only serves reflection attacks.

    Error handling:
        Bad settings raise ``TypeError`` or ``ValueError`` at once, and the
        sockets are closed. A handler's exception is counted and logged on
        the ``trioudp`` logger, the first of each exception type with its
        traceback, later ones in one line when their count reaches a power
        of two; the server goes on. Per-datagram network errors (ICMP
        unreachable and the like) are counted in ``stats.receive_errors``,
        never fatal; on a socket with
        ``IP_RECVERR``/``IPV6_RECVERR`` set, its error queue is drained and
        each error in it counted.

    Resource handling:
        Cancelling the surrounding scope stops everything at once; sockets
        are closed and no task is left behind. :meth:`UDPServer.shutdown`
        stops gracefully.

    Example::

        async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
            server = await nursery.start(trioudp.serve_udp_sockets, handler, [sock])
    """
    if not sockets:
        msg = "serve_udp_sockets needs at least one socket"
        raise ValueError(msg)
    try:
        _check_settings(handler, max_in_flight, queue_size, batch_size, handler_timeout)
        _check_running(batch_time, handler_nursery)
        _check_protection(overflow, rate_limit, amplification_factor, access)
        _check_sockets(sockets)
    except BaseException:
        for sock in sockets:  # they are ours now: close them, the port is free
            close = getattr(sock, "close", None)
            if callable(close):
                close()
        raise
    server = UDPServer(
        handler,
        sockets,
        max_in_flight=max_in_flight,
        queue_size=queue_size,
        overflow=Overflow(overflow),
        handler_timeout=handler_timeout,
        batch_size=batch_size,
        batch_time=batch_time,
        handler_nursery=handler_nursery,
        rate_limit=rate_limit,
        amplification_factor=amplification_factor,
        access=access,
    )
    await server._serve(task_status)


async def serve_udp(
    handler: Handler,
    port: int,
    *,
    host: str | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    overflow: Overflow | str = Overflow.DROP_NEWEST,
    handler_timeout: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    batch_time: float = DEFAULT_BATCH_TIME,
    handler_nursery: trio.Nursery | None = None,
    max_datagram_size: int | None = None,
    receive_buffer: int | None = None,
    reuse_port: bool = False,
    multicast: Multicast | None = None,
    broadcast: bool = False,
    rate_limit: RateLimit | None = None,
    amplification_factor: float | None = None,
    access: AccessList | None = None,
    task_status: trio.TaskStatus[UDPServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve UDP on ``port``, calling ``handler(datagram)`` for each datagram.

    Follows :func:`trio.serve_tcp`: ``server = await nursery.start(serve_udp,
    handler, port)`` binds, starts receiving, and hands back the
    :class:`UDPServer`. It runs until cancelled or shut down.

    Args:
        handler: ``async def handler(datagram: Datagram)``.
        port: the port to bind; 0 picks a free one (see ``server.port``).
        host: the address to bind; None binds all addresses, IPv4 and IPv6
            (two sockets: IPv4 peers look like ``("192.0.2.1", 4000)``);
            ``"::"`` binds one dual-stack socket, where IPv4 peers appear
            IPv4-mapped: ``("::ffff:192.0.2.1", 4000, 0, 0)``; ``"0.0.0.0"``
            serves IPv4 only, and any other IPv6 address IPv6 only.
        max_datagram_size: larger datagrams are dropped and counted.
        receive_buffer: bytes of kernel receive buffer to ask for
            (``SO_RCVBUF``); a warning is logged if the kernel grants less.
        reuse_port: set ``SO_REUSEPORT``, so that other processes (or other
            servers in this one) can bind the same port and share its
            datagrams; see :func:`run_workers`.
        multicast: groups to join (each on the socket of its family) and
            multicast settings; see :class:`Multicast`.
        broadcast: allow replies to broadcast addresses (``SO_BROADCAST``).
        max_in_flight: and ``queue_size``, ``overflow``, ``handler_timeout``,
            ``batch_size``, ``batch_time``, ``handler_nursery``,
            ``rate_limit``, ``amplification_factor``, ``access``: see
            :func:`serve_udp_sockets`.
        task_status: reports the :class:`UDPServer`.

    Raises:
        BindError: a socket could not be bound (port in use, ...).
        TypeError, ValueError: a setting is of the wrong type or out of range
            (a plain, non-async ``handler`` included); raised before anything
            is bound, naming the value.

    Example::

        async def handler(datagram: trioudp.Datagram) -> None:
            await datagram.reply(b"Hello, client!")

        async with trio.open_nursery() as nursery:
            server = await nursery.start(trioudp.serve_udp, handler, 12345)

    Handlers in a nursery of your own (``handler_nursery``)::

        async with trio.open_nursery() as nursery, trio.open_nursery() as handlers:
            server = await nursery.start(
                functools.partial(
                    trioudp.serve_udp, handler, 12345, handler_nursery=handlers
                )
            )
    """
    _check_settings(handler, max_in_flight, queue_size, batch_size, handler_timeout)
    _check_running(batch_time, handler_nursery)
    _check_protection(overflow, rate_limit, amplification_factor, access)
    sockets = await open_udp_sockets(
        port,
        host,
        max_datagram_size=max_datagram_size,
        receive_buffer=receive_buffer,
        reuse_port=reuse_port,
        multicast=multicast,
        broadcast=broadcast,
    )
    await serve_udp_sockets(
        handler,
        sockets,
        max_in_flight=max_in_flight,
        queue_size=queue_size,
        overflow=overflow,
        handler_timeout=handler_timeout,
        batch_size=batch_size,
        batch_time=batch_time,
        handler_nursery=handler_nursery,
        rate_limit=rate_limit,
        amplification_factor=amplification_factor,
        access=access,
        task_status=task_status,
    )
