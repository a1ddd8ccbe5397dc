"""Where a connection's stream events go: to its :class:`QUICStream` objects
(:class:`StreamTable`), or, held, to a protocol layer (:class:`HeldEvents`).

A :class:`QUICConnection` hands aioquic's stream events to its streams, or,
once a protocol layer (aioquic's ``H3Connection``, say) takes them with
``receive_event()``, to that layer as they are. Until the application has
done either, they are held: a peer that speaks first (an HTTP/3 client
opens its control stream and sends its request with the handshake's last
flight) loses nothing.

Invariants (each tested in ``tests/test_quic_events.py``):

* Flow control holds while events wait: their stream data counts as
  delivered and unread (so the peer's credit does not grow), and the
  streams the peer opened count as open, until the layer takes the event
  (or the streams that replay it are read and closed).
* Datagrams waiting for a layer are bounded by ``datagram_queue``; more are
  dropped and counted, as unreliable datagrams may be.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio
from aioquic.quic import events

from ._engine import stream_is_local
from ._stream import QUICStream

if TYPE_CHECKING:
    from ._engine import Engine
    from ._stream import StreamOwner

__all__ = ["STREAM_EVENTS", "HeldEvents", "StreamTable"]

#: The events of one stream, which go to its QUICStream or to a layer.
STREAM_EVENTS = (
    events.StreamDataReceived,
    events.StreamReset,
    events.StopSendingReceived,
)


class HeldEvents:
    """Stream and datagram events waiting for a protocol layer (or for the
    application to choose streams)."""

    def __init__(self, engine: Engine, *, is_client: bool, datagram_queue: int) -> None:
        self._engine = engine
        self._is_client = is_client
        self._datagram_queue = datagram_queue
        self._queue: deque[events.QuicEvent] = deque()
        self._datagrams = 0
        #: Datagrams dropped because ``datagram_queue`` were waiting.
        self.dropped = 0
        #: Where a layer waits for the next event.
        self.readers = trio.lowlevel.ParkingLot()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def bytes_held(self) -> int:
        """Stream data held, in bytes."""
        return sum(
            len(event.data)
            for event in self._queue
            if isinstance(event, events.StreamDataReceived)
        )

    def put(self, event: events.QuicEvent) -> None:
        """Hold ``event`` (a stream event, or a datagram) for the layer."""
        engine = self._engine
        if isinstance(event, events.DatagramFrameReceived):
            if self._datagrams >= self._datagram_queue:
                self.dropped += 1
                return
            self._datagrams += 1
        else:
            assert isinstance(event, STREAM_EVENTS)
            stream_id = event.stream_id
            if not stream_is_local(stream_id, is_client=self._is_client):
                engine.hold(stream_id)
            if isinstance(event, events.StreamDataReceived):
                engine.delivered(len(event.data))
        self._queue.append(event)
        self.readers.unpark()

    def take(self) -> events.QuicEvent:
        """The next event, for a layer: its data now counts as read (the
        peer gets credit for it), and a stream it ends is released."""
        event = self._queue.popleft()
        engine = self._engine
        if isinstance(event, events.StreamDataReceived):
            engine.consumed(event.stream_id, len(event.data))
            if event.end_stream:
                engine.release(event.stream_id)
        elif isinstance(event, events.StreamReset):
            engine.release(event.stream_id)
        elif isinstance(event, events.DatagramFrameReceived):
            self._datagrams -= 1
        return event

    def drain(self) -> list[events.QuicEvent]:
        """Every event held, for the application's streams to replay (their
        data already counted as delivered)."""
        held = list(self._queue)
        self._queue.clear()
        self._datagrams = 0
        return held


class StreamTable:
    """A connection's :class:`QUICStream` objects: made for the streams the
    peer opens (and queued for ``accept_stream``) or handed out by
    ``open_stream``, and forgotten once closed and discarded by aioquic."""

    def __init__(self, owner: StreamOwner, engine: Engine, *, is_client: bool) -> None:
        self._owner = owner
        self._engine = engine
        self._is_client = is_client
        self.streams: dict[int, QUICStream] = {}
        #: Closed by the application, kept until aioquic discards them.
        self.done: set[int] = set()
        #: Opened by the peer, not yet accepted.
        self.incoming: deque[QUICStream] = deque()
        self.acceptors = trio.lowlevel.ParkingLot()

    def opened(self, stream_id: int) -> QUICStream:
        """A stream this endpoint opened."""
        stream = QUICStream(self._owner, stream_id, is_client=self._is_client)
        self.streams[stream_id] = stream
        return stream

    def stream_for(self, stream_id: int) -> QUICStream | None:
        """The stream of an event: made if the peer opened it now; None for a
        stream already forgotten."""
        stream = self.streams.get(stream_id)
        if stream is None and not stream_is_local(stream_id, is_client=self._is_client):
            stream = QUICStream(self._owner, stream_id, is_client=self._is_client)
            self.streams[stream_id] = stream
            self._engine.hold(stream_id)
            self.incoming.append(stream)
            self.acceptors.unpark()
        return stream

    def deliver(self, event: events.QuicEvent, *, counted: bool) -> None:
        """Hand a stream event to its stream; ``counted``: its data was held
        (already counted as delivered)."""
        assert isinstance(event, STREAM_EVENTS)
        stream = self.stream_for(event.stream_id)
        if stream is None:
            if counted and isinstance(event, events.StreamDataReceived):
                self._engine.discarded(len(event.data))
        elif isinstance(event, events.StreamDataReceived):
            stream._on_data(event.data, event.end_stream, counted=counted)
        elif isinstance(event, events.StreamReset):
            stream._on_reset(event.error_code)
        else:
            stream._on_stop_sending(event.error_code)

    def sweep(self) -> None:
        """Forget streams the application closed and aioquic discarded."""
        if not self.done:
            return
        engine = self._engine
        for stream_id in [s for s in self.done if not engine.stream_exists(s)]:
            self.done.discard(stream_id)
            del self.streams[stream_id]

    def wake(self) -> None:
        """The connection ended: every waiting task looks again."""
        for stream in self.streams.values():
            stream._wake()
        self.acceptors.unpark_all()
