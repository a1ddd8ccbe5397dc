"""What a connection sends, and when: its driver task, and the datagrams
taken from the engine and not yet sent.

Each :class:`QUICConnection` owns one :class:`Sender`. Datagrams leave as
aioquic's asyncio layer sends them:

* **Input is answered at once** (:meth:`Sender.flush`, called where
  datagrams are fed to the engine): what the engine then has leaves with
  ``send_to_nowait``, no task switch; only what the socket cannot take at
  once is left to the driver, which waits for room.
* **Application writes leave soon**: a stream operation that gives the
  engine something to send marks it (:meth:`Sender.changed`) and wakes the
  driver after its own schedule point (:meth:`Sender.send_changes`), so
  that what the task does next (its FIN, closing the stream) joins the same
  packet.
* **Acknowledgements ride on writes**: what the driver sends for the
  application carries the acknowledgement aioquic still delays
  (``Engine.ack_with_data``), so a request and its reply cost no
  acknowledgement-only packets.
* **Timers** are the driver's sleep deadline (``get_timer()``, on Trio's
  clock, so MockClock works), which input moves earlier without waking it.
  One sleep serves every kick until the timer is due; its deadline moves
  only when the timer did (aioquic's asyncio layer re-arms its timer only
  then too).

Invariants (``tests/test_quic_sending.py``):

* Datagrams are taken from the engine (``datagrams_to_send``) in one
  synchronous call and queued before any await, so the engine is never read
  across a schedule point.
* The queue keeps the engine's order: while the driver waits for room,
  :meth:`Sender.flush` sends nothing around it; a datagram whose
  ``send_to`` was cancelled (before it left, as ``send_to`` guarantees)
  goes back to the head of the queue.
* A change marked with :meth:`Sender.changed` is sent: every operation that
  marks one calls :meth:`Sender.send_changes` after its schedule point, even
  when cancelled there, and before it parks.
* Until the peer's address is validated it is sent at most three times what
  it sent (RFC 9000, section 8), counted by the server's
  ``AmplificationGuard``: datagrams beyond are withheld, which QUIC treats as
  lost and resends.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import trio

if TYPE_CHECKING:
    from ._engine import Engine
    from ._routing import Router, Transport

__all__ = [
    "CLOSE_SEND_SECONDS",
    "TIMER_RESOLUTION",
    "Driven",
    "Sender",
    "next_deadline",
]

logger = logging.getLogger("trioudp")

#: Seconds after a timer the engine left unchanged that it fires again.
TIMER_RESOLUTION = 1e-6
#: Seconds a cancelled connection may take to send its CONNECTION_CLOSE.
CLOSE_SEND_SECONDS = 1.0


def next_deadline(timer: float | None, handled_at: float) -> float:
    """When a driver must next fire the engine's timer (inf: never), given
    ``get_timer()`` and when it last fired one.

    aioquic can leave its loss timer at the very instant it just handled (its
    loss check rounds the other way); on a clock that stands still, as
    MockClock's does, firing it again would spin forever. A microsecond later
    it declares the packet lost.

    Example:
        >>> next_deadline(None, 1.0), next_deadline(2.0, 1.0), next_deadline(1.0, 1.0)
        (inf, 2.0, 1.000001)
    """
    if timer is None:
        return math.inf
    if timer <= handled_at:
        return handled_at + TIMER_RESOLUTION
    return timer


class Driven(Protocol):
    """What a sender needs of its connection."""

    def _deliver(self) -> None:
        """Hand on the engine's events (after its timer fired)."""

    def _sweep(self) -> None:
        """Forget what the engine discarded (after a send)."""

    def _end(self, failure: BaseException | None = None) -> None:
        """The engine is done (or failed): stop."""

    def _close_here(self, error_code: int, reason: str) -> None:
        """Close the connection at once (its driver is cancelled)."""


class Sender:
    """A connection's driver, and its datagrams built and not yet sent.

    ``router`` is a server's (its amplification limit); None for a client.
    """

    def __init__(
        self, engine: Engine, transport: Transport, router: Router[Any] | None
    ) -> None:
        self._engine = engine
        self._transport = transport
        self._router = router
        self._queue: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._waiting_for_room = False
        #: Whether the engine has terminated: nothing more is sent.
        self.ended = False
        #: Datagrams the kernel refused (ICMP reports): lost, QUIC resends.
        self.errors = 0
        self._kicked = False
        self._lot = trio.lowlevel.ParkingLot()
        # The driver's sleep, whose deadline input moves (None: not asleep).
        self._timer_scope: trio.CancelScope | None = None
        self._driving = False
        self._handled_at = -math.inf

    # ---- waking the driver -------------------------------------------------

    def kick(self) -> None:
        """Have the driver send what the engine has, at its next turn."""
        self._kicked = True
        self._lot.unpark_all()

    def changed(self) -> None:
        """The engine has more to send; the caller calls :meth:`send_changes`
        after its schedule point (or before it parks)."""
        self._kicked = True

    def send_changes(self) -> None:
        """Wake the driver if :meth:`changed` was called: it sends at its next
        turn, after what the calling task does next, so that a write and the
        FIN or the write after it leave in one packet (as aioquic's asyncio
        layer sends "soon")."""
        if self._kicked:
            self._lot.unpark_all()

    def stop(self) -> None:
        """The engine is done: send nothing more, and let the driver end."""
        self.ended = True
        self._queue.clear()
        self._lot.unpark_all()

    # ---- sending -------------------------------------------------------------

    def _deadline(self) -> float:
        return next_deadline(self._engine.get_timer(), self._handled_at)

    def flush(self, now: float, owner: Driven) -> None:
        """Send what the engine has for the peer now, without waiting; what
        the socket cannot take at once is left to the driver. Then re-arm
        the driver's timer, which the input may have moved."""
        if self.ended:
            return
        if not self._driving:
            self.kick()  # the driver sends it all when it starts
            return
        if not self._build(now):
            owner._end()
            return
        try:
            sent = self._send_nowait()
        except trio.ClosedResourceError:
            owner._end()  # the socket closed under the connection
            return
        if sent:
            self._kicked = False  # what a task changed has left too
        else:
            self.kick()
        scope = self._timer_scope
        if scope is not None:
            deadline = self._deadline()
            # Only ever earlier: a later timer wakes the driver for nothing,
            # which costs less than moving a deadline at every datagram.
            if deadline < scope.deadline:
                scope.deadline = deadline

    async def transmit(self, now: float, owner: Driven) -> None:
        """Build and send what the engine has, waiting for room if need be."""
        if not self._build(now):
            owner._end()
            return
        try:
            if not self._send_nowait():
                await self._send_waiting()
        except trio.ClosedResourceError:
            owner._end()  # the socket closed under the connection

    async def drive(self, owner: Driven) -> None:
        """The driver: fire the engine's timers, and send what the
        application gave the engine, until it terminates.

        Cancelled, it closes the connection at once: it sends the
        CONNECTION_CLOSE (taking at most ``CLOSE_SEND_SECONDS``) and ends.
        """
        engine = self._engine
        self._driving = True
        try:
            while not self.ended:
                await self._send_until_timer(owner)
                if self.ended:
                    break
                now = trio.current_time()
                if now < self._deadline():
                    continue  # the timer moved later since it was armed
                self._handled_at = now
                try:
                    engine.handle_timer(now)
                except Exception:
                    logger.exception("QUIC engine failed on its timer")
                    owner._end()
                    break
                owner._deliver()
                self._kicked = False
                await self.transmit(now, owner)
                owner._sweep()
        finally:
            self._timer_scope = None
            if not self.ended:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLOSE_SEND_SECONDS
                    owner._close_here(0, "")
                    await self.transmit(trio.current_time(), owner)
                owner._end()

    async def _send_until_timer(self, owner: Driven) -> None:
        """Send what the application gives the engine, each time it kicks,
        until the engine's timer is due (or the engine has terminated).

        One sleep scope serves every kick: its deadline is moved only when
        the timer moved, as aioquic's asyncio layer re-arms its timer only
        then (a new deadline scope per kick cost about as much as a trip
        through the scheduler). A send waiting for room when the timer
        comes due is cancelled before its datagram left, which goes back to
        the head of the queue and is sent after the timer fired.
        """
        with trio.CancelScope(deadline=self._deadline()) as scope:
            self._timer_scope = scope
            try:
                while not self.ended:
                    if not self._kicked and not self._queue:
                        await self._lot.park()
                        if self.ended:
                            return
                    now = trio.current_time()
                    if now >= scope.deadline:
                        return  # the timer's turn; it sends what is pending too
                    self._kicked = False
                    # A kick is the application's data (or its close): the
                    # acknowledgement still delayed goes with it.
                    self._engine.ack_with_data(now)
                    await self.transmit(now, owner)
                    owner._sweep()
                    deadline = self._deadline()
                    if deadline != scope.deadline:
                        scope.deadline = deadline
            finally:
                self._timer_scope = None

    def _build(self, now: float) -> bool:
        """Queue the datagrams the engine has to send now; False if the
        engine failed (logged)."""
        engine = self._engine
        try:
            datagrams = engine.datagrams_to_send(now=now)
        except Exception:
            logger.exception("QUIC engine failed to build packets")
            return False
        router = self._router
        queue = self._queue
        for data, address in datagrams:
            if (
                router is not None
                and not engine.path_validated(address)
                and not router.amplification.may_send(address, len(data))
            ):
                # aioquic keeps this limit itself, but 1.3 was measured past
                # it (3.1x): the datagram counts as lost, and is resent
                # once the peer has sent more or proved its address.
                router.withheld()
                continue
            queue.append((data, address))
        return True

    def _send_nowait(self) -> bool:
        """Send queued datagrams while the socket takes them at once; False
        if some must wait for room (or the driver is already waiting)."""
        if self._waiting_for_room:
            return False
        queue = self._queue
        transport = self._transport
        while queue:
            data, address = queue[0]
            try:
                transport.send_to_nowait(data, address)
            except trio.WouldBlock:
                return False
            except trio.ClosedResourceError:
                raise
            except OSError:
                # One datagram lost (ICMP unreachable): QUIC recovers it
                # like any loss.
                self.errors += 1
            queue.popleft()
        return True

    async def _send_waiting(self) -> None:
        """Send every queued datagram, waiting for room where need be."""
        queue = self._queue
        self._waiting_for_room = True
        try:
            while queue:
                data, address = queue.popleft()
                try:
                    await self._transport.send_to(data, address)
                except trio.Cancelled:
                    # send_to raises Cancelled only before the datagram left.
                    queue.appendleft((data, address))
                    raise
                except trio.ClosedResourceError:
                    raise
                except OSError:
                    self.errors += 1
        finally:
            self._waiting_for_room = False
