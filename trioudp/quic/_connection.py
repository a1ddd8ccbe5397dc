"""QUICConnection: one QUIC connection, driven on Trio's clock.

Shape::

    the connection's task (a server's, or open_quic_connection's)
    └── nursery
        ├── the driver (``_drive``): sleeps until the engine's timer
        │   (``get_timer()``, on Trio's clock, so MockClock works) or a kick,
        │   fires the timer, sends what the engine has, and ends when the
        │   engine has terminated
        └── the handler or the client's code, using streams and datagrams

Datagrams reach the engine synchronously (``_feed``), from the server's
intake or the client's receive loop; the events they cause go to the
streams (``_deliver``), or to a protocol layer (``receive_event``, see
``_events``); how and when datagrams leave is ``_sending``'s.

Invariants:

* The engine is only ever touched synchronously: between two awaits of one
  task, never across one, so its state is consistent whenever a task runs.
* Once the close has begun (``_failure`` is set) no stream calls into the
  engine's streams; waits raise ``_failure``.
* Every task that waits on the connection (a stream's reader or writer, an
  acceptor, a datagram receiver) is woken when the connection fails, so no
  wait outlives the connection.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING, final

import trio
from aioquic.quic import events

from .. import DatagramTooLarge
from ._errors import ConnectionClosed, QUICError
from ._events import STREAM_EVENTS, HeldEvents, StreamTable
from ._routing import normalize_address
from ._sending import Sender

if TYPE_CHECKING:
    from ._engine import Engine
    from ._routing import Router, Transport
    from ._stream import QUICStream

__all__ = ["QUICConnection"]

logger = logging.getLogger("trioudp")

#: Transport error code for "internal error" (RFC 9000, section 20.1).
INTERNAL_ERROR = 0x1
#: Who takes a connection's stream events (``QUICConnection._mode``).
_UNDECIDED, _STREAMS, _EVENTS = "undecided", "streams", "events"


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
        self._router = router
        self._is_client = bool(engine.configuration.is_client)
        self._send_buffer = send_buffer
        self._datagram_queue = datagram_queue
        self._reset_code = reset_code
        self._table = StreamTable(self, engine, is_client=self._is_client)
        self._datagrams: deque[bytes] = deque()
        self._datagram_readers = trio.lowlevel.ParkingLot()
        self._datagram_writers = trio.lowlevel.ParkingLot()
        self._room_waiters: set[QUICStream] = set()
        self._stream_credit = trio.lowlevel.ParkingLot()
        self._acknowledged = trio.lowlevel.ParkingLot()
        self._handshake_over = trio.Event()
        self._established = False
        self._failure: BaseException | None = None
        self._alpn: str | None = None
        self._sender = Sender(engine, transport, router)
        self._datagrams_dropped = 0
        self._mode = _UNDECIDED  # until it uses streams or receive_event()
        self._held = HeldEvents(
            engine, is_client=self._is_client, datagram_queue=datagram_queue
        )

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
        self._sender.kick()

    def _changed(self) -> None:
        self._sender.changed()

    def _send_changes(self) -> None:
        self._sender.send_changes()

    def _ended_with(self) -> BaseException | None:
        """The exception waits raise since the connection ended, else None."""
        return self._failure

    def _stream_done(self, stream: QUICStream) -> None:
        """The application closed ``stream``: give its credit back."""
        engine = self._engine
        engine.release(stream.stream_id)
        self._table.done.add(stream.stream_id)
        self._room_waiters.discard(stream)
        if engine.credit_due() or engine.stream_credit_due():
            self._changed()

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
        were already waiting for :meth:`receive_datagram` (or for
        :meth:`receive_event`)."""
        return self._datagrams_dropped + self._held.dropped

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
        if self._mode is not _STREAMS:
            self._use_streams()
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
        stream = self._table.opened(stream_id)
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
        if self._mode is not _STREAMS:
            self._use_streams()
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        table = self._table
        while not table.incoming:
            self._check_open()
            await table.acceptors.park()
            waited = True
        stream = table.incoming.popleft()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
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
            self._send_changes()
            await self._datagram_writers.park()
            waited = True
        self._engine.send_datagram_frame(payload)
        self._changed()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        self._send_changes()

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

    # ---- a protocol layer's events ----------------------------------------

    async def receive_event(self) -> events.QuicEvent:
        """Wait for the next event of the connection's streams and datagrams,
        as aioquic reports it, for a protocol layer of your own on
        :attr:`engine` (aioquic's HTTP/3, say).

        The first call hands the connection to the layer: from then on
        aioquic's ``StreamDataReceived``, ``StreamReset``,
        ``StopSendingReceived`` and ``DatagramFrameReceived`` events go to
        it, in order, with those that arrived since the handshake; there
        are no :class:`QUICStream` objects (:meth:`open_stream` and
        :meth:`accept_stream` raise :class:`QUICError`) and
        :meth:`receive_datagram` waits for nothing. The layer writes to
        :attr:`engine` (``send_stream_data``, ``send_datagram_frame``,
        ``reset_stream``) and calls :meth:`transmit`.

        Flow control still holds: the peer gets credit for stream data only
        as the layer takes its events, and at most ``datagram_queue``
        datagrams wait (more are dropped and counted in
        :attr:`datagrams_dropped`).

        Raises:
            QUICError: the application already uses streams.
            ConnectionClosed: the connection ended (events already received
                are returned first).
            trio.ClosedResourceError: you closed it.

        Example::

            h3 = H3Connection(connection.engine)
            while True:
                for event in h3.handle_event(await connection.receive_event()):
                    if isinstance(event, HeadersReceived):
                        h3.send_headers(event.stream_id, [(b":status", b"200")])
                        h3.send_data(event.stream_id, b"hello", end_stream=True)
                        connection.transmit()
        """
        if self._mode is not _EVENTS:
            self._use_events()
        await trio.lowlevel.checkpoint_if_cancelled()
        held = self._held
        waited = False
        while not held:
            self._check_open()
            await held.readers.park()
            waited = True
        event = held.take()
        if self._engine.credit_due():
            self._changed()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        self._send_changes()
        return event

    def transmit(self) -> None:
        """Send what a protocol layer wrote to :attr:`engine`; it leaves at the
        connection's next turn, with whatever else is written before this
        task's next schedule point. Returns at once; after the connection
        has ended it does nothing.

        Example::

            h3.send_data(stream_id, b"hello", end_stream=True)
            connection.transmit()
        """
        if not self._sender.ended:
            self._kick()

    def _use_events(self) -> None:
        """A protocol layer takes the events: datagrams received meanwhile
        join the events held for it."""
        if self._mode is _STREAMS:
            msg = (
                "this connection's application uses streams: receive_event is"
                " for a protocol layer that takes the connection from its start"
            )
            raise QUICError(msg)
        self._mode = _EVENTS
        while self._datagrams:
            self._held.put(events.DatagramFrameReceived(data=self._datagrams.popleft()))

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
                        self._send_changes()
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
        self._table.wake()
        for lot in (
            self._held.readers,
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
        self._sender.stop()

    # ---- the engine's input ----------------------------------------------

    def _datagram_received(
        self, data: bytes, peer: tuple[str, int], now: float
    ) -> None:
        """Feed a datagram from ``peer`` to the engine, hand its events on and
        send what it calls for (a server's intake, one datagram at a time)."""
        self._feed(data, peer, now)
        self._deliver()
        self._flush(now)

    def _feed(self, data: bytes, peer: tuple[str, int], now: float) -> None:
        """Feed a datagram from ``peer`` to the engine; a batch of them is
        followed by one :meth:`_deliver` and one :meth:`_flush`."""
        if self._sender.ended:
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

    def _deliver(self) -> None:
        """Hand the engine's events on, and wake the tasks its new state may
        let go on (writers waiting for acknowledgements, stream credit)."""
        self._process_events()
        if self._room_waiters:
            waiters = self._room_waiters
            self._room_waiters = set()
            for stream in waiters:
                stream._writers.unpark_all()
        # Tested first: most often nobody waits, and an empty lot's
        # unpark_all costs three calls.
        for lot in (self._stream_credit, self._acknowledged, self._datagram_writers):
            if lot:
                lot.unpark_all()

    def _process_events(self) -> None:
        engine = self._engine
        while (event := engine.next_event()) is not None:
            kind = type(event)
            if kind in STREAM_EVENTS:
                if self._mode is _STREAMS:
                    self._table.deliver(event, counted=False)
                else:
                    self._held.put(event)
            elif kind is events.DatagramFrameReceived:
                assert isinstance(event, events.DatagramFrameReceived)
                if self._mode is _EVENTS:
                    self._held.put(event)
                    continue
                if len(self._datagrams) >= self._datagram_queue:
                    self._datagrams.popleft()
                    self._datagrams_dropped += 1
                self._datagrams.append(event.data)
                self._datagram_readers.unpark()
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

    def _use_streams(self) -> None:
        """The application uses streams: the events held go to them."""
        if self._mode is _EVENTS:
            msg = (
                "this connection's events go to a protocol layer"
                " (receive_event): it has no QUICStream objects"
            )
            raise QUICError(msg)
        self._mode = _STREAMS
        for event in self._held.drain():
            self._table.deliver(event, counted=True)

    def _closed_error(self, event: events.ConnectionTerminated) -> ConnectionClosed:
        return ConnectionClosed(
            event.error_code,
            event.reason_phrase,
            application=event.frame_type is None,
            by_peer=self._engine.closed_by_peer(),
        )

    # ---- sending and timers ----------------------------------------------

    def _sweep(self) -> None:
        self._table.sweep()

    async def _wait_handshake(self) -> bool:
        """Wait until the handshake completed (True) or failed (False)."""
        await self._handshake_over.wait()
        return self._established and self._failure is None

    async def _drive(self) -> None:
        """The connection's driver (see ``_sending``)."""
        await self._sender.drive(self)

    def _flush(self, now: float) -> None:
        """Send what a batch of datagrams fed to the engine calls for."""
        self._sender.flush(now, self)

    async def _send_close_now(self) -> None:
        """Close at once and send the CONNECTION_CLOSE before returning (for a
        connection whose task is being cancelled)."""
        self._close_here(0, "")
        if not self._sender.ended:
            await self._sender.transmit(trio.current_time(), self)
            self._end()
