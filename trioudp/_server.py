"""serve_udp and UDPServer: datagram handlers under a nursery, bounded and counted.

Shape of a running server::

    serve_udp_sockets (the task nursery.start runs)
    └── cancel scope (its deadline ends a shutdown's grace period)
        └── nursery
            ├── one receiver task per socket: waits until the socket is
            │   readable, takes up to batch_size datagrams into a bounded
            │   queue (overflow dropped and counted), then runs the handlers
            │   eagerly, in its own task
            └── one task per handler that suspended

Why eager handlers: spawning a Trio task, or handing a datagram to another
task, costs more than most handlers do. The receiver steps each handler
synchronously (``_eager.start``); a handler that never suspends, like an echo
whose reply the kernel takes at once, finishes there, so a batch costs one
trip through Trio's scheduler. When a handler does suspend, the receiver task
keeps it (it simply awaits the rest) and a new receiver task takes over the
socket: blocking handlers fan out up to ``max_in_flight``, and nothing moves
between tasks. A receiver passes a schedule point at least every
``batch_size`` datagrams, so other tasks keep running under a flood.

Invariants (the eager engine; ``tests/test_faults.py`` breaks each on a real
link whose send buffer fills):

* Between a handler's first suspension (``coro.send(None)`` returning the
  trap it yielded) and handing that trap to Trio (``await rest``), the
  receiver task awaits nothing. The trap may be a registration with Trio's
  I/O manager (``wait_writable`` in a reply that met a full send buffer) made
  on behalf of the *receiver task*; any await in between would suspend that
  task a second time, and Trio would then wake it for the wrong wait
  (``TrioInternalError``) or refuse the second wait (``BusyResourceError``).
  So the batch's held replies are sent without waiting there, and those the
  kernel does not take yet go to a task of their own (``_send_leftover``).
* At most one task waits for a socket to become writable; every other task
  that needs room parks on the socket until that one wakes
  (``UDPSocket._wait_for_room``), so any number of handlers may meet a full
  send buffer at once.

Why batched replies: on a real socket (Linux), small replies made while a
batch is handled are collected and leave together in one ``sendmmsg`` call
(``_mmsg.SendBatch``) when the batch ends, when a handler suspends, or after
``REPLY_DELAY``; the peer is then woken once per batch instead of once per
reply (an echo serves ~15% more datagrams per second). The first reply of a
batch, and replies over 2 KiB, leave at once: under light traffic holding them
would only add latency, and large datagrams were measured to lose more
(the peer waits for work it could do) than batching saves.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import inspect
import logging
import socket as stdlib_socket
import sys
import types
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar, final

import attrs
import trio

from . import _eager as eager
from ._address import UNSPECIFIED_HOSTS
from ._checks import check_instance, check_real, check_seconds, short_repr
from ._datagram import Datagram
from ._limits import AccessList, AmplificationGuard, RateLimit, RateLimiter
from ._mmsg import MAX_BATCHED_SIZE
from ._responder import Responder, checked_answer
from ._socket import FORGED_SOURCE, UDPSocket, bind_udp_socket, check_multicast

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._address import SocketAddress
    from ._mmsg import SendBatch
    from ._multicast import Multicast

__all__ = ["Overflow", "ServerStats", "UDPServer", "serve_udp", "serve_udp_sockets"]

logger = logging.getLogger("trioudp")

_Coroutine = types.CoroutineType
_T = TypeVar("_T")

#: What a handler is: an async function of one Datagram. Its result is ignored.
Handler = Callable[[Datagram], Awaitable[object]]

DEFAULT_MAX_IN_FLIGHT = 64
DEFAULT_QUEUE_SIZE = 256
DEFAULT_BATCH_SIZE = 64
DEFAULT_GRACE = 5.0
#: Longest a reply is held back to leave with its batch's others (seconds;
#: checked every ``_CLOCK_EVERY`` datagrams). An echo handles a batch of 64 in
#: well under this; handlers that take longer have their replies sent sooner.
REPLY_DELAY = 0.001
_CLOCK_EVERY = 8
#: A receiver that took fewer datagrams than this in its last batch polls
#: once more before it sleeps (see ``UDPServer._intake``).
_LIGHT_LOAD = 2


class Overflow(enum.Enum):
    """Which datagram to drop when the server's queue is full.

    Example:
        >>> Overflow("drop_oldest") is Overflow.DROP_OLDEST
        True
    """

    #: Drop the datagram that just arrived (keeps the oldest work).
    DROP_NEWEST = "drop_newest"
    #: Drop the datagram that waited longest (keeps the freshest work).
    DROP_OLDEST = "drop_oldest"


@attrs.frozen(kw_only=True)
class ServerStats:
    """A snapshot of a :class:`UDPServer`'s counters.

    Every datagram received is, at any moment, exactly one of: handled,
    a handler error, a handler timeout, dropped for a reason, in flight, or
    queued; see :attr:`accounted`, which always equals ``received``.
    Oversize datagrams are dropped before they count as received.

    Attributes:
        received: datagrams taken from the sockets.
        handled: handler calls that returned normally.
        replied: replies sent with :meth:`Datagram.reply`.
        handler_errors: handler calls that raised (each one is logged).
        handler_timeouts: handler calls cut off by ``handler_timeout``.
        dropped_queue_full: datagrams dropped because the queue was full.
        dropped_oversize: datagrams over ``max_datagram_size``.
        dropped_shutdown: queued or in-flight datagrams abandoned by shutdown.
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
        """Received datagrams dropped, whatever the reason (oversize included)."""
        return (
            self.dropped_queue_full
            + self.dropped_oversize
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
            - self.dropped_oversize
            + self.in_flight
            + self.queued
        )


def _check_handler(handler: object) -> None:
    """Refuse, at start, a handler whose calls cannot be awaited.

    The one place that decides which handlers a server takes. Accepted:
    ``async def`` functions and methods, and callables that show they return
    awaitables: a ``functools.partial`` or ``functools.wraps`` wrapper of an
    async function, an object whose ``__call__`` is ``async def``, a class
    whose instances are awaitable, a function marked with
    ``inspect.markcoroutinefunction`` (Python 3.12+). Refused: plain
    functions, methods, builtins, classes and objects with a plain
    ``__call__``, which would fail on every datagram. Callables that cannot
    be inspected (written in C) are taken on trust.

    Raises:
        TypeError: ``handler`` is not callable, or plainly not async.
    """
    if not callable(handler):
        msg = f"handler must be an async function of one Datagram, not {short_repr(handler)}"
        raise TypeError(msg)
    target: object = handler
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return
    with contextlib.suppress(ValueError):  # a cycle of __wrapped__
        target = inspect.unwrap(target)  # type: ignore[arg-type]
    if inspect.iscoroutinefunction(target):
        return
    if isinstance(target, type):
        plain = not hasattr(target, "__await__")
    elif (
        inspect.isfunction(target)
        or inspect.ismethod(target)
        or inspect.isbuiltin(target)
    ):
        plain = True
    else:
        call = inspect.getattr_static(type(target), "__call__", None)
        if inspect.iscoroutinefunction(call):
            return
        plain = inspect.isfunction(call)
    if plain:
        msg = (
            f"handler must be an async function of one Datagram (async def"
            f" handler(datagram): ...), not the plain callable {short_repr(handler)}:"
            " the server awaits its result for every datagram. Pass a plain"
            " function that returns the reply as trioudp.Responder(function);"
            " wrap one that returns an awaitable in an async def."
        )
        raise TypeError(msg)


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


def _check_settings(
    handler: Handler,
    max_in_flight: int,
    queue_size: int,
    batch_size: int,
    handler_timeout: float | None,
) -> None:
    _check_handler(handler)
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
        rate_limit: RateLimit | None = None,
        amplification_factor: float | None = None,
        access: AccessList | None = None,
    ) -> None:
        self._handler = handler
        self._sockets = tuple(sockets)
        self._max_in_flight = max_in_flight
        self._capacity = max_in_flight + queue_size
        self._overflow = overflow
        self._handler_timeout = handler_timeout
        self._batch_size = batch_size
        self._queue: deque[Datagram] = deque()
        self._nursery: trio.Nursery | None = None
        # Everything the server runs lives under this scope; its deadline is
        # the end of a shutdown's grace period.
        self._scope = trio.CancelScope()
        # The scopes of receivers waiting for datagrams now.
        self._waits: set[trio.CancelScope] = set()
        self._stopped = trio.Event()
        self._stopping = False
        self._intakes = 0
        self._tasks = 0
        self._in_flight = 0
        self._handled = 0
        self._handler_errors = 0
        self._handler_timeouts = 0
        self._dropped_queue_full = 0
        self._dropped_shutdown = 0
        self._dropped_rate_limited = 0
        self._dropped_denied = 0
        self._dropped_port_zero = 0
        self._dropped_forged = 0
        self._rate_limited_logged = 0
        self._limiter = None if rate_limit is None else RateLimiter(rate_limit)
        self._access = access
        guard = (
            None
            if amplification_factor is None
            else AmplificationGuard(amplification_factor)
        )
        for sock in self._sockets:
            sock._guard = guard
        self._screening = (
            self._limiter is not None or access is not None or guard is not None
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
        return ServerStats(
            received=sum(s.received for s in socket_stats),
            handled=self._handled,
            replied=sum(s.replied for s in socket_stats),
            handler_errors=self._handler_errors,
            handler_timeouts=self._handler_timeouts,
            dropped_queue_full=self._dropped_queue_full,
            dropped_oversize=sum(s.dropped_oversize for s in socket_stats),
            dropped_shutdown=self._dropped_shutdown,
            dropped_rate_limited=self._dropped_rate_limited,
            dropped_denied=self._dropped_denied,
            dropped_port_zero=self._dropped_port_zero,
            dropped_forged=self._dropped_forged,
            dropped_amplification=sum(s.dropped_amplification for s in socket_stats),
            rate_limited_logged=self._rate_limited_logged,
            kernel_drops=_sum_known([sock.kernel_drops() for sock in self._sockets]),
            in_flight=self._in_flight,
            queued=len(self._queue),
            tasks=self._tasks,
            receive_errors=_merge_counts([s.receive_errors for s in socket_stats]),
            send_errors=_merge_counts([s.send_errors for s in socket_stats]),
        )

    @property
    def stopping(self) -> bool:
        """Whether shutdown has begun."""
        return self._stopping

    def begin_shutdown(self, grace: float = DEFAULT_GRACE) -> None:
        """Start a graceful shutdown without waiting for it (safe from a handler).

        Receiving stops at once; queued and in-flight datagrams are handled
        for up to ``grace`` seconds; then the remaining handlers are
        cancelled and counted in ``dropped_shutdown``. Calling it again can
        only shorten the grace period.
        """
        check_seconds("grace", grace, zero=True, infinite=True)
        self._stopping = True
        for wait in self._waits:
            wait.cancel()
        deadline = trio.current_time() + grace
        self._scope.deadline = min(self._scope.deadline, deadline)

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
            with self._scope:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    for sock in self._sockets:
                        sock._screen_sources()
                        self._intakes += 1
                        self._spawn(self._intake, sock)
                    task_status.started(self)
        finally:
            self._dropped_shutdown += len(self._queue)
            self._queue.clear()
            for sock in self._sockets:
                sock._keep_kernel_drops()
                sock.close()
            self._stopped.set()

    def _spawn(self, task: Callable[[_T], Awaitable[None]], argument: _T) -> None:
        """Start a server task; each one decrements ``_tasks`` when it ends."""
        assert self._nursery is not None
        self._tasks += 1
        self._nursery.start_soon(task, argument)

    async def _send_leftover(self, held: tuple[UDPSocket, SendBatch]) -> None:
        """Send a batch's replies that met a full send buffer (a task of its
        own: the receiver that held them must not wait, see Invariants)."""
        sock, replies = held
        try:
            await sock._send_leftover(replies)
        finally:
            self._tasks -= 1

    async def _intake(self, sock: UDPSocket) -> None:
        """Receive on ``sock`` and handle what arrives, until a handler blocks:
        then a new intake task takes the socket over and this one finishes
        that handler, then helps with the queue."""
        still_intake = True
        try:
            # Cancelled by begin_shutdown only while waiting for datagrams,
            # never while a handler runs in this task.
            with trio.CancelScope() as waiting:
                taken = 0
                while not self._stopping:
                    still_intake = await self._serve_queue(sock)
                    if not still_intake or self._stopping:
                        # (A handler run from the queue may have begun the
                        # shutdown, before this wait could be cancelled.)
                        break
                    self._waits.add(waiting)
                    try:
                        if sock.is_fast:
                            if taken < _LIGHT_LOAD:
                                # Light traffic: pass through the scheduler
                                # once more before sleeping; a request that
                                # comes meanwhile skips an idle CPU's wake-up
                                # (p50 round trip 89 -> 67 us here).
                                await trio.lowlevel.checkpoint()
                            await sock._wait_readable()
                        else:
                            datagram = await sock._receive_counted()
                    except trio.ClosedResourceError:
                        break
                    finally:
                        self._waits.discard(waiting)
                    if sock.is_fast and self._stopping:
                        # Shutdown began after the wait ended but before this
                        # task ran: `waiting` is cancelled, so any handler
                        # run inside it would be cancelled at once, grace or
                        # not. Receiving has stopped; take nothing more.
                        break
                    if sock.is_fast:
                        taken = await self._take_ready(sock)
                        if taken < 0:
                            still_intake = False
                            break
                        if not taken:
                            # Woken with nothing to read: errors queued
                            # under IP_RECVERR, which keep it readable.
                            sock._drain_error_queue()
                    elif datagram is not None and self._admit(datagram):
                        self._enqueue(datagram)
            if still_intake:
                still_intake = False
                self._intake_ended()
            await self._serve_queue(None)
        finally:
            self._tasks -= 1
            if still_intake:  # pragma: no cover  (only when cancelled outright)
                self._intakes -= 1

    def _intake_ended(self) -> None:
        self._intakes -= 1
        if not self._intakes and not self._stopping:
            # Every socket was closed under us: wind down as a shutdown would.
            self.begin_shutdown()

    def _admit(self, datagram: Datagram) -> bool:
        """Screen a datagram before any handler sees it; count what is refused."""
        peer = datagram.peer
        ip, port = peer[0], peer[1]
        if peer is FORGED_SOURCE or ip in UNSPECIFIED_HOSTS:
            self._dropped_forged += 1
            return False
        if not port:
            self._dropped_port_zero += 1
            return False
        if self._access is not None and not self._access.admits(ip):
            self._dropped_denied += 1
            return False
        limiter = self._limiter
        if limiter is not None and not limiter.allow(ip, datagram.received_at):
            if not limiter.policy.log_only:
                self._dropped_rate_limited += 1
                return False
            self._rate_limited_logged += 1
            if self._rate_limited_logged & (self._rate_limited_logged - 1) == 0:
                logger.warning(
                    "rate limit exceeded by %s (log_only: handled anyway), %d times",
                    ip,
                    self._rate_limited_logged,
                )
        guard = datagram._origin._guard if datagram._origin is not None else None
        if guard is not None:
            guard.on_receive((ip, port), len(datagram.data))
        return True

    def _enqueue(self, datagram: Datagram) -> None:
        queue = self._queue
        if len(queue) + self._in_flight >= self._capacity:
            self._dropped_queue_full += 1
            if self._overflow is Overflow.DROP_NEWEST or not queue:
                return
            queue.popleft()
        queue.append(datagram)

    async def _take_ready(self, sock: UDPSocket) -> int:
        """Fast path: take up to ``batch_size`` datagrams the kernel holds,
        handling each as it comes so replies leave at once (clients pipeline).
        Returns how many it took, or -1 if a handler suspended and another
        task now receives.

        This loop runs once per datagram under load, so it is flat: the
        socket's ``_receive_nowait`` and the handler's first step
        (``_start``) are written out here, because each function call per
        datagram measurably costs (calling ``_start`` took 14% more of the
        server's user CPU: 6.3 against 5.4 us per echoed datagram).
        """
        assert sock._fast is not None
        recvfrom = sock._screened_recvfrom or sock._fast.recvfrom
        bufsize = sock._bufsize
        local = sock._local or sock._local_for_datagrams()
        make_datagram = Datagram._received
        handler = self._handler
        respond = handler.respond if type(handler) is Responder else None
        reply_now = sock._reply_now
        guard = sock._guard
        timed = self._handler_timeout is not None
        queue = self._queue
        limit = self._batch_size
        now = trio.current_time()
        taken = 0
        batching = False
        held_since = now
        try:
            # A handler of this batch may begin the shutdown: receiving
            # stops at once, so the rest stays in the kernel.
            while taken < limit and not self._stopping:
                try:
                    data, peer = recvfrom(bufsize)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if not sock._receive_failed(exc):
                        break
                    continue
                taken += 1
                if len(data) >= bufsize:
                    sock._dropped_oversize += 1
                    continue
                sock._received += 1
                datagram = make_datagram(data, peer, local, now, sock)
                if (self._screening or not peer[1]) and not self._admit(datagram):
                    continue
                if queue or self._in_flight >= self._max_in_flight:
                    self._enqueue(datagram)
                    continue
                if respond is not None:
                    # A Responder: a plain call, its reply sent or batched
                    # (or held for room) without waiting.
                    rest = None
                    try:
                        answer = respond(datagram)
                        if type(answer) is not bytes and answer is not None:
                            answer = checked_answer(answer)
                        if answer is not None:
                            # The common case written out: a small reply
                            # joins the batch (what _reply_now does, two
                            # calls less).
                            replies = sock._replies
                            try:
                                joined = (
                                    replies is not None
                                    and guard is None
                                    and type(answer) is bytes
                                    and len(answer) <= MAX_BATCHED_SIZE
                                    and replies.add(answer, peer)
                                )
                            except ValueError:  # an address it cannot encode
                                joined = False
                            if not joined:
                                # An answer the reply refuses (larger than a
                                # datagram: its size may follow the peer's)
                                # fails this datagram only, as in an async
                                # handler.
                                reply_now(answer, peer)
                    except Exception:
                        self._handler_failed(datagram)
                        continue
                    except BaseException as exc:
                        self._count_base_exception(datagram, exc)
                        raise
                    self._handled += 1
                elif timed:
                    rest = self._start(datagram)
                else:
                    self._in_flight += 1
                    try:
                        awaitable = handler(datagram)
                        coro = (
                            awaitable
                            if type(awaitable) is _Coroutine
                            else awaitable.__await__()
                        )
                        yielded = coro.send(None)
                    except StopIteration:
                        self._in_flight -= 1
                        self._handled += 1
                        rest = None
                    except BaseException as exc:
                        self._handler_raised(datagram, exc)
                        rest = None
                    else:
                        rest = self._rest_of(datagram, coro, yielded)
                if rest is not None:
                    # The handler suspended: its trap goes to Trio with
                    # nothing awaited first (Invariants, above).
                    leftover = sock._end_reply_batch_nowait()
                    if leftover is not None:
                        self._spawn(self._send_leftover, (sock, leftover))
                    self._hand_over(sock)
                    await rest
                    return -1
                if not batching:
                    # The first reply has left at once: under light traffic
                    # it is the only one, and holding it would add latency.
                    batching = True
                    sock._begin_reply_batch()
                elif not taken % _CLOCK_EVERY:
                    held_since = self._bound_reply_delay(sock, held_since)
        except BaseException:
            sock._abandon_reply_batch()
            raise
        await sock._end_reply_batch()
        return taken

    @staticmethod
    def _bound_reply_delay(sock: UDPSocket, held_since: float) -> float:
        """Send the replies a batch holds if it has run for ``REPLY_DELAY``
        (slow handlers must not hold the first replies back for long);
        returns when the replies now held began to wait."""
        now = trio.current_time()
        if now - held_since < REPLY_DELAY:
            return held_since
        sock._send_held_replies()
        return now

    async def _serve_queue(self, intake: UDPSocket | None) -> bool:
        """Handle queued datagrams while handler slots are free.

        Each handler runs eagerly in this task; if one suspends and this task
        is ``intake``'s receiver, a new task takes over receiving. Returns
        whether this task is still the receiver.
        """
        queue = self._queue
        since_checkpoint = 0
        while queue and self._in_flight < self._max_in_flight:
            rest = self._start(queue.popleft())
            if rest is not None:
                if intake is not None:
                    self._hand_over(intake)
                    intake = None
                await rest
            since_checkpoint += 1
            if since_checkpoint >= self._batch_size and queue:
                since_checkpoint = 0
                await trio.lowlevel.checkpoint()
        return intake is not None

    def _start(self, datagram: Datagram) -> Awaitable[None] | None:
        """Run the handler eagerly until it finishes (None) or suspends (then
        the awaitable rest of it, accounting included)."""
        self._in_flight += 1
        if self._handler_timeout is not None:
            timed = eager.start(
                self._accounted(datagram, lambda: self._handler(datagram))
            )
            return None if timed is None else eager.finish(timed)
        try:
            awaitable = self._handler(datagram)
            # A coroutine steps directly; other awaitables through their iterator.
            coro = awaitable if type(awaitable) is _Coroutine else awaitable.__await__()
            yielded = coro.send(None)
        except StopIteration:
            self._in_flight -= 1
            self._handled += 1
            return None
        except BaseException as exc:
            self._handler_raised(datagram, exc)
            return None
        return self._rest_of(datagram, coro, yielded)

    def _handler_raised(self, datagram: Datagram, exc: BaseException) -> None:
        """Account for a handler that raised before suspending; re-raise what
        is not an Exception (see :meth:`_count_base_exception`)."""
        self._in_flight -= 1
        if isinstance(exc, Exception):
            self._handler_failed(datagram)
            return
        self._count_base_exception(datagram, exc)
        raise exc

    def _count_base_exception(self, datagram: Datagram, exc: BaseException) -> None:
        """Count a handler's exception that is not an Exception before it
        propagates as Trio would propagate it: Cancelled (alone or in a
        group) is the server's shutdown at work; anything else
        (KeyboardInterrupt, SystemExit, a group holding other exceptions) is
        a handler error, logged, that stops the server."""
        if isinstance(exc, trio.Cancelled) or (
            isinstance(exc, BaseExceptionGroup) and exc.split(trio.Cancelled)[1] is None
        ):
            self._dropped_shutdown += 1
            return
        self._handler_errors += 1
        logger.error(
            "UDP handler %r raised %s on a datagram from %r; it stops the server",
            getattr(self._handler, "__qualname__", self._handler),
            type(exc).__name__,
            datagram.peer,
            exc_info=exc,
        )

    def _rest_of(
        self, datagram: Datagram, coro: object, yielded: object
    ) -> Awaitable[None]:
        """The rest of a handler that suspended, accounting included."""
        rest: eager.Suspended = (coro, yielded)  # type: ignore[assignment]
        return self._accounted(datagram, lambda: eager.finish(rest))

    def _handler_failed(self, datagram: Datagram) -> None:
        self._handler_errors += 1
        logger.exception(
            "UDP handler %r failed on a datagram from %r; the server goes on",
            getattr(self._handler, "__qualname__", self._handler),
            datagram.peer,
        )

    def _hand_over(self, sock: UDPSocket) -> None:
        if self._stopping:
            self._intake_ended()
        else:
            self._spawn(self._intake, sock)

    async def _accounted(
        self, datagram: Datagram, handling: Callable[[], Awaitable[object]]
    ) -> None:
        """Await ``handling()`` (the handler, or the rest of one that
        suspended) under ``handler_timeout``, and count how it ended."""
        try:
            if self._handler_timeout is None:
                await handling()
            else:
                with trio.move_on_after(self._handler_timeout) as scope:
                    await handling()
                if scope.cancelled_caught:
                    self._handler_timeouts += 1
                    return
        except Exception:
            self._handler_failed(datagram)
        except BaseException as exc:
            self._count_base_exception(datagram, exc)
            raise
        else:
            self._handled += 1
        finally:
            self._in_flight -= 1

    def __repr__(self) -> str:
        return f"<trioudp.UDPServer on {self.addresses!r}>"


async def serve_udp_sockets(
    handler: Handler,
    sockets: Sequence[UDPSocket],
    *,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    overflow: Overflow | str = Overflow.DROP_NEWEST,
    handler_timeout: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
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
        batch_size: most datagrams taken per scheduling round; bounds how long
            other tasks wait under a flood.
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
        sockets are closed. A handler's exception is logged on the
        ``trioudp`` logger with its traceback and counted; the server goes
        on. Per-datagram network errors (ICMP unreachable and the like) are
        counted in ``stats.receive_errors``, never fatal; on a socket with
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
        rate_limit=rate_limit,
        amplification_factor=amplification_factor,
        access=access,
    )
    await server._serve(task_status)


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
            ``batch_size``, ``rate_limit``, ``amplification_factor``,
            ``access``: see :func:`serve_udp_sockets`.
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
    """
    _check_settings(handler, max_in_flight, queue_size, batch_size, handler_timeout)
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
        rate_limit=rate_limit,
        amplification_factor=amplification_factor,
        access=access,
        task_status=task_status,
    )
