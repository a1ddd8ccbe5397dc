"""open_quic_connection: a QUIC client connection as an async context manager.

Shape::

    open_quic_connection's block
    └── nursery
        ├── the connection's driver (timers, sending)
        ├── the receive loop: the socket's datagrams to the engine
        └── the body of the ``async with`` (the caller's task)
"""

from __future__ import annotations

import dataclasses
import socket as stdlib_socket
import sys
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn

import trio

from .. import InvalidAddress, UDPSocket, open_udp_socket
from ._connection import CLOSE_SEND_SECONDS, QUICConnection
from ._engine import Engine
from ._routing import normalize_address
from ._settings import (
    DEFAULT_DATAGRAM_QUEUE,
    DEFAULT_MAX_STREAMS,
    DEFAULT_SEND_BUFFER,
    check_configuration,
    check_connection_settings,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from aioquic.quic.configuration import QuicConfiguration

__all__ = ["open_quic_connection"]


def _raise_alone(exc: BaseException) -> NoReturn:
    """Raise ``exc`` out of its group, keeping its own context."""
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


async def _resolve(host: str, port: int) -> tuple[int, tuple[str, int]]:
    try:
        infos = await trio.socket.getaddrinfo(host, port, 0, stdlib_socket.SOCK_DGRAM)
    except stdlib_socket.gaierror as exc:
        raise InvalidAddress((host, port), f"cannot resolve {host!r}: {exc}") from exc
    family, _, _, _, address = infos[0]
    return int(family), normalize_address(address)


async def _receive(sock: UDPSocket, connection: QUICConnection) -> None:
    while True:
        try:
            datagram = await sock.receive()
        except trio.ClosedResourceError:
            return
        except OSError:
            continue  # an ICMP report about one datagram: QUIC sees a loss
        connection._datagram_received(
            datagram.data, normalize_address(datagram.peer), datagram.received_at
        )


@asynccontextmanager
async def open_quic_connection(
    host: str,
    port: int,
    *,
    configuration: QuicConfiguration,
    max_streams: int = DEFAULT_MAX_STREAMS,
    send_buffer: int = DEFAULT_SEND_BUFFER,
    datagram_queue: int = DEFAULT_DATAGRAM_QUEUE,
    reset_code: int = 0,
) -> AsyncIterator[QUICConnection]:
    """Connect to a QUIC server and yield the established connection.

    The handshake completes before the block begins. When the block ends
    normally the connection is closed gracefully (after the peer
    acknowledged what the streams sent); when an exception leaves it, at
    once. Either way one CONNECTION_CLOSE is sent and the socket closed.

    Args:
        host: the server's name or address; also the TLS server name unless
            ``configuration.server_name`` is set.
        port: the server's UDP port.
        configuration: aioquic's ``QuicConfiguration(is_client=True)``: ALPN,
            CA certificates (``load_verify_locations``), idle timeout,
            datagrams (``max_datagram_frame_size``), receive windows. It is
            copied, not changed.
        max_streams, send_buffer, datagram_queue, reset_code: as for
            :func:`serve_quic`.

    Raises:
        ConnectionClosed: the handshake failed (a TLS alert: ``error_code``
            ``0x100`` + the alert), or the server closed the connection or
            went silent for the idle timeout before it completed.
        InvalidAddress: ``host`` cannot be resolved.

    Example::

        configuration = QuicConfiguration(is_client=True, alpn_protocols=["echo"])
        configuration.load_verify_locations("ca.pem")
        async with trioudp.quic.open_quic_connection(
            "localhost", 4433, configuration=configuration
        ) as connection:
            async with await connection.open_stream() as stream:
                await stream.send_all(b"hello")
                await stream.send_eof()
                print(await stream.receive_some())
    """
    check_configuration(configuration, is_client=True)
    check_connection_settings(max_streams, send_buffer, datagram_queue, reset_code)
    configuration = dataclasses.replace(configuration)
    if configuration.server_name is None:
        configuration.server_name = host
    family, address = await _resolve(host, port)
    try:
        async with (
            open_udp_socket(family=family) as sock,
            trio.open_nursery() as nursery,
        ):
            engine = Engine(configuration=configuration, max_streams=max_streams)
            connection = QUICConnection(
                engine,
                sock,
                send_buffer=send_buffer,
                datagram_queue=datagram_queue,
                reset_code=reset_code,
            )
            nursery.start_soon(connection._drive)
            nursery.start_soon(_receive, sock, connection)
            engine.connect(address, now=trio.current_time())
            connection._kick()
            try:
                if not await connection._wait_handshake():
                    failure = connection._ended_with()
                    assert failure is not None
                    raise failure
                yield connection
            except BaseException:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLOSE_SEND_SECONDS
                    await connection._send_close_now()
                raise
            else:
                await connection.aclose()
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + CLOSE_SEND_SECONDS
                    await connection._send_close_now()
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The driver and the receive loop never raise: what the nursery
        # wraps is the body's own exception (or a failed handshake's).
        if len(group.exceptions) == 1:
            _raise_alone(group.exceptions[0])
        raise
