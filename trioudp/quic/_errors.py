"""The exceptions trioudp.quic raises on its own account.

Each derives from :class:`trioudp.TrioUDPError` and from what a Trio program
already catches: a connection or stream the *peer* ended is a
:class:`trio.BrokenResourceError` (as a broken TCP connection under a
:class:`trio.SSLStream` is); one *you* closed raises
:class:`trio.ClosedResourceError`, with no class of its own.
"""

from __future__ import annotations

import trio

from .. import TrioUDPError

__all__ = ["ConnectionClosed", "QUICError", "SendingStopped", "StreamReset"]


class QUICError(TrioUDPError):
    """Base class of the errors of :mod:`trioudp.quic`.

    Example:
        >>> issubclass(ConnectionClosed, QUICError)
        True
    """


def _code(error_code: int, application: bool) -> str:
    kind = "application error" if application else "transport error"
    return f"{kind} {error_code:#x}"


class ConnectionClosed(QUICError, trio.BrokenResourceError):
    """The QUIC connection ended other than by your own ``aclose()``: the peer
    closed it, it timed out idle, the handshake failed, or a protocol error
    (or a stateless reset) ended it.

    Every wait on the connection and its streams raises it, chained from
    nothing: the attributes say what happened.

    Attributes:
        error_code: the QUIC error code: an application's own code when
            ``application`` is true, else a transport error code
            (``0x1`` internal error, ``0x100``-``0x1ff`` a TLS alert).
        reason: the peer's reason phrase, or ours ("Idle timeout").
        application: whether the close was an application close.
        by_peer: whether the peer sent the close (False for an idle
            timeout, a failed handshake detected here, a stateless reset).

    Example:
        >>> str(ConnectionClosed(0x10, "bye", application=True, by_peer=True))
        "QUIC connection closed by the peer: application error 0x10 ('bye')"
    """

    def __init__(
        self, error_code: int, reason: str, *, application: bool, by_peer: bool
    ) -> None:
        self._init_args = (error_code, reason)
        self.error_code = error_code
        self.reason = reason
        self.application = application
        self.by_peer = by_peer
        who = "by the peer" if by_peer else "here"
        why = f" ({reason!r})" if reason else ""
        super().__init__(
            f"QUIC connection closed {who}: {_code(error_code, application)}{why}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_closed,
            (self.error_code, self.reason, self.application, self.by_peer),
        )


def _rebuild_closed(
    error_code: int, reason: str, application: bool, by_peer: bool
) -> ConnectionClosed:
    return ConnectionClosed(
        error_code, reason, application=application, by_peer=by_peer
    )


class StreamReset(QUICError, trio.BrokenResourceError):
    """The peer abandoned sending on a stream (``RESET_STREAM``): what it had
    sent and you had not read yet is gone.

    Attributes:
        stream_id: the stream's QUIC id.
        error_code: the peer's application error code.

    Example:
        >>> str(StreamReset(4, 0x10c))
        'the peer reset QUIC stream 4 (application error 0x10c); data not yet read is lost'
    """

    def __init__(self, stream_id: int, error_code: int) -> None:
        self._init_args = (stream_id, error_code)
        self.stream_id = stream_id
        self.error_code = error_code
        super().__init__(
            f"the peer reset QUIC stream {stream_id}"
            f" ({_code(error_code, True)}); data not yet read is lost"
        )


class SendingStopped(QUICError, trio.BrokenResourceError):
    """The peer asked to stop sending on a stream (``STOP_SENDING``): it will
    read nothing more, so the stream's sending side was reset.

    Attributes:
        stream_id: the stream's QUIC id.
        error_code: the peer's application error code.

    Example:
        >>> str(SendingStopped(0, 0))
        'the peer stopped reading QUIC stream 0 (application error 0x0); nothing more can be sent on it'
    """

    def __init__(self, stream_id: int, error_code: int) -> None:
        self._init_args = (stream_id, error_code)
        self.stream_id = stream_id
        self.error_code = error_code
        super().__init__(
            f"the peer stopped reading QUIC stream {stream_id}"
            f" ({_code(error_code, True)}); nothing more can be sent on it"
        )
