"""serve_quic and serve_quic_sockets: check the settings, open the sockets,
and run a :class:`QUICServer` on them (thin, like Trio's ``serve_tcp``)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import trio

from .. import RateLimit, open_udp_sockets
from ._pool import pool_routing
from ._server import Handler, QUICServer
from ._settings import (
    DEFAULT_DATAGRAM_QUEUE,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HANDSHAKES,
    DEFAULT_MAX_STREAMS,
    DEFAULT_SEND_BUFFER,
    check_configuration,
    check_connection_settings,
    check_int,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aioquic.quic.configuration import QuicConfiguration

    from .. import AccessList, UDPSocket, Worker

__all__ = ["serve_quic", "serve_quic_sockets"]


def _udp_settings(
    rate_limit: RateLimit | None, access: AccessList | None, queue_size: int
) -> dict[str, object]:
    return {"rate_limit": rate_limit, "access": access, "queue_size": queue_size}


async def serve_quic_sockets(
    handler: Handler,
    sockets: Sequence[UDPSocket],
    *,
    configuration: QuicConfiguration,
    retry_threshold: int | None = 0,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
    max_streams: int = DEFAULT_MAX_STREAMS,
    send_buffer: int = DEFAULT_SEND_BUFFER,
    datagram_queue: int = DEFAULT_DATAGRAM_QUEUE,
    reset_code: int = 0,
    reset_key: bytes | None = None,
    rate_limit: RateLimit | None = None,
    access: AccessList | None = None,
    queue_size: int = 256,
    worker: Worker | None = None,
    task_status: trio.TaskStatus[QUICServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve QUIC on already-open UDP sockets; the lower layer of
    :func:`serve_quic`, which documents the arguments. The server takes
    ownership of the sockets and closes them when it stops.

    With ``worker``, the :class:`trioudp.Worker` of a
    :func:`trioudp.run_workers` pool run with
    ``sockets=``:func:`worker_sockets`, serve ``worker.sockets``: the
    connection IDs the server issues name this worker, so the pool's
    steering brings every packet of a connection here, and the stateless
    reset key (unless ``reset_key`` is given) and the Retry token key come
    from the pool's shared secret (:doc:`/explanation/quic-workers`).

    Example::

        async with trioudp.open_udp_socket("127.0.0.1", 0) as sock:
            server = await nursery.start(functools.partial(
                trioudp.quic.serve_quic_sockets, handler, [sock],
                configuration=configuration))

    In a worker::

        server = await nursery.start(functools.partial(
            trioudp.quic.serve_quic_sockets, handler, worker.sockets,
            configuration=configuration, worker=worker))
        worker.serving(server)
    """
    try:
        check_configuration(configuration, is_client=False)
        check_connection_settings(max_streams, send_buffer, datagram_queue, reset_code)
        check_int("max_connections", max_connections, low=1)
        check_int("max_handshakes", max_handshakes, low=1)
        if retry_threshold is not None:
            check_int("retry_threshold", retry_threshold, low=0)
        if reset_key is not None and (
            not isinstance(reset_key, bytes) or len(reset_key) < 16
        ):
            msg = "reset_key must be at least 16 random bytes (os.urandom(32))"
            raise ValueError(msg)
        if not callable(handler):
            msg = f"handler must be an async function, not {handler!r}"
            raise TypeError(msg)
        routing = (
            pool_routing(worker, configuration.connection_id_length)
            if worker is not None
            else None
        )
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if routing is not None and reset_key is None:
        reset_key = routing.reset_key
    server = QUICServer(
        handler,
        sockets,
        configuration=configuration,
        retry_threshold=retry_threshold,
        max_connections=max_connections,
        max_handshakes=max_handshakes,
        max_streams=max_streams,
        send_buffer=send_buffer,
        datagram_queue=datagram_queue,
        reset_code=reset_code,
        reset_key=reset_key if reset_key is not None else os.urandom(32),
        token_key=routing.token_key if routing is not None else None,
        connection_ids=routing.connection_ids if routing is not None else None,
    )
    await server._serve(_udp_settings(rate_limit, access, queue_size), task_status)


async def serve_quic(
    handler: Handler,
    port: int,
    *,
    configuration: QuicConfiguration,
    host: str | None = None,
    retry_threshold: int | None = 0,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_handshakes: int = DEFAULT_MAX_HANDSHAKES,
    max_streams: int = DEFAULT_MAX_STREAMS,
    send_buffer: int = DEFAULT_SEND_BUFFER,
    datagram_queue: int = DEFAULT_DATAGRAM_QUEUE,
    reset_code: int = 0,
    reset_key: bytes | None = None,
    rate_limit: RateLimit | None = None,
    access: AccessList | None = None,
    queue_size: int = 256,
    receive_buffer: int | None = None,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[QUICServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve QUIC on ``port``: each connection, once its handshake completed,
    is handed to ``await handler(connection)`` in a task of its own.

    Like :func:`trioudp.serve_udp`, use it with ``nursery.start``: it binds,
    starts receiving, reports the :class:`QUICServer`, and runs until
    cancelled or shut down.

    Args:
        handler: ``async def handler(connection: QUICConnection)``. When it
            returns, the connection is closed (after the peer acknowledged
            what the streams sent); when it raises, the error is logged on
            the ``trioudp`` logger and counted, and the connection closed
            with a transport internal error.
        port: the UDP port; 0 picks a free one (``server.port``).
        configuration: aioquic's ``QuicConfiguration(is_client=False)``, with
            a certificate chain loaded; its ``alpn_protocols``,
            ``idle_timeout``, ``max_datagram_frame_size`` (datagrams),
            ``max_stream_data`` and ``max_data`` (the receive windows) apply.
        host: the address to bind; None binds all (IPv4 and IPv6).
        retry_threshold: address validation. A client whose Initial carries
            no Retry token gets a Retry (one more round trip) once this many
            handshakes are in progress: 0 (the default) always, None never.
            Until a client's address is validated the server sends it at
            most three times what it received (aioquic's accounting).
        max_connections: connections at once; Initials beyond are dropped.
        max_handshakes: handshakes in progress at once; Initials beyond
            are dropped.
        max_streams: streams of each kind a peer may have open at once
            (unread, unclosed or unacknowledged); more is a protocol error.
        send_buffer: bytes a stream may have sent and unacknowledged before
            ``send_all`` waits.
        datagram_queue: RFC 9221 datagrams held for ``receive_datagram``
            (more are dropped) and queued by ``send_datagram`` (more wait).
        reset_code: the application error code of the resets trioudp makes
            (a stream left by an exception or a cancelled ``send_all``).
        reset_key: the stateless reset key (16 bytes or more); give every
            process serving the port the same one (default: random).
        rate_limit: per-source :class:`trioudp.RateLimit` of the UDP
            intake, applied before any QUIC processing.
        access: :class:`trioudp.AccessList` of the intake.
        queue_size: datagrams the intake may queue (see
            :func:`trioudp.serve_udp_sockets`).
        receive_buffer: ``SO_RCVBUF`` to ask for.
        reuse_port: set ``SO_REUSEPORT``.
        task_status: reports the :class:`QUICServer`.

    Resource handling:
        Cancelling the surrounding scope cancels every handler and closes
        each connection (sending CONNECTION_CLOSE where the socket still
        can) and the sockets. :meth:`QUICServer.shutdown` stops gracefully.

    Error handling:
        Bad settings raise ``TypeError`` or ``ValueError`` before anything
        is bound. Malformed datagrams, undecryptable packets and refused
        Initials are dropped and counted (``server.stats.dropped``).

    Example::

        from aioquic.quic.configuration import QuicConfiguration

        configuration = QuicConfiguration(is_client=False, alpn_protocols=["echo"])
        configuration.load_cert_chain("cert.pem", "key.pem")

        async def handler(connection: trioudp.quic.QUICConnection) -> None:
            async with await connection.accept_stream() as stream:
                async for data in stream:
                    await stream.send_all(data)

        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(
                trioudp.quic.serve_quic, handler, 4433, configuration=configuration))
    """
    check_configuration(configuration, is_client=False)
    check_connection_settings(max_streams, send_buffer, datagram_queue, reset_code)
    sockets = await open_udp_sockets(
        port, host, receive_buffer=receive_buffer, reuse_port=reuse_port
    )
    await serve_quic_sockets(
        handler,
        sockets,
        configuration=configuration,
        retry_threshold=retry_threshold,
        max_connections=max_connections,
        max_handshakes=max_handshakes,
        max_streams=max_streams,
        send_buffer=send_buffer,
        datagram_queue=datagram_queue,
        reset_code=reset_code,
        reset_key=reset_key,
        rate_limit=rate_limit,
        access=access,
        queue_size=queue_size,
        task_status=task_status,
    )
