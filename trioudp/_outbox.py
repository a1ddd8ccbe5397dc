"""A socket's sending side: sends that wait for room, and replies sent at once, batched, or held for room.

Every :class:`UDPSocket` owns one :class:`Outbox`; it is also the origin a
received :class:`Datagram` replies through (``Datagram.reply`` calls
:meth:`Outbox.reply`). It counts what it sends (``sent``, ``replied``,
``dropped_amplification``, ``dropped_loop``, ``send_errors``); the socket's
``stats`` read them.

Why batched replies: on a real socket (Linux), small replies made while a
server handles a batch of datagrams are collected and leave together in one
``sendmmsg`` call (``_mmsg.SendBatch``) when the batch ends, when a handler
suspends, or after ``REPLY_DELAY``; the peer is then woken once per batch
instead of once per reply (an echo serves ~15% more datagrams per second).
The first reply of a batch, and replies over 2 KiB, leave at once: under
light traffic holding them would only add latency, and large datagrams were
measured to lose more (the peer waits for work it could do) than batching
saves.

The reply batch's lifecycle (only a server's fast path drives it):

* **idle** (``collecting is None``): every reply is sent on its own.
* :meth:`~Outbox.begin_batch` -> **collecting** (``collecting`` is a
  :class:`SendBatch`, the reusable ``_spare`` one): small replies join it;
  others, and replies from other tasks, flush it first and go on their own.
* :meth:`~Outbox.end_batch` (or ``end_batch_nowait`` +
  :meth:`~Outbox.send_leftover`) -> **idle**: what the kernel takes is sent;
  what meets a full send buffer waits for room for at most
  ``REPLY_SHIELD_SECONDS``, then is counted as ``EAGAIN`` send errors. While
  leftover replies wait in a batch object, ``_spare`` is None, so a new batch
  never reuses (and clears) it.
* :meth:`~Outbox.abandon_batch` (an error in the batch, or ``close``) ->
  **idle** at once: what the kernel takes now is sent, the rest counted.

Replies a Responder made that met a full send buffer (``_held_for_room``:
copies, since the caller may reuse its buffer) wait for
:meth:`~Outbox.end_batch`, which waits for room; ``abandon_batch`` counts them.

Invariants (``tests/test_faults.py`` breaks each on a real link whose send
buffer fills):

* At most one task waits for the socket to become writable; every other task
  that needs room parks on the outbox until that one wakes
  (:meth:`~Outbox.wait_for_room`), so any number of handlers may meet a full
  send buffer at once (Trio refuses a second wait with ``BusyResourceError``).
* Each reply is counted once: sent (``replied``), withheld by the
  amplification guard or the loop guard, or, at most once, as a send error,
  however often it is tried.
* A reply to a peer whose port is below ``guarded_below``, or is
  ``guarded_port`` (the socket's own), never joins the batch without
  :meth:`~Outbox._reply_nowait` asking the loop guard (the fast path's
  inline join tests the port, as it tests ``guard is None``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ._address import check_payload
from ._errors import closed_socket_error
from ._kernel import PENDING_ICMP_ERRNOS, TRANSIENT_ERRNOS, count_error
from ._mmsg import MAX_BATCHED_SIZE, SendBatch, sendmmsg_available
from ._trio_private import cancel_requested_probe

if TYPE_CHECKING:
    import socket as stdlib_socket
    from collections.abc import Callable

    from ._address import SocketAddress
    from ._limits import AmplificationGuard, ReplyBudget

__all__ = ["REPLY_SHIELD_SECONDS", "Outbox"]

logger = logging.getLogger("trioudp")

#: How long a reply that has begun may wait for buffer space once its
#: handler has been cancelled.
REPLY_SHIELD_SECONDS = 0.5


class Outbox:
    """Everything a socket sends; see the module docstring.

    ``sock`` is the socket's ``trio.socket``, ``fast`` its non-blocking twin
    (None: the plain ``trio.socket`` path), ``where`` names the socket in
    logs. ``guard`` is set by a server that limits amplification,
    ``loop_budget``, ``guarded_below`` and ``guarded_port`` by one with a
    loop guard (replies to peers from ports below ``guarded_below``, or
    from ``guarded_port``, the socket's own, ask it first);
    ``drain_errors`` by the socket, to take the kernel's error queue
    (``Inbox.drain_error_queue``) before waiting for room.
    """

    def __init__(
        self,
        sock: trio.socket.SocketType,
        fast: stdlib_socket.socket | None,
        *,
        max_payload: int,
        where: object,
    ) -> None:
        self._sock = sock
        self.fast = fast
        self.max_payload = max_payload
        self._where = where
        self.closed = False
        self.guard: AmplificationGuard | None = None
        self.loop_budget: ReplyBudget | None = None
        self.guarded_below = 0
        self.guarded_port = -1
        self.drain_errors: Callable[[], int] = lambda: 0
        self.sent = 0
        self.replied = 0
        self.dropped_amplification = 0
        self.dropped_loop = 0
        self.send_errors: dict[str, int] = {}
        # The reply batch (see the module docstring): the one replies join
        # now, and the one the next batch reuses.
        self.collecting: SendBatch | None = None
        self._spare: SendBatch | None = None
        # Replies reply_now could not send for a full buffer: (a copy of the
        # data, peer, whether a send error was counted for it).
        self._held_for_room: list[tuple[bytes, SocketAddress, bool]] = []
        # Trio lets one task at a time wait for a descriptor to be writable:
        # that task is the room watcher; others wanting room park here and
        # wake with it (see wait_for_room).
        self.room_watched = False
        self._room_waiters = trio.lowlevel.ParkingLot()

    def validate(self, peer: tuple[str, int]) -> None:
        """Lift the guards' limits on replies to ``peer``
        (``Datagram.validate_peer``)."""
        if self.guard is not None:
            self.guard.validate(peer)
        if self.loop_budget is not None:
            self.loop_budget.validate(peer)

    def close(self) -> None:
        """Abandon the batch (see :meth:`abandon_batch`); later sends raise."""
        self.abandon_batch()
        self.closed = True

    # ---- plain sends -----------------------------------------------------

    async def transmit(
        self, data: bytes | bytearray | memoryview, address: SocketAddress | None
    ) -> None:
        """Send one checked datagram (to the connected peer if ``address`` is
        None): a checkpoint, waiting for room in the send buffer if need be."""
        fast = self.fast
        if fast is None:
            if address is None:
                await self._sock.send(data)
            else:
                await self._sock.sendto(data, address)
            self.sent += 1
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._send_or_wait(fast, data, address):
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        await self._send_waiting(data, address)

    def transmit_nowait(
        self, data: bytes | bytearray | memoryview, address: SocketAddress
    ) -> None:
        """Send one checked datagram now, or raise :class:`trio.WouldBlock`
        (a full send buffer, or no descriptor to send on without waiting)."""
        fast = self.fast
        if fast is None or self._send_or_wait(fast, data, address):
            raise trio.WouldBlock

    async def send_soon(self, data: bytes | bytearray | memoryview) -> None:
        """``UDPSocket.send`` for a caller that passes a schedule point right
        after (a client about to wait for its reply): a cancel point, and on
        a real socket a datagram the kernel takes at once needs no trip
        through the scheduler."""
        if self.closed:
            raise closed_socket_error()
        check_payload(data, self.max_payload)
        fast = self.fast
        if fast is None:
            await self.transmit(data, None)
            return
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._send_or_wait(fast, data, None):
            await self._send_waiting(data, None)

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
        self.sent += 1
        return False

    async def _send_waiting(
        self, data: bytes | bytearray | memoryview, address: SocketAddress | None
    ) -> None:
        """Send (to the connected peer if ``address`` is None), waiting for
        buffer space if need be."""
        fast = self.fast
        if fast is None:
            await self.transmit(data, address)
            return
        while True:
            if self.closed:
                raise closed_socket_error()
            if not self._send_or_wait(fast, data, address):
                return
            await self.wait_for_room()

    async def wait_for_room(self) -> None:
        """Wait until the send buffer may have room (callers try again and
        may wait again). Trio lets one task at a time wait for a descriptor
        to be writable: the first waiter watches the descriptor, any other
        parks until the watcher wakes, is cancelled or the socket closes."""
        if self.room_watched:
            await self._room_waiters.park()
            return
        self.room_watched = True
        try:
            # Errors queued under IP_RECVERR would end this wait at once.
            self.drain_errors()
            await trio.lowlevel.wait_writable(self._sock)
        finally:
            self.room_watched = False
            self._room_waiters.unpark_all()

    # ---- replies ---------------------------------------------------------

    async def reply(
        self, data: bytes | bytearray | memoryview, peer: SocketAddress
    ) -> None:
        """Send a reply (``Datagram.reply``); per-datagram network errors are
        counted, not raised.

        On a real socket a reply the kernel takes at once needs no trip
        through the scheduler (the server provides the schedule points).
        """
        if self.closed:
            raise closed_socket_error()
        if type(data) is not bytes or len(data) > self.max_payload:
            check_payload(data, self.max_payload)
        # A cancel point at a third of the cost of awaiting
        # checkpoint_if_cancelled() where Trio lets us look (_trio_private).
        calm = cancel_requested_probe() is False
        if not calm:
            await trio.lowlevel.checkpoint_if_cancelled()
        replies = self.collecting
        if (
            replies is not None
            and self.guard is None
            and peer[1] >= self.guarded_below
            and peer[1] != self.guarded_port
            and type(data) is bytes
            and len(data) <= MAX_BATCHED_SIZE
        ):
            # The common case of _reply_nowait written out (a call less per
            # reply): a small reply no guard must see joins the batch.
            try:
                if replies.add(data, peer):
                    return
            except ValueError:
                pass  # an address the batch cannot encode: as below
        counted = self._reply_nowait(data, peer)
        if counted is not None:
            # A reply that has started goes out even if the handler is
            # cancelled now (a shutdown's grace ran out), unless the socket
            # stays unwritable.
            await self._reply_when_room(
                data, peer, counted, trio.current_time() + REPLY_SHIELD_SECONDS
            )

    def reply_now(
        self, data: bytes | bytearray | memoryview, peer: SocketAddress
    ) -> None:
        """:meth:`reply` for a :class:`Responder` on the fast path: never
        waits. A reply that meets a full send buffer is copied and held for
        :meth:`end_batch`, which waits for room."""
        if self.closed:
            raise closed_socket_error()
        if type(data) is not bytes or len(data) > self.max_payload:
            check_payload(data, self.max_payload)
        counted = self._reply_nowait(data, peer)
        if counted is not None:
            self._held_for_room.append((bytes(data), peer, counted))

    def reply_refused(self, data: bytes, peer: SocketAddress, exc: OSError) -> None:
        """The kernel refused a reply the fast path sent itself (what
        :meth:`reply_now` does then): held for room if the send buffer is
        full, or if a pending ICMP report stopped it (then counted once as
        a send error; other per-datagram errors are counted and the reply
        given up); anything else raises."""
        if isinstance(exc, BlockingIOError):
            self._held_for_room.append((data, peer, False))
        elif self._worth_repeating(exc, peer):
            self._held_for_room.append((data, peer, True))

    def _reply_nowait(
        self, data: bytes | bytearray | memoryview, peer: SocketAddress
    ) -> bool | None:
        """Send, batch or withhold (amplification guard) a checked reply
        without waiting. Returns None when that is done (an error included:
        it is counted), else whether a send error was already counted for
        it: then it still waits for room, or a pending ICMP report about an
        earlier datagram stopped it and it is worth one more try."""
        guard = self.guard
        if guard is not None and not guard.may_send(
            (peer[0], peer[1]),
            # The bytes that would leave: a subclass's len() may say otherwise.
            len(data) if type(data) is bytes else memoryview(data).nbytes,
        ):
            self.dropped_amplification += 1
            return None
        if (
            (peer[1] < self.guarded_below or peer[1] == self.guarded_port)
            and self.loop_budget is not None
            and not self.loop_budget.allow(
                (peer[0], peer[1]), trio.current_time(), self.guarded_port
            )
        ):
            self.dropped_loop += 1
            return None
        replies = self.collecting
        if replies is not None:
            # A server is handling a batch: collect small replies to send
            # them together; send anything else on its own, after them.
            if (type(data) is bytes or type(data) is bytearray) and len(
                data
            ) <= MAX_BATCHED_SIZE:
                try:
                    if replies.add(data, peer) or (
                        self._send_replies_now(replies) and replies.add(data, peer)
                    ):
                        return None
                except ValueError:
                    pass  # an address the batch cannot encode
            self.send_held()
        fast = self.fast
        if fast is None:
            return False
        try:
            fast.sendto(data, peer)
        except BlockingIOError:
            return False  # the buffer is full: wait for room
        except OSError as exc:
            return True if self._worth_repeating(exc, peer) else None
        self.sent += 1
        self.replied += 1
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
                    self.replied += 1
                    return
        self._count_full_buffer(1)

    # ---- the reply batch (fast path) -------------------------------------

    def begin_batch(self) -> None:
        """Collect replies until :meth:`end_batch`, to send them with one
        system call. A no-op without ``sendmmsg``."""
        if self.fast is None or self.closed or not sendmmsg_available():
            return
        if self._spare is None:
            self._spare = SendBatch(int(self._sock.family))
        self.collecting = self._spare

    async def end_batch(self) -> None:
        """Stop collecting and send what was collected, and the replies
        :meth:`reply_now` held; not a schedule point unless the send buffer
        is full (then see :meth:`send_leftover`, :meth:`_reply_when_room`)."""
        leftover = self.end_batch_nowait()
        if leftover is not None:
            await self.send_leftover(leftover)
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

    def end_batch_nowait(self) -> SendBatch | None:
        """Stop collecting and send what the kernel takes now, without
        waiting; returns the replies that did not fit (None if all did),
        which the caller must pass to :meth:`send_leftover`."""
        replies = self.collecting
        self.collecting = None  # replies from other tasks meanwhile go on their own
        if replies is None or self._send_replies_now(replies):
            return None
        # A new batch must not reuse the object these replies still wait in.
        self._spare = None
        return replies

    async def send_leftover(self, replies: SendBatch) -> None:
        """Send replies that met a full send buffer: wait for room (at most
        ``REPLY_SHIELD_SECONDS``, even if cancelled: these replies have
        begun) and count what still did not fit as ``EAGAIN`` send errors."""
        with trio.CancelScope(shield=True) as shield:
            shield.deadline = trio.current_time() + REPLY_SHIELD_SECONDS
            try:
                while not self.closed and not self._send_replies_now(replies):
                    await self.wait_for_room()
            except trio.ClosedResourceError:
                pass  # closed under the server: what is left is counted below
        self._drop_held(replies)

    def send_held(self) -> None:
        """Send the replies collected so far (those the kernel takes now) and
        go on collecting."""
        replies = self.collecting
        if replies is not None and replies.peers:
            self._send_replies_now(replies)

    def abandon_batch(self) -> None:
        """Stop collecting at once: send what the kernel takes now and count
        the rest as ``EAGAIN`` send errors."""
        if self._held_for_room:
            self._count_full_buffer(len(self._held_for_room))
            self._held_for_room = []
        replies = self.collecting
        if replies is None:
            return
        self.collecting = None
        if not self.closed:
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
        before = self.send_errors.get("EAGAIN", 0)
        count = self.send_errors["EAGAIN"] = before + dropped
        # Logged when the count passes a power of two: a peer that keeps the
        # link full must not make the server write a line per reply.
        if count.bit_length() > before.bit_length():
            logger.warning(
                "%d UDP replies dropped on %r: the send buffer stayed full (%d so far)",
                dropped,
                self._where,
                count,
            )

    def _send_replies_now(self, replies: SendBatch) -> bool:
        """Send the collected replies that the kernel takes now; count errors.

        Returns whether none is left (False: the send buffer is full).
        """
        fast = self.fast
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
                    logger.error(
                        "UDP reply to %r failed on %r: %s", peer, self._where, exc
                    )
                    count_error(self.send_errors, exc, self._where, peer)
                    replies.advance()
                elif repeated == index:
                    # Failed again: counted the first time.
                    self._worth_repeating(exc, peer, count=False)
                    replies.advance()
                elif not self._worth_repeating(exc, peer):
                    replies.advance()
                repeated = index
                continue
            self.sent += sent
            self.replied += sent
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
            count_error(self.send_errors, exc, self._where, peer)
        return exc.errno in PENDING_ICMP_ERRNOS
