"""Shared pieces of the QUIC tests: certificates, configurations, servers."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trustme
from aioquic.quic.configuration import QuicConfiguration

import trioudp.quic

ALPN = "trioudp-test"


@functools.cache
def pki() -> Path:
    """A CA and a server certificate for localhost, 127.0.0.1 and ::1, in a
    directory of their own: ca.pem, cert.pem, key.pem. RSA keys: their
    signatures have one size, so packet sizes (and traces) repeat exactly."""
    directory = Path(tempfile.mkdtemp(prefix="trioudp-quic-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    cert = ca.issue_cert("localhost", "127.0.0.1", "::1", key_type=trustme.KeyType.RSA)
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(directory / "cert.pem"))
    cert.private_key_pem.write_to_path(str(directory / "key.pem"))
    return directory


def server_config(**settings: Any) -> QuicConfiguration:
    settings.setdefault("alpn_protocols", [ALPN])
    configuration = QuicConfiguration(is_client=False, **settings)
    configuration.load_cert_chain(pki() / "cert.pem", pki() / "key.pem")
    return configuration


def client_config(**settings: Any) -> QuicConfiguration:
    settings.setdefault("alpn_protocols", [ALPN])
    settings.setdefault("server_name", "localhost")
    configuration = QuicConfiguration(is_client=True, **settings)
    configuration.load_verify_locations(str(pki() / "ca.pem"))
    return configuration


async def echo_stream(stream: trioudp.quic.QUICStream) -> None:
    async with stream:
        async for data in stream:
            await stream.send_all(data)


async def echo(connection: trioudp.quic.QUICConnection) -> None:
    """Echo every stream the peer opens, and every datagram."""

    async def datagrams() -> None:
        while True:
            await connection.send_datagram(await connection.receive_datagram())

    async with trio.open_nursery() as nursery:
        if connection.engine.configuration.max_datagram_frame_size:
            nursery.start_soon(datagrams)
        try:
            while True:
                nursery.start_soon(echo_stream, await connection.accept_stream())
        except (trioudp.quic.ConnectionClosed, trio.ClosedResourceError):
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def quic_server(handler=echo, *, host: str = "127.0.0.1", **settings: Any):
    """A QUIC server on ``host`` port 0, shut down (cancelled) at the end."""
    settings.setdefault("configuration", server_config())
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                trioudp.quic.serve_quic, handler, 0, host=host, **settings
            )
        )
        yield server
        nursery.cancel_scope.cancel()


def connect(server: trioudp.quic.QUICServer | int, **settings: Any):
    """open_quic_connection to ``server`` (or a port) on 127.0.0.1."""
    settings.setdefault("configuration", client_config())
    port = server if isinstance(server, int) else server.port
    return trioudp.quic.open_quic_connection("127.0.0.1", port, **settings)
