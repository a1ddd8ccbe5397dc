"""UDPClient: request/response over a connected UDP socket, with retransmission.

No background task: while requests wait, one of the waiting tasks at a time
(the reader) receives from the socket and routes each reply to the request it
answers; when the reader gets its own reply, or gives up, it hands the role to
another waiting request.
"""

from __future__ import annotations

import enum
import errno
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, final

import attrs
import trio

from ._address import SocketAddress, check_address, check_payload, numeric_family
from ._backoff import Backoff, check_attempts
from ._errors import PeerUnreachable, RequestTimeout
from ._rng import new_rng
from ._socket import (
    TRANSIENT_ERRNOS,
    DatagramEndpoint,
    UDPSocket,
    _family_of_name,
    open_udp_socket,
)

if TYPE_CHECKING:
    import random

    from ._datagram import Datagram

__all__ = ["ClientStats", "Match", "OnUnreachable", "UDPClient", "open_udp_client"]

#: Extracts the id that pairs a request with its reply, from either's bytes
#: (e.g. ``lambda data: data[:2]`` for a DNS transaction id). Returning None,
#: or raising, marks a reply as unmatched.
Match = Callable[[bytes], Hashable]

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
            duplicate, unmatched), dropped.
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


@attrs.define(eq=False)
class _Waiter:
    key: tuple[Match, Hashable] | None
    reply: Datagram | None = None
    error: OSError | None = None
    event: trio.Event = attrs.field(factory=trio.Event)

    @property
    def done(self) -> bool:
        return self.reply is not None or self.error is not None

    def finish(
        self, reply: Datagram | None = None, error: OSError | None = None
    ) -> None:
        self.reply, self.error = reply, error
        self.event.set()


@final
class UDPClient(DatagramEndpoint):
    """Sends requests to one peer and waits for their replies, retransmitting.

    Made by :func:`open_udp_client`. Several tasks may call :meth:`request`
    at once: with a ``match`` function replies are routed by id; without
    one, requests take turns so that at most one is outstanding.

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
        self._waiters: dict[_Waiter, None] = {}
        self._by_key: dict[tuple[Match, Hashable], _Waiter] = {}
        self._reader: _Waiter | None = None
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

        Example::

            client.budget()  # 7.7 with the defaults: (1 + 2 + 4) * 1.1
        """
        return (backoff or self._backoff).worst_case(
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
            ValueError: ``match`` could not extract an id from ``data``.

        Example::

            async with trioudp.open_udp_client("127.0.0.1", 12345) as client:
                reply = await client.request(b"Hello, server!")
                print(reply.data)
        """
        check_payload(data, self._sock._max_payload)
        attempts = self._attempts if attempts is None else attempts
        timeouts = (backoff or self._backoff).timeouts(attempts, self._rng)
        match = match or self._match
        if match is None:
            # Unmatched requests take turns. The lock is taken without a
            # schedule point when free: the exchange passes one anyway.
            if self._turn.locked():
                await self._turn.acquire()
            else:
                self._turn.acquire_nowait()
            try:
                return await self._exchange(data, _Waiter(None), timeouts)
            finally:
                self._turn.release()
        request_id = _extract_id(match, bytes(data))
        if request_id is None:
            msg = f"match {match!r} found no id in the request {bytes(data[:32])!r}"
            raise ValueError(msg)
        key = (match, request_id)
        if key in self._by_key:
            msg = f"a request with id {request_id!r} is already waiting for its reply"
            raise trio.BusyResourceError(msg)
        return await self._exchange(data, _Waiter(key), timeouts)

    async def _exchange(
        self,
        data: bytes | bytearray | memoryview,
        waiter: _Waiter,
        timeouts: list[float],
    ) -> Datagram:
        self._waiters[waiter] = None
        if waiter.key is not None:
            self._by_key[waiter.key] = waiter
        start = trio.current_time()
        try:
            for attempt, timeout in enumerate(timeouts):
                deadline = trio.current_time() + timeout
                if attempt:
                    self._retransmitted += 1
                await self._send_request(data, waiter)
                with trio.move_on_at(deadline):
                    await self._wait(waiter)
                if waiter.reply is not None:
                    self._replies += 1
                    return waiter.reply
                if waiter.error is not None:
                    raise PeerUnreachable(self._peer, waiter.error)
            self._timeouts += 1
            raise RequestTimeout(self._peer, len(timeouts), trio.current_time() - start)
        finally:
            del self._waiters[waiter]
            if waiter.key is not None:
                del self._by_key[waiter.key]

    async def _send_request(
        self, data: bytes | bytearray | memoryview, waiter: _Waiter
    ) -> None:
        try:
            await self._sock._send_soon(data)
        except OSError as exc:
            if exc.errno not in _UNREACHABLE_ERRNOS:
                raise
            # The kernel reported an earlier ICMP error; this datagram was not sent.
            self._note_unreachable(exc)
            if waiter.error is not None:
                raise PeerUnreachable(self._peer, exc) from exc
        else:
            self._sent += 1

    async def _wait(self, waiter: _Waiter) -> None:
        while not waiter.done:
            if self._reader is not None:
                waiter.event = trio.Event()
                await waiter.event.wait()
                continue
            self._reader = waiter
            try:
                while not waiter.done:
                    if self._sock.is_fast:
                        await self._read_ready()
                        continue
                    try:
                        datagram = await self._sock.receive()
                    except OSError as exc:
                        self._receive_failed(exc)
                        continue
                    self._received += 1
                    self._route(datagram)
            finally:
                self._reader = None
                self._hand_over()

    async def _read_ready(self) -> None:
        """Route the replies queued (up to ``_READ_BATCH``), waiting until
        there is one: the real socket's fast path, one trip through the
        scheduler for all of them.

        It passes a schedule point before it looks: on loopback or a fast
        LAN the reply often arrives meanwhile, and the task then does not
        sleep at all (waking an idle CPU costs more than the round trip)."""
        await trio.lowlevel.checkpoint()
        if not self._route_queued():
            await self._sock._wait_readable()
            self._route_queued()

    def _route_queued(self) -> int:
        sock = self._sock
        now = trio.current_time()
        for routed in range(_READ_BATCH):
            try:
                datagram = sock._receive_nowait(now)
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
        for other in self._waiters:
            if not other.done:
                other.event.set()
                return

    def _note_unreachable(self, exc: OSError) -> None:
        self._unreachable += 1
        if self._on_unreachable is OnUnreachable.RAISE:
            for waiter in self._waiters:
                if not waiter.done:
                    waiter.finish(error=exc)

    def _route(self, datagram: Datagram) -> None:
        data = datagram.data
        for match in {key[0] for key in self._by_key}:
            waiter = self._by_key.get((match, _extract_id(match, data)))
            if waiter is not None and not waiter.done:
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
        """Close the client's socket (a checkpoint)."""
        await self._sock.aclose()

    def __repr__(self) -> str:
        return f"<trioudp.UDPClient to {self._peer!r}>"


def _extract_id(match: Match, data: bytes) -> Hashable:
    try:
        return match(data)
    except Exception:
        return None


@asynccontextmanager
async def open_udp_client(
    host: str,
    port: int,
    *,
    attempts: int = 3,
    backoff: Backoff | None = None,
    match: Match | None = None,
    on_unreachable: OnUnreachable | str = OnUnreachable.RAISE,
    family: int = 0,
    local_address: tuple[str, int] | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[UDPClient]:
    """Open a :class:`UDPClient` on a socket connected to ``(host, port)``.

    A connected socket only accepts datagrams from the peer, and the kernel
    reports ICMP "port unreachable" as an error instead of silence.

    Args:
        host, port: the peer; a name is resolved once, here.
        attempts: sends per request (1 = no retransmission).
        backoff: the retransmission schedule; default :class:`Backoff()`
            (1 s, doubling, +-10% jitter).
        match: default id extractor for requests; see :data:`Match`.
        on_unreachable: ``"raise"`` (default) or ``"retry"``; see
            :class:`OnUnreachable`.
        family: ``AF_INET`` or ``AF_INET6``; by default, the peer's.
        local_address: ``(host, port)`` to bind; default any, ephemeral.
        rng: where jitter comes from; pass ``random.Random(seed)`` for
            reproducible schedules. By default an unseeded generator, or,
            while a :class:`~trioudp.testing.VirtualNetwork` is installed,
            one derived from the network's seed.

    Example (the tutorial's client)::

        async with trioudp.open_udp_client("127.0.0.1", 12345) as client:
            reply = await client.request(b"Hello, server!")
            print(f"Received {reply.data.decode()} from server")
            await client.send(b"exit")
    """
    host, port = check_address((host, port))
    check_attempts(attempts)
    family = family or numeric_family(host) or await _family_of_name(host, port)
    local_host, local_port = local_address or (None, 0)
    async with open_udp_socket(local_host, local_port, family=family) as sock:
        await sock.connect((host, port))
        peer = sock.peer_address
        assert peer is not None
        yield UDPClient(
            sock,
            peer,
            attempts=attempts,
            backoff=backoff or Backoff(),
            match=match,
            on_unreachable=OnUnreachable(on_unreachable),
            rng=rng or new_rng(),
        )
