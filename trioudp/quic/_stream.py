"""QUICStream: one QUIC stream as a :class:`trio.abc.HalfCloseableStream`.

The stream holds the bytes aioquic delivered and the application has not read
yet; the engine gives the peer credit only as they are read (see
``_engine.py``), so that buffer is bounded by the stream's window. Sending
waits while more than ``send_buffer`` bytes are written and not yet
acknowledged, so a peer that does not read holds a writer back instead of
making memory grow.

Structured concurrency: leaving ``async with stream:`` normally finishes the
stream (FIN, and STOP_SENDING if the peer's side is still open); leaving it
with an exception, cancellation included, resets it (RESET_STREAM and
STOP_SENDING with the connection's ``reset_code``), as does a ``send_all``
cancelled after it had written part of its data, since the peer could not
tell where the data stopped.
"""

from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Protocol, final

import trio

from ._engine import stream_is_local, stream_is_unidirectional
from ._errors import SendingStopped, StreamReset

if TYPE_CHECKING:
    from types import TracebackType

    from ._engine import Engine

__all__ = ["QUICStream"]

#: Most bytes one receive_some returns when the caller names no limit.
DEFAULT_RECEIVE_SIZE = 65536


class StreamOwner(Protocol):
    """What a stream needs of its connection."""

    @property
    def engine(self) -> Engine: ...

    @property
    def send_buffer(self) -> int: ...

    @property
    def reset_code(self) -> int: ...

    def _kick(self) -> None:
        """Ask the connection to send what the engine has for the peer."""

    def _ended_with(self) -> BaseException | None:
        """The exception waits raise once the connection has ended."""

    def _stream_done(self, stream: QUICStream) -> None:
        """The application closed ``stream``."""

    def _room_wanted(self, stream: QUICStream) -> None:
        """Wake ``stream``'s writer when acknowledgements free buffer space."""


class _Busy:
    """One task at a time in a direction, else :class:`trio.BusyResourceError`."""

    __slots__ = ("_held", "_message")

    def __init__(self, message: str) -> None:
        self._message = message
        self._held = False

    def __enter__(self) -> None:
        if self._held:
            raise trio.BusyResourceError(self._message)
        self._held = True

    def __exit__(self, *exc_info: object) -> None:
        self._held = False


@final
class QUICStream(trio.abc.HalfCloseableStream):
    """One bidirectional or unidirectional QUIC stream.

    Made by :meth:`QUICConnection.open_stream` and
    :meth:`QUICConnection.accept_stream`, never directly. It is a
    :class:`trio.abc.HalfCloseableStream`: ``send_all``, ``send_eof``,
    ``receive_some`` (``b""`` at the peer's end of stream), ``aclose``.
    A unidirectional stream the peer opened cannot send (its sending side
    raises :class:`trio.ClosedResourceError`); one you opened receives
    nothing (``receive_some`` returns ``b""``).

    Resource handling:
        ``async with stream:`` finishes the stream when the block ends
        normally and resets it when an exception (cancellation included)
        leaves it. :meth:`aclose` finishes it: FIN after the data already
        written, and STOP_SENDING to the peer if it had more to send.

    Error handling:
        Operations after :meth:`aclose` raise :class:`trio.ClosedResourceError`.
        A reset by the peer raises :class:`StreamReset` on receiving, a
        STOP_SENDING :class:`SendingStopped` on sending; a connection that
        ended raises :class:`ConnectionClosed` (or
        :class:`trio.ClosedResourceError` if you closed it). All three are
        :class:`trio.BrokenResourceError`.

    Example::

        async def handler(connection: trioudp.quic.QUICConnection) -> None:
            async with await connection.accept_stream() as stream:
                async for data in stream:
                    await stream.send_all(data)
    """

    def __init__(self, owner: StreamOwner, stream_id: int, *, is_client: bool) -> None:
        self._owner = owner
        self._engine = owner.engine
        self._id = stream_id
        unidirectional = stream_is_unidirectional(stream_id)
        local = stream_is_local(stream_id, is_client=is_client)
        self._readable = not (unidirectional and local)
        self._writable = not (unidirectional and not local)
        self._received = bytearray()
        self._received_eof = not self._readable
        self._reset_by_peer: int | None = None
        self._stopped_by_peer: int | None = None
        self._eof_sent = not self._writable
        self._broken = False
        self._closed = False
        self._receive_busy = _Busy("another task is already receiving on this stream")
        self._send_busy = _Busy("another task is already sending on this stream")
        self._readers = trio.lowlevel.ParkingLot()
        self._writers = trio.lowlevel.ParkingLot()

    # ---- state -----------------------------------------------------------

    @property
    def stream_id(self) -> int:
        """The QUIC id of this stream. Bit 0 says who opened it (set for
        the server), bit 1 whether it is unidirectional."""
        return self._id

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` (or :meth:`reset`) has been called."""
        return self._closed

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<trioudp.quic.QUICStream {self._id}{state}>"

    # ---- events from the connection --------------------------------------

    def _on_data(self, data: bytes, end_stream: bool) -> None:
        if self._closed or self._reset_by_peer is not None:
            return  # never counted as held: the engine's credit is unaffected
        self._engine.delivered(len(data))
        self._received += data
        if end_stream:
            self._received_eof = True
        self._readers.unpark_all()

    def _on_reset(self, error_code: int) -> None:
        if self._reset_by_peer is None and not self._received_eof:
            self._reset_by_peer = error_code
            self._drop_received()
        self._readers.unpark_all()

    def _on_stop_sending(self, error_code: int) -> None:
        if self._stopped_by_peer is None:
            self._stopped_by_peer = error_code
        self._writers.unpark_all()

    def _wake(self) -> None:
        """The connection ended or buffer space freed: let waiters look again."""
        self._readers.unpark_all()
        self._writers.unpark_all()

    @property
    def _buffered(self) -> int:
        """Bytes held here for the application (for the memory bound)."""
        return len(self._received)

    # ---- receiving -------------------------------------------------------

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Wait for data and return up to ``max_bytes`` of it (``b""`` once
        the peer has finished the stream and everything was read).

        Raises:
            TypeError, ValueError: ``max_bytes`` is not a positive integer.
            trio.BusyResourceError: another task is receiving on the stream.
            trio.ClosedResourceError: the stream (or its connection) was
                closed here.
            StreamReset: the peer reset the stream.
            ConnectionClosed: the connection ended before the stream did.

        Example::

            data = await stream.receive_some()
        """
        if max_bytes is None:
            max_bytes = DEFAULT_RECEIVE_SIZE
        else:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                msg = f"max_bytes must be at least 1, not {max_bytes}"
                raise ValueError(msg)
        with self._receive_busy:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while True:
                data = self._take(max_bytes)
                if data is not None:
                    if not waited:
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    return data
                await self._readers.park()
                waited = True

    def _take(self, max_bytes: int) -> bytes | None:
        """What ``receive_some`` returns now, or None to wait; or raise."""
        if self._closed:
            msg = "this QUIC stream was closed"
            raise trio.ClosedResourceError(msg)
        if self._reset_by_peer is not None:
            raise StreamReset(self._id, self._reset_by_peer)
        received = self._received
        if received:
            data = bytes(received[:max_bytes])
            del received[:max_bytes]
            self._engine.consumed(self._id, len(data))
            if self._engine.credit_due():
                self._owner._kick()
            return data
        if self._received_eof:
            return b""
        failure = self._owner._ended_with()
        if failure is not None:
            raise failure
        return None

    # ---- sending ---------------------------------------------------------

    def _check_send(self) -> None:
        if self._closed:
            msg = "this QUIC stream was closed"
            raise trio.ClosedResourceError(msg)
        if not self._writable:
            msg = f"QUIC stream {self._id} is unidirectional and the peer's: it cannot send"
            raise trio.ClosedResourceError(msg)
        if self._eof_sent:
            msg = "send_eof was called on this QUIC stream: it sends no more"
            raise trio.ClosedResourceError(msg)
        failure = self._owner._ended_with()
        if failure is not None:
            raise failure
        if self._stopped_by_peer is not None:
            raise SendingStopped(self._id, self._stopped_by_peer)
        if self._broken:
            msg = (
                f"QUIC stream {self._id} was reset after a send_all was cancelled"
                " part-way"
            )
            raise trio.BrokenResourceError(msg)

    def _room(self) -> int:
        return self._owner.send_buffer - self._engine.send_buffered(self._id)

    async def _wait_for_room(self) -> None:
        while True:
            self._check_send()
            if self._room() > 0:
                return
            self._owner._room_wanted(self)
            await self._writers.park()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of ``data``; waits while the stream's unacknowledged bytes
        exceed the connection's ``send_buffer`` (the peer reads slowly, or
        its flow control holds the stream back).

        Cancelled after part of ``data`` was written, the stream is reset:
        the peer could not tell where the data stopped.

        Raises:
            trio.BusyResourceError: another task is sending on the stream.
            trio.ClosedResourceError: the stream was closed, or
                :meth:`send_eof` called, here.
            SendingStopped: the peer will read no more.
            ConnectionClosed: the connection ended.

        Example::

            await stream.send_all(b"Hello, QUIC!")
        """
        with self._send_busy:
            view = memoryview(data).cast("B")
            await trio.lowlevel.checkpoint_if_cancelled()
            self._check_send()
            offset = 0
            size = len(view)
            waited = False
            try:
                while offset < size:
                    room = self._room()
                    if room <= 0:
                        await self._wait_for_room()
                        waited = True
                        continue
                    chunk = bytes(view[offset : offset + room])
                    self._engine.send_stream_data(self._id, chunk)
                    offset += len(chunk)
                    self._owner._kick()
            except trio.Cancelled:
                if offset:
                    self._abort()
                    self._broken = True
                raise
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        """Wait until :meth:`send_all` has room to write at once.

        Example::

            await stream.wait_send_all_might_not_block()
        """
        with self._send_busy:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._room() > 0:
                self._check_send()
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            await self._wait_for_room()

    async def send_eof(self) -> None:
        """Finish the sending side (FIN after what was written); the peer's
        side stays open. A second call does nothing.

        Example::

            await stream.send_all(b"request")
            await stream.send_eof()
            reply = await stream.receive_some()
        """
        with self._send_busy:
            await trio.lowlevel.checkpoint()
            if self._closed:
                msg = "this QUIC stream was closed"
                raise trio.ClosedResourceError(msg)
            self._finish_sending()

    def _finish_sending(self) -> None:
        if self._eof_sent:
            return
        self._eof_sent = True
        if (
            self._stopped_by_peer is None
            and not self._broken
            and self._owner._ended_with() is None
        ):
            self._engine.send_stream_data(self._id, b"", end_stream=True)
            self._owner._kick()

    # ---- closing ---------------------------------------------------------

    async def aclose(self) -> None:
        """Finish the stream: FIN after what was written, STOP_SENDING if the
        peer still had data to send; tasks waiting on the stream get
        :class:`trio.ClosedResourceError`. Idempotent, and it closes even if
        cancelled.

        Example::

            await stream.aclose()
        """
        if not self._closed:
            self._finish_sending()
            if self._readable and not self._received_eof:
                self._stop_receiving()
            self._close()
        await trio.lowlevel.checkpoint()

    def reset(self, error_code: int | None = None) -> None:
        """Abandon the stream at once: RESET_STREAM and STOP_SENDING with
        ``error_code`` (default: the connection's ``reset_code``), and close it
        here. Data not yet acknowledged is not delivered.

        Example::

            stream.reset(0x10C)  # e.g. HTTP/3's H3_REQUEST_CANCELLED
        """
        if not self._closed:
            self._abort(error_code)
            self._close()

    def _abort(self, error_code: int | None = None) -> None:
        code = self._owner.reset_code if error_code is None else error_code
        if self._owner._ended_with() is None:
            self._engine.abort_stream(self._id, code)
            self._owner._kick()

    def _stop_receiving(self) -> None:
        if self._owner._ended_with() is None:
            self._engine.stop_receiving(self._id, self._owner.reset_code)
            self._owner._kick()

    def _drop_received(self) -> None:
        self._engine.discarded(len(self._received))
        self._received.clear()

    def _close(self) -> None:
        self._closed = True
        self._drop_received()
        self._wake()
        self._owner._stream_done(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_value is not None:
            self.reset()
        await self.aclose()
