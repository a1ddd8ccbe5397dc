"""A server's receiving tasks: one per socket takes datagrams in and runs handlers eagerly, handing the socket on when one suspends.

Shape of a running server::

    UDPServer._serve (the task nursery.start runs)
    └── Intake.scope (its deadline ends a shutdown's grace period)
        └── Intake.nursery
            ├── one receiving task per socket: waits until the socket is
            │   readable, takes up to batch_size datagrams (on a real socket
            │   through ``_fastpath.take_ready``; overflow is queued, then
            │   dropped and counted), running each handler eagerly in its
            │   own task
            ├── one task per handler that suspended: the receiving task it
            │   suspended in, which awaits the rest of it and then helps
            │   with the queue, while a new receiving task takes the socket
            └── one task per batch of replies left waiting for room
                (``Outbox.send_leftover``)

With a ``handler_nursery``, the receiving tasks (and so every handler, which
runs and, if it suspends, finishes in one of them) are started there
instead, each inside a cancel scope of the server's: ``Intake.run`` waits
for them in ``Intake.nursery`` and, when it is cancelled (the grace period
ended, or the server's own scope was cancelled), cancels them and waits
until they have ended. Cancelling the handler nursery ends them too, and
with them receiving: the server winds down as if every socket had closed.

Why eager handlers: spawning a Trio task, or handing a datagram to another
task, costs more than most handlers do. A handler that never suspends, like
an echo whose reply the kernel takes at once, finishes inside the receiving
task, so a batch costs one trip through Trio's scheduler; blocking handlers
fan out up to ``max_in_flight``, and nothing moves between tasks (see
``_handlers`` for the engine and its invariants). A receiving task passes a
schedule point at least every ``batch_size`` datagrams and every
``batch_time`` seconds (checked before each datagram, so one handler call
can overrun it), so other tasks keep running under a flood, however slow the
handler.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import trio

from ._fastpath import HANDED_OVER, take_ready

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from ._admission import Admission
    from ._handlers import Handlers
    from ._mmsg import SendBatch
    from ._outbox import Outbox
    from ._socket import UDPSocket

__all__ = ["DEFAULT_GRACE", "Intake"]

_T = TypeVar("_T")

DEFAULT_GRACE = 5.0
#: A receiving task that took fewer datagrams than this in its last batch
#: polls once more before it sleeps (see ``Intake._receive``).
_LIGHT_LOAD = 2


class Intake:
    """The receiving tasks of a server, and everything they run (see the
    module docstring). :meth:`run` runs them until the server stops."""

    def __init__(
        self,
        sockets: Sequence[UDPSocket],
        handlers: Handlers,
        admission: Admission,
        *,
        batch_size: int,
        batch_time: float,
        handler_nursery: trio.Nursery | None = None,
    ) -> None:
        self._sockets = sockets
        self.handlers = handlers
        self.admission = admission
        self.batch_size = batch_size
        self.batch_time = batch_time
        self.stopping = False
        # Everything the server runs lives under this scope; its deadline is
        # the end of a shutdown's grace period.
        self.scope = trio.CancelScope()
        self.nursery: trio.Nursery | None = None
        # The scopes of receiving tasks waiting for datagrams now.
        self._waits: set[trio.CancelScope] = set()
        # Sockets that still have a receiving task.
        self._receiving = 0
        #: Tasks running now (see ServerStats.tasks).
        self.tasks = 0
        self._handler_nursery = handler_nursery
        # The scopes of the tasks running in the handler nursery, and an
        # event set when the last of them ends.
        self._elsewhere: set[trio.CancelScope] = set()
        self._elsewhere_ended = trio.Event()
        self._elsewhere_cancelled = False

    async def run(self, started: Callable[[], None]) -> None:
        """Receive on every socket until the server stops; call ``started``
        once every socket has its receiving task."""
        with self.scope:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                for sock in self._sockets:
                    sock._inbox.screen_sources()
                    self._receiving += 1
                    self._spawn_receiving(sock)
                started()
                if self._handler_nursery is not None:
                    try:
                        await self._elsewhere_ended.wait()
                    finally:
                        await self._end_elsewhere()

    async def _end_elsewhere(self) -> None:
        """Cancel the server's tasks in the handler nursery and wait until
        they have ended (at once if they have)."""
        self._elsewhere_cancelled = True
        for scope in self._elsewhere:
            scope.cancel()
        with trio.CancelScope(shield=True):
            await self._elsewhere_ended.wait()

    def begin_shutdown(self, deadline: float) -> None:
        """Stop receiving at once; cancel what still runs at ``deadline``
        (a later call can only bring it closer)."""
        self.stopping = True
        for wait in self._waits:
            wait.cancel()
        self.scope.deadline = min(self.scope.deadline, deadline)

    def _spawn(self, task: Callable[[_T], Awaitable[None]], argument: _T) -> None:
        """Start a server task; each one decrements ``tasks`` when it ends."""
        assert self.nursery is not None
        self.tasks += 1
        self.nursery.start_soon(task, argument)

    def _spawn_receiving(self, sock: UDPSocket) -> None:
        """Start a receiving task for ``sock``: in the handler nursery if
        there is one (its handlers run in it), else as :meth:`_spawn`."""
        if self._handler_nursery is None:
            self._spawn(self._receive, sock)
            return
        self.tasks += 1
        scope = trio.CancelScope()
        if self._elsewhere_cancelled:
            scope.cancel()
        self._elsewhere.add(scope)
        self._handler_nursery.start_soon(self._receive_elsewhere, sock, scope)

    async def _receive_elsewhere(
        self, sock: UDPSocket, scope: trio.CancelScope
    ) -> None:
        """:meth:`_receive`, in the handler nursery under ``scope``, which
        the server cancels when it stops."""
        try:
            with scope:
                await self._receive(sock)
        finally:
            self._elsewhere.discard(scope)
            if not self._elsewhere:
                self._elsewhere_ended.set()

    def send_leftover_soon(self, outbox: Outbox, replies: SendBatch) -> None:
        """Send a batch's replies that met a full send buffer in a task of
        their own: the task that held them must not wait (Invariants,
        ``_handlers``)."""
        self._spawn(self._send_leftover, (outbox, replies))

    async def _send_leftover(self, held: tuple[Outbox, SendBatch]) -> None:
        outbox, replies = held
        try:
            await outbox.send_leftover(replies)
        finally:
            self.tasks -= 1

    def hand_over(self, sock: UDPSocket) -> None:
        """A handler suspended in ``sock``'s receiving task: start a new one."""
        if self.stopping:
            self._receiving_ended()
        else:
            self._spawn_receiving(sock)

    async def _receive(self, sock: UDPSocket) -> None:
        """Receive on ``sock`` and handle what arrives, until a handler blocks:
        then a new receiving task takes the socket over and this one finishes
        that handler, then helps with the queue."""
        inbox = sock._inbox
        still_receiving = True
        try:
            # Cancelled by begin_shutdown only while waiting for datagrams,
            # never while a handler runs in this task.
            with trio.CancelScope() as waiting:
                taken = 0
                while not self.stopping:
                    still_receiving = await self._serve_queue(sock)
                    if not still_receiving or self.stopping:
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
                            await inbox.wait_readable()
                        else:
                            datagram = await inbox.receive_counted()
                    except trio.ClosedResourceError:
                        break
                    finally:
                        self._waits.discard(waiting)
                    if sock.is_fast and self.stopping:
                        # Shutdown began after the wait ended but before this
                        # task ran: `waiting` is cancelled, so any handler
                        # run inside it would be cancelled at once, grace or
                        # not. Receiving has stopped; take nothing more.
                        break
                    if sock.is_fast:
                        result = await take_ready(self, sock)
                        if result is HANDED_OVER:
                            still_receiving = False
                            break
                        taken = result
                        if not taken:
                            # Woken with nothing to read: errors queued
                            # under IP_RECVERR, which keep it readable.
                            inbox.drain_error_queue()
                    elif datagram is not None and self.admission.admit(datagram):
                        self.handlers.enqueue(datagram)
            if still_receiving:
                still_receiving = False
                self._receiving_ended()
            await self._serve_queue(None)
        finally:
            self.tasks -= 1
            if still_receiving:  # cancelled outright (its nursery, or the server's)
                self._receiving_ended()

    def _receiving_ended(self) -> None:
        self._receiving -= 1
        if not self._receiving and not self.stopping:
            # Every socket was closed under us: wind down as a shutdown would.
            self.begin_shutdown(trio.current_time() + DEFAULT_GRACE)

    async def _serve_queue(self, receiving: UDPSocket | None) -> bool:
        """Handle queued datagrams while handler slots are free.

        Each handler runs eagerly in this task; if one suspends and this task
        is ``receiving``'s receiving task, a new task takes over receiving.
        Returns whether this task still receives.
        """
        handlers = self.handlers
        queue = handlers.queue
        if not queue:
            return receiving is not None
        clock = trio.lowlevel.current_clock().current_time
        ends = clock() + self.batch_time
        since_checkpoint = 0
        while queue and handlers.in_flight < handlers.max_in_flight:
            rest = handlers.start(queue.popleft())
            if rest is not None:
                if receiving is not None:
                    self.hand_over(receiving)
                    receiving = None
                await rest
                # Other tasks ran while the handler waited: a new batch.
                since_checkpoint = 0
                ends = clock() + self.batch_time
                continue
            since_checkpoint += 1
            if queue and (since_checkpoint >= self.batch_size or clock() >= ends):
                await trio.lowlevel.checkpoint()
                since_checkpoint = 0
                ends = clock() + self.batch_time
        return receiving is not None
