"""The protocol engine: aioquic's ``QuicConnection`` with trioudp's policies.

aioquic does all of QUIC and TLS (packets, frames, keys, loss recovery,
congestion control). This subclass replaces four *policies* it hard-codes,
and reads a few of its private attributes; it is the only module of
``trioudp.quic`` that touches aioquic's internals, and it does so in the same
way on every aioquic release from 1.2 (the newest with wheels for Python
3.10) to 1.7 (``tests/test_quic_engine.py`` runs under both).

Why replace them (aioquic issue #589):

* **Receive credit.** aioquic doubles a stream's ``MAX_STREAM_DATA`` (and the
  connection's ``MAX_DATA``) whenever the peer has *sent* past half of it,
  whether or not anybody read the data; the data is handed over as events
  at once, so a peer that keeps sending while the application does not read
  makes the process buffer without bound (a sparse frame at a high offset
  doubles the limit without even sending the bytes). Here credit follows what
  the application *consumed*: a stream's limit is at most ``consumed +
  max_stream_data`` and the connection's at most ``consumed + max_data``,
  raised when half the window has been read.
* **Stream count.** aioquic 1.2 doubles ``MAX_STREAMS`` when the peer has
  opened half of what it may; 1.7 adds one per stream *it* discards, which
  is before the application has read the stream. Here the peer may have at
  most ``max_streams`` streams of each kind that are not yet released by
  both aioquic and the application.
* **Stateless reset tokens.** aioquic draws them at random; a server derives
  them from the connection ID and a key (RFC 9000, section 10.3.2), so it can
  reset a connection it no longer knows (after a restart, or in another
  worker) without keeping state.
* **Connection IDs.** aioquic draws a server's at random; a server that
  shares its port with other worker processes issues IDs that name its
  worker (``_steering``), so that the kernel can steer every packet of a
  connection to the process that owns it, whatever the client's address.

Invariants (each has a test that breaks it on purpose):

* The limits this class writes never go below what was already sent (QUIC
  limits only grow) and never above ``consumed + window``: so the bytes a
  peer can make this process hold for a stream are at most the stream window
  plus the bytes the application has read but not released, and for the
  connection at most ``max_data``.
* The frames are written by aioquic's own packet builder, in the same calls
  aioquic makes; only the numbers in them are ours.
* Nothing here runs I/O or reads a clock: ``now`` comes from the caller.
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from aioquic import tls
from aioquic.quic import connection as _aioquic_connection
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicFrameType

if TYPE_CHECKING:
    from collections.abc import Callable

    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import Limit, NetworkAddress
    from aioquic.quic.events import ConnectionTerminated
    from aioquic.quic.packet_builder import QuicPacketBuilder
    from aioquic.quic.recovery import QuicPacketSpace
    from aioquic.quic.stream import QuicStream

__all__ = ["Engine", "reset_token", "stream_is_local", "stream_is_unidirectional"]

_CONNECTION_LIMIT_FRAME_CAPACITY: int = (
    _aioquic_connection.CONNECTION_LIMIT_FRAME_CAPACITY
)
_MAX_STREAM_DATA_FRAME_CAPACITY: int = (
    _aioquic_connection.MAX_STREAM_DATA_FRAME_CAPACITY
)
#: Length of a stateless reset token (RFC 9000, section 10.3).
RESET_TOKEN_SIZE = 16


def reset_token(key: bytes, cid: bytes) -> bytes:
    """The stateless reset token of connection ID ``cid``: HMAC-SHA256 under
    ``key``, cut to 16 bytes (RFC 9000, section 10.3.2).

    Example:
        >>> reset_token(b"k" * 32, bytes(8)).hex()
        'ce298a69cb08e07209c0c1e37b1148f3'
    """
    return hmac.digest(key, cid, "sha256")[:RESET_TOKEN_SIZE]


def stream_is_unidirectional(stream_id: int) -> bool:
    """Whether a stream ID is a unidirectional stream's (RFC 9000, 2.1).

    Example:
        >>> stream_is_unidirectional(2), stream_is_unidirectional(4)
        (True, False)
    """
    return bool(stream_id & 2)


def stream_is_local(stream_id: int, *, is_client: bool) -> bool:
    """Whether this endpoint opened the stream (bit 0: 0 for the client).

    Example:
        >>> stream_is_local(0, is_client=True), stream_is_local(1, is_client=True)
        (True, False)
    """
    return bool(stream_id & 1) != is_client


class Engine(QuicConnection):
    """aioquic's connection with application-driven flow control.

    Args:
        configuration: aioquic's configuration; ``max_stream_data`` and
            ``max_data`` are the receive windows.
        max_streams: streams of each kind (bidirectional, unidirectional) the
            peer may have open at once, from its first until both aioquic and
            the application released them.
        reset_key: a server's stateless reset key (None: aioquic's random
            tokens).
        original_destination_connection_id, retry_source_connection_id:
            a server's, as aioquic takes them.
        connection_ids: makes each connection ID this end issues (None:
            aioquic's random ones).
    """

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        max_streams: int,
        reset_key: bytes | None = None,
        original_destination_connection_id: bytes | None = None,
        retry_source_connection_id: bytes | None = None,
        connection_ids: Callable[[], bytes] | None = None,
    ) -> None:
        super().__init__(
            configuration=configuration,
            original_destination_connection_id=original_destination_connection_id,
            retry_source_connection_id=retry_source_connection_id,
        )
        self._t_stream_window = configuration.max_stream_data
        self._t_data_window = configuration.max_data
        self._t_max_streams = max_streams
        self._t_streams_step = max(1, max_streams // 2)
        self._t_reset_key = reset_key
        # Bytes the application has read, per stream (for MAX_STREAM_DATA),
        # and bytes delivered to the Trio layer and not read (for MAX_DATA).
        self._t_consumed: dict[int, int] = {}
        self._t_unread = 0
        # Peer-initiated streams the application still holds.
        self._t_held: set[int] = set()
        for limit in (self._local_max_streams_bidi, self._local_max_streams_uni):
            limit.value = limit.sent = max_streams
        self._t_connection_ids = connection_ids
        if connection_ids is not None:
            # Nothing was sent yet: the first ID is still ours to choose.
            cid = connection_ids()
            self._host_cids[0].cid = self.host_cid = cid
            self._local_initial_source_connection_id = cid
        if reset_key is not None:
            self._derive_reset_tokens()

    # ---- what the Trio layer tells the engine ------------------------------

    def delivered(self, size: int) -> None:
        """The Trio layer took ``size`` bytes of stream data to hold."""
        self._t_unread += size

    def consumed(self, stream_id: int, size: int) -> None:
        """The application read ``size`` bytes of ``stream_id``."""
        self._t_consumed[stream_id] = self._t_consumed.get(stream_id, 0) + size
        self._t_unread -= size

    def discarded(self, size: int) -> None:
        """The Trio layer dropped ``size`` unread bytes (stream closed or reset)."""
        self._t_unread -= size

    def hold(self, stream_id: int) -> None:
        """The Trio layer took a peer-initiated stream (it counts as open)."""
        self._t_held.add(stream_id)

    def release(self, stream_id: int) -> None:
        """The application is done with a stream: forget its accounting."""
        self._t_held.discard(stream_id)
        self._t_consumed.pop(stream_id, None)

    def _data_target(self) -> int:
        # Received bytes (by highest offset, as the peer counts them) that the
        # Trio layer no longer holds count as read: closed and reset streams
        # give their credit back.
        return self._local_max_data.used - self._t_unread + self._t_data_window

    def credit_due(self) -> bool:
        """Whether reading has earned the peer credit worth a packet: some
        stream's (or the connection's) window is half used up."""
        if self._data_target() - self._local_max_data.sent >= self._t_data_window // 2:
            return True
        streams = self._streams
        half = self._t_stream_window // 2
        for stream_id, consumed in self._t_consumed.items():
            stream = streams.get(stream_id)
            if (
                stream is not None
                and not stream.receiver.is_finished
                and consumed + self._t_stream_window - stream.max_stream_data_local_sent
                >= half
            ):
                return True
        return False

    def stream_credit_due(self) -> bool:
        """Whether released streams have earned the peer a MAX_STREAMS frame
        (half of ``max_streams`` free again, of one kind)."""
        return (
            self._streams_due(self._local_max_streams_bidi, False) is not None
            or self._streams_due(self._local_max_streams_uni, True) is not None
        )

    def may_open_stream(self, unidirectional: bool) -> bool:
        """Whether the peer's MAX_STREAMS lets this endpoint open another."""
        if unidirectional:
            next_id, limit = (
                self._local_next_stream_id_uni,
                self._remote_max_streams_uni,
            )
        else:
            next_id, limit = (
                self._local_next_stream_id_bidi,
                self._remote_max_streams_bidi,
            )
        return bool(next_id // 4 < limit)

    def unacknowledged(self) -> bool:
        """Whether some stream has data, a FIN or a reset the peer has not
        acknowledged yet, or DATAGRAM frames wait to be sent."""
        if self._datagrams_pending:
            return True
        for stream in self._streams.values():
            sender = stream.sender
            if sender.is_finished:
                continue
            if (
                sender._buffer_start < sender._buffer_stop
                or sender._buffer_fin is not None
                or sender._reset_error_code is not None
            ):
                return True
        return False

    def ack_with_data(self, now: float) -> None:
        """Let the packet about to carry the application's data carry the
        1-RTT acknowledgement still delayed too.

        aioquic writes an ACK frame only once its delay (1 ms) is over, so
        the reply a peer sends within that millisecond goes without it and
        an ACK-only packet follows when the delay ends: a packet, and a
        wake-up of both ends, for every request and reply. An acknowledgement
        sent early is always allowed (RFC 9000, section 13.2.1)."""
        space = self._spaces.get(tls.Epoch.ONE_RTT)
        if space is not None and space.ack_at is not None and space.ack_at > now:
            space.ack_at = now

    def decrypted_any(self) -> bool:
        """Whether any packet received so far could be decrypted (a server's
        first Initial that could not is garbage, or another's). A packet
        whose content made the engine close (a ClientHello its TLS refused)
        was decrypted, though aioquic does not acknowledge it: the peer is
        owed the CONNECTION_CLOSE."""
        return self._close_event is not None or any(
            len(space.ack_queue) > 0 for space in self._spaces.values()
        )

    def closed_by_peer(self) -> bool:
        """Whether the close under way is the peer's (we are draining)."""
        return bool(self._state == _aioquic_connection.QuicConnectionState.DRAINING)

    # ---- what the Trio layer asks ------------------------------------------

    def stream_exists(self, stream_id: int) -> bool:
        """Whether aioquic still keeps the stream's state."""
        return stream_id in self._streams

    def send_buffered(self, stream_id: int) -> int:
        """Bytes written to a stream and not yet acknowledged by the peer."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return 0
        sender = stream.sender
        return int(sender._buffer_stop - sender._buffer_start)

    def send_side_finished(self, stream_id: int) -> bool:
        """Whether the stream's sending side is done (all acknowledged or reset)."""
        stream = self._streams.get(stream_id)
        return stream is None or bool(stream.sender.is_finished)

    def datagrams_pending(self) -> int:
        """DATAGRAM frames queued and not yet packed into a packet."""
        return len(self._datagrams_pending)

    def max_datagram_payload(self) -> int | None:
        """The largest DATAGRAM frame payload that fits one packet to this
        peer, or None if the peer does not take DATAGRAM frames (RFC 9221)."""
        remote = self._remote_max_datagram_frame_size
        if remote is None:
            return None
        # A 1-RTT packet: 1 byte of flags, the peer's connection ID (up to
        # 20 bytes), a packet number (up to 4), the AEAD tag (16); then the
        # frame type (1) and a length (up to 2 bytes at these sizes).
        overhead = 1 + 20 + 4 + 16 + 1 + 2
        fits = self._max_datagram_size - overhead
        # The peer's limit counts the whole frame (type and length included).
        return max(0, min(fits, remote - 3))

    def abort_stream(self, stream_id: int, error_code: int) -> None:
        """RESET_STREAM and STOP_SENDING where the stream still has those
        directions open; never raises (aioquic 1.2 asserts on a second reset)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if not stream.sender.is_finished and stream.sender._reset_error_code is None:
            stream.sender.reset(error_code)
        self.stop_receiving(stream_id, error_code)

    def stop_receiving(self, stream_id: int, error_code: int) -> None:
        """STOP_SENDING, if the stream still receives; never raises."""
        stream = self._streams.get(stream_id)
        if (
            stream is not None
            and not stream.receiver.is_finished
            and not stream.receiver.stop_pending
            and stream.receiver._stop_error_code is None
        ):
            stream.receiver.stop(error_code)

    def close_started(self) -> ConnectionTerminated | None:
        """Why the connection is closing, as soon as it starts to (aioquic
        reports ``ConnectionTerminated`` only after the closing period)."""
        event: ConnectionTerminated | None = self._close_event
        return event

    def peer_address(self) -> NetworkAddress | None:
        """Where datagrams go now (it changes when the peer migrates)."""
        paths = self._network_paths
        return paths[0].addr if paths else None

    def path_validated(self, address: NetworkAddress) -> bool:
        """Whether the peer proved it receives at ``address`` (RFC 9000, 8)."""
        for path in self._network_paths:  # a loop: this runs for every packet
            if path.is_validated and path.addr == address:
                return True
        return False

    def is_stateless_reset(self, data: bytes) -> bool:
        """Whether ``data`` ends with a stateless reset token the peer gave
        (aioquic does not look for them): a short-header datagram of at least
        21 bytes whose last 16 are one of the tokens."""
        if len(data) < 21 or data[0] & 0x80:
            return False
        tail = data[-RESET_TOKEN_SIZE:]
        found = False
        # A loop, not any(): this runs for every datagram a client receives.
        for cid in (self._peer_cid, *self._peer_cid_available):
            token = cid.stateless_reset_token
            if token and hmac.compare_digest(token, tail):
                found = True
        return found

    # ---- aioquic's policies, replaced --------------------------------------

    def _derive_reset_tokens(self) -> None:
        key = self._t_reset_key
        assert key is not None
        for connection_id in self._host_cids:
            connection_id.stateless_reset_token = reset_token(key, connection_id.cid)

    def _replenish_connection_ids(self) -> None:
        first_new = self._host_cid_seq
        super()._replenish_connection_ids()
        make = self._t_connection_ids
        if make is not None:
            # The new IDs are announced (NEW_CONNECTION_ID) only later, when
            # packets are built: replacing them here is replacing them
            # before anybody saw them.
            for connection_id in self._host_cids:
                if connection_id.sequence_number >= first_new:
                    connection_id.cid = make()
        if self._t_reset_key is not None:
            self._derive_reset_tokens()

    def _write_connection_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace
    ) -> None:
        """MAX_DATA and MAX_STREAMS, at the limits this class allows."""
        max_data = self._local_max_data
        target = self._data_target()
        if target - max_data.sent >= self._t_data_window // 2:
            max_data.value = max(max_data.value, target)
        bidi, uni = self._local_max_streams_bidi, self._local_max_streams_uni
        ceiling, step = self._t_max_streams, self._t_streams_step
        if (
            bidi.used + ceiling - bidi.sent < step
            and uni.used + ceiling - uni.sent < step
        ):
            # The usual case, written out (this runs for every packet built,
            # empty ones included): no MAX_STREAMS is due (``_streams_due``
            # returns None for both kinds), so what was sent stands.
            bidi.value = bidi.sent
            uni.value = uni.sent
            if max_data.value == max_data.sent:
                return
        for limit, unidirectional in ((bidi, False), (uni, True)):
            # aioquic 1.7 adds to value as it discards streams: what was not
            # sent yet is ours to set; what was sent stands. Raised once half
            # the count is free again, not stream by stream: a MAX_STREAMS
            # frame for each request closed would cost a packet each.
            due = self._streams_due(limit, unidirectional)
            limit.value = limit.sent if due is None else due
        for limit in (
            max_data,
            self._local_max_streams_bidi,
            self._local_max_streams_uni,
        ):
            if limit.value != limit.sent:
                buf = builder.start_frame(
                    limit.frame_type,
                    capacity=_CONNECTION_LIMIT_FRAME_CAPACITY,
                    handler=self._on_connection_limit_delivery,
                    handler_args=(limit,),
                )
                buf.push_uint_var(limit.value)
                limit.sent = limit.value
                frames = builder.quic_logger_frames
                if self._quic_logger is not None and frames is not None:
                    frames.append(
                        self._quic_logger.encode_connection_limit_frame(
                            frame_type=limit.frame_type, maximum=limit.value
                        )
                    )

    def _write_stream_limits(
        self, builder: QuicPacketBuilder, space: QuicPacketSpace, stream: QuicStream
    ) -> None:
        """MAX_STREAM_DATA, at ``consumed + window`` once half is read."""
        stream_id = stream.stream_id
        if (
            stream_id is None
            or not stream.max_stream_data_local
            or stream.receiver.is_finished
        ):
            return  # a stream we only send on, or one with nothing more to come
        window = self._t_stream_window
        target = self._t_consumed.get(stream_id, 0) + window
        if target - stream.max_stream_data_local_sent >= window // 2:
            stream.max_stream_data_local = max(stream.max_stream_data_local, target)
        if stream.max_stream_data_local_sent != stream.max_stream_data_local:
            buf = builder.start_frame(
                QuicFrameType.MAX_STREAM_DATA,
                capacity=_MAX_STREAM_DATA_FRAME_CAPACITY,
                handler=self._on_max_stream_data_delivery,
                handler_args=(stream,),
            )
            buf.push_uint_var(stream_id)
            buf.push_uint_var(stream.max_stream_data_local)
            stream.max_stream_data_local_sent = stream.max_stream_data_local
            frames = builder.quic_logger_frames
            if self._quic_logger is not None and frames is not None:
                frames.append(
                    self._quic_logger.encode_max_stream_data_frame(
                        maximum=stream.max_stream_data_local,
                        stream_id=stream_id,
                    )
                )

    def _streams_due(self, limit: Limit, unidirectional: bool) -> int | None:
        """The MAX_STREAMS of one kind to send now, or None: ``max_streams``
        more than the streams not yet released, once that frees at least
        half of ``max_streams`` more than was sent."""
        step = self._t_streams_step
        ceiling = limit.used + self._t_max_streams
        if ceiling - limit.sent < step:
            return None  # not even with every stream released (the usual case)
        allowed = ceiling - self._live(unidirectional)
        return allowed if allowed - limit.sent >= step else None

    def _live(self, unidirectional: bool) -> int:
        """Peer-initiated streams of one kind not yet released by both aioquic
        and the application."""
        # Bit 0 of a stream ID is the initiator (1: the server), bit 1 the kind.
        wanted = (2 if unidirectional else 0) | (1 if self._is_client else 0)
        live = {sid for sid in self._streams if sid & 3 == wanted}
        live.update(sid for sid in self._t_held if sid & 3 == wanted)
        return len(live)
