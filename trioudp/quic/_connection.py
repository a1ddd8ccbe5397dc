"""QUICConnection: one QUIC connection, driven on Trio's clock.

Shape::

    the connection's task (a server's, or open_quic_connection's)
    └── nursery
        ├── the driver (``_drive``): sleeps until the engine's timer
        │   (``get_timer()``, on Trio's clock, so MockClock works) or a kick,
        │   fires the timer, sends what the engine has, and ends when the
        │   engine has terminated
        └── the handler or the client's code, using streams and datagrams

Datagrams reach the engine synchronously (``_datagram_received``), from the
server's intake or the client's receive loop, and the events they cause are
handed to the streams at once. Anything that gives the engine something to
send kicks the driver, which sends it at its next turn: many changes made in
one scheduling round leave in one batch of packets.

Invariants:

* The engine is only ever touched synchronously: between two awaits of one
  task, never across one, so its state is consistent whenever a task runs.
  The driver takes a whole batch of datagrams from the engine before its
  first await and only sends afterwards.
* Once the close has begun (``_failure`` is set) no stream calls into the
  engine's streams; waits raise ``_failure``.
* Every task that waits on the connection (a stream's reader or writer, an
  acceptor, a datagram receiver) is woken when the connection fails, so no
  wait outlives the connection.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from typing import TYPE_CHECKING, final

import trio
from aioquic.quic import events

from .. import DatagramTooLarge
from ._engine import stream_is_local
from ._errors import ConnectionClosed, QUICError
from ._routing import normalize_address
from ._stream import QUICStream

if TYPE_CHECKING:
    from ._engine import Engine
    from ._routing import Router, Transport

__all__ = ["QUICConnection"]

logger = logging.getLogger("trioudp")

#: Transport error code for "internal error" (RFC 9000, section 20.1).
INTERNAL_ERROR = 0x1
#: Seconds after a timer the engine left unchanged that it fires again.
TIMER_RESOLUTION = 1e-6
#: Seconds a cancelled connection may take to send its CONNECTION_CLOSE.
CLOSE_SEND_SECONDS = 1.0


@final
class QUICConnection:
    """One established QUIC connection: streams, datagrams, and its close.

    Handed to a :func:`serve_quic` handler, or yielded by
    :func:`open_quic_connection`; never made directly.

    Resource handling:
        The connection belongs to the task that received it: a server
        handler's connection is closed when the handler returns (lingering
        until the peer has acknowledged what the streams sent) or raises
        (at once, with a transport "internal error"); a client's when its
        ``async with`` block ends. :meth:`aclose` closes it earlier.

    Error handling:
        When the connection ends, every wait on it and on its streams
        raises: :class:`trio.ClosedResourceError` if you closed it,
        :class:`ConnectionClosed` otherwise (peer close, idle timeout,
        failed handshake, stateless reset).

    Example::

        async def handler(connection: trioudp.quic.QUICConnection) -> None:
            print(connection.peer_address, connection.alpn_protocol)
            stream = await connection.accept_stream()
            async with stream:
                await stream.send_all(await stream.receive_some())
    """

    def __init__(
        self,
        engine: Engine,
        transport: Transport,
        *,
        send_buffer: int,
        datagram_queue: int,
        reset_code: int,
        router: Router[QUICConnection] | None = None,
    ) -> None:
        self._engine = engine
        self._transport = transport
        self._router = router
        self._is_client = bool(engine.configuration.is_client)
        self._send_buffer = send_buffer
        self._datagram_queue = datagram_queue
        self._reset_code = reset_code
        self._streams: dict[int, QUICStream] = {}
        self._done: set[int] = set()
        self._incoming: deque[QUICStream] = deque()
        self._acceptors = trio.lowlevel.ParkingLot()
        self._datagrams: deque[bytes] = deque()
        self._datagram_readers = trio.lowlevel.ParkingLot()
        self._datagram_writers = trio.lowlevel.ParkingLot()
        self._room_waiters: set[QUICStream] = set()
        self._stream_credit = trio.lowlevel.ParkingLot()
        self._acknowledged = trio.lowlevel.ParkingLot()
        self._handshake_over = trio.Event()
        self._ended = trio.Event()
        self._established = False
        self._failure: BaseException | None = None
        self._alpn: str | None = None
        self._kicked = False
        self._driver = trio.lowlevel.ParkingLot()
        self._datagrams_dropped = 0
        self._send_errors = 0

    # ---- what a stream needs (StreamOwner) -------------------------------

    @property
    def engine(self) -> Engine:
        """The aioquic ``QuicConnection`` underneath (a subclass), to read its
        state; calling its methods goes around the streams' accounting."""
        return self._engine

    @property
    def send_buffer(self) -> int:
        """Bytes a stream may have unacknowledged before ``send_all`` waits."""
        return self._send_buffer

    @property
    def reset_code(self) -> int:
        """The application error code of the resets trioudp makes itself."""
        return self._reset_code

    def _kick(self) -> None:
        """Have the driver send what the engine has (at its next turn)."""
        self._kicked = True
        self._driver.unpark_all()

    def _ended_with(self) -> BaseException | None:
        """The exception waits raise since the connection ended, else None."""
        return self._failure

    def _stream_done(self, stream: QUICStream) -> None:
        """The application closed ``stream``: give its credit back."""
        self._engine.release(stream.stream_id)
        self._done.add(stream.stream_id)
        self._room_waiters.discard(stream)
        self._kick()

    def _room_wanted(self, stream: QUICStream) -> None:
        """Wake ``stream``'s writer when acknowledgements arrive."""
        self._room_waiters.add(stream)

    # ---- state -----------------------------------------------------------

    @property
    def is_client(self) -> bool:
        """Whether this end opened the connection."""
        return self._is_client

    @property
    def alpn_protocol(self) -> str | None:
        """The application protocol the handshake agreed on (ALPN), if any."""
        return self._alpn

    @property
    def peer_address(self) -> tuple[str, int] | None:
        """Where the peer is now (``(host, port)``; it changes if the peer
        migrates)."""
        address = self._engine.peer_address()
        return None if address is None else normalize_address(address)

    @property
    def closed(self) -> bool:
        """Whether the connection has ended or begun to (by either side)."""
        return self._failure is not None

    @property
    def datagrams_dropped(self) -> int:
        """Received datagrams (RFC 9221) dropped because ``datagram_queue``
        were already waiting for :meth:`receive_datagram`."""
        return self._datagrams_dropped

    def __repr__(self) -> str:
        role = "client" if self._is_client else "server"
        state = " closed" if self._failure is not None else ""
        return f"<trioudp.quic.QUICConnection {role} peer={self.peer_address!r}{state}>"

    def _check_open(self) -> None:
        if self._failure is not None:
            raise self._failure

    # ---- streams ---------------------------------------------------------

    async def open_stream(self, *, unidirectional: bool = False) -> QUICStream:
        """Open a new stream (waiting, if need be, until the peer's stream
        limit lets one more open).

        The peer learns of the stream when the first data (or FIN) is sent.

        Raises:
            ConnectionClosed: the connection ended.
            trio.ClosedResourceError: you closed it.

        Example::

            async with await connection.open_stream() as stream:
                await stream.send_all(b"ping")
                await stream.send_eof()
                print(await stream.receive_some())
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        engine = self._engine
        while True:
            self._check_open()
            if engine.may_open_stream(unidirectional):
                break
            await self._stream_credit.park()
            waited = True
        stream_id = engine.get_next_available_stream_id(
            is_unidirectional=unidirectional
        )
        engine.send_stream_data(stream_id, b"")  # makes the stream: the id is taken
        stream = QUICStream(self, stream_id, is_client=self._is_client)
        self._streams[stream_id] = stream
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return stream

    async def accept_stream(self) -> QUICStream:
        """Wait for the next stream the peer opens.

        Streams that arrived before the connection ended are still handed
        out; then the connection's end is raised.

        Raises:
            ConnectionClosed: the connection ended.
            trio.ClosedResourceError: you closed it.

        Example::

            while True:
                stream = await connection.accept_stream()
                nursery.start_soon(serve_stream, stream)
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while not self._incoming:
            self._check_open()
            await self._acceptors.park()
            waited = True
        stream = self._incoming.popleft()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return stream

    def _stream_for(self, stream_id: int) -> QUICStream | None:
        stream = self._streams.get(stream_id)
        if stream is None and not stream_is_local(stream_id, is_client=self._is_client):
            stream = QUICStream(self, stream_id, is_client=self._is_client)
            self._streams[stream_id] = stream
            self._engine.hold(stream_id)
            self._incoming.append(stream)
            self._acceptors.unpark()
        return stream

    # ---- datagrams (RFC 9221) --------------------------------------------

    async def send_datagram(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` as one unreliable QUIC datagram (RFC 9221); waits
        while ``datagram_queue`` datagrams are still queued to be sent.

        Both ends must enable datagrams: ``max_datagram_frame_size`` in
        their aioquic ``QuicConfiguration``.

        Raises:
            DatagramTooLarge: ``data`` does not fit in one packet to this
                peer (``limit`` is what does).
            QUICError: the peer does not take datagrams.
            ConnectionClosed: the connection ended.

        Example::

            await connection.send_datagram(b"position 12,40")
        """
        payload = bytes(data)
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while True:
            self._check_open()
            limit = self._engine.max_datagram_payload()
            if limit is None:
                msg = (
                    "the peer does not take QUIC datagrams (RFC 9221); both ends"
                    " need max_datagram_frame_size in their QuicConfiguration"
                )
                raise QUICError(msg)
            if len(payload) > limit:
                raise DatagramTooLarge(len(payload), limit)
            if self._engine.datagrams_pending() < self._datagram_queue:
                break
            await self._datagram_writers.park()
            waited = True
        self._engine.send_datagram_frame(payload)
        self._kick()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def receive_datagram(self) -> bytes:
        """Wait for the next QUIC datagram (RFC 9221) from the peer.

        At most ``datagram_queue`` wait here; more are dropped and counted
        (:attr:`datagrams_dropped`): they are unreliable anyway, and a peer
        must not make memory grow.

        Raises:
            ConnectionClosed: the connection ended (datagrams already
                received are returned first).

        Example::

            data = await connection.receive_datagram()
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while not self._datagrams:
            self._check_open()
            await self._datagram_readers.park()
            waited = True
        data = self._datagrams.popleft()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return data

    # ---- closing ---------------------------------------------------------

    async def aclose(self, error_code: int = 0, reason: str = "") -> None:
        """Close the connection with an application ``error_code``.

        With error code 0 (no error) it first waits until the peer has
        acknowledged what the streams sent (as a TCP close lingers); any
        other code closes at once. Cancelled, it closes at once. The
        connection then answers the peer's late packets for three probe
        timeouts (RFC 9000, section 10.2) in its own task. Idempotent.

        Example::

            await connection.aclose(0x100, "going away")
        """
        if self._failure is None:
            try:
                if error_code == 0:
                    while self._failure is None and self._engine.unacknowledged():
                        await self._acknowledged.park()
            finally:
                self._close_here(error_code, reason)
        await trio.lowlevel.checkpoint()

    def _close_here(
        self, error_code: int, reason: str, frame_type: int | None = None
    ) -> None:
        if self._failure is None:
            self._fail(trio.ClosedResourceError("this QUIC connection was closed"))
            self._engine.close(
                error_code=error_code, frame_type=frame_type, reason_phrase=reason
            )
            self._kick()

    def _fail(self, failure: BaseException) -> None:
        self._failure = failure
        self._handshake_over.set()
        for stream in self._streams.values():
            stream._wake()
        for lot in (
            self._acceptors,
            self._datagram_readers,
            self._datagram_writers,
            self._stream_credit,
            self._acknowledged,
        ):
            lot.unpark_all()

    def _end(self, failure: BaseException | None = None) -> None:
        """The engine is done: nothing more will be sent or received."""
        if self._failure is None:
            self._fail(
                failure
                or ConnectionClosed(
                    INTERNAL_ERROR, "ended", application=False, by_peer=False
                )
            )
        self._ended.set()
        self._driver.unpark_all()

    # ---- the engine's input ----------------------------------------------

    def _datagram_received(
        self, data: bytes, peer: tuple[str, int], now: float
    ) -> None:
        """Feed a datagram from ``peer`` to the engine and hand its events on."""
        if self._ended.is_set():
            return
        engine = self._engine
        if self._is_client and engine.is_stateless_reset(data):
            self._end(
                ConnectionClosed(0, "stateless reset", application=False, by_peer=True)
            )
            return
        router = self._router
        if router is not None and not engine.path_validated(peer):
            router.amplification.on_receive(peer, len(data))
        try:
            engine.receive_datagram(data, peer, now)
        except Exception:  # aioquic failed on the peer's input: a bug of its own
            logger.exception("QUIC engine failed on a datagram from %r", peer)
            self._close_here(INTERNAL_ERROR, "internal error", frame_type=0)
        self._after_input()

    def _after_input(self) -> None:
        self._process_events()
        if self._room_waiters:
            waiters = self._room_waiters
            self._room_waiters = set()
            for stream in waiters:
                stream._writers.unpark_all()
        self._stream_credit.unpark_all()
        self._acknowledged.unpark_all()
        self._datagram_writers.unpark_all()
        self._kick()

    def _process_events(self) -> None:
        engine = self._engine
        while (event := engine.next_event()) is not None:
            kind = type(event)
            if kind is events.StreamDataReceived:
                assert isinstance(event, events.StreamDataReceived)
                stream = self._stream_for(event.stream_id)
                if stream is not None:
                    stream._on_data(event.data, event.end_stream)
            elif kind is events.DatagramFrameReceived:
                assert isinstance(event, events.DatagramFrameReceived)
                if len(self._datagrams) >= self._datagram_queue:
                    self._datagrams.popleft()
                    self._datagrams_dropped += 1
                self._datagrams.append(event.data)
                self._datagram_readers.unpark()
            elif kind is events.StreamReset:
                assert isinstance(event, events.StreamReset)
                stream = self._stream_for(event.stream_id)
                if stream is not None:
                    stream._on_reset(event.error_code)
            elif kind is events.StopSendingReceived:
                assert isinstance(event, events.StopSendingReceived)
                stream = self._stream_for(event.stream_id)
                if stream is not None:
                    stream._on_stop_sending(event.error_code)
            elif kind is events.HandshakeCompleted:
                assert isinstance(event, events.HandshakeCompleted)
                self._alpn = event.alpn_protocol
                self._established = True
                self._handshake_over.set()
            elif kind is events.ProtocolNegotiated:
                assert isinstance(event, events.ProtocolNegotiated)
                self._alpn = event.alpn_protocol
            elif kind is events.ConnectionIdIssued:
                assert isinstance(event, events.ConnectionIdIssued)
                if self._router is not None:
                    self._router.cid_issued(event.connection_id, self)
            elif kind is events.ConnectionIdRetired:
                assert isinstance(event, events.ConnectionIdRetired)
                if self._router is not None:
                    self._router.cid_retired(event.connection_id)
            elif kind is events.ConnectionTerminated:
                assert isinstance(event, events.ConnectionTerminated)
                self._end(self._closed_error(event))
        if self._failure is None:
            close = engine.close_started()
            if close is not None:
                self._fail(self._closed_error(close))

    def _closed_error(self, event: events.ConnectionTerminated) -> ConnectionClosed:
        return ConnectionClosed(
            event.error_code,
            event.reason_phrase,
            application=event.frame_type is None,
            by_peer=self._engine.closed_by_peer(),
        )

    # ---- the driver ------------------------------------------------------

    async def _drive(self) -> None:
        """Fire the engine's timers and send its datagrams until it terminates.

        Cancelled, it closes the connection at once: it sends the
        CONNECTION_CLOSE (taking at most ``CLOSE_SEND_SECONDS``) and ends.
        """
        engine = self._engine
        handled_at = -math.inf
        try:
            while not self._ended.is_set():
                timer = engine.get_timer()
                if timer is not None and timer <= handled_at:
                    # aioquic can leave its loss timer at the very instant it
                    # just handled (its loss check rounds the other way); on
                    # a clock that stands still, as MockClock's does, firing
                    # it again would spin forever. A microsecond later it
                    # declares the packet lost.
                    timer = handled_at + TIMER_RESOLUTION
                if not self._kicked:
                    with trio.move_on_at(math.inf if timer is None else timer):
                        await self._driver.park()
                self._kicked = False
                if self._ended.is_set():
                    break
                now = trio.current_time()
                if timer is not None and now >= timer:
                    handled_at = now
                    try:
                        engine.handle_timer(now)
                    except Exception:
                        logger.exception("QUIC engine failed on its timer")
                        self._end()
                        break
                    self._after_input()
                    self._kicked = False
                await self._transmit(now)
                self._sweep()
        finally:
            if not self._ended.is_set():
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLOSE_SEND_SECONDS
                    self._close_here(0, "")
                    await self._transmit(trio.current_time())
                self._end()

    async def _transmit(self, now: float) -> None:
        try:
            datagrams = self._engine.datagrams_to_send(now=now)
        except Exception:
            logger.exception("QUIC engine failed to build packets")
            self._end()
            return
        router = self._router
        for data, address in datagrams:
            if (
                router is not None
                and not self._engine.path_validated(address)
                and not router.amplification.may_send(address, len(data))
            ):
                # aioquic keeps this limit itself, but 1.3 was measured past
                # it (3.1x): the datagram counts as lost, and is resent
                # once the peer has sent more or proved its address.
                router.withheld()
                continue
            try:
                await self._transport.send_to(data, address)
            except trio.ClosedResourceError:
                self._end()  # the socket closed under the connection
                return
            except OSError:
                # One datagram lost (ICMP unreachable, full buffer): QUIC
                # recovers it like any loss.
                self._send_errors += 1

    def _sweep(self) -> None:
        """Forget streams the application closed and aioquic discarded."""
        if not self._done:
            return
        engine = self._engine
        for stream_id in [s for s in self._done if not engine.stream_exists(s)]:
            self._done.discard(stream_id)
            del self._streams[stream_id]

    async def _wait_handshake(self) -> bool:
        """Wait until the handshake completed (True) or failed (False)."""
        await self._handshake_over.wait()
        return self._established and self._failure is None

    async def _send_close_now(self) -> None:
        """Close at once and send the CONNECTION_CLOSE before returning (for a
        connection whose task is being cancelled)."""
        self._close_here(0, "")
        if not self._ended.is_set():
            await self._transmit(trio.current_time())
            self._end()
