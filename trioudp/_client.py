"""UDPClient: request/response over a connected UDP socket, with retransmission.

No background task: while requests wait, one of the waiting tasks at a time
(the reader) receives from the socket, drains every queued reply and
reschedules the request each one answers; the others are parked. On a real
socket a request first passes its schedule point and looks at the queue
itself: with many requests in flight most find their reply there and never
park.

Timers: a parked request has none. Each waiting request's deadline goes into
one heap; the reader's wait on the socket has the earliest as its deadline,
and when it comes the reader ends those attempts (the request wakes,
retransmits or times out) and waits again. Trio's deadline heap sees one
entry per reader, not one per request.

Invariants:

- While any request is parked, some task holds or is about to take the
  reader role: whenever the reader stops waiting (its reply came, its attempt
  timed out, it was cancelled), it hands the role to a parked request,
  never itself (it is not parked), which holds the role from then (so that a
  request starting meanwhile parks) and reads or, if it is done by then,
  passes the role on the same way. Otherwise a reply that arrived would sit
  in the socket, and a parked request's deadline would pass unseen.
- A request fails with :class:`PeerUnreachable` at once, and only for an
  ICMP error reported after it sent a datagram. The kernel reports an error
  on the next call on the socket, so an error that a send reports (and that
  send did not go out) belongs to datagrams sent before it.
- A task that finishes the reader's request from outside the reader (a send
  that takes the ICMP error, an unmatched request that routes the queue as
  it starts) stops the reader's wait on the socket, which would not wake it
  again: the request then ends at once, not at its timer.
- What the peer controls never raises out of the routing: ``match`` is
  called on replies only in ``_matching.waiter_for_untrusted``, which raises only
  ``BadReply``, which :meth:`UDPClient._route` catches and counts.
"""

from __future__ import annotations

import enum
import errno
from typing import TYPE_CHECKING, final

import attrs
import trio

from ._address import SocketAddress, check_payload
from ._backoff import Backoff
from ._checks import check_attempts
from ._errors import PeerUnreachable, RequestTimeout
from ._kernel import TRANSIENT_ERRNOS
from ._matching import (
    BadReply,
    Deadlines,
    Match,
    Waiter,
    request_key,
    waiter_for_untrusted,
)
from ._socket import DatagramEndpoint, UDPSocket

if TYPE_CHECKING:
    import random
    from collections.abc import Hashable

    from ._datagram import Datagram

__all__ = ["ClientStats", "OnUnreachable", "UDPClient"]


_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNRESET}
)


#: Most replies a client routes per trip through the scheduler.
_READ_BATCH = 64


class OnUnreachable(enum.Enum):
    """What a request does when the peer's host reports it unreachable.

    Example:
        >>> OnUnreachable("retry")
        <OnUnreachable.RETRY: 'retry'>
    """

    #: Raise :class:`PeerUnreachable` at once (the default).
    RAISE = "raise"
    #: Count it and keep retransmitting on schedule (for servers that may
    #: come up during the request).
    RETRY = "retry"


@attrs.frozen(kw_only=True)
class ClientStats:
    """A snapshot of a :class:`UDPClient`'s counters.

    Attributes:
        sent: datagrams sent, retransmissions included.
        retransmitted: datagrams sent again after a retransmission timer fired.
        received: datagrams received.
        replies: requests that got their reply.
        timeouts: requests that ran out of attempts.
        discarded: datagrams that answered no waiting request (late,
            duplicate, unmatched, or ones ``match`` failed on), dropped.
        unreachable: ICMP unreachable reports seen.

    Example:
        >>> ClientStats().timeouts
        0
    """

    sent: int = 0
    retransmitted: int = 0
    received: int = 0
    replies: int = 0
    timeouts: int = 0
    discarded: int = 0
    unreachable: int = 0


@final
class UDPClient(DatagramEndpoint):
    """Sends requests to one peer and waits for their replies, retransmitting.

    Made by :func:`open_udp_client`. Several tasks may call :meth:`request`
    at once: with a ``match`` function replies are routed by id; without
    one, requests take turns so that at most one is outstanding.

    Resource handling:
        A :class:`trio.abc.AsyncResource`: :meth:`close`, :meth:`aclose` and
        the end of :func:`open_udp_client`'s ``async with`` block close its
        socket; then :meth:`request` raises :class:`trio.ClosedResourceError`.

    Example of a DNS-style matched client (the id is the first two bytes)::

        async with trioudp.open_udp_client("127.0.0.1", 5353,
                                           match=lambda data: data[:2]) as client:
            async with trio.open_nursery() as nursery:
                for query in queries:
                    nursery.start_soon(client.request, query)
    """

    def __init__(
        self,
        sock: UDPSocket,
        peer: SocketAddress,
        *,
        attempts: int,
        backoff: Backoff,
        match: Match | None,
        on_unreachable: OnUnreachable,
        rng: random.Random,
    ) -> None:
        self._sock = sock
        self._peer = peer
        self._attempts = attempts
        self._backoff = backoff
        self._match = match
        self._on_unreachable = on_unreachable
        self._rng = rng
        self._turn = trio.Lock()
        self._waiters: dict[Waiter, None] = {}
        self._by_key: dict[tuple[Match, Hashable], Waiter] = {}
        # How many waiting requests use each match function (usually one).
        self._matches: dict[Match, int] = {}
        self._reader: Waiter | None = None
        # The reader's wait on the socket: its deadline is the earliest of
        # the waiting requests'; cancelled when another task fails the
        # reader's request (see _note_unreachable).
        self._reading: trio.CancelScope | None = None
        # Requests waiting for the reader to hand them their reply.
        self._parked: dict[Waiter, None] = {}
        self._deadlines = Deadlines()
        self._sent = 0
        self._retransmitted = 0
        self._received = 0
        self._replies = 0
        self._timeouts = 0
        self._discarded = 0
        self._unreachable = 0

    @property
    def peer(self) -> SocketAddress:
        """The peer's address, as connected."""
        return self._peer

    @property
    def socket(self) -> UDPSocket:
        """The underlying connected :class:`UDPSocket`."""
        return self._sock

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters; see :class:`ClientStats`."""
        return ClientStats(
            sent=self._sent,
            retransmitted=self._retransmitted,
            received=self._received,
            replies=self._replies,
            timeouts=self._timeouts,
            discarded=self._discarded,
            unreachable=self._unreachable,
        )

    def budget(
        self, attempts: int | None = None, backoff: Backoff | None = None
    ) -> float:
        """The longest a :meth:`request` with these settings waits, in seconds.

        It takes O(log attempts) steps.

        Example::

            client.budget()  # 7.7 with the defaults: (1 + 2 + 4) * 1.1
        """
        return _check_backoff(backoff or self._backoff).worst_case(
            self._attempts if attempts is None else attempts
        )

    # ---- plain datagrams -------------------------------------------------

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send one datagram to the peer, expecting nothing back.

        Example::

            await client.send(b"exit")
        """
        await self._sock.send(data)
        self._sent += 1

    async def receive(self) -> Datagram:
        """Receive the next datagram from the peer (do not mix with
        :meth:`request`, whose replies it would take).
        """
        datagram = await self._sock.receive()
        self._received += 1
        return datagram

    # ---- requests --------------------------------------------------------

    async def request(
        self,
        data: bytes | bytearray | memoryview,
        *,
        attempts: int | None = None,
        backoff: Backoff | None = None,
        match: Match | None = None,
    ) -> Datagram:
        """Send ``data`` and return the reply, retransmitting on schedule.

        The datagram is sent up to ``attempts`` times; after each send the
        request waits per ``backoff`` for a reply. The longest it can take is
        :meth:`budget`. A reply to any of the transmissions is accepted.
        For an overall deadline, wrap the call in :func:`trio.fail_after`.
        The schedule is computed as it is used: a huge ``attempts`` costs
        nothing up front.

        Without a ``match`` function replies cannot be told apart: requests
        take turns, and datagrams that arrived before a request is sent
        (late replies to an earlier one; up to 64 of them) are discarded and
        counted. A reply to an earlier request that arrives *after* this one
        is sent is still taken as this one's reply: when that matters, give
        requests ids and pass ``match``.

        Args:
            data: the request payload.
            attempts: overrides the client's setting for this request.
            backoff: overrides the client's setting for this request.
            match: overrides the client's ``match`` for this request.

        Raises:
            RequestTimeout: no reply after every attempt (also a TimeoutError).
            PeerUnreachable: the peer's host reported nothing listens there
                (unless the client was opened with ``on_unreachable="retry"``).
            trio.BusyResourceError: a request with the same id is outstanding.
            trio.ClosedResourceError: the client is closed.
            ValueError: ``match`` found no id in ``data`` (returned None or
                raised), or ``attempts`` is not an int >= 1.
            TypeError: ``match`` returned an unhashable id for ``data``, or
                ``backoff`` is not a :class:`Backoff`.

        Example::

            async with trioudp.open_udp_client("127.0.0.1", 12345) as client:
                reply = await client.request(b"Hello, server!")
                print(reply.data)
        """
        if self._sock.closed:
            msg = "this UDPClient is closed"
            raise trio.ClosedResourceError(msg)
        check_payload(data, self._sock._outbox.max_payload)
        if attempts is None:
            attempts = self._attempts
        else:
            check_attempts(attempts)
        backoff = _check_backoff(backoff) if backoff else self._backoff
        match = match or self._match
        if match is None:
            # Unmatched requests take turns. The lock is taken without a
            # schedule point when free: the exchange passes one anyway.
            if self._turn.locked():
                await self._turn.acquire()
            else:
                self._turn.acquire_nowait()
            try:
                await self._drop_queued()
                return await self._exchange(data, Waiter(None), attempts, backoff)
            finally:
                self._turn.release()
        key = request_key(match, data)
        if key in self._by_key:
            msg = f"a request with id {key[1]!r} is already waiting for its reply"
            raise trio.BusyResourceError(msg)
        return await self._exchange(data, Waiter(key), attempts, backoff)

    async def _drop_queued(self) -> None:
        """Route what is queued before an unmatched request is sent: replies
        for matched requests reach them, the rest (which cannot answer a
        request not yet sent) is discarded and counted, as is a pending ICMP
        error. At most ``_READ_BATCH`` datagrams."""
        sock = self._sock
        try:
            if sock.is_fast:
                self._route_queued()
                return
            for _ in range(_READ_BATCH):
                if not sock.trio_socket.is_readable():
                    return
                await self._receive_one()
        finally:
            self._wake_reader_if_done()

    async def _receive_one(self) -> None:
        """Without the fast path: receive one datagram and route it (or
        count the per-datagram error the receive reported)."""
        try:
            datagram = await self._sock.receive()
        except OSError as exc:
            self._receive_failed(exc)
            return
        self._received += 1
        self._route(datagram)

    async def _exchange(
        self,
        data: bytes | bytearray | memoryview,
        waiter: Waiter,
        attempts: int,
        backoff: Backoff,
    ) -> Datagram:
        key = waiter.key
        self._waiters[waiter] = None
        if key is not None:
            self._by_key[key] = waiter
            self._matches[key[0]] = self._matches.get(key[0], 0) + 1
        rng = self._rng
        start = now = trio.current_time()
        attempt = 0
        try:
            # The schedule is drawn as it is used (see Backoff.waits).
            while attempt < attempts:
                deadline = now + backoff.wait(attempt, rng)
                if attempt:
                    self._retransmitted += 1
                attempt += 1
                await self._send_request(data, waiter)
                await self._wait_until(waiter, deadline)
                if waiter.reply is not None:
                    self._replies += 1
                    return waiter.reply
                if waiter.error is not None:
                    raise PeerUnreachable(self._peer, waiter.error)
                now = trio.current_time()
            self._timeouts += 1
            raise RequestTimeout(self._peer, attempts, now - start)
        finally:
            del self._waiters[waiter]
            if key is not None:
                del self._by_key[key]
                matches, match = self._matches, key[0]
                remaining = matches[match] - 1
                if remaining:
                    matches[match] = remaining
                else:
                    del matches[match]

    async def _send_request(
        self, data: bytes | bytearray | memoryview, waiter: Waiter
    ) -> None:
        for _ in range(2):
            try:
                await self._sock._outbox.send_soon(data)
            except OSError as exc:
                if exc.errno not in _UNREACHABLE_ERRNOS:
                    raise
                # The kernel reported an ICMP error about a datagram sent
                # earlier, and did not send this one: count it, fail the
                # requests it may be about, and send again (once).
                self._note_unreachable(exc)
                if waiter.error is not None:
                    raise PeerUnreachable(self._peer, waiter.error) from exc
                error = exc
            else:
                self._sent += 1
                waiter.sent = True
                return
        if self._on_unreachable is OnUnreachable.RAISE:
            raise PeerUnreachable(self._peer, error) from error

    async def _wait_until(self, waiter: Waiter, deadline: float) -> None:
        """Wait for ``waiter``'s reply (or error) until ``deadline``.

        On a real socket with no reader, it passes a schedule point and
        looks before it sleeps: on loopback or a fast LAN the reply often
        arrives meanwhile, and then the request neither sleeps (waking an
        idle CPU costs more than the round trip) nor needs a timer.

        Otherwise its deadline joins the client's timers (see
        :class:`~trioudp._matching.Deadlines`): a parked request has no timer of its own, the
        reader's one wait on the socket ends at the earliest deadline."""
        if self._reader is None and self._sock.is_fast:
            # The send just checked for cancellation (send_soon): this is
            # the rest of the request's checkpoint.
            await trio.lowlevel.cancel_shielded_checkpoint()
            if self._reader is None:
                if not waiter.done:
                    self._route_queued(waiter, drain=False)
                if waiter.done:
                    return
        waiter.deadline = deadline
        self._watch(waiter, deadline)
        try:
            while not (waiter.done or waiter.deadline is None):
                reader = self._reader
                if reader is None or reader is waiter:
                    await self._read_for(waiter)
                else:
                    await self._park(waiter)
        finally:
            waiter.deadline = None
            if self._reader is None or self._reader is waiter:
                # However this request stops waiting (its reply, its timer,
                # a cancellation), no one reads now: hand the role on.
                self._hand_over()

    def _watch(self, waiter: Waiter, deadline: float) -> None:
        """Add ``waiter``'s deadline to the timers; pull the reader's wait in
        if it ends later."""
        self._deadlines.add(waiter, deadline, len(self._waiters))
        reading = self._reading
        if reading is not None and deadline < reading.deadline:
            reading.deadline = deadline

    async def _park(self, waiter: Waiter) -> None:
        """Wait until the reader routes a reply to ``waiter``, ends its
        attempt, or hands it the reader role."""
        waiter.task = trio.lowlevel.current_task()
        parked = self._parked
        parked[waiter] = None
        try:
            await trio.lowlevel.wait_task_rescheduled(waiter.abort)
        finally:
            del parked[waiter]

    async def _read_for(self, waiter: Waiter) -> None:
        """Be the reader until ``waiter`` is done or its attempt is over (or
        the wait is cancelled), ending the other requests' attempts as their
        deadlines come."""
        self._reader = waiter
        try:
            while not waiter.done:
                earliest = self._deadlines.expire(trio.current_time())
                if waiter.deadline is None:
                    return
                with trio.CancelScope(deadline=earliest) as self._reading:
                    while not waiter.done:
                        if self._sock.is_fast:
                            await self._sock._inbox.wait_readable()
                            if not self._route_queued(waiter):
                                # Woken with nothing to read: errors queued
                                # under IP_RECVERR, which keep the socket
                                # readable until taken.
                                self._sock._inbox.drain_error_queue()
                            continue
                        await self._receive_one()
        finally:
            self._reader = None
            self._reading = None

    def _route_queued(self, waiter: Waiter | None = None, *, drain: bool = True) -> int:
        """Route the replies queued on the real socket (up to ``_READ_BATCH``);
        return how many. With ``waiter``, stop once it is done if no other
        request waits, or without ``drain`` (one system call fewer per
        request: a request that is not parked routes the queue itself when
        it runs, and a parked one has a reader)."""
        receive_nowait = self._sock._inbox.receive_nowait
        now = trio.current_time()
        waiters = self._waiters
        for routed in range(_READ_BATCH):
            if waiter is not None and waiter.done and (not drain or len(waiters) == 1):
                return routed
            try:
                datagram = receive_nowait(now)
            except OSError as exc:
                self._receive_failed(exc)
                continue
            if datagram is None:
                return routed
            self._received += 1
            self._route(datagram)
        return _READ_BATCH

    def _receive_failed(self, exc: OSError) -> None:
        if exc.errno not in TRANSIENT_ERRNOS:
            raise exc
        if exc.errno in _UNREACHABLE_ERRNOS:
            self._note_unreachable(exc)

    def _hand_over(self) -> None:
        """Make a parked request the reader and wake it (the reader itself
        is never parked, so it cannot hand the role to itself); no reader if
        none is parked. The one parked last: its reply is the last to come,
        so the role moves least often. It holds the role from now on, so
        requests that start meanwhile park instead of reading too."""
        self._reader = None
        for other in reversed(self._parked):
            if other.task is not None:
                self._reader = other
                other.wake()
                return

    def _note_unreachable(self, exc: OSError) -> None:
        self._unreachable += 1
        if self._on_unreachable is OnUnreachable.RAISE:
            for waiter in self._waiters:
                if waiter.sent and not waiter.done:
                    waiter.finish(error=exc)
            self._wake_reader_if_done()

    def _wake_reader_if_done(self) -> None:
        """Stop the reader's wait on the socket if another task finished its
        request (a send took the ICMP error, or an unmatched request routed
        its reply as it cleared the queue): the socket would not wake it."""
        reader, reading = self._reader, self._reading
        if reader is not None and reader.done and reading is not None:
            reading.cancel()

    def _route(self, datagram: Datagram) -> None:
        if self._matches:
            try:
                waiter = waiter_for_untrusted(
                    self._matches, self._by_key, datagram.data
                )
            except BadReply:
                self._discarded += 1
                return
            if waiter is not None:
                waiter.finish(reply=datagram)
                return
        for waiter in self._waiters:
            if waiter.key is None and not waiter.done:
                waiter.finish(reply=datagram)
                return
        self._discarded += 1

    # ---- lifetime --------------------------------------------------------

    def close(self) -> None:
        """Close the client's socket."""
        self._sock.close()

    async def aclose(self) -> None:
        """Close the client's socket: a checkpoint, but the socket is closed
        even if it raises :exc:`trio.Cancelled` (see :func:`trio.aclose_forcefully`)."""
        await self._sock.aclose()

    def __repr__(self) -> str:
        return f"<trioudp.UDPClient to {self._peer!r}>"


def _check_backoff(backoff: object) -> Backoff:
    if not isinstance(backoff, Backoff):
        msg = f"backoff must be a trioudp.Backoff, not {backoff!r}"
        raise TypeError(msg)
    return backoff
